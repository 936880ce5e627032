//! Retry-safe: a request killed and delivered again converges, a repeated delivery
//! after the answer changes nothing and sends nothing new, a chain CloudFormation holds
//! is followed though its answered mark never landed, and a Delete delivered again after
//! a crash removes the rest of its chain, the database's rule included. Each test is the
//! regression test of a defect the soak (soak.rs) found.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::cloudformation::Failing;
use crate::support::harness::{CONSUMER, DbSeed, Harness, SECOND_CONSUMER};
use crate::support::proxy::Fault;
use crate::support::runtime::{Ended, Process, RuntimeApi};
use crate::support::simulator::{Simulator, TIMEOUT, id};
use reverse_privatelink::chain::ANSWERED_TAG;

fn two_principals(props: &Value) -> Value {
    let mut props = props.clone();
    props["AllowedPrincipals"] = json!([CONSUMER, SECOND_CONSUMER]);
    props
}

/// Inbound rules of the database's group that admit a security group.
async fn database_admits(h: &Harness, db: &DbSeed) -> BTreeSet<String> {
    h.rules(&db.security_group).await.into_iter().filter(|r| !r.egress).filter_map(|r| r.source_group).collect()
}

/// Lambda delivering `event` once more, with CloudFormation not waiting for it any more.
async fn deliver_late(s: &Simulator, event: &Value) {
    let invocation = s.runtime.submit(serde_json::to_vec(event).unwrap(), TIMEOUT);
    assert_eq!(s.runtime.ended(&invocation, TIMEOUT).await, Ended::Response("null".into()));
}

#[tokio::test]
async fn a_create_killed_after_any_security_group_step_then_delivered_again_builds_one_chain() {
    for step in ["CreateSecurityGroup", "AuthorizeSecurityGroupEgress", "AuthorizeSecurityGroupIngress"] {
        let (h, proxy) = Harness::behind_proxy(None).await;
        let db = h.seed_database().await;
        let runtime = RuntimeApi::start().await;
        let process = Process::start(&runtime, h.binary_env(&proxy.endpoint));
        let event = h.create_event(&h.following(&db.cluster));
        h.as_cloudformation_would(&event).await;
        proxy.inject(step, Fault::HoldAfterForwarding, Some(1));
        runtime.submit(serde_json::to_vec(&event).unwrap(), TIMEOUT);
        proxy.held().await;
        process.stop().await;
        // Lambda delivers it again, to a fresh instance.
        let process = Process::start(&runtime, h.binary_env(&h.moto.endpoint));
        assert_eq!(runtime.invoke(serde_json::to_vec(&event).unwrap(), TIMEOUT).await, Ended::Response("null".into()));
        let answer = h.answer_to(&event);
        assert_eq!(answer["Status"], "SUCCESS", "killed after {step}: {answer}");
        assert_eq!(h.inventory().await.counts(), (1, 1, 1, 1), "{step}: one chain");
        let own = answer["Data"]["SecurityGroupIds"].as_str().unwrap().to_string();
        assert_eq!(database_admits(&h, &db).await, [own].into(), "{step}");
        process.stop().await;
    }
}

#[tokio::test]
async fn a_repeated_delivery_after_the_answer_changes_nothing_and_sends_nothing_new() {
    let s = Simulator::start().await;
    let db = s.h.seed_database().await;
    let props = s.h.following(&db.cluster);
    let create = s.event("Create", &props, None, None);
    let created = s.request(&create).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let a = id(&created);
    let more = two_principals(&props);
    let update = s.event("Update", &more, Some(&a), Some(&props));
    assert_eq!(s.request(&update).await["Status"], "SUCCESS");
    let back = {
        let mut back = more.clone();
        back["AllowedPrincipals"] = json!([SECOND_CONSUMER]);
        back
    };
    assert_eq!(s.update(&a, &more, &back).await["Status"], "SUCCESS");

    // Lambda delivers the Create and the first Update again, long after their answers.
    for late in [&create, &update] {
        deliver_late(&s, late).await;
        let answers = s.cfn.answers_to(late["RequestId"].as_str().unwrap());
        assert_eq!(answers.len(), 1, "no second answer to {}: {answers:?}", late["RequestType"]);
    }
    let view = crate::support::harness::chain_view(&s.h.ec2, &s.h.elb, &a).await;
    assert_eq!(view.principals, [SECOND_CONSUMER.to_string()].into(), "what the last Update set stays");
    s.holds_exactly(Some(&a), "late deliveries of a Create and an Update").await;
}

