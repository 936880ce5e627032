//! The fleet report: with `ReportToEventBus` set, every answer and every target move
//! reaches the bus, in the form `schema/fleet-event.schema.json` gives, and a report that
//! cannot be put changes nothing else.

use aws_config::Region;
use serde_json::{Value, json};

use crate::support::harness::{DbSeed, Harness};
use crate::support::proxy::Fault;

/// The bus is in another region than the stack (us-east-1), as a StackSet's instances mostly are.
const BUS_REGION: &str = "eu-west-1";
const BUS: &str = "arn:aws:events:eu-west-1:123456789012:event-bus/fleet";

/// The collecting side, as fleet.yaml makes it but with a queue for the test to read: the bus
/// and fleet.yaml's rule, sending the function's events to the queue. Returns the queue's URL.
async fn fleet_bus(h: &Harness) -> (aws_sdk_sqs::Client, String) {
    let config = h.moto.sdk_config().await.into_builder().region(Region::new(BUS_REGION)).build();
    let events = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    Box::pin(events.create_event_bus().name("fleet").send()).await.unwrap();
    let queue = Box::pin(sqs.create_queue().queue_name("fleet").send()).await.unwrap().queue_url.unwrap();
    let fleet = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fleet.yaml")).unwrap();
    let fleet: serde_norway::Value = serde_norway::from_str(&fleet).unwrap();
    let pattern = serde_json::to_string(&fleet["Resources"]["KeepEveryReport"]["Properties"]["EventPattern"]).unwrap();
    assert!(pattern.contains("reverse-privatelink"), "{pattern}");
    Box::pin(events.put_rule().name("keep").event_bus_name("fleet").event_pattern(pattern).send()).await.unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("queue")
        .arn(format!("arn:aws:sqs:{BUS_REGION}:123456789012:fleet"))
        .build()
        .unwrap();
    Box::pin(events.put_targets().rule("keep").event_bus_name("fleet").targets(target).send()).await.unwrap();
    // The stack deployed with the parameter: the roles' fleet-report policies exist.
    h.moto.set_parameters(&h.stack_id, &json!({"ReportToEventBus": BUS})).await;
    (sqs, queue)
}

/// The events that reached the queue since the last call, each checked against the schema.
async fn received(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<Value> {
    let schema: Value =
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/fleet-event.schema.json")))
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let answer = Box::pin(sqs.receive_message().queue_url(queue).max_number_of_messages(10).send()).await.unwrap();
    let mut events = Vec::new();
    for message in answer.messages.unwrap_or_default() {
        let event: Value = serde_json::from_str(message.body.as_deref().unwrap()).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&event).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "the event does not follow the schema: {errors:?}\n{event:#}");
        Box::pin(sqs.delete_message().queue_url(queue).receipt_handle(message.receipt_handle.unwrap()).send())
            .await
            .unwrap();
        events.push(event);
    }
    events
}

/// The one event received, its detail.
async fn one(sqs: &aws_sdk_sqs::Client, queue: &str) -> Value {
    let events = received(sqs, queue).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    events[0]["detail"].clone()
}

fn reporting(h: &Harness, db: &DbSeed) -> Value {
    let mut properties = h.following(&db.cluster);
    properties["ReportToEventBus"] = json!(BUS);
    properties
}

