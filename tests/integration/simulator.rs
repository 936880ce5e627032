//! CloudFormation's first wave of real sequences (cancelled creates, rollbacks,
//! leftovers, AWS catching up), played by the simulator in `support/simulator.rs`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::harness::{CONSUMER, SECOND_CONSUMER, chain_view, new_request_id};
use crate::support::proxy::Fault;
use crate::support::runtime::Ended;
use crate::support::simulator::{Simulator, TIMEOUT, id};

/// CloudFormation makes up an ID when the Create it rolls back never answered.
const MADE_UP_ID: &str = "import-db-ReversePrivateLink-1A2B3C4D5E6F";

#[tokio::test]
async fn create_then_stack_delete() {
    let s = Simulator::start().await;
    let props = s.h.properties();
    let a = s.create(&props).await;
    assert_eq!(s.cfn.resource().status.as_deref(), Some("CREATE_COMPLETE"));
    assert!(s.cfn.describes() >= 2, "asked before answering and whether the answer was taken");
    s.holds_exactly(Some(&a), "create").await;
    s.delete(&a, &props).await;
    s.holds_exactly(None, "stack delete").await;
}

#[tokio::test]
async fn a_failed_create_then_the_delete_carrying_its_failed_id() {
    let s = Simulator::start().await;
    let props = s.h.properties();
    s.proxy.inject("CreateListener", Fault::Refuse("ValidationError"), Some(1));
    let answer = s.request(&s.event("Create", &props, None, None)).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    s.holds_exactly(None, "failed create").await;
    s.delete(&id(&answer), &props).await;
    s.holds_exactly(None, "its rollback delete").await;
}

/// Steps of a Create at which CloudFormation cancels it and sends its Delete.
const CANCEL_POINTS: [&str; 5] = [
    "DescribeSubnets",
    "CreateLoadBalancer",
    "CreateListener",
    "CreateVpcEndpointServiceConfiguration",
    "ModifyVpcEndpointServicePermissions",
];

#[tokio::test]
async fn a_create_cancelled_mid_build_leaves_nothing_wherever_the_delete_arrives() {
    for point in CANCEL_POINTS {
        let s = Simulator::start().await;
        let props = s.h.properties();
        s.proxy.inject(point, Fault::Pause, Some(1));
        let create = s.event("Create", &props, None, None);
        let building = s.send(&create).await;
        s.proxy.paused().await;
        // Another resource failed: this one is cancelled and its Delete, with a made-up ID, arrives now.
        s.cfn.cancel();
        s.delete(MADE_UP_ID, &props).await;
        s.proxy.release();
        assert_eq!(s.runtime.ended(&building, TIMEOUT).await, Ended::Response("null".into()));
        s.holds_exactly(None, &format!("a cancel at {point}")).await;
        println!("simulator: Create cancelled at {point}, Delete delivered meanwhile: nothing left");
    }
}

#[tokio::test]
async fn a_create_cancelled_between_its_last_check_and_its_answer_leaves_nothing() {
    let s = Simulator::start().await;
    let props = s.h.properties();
    let create = s.event("Create", &props, None, None);
    let building = s.send(&create).await;
    // Past the question it asks before any write, the next one is its last before answering.
    while s.cfn.describes() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.cfn.cancel_after_next_describe();
    s.cfn.cancelled().await;
    let deleting = s.event("Delete", &props, Some(MADE_UP_ID), None);
    let delete = s.runtime.submit(serde_json::to_vec(&deleting).unwrap(), TIMEOUT);
    assert_eq!(s.runtime.ended(&building, TIMEOUT).await, Ended::Response("null".into()));
    assert_eq!(s.runtime.ended(&delete, TIMEOUT).await, Ended::Response("null".into()));
    let answer = s.cfn.answers_to(create["RequestId"].as_str().unwrap()).pop().unwrap();
    assert_eq!(answer["Status"], "SUCCESS", "the Create did answer, too late: {answer}");
    s.holds_exactly(None, "a cancel just before the answer").await;
}

#[tokio::test]
async fn a_create_cancelled_while_the_load_balancer_provisions_stops_at_its_next_check() {
    let s = Simulator::start().await;
    let props = s.h.properties();
    s.proxy.inject("DescribeLoadBalancers", Fault::KeepProvisioning, None);
    let create = s.event("Create", &props, None, None);
    let started = Instant::now();
    let building = s.send(&create).await;
    while !s.proxy.actions().iter().any(|a| a == "CreateLoadBalancer") {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.cfn.cancel();
    assert_eq!(s.runtime.ended(&building, TIMEOUT).await, Ended::Response("null".into()));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "stopped at the first check of the wait, not at the deadline: {took:?}");
    s.proxy.clear();
    s.holds_exactly(None, "a cancel during the wait").await;
    s.delete(MADE_UP_ID, &props).await;
    s.holds_exactly(None, "the cancelled create's delete").await;
}

