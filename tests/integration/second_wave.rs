//! CloudFormation's second wave, played by the simulator: a CloudFormation that
//! cannot be asked, a database rule shared by a replacement, a clean-up Delete
//! CloudFormation gave up on, updates and rollbacks while a failover settles, an
//! update still running when its rollback comes, and a service deleted out of band.
//! After each, the account holds exactly the chain the stack references.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::cloudformation::Failing;
use crate::support::harness::{CONSUMER, DB_PORT, SECOND_CONSUMER, chain_view};
use crate::support::proxy::Fault;
use crate::support::runtime::{Ended, RuntimeApi};
use crate::support::simulator::{Simulator, TIMEOUT, id};

fn renamed(props: &Value, name: &str) -> Value {
    let mut props = props.clone();
    props["Name"] = json!(name);
    props
}

fn two_principals(props: &Value) -> Value {
    let mut props = props.clone();
    props["AllowedPrincipals"] = json!([CONSUMER, SECOND_CONSUMER]);
    props
}

#[tokio::test]
async fn a_clean_up_delete_that_cannot_ask_cloudformation_sweeps_nothing() {
    let s = Simulator::start().await;
    let old = s.h.properties();
    let a = s.create(&old).await;
    // The replacement's answered mark never lands (the function died before it, say).
    s.proxy.inject("AddTags", Fault::Refuse("AccessDenied"), None);
    let new = renamed(&old, "import-b");
    let replaced = s.update(&a, &old, &new).await;
    assert_eq!(replaced["Status"], "SUCCESS", "{replaced}");
    let b = id(&replaced);
    assert_ne!(a, b);
    s.proxy.clear();
    // The clean-up Delete of A arrives while CloudFormation throttles every question.
    s.cfn.stack_status("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS");
    s.cfn.failing(Some(Failing::Throttling));
    s.delete(&a, &old).await;
    s.cfn.failing(None);
    s.holds_exactly(Some(&b), "a clean-up Delete while CloudFormation throttled").await;
    // Denied or failing questions conclude nothing either.
    for how in [Failing::AccessDenied, Failing::ServerError] {
        s.cfn.failing(Some(how));
        let again = s.update(&b, &new, &two_principals(&new)).await;
        assert_eq!(again["Status"], "SUCCESS", "{how:?}: {again}");
        s.cfn.failing(None);
        s.holds_exactly(Some(&b), &format!("an update while CloudFormation answered {how:?}")).await;
    }
}

#[tokio::test]
async fn a_database_rule_shared_by_a_replacement_outlives_the_clean_up_of_the_old_chain() {
    let s = Simulator::start().await;
    let db = s.h.seed_database().await;
    let mut old = s.h.following(&db.cluster);
    old["SecurityGroupIds"] = json!([s.h.seed.security_group]);
    let a = s.create(&old).await;
    let admits = || async {
        let rules = s.h.rules(&db.security_group).await;
        rules.iter().any(|r| !r.egress && r.source_group.as_deref() == Some(&s.h.seed.security_group))
    };
    assert!(admits().await, "the database lets the load balancer's group in");
    // A replacement with the same given group: the same rule lets both in.
    let new = renamed(&old, "import-b");
    let replaced = s.update(&a, &old, &new).await;
    assert_eq!(replaced["Status"], "SUCCESS", "{replaced}");
    let b = id(&replaced);
    assert_ne!(a, b);
    s.cfn.stack_status("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS");
    s.delete(&a, &old).await;
    assert!(admits().await, "the new chain still reaches the database after the old one's clean-up");
    s.holds_exactly(Some(&b), "a replacement sharing its database rule, and its clean-up").await;
    s.cfn.stack_status("DELETE_IN_PROGRESS");
    s.delete(&b, &new).await;
    assert!(!admits().await, "the last chain to let go revokes it");
    s.holds_exactly(None, "stack delete").await;
}

#[tokio::test]
async fn a_chain_cloudformation_dropped_after_its_clean_up_failed_goes_with_the_next_event() {
    let s = Simulator::start().await;
    let old = s.h.properties();
    let a = s.create(&old).await;
    let new = renamed(&old, "import-b");
    let b = id(&s.update(&a, &old, &new).await);
    // The clean-up Delete of A fails; CloudFormation retries it, then gives up and completes the update.
    s.cfn.stack_status("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS");
    s.proxy.inject("DeleteLoadBalancer", Fault::Refuse("ValidationError"), None);
    for _ in 0..3 {
        let answer = s.request(&s.event("Delete", &old, Some(&a), None)).await;
        assert_eq!(answer["Status"], "FAILED", "{answer}");
    }
    s.proxy.clear();
    s.cfn.holds("UPDATE_COMPLETE", Some(&b));
    s.cfn.stack_status("UPDATE_COMPLETE");
    assert_eq!(s.h.inventory().await.load_balancers.len(), 2, "A's load balancer is left, forgotten");

    // The follower may not delete it; at the hour's first scheduled run it says so.
    let follower_api = RuntimeApi::start().await;
    let follower = s.follower(&follower_api);
    let mut scheduled = s.h.scheduled_event();
    scheduled["time"] = json!("2026-11-25T07:00:20Z");
    let ended = follower_api.invoke(serde_json::to_vec(&scheduled).unwrap(), TIMEOUT).await;
    assert_eq!(ended, Ended::Response("null".into()));
    let logs = follower.stop().await;
    let reported: Vec<&str> = logs.lines().filter(|l| l.contains("no longer holds this chain")).collect();
    assert_eq!(reported.len(), 1, "{logs}");
    assert!(reported[0].contains(&a) && reported[0].contains("ERROR"), "{}", reported[0]);

    // The stack's next event removes it: CloudFormation answered that it holds B, and it is not rolling back.
    let updated = s.update(&b, &new, &two_principals(&new)).await;
    assert_eq!((updated["Status"].as_str(), id(&updated)), (Some("SUCCESS"), b.clone()));
    s.holds_exactly(Some(&b), "a dropped clean-up and the next update").await;
}