#[tokio::test]
async fn a_chain_cloudformation_holds_is_followed_though_its_mark_never_landed() {
    let s = Simulator::start().await;
    let db = s.h.seed_database().await;
    let props = s.h.following(&db.cluster);
    // CloudFormation cannot be asked while the Create answers: whether it took the answer
    // stays unsure, and the chain unmarked.
    s.cfn.failing(Some(Failing::AccessDenied));
    let a = s.create(&props).await;
    s.cfn.failing(None);
    let view = crate::support::harness::chain_view(&s.h.ec2, &s.h.elb, &a).await;
    assert!(!view.target_group_tags.contains_key(ANSWERED_TAG), "the mark never landed");

    s.h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster).send().await.unwrap();
    let runtime = RuntimeApi::start().await;
    let follower = s.follower(&runtime);
    let ended = runtime.invoke(serde_json::to_vec(&s.h.scheduled_event()).unwrap(), TIMEOUT).await;
    assert_eq!(ended, Ended::Response("null".into()));
    follower.stop().await;
    assert_eq!(s.h.targets(&view.target_group_arn).await, [db.reader.address.to_string()].into());
}

#[tokio::test]
async fn a_delete_delivered_again_after_a_crash_removes_the_rest_of_its_chain_and_its_database_rule() {
    let mut s = Simulator::start().await;
    let db = s.h.seed_database().await;
    let props = s.h.following(&db.cluster);
    s.cfn.failing(Some(Failing::AccessDenied));
    let a = s.create(&props).await;
    s.cfn.failing(None);
    assert_eq!(database_admits(&s.h, &db).await.len(), 1);

    // The Delete is killed right after the service went; Lambda delivers it again while
    // CloudFormation throttles every question (so no sweep may conclude anything).
    s.proxy.inject("DeleteVpcEndpointServiceConfigurations", Fault::HoldAfterForwarding, Some(1));
    let delete = s.event("Delete", &props, Some(&a), None);
    s.send(&delete).await;
    s.proxy.held().await;
    s.restart().await;
    s.cfn.failing(Some(Failing::Throttling));
    let invocation = s.runtime.submit(serde_json::to_vec(&delete).unwrap(), TIMEOUT);
    let answer = s.answer(&invocation, &delete).await;
    s.cfn.failing(None);
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    s.holds_exactly(None, "a Delete delivered again after a crash").await;
    assert!(database_admits(&s.h, &db).await.is_empty(), "the database's rule went with its chain");
}

#[tokio::test]
async fn a_create_delivered_again_adopts_its_load_balancer_when_aws_calls_the_name_a_duplicate() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    let runtime = RuntimeApi::start().await;
    let process = Process::start(&runtime, h.binary_env(&proxy.endpoint));
    let event = h.create_event(&h.following(&db.cluster));
    h.as_cloudformation_would(&event).await;
    proxy.inject("CreateLoadBalancer", Fault::HoldAfterForwarding, Some(1));
    runtime.submit(serde_json::to_vec(&event).unwrap(), TIMEOUT);
    proxy.held().await;
    process.stop().await;
    // The first attempt's load balancer now differs from what the request wants (AWS then
    // answers DuplicateLoadBalancerName, not the existing one), and the retry's lookup by
    // name does not see it yet.
    let lbs = h.elb.describe_load_balancers().send().await.unwrap().load_balancers.unwrap();
    let [lb] = lbs.as_slice() else { panic!("one load balancer: {lbs:?}") };
    let groups = lb.security_groups().to_vec();
    let arn = lb.load_balancer_arn.clone().unwrap();
    h.elb.set_security_groups().load_balancer_arn(&arn).security_groups(&h.seed.security_group).send().await.unwrap();
    proxy.clear();
    proxy.inject("DescribeLoadBalancers", Fault::Refuse("LoadBalancerNotFound"), Some(1));
    let process = Process::start(&runtime, h.binary_env(&proxy.endpoint));
    assert_eq!(runtime.invoke(serde_json::to_vec(&event).unwrap(), TIMEOUT).await, Ended::Response("null".into()));
    let answer = h.answer_to(&event);
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(h.inventory().await.counts(), (1, 1, 1, 1), "one chain");
    let view = crate::support::harness::chain_view(&h.ec2, &h.elb, &id(&answer)).await;
    assert_eq!(view.load_balancer_arn, arn, "the first attempt's load balancer, adopted");
    let lbs = h.elb.describe_load_balancers().load_balancer_arns(&arn).send().await.unwrap().load_balancers.unwrap();
    assert_eq!(lbs[0].security_groups(), groups, "brought back to the request's security groups");
    process.stop().await;
}

