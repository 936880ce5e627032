//! The kinds of event that reach the function: CloudFormation's custom-resource
//! requests, EventBridge events (the schedule and RDS events) that ask it to follow
//! the database writer, and a direct `{"Diagnose": {}}`.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The invocation payload, sorted by kind without ever failing deserialization:
/// an error there would make the runtime report an invocation error and Lambda
/// deliver the same payload again.
#[derive(Debug)]
pub enum Incoming {
    /// Anything that is not an EventBridge event, malformed requests included:
    /// whatever can be read of them is needed to answer CloudFormation.
    CloudFormation(Value),
    EventBridge(Box<EventBridgeEvent<Value>>),
    /// `{"Diagnose": {}}`: a report of the stack's chains, returned to the invoker.
    Diagnose,
    /// A payload that is none of these: the invoker is told what is understood.
    NotUnderstood(String),
    /// Not JSON, or an EventBridge envelope with missing fields: nobody to answer.
    Unreadable(String),
}

/// Fields only a CloudFormation request carries: a payload with any of them gets
/// CloudFormation's answer (a FAILED one if it is malformed).
const CLOUDFORMATION_FIELDS: [&str; 5] = ["RequestType", "ResponseURL", "StackId", "RequestId", "LogicalResourceId"];

impl Incoming {
    pub fn classify(payload: Value) -> Incoming {
        // EventBridge always sets both; CloudFormation never does.
        let from_eventbridge = payload.get("detail-type").is_some() && payload.get("source").is_some();
        let from_cloudformation = CLOUDFORMATION_FIELDS.iter().any(|field| payload.get(field).is_some());
        if from_cloudformation {
            return Incoming::CloudFormation(payload);
        }
        if !from_eventbridge {
            return match payload.as_object() {
                Some(object) if object.len() == 1 && object.contains_key("Diagnose") => Incoming::Diagnose,
                _ => Incoming::NotUnderstood(format!("{:.200}", payload.to_string())),
            };
        }
        match serde_json::from_value(payload) {
            Ok(event) => Incoming::EventBridge(Box::new(event)),
            Err(err) => Incoming::Unreadable(format!("malformed EventBridge event: {err}")),
        }
    }
}

impl<'de> Deserialize<'de> for Incoming {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(deserializer) {
            Ok(value) => Incoming::classify(value),
            Err(err) => Incoming::Unreadable(format!("not JSON: {err}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(bytes: &[u8]) -> Incoming {
        // As the runtime reads it: one value, trailing bytes unchecked.
        Incoming::deserialize(&mut serde_json::Deserializer::from_slice(bytes)).unwrap()
    }

    #[test]
    fn events_are_sorted_by_kind() {
        let scheduled = json!({"version": "0", "id": "1", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-11-25T06:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/r"], "detail": {}});
        assert!(matches!(read(scheduled.to_string().as_bytes()), Incoming::EventBridge(e) if e.source == "aws.events"));
        let create = json!({"RequestType": "Create", "ResponseURL": "https://s3/x"});
        assert!(matches!(read(create.to_string().as_bytes()), Incoming::CloudFormation(_)));
        // Malformed CloudFormation events stay CloudFormation's, so they still get their FAILED answer.
        assert!(matches!(read(b"{\"ResponseURL\": \"https://s3/x\"}"), Incoming::CloudFormation(_)));
        assert!(matches!(read(b"{\"RequestType\": 7}"), Incoming::CloudFormation(_)));
        assert!(matches!(read(b"{\"Diagnose\": {}}"), Incoming::Diagnose));
        assert!(matches!(read(b"[1, 2]"), Incoming::NotUnderstood(_)));
        assert!(matches!(read(b"{\"hello\": \"world\"}"), Incoming::NotUnderstood(_)));
        assert!(matches!(read(b"<html>"), Incoming::Unreadable(_)));
        let no_detail = json!({"detail-type": "Scheduled Event", "source": "aws.events"});
        assert!(matches!(read(no_detail.to_string().as_bytes()), Incoming::Unreadable(_)));
    }
}
