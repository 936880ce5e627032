//! Create, Update and Delete against moto server, read back from the emulator.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::harness::{CONSUMER, ChainView, Harness, LOGICAL_ID, SECOND_CONSUMER, WRITER_IP, new_request_id};
use crate::support::moto::Moto;
use crate::support::proxy::{Fault, Proxy};
use reverse_privatelink::chain::{
    ANSWERED_TAG, GENERATION_TAG, LOGICAL_ID_TAG, PRINCIPALS_TAG, STACK_ID_TAG, generation,
};

fn id(answer: &Value) -> String {
    answer["PhysicalResourceId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn create_builds_every_resource_with_the_right_settings() {
    let h = Harness::new().await;
    let answer = h.create(&h.properties()).await;
    let service_id = id(&answer);
    assert!(service_id.starts_with("vpce-svc-"), "{answer}");

    let chain = h.chain(&answer).await;
    let data = &answer["Data"];
    assert_eq!(data["ServiceId"], service_id.as_str());
    assert_eq!(data["ServiceName"], format!("com.amazonaws.vpce.us-east-1.{service_id}"));
    assert_eq!(data["LoadBalancerArn"], chain.load_balancer_arn.as_str());
    assert_eq!(data["TargetGroupArn"], chain.target_group_arn.as_str());
    assert_eq!(data["ListenerArn"], chain.listener_arn.as_str());
    assert!(data["LoadBalancerDnsName"].as_str().unwrap().contains("elb"), "{data}");
    assert_eq!(data["AvailabilityZones"], "us-east-1a,us-east-1b,us-east-1c");
    assert_eq!(data["AvailabilityZoneIds"], h.seed.zone_ids.join(","));
    assert_eq!(data["TargetIps"], WRITER_IP);
    // As CloudWatch's AWS/NetworkELB dimensions name them: targetgroup/<name>/<id> and net/<name>/<id>.
    let after = |arn: &str, marker: &str| arn.rsplit_once(marker).unwrap().1.to_string();
    assert_eq!(data["TargetGroupDimension"], after(&chain.target_group_arn, ":"));
    assert!(data["TargetGroupDimension"].as_str().unwrap().starts_with("targetgroup/import-db-"), "{data}");
    assert_eq!(data["LoadBalancerDimension"], after(&chain.load_balancer_arn, ":loadbalancer/"));

    assert_eq!(chain.scheme, "internal");
    assert_eq!(chain.load_balancer_type, "network");
    assert_eq!(chain.subnets, h.seed.subnets.iter().cloned().collect());
    assert_eq!(chain.security_groups, [h.seed.security_group.clone()].into());
    assert_eq!(chain.cross_zone, "true");
    assert!(chain.load_balancer_name.starts_with("import-db-") && chain.load_balancer_name.len() <= 32);
    assert_eq!(
        (chain.target_group_protocol.as_str(), chain.target_group_port, chain.target_type.as_str()),
        ("TCP", 3306, "ip")
    );
    assert_eq!(chain.targets, [(WRITER_IP.to_string(), 3306)].into());
    assert_eq!((chain.listener_protocol.as_str(), chain.listener_port), ("TCP", 3306));
    assert_eq!(chain.listener_forwards_to, vec![chain.target_group_arn.clone()]);
    assert!(!chain.acceptance_required);
    assert_eq!(chain.service_load_balancers, vec![chain.load_balancer_arn.clone()]);
    assert_eq!(chain.principals, [CONSUMER.to_string()].into());
    for tags in [&chain.load_balancer_tags, &chain.target_group_tags, &chain.listener_tags, &chain.service_tags] {
        assert_eq!(tags.get("team").map(String::as_str), Some("data"), "{tags:?}");
        assert_eq!(tags.get(STACK_ID_TAG), Some(&h.stack_id));
        assert_eq!(tags.get(LOGICAL_ID_TAG).map(String::as_str), Some(LOGICAL_ID));
        assert!(tags.contains_key(GENERATION_TAG));
    }
    for tags in [&chain.load_balancer_tags, &chain.target_group_tags] {
        assert_eq!(tags.get(ANSWERED_TAG), Some(&service_id), "marked once CloudFormation has the answer");
    }

    let inventory = h.inventory().await;
    assert_eq!(inventory.counts(), (1, 1, 1, 1));
}

#[tokio::test]
async fn a_redelivered_create_makes_no_second_chain() {
    let h = Harness::new().await;
    let event = h.create_event(&h.properties());
    for _ in 0..2 {
        crate::support::harness::invoke(&h.function, event.clone(), std::time::Duration::from_secs(120)).await.unwrap();
    }
    let answers: Vec<Value> = h.cloudformation.recorded().iter().map(|r| r.json()).collect();
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().all(|a| a["Status"] == "SUCCESS"), "{answers:?}");
    assert_eq!(answers[0]["PhysicalResourceId"], answers[1]["PhysicalResourceId"]);
    let inventory = h.inventory().await;
    assert_eq!(inventory.counts(), (1, 1, 1, 1));
}