#[tokio::test]
async fn an_update_in_place_then_its_rollback() {
    let s = Simulator::start().await;
    let old = s.h.properties();
    let a = s.create(&old).await;
    let mut new = old.clone();
    new["AllowedPrincipals"] = json!([CONSUMER, SECOND_CONSUMER]);
    let updated = s.update(&a, &old, &new).await;
    assert_eq!((updated["Status"].as_str(), id(&updated)), (Some("SUCCESS"), a.clone()));
    // Another resource's update failed: CloudFormation rolls this one back with old and new swapped.
    let rolled_back = s.update(&a, &new, &old).await;
    assert_eq!((rolled_back["Status"].as_str(), id(&rolled_back)), (Some("SUCCESS"), a.clone()));
    assert_eq!(chain_view(&s.h.ec2, &s.h.elb, &a).await.principals, [CONSUMER.to_string()].into());
    s.holds_exactly(Some(&a), "update and rollback").await;
    s.delete(&a, &old).await;
    s.holds_exactly(None, "stack delete").await;
}

#[tokio::test]
async fn a_replacement_rolled_back_answers_with_the_original_chain_and_its_cleanup_deletes_the_new_one() {
    let s = Simulator::start().await;
    let original = s.h.properties();
    let a = s.create(&original).await;
    let mut changed = original.clone();
    changed["Port"] = json!("5432");
    let replaced = s.update(&a, &original, &changed).await;
    assert_eq!(replaced["Status"], "SUCCESS", "{replaced}");
    let b = id(&replaced);
    assert_ne!(b, a);
    // Something else failed: the rollback names B and asks for the original properties.
    let rolled_back = s.update(&b, &changed, &original).await;
    assert_eq!(rolled_back["Status"], "SUCCESS", "{rolled_back}");
    assert_eq!(id(&rolled_back), a, "the original chain matches: no third chain");
    assert_eq!(s.h.inventory().await.load_balancers.len(), 2, "nothing new was built");
    // The rollback's clean-up deletes B, the ID it no longer holds.
    s.delete(&b, &changed).await;
    s.holds_exactly(Some(&a), "replacement, rollback and its clean-up").await;
    s.delete(&a, &original).await;
    s.holds_exactly(None, "stack delete").await;
}

#[tokio::test]
async fn a_replacing_update_that_crashed_is_cleaned_up_by_the_rollback_update() {
    let mut s = Simulator::start().await;
    let original = s.h.properties();
    let a = s.create(&original).await;
    let mut changed = original.clone();
    changed["Port"] = json!("5432");
    s.proxy.inject("CreateListener", Fault::HoldAfterForwarding, Some(1));
    let update = s.event("Update", &changed, Some(&a), Some(&original));
    s.send(&update).await;
    s.proxy.held().await;
    s.restart().await; // the crash; the replacement chain is half built
    assert_eq!(s.h.inventory().await.load_balancers.len(), 2);
    // The update timed out; CloudFormation rolls back with an Update naming the chain it holds.
    s.cfn.holds("UPDATE_FAILED", Some(&a));
    let rolled_back = s.update(&a, &changed, &original).await;
    assert_eq!((rolled_back["Status"].as_str(), id(&rolled_back)), (Some("SUCCESS"), a.clone()));
    s.holds_exactly(Some(&a), "a crashed replacement and its rollback").await;
    s.delete(&a, &original).await;
    s.holds_exactly(None, "stack delete").await;
}

#[tokio::test]
async fn a_replacing_update_that_failed_with_leftovers_is_cleaned_up_by_the_next_update() {
    let s = Simulator::start().await;
    let original = s.h.properties();
    let a = s.create(&original).await;
    let mut changed = original.clone();
    changed["Port"] = json!("5432");
    // The replacement fails, and so does removing it.
    s.proxy.inject("CreateListener", Fault::Refuse("ValidationError"), Some(1));
    s.proxy.inject("DeleteLoadBalancer", Fault::Refuse("ValidationError"), Some(1));
    let failed = s.update(&a, &original, &changed).await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    assert_eq!(id(&failed), a, "a failed update keeps the ID");
    let reason = failed["Reason"].as_str().unwrap();
    assert!(reason.contains("possibly left: ") && reason.contains("load balancer arn:"), "{reason}");
    assert!(reason.contains("the next event of this resource removes them"), "{reason}");
    assert_eq!(s.h.inventory().await.load_balancers.len(), 2, "the leftovers");
    s.proxy.clear();
    // The stack rolled back and settled; the next update (in place) removes them.
    s.cfn.holds("UPDATE_COMPLETE", Some(&a));
    let mut next = original.clone();
    next["AllowedPrincipals"] = json!([CONSUMER, SECOND_CONSUMER]);
    let updated = s.update(&a, &original, &next).await;
    assert_eq!((updated["Status"].as_str(), id(&updated)), (Some("SUCCESS"), a.clone()));
    s.holds_exactly(Some(&a), "a failed replacement and the next update").await;
    s.delete(&a, &next).await;
    s.holds_exactly(None, "stack delete").await;
}