/// Soak seed 63: the rollback's own Update could not ask the stack's status at its start
/// (denied), so it took itself for the update being rolled back, stopped at its first
/// change and answered FAILED, which leaves a stack UPDATE_ROLLBACK_FAILED.
#[tokio::test]
async fn a_rollback_whose_first_questions_are_denied_still_rolls_back() {
    let s = Simulator::start().await;
    let db = s.h.seed_database().await;
    let props = s.h.following(&db.cluster);
    let a = s.create(&props).await;
    let more = two_principals(&props);
    s.cfn.stack_status("UPDATE_IN_PROGRESS");
    assert_eq!(s.update(&a, &props, &more).await["Status"], "SUCCESS");
    // Another resource failed: the rollback's Update, while CloudFormation denies three questions.
    s.cfn.stack_status("UPDATE_ROLLBACK_IN_PROGRESS");
    s.cfn.fail_next(3, Failing::AccessDenied);
    let rollback = s.update(&a, &more, &props).await;
    assert_eq!(rollback["Status"], "SUCCESS", "{rollback}");
    assert_eq!(id(&rollback), a);
    let view = crate::support::harness::chain_view(&s.h.ec2, &s.h.elb, &a).await;
    assert_eq!(view.principals, [CONSUMER.to_string()].into(), "rolled back to one principal");
    s.cfn.stack_status("UPDATE_ROLLBACK_COMPLETE");
    s.holds_exactly(Some(&a), "a rollback whose first questions were denied").await;
}

/// Soak seed 145: a Create cancelled at its first question, then denied the questions
/// after it (its last check and whether CloudFormation took the answer), built and kept
/// its chain unmarked: the stack was gone, and no later event would ever remove it.
#[tokio::test]
async fn a_cancelled_create_denied_its_later_questions_still_removes_its_chain() {
    let s = Simulator::start().await;
    let props = s.h.properties();
    let create = s.event("Create", &props, None, None);
    s.cfn.cancel_after_next_describe();
    let building = s.send(&create).await;
    s.cfn.cancelled().await;
    s.cfn.fail_next(2, Failing::AccessDenied);
    assert_eq!(s.runtime.ended(&building, TIMEOUT).await, Ended::Response("null".into()));
    s.holds_exactly(None, "a cancelled Create whose later questions were denied").await;
}

#[tokio::test]
async fn a_late_create_whose_first_questions_are_denied_still_sends_nothing_new() {
    let s = Simulator::start().await;
    let props = s.h.properties();
    let create = s.event("Create", &props, None, None);
    let created = s.request(&create).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    s.delete(&id(&created), &props).await;

    // Soak seed 116: the Create delivered again after the stack deleted its chain, with
    // CloudFormation's first two answers denied (IAM can refuse a role moments old).
    s.cfn.fail_next(2, Failing::AccessDenied);
    deliver_late(&s, &create).await;
    let answers = s.cfn.answers_to(create["RequestId"].as_str().unwrap());
    assert_eq!(answers.len(), 1, "no second answer: {answers:?}");
    s.holds_exactly(None, "a late Create whose first questions were denied").await;
}