#[tokio::test]
async fn an_update_and_its_rollback_during_a_failover_keep_the_target_and_succeed_at_once() {
    let s = Simulator::start().await;
    let db = s.h.seed_database().await;
    let old = s.h.following(&db.cluster);
    let a = s.create(&old).await;
    let tg = chain_view(&s.h.ec2, &s.h.elb, &a).await.target_group_arn;
    // A failover, and DNS still giving the new writer's name the old writer's address.
    s.h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster).send().await.unwrap();
    s.h.dns.set(&db.reader.endpoint, &[db.writer.address]);
    let new = two_principals(&old);
    let started = Instant::now();
    let updated = s.update(&a, &old, &new).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert!(started.elapsed() < Duration::from_secs(20), "no wait for the writer: {:?}", started.elapsed());
    let view = chain_view(&s.h.ec2, &s.h.elb, &a).await;
    assert_eq!(view.principals.len(), 2, "the rest was applied");
    assert_eq!(view.targets, [(db.writer.address.to_string(), i32::from(DB_PORT))].into(), "the target kept");
    // Another resource failed: the rollback (old and new swapped) must not fail either.
    s.cfn.stack_status("UPDATE_ROLLBACK_IN_PROGRESS");
    let rolled_back = s.update(&a, &new, &old).await;
    assert_eq!((rolled_back["Status"].as_str(), id(&rolled_back)), (Some("SUCCESS"), a.clone()));
    assert_eq!(chain_view(&s.h.ec2, &s.h.elb, &a).await.principals, [CONSUMER.to_string()].into());
    // Once DNS caught up, the follower moves the target.
    s.h.dns.set(&db.reader.endpoint, &[db.reader.address]);
    s.h.deliver(&s.h.scheduled_event()).await;
    assert_eq!(s.h.targets(&tg).await, [db.reader.address.to_string()].into());
    s.holds_exactly(Some(&a), "an update and its rollback during a failover").await;
}

#[tokio::test]
async fn an_update_still_running_when_its_rollback_comes_changes_nothing_after_it() {
    let s = Simulator::start().await;
    let old = s.h.properties();
    let a = s.create(&old).await;
    let new = two_principals(&old);
    // The update has read the principals and is about to change them...
    s.proxy.inject("DescribeVpcEndpointServicePermissions", Fault::Pause, Some(1));
    let update = s.event("Update", &new, Some(&a), Some(&old));
    let running = s.send(&update).await;
    s.proxy.paused().await;
    // ...when another resource fails: CloudFormation rolls this one back meanwhile.
    s.cfn.stack_status("UPDATE_ROLLBACK_IN_PROGRESS");
    let rolled_back = s.update(&a, &new, &old).await;
    assert_eq!(rolled_back["Status"], "SUCCESS", "{rolled_back}");
    s.proxy.release();
    assert_eq!(s.runtime.ended(&running, TIMEOUT).await, Ended::Response("null".into()));
    let late = s.cfn.answers_to(update["RequestId"].as_str().unwrap());
    assert!(late.iter().all(|answer| answer["Status"] == "FAILED"), "{late:?}");
    assert_eq!(
        chain_view(&s.h.ec2, &s.h.elb, &a).await.principals,
        [CONSUMER.to_string()].into(),
        "the rolled-back properties hold, whatever the cancelled update did"
    );
    s.holds_exactly(Some(&a), "an update racing its rollback").await;
}

#[tokio::test]
async fn an_update_after_the_service_was_deleted_out_of_band_builds_a_new_chain() {
    let s = Simulator::start().await;
    // AWS answers a repeated client token with the first answer, even for a resource since deleted.
    s.proxy.model_client_tokens();
    let old = s.h.properties();
    let a = s.create(&old).await;
    let deleted = s.h.ec2.delete_vpc_endpoint_service_configurations().service_ids(&a).send().await.unwrap();
    assert!(deleted.unsuccessful.unwrap_or_default().is_empty());
    let new = two_principals(&old);
    let updated = s.update(&a, &old, &new).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    let b = id(&updated);
    assert_ne!(b, a, "a new chain, under a new ID");
    assert_eq!(chain_view(&s.h.ec2, &s.h.elb, &b).await.principals.len(), 2);
    // CloudFormation's clean-up of the old ID removes what is left of it, and nothing live.
    s.cfn.stack_status("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS");
    s.delete(&a, &old).await;
    s.holds_exactly(Some(&b), "an update after the service was deleted, and its clean-up").await;
}

#[tokio::test]
async fn fifty_target_addresses_still_answer_within_cloudformations_4096_bytes() {
    let h = crate::support::harness::Harness::new().await;
    let mut props = h.properties();
    let ips: Vec<String> = (100..150).map(|i| format!("10.0.1.{i}")).collect();
    props["TargetIps"] = json!(ips);
    let event = h.create_event(&props);
    let answer = h.send(&event).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let sent = h.cloudformation.recorded().into_iter().find(|r| r.json()["RequestId"] == event["RequestId"]).unwrap();
    assert!(sent.body.len() <= 4096, "{} bytes", sent.body.len());
    assert_eq!(h.chain(&answer).await.targets.len(), 50);
}
