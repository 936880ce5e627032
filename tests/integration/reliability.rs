//! Never hangs a stack, never leaks: throttling, server errors, dropped
//! connections, latency, persistent failures, crashes after every step, the
//! deadline, a flaky response URL, and bad input. Each test prints the figures
//! it produced on lines starting with "reliability:" (`make reliability`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::harness::{CONSUMER, Harness, SECOND_CONSUMER, invoke};
use crate::support::proxy::Fault;
use crate::support::runtime::{Ended, Process, RuntimeApi};

fn figure(line: String) {
    println!("reliability: {line}");
}

fn id(answer: &Value) -> String {
    answer["PhysicalResourceId"].as_str().unwrap().to_string()
}

/// Calls whose persistent failure does not fail a Create: those made after
/// CloudFormation has its answer, to record that it has it, and the question
/// whether CloudFormation still waits (unanswerable, it proceeds).
const NOT_STEPS: [&str; 3] = ["AddTags", "CreateTags", "DescribeStackResource"];

/// Create, an Update touching every in-place property, then Delete.
async fn lifecycle(h: &Harness) -> usize {
    let props = h.properties();
    let created = h.create(&props).await;
    h.chain(&created).await; // the whole chain is there
    let mut changed = props.clone();
    changed["AllowedPrincipals"] = json!([CONSUMER, SECOND_CONSUMER]);
    changed["TargetIps"] = json!(["10.0.2.30"]);
    changed["AcceptanceRequired"] = json!("true");
    changed["CrossZoneLoadBalancing"] = json!("false");
    changed["Tags"] = json!([{"Key": "team", "Value": "platform"}]);
    let updated = h.send(&h.update_event(&id(&created), &props, &changed)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(id(&updated), id(&created));
    let view = h.chain(&updated).await;
    assert_eq!(view.principals.len(), 2);
    assert_eq!(view.targets, [("10.0.2.30".to_string(), 3306)].into());
    let deleted = h.send(&h.delete_event(&id(&created), &changed)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert!(h.inventory().await.is_empty(), "{:?}", h.inventory().await);
    3
}

#[tokio::test]
async fn every_action_failing_once_still_succeeds_and_leaves_nothing() {
    let faults = [
        Fault::Throttle,
        Fault::ServerError(503),
        Fault::ServerError(500),
        Fault::Drop,
        Fault::Latency(Duration::from_millis(200)),
    ];
    let mut injected = 0;
    for fault in faults {
        // The SDK's retry settings as the function ships them.
        let (h, proxy) = Harness::behind_proxy(None).await;
        proxy.inject_once_per_action(fault.clone());
        let events = lifecycle(&h).await;
        let seen: BTreeSet<String> = proxy.actions().into_iter().collect();
        let hit: BTreeSet<String> = proxy.injected().into_iter().map(|(action, _)| action).collect();
        assert_eq!(hit, seen, "{fault:?}: every action must meet the fault once");
        assert!(seen.contains("CreateLoadBalancer") && seen.contains("CreateVpcEndpointServiceConfiguration"));
        assert!(seen.contains("DeleteLoadBalancer") && seen.contains("ModifyVpcEndpointServicePermissions"));
        injected += proxy.injected().len();
        figure(format!(
            "{fault:?} once on each of {} actions across {events} events: all SUCCESS, 0 resources left",
            seen.len()
        ));
    }
    figure(format!("{injected} transient faults injected in all"));
}

#[tokio::test]
async fn a_persistent_failure_at_any_step_of_create_fails_naming_it_and_leaves_nothing() {
    let (h, proxy) = Harness::behind_proxy(Some(3)).await;
    // The steps: every call a clean Create makes before it answers.
    let created = h.create(&h.properties()).await;
    let steps: BTreeSet<String> =
        proxy.actions().into_iter().filter(|action| !NOT_STEPS.contains(&action.as_str())).collect();
    assert!(steps.len() >= 12, "{steps:?}");
    let deleted = h.send(&h.delete_event(&id(&created), &h.properties())).await;
    assert_eq!(deleted["Status"], "SUCCESS");

    for step in &steps {
        proxy.clear();
        proxy.inject(step, Fault::ServerError(500), None);
        let event = h.create_event(&h.properties());
        let answer = h.send(&event).await;
        proxy.clear();
        assert_eq!(answer["Status"], "FAILED", "{step}: {answer}");
        let reason = answer["Reason"].as_str().unwrap();
        assert!(reason.contains(step.as_str()), "{step}: the reason must name the step: {reason}");
        assert!(h.inventory().await.is_empty(), "{step} left {:?}", h.inventory().await);
        let rollback = h.send(&h.delete_event(&id(&answer), &h.properties())).await;
        assert_eq!(rollback["Status"], "SUCCESS", "{step}: {rollback}");
        assert!(h.inventory().await.is_empty());
    }
    figure(format!(
        "persistent HTTP 500 at each of {} Create steps: {} FAILED naming the step, 0 resources left",
        steps.len(),
        steps.len()
    ));
}

/// Steps after which a Create can be killed with something built.
const CRASH_POINTS: [&str; 7] = [
    "CreateLoadBalancer",
    "CreateTargetGroup",
    "RegisterTargets",
    "CreateListener",
    "ModifyLoadBalancerAttributes",
    "CreateVpcEndpointServiceConfiguration",
    "ModifyVpcEndpointServicePermissions",
];

/// Runs the binary on a Create and kills it right after `step` took effect.
async fn crash_after(step: &str) -> (Harness, RuntimeApi, Value) {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let runtime = RuntimeApi::start().await;
    let process = Process::start(&runtime, h.binary_env(&proxy.endpoint));
    let event = h.create_event(&h.properties());
    if step == "the answer" {
        h.cloudformation.hold_next();
        runtime.submit(serde_json::to_vec(&event).unwrap(), Duration::from_secs(120));
        h.cloudformation.wait_for(1, Duration::from_secs(60)).await;
    } else {
        proxy.inject(step, Fault::HoldAfterForwarding, Some(1));
        runtime.submit(serde_json::to_vec(&event).unwrap(), Duration::from_secs(120));
        proxy.held().await;
    }
    process.stop().await;
    assert!(!h.inventory().await.is_empty(), "{step}: the crash came after something was built");
    // The next process reaches moto directly: the proxy's held request is gone with the killed one.
    (h, runtime, event)
}

#[tokio::test]
async fn a_create_killed_after_any_step_then_deleted_by_cloudformation_leaves_nothing() {
    for step in CRASH_POINTS {
        let (h, runtime, _) = crash_after(step).await;
        let process = Process::start(&runtime, h.binary_env(&h.moto.endpoint));
        // The Create never answered, so CloudFormation's rollback Delete carries an ID it made up.
        let delete = h.delete_event("import-db-ReversePrivateLink-9Z8Y7X6W5V4U", &h.properties());
        let ended = runtime.invoke(serde_json::to_vec(&delete).unwrap(), Duration::from_secs(120)).await;
        assert_eq!(ended, Ended::Response("null".into()));
        let answer = h.answer_to(&delete);
        assert_eq!(answer["Status"], "SUCCESS", "{step}: {answer}");
        assert!(h.inventory().await.is_empty(), "{step} left {:?}", h.inventory().await);
        process.stop().await;
    }
    figure(format!(
        "Create killed after each of {} steps, then Delete with a made-up ID: 0 resources left",
        CRASH_POINTS.len()
    ));
}

#[tokio::test]
async fn a_create_killed_after_any_step_then_delivered_again_builds_one_chain() {
    let points: Vec<&str> = CRASH_POINTS.iter().copied().chain(["the answer"]).collect();
    for step in &points {
        let (h, runtime, event) = crash_after(step).await;
        let process = Process::start(&runtime, h.binary_env(&h.moto.endpoint));
        let ended = runtime.invoke(serde_json::to_vec(&event).unwrap(), Duration::from_secs(120)).await;
        assert_eq!(ended, Ended::Response("null".into()));
        let answers = h.cloudformation.recorded();
        let answer = answers.last().unwrap().json();
        assert_eq!(answer["Status"], "SUCCESS", "{step}: {answer}");
        let inventory = h.inventory().await;
        assert_eq!(inventory.counts(), (1, 1, 1, 1), "{step}: one chain");
        let view = h.chain(&answer).await;
        assert_eq!(view.principals, [CONSUMER.to_string()].into());
        assert_eq!(view.cross_zone, "true");
        // And the stack's eventual Delete, naming the ID, removes it.
        let delete = h.delete_event(&id(&answer), &h.properties());
        runtime.invoke(serde_json::to_vec(&delete).unwrap(), Duration::from_secs(120)).await;
        assert!(h.inventory().await.is_empty(), "{step}: {:?}", h.inventory().await);
        process.stop().await;
    }
    figure(format!(
        "Create killed after each of {} steps, then delivered again: one complete chain each time",
        points.len()
    ));
}

#[tokio::test]
async fn the_binary_answers_before_its_deadline_while_the_load_balancer_provisions() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    proxy.inject("DescribeLoadBalancers", Fault::KeepProvisioning, None);
    let runtime = RuntimeApi::start().await;
    let process = Process::start(&runtime, h.binary_env(&proxy.endpoint));
    let event = h.create_event(&h.properties());
    let deadline = Duration::from_secs(12);
    let started = Instant::now();
    let ended = runtime.invoke(serde_json::to_vec(&event).unwrap(), deadline).await;
    let elapsed = started.elapsed();
    assert_eq!(ended, Ended::Response("null".into()));
    assert!(elapsed < deadline, "the answer came after the deadline: {elapsed:?}");
    let answer = h.answer_to(&event);
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert!(
        answer["Reason"].as_str().unwrap().contains("timed out waiting for the load balancer to become active"),
        "{answer}"
    );
    assert!(h.inventory().await.is_empty(), "{:?}", h.inventory().await);

    let rollback = h.delete_event(&id(&answer), &h.properties());
    runtime.invoke(serde_json::to_vec(&rollback).unwrap(), Duration::from_secs(60)).await;
    assert_eq!(h.answer_to(&rollback)["Status"], "SUCCESS");
    assert!(h.inventory().await.is_empty());
    process.stop().await;
    figure(format!(
        "deadline {deadline:?} with the load balancer provisioning: FAILED after {elapsed:.1?}, 0 resources left"
    ));
}

#[tokio::test]
async fn a_response_url_failing_twice_still_gets_exactly_one_answer() {
    let h = Harness::new().await;
    let runtime = RuntimeApi::start().await;
    let process = Process::start(&runtime, h.binary_env(&h.moto.endpoint));
    let props = h.properties();
    let mut created_id = String::new();
    for (how, fail) in [("HTTP 500", true), ("dropped connection", false)] {
        let before = h.cloudformation.attempts();
        if fail {
            h.cloudformation.fail_next(2, StatusCode::INTERNAL_SERVER_ERROR);
        } else {
            h.cloudformation.drop_next(2);
        }
        let event = if created_id.is_empty() { h.create_event(&props) } else { h.delete_event(&created_id, &props) };
        let ended = runtime.invoke(serde_json::to_vec(&event).unwrap(), Duration::from_secs(120)).await;
        assert_eq!(ended, Ended::Response("null".into()), "{how}");
        let answer = h.answer_to(&event);
        assert_eq!(answer["Status"], "SUCCESS", "{how}: {answer}");
        assert_eq!(h.cloudformation.attempts() - before, 3, "{how}: two failures, then the answer");
        created_id = id(&answer);
    }
    assert!(h.inventory().await.is_empty());
    process.stop().await;
    figure(
        "response URL failing twice (HTTP 500, then dropped connections): each answer delivered exactly once"
            .to_string(),
    );
}

/// One malformed event or property set and the field its FAILED reason must name.
struct BadInput {
    what: &'static str,
    event: Value,
    field: &'static str,
}

fn bad_inputs(h: &Harness) -> Vec<BadInput> {
    let p = h.properties();
    let s = &h.seed;
    let with = |key: &str, value: Value| {
        let mut props = p.clone();
        props[key] = value;
        h.create_event(&props)
    };
    let without = |key: &str| {
        let mut props = p.clone();
        props.as_object_mut().unwrap().remove(key);
        h.create_event(&props)
    };
    let event_without = |field: &str| {
        let mut event = h.create_event(&p);
        event.as_object_mut().unwrap().remove(field);
        event
    };
    let mut update_without_old = h.update_event("vpce-svc-0123456789abcdef0", &p, &p);
    update_without_old.as_object_mut().unwrap().remove("OldResourceProperties");
    let mut destroy = h.create_event(&p);
    destroy["RequestType"] = json!("Destroy");
    let mut not_an_object = h.create_event(&p);
    not_an_object["ResourceProperties"] = json!("SubnetIds=subnet-1");
    let case = |what, event, field| BadInput { what, event, field };
    vec![
        case("SubnetIds missing", without("SubnetIds"), "SubnetIds"),
        case("SubnetIds empty", with("SubnetIds", json!([])), "SubnetIds"),
        case("SubnetIds a number", with("SubnetIds", json!(42)), "SubnetIds"),
        case("SubnetIds malformed", with("SubnetIds", json!(["subnet-xyz"])), "SubnetIds"),
        case("SubnetIds repeated", with("SubnetIds", json!([s.subnets[0], s.subnets[0]])), "SubnetIds"),
        case("SubnetIds unknown", with("SubnetIds", json!(["subnet-0000000000000000f"])), "SubnetIds"),
        case("SubnetIds in two VPCs", with("SubnetIds", json!([s.subnets[0], s.other_vpc_subnet])), "SubnetIds"),
        case("SubnetIds two in one zone", with("SubnetIds", json!([s.subnets[0], s.same_zone_subnet])), "SubnetIds"),
        case("SecurityGroupIds malformed", with("SecurityGroupIds", json!(["group-1"])), "SecurityGroupIds"),
        case("SecurityGroupIds unknown", with("SecurityGroupIds", json!(["sg-0000000000000000f"])), "SecurityGroupIds"),
        case(
            "SecurityGroupIds in another VPC",
            with("SecurityGroupIds", json!([s.other_vpc_security_group])),
            "SecurityGroupIds",
        ),
        case(
            "SecurityGroupIds more than five",
            with(
                "SecurityGroupIds",
                json!(["sg-00000001", "sg-00000002", "sg-00000003", "sg-00000004", "sg-00000005", "sg-00000006"]),
            ),
            "SecurityGroupIds",
        ),
        case("TargetIps missing", without("TargetIps"), "TargetIps"),
        case("TargetIps a host name", with("TargetIps", json!(["db.example.com"])), "TargetIps"),
        case("TargetIps IPv6", with("TargetIps", json!(["fd00::25"])), "TargetIps"),
        case("TargetIps public", with("TargetIps", json!(["8.8.8.8"])), "TargetIps"),
        case("TargetIps loopback", with("TargetIps", json!(["127.0.0.1"])), "TargetIps"),
        case("TargetIps repeated", with("TargetIps", json!(["10.0.1.25", "10.0.1.25"])), "TargetIps"),
        case("Port 0", with("Port", json!("0")), "Port"),
        case("Port 70000", with("Port", json!("70000")), "Port"),
        case("Port abc", with("Port", json!("abc")), "Port"),
        case("Port negative", with("Port", json!("-1")), "Port"),
        case("AllowedPrincipals *", with("AllowedPrincipals", json!(["*"])), "AllowedPrincipals"),
        case(
            "AllowedPrincipals malformed ARN",
            with("AllowedPrincipals", json!(["arn:aws:iam::12345:root"])),
            "AllowedPrincipals",
        ),
        case(
            "AllowedPrincipals account wildcard",
            with("AllowedPrincipals", json!(["arn:aws:iam::*:root"])),
            "AllowedPrincipals",
        ),
        case("AllowedPrincipals empty", with("AllowedPrincipals", json!([])), "AllowedPrincipals"),
        case("AllowedPrincipals missing", without("AllowedPrincipals"), "AllowedPrincipals"),
        case("AcceptanceRequired yes", with("AcceptanceRequired", json!("yes")), "AcceptanceRequired"),
        case("CrossZoneLoadBalancing maybe", with("CrossZoneLoadBalancing", json!("maybe")), "CrossZoneLoadBalancing"),
        case("Name too long", with("Name", json!("a-name-far-longer-than-aws-allows")), "Name"),
        case("Name with underscores", with("Name", json!("orders_db")), "Name"),
        case("Name starting internal-", with("Name", json!("internal-db")), "Name"),
        case("Name ending with a hyphen", with("Name", json!("orders-")), "Name"),
        case("unknown property", with("SubnetID", json!(["subnet-01234567"])), "SubnetID"),
        case(
            "Tags repeated key",
            with("Tags", json!([{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}])),
            "Tags",
        ),
        case("Tags reserved prefix", with("Tags", json!([{"Key": "aws:owner", "Value": "1"}])), "Tags"),
        case("Tags value too long", with("Tags", json!([{"Key": "a", "Value": "v".repeat(300)}])), "Tags"),
        case("Tags not a list", with("Tags", json!("team=data")), "Tags"),
        case(
            "EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic yes",
            with("EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic", json!("yes")),
            "EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic",
        ),
        case("AllowDatabaseIngress maybe", with("AllowDatabaseIngress", json!("maybe")), "AllowDatabaseIngress"),
        case(
            "AllowDatabaseIngress with fixed targets",
            with("AllowDatabaseIngress", json!("true")),
            "AllowDatabaseIngress",
        ),
        case("WaitForHealthyTarget soon", with("WaitForHealthyTarget", json!("soon")), "WaitForHealthyTarget"),
        case("SupportedRegions the stack's own", with("SupportedRegions", json!(["us-east-1"])), "SupportedRegions"),
        case(
            "SupportedRegions repeated",
            with("SupportedRegions", json!(["eu-west-1", "eu-west-1"])),
            "SupportedRegions",
        ),
        case("SupportedRegions malformed", with("SupportedRegions", json!(["europe"])), "SupportedRegions"),
        case("SupportedRegions not a list", with("SupportedRegions", json!({"a": 1})), "SupportedRegions"),
        case("Database and TargetIps", with("Database", json!("orders")), "Database"),
        case("Database malformed", with("Database", json!("orders_db")), "Database"),
        case("VpcId malformed", with("VpcId", json!("vpc-xyz")), "VpcId"),
        case("ResourceProperties not an object", not_an_object, "ResourceProperties"),
        case("RequestType unknown", destroy, "RequestType"),
        case("RequestType missing", event_without("RequestType"), "RequestType"),
        case("OldResourceProperties missing on Update", update_without_old, "OldResourceProperties"),
        case("StackId missing", event_without("StackId"), "StackId"),
        case("LogicalResourceId missing", event_without("LogicalResourceId"), "LogicalResourceId"),
        case("RequestId missing", event_without("RequestId"), "RequestId"),
    ]
}

#[tokio::test]
async fn bad_input_gets_one_failed_answer_naming_the_field_and_creates_nothing() {
    let h = Harness::new().await;
    let before = h.inventory().await;
    let cases = bad_inputs(&h);
    assert!(cases.len() >= 30);
    for case in &cases {
        let answered = h.cloudformation.recorded().len();
        invoke(&h.function, case.event.clone(), Duration::from_secs(60)).await.unwrap();
        let recorded = h.cloudformation.recorded();
        assert_eq!(recorded.len(), answered + 1, "{}: exactly one answer", case.what);
        let answer = recorded[answered].json();
        assert_eq!(answer["Status"], "FAILED", "{}: {answer}", case.what);
        let reason = answer["Reason"].as_str().unwrap();
        assert!(reason.contains(case.field), "{}: {reason:?} must name {}", case.what, case.field);
        assert_eq!(h.inventory().await, before, "{}: nothing may be created", case.what);
    }

    // Events that cannot be answered end the invocation without an error, so Lambda does not deliver them again.
    let mut no_url = h.create_event(&h.properties());
    no_url.as_object_mut().unwrap().remove("ResponseURL");
    let mut bad_url = h.create_event(&h.properties());
    bad_url["ResponseURL"] = json!("s3-bucket/path");
    let answered = h.cloudformation.recorded().len();
    for event in [no_url, bad_url, json!([1, 2, 3])] {
        invoke(&h.function, event, Duration::from_secs(60)).await.expect("no retry for an unanswerable event");
    }
    let runtime = RuntimeApi::start().await;
    let process = Process::start(&runtime, h.binary_env(&h.moto.endpoint));
    let ended = runtime.invoke(b"{not json".to_vec(), Duration::from_secs(30)).await;
    assert_eq!(ended, Ended::Response("null".into()), "a non-JSON event must not make Lambda retry");
    let logs = process.stop().await;
    assert!(logs.contains("not JSON"), "{logs}");
    assert_eq!(h.cloudformation.recorded().len(), answered);
    assert_eq!(h.inventory().await, before);
    figure(format!(
        "{} malformed events and properties: {} FAILED naming the field, 0 resources created; 4 unanswerable events ended without retry",
        cases.len(),
        cases.len()
    ));
}

#[tokio::test]
async fn a_cloudformation_that_cannot_answer_neither_fails_nor_holds_a_create() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    proxy.inject("DescribeStackResource", Fault::ServerError(500), None);
    let started = Instant::now();
    let created = h.create(&h.properties()).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "the question is asked briefly, then the request proceeds: {took:?}");
    assert!(proxy.injected().iter().any(|(action, _)| action == "DescribeStackResource"));
    let deleted = h.send(&h.delete_event(&id(&created), &h.properties())).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    figure(format!("CloudFormation answering HTTP 500 throughout: Create SUCCESS after {took:.1?}"));
}
