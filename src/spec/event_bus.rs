//! `ReportToEventBus`: the EventBridge event bus that hears of every answer and target move
//! (see [`crate::fleet`]).

use super::read::{Properties, scalar};
use super::regions::{is_region_name, own_partition};
use crate::error::{Error, Result};

const P: &str = "ReportToEventBus";

/// The longest ARN the chain can carry: the target group's tag tells the follower where to
/// report, and an ELB tag value holds at most 256 characters (ELB API reference, "Tag").
const MAX_ARN_LEN: usize = 256;

/// An event bus by ARN: `arn:<partition>:events:<region>:<account>:event-bus/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBus {
    pub arn: String,
    pub partition: String,
    /// EventBridge is called in this region (a StackSet spans regions; the bus is in one).
    pub region: String,
    pub account: String,
    pub name: String,
}

impl EventBus {
    /// The bus an ARN names, or what is wrong with it (without the property's name).
    pub fn parse(text: &str) -> std::result::Result<EventBus, String> {
        const FORM: &str = "arn:aws:events:<region>:<account>:event-bus/<name>";
        let not_a_bus = || format!("{text:?} is not an EventBridge event bus ARN ({FORM})");
        let parts: Vec<&str> = text.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(not_a_bus());
        };
        let Some(name) = resource.strip_prefix("event-bus/") else { return Err(not_a_bus()) };
        let partition_ok =
            partition.starts_with("aws") && partition.chars().all(|c| c.is_ascii_lowercase() || c == '-');
        if *arn != "arn" || !partition_ok || *service != "events" {
            return Err(not_a_bus());
        }
        if !is_region_name(region) {
            return Err(format!("{text:?} names no region (the bus's region, such as us-east-1, is its fourth field)"));
        }
        if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("{text:?} names no account (the bus's 12-digit account ID is its fifth field)"));
        }
        // EventBridge API reference, "EventBus": a name of 1 to 256 of [/.-_A-Za-z0-9].
        let name_ok = |c: char| c.is_ascii_alphanumeric() || "/.-_".contains(c);
        if name.is_empty() || name.len() > 256 || !name.chars().all(name_ok) {
            return Err(format!("{text:?}: the bus name must be 1 to 256 letters, digits, '.', '-', '_' or '/'"));
        }
        if text.len() > MAX_ARN_LEN {
            return Err(format!(
                "the ARN is {} characters long; the chain records it in a tag, which holds {MAX_ARN_LEN} (give a bus with a shorter name)",
                text.len()
            ));
        }
        Ok(EventBus {
            arn: text.to_string(),
            partition: partition.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            name: name.to_string(),
        })
    }
}

/// The bus the properties name, if any; it must be in the stack's partition, as EventBridge
/// delivers only within one.
pub fn report_to(props: &Properties, stack_id: &str) -> Result<Option<EventBus>> {
    let Some(text) = scalar(props, P)? else { return Ok(None) };
    let bus = EventBus::parse(&text).map_err(|message| Error::property(P, message))?;
    let stack_partition = own_partition(stack_id).unwrap_or_default();
    if !stack_partition.is_empty() && bus.partition != stack_partition {
        return Err(Error::property(
            P,
            format!(
                "the bus is in the {} partition and the stack in {stack_partition}; EventBridge delivers only within a partition",
                bus.partition
            ),
        ));
    }
    Ok(Some(bus))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STACK: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1";

    fn read(value: serde_json::Value) -> Result<Option<EventBus>> {
        report_to(json!({"ReportToEventBus": value}).as_object().unwrap(), STACK)
    }

    #[test]
    fn a_bus_in_any_account_and_region_of_the_partition_is_taken() {
        let bus = read(json!("arn:aws:events:eu-west-1:210987654321:event-bus/fleet")).unwrap().unwrap();
        assert_eq!(
            (bus.region.as_str(), bus.account.as_str(), bus.name.as_str()),
            ("eu-west-1", "210987654321", "fleet")
        );
        assert_eq!(read(json!("")).unwrap(), None);
        assert_eq!(read(json!(null)).unwrap(), None);
        assert!(read(json!("arn:aws:events:us-east-1:210987654321:event-bus/aws.partner/x/y_z-1")).is_ok());
    }

    #[test]
    fn anything_but_a_bus_arn_is_refused_naming_the_property() {
        for (value, says) in [
            (json!("fleet"), "is not an EventBridge event bus ARN"),
            (json!("arn:aws:sqs:us-east-1:210987654321:fleet"), "is not an EventBridge event bus ARN"),
            (json!("arn:aws:events:us-east-1:210987654321:rule/fleet"), "is not an EventBridge event bus ARN"),
            (json!("arn:aws:events::210987654321:event-bus/fleet"), "names no region"),
            (json!("arn:aws:events:us-east-1:2109:event-bus/fleet"), "names no account"),
            (json!("arn:aws:events:us-east-1:210987654321:event-bus/"), "the bus name must be"),
            (json!("arn:aws:events:us-east-1:210987654321:event-bus/a b"), "the bus name must be"),
            (json!(format!("arn:aws:events:us-east-1:210987654321:event-bus/{}", "a".repeat(220))), "holds 256"),
            (json!("arn:aws-cn:events:cn-north-1:210987654321:event-bus/fleet"), "only within a partition"),
            (json!(["arn:aws:events:us-east-1:210987654321:event-bus/fleet"]), "expected a string"),
        ] {
            let error = read(value.clone()).unwrap_err().to_string();
            assert!(error.starts_with("ReportToEventBus: "), "{value}: {error}");
            assert!(error.contains(says), "{value}: {error}");
        }
    }
}