#[tokio::test]
async fn every_answer_and_target_move_reaches_the_fleets_bus_in_the_schemas_form() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let (sqs, queue) = fleet_bus(&h).await;
    let properties = reporting(&h, &db);

    let answer = h.create(&properties).await;
    let service_id = answer["PhysicalResourceId"].as_str().unwrap().to_string();
    let created = one(&sqs, &queue).await;
    let expected_start = json!({
        "SchemaVersion": "1", "Account": "123456789012", "Region": "us-east-1", "StackId": h.stack_id,
        "LogicalResourceId": "ReversePrivateLink", "Event": "Create", "Outcome": "SUCCESS", "Reason": "",
        "ServiceId": service_id, "PreviousServiceId": "", "ServiceName": answer["Data"]["ServiceName"],
        "AvailabilityZoneIds": h.seed.zone_ids.join(","), "TargetIps": db.writer.address.to_string(),
        "PreviousTargetIps": "", "WriterInstance": db.writer.id, "Database": db.cluster,
    });
    assert_eq!(created, expected_start);

    // A failover, followed by the follower: the move, with what the consumer needs.
    h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster).send().await.unwrap();
    h.dns.set(&db.cluster_endpoint, &[db.reader.address]);
    h.deliver(&h.rds_event("CLUSTER", &db.cluster, "RDS-EVENT-0071")).await;
    let moved = one(&sqs, &queue).await;
    let mut expected = expected_start.clone();
    expected["Event"] = json!("WriterMoved");
    expected["TargetIps"] = json!(db.reader.address.to_string());
    expected["PreviousTargetIps"] = json!(db.writer.address.to_string());
    expected["WriterInstance"] = json!(db.reader.id);
    assert_eq!(moved, expected);
    // A run that moves nothing says nothing.
    h.deliver(&h.scheduled_event()).await;
    assert_eq!(received(&sqs, &queue).await, Vec::<Value>::new());

    // An Update that fails says why, and names the service that stays.
    let mut bad = properties.clone();
    bad["IdleTimeoutSeconds"] = json!("7");
    let failed = h.send(&h.update_event(&service_id, &properties, &bad)).await;
    assert_eq!(failed["Status"], "FAILED");
    let update = one(&sqs, &queue).await;
    assert_eq!(
        (&update["Event"], &update["Outcome"], &update["ServiceId"]),
        (&json!("Update"), &json!("FAILED"), &json!(service_id))
    );
    assert_eq!(update["Reason"], failed["Reason"]);

    let deleted = h.send(&h.delete_event(&service_id, &properties)).await;
    assert_eq!(deleted["Status"], "SUCCESS");
    let delete = one(&sqs, &queue).await;
    let gone = json!({"Event": "Delete", "Outcome": "SUCCESS", "ServiceId": service_id, "ServiceName": "", "AvailabilityZoneIds": ""});
    for (field, value) in gone.as_object().unwrap() {
        assert_eq!(&delete[field], value, "{field}");
    }
    assert!(h.inventory().await.is_empty());
}

#[tokio::test]
async fn a_report_that_cannot_be_put_changes_no_answer_and_no_move() {
    let (h, proxy) = Harness::behind_proxy(Some(2)).await;
    let db = h.seed_database().await;
    let (sqs, queue) = fleet_bus(&h).await;
    // The bus deleted, say: EventBridge's answer to a bus that does not exist.
    proxy.inject("PutEvents", Fault::Refuse("ResourceNotFoundException"), None);
    let properties = reporting(&h, &db);

    let answer = h.create(&properties).await;
    assert_eq!(answer["Status"], "SUCCESS");
    h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster).send().await.unwrap();
    h.dns.set(&db.cluster_endpoint, &[db.reader.address]);
    h.deliver(&h.scheduled_event()).await;
    let chain = h.chain(&answer).await;
    assert_eq!(chain.targets.iter().map(|(ip, _)| ip.clone()).collect::<Vec<_>>(), [db.reader.address.to_string()]);
    let service_id = answer["PhysicalResourceId"].as_str().unwrap();
    assert_eq!(h.send(&h.delete_event(service_id, &properties)).await["Status"], "SUCCESS");

    assert_eq!(proxy.actions().iter().filter(|a| *a == "PutEvents").count(), 3, "Create, the move, Delete: each tried");
    assert_eq!(received(&sqs, &queue).await, Vec::<Value>::new());
}

#[tokio::test]
async fn anything_but_an_event_bus_is_refused_naming_the_property_and_leaves_nothing() {
    let h = Harness::new().await;
    let mut properties = h.properties();
    properties["ReportToEventBus"] = json!("arn:aws:sqs:us-east-1:123456789012:fleet");
    let answer = h.send(&h.create_event(&properties)).await;
    assert_eq!(answer["Status"], "FAILED");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.starts_with("ReportToEventBus: ") && reason.contains("is not an EventBridge event bus ARN"),
        "{reason}"
    );
    assert!(h.inventory().await.is_empty());
}