#[tokio::test]
async fn a_create_completes_what_an_earlier_attempt_left() {
    let h = Harness::new().await;
    let request_id = new_request_id();
    let lb_arn = h.leave_debris(&request_id, true).await;
    let mut event = h.create_event(&h.properties());
    event["RequestId"] = json!(request_id);
    event["ResponseURL"] = json!(h.cloudformation.url(&request_id));
    let answer = h.send(&event).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["Data"]["LoadBalancerArn"], lb_arn.as_str());
    let inventory = h.inventory().await;
    assert_eq!(inventory.counts(), (1, 1, 1, 1));
    h.chain(&answer).await; // whole: listener, target, service
}

/// Applies `change` to the properties, sends the Update, and checks the chain
/// is the one before with exactly `expect` applied.
async fn update_in_place(
    h: &Harness,
    props: &mut Value,
    expected: &mut ChainView,
    change: impl FnOnce(&mut Value),
    expect: impl FnOnce(&mut ChainView),
) -> Value {
    let old = props.clone();
    change(props);
    expect(expected);
    let answer = h.send(&h.update_event(&expected.service_id, &old, props)).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["PhysicalResourceId"], expected.service_id.as_str(), "an in-place change must keep the ID");
    assert_eq!(&h.chain(&answer).await, expected);
    answer
}

fn every_tag_map(view: &mut ChainView, mut edit: impl FnMut(&mut std::collections::BTreeMap<String, String>)) {
    for tags in
        [&mut view.load_balancer_tags, &mut view.target_group_tags, &mut view.listener_tags, &mut view.service_tags]
    {
        edit(tags);
    }
}

#[tokio::test]
async fn updates_change_exactly_the_property_that_changed() {
    let h = Harness::new().await;
    let mut props = h.properties();
    props["SubnetIds"] = json!(h.seed.subnets[..2]);
    let answer = h.create(&props).await;
    let mut expected = h.chain(&answer).await;
    let seed = h.seed.clone();

    update_in_place(
        &h,
        &mut props,
        &mut expected,
        |p| p["AllowedPrincipals"] = json!([CONSUMER, SECOND_CONSUMER]),
        |v| {
            v.principals.insert(SECOND_CONSUMER.to_string());
            // The service records what it should allow, for a diagnosis to compare with.
            v.service_tags.insert(PRINCIPALS_TAG.into(), format!("{CONSUMER} {SECOND_CONSUMER}"));
        },
    )
    .await;
    update_in_place(
        &h,
        &mut props,
        &mut expected,
        |p| p["AllowedPrincipals"] = json!([SECOND_CONSUMER]),
        |v| {
            v.principals.remove(CONSUMER);
            v.service_tags.insert(PRINCIPALS_TAG.into(), SECOND_CONSUMER.into());
        },
    )
    .await;
    update_in_place(
        &h,
        &mut props,
        &mut expected,
        |p| p["AcceptanceRequired"] = json!("true"),
        |v| v.acceptance_required = true,
    )
    .await;
    update_in_place(
        &h,
        &mut props,
        &mut expected,
        |p| p["CrossZoneLoadBalancing"] = json!("false"),
        |v| v.cross_zone = "false".into(),
    )
    .await;
    let answer = update_in_place(
        &h,
        &mut props,
        &mut expected,
        |p| p["TargetIps"] = json!(["10.0.2.30"]),
        |v| {
            v.targets = [("10.0.2.30".to_string(), 3306)].into();
        },
    )
    .await;
    assert_eq!(answer["Data"]["TargetIps"], "10.0.2.30");
    update_in_place(
        &h,
        &mut props,
        &mut expected,
        |p| p["Tags"] = json!([{"Key": "team", "Value": "platform"}, {"Key": "cost", "Value": "42"}]),
        |v| {
            every_tag_map(v, |tags| {
                tags.insert("team".into(), "platform".into());
                tags.insert("cost".into(), "42".into());
            })
        },
    )
    .await;
    update_in_place(
        &h,
        &mut props,
        &mut expected,
        |p| p["Tags"] = json!([{"Key": "team", "Value": "platform"}]),
        |v| {
            every_tag_map(v, |tags| {
                tags.remove("cost");
            })
        },
    )
    .await;
    let second_group = seed.second_security_group.clone();
    update_in_place(
        &h,
        &mut props,
        &mut expected,
        |p| p["SecurityGroupIds"] = json!([second_group]),
        |v| {
            v.security_groups = [seed.second_security_group.clone()].into();
        },
    )
    .await;
    let all_subnets = seed.subnets.clone();
    let answer = update_in_place(
        &h,
        &mut props,
        &mut expected,
        |p| p["SubnetIds"] = json!(all_subnets),
        |v| {
            v.subnets = seed.subnets.iter().cloned().collect();
        },
    )
    .await;
    assert_eq!(answer["Data"]["AvailabilityZoneIds"], seed.zone_ids.join(","));

    let inventory = h.inventory().await;
    assert_eq!(inventory.counts(), (1, 1, 1, 1));
}

