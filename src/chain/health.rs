//! Whether the load balancer can reach the writer: its health of each target,
//! read once for `Data`, or awaited, with a diagnosis a person can act on.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use tokio::time::Instant;

use super::poll::{self, TARGET_GROUP_NOT_FOUND};
use super::{Desired, Progress};
use crate::error::{Error, Result};

/// How often a wait asks; the budget is at most one describe per 2 s.
const POLL: Duration = Duration::from_secs(5);
const CHECK_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    pub id: String,
    pub port: i32,
    /// healthy, initial, unhealthy, unused, draining, unavailable
    pub state: String,
    /// e.g. Target.Timeout
    pub reason: Option<String>,
    pub description: Option<String>,
}

impl TargetHealth {
    /// "healthy", "initial", "unhealthy: Target.Timeout". ELB's own progress
    /// (`Elb.*` reasons) is left out; a target's problem (`Target.*`) is named.
    pub fn summary(&self) -> String {
        match self.reason.as_deref().filter(|reason| !reason.starts_with("Elb.")) {
            Some(reason) => format!("{}: {reason}", self.state),
            None => self.state.clone(),
        }
    }
}

/// `TargetHealth` for `Data`: one target's summary, or each target's with its address.
pub fn describe(health: &[TargetHealth]) -> String {
    match health {
        [one] => one.summary(),
        many => many.iter().map(|t| format!("{} {}", t.id, t.summary())).collect::<Vec<_>>().join(", "),
    }
}

/// Each target's health; `fresh`: the target group was created moments ago.
pub async fn read(elb: &elbv2::Client, arn: &str, fresh: bool) -> Result<Vec<TargetHealth>> {
    let answer =
        poll::settled(fresh, TARGET_GROUP_NOT_FOUND, || elb.describe_target_health().target_group_arn(arn).send())
            .await
            .map_err(Error::aws("reading the targets' health (DescribeTargetHealth)"))?;
    Ok(answer
        .target_health_descriptions
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| {
            let target = d.target?;
            let health = d.target_health;
            Some(TargetHealth {
                id: target.id?,
                port: target.port.unwrap_or_default(),
                state: health
                    .as_ref()
                    .and_then(|h| h.state.as_ref())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                reason: health.as_ref().and_then(|h| h.reason.as_ref()).map(|r| r.as_str().to_string()),
                description: health.and_then(|h| h.description),
            })
        })
        .collect())
}

/// Waits until every wanted target is healthy; fails with a diagnosis when `until` comes first.
pub async fn wait_healthy(
    elb: &elbv2::Client,
    arn: &str,
    want: &Desired<'_>,
    load_balancer_groups: &BTreeSet<String>,
    until: Instant,
    progress: &Progress,
) -> Result<Vec<TargetHealth>> {
    let _step = progress.step("waiting for the database to pass the load balancer's health checks");
    let wanted: BTreeSet<String> = want.resolved.target_ips.iter().map(ToString::to_string).collect();
    // Asked when the first answer is "not yet", so before the wait gets long, then every minute.
    let mut next_check = Instant::now();
    loop {
        let health = read(elb, arn, false).await?;
        let sick: Vec<&TargetHealth> =
            health.iter().filter(|t| wanted.contains(&t.id) && t.state != "healthy").collect();
        let missing: Vec<&String> = wanted.iter().filter(|ip| !health.iter().any(|t| &t.id == *ip)).collect();
        if sick.is_empty() && missing.is_empty() {
            return Ok(health);
        }
        if Instant::now() + POLL >= until {
            let path = Path {
                port: want.resolved.port,
                load_balancer_groups,
                load_balancer_cidrs: want.resolved.network.blocks.cidrs(),
                database_groups: &want.resolved.database_security_groups,
            };
            let mut problems: Vec<String> = sick.iter().map(|t| diagnose(t, &path)).collect();
            problems
                .extend(missing.iter().map(|ip| format!("the database at {ip} is not registered in the target group")));
            return Err(Error::Unhealthy(problems.join("; ")));
        }
        if Instant::now() >= next_check {
            progress.checkpoint().await?;
            next_check = Instant::now() + CHECK_EVERY;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The path from the load balancer to the database, as a diagnosis names it.
pub struct Path<'a> {
    pub port: u16,
    pub load_balancer_groups: &'a BTreeSet<String>,
    /// Where the load balancer's addresses are, for a load balancer without security groups.
    pub load_balancer_cidrs: Vec<String>,
    pub database_groups: &'a BTreeSet<String>,
}

/// What is wrong with `target` and what to do about it.
pub fn diagnose(target: &TargetHealth, path: &Path<'_>) -> String {
    let at = format!("{}:{}", target.id, target.port);
    let port = path.port;
    let reason = target.reason.as_deref().unwrap_or("no reason given");
    let from = match path.load_balancer_groups.iter().map(String::as_str).collect::<Vec<_>>().join(", ") {
        groups if groups.is_empty() => format!("the load balancer's subnets ({})", path.load_balancer_cidrs.join(", ")),
        groups => format!("{groups} (the load balancer's security group)"),
    };
    let into = match path.database_groups.iter().map(String::as_str).collect::<Vec<_>>().join(", ") {
        groups if groups.is_empty() => "the database's security group".to_string(),
        groups => format!("{groups} (the database's)"),
    };
    match target.state.as_str() {
        "unhealthy" => format!(
            "the database at {at} does not answer the load balancer's health checks ({reason}): allow TCP {port} from {from} in {into}, and check that the database listens on {port} and that the subnets' network ACLs let it through"
        ),
        "initial" => format!(
            "the load balancer was still running its first health checks of the database at {at} ({reason}) when the time ran out; they can take minutes to start after registration: try again, or set WaitForHealthyTarget to false"
        ),
        "unused" => format!(
            "the load balancer does not use the database at {at} ({reason}): a target in a zone the load balancer does not serve gets no traffic; add a subnet in the database's zone to SubnetIds"
        ),
        state => format!(
            "the database at {at} is {state} ({reason}){}",
            target.description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(state: &str, reason: Option<&str>) -> TargetHealth {
        TargetHealth {
            id: "10.0.1.25".into(),
            port: 3306,
            state: state.into(),
            reason: reason.map(Into::into),
            description: None,
        }
    }

    #[test]
    fn summaries_name_target_problems_only() {
        assert_eq!(health("healthy", None).summary(), "healthy");
        assert_eq!(health("initial", Some("Elb.RegistrationInProgress")).summary(), "initial");
        assert_eq!(health("unhealthy", Some("Target.Timeout")).summary(), "unhealthy: Target.Timeout");
        let two = [
            health("healthy", None),
            TargetHealth { id: "10.0.2.30".into(), ..health("unused", Some("Target.NotInUse")) },
        ];
        assert_eq!(describe(&two), "10.0.1.25 healthy, 10.0.2.30 unused: Target.NotInUse");
    }
}
