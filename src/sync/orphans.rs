//! Chains CloudFormation dropped. When the clean-up Delete of a replaced resource keeps
//! failing, CloudFormation gives up on it and still completes the update
//! (cloudformation-coverage-roadmap#744): the old chain stays answered and still lets
//! the consumer in, and no Delete will ever come for it. The builder removes it at the
//! stack's next event; the follower, which may not delete anything, says so in an
//! error about once an hour.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{error, info};

use crate::aws::Aws;
use crate::chain::{self, ANSWERED_TAG, LOGICAL_ID_TAG, STACK_ID_TAG};
use crate::cloudformation::{StackStatus, StatusReader};
use crate::error::{Error, Result};

/// The schedule's interval in minutes (the template's `SyncIntervalMinutes`).
pub const INTERVAL_ENV: &str = "REVERSE_PRIVATELINK_SYNC_INTERVAL_MINUTES";

/// Whether a scheduled run at `minute` of the hour is the hour's first: the function
/// keeps no state, so the event's time decides.
pub fn first_run_of_the_hour(minute: u32, interval_minutes: u32) -> bool {
    minute < interval_minutes.max(1)
}

/// The schedule's interval, from the environment (1 when unset).
pub fn interval_minutes() -> u32 {
    std::env::var(INTERVAL_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Logs an error for every answered chain of `stack_id` that CloudFormation no longer
/// holds, once the stack is between operations (mid-operation, a replaced chain still
/// awaits its clean-up). Returns their service IDs.
pub async fn report(aws: &Aws, status: &StatusReader, stack_id: &str) -> Result<BTreeSet<String>> {
    let stack = status.stack(stack_id).await;
    let StackStatus::Known(stack_status) = &stack else {
        info!(?stack, "the stack's status is unknown; looking for dropped chains next hour");
        return Ok(BTreeSet::new());
    };
    if !stack_status.ends_with("_COMPLETE") {
        return Ok(BTreeSet::new());
    }
    let filters = [(STACK_ID_TAG, Some(stack_id))];
    let indexed = chain::tagged(&aws.tagging, &filters, &["elasticloadbalancing:targetgroup"])
        .await
        .map_err(Error::aws("finding the stack's chains (tag:GetResources)"))?;
    let tags = chain::describe_elb_tags(&aws.elb, indexed.into_iter().map(|(arn, _)| arn).collect()).await?;
    let mut answered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for tags in tags.values() {
        if let (Some(logical_id), Some(service_id)) = (tags.get(LOGICAL_ID_TAG), tags.get(ANSWERED_TAG)) {
            answered.entry(logical_id.clone()).or_default().insert(service_id.clone());
        }
    }
    let mut dropped = BTreeSet::new();
    for (logical_id, services) in answered {
        // Only an answer from CloudFormation itself counts.
        let held = status.resource(stack_id, &logical_id).await;
        let Some(held) = held.physical_id() else { continue };
        for service_id in services.into_iter().filter(|id| id != held) {
            error!(
                stack_id,
                logical_id = %logical_id,
                service_id = %service_id,
                held,
                "CloudFormation no longer holds this chain (its clean-up Delete failed until CloudFormation gave up), yet its endpoint service still lets the consumer in; the stack's next update or delete removes it, or delete the endpoint service, load balancer and target group tagged reverse-privatelink:answered={service_id} by hand"
            );
            dropped.insert(service_id);
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_once_an_hour_whatever_the_interval() {
        let runs =
            |interval: u32| (0..60).step_by(interval as usize).filter(|m| first_run_of_the_hour(*m, interval)).count();
        for interval in [1, 5, 15, 60] {
            assert_eq!(runs(interval), 1, "every {interval} minutes");
        }
    }
}