#[tokio::test]
async fn a_replacement_builds_a_new_chain_and_deleting_the_old_one_leaves_it_intact() {
    let h = Harness::new().await;
    let old_props = h.properties();
    let old = h.create(&old_props).await;
    let old_view = h.chain(&old).await;

    let mut new_props = old_props.clone();
    new_props["Port"] = json!("5432");
    let new = h.send(&h.update_event(&id(&old), &old_props, &new_props)).await;
    assert_eq!(new["Status"], "SUCCESS", "{new}");
    assert_ne!(id(&new), id(&old), "a port change needs a new chain and so a new ID");
    let new_view = h.chain(&new).await;
    assert_eq!((new_view.target_group_port, new_view.listener_port), (5432, 5432));
    assert_eq!(new_view.targets, [(WRITER_IP.to_string(), 5432)].into());
    assert_ne!(new_view.load_balancer_name, old_view.load_balancer_name);
    assert_eq!(h.chain(&old).await, old_view, "the old chain serves until CloudFormation deletes it");

    // CloudFormation's clean-up phase deletes the old physical ID.
    let deleted = h.send(&h.delete_event(&id(&old), &old_props)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_eq!(h.chain(&new).await, new_view);
    let inventory = h.inventory().await;
    assert_eq!(inventory.services, [id(&new)].into());
    assert_eq!(inventory.load_balancers, [new_view.load_balancer_arn.clone()].into());
    assert_eq!(inventory.target_groups, [new_view.target_group_arn.clone()].into());
}

#[tokio::test]
async fn changes_aws_cannot_make_in_place_get_a_new_chain() {
    let h = Harness::new().await;
    let mut props = h.properties();
    props.as_object_mut().unwrap().remove("SecurityGroupIds");
    let mut current = h.create(&props).await;

    // A zone's subnet is changed by AWS only in two steps (remove, then add).
    let swapped = json!([h.seed.same_zone_subnet, h.seed.subnets[1], h.seed.subnets[2]]);
    let changes = [("a zone's subnet swapped", "SubnetIds", swapped), ("a new name", "Name", json!("orders-db"))];
    for (what, property, value) in changes {
        let old_props = props.clone();
        props[property] = value;
        let answer = h.send(&h.update_event(&id(&current), &old_props, &props)).await;
        assert_eq!(answer["Status"], "SUCCESS", "{what}: {answer}");
        assert_ne!(id(&answer), id(&current), "{what} needs a new chain");
        let deleted = h.send(&h.delete_event(&id(&current), &old_props)).await;
        assert_eq!(deleted["Status"], "SUCCESS", "{what}: {deleted}");
        current = answer;
    }
    let view = h.chain(&current).await;
    assert!(view.load_balancer_name.starts_with("orders-db-"), "{}", view.load_balancer_name);
    assert!(view.subnets.contains(&h.seed.same_zone_subnet), "{:?}", view.subnets);
    let inventory = h.inventory().await;
    assert_eq!(inventory.load_balancers.len(), 1);
    assert_eq!(view.security_groups, inventory.security_groups, "only the live chain's own group is left");
}

#[tokio::test]
async fn delete_leaves_nothing_and_deleting_again_succeeds() {
    let h = Harness::new().await;
    let props = h.properties();
    let created = h.create(&props).await;
    for attempt in ["first", "again"] {
        let answer = h.send(&h.delete_event(&id(&created), &props)).await;
        assert_eq!(answer["Status"], "SUCCESS", "{attempt}: {answer}");
        assert_eq!(answer["PhysicalResourceId"], created["PhysicalResourceId"]);
        assert!(h.inventory().await.is_empty(), "{attempt}: {:?}", h.inventory().await);
    }
}

#[tokio::test]
async fn a_delete_with_a_made_up_id_removes_unfinished_chains_and_never_the_live_one() {
    let h = Harness::new().await;
    let props = h.properties();
    let live = h.create(&props).await;
    let live_view = h.chain(&live).await;
    // What a crashed Create or replacing Update of the same resource left behind.
    h.leave_debris(&new_request_id(), true).await;
    h.leave_debris(&new_request_id(), false).await;
    assert_eq!(h.inventory().await.load_balancers.len(), 3);

    // CloudFormation invents an ID when the Create it rolls back never answered.
    let answer = h.send(&h.delete_event("import-db-ReversePrivateLink-1A2B3C4D5E6F", &props)).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(h.chain(&live).await, live_view);
    let inventory = h.inventory().await;
    assert_eq!(inventory.load_balancers, [live_view.load_balancer_arn.clone()].into());
    assert_eq!(inventory.target_groups, [live_view.target_group_arn.clone()].into());
}

#[tokio::test]
async fn a_create_that_fails_halfway_removes_what_it_built_and_its_rollback_delete_succeeds() {
    let h = Harness::new().await;
    let request_id = new_request_id();
    // Someone else's target group already has the name this request would use.
    let squatter = h
        .elb
        .create_target_group()
        .name(format!("import-db-{}", generation(&request_id)))
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Tcp)
        .port(5432)
        .vpc_id(&h.seed.vpc_id)
        .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
        .send()
        .await
        .unwrap()
        .target_groups
        .unwrap()[0]
        .target_group_arn
        .clone()
        .unwrap();
    let props = h.properties();
    let mut event = h.create_event(&props);
    event["RequestId"] = json!(request_id);
    let answer = h.send(&event).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(reason.contains("creating the target group") && reason.contains("DuplicateTargetGroupName"), "{reason}");
    let failed_id = id(&answer);
    assert!(!failed_id.starts_with("vpce-svc-"), "{failed_id}");

    let inventory = h.inventory().await;
    assert!(inventory.load_balancers.is_empty() && inventory.services.is_empty(), "{inventory:?}");
    assert_eq!(inventory.target_groups, [squatter.clone()].into(), "only the squatter may remain");

    let rollback = h.send(&h.delete_event(&failed_id, &props)).await;
    assert_eq!(rollback["Status"], "SUCCESS", "{rollback}");
    assert_eq!(h.inventory().await.target_groups, [squatter].into(), "what is not ours is never deleted");
}

