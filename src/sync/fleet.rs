//! The follower's part of the fleet report: each target move, with what the consumer needs.

use tracing::warn;

use super::Follower;
use crate::aws::Aws;
use crate::chain::Chain;
use crate::fleet::{Happened, Outcome, Report, Reporter};
use crate::spec::EventBus;

/// Reports a move of `follower`'s target (old addresses, new address, writer instance) to
/// `bus`, with the service name and zone IDs read afresh: a move is rare, and the consumer
/// needs them as they are now.
pub async fn tell(
    aws: &Aws,
    reporter: &Reporter,
    follower: &Follower,
    bus: &EventBus,
    (old, new, instance): (String, String, String),
) {
    let owner = &follower.owner;
    let mut report = Report::new(&owner.stack_id, &owner.logical_id, Happened::WriterMoved, Outcome::Success);
    report.database = follower.database.clone();
    (report.previous_target_ips, report.target_ips, report.writer_instance) = (old, new, instance);
    if let Some(service_id) = &follower.service_id {
        report.service_id = service_id.clone();
        match Chain::new(aws, owner.clone()).published(service_id).await {
            Ok(Some((name, zones))) => {
                report.service_name = name;
                report.availability_zone_ids = zones.into_iter().map(|z| z.id).collect::<Vec<_>>().join(",");
            }
            Ok(None) => warn!(%service_id, "the chain's endpoint service is gone; reporting the move without it"),
            Err(error) => {
                warn!(%service_id, %error, "could not read the endpoint service; reporting the move without it")
            }
        }
    }
    reporter.send(bus, &report).await;
}