#[tokio::test]
async fn aws_catching_up_after_a_create_does_not_fail_or_duplicate_anything() {
    let mut s = Simulator::start().await;
    let props = s.h.properties();
    // NotFound for a moment right after each create.
    s.proxy.inject("SetSecurityGroups", Fault::Refuse("LoadBalancerNotFound"), Some(2));
    s.proxy.inject("ModifyTargetGroupAttributes", Fault::Refuse("TargetGroupNotFound"), Some(2));
    s.proxy.inject(
        "ModifyVpcEndpointServicePermissions",
        Fault::Refuse("InvalidVpcEndpointServiceId.NotFound"),
        Some(2),
    );
    let a = s.create(&props).await;
    s.holds_exactly(Some(&a), "NotFound right after create").await;
    s.delete(&a, &props).await;

    // A tag filter that has not caught up: a Create delivered again after a crash
    // must not make a second service; AWS's client token returns the first.
    s.proxy.model_client_tokens();
    s.proxy.lag_service_tag_filter(Duration::from_secs(300));
    s.proxy.inject("ModifyVpcEndpointServicePermissions", Fault::HoldAfterForwarding, Some(1));
    let create = s.event("Create", &props, None, None);
    s.send(&create).await;
    s.proxy.held().await;
    s.restart().await;
    let answer = s.request(&create).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let a = id(&answer);
    s.holds_exactly(Some(&a), "a re-delivered create while the tag filter lags").await;
    // The Delete finds the service by its ID all the same.
    s.delete(&a, &props).await;
    s.holds_exactly(None, "a delete while the tag filter lags").await;
}

#[tokio::test]
async fn a_load_balancer_the_service_still_holds_is_deleted_once_it_lets_go() {
    let s = Simulator::start().await;
    let props = s.h.properties();
    let a = s.create(&props).await;
    s.proxy.inject("DeleteLoadBalancer", Fault::Refuse("ResourceInUse"), Some(2));
    s.delete(&a, &props).await;
    assert_eq!(s.proxy.actions().iter().filter(|a| *a == "DeleteLoadBalancer").count(), 3);
    s.holds_exactly(None, "a delete refused while the service was deleting").await;
}

#[tokio::test]
async fn a_load_balancer_that_failed_ends_the_wait_at_once() {
    let s = Simulator::start().await;
    let props = s.h.properties();
    s.proxy.inject(
        "DescribeLoadBalancers",
        Fault::rewrite(|body| {
            body.replace("<Code>active</Code>", "<Code>failed</Code><Reason>Insufficient capacity</Reason>")
        }),
        None,
    );
    let started = Instant::now();
    let answer = s.request(&s.event("Create", &props, None, None)).await;
    let took = started.elapsed();
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(reason.contains("failed: Insufficient capacity"), "{reason}");
    assert!(took < Duration::from_secs(20), "no polling until the deadline: {took:?}");
    s.proxy.clear();
    s.holds_exactly(None, "a failed load balancer").await;
}

#[tokio::test]
async fn a_leftover_deleted_while_the_inventory_runs_does_not_fail_the_request() {
    let s = Simulator::start().await;
    let props = s.h.properties();
    let a = s.create(&props).await;
    let leftover = s.h.leave_debris(&new_request_id(), true).await;
    // One of the listed resources is gone by the time its tags are read: AWS fails the whole batch.
    s.proxy.inject("DescribeTags", Fault::Refuse("LoadBalancerNotFound"), Some(1));
    let mut more = props.clone();
    more["AllowedPrincipals"] = json!([CONSUMER, SECOND_CONSUMER]);
    let updated = s.update(&a, &props, &more).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert!(s.proxy.injected().iter().any(|(action, _)| action == "DescribeTags"), "the refusal was met");
    assert!(!s.h.inventory().await.load_balancers.contains(&leftover), "the leftover went all the same");
    s.holds_exactly(Some(&a), "an update while a listed resource vanished").await;
}