#[tokio::test]
async fn the_deadline_guard_cleans_up_and_answers_while_the_load_balancer_is_still_provisioning() {
    let moto = Moto::start().await;
    let proxy = Proxy::start(&moto.endpoint).await;
    proxy.inject("DescribeLoadBalancers", Fault::KeepProvisioning, None);
    let h = Harness::reaching(moto, &proxy.endpoint, None).await;
    let props = h.properties();

    let deadline = Duration::from_secs(10);
    let started = Instant::now();
    let answer = h.send_with_deadline(&h.create_event(&props), deadline).await;
    assert!(started.elapsed() < deadline, "answered after the deadline: {:?}", started.elapsed());
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(reason.contains("timed out waiting for the load balancer to become active"), "{reason}");
    assert!(h.inventory().await.is_empty(), "{:?}", h.inventory().await);

    let rollback = h.send(&h.delete_event(answer["PhysicalResourceId"].as_str().unwrap(), &props)).await;
    assert_eq!(rollback["Status"], "SUCCESS", "{rollback}");
    assert!(h.inventory().await.is_empty());
}

#[tokio::test]
async fn a_delete_interrupted_after_the_service_went_finishes_when_delivered_again() {
    let h = Harness::new().await;
    let props = h.properties();
    let created = h.create(&props).await;
    let service_id = id(&created);
    // As if the first Delete crashed right after removing the endpoint service.
    h.ec2.delete_vpc_endpoint_service_configurations().service_ids(&service_id).send().await.unwrap();
    assert_eq!(h.inventory().await.load_balancers.len(), 1);

    let answer = h.send(&h.delete_event(&service_id, &props)).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert!(h.inventory().await.is_empty(), "{:?}", h.inventory().await);
}

#[tokio::test]
async fn a_delete_naming_one_chain_leaves_the_other_answered_chains_alone_and_removes_leftovers() {
    let h = Harness::new().await;
    let props = h.properties();
    let first = h.create(&props).await;
    // Another Create of the same logical ID (a resource-type change replaces it that way).
    let second = h.create(&props).await;
    let second_view = h.chain(&second).await;
    let debris = h.leave_debris(&new_request_id(), true).await;

    let answer = h.send(&h.delete_event(&id(&first), &props)).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(h.chain(&second).await, second_view);
    let inventory = h.inventory().await;
    assert_eq!(inventory.services, [id(&second)].into());
    assert!(!inventory.load_balancers.contains(&debris), "every later event of the resource removes leftovers");
    assert_eq!(inventory.load_balancers.len(), 1);
}
