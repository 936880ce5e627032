//! What the fleet hears of one answered request (see [`crate::fleet`]).

use serde_json::Value;

use super::lookup;
use crate::chain::SERVICE_ID_PREFIX;
use crate::cloudformation::{Request, Success};
use crate::fleet::{Happened, Outcome, Report};
use crate::spec::{EventBus, report_to};

/// The bus the request's properties name and the report for it, or None when they name none
/// (or none that can be read: that request is answered FAILED for it). A request for the
/// lookup resource is not reported: it builds nothing.
pub fn of(request: &Request, answer: Result<&Success, &str>) -> Option<(EventBus, Report)> {
    let (happened, properties, stack_id, logical_id, resource_type, physical_id) = match request {
        Request::Create(r) => {
            (Happened::Create, &r.resource_properties, &r.stack_id, &r.logical_resource_id, &r.resource_type, None)
        }
        Request::Update(r) => (
            Happened::Update,
            &r.resource_properties,
            &r.stack_id,
            &r.logical_resource_id,
            &r.resource_type,
            Some(&r.physical_resource_id),
        ),
        Request::Delete(r) => (
            Happened::Delete,
            &r.resource_properties,
            &r.stack_id,
            &r.logical_resource_id,
            &r.resource_type,
            Some(&r.physical_resource_id),
        ),
        _ => return None,
    };
    if resource_type == lookup::RESOURCE_TYPE {
        return None;
    }
    let bus = report_to(properties.as_object()?, stack_id).ok().flatten()?;
    // Only IDs of services: after a failed Create CloudFormation may hold a made-up one.
    let held = physical_id.filter(|id| id.starts_with(SERVICE_ID_PREFIX)).cloned().unwrap_or_default();
    let outcome = if answer.is_ok() { Outcome::Success } else { Outcome::Failed };
    let mut report = Report::new(stack_id, logical_id, happened, outcome);
    report.database = properties.get("Database").and_then(Value::as_str).unwrap_or_default().to_string();
    match answer {
        Ok(success) if happened != Happened::Delete => {
            let data = |key: &str| success.data.get(key).cloned().unwrap_or_default();
            report.service_id = success.physical_resource_id.clone();
            report.previous_service_id = match held != success.physical_resource_id {
                true => held,
                false => String::new(),
            };
            report.service_name = data("ServiceName");
            report.availability_zone_ids = data("AvailabilityZoneIds");
            report.target_ips = data("TargetIps");
            report.writer_instance = data("WriterInstance");
        }
        // A Delete, or a failure: the service held before, if any (a failed Update's stays).
        Ok(_) => report.service_id = held,
        Err(reason) => {
            report.service_id = held;
            report.reason = reason.to_string();
        }
    }
    Some((bus, report))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    const BUS: &str = "arn:aws:events:us-east-1:210987654321:event-bus/fleet";

    fn request(kind: &str, physical_id: Option<&str>, properties: Value) -> Request {
        let mut event = json!({
            "RequestType": kind, "ResponseURL": "https://example.com/r", "StackId":
            "arn:aws:cloudformation:us-east-1:111111111111:stack/s/1", "RequestId": "r1",
            "ResourceType": "Custom::ReversePrivateLink", "LogicalResourceId": "ReversePrivateLink",
            "ResourceProperties": properties, "OldResourceProperties": {},
        });
        if let Some(id) = physical_id {
            event["PhysicalResourceId"] = json!(id);
        }
        serde_json::from_value(event).unwrap()
    }

    #[test]
    fn an_update_that_replaced_names_both_services_and_the_new_ones_data() {
        let properties = json!({"ReportToEventBus": BUS, "Database": "orders"});
        let data = BTreeMap::from([
            ("ServiceName".to_string(), "com.amazonaws.vpce.us-east-1.vpce-svc-2".to_string()),
            ("AvailabilityZoneIds".to_string(), "use1-az1,use1-az2".to_string()),
            ("TargetIps".to_string(), "10.0.1.5".to_string()),
        ]);
        let success = Success { physical_resource_id: "vpce-svc-2".into(), data };
        let (bus, report) = of(&request("Update", Some("vpce-svc-1"), properties), Ok(&success)).unwrap();
        assert_eq!(bus.arn, BUS);
        assert_eq!((report.service_id.as_str(), report.previous_service_id.as_str()), ("vpce-svc-2", "vpce-svc-1"));
        assert_eq!(report.availability_zone_ids, "use1-az1,use1-az2");
        assert_eq!((report.account.as_str(), report.database.as_str()), ("111111111111", "orders"));
    }

    #[test]
    fn a_failure_says_why_and_keeps_the_service_held() {
        let properties = json!({"ReportToEventBus": BUS, "Port": "x"});
        let (_, report) = of(&request("Update", Some("vpce-svc-1"), properties.clone()), Err("Port: bad")).unwrap();
        assert_eq!(
            (report.outcome, report.reason.as_str(), report.service_id.as_str()),
            (Outcome::Failed, "Port: bad", "vpce-svc-1")
        );
        let (_, report) = of(&request("Create", None, properties), Err("Port: bad")).unwrap();
        assert_eq!(report.service_id, "");
    }

    #[test]
    fn nothing_is_reported_without_a_readable_bus() {
        let success = Success { physical_resource_id: "vpce-svc-1".into(), data: BTreeMap::new() };
        assert!(of(&request("Delete", Some("vpce-svc-1"), json!({})), Ok(&success)).is_none());
        assert!(of(&request("Delete", Some("vpce-svc-1"), json!({"ReportToEventBus": "bus"})), Ok(&success)).is_none());
        let (_, report) =
            of(&request("Delete", Some("made-up-1"), json!({"ReportToEventBus": BUS})), Ok(&success)).unwrap();
        assert_eq!((report.event, report.service_id.as_str()), (Happened::Delete, ""));
    }
}
