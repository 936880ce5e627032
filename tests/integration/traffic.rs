//! A path that carries traffic on real AWS: the load balancer's security groups
//! and PrivateLink enforcement, the database letting the load balancer in, target
//! health, and consumers in other regions.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::harness::{DB_PORT, Harness, RuleView};
use crate::support::proxy::Fault;

fn id(answer: &Value) -> String {
    answer["PhysicalResourceId"].as_str().unwrap().to_string()
}

fn without(props: &Value, key: &str) -> Value {
    let mut props = props.clone();
    props.as_object_mut().unwrap().remove(key);
    props
}

pub fn tcp(egress: bool, port: u16, cidr: Option<&str>, source: Option<&str>, owned: bool) -> RuleView {
    RuleView {
        egress,
        protocol: "tcp".into(),
        from: i32::from(port),
        to: i32::from(port),
        cidr: cidr.map(Into::into),
        source_group: source.map(Into::into),
        owned,
    }
}

#[tokio::test]
async fn without_security_groups_the_chain_gets_its_own_and_deletes_it_after_the_load_balancer() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let props = without(&h.properties(), "SecurityGroupIds");
    let created = h.create(&props).await;
    let chain = h.chain(&created).await;
    assert_eq!(chain.security_groups.len(), 1);
    let own = chain.security_groups.first().unwrap().clone();
    assert_ne!(own, h.seed.security_group);
    assert_eq!(created["Data"]["SecurityGroupIds"], own.as_str());
    assert_eq!(
        h.rules(&own).await,
        [tcp(true, 3306, Some("10.0.0.0/16"), None, true)].into(),
        "nothing inbound; outbound on the port to the VPC, where the fixed address is, nothing else"
    );
    let groups = h.ec2.describe_security_groups().group_ids(&own).send().await.unwrap().security_groups.unwrap();
    let tags: Vec<(String, String)> =
        groups[0].tags.clone().unwrap().into_iter().map(|t| (t.key.unwrap(), t.value.unwrap())).collect();
    for key in
        ["reverse-privatelink:stack-id", "reverse-privatelink:logical-id", "reverse-privatelink:generation", "team"]
    {
        assert!(tags.iter().any(|(k, _)| k == key), "{key} missing: {tags:?}");
    }

    // AWS refuses to delete a group a load balancer still holds; the function waits it out.
    proxy.inject("DeleteSecurityGroup", Fault::Refuse("DependencyViolation"), Some(1));
    let deleted = h.send(&h.delete_event(&id(&created), &props)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert!(h.inventory().await.is_empty(), "{:?}", h.inventory().await);
    let actions = proxy.actions();
    let position = |action: &str| actions.iter().rposition(|a| a == action).unwrap();
    assert!(position("DeleteLoadBalancer") < position("DeleteSecurityGroup"), "{actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "DeleteSecurityGroup").count(), 2, "refused once, then deleted");
}

#[tokio::test]
async fn given_security_groups_are_used_as_they_are_and_switching_is_in_place() {
    let h = Harness::new().await;
    let props = h.properties();
    let given_rules = h.rules(&h.seed.security_group).await;
    let created = h.create(&props).await;
    assert_eq!(h.chain(&created).await.security_groups, [h.seed.security_group.clone()].into());
    assert!(h.inventory().await.security_groups.is_empty(), "no group of its own");
    assert_eq!(h.rules(&h.seed.security_group).await, given_rules, "given groups are never modified");

    // To a group of its own, and back: both in place.
    let own = without(&props, "SecurityGroupIds");
    let switched = h.send(&h.update_event(&id(&created), &props, &own)).await;
    assert_eq!(switched["Status"], "SUCCESS", "{switched}");
    assert_eq!(id(&switched), id(&created));
    let groups = h.chain(&switched).await.security_groups;
    assert_eq!(groups, h.inventory().await.security_groups);
    let back = h.send(&h.update_event(&id(&created), &own, &props)).await;
    assert_eq!(back["Status"], "SUCCESS", "{back}");
    assert_eq!(h.chain(&back).await.security_groups, [h.seed.security_group.clone()].into());
    assert!(h.inventory().await.security_groups.is_empty(), "its own group went when no longer attached");
    assert_eq!(h.rules(&h.seed.security_group).await, given_rules);
}

#[tokio::test]
async fn privatelink_enforcement_is_set_off_at_creation_and_changed_in_place() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let props = h.properties();
    let created = h.create(&props).await;
    assert_eq!(created["Data"]["EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic"], "off");
    let sent = proxy.requests("SetSecurityGroups");
    assert_eq!(sent.len(), 1, "set right after the load balancer is created");
    assert!(sent[0].contains("EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic=off"), "{}", sent[0]);

    let mut on = props.clone();
    on["EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic"] = json!("on");
    let updated = h.send(&h.update_event(&id(&created), &props, &on)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(id(&updated), id(&created));
    assert_eq!(updated["Data"]["EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic"], "on");
    let sent = proxy.requests("SetSecurityGroups");
    assert_eq!(sent.len(), 2);
    assert!(sent[1].contains("EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic=on"), "{}", sent[1]);

    // Nothing to change when AWS already reports what is wanted.
    let again = h.send(&h.update_event(&id(&created), &on, &on)).await;
    assert_eq!(again["Status"], "SUCCESS", "{again}");
    assert_eq!(proxy.requests("SetSecurityGroups").len(), 2, "no call when nothing changes");
}

#[tokio::test]
async fn the_database_lets_the_load_balancer_in_and_only_the_rules_made_for_it_are_removed() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    let before = h.rules(&db.security_group).await;
    let props = h.following(&db.cluster);
    let created = h.create(&props).await;
    let lb_group = created["Data"]["SecurityGroupIds"].as_str().unwrap().to_string();
    let mut expected = before.clone();
    expected.insert(tcp(false, DB_PORT, None, Some(&lb_group), true));
    assert_eq!(h.rules(&db.security_group).await, expected);
    // The emulator drops a group rule's description; the request shows it.
    let sent = proxy.requests("AuthorizeSecurityGroupIngress");
    let to_database: Vec<&String> = sent.iter().filter(|body| body.contains(&db.security_group)).collect();
    assert_eq!(to_database.len(), 1, "{sent:?}");
    assert!(
        to_database[0].contains("Description=reverse-privatelink%20import-db%2FReversePrivateLink"),
        "{}",
        to_database[0]
    );

    // Turning it off removes exactly that rule.
    let mut off = props.clone();
    off["AllowDatabaseIngress"] = json!("false");
    let updated = h.send(&h.update_event(&id(&created), &props, &off)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(h.rules(&db.security_group).await, before);
    let on_again = h.send(&h.update_event(&id(&created), &off, &props)).await;
    assert_eq!(on_again["Status"], "SUCCESS", "{on_again}");
    assert_eq!(h.rules(&db.security_group).await, expected);
    let deleted = h.send(&h.delete_event(&id(&created), &props)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_eq!(h.rules(&db.security_group).await, before);
    assert!(h.inventory().await.is_empty(), "{:?}", h.inventory().await);
}

#[tokio::test]
async fn a_rule_that_already_let_the_load_balancer_in_is_reused_and_kept() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    // The user had already allowed the group they give the load balancer.
    h.ec2
        .authorize_security_group_ingress()
        .group_id(&db.security_group)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(i32::from(DB_PORT))
                .to_port(i32::from(DB_PORT))
                .user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder().group_id(&h.seed.security_group).build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let before = h.rules(&db.security_group).await;
    let mut props = h.following(&db.cluster);
    props["SecurityGroupIds"] = json!([h.seed.security_group]);
    let created = h.create(&props).await;
    assert_eq!(h.rules(&db.security_group).await, before, "nothing added: the rule was there");
    let deleted = h.send(&h.delete_event(&id(&created), &props)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_eq!(h.rules(&db.security_group).await, before, "and nothing removed: it was not ours");
}

#[tokio::test]
async fn target_health_is_reported_and_a_healthy_writer_ends_the_wait_at_once() {
    let h = Harness::new().await;
    let created = h.create(&h.properties()).await;
    assert_eq!(created["Data"]["TargetHealth"], "healthy");
    let mut waiting = h.properties();
    waiting["WaitForHealthyTarget"] = json!("true");
    let started = Instant::now();
    let answer = h.create(&waiting).await;
    assert_eq!(answer["Data"]["TargetHealth"], "healthy");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

#[tokio::test]
async fn an_unhealthy_writer_fails_the_wait_with_a_diagnosis_and_leaves_nothing() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    proxy.inject(
        "DescribeTargetHealth",
        Fault::rewrite(|body| {
            body.replace(
                "<State>healthy</State>",
                "<State>unhealthy</State><Reason>Target.Timeout</Reason><Description>Request timed out</Description>",
            )
        }),
        None,
    );
    let mut props = h.following(&db.cluster);
    props["WaitForHealthyTarget"] = json!("true");
    let answer = h.send_with_deadline(&h.create_event(&props), Duration::from_secs(40)).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    let address = format!("{}:{DB_PORT}", db.writer.address);
    for part in [
        format!("the database at {address} does not answer the load balancer's health checks (Target.Timeout)"),
        format!("allow TCP {DB_PORT} from sg-"),
        "(the load balancer's security group)".to_string(),
        format!("in {} (the database's)", db.security_group),
    ] {
        assert!(reason.contains(&part), "{reason:?} should contain {part:?}");
    }
    proxy.clear();
    assert!(h.inventory().await.is_empty(), "a failed wait on Create removes the chain: {:?}", h.inventory().await);

    // Without the wait the same state is only reported.
    proxy.inject(
        "DescribeTargetHealth",
        Fault::rewrite(|body| {
            body.replace("<State>healthy</State>", "<State>unhealthy</State><Reason>Target.Timeout</Reason>")
        }),
        None,
    );
    let reported = h.create(&h.following(&db.cluster)).await;
    assert_eq!(reported["Data"]["TargetHealth"], "unhealthy: Target.Timeout");
}

#[tokio::test]
async fn supported_regions_are_set_added_and_removed_in_place() {
    let h = Harness::new().await;
    let mut props = h.properties();
    props["SupportedRegions"] = json!(["us-west-2"]);
    let created = h.create(&props).await;
    assert_eq!(created["Data"]["SupportedRegions"], "us-west-2");
    let regions = async |id: String| {
        let service = h
            .ec2
            .describe_vpc_endpoint_service_configurations()
            .service_ids(id)
            .send()
            .await
            .unwrap()
            .service_configurations
            .unwrap()
            .remove(0);
        let mut regions: Vec<String> =
            service.supported_regions.unwrap_or_default().into_iter().filter_map(|r| r.region).collect();
        regions.retain(|r| r != "us-east-1");
        regions.sort();
        regions
    };
    assert_eq!(regions(id(&created)).await, ["us-west-2"]);
    let mut changed = props.clone();
    changed["SupportedRegions"] = json!(["eu-west-1", "ap-southeast-2"]);
    let updated = h.send(&h.update_event(&id(&created), &props, &changed)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(id(&updated), id(&created), "in place");
    assert_eq!(updated["Data"]["SupportedRegions"], "ap-southeast-2,eu-west-1");
    assert_eq!(regions(id(&created)).await, ["ap-southeast-2", "eu-west-1"]);
    let none = without(&changed, "SupportedRegions");
    let updated = h.send(&h.update_event(&id(&created), &changed, &none)).await;
    assert_eq!(updated["Data"]["SupportedRegions"], "");
    assert!(regions(id(&created)).await.is_empty());
}
