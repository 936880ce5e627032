//! The fleet report: one EventBridge event after every answer to CloudFormation and every
//! target move, on the bus `ReportToEventBus` names (typically one bus of the organization
//! that every StackSets instance reports to), so that a platform team sees each account's
//! and region's service name and zone IDs in one place. A report never changes what
//! happened: one that cannot be put is logged, and that is all.
//!
//! The event's form is `schema/fleet-event.schema.json`; its `source` is [`SOURCE`] and its
//! `detail-type` [`DETAIL_TYPE`].

use std::time::Duration;

use aws_sdk_eventbridge::config::Region;
use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
use aws_sdk_eventbridge::types::{PutEventsRequestEntry, PutEventsResultEntry};
use serde::Serialize;
use tracing::{info, warn};

use crate::spec::{EventBus, own_account, own_region};

/// The events' `source` (a custom source may not begin with `aws.`; EventBridge user guide,
/// "Sending events with PutEvents").
pub const SOURCE: &str = "reverse-privatelink";
pub const DETAIL_TYPE: &str = "Reverse PrivateLink Endpoint Service";
/// Changes when a field changes meaning or goes; new fields keep it.
pub const SCHEMA_VERSION: &str = "1";

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Happened {
    Create,
    Update,
    Delete,
    /// The follower moved the target to a new writer.
    WriterMoved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Success,
    Failed,
}

/// The event's `detail`. Every field is always present, as a string (empty when it does not
/// apply), in the form of the custom resource's `Data`: a query can take the latest value of
/// each field without caring which kind of event set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    pub schema_version: &'static str,
    /// The producer account and region, from the stack's ID.
    pub account: String,
    pub region: String,
    pub stack_id: String,
    pub logical_resource_id: String,
    pub event: Happened,
    pub outcome: Outcome,
    /// Why it failed, as CloudFormation shows it.
    pub reason: String,
    /// The endpoint service the resource holds after the event (before it, for a Delete or a
    /// failed Update).
    pub service_id: String,
    /// The service an Update replaced (CloudFormation deletes it next).
    pub previous_service_id: String,
    /// What the consumer connects to, and the zone IDs its endpoint may use (comma-joined).
    pub service_name: String,
    pub availability_zone_ids: String,
    /// The writer's address(es) registered, comma-joined, and the instance.
    pub target_ips: String,
    pub previous_target_ips: String,
    pub writer_instance: String,
    pub database: String,
}

impl Report {
    /// A report with the account and region of `stack_id` and nothing else said yet.
    pub fn new(stack_id: &str, logical_resource_id: &str, event: Happened, outcome: Outcome) -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            account: own_account(stack_id).unwrap_or_default().to_string(),
            region: own_region(stack_id).unwrap_or_default().to_string(),
            stack_id: stack_id.to_string(),
            logical_resource_id: logical_resource_id.to_string(),
            event,
            outcome,
            reason: String::new(),
            service_id: String::new(),
            previous_service_id: String::new(),
            service_name: String::new(),
            availability_zone_ids: String::new(),
            target_ips: String::new(),
            previous_target_ips: String::new(),
            writer_instance: String::new(),
            database: String::new(),
        }
    }
}

/// How often a report that may pass later is tried, and how far apart: long enough for a new
/// permission to reach the role.
const ATTEMPTS: u32 = 4;
const PAUSE: Duration = Duration::from_secs(2);

/// Entry errors EventBridge names retryable (API reference, `PutEventsResultEntry`).
const RETRYABLE_ENTRY_ERRORS: [&str; 2] = ["InternalFailure", "ThrottlingException"];

/// Puts reports on event buses, in each bus's own region.
#[derive(Clone, Debug)]
pub struct Reporter {
    /// The function's own region's client; another region's is derived from it.
    events: aws_sdk_eventbridge::Client,
}

impl Reporter {
    pub fn new(events: aws_sdk_eventbridge::Client) -> Self {
        Reporter { events }
    }

