//! What the template promises about events: one older than the custom
//! resource's ServiceTimeout is dropped (it can wait in Lambda's queue for up to
//! 6 hours by default, long after the stack stopped waiting), and retries are bounded.

fn number_after(template: &str, key: &str) -> u64 {
    let line = template
        .lines()
        .find(|line| line.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} not in template.yaml"));
    line.split(':').nth(1).unwrap().trim().parse().unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn stale_events_are_dropped_and_retries_bounded() {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).unwrap();
    assert!(template.contains("Type: AWS::Lambda::EventInvokeConfig"));
    let service_timeout = number_after(&template, "ServiceTimeout");
    assert_eq!(number_after(&template, "MaximumEventAgeInSeconds"), service_timeout);
    assert!(number_after(&template, "MaximumRetryAttempts") <= 2);
    // The function's own deadline is within it too.
    assert!(number_after(&template, "Timeout") < service_timeout);
}

/// The template as data: CloudFormation's short forms (`!Ref`, `!Sub`, …) stay tagged values.
pub fn template() -> serde_norway::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// Whether `event` matches an EventBridge `pattern` made of lists of exact values
/// and nested objects (EventBridge user guide, "Event patterns"); any other operator
/// in the pattern fails the test, so it cannot pass by not understanding one.
fn matches(pattern: &serde_norway::Value, event: &serde_json::Value) -> bool {
    use serde_norway::Value as Yaml;
    let Yaml::Mapping(fields) = pattern else { panic!("a pattern is a map: {pattern:?}") };
    fields.iter().all(|(key, expected)| {
        let key = key.as_str().unwrap();
        let value = &event[key];
        match expected {
            Yaml::Sequence(allowed) => allowed.iter().any(|allowed| match allowed {
                Yaml::String(text) => value.as_str() == Some(text.as_str()),
                other => panic!("only exact values are modelled, got {other:?} for {key}"),
            }),
            Yaml::Mapping(_) => matches(expected, value),
            other => panic!("unexpected pattern for {key}: {other:?}"),
        }
    })
}

fn rds_event(detail_type: &str, source: &str, event_id: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "0", "id": "1", "detail-type": detail_type, "source": "aws.rds", "account": "123456789012",
        "time": "2026-11-25T06:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"EventID": event_id, "SourceIdentifier": source, "SourceType": "CLUSTER"}
    })
}

#[test]
fn the_rds_event_rule_matches_failovers_however_the_database_was_named() {
    let template = template();
    let pattern = &template["Resources"]["FollowWriterEvents"]["Properties"]["EventPattern"];
    // Whatever the stack's DatabaseIdentifier (typed "Orders", a member "orders-2", an endpoint),
    // the events of its database arrive: the pattern does not depend on how it was typed.
    assert!(pattern["detail"].get("SourceIdentifier").is_none(), "{pattern:?}");
    for (detail_type, source, event_id) in [
        ("RDS DB Cluster Event", "orders", "RDS-EVENT-0071"),
        ("RDS DB Cluster Event", "orders", "RDS-EVENT-0073"),
        ("RDS DB Instance Event", "orders-2", "RDS-EVENT-0013"),
        ("RDS DB Instance Event", "solo", "RDS-EVENT-0015"),
        ("RDS DB Instance Event", "solo", "RDS-EVENT-0049"),
        ("RDS Blue Green Deployment Event", "bgd-hdqs3ik6vrwgutsn", "RDS-EVENT-0248"),
        ("RDS Blue Green Deployment Event", "bgd-hdqs3ik6vrwgutsn", "RDS-EVENT-0251"),
    ] {
        assert!(matches(pattern, &rds_event(detail_type, source, event_id)), "{detail_type} {event_id} from {source}");
    }
    for (detail_type, event_id) in [
        ("RDS DB Instance Event", "RDS-EVENT-0006"),
        ("RDS Blue Green Deployment Event", "RDS-EVENT-0244"),
        ("RDS DB Snapshot Event", "RDS-EVENT-0071"),
    ] {
        assert!(!matches(pattern, &rds_event(detail_type, "orders", event_id)), "{detail_type} {event_id}");
    }
}