#[tokio::test]
async fn the_bus_is_set_and_dropped_in_place_and_the_follower_reports_where_the_chain_says() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let (sqs, queue) = fleet_bus(&h).await;
    let quiet = h.following(&db.cluster);
    let answer = h.create(&quiet).await;
    let service_id = answer["PhysicalResourceId"].as_str().unwrap().to_string();
    let report_tag = |chain: &crate::support::harness::ChainView| {
        chain.target_group_tags.get("reverse-privatelink:report-to").cloned()
    };
    assert_eq!(report_tag(&h.chain(&answer).await), None);
    assert_eq!(received(&sqs, &queue).await, Vec::<Value>::new(), "no bus, no report");

    let reporting = reporting(&h, &db);
    let updated = h.send(&h.update_event(&service_id, &quiet, &reporting)).await;
    assert_eq!(updated["PhysicalResourceId"], service_id.as_str(), "in place");
    assert_eq!(report_tag(&h.chain(&updated).await).as_deref(), Some(BUS));
    assert_eq!(one(&sqs, &queue).await["Event"], "Update");
    h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster).send().await.unwrap();
    h.dns.set(&db.cluster_endpoint, &[db.reader.address]);
    h.deliver(&h.scheduled_event()).await;
    assert_eq!(one(&sqs, &queue).await["Event"], "WriterMoved");

    let dropped = h.send(&h.update_event(&service_id, &reporting, &quiet)).await;
    assert_eq!(dropped["PhysicalResourceId"], service_id.as_str());
    assert_eq!(report_tag(&h.chain(&dropped).await), None);
    h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster).send().await.unwrap();
    h.dns.set(&db.cluster_endpoint, &[db.writer.address]);
    h.deliver(&h.scheduled_event()).await;
    assert_eq!(h.chain(&dropped).await.targets.iter().next().unwrap().0, db.writer.address.to_string());
    assert_eq!(received(&sqs, &queue).await, Vec::<Value>::new(), "the bus dropped, the move unreported");
}

#[tokio::test]
async fn a_report_refused_while_the_new_permission_spreads_is_tried_again() {
    let (h, proxy) = Harness::behind_proxy(Some(2)).await;
    let db = h.seed_database().await;
    let (sqs, queue) = fleet_bus(&h).await;
    // IAM is eventually consistent: the role's new fleet-report policy refuses the first tries.
    proxy.inject("PutEvents", Fault::Refuse("AccessDeniedException"), Some(2));
    let answer = h.create(&reporting(&h, &db)).await;
    assert_eq!(answer["Status"], "SUCCESS");
    assert_eq!(one(&sqs, &queue).await["Event"], "Create");
    assert_eq!(proxy.actions().iter().filter(|a| *a == "PutEvents").count(), 3);
}

#[tokio::test]
async fn an_event_the_bus_did_not_take_is_tried_again_and_changes_no_answer() {
    let (h, proxy) = Harness::behind_proxy(Some(2)).await;
    let db = h.seed_database().await;
    fleet_bus(&h).await;
    // PutEvents answers 200 and fails the entry (EventBridge API reference, PutEventsResultEntry).
    let failed =
        r#"{"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}]}"#;
    proxy.inject("PutEvents", Fault::rewrite(move |_| failed.to_string()), None);
    let properties = reporting(&h, &db);
    let answer = h.create(&properties).await;
    assert_eq!(answer["Status"], "SUCCESS");
    let service_id = answer["PhysicalResourceId"].as_str().unwrap();
    assert_eq!(h.send(&h.delete_event(service_id, &properties)).await["Status"], "SUCCESS");
    // InternalFailure is retryable: each of the two reports is tried 4 times before it is given up.
    assert_eq!(proxy.actions().iter().filter(|a| *a == "PutEvents").count(), 8);
}