    /// Puts `report` on `bus`, logging how it went; never fails. EventBridge is called in the
    /// bus's region: the PutEvents API reference takes another region's bus only through a
    /// global endpoint (`EventBusName`), while a bus of another account of the region it is
    /// called in takes the event by ARN when the bus's policy admits the caller (EventBridge
    /// user guide, "Permissions for event buses").
    pub async fn send(&self, bus: &EventBus, report: &Report) {
        let events = match self.events.config().region().map(Region::as_ref) {
            Some(region) if region == bus.region => self.events.clone(),
            _ => {
                let config = self.events.config().to_builder().region(Region::new(bus.region.clone())).build();
                aws_sdk_eventbridge::Client::from_conf(config)
            }
        };
        let detail = match serde_json::to_string(report) {
            Ok(detail) => detail,
            Err(error) => return warn!(%error, "could not write the fleet report"),
        };
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&bus.arn)
            .source(SOURCE)
            .detail_type(DETAIL_TYPE)
            .resources(&report.stack_id)
            .detail(detail)
            .build();
        let (bus_arn, event) = (bus.arn.as_str(), report.event);
        // The client's own bound (aws.rs) keeps each attempt short, the SDK's retries included.
        let mut attempt = 1;
        let put = loop {
            let put = events.put_events().entries(entry.clone()).send().await;
            let may_pass_later = match &put {
                // IAM is eventually consistent (IAM user guide, "Changes that I make are not always
                // immediately visible"): the stack update that adds the permission reaches the
                // role moments before its custom resource reports.
                Err(error) => error.code() == Some("AccessDeniedException"),
                Ok(answer) => failed_entry(answer).is_some_and(|e| RETRYABLE_ENTRY_ERRORS.contains(&entry_error(e).0)),
            };
            if !may_pass_later || attempt == ATTEMPTS {
                break put;
            }
            attempt += 1;
            tokio::time::sleep(PAUSE).await;
        };
        let error = match put {
            Ok(answer) if answer.failed_entry_count == 0 => {
                return info!(bus = bus_arn, ?event, outcome = ?report.outcome, "reported to the fleet's event bus");
            }
            Ok(answer) => {
                let (code, message) = failed_entry(&answer).map(entry_error).unwrap_or_default();
                format!("{code}: {message}")
            }
            Err(error) => DisplayErrorContext(&error).to_string(),
        };
        warn!(bus = bus_arn, ?event, %error, "could not put the fleet report (PutEvents); what was done stands");
    }
}

fn failed_entry(answer: &PutEventsOutput) -> Option<&PutEventsResultEntry> {
    answer.entries().iter().find(|e| e.error_code.is_some())
}

/// An entry's error code and message.
fn entry_error(entry: &PutEventsResultEntry) -> (&str, &str) {
    (entry.error_code().unwrap_or_default(), entry.error_message().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_says_where_it_comes_from_and_names_every_field() {
        let stack = "arn:aws:cloudformation:eu-west-1:111111111111:stack/import-db/1";
        let report = Report::new(stack, "ReversePrivateLink", Happened::WriterMoved, Outcome::Success);
        let detail = serde_json::to_value(&report).unwrap();
        assert_eq!(detail["Account"], "111111111111");
        assert_eq!(detail["Region"], "eu-west-1");
        assert_eq!(detail["Event"], "WriterMoved");
        assert_eq!(detail["Outcome"], "SUCCESS");
        assert_eq!(detail["SchemaVersion"], "1");
        assert!(detail.as_object().unwrap().values().all(serde_json::Value::is_string));
        // Exactly the fields the published schema requires.
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schema/fleet-event.schema.json")).unwrap();
        let required: std::collections::BTreeSet<&str> =
            schema["$defs"]["detail"]["required"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        let fields: std::collections::BTreeSet<&str> = detail.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields, required);
    }
}
