//! Least privilege: the load balancer's own group admits nothing it was not told to
//! and reaches only the database; the builder learns which groups it may open; the
//! follower moves targets only inside the target group's VPC, and two of its runs
//! never undo each other; and, as AWS authorizes it, the follower may create nothing
//! and move no other stack's targets.

use serde_json::{Value, json};

use aws_sdk_ec2::error::ProvideErrorMetadata;

use crate::support::harness::{DB_PORT, Harness};
use crate::support::moto::FOLLOWER_KEY;
use crate::support::proxy::Fault;
use crate::traffic::tcp;
use reverse_privatelink::chain::{DATABASE_TAG, STACK_ID_TAG};

fn id(answer: &Value) -> String {
    answer["PhysicalResourceId"].as_str().unwrap().to_string()
}

fn own_group(answer: &Value) -> String {
    answer["Data"]["SecurityGroupIds"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_load_balancers_own_group_admits_nothing_and_reaches_only_the_database() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let created = h.create(&h.following(&db.cluster)).await;
    let own = own_group(&created);
    assert_eq!(
        h.rules(&own).await,
        [tcp(true, DB_PORT, None, Some(&db.security_group), true)].into(),
        "no inbound rule at all; outbound only the database port to the database's group"
    );
    // The database lets that group in, and only it.
    let database = h.rules(&db.security_group).await;
    let inbound: Vec<_> = database.iter().filter(|r| !r.egress).collect();
    assert_eq!(inbound, [&tcp(false, DB_PORT, None, Some(&own), true)]);
}

#[tokio::test]
async fn load_balancer_clients_are_let_in_exactly_and_enforcement_on_needs_them() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let mut props = h.following(&db.cluster);
    props["LoadBalancerClients"] = json!(["10.0.7.0/24", h.seed.second_security_group]);
    let created = h.create(&props).await;
    let own = own_group(&created);
    let inbound = |rules: std::collections::BTreeSet<crate::support::harness::RuleView>| {
        rules.into_iter().filter(|r| !r.egress).collect::<Vec<_>>()
    };
    assert_eq!(
        inbound(h.rules(&own).await),
        [
            tcp(false, DB_PORT, None, Some(&h.seed.second_security_group), true),
            tcp(false, DB_PORT, Some("10.0.7.0/24"), None, true),
        ]
    );
    let mut fewer = props.clone();
    fewer["LoadBalancerClients"] = json!(["10.0.7.0/24"]);
    let updated = h.send(&h.update_event(&id(&created), &props, &fewer)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(inbound(h.rules(&own).await), [tcp(false, DB_PORT, Some("10.0.7.0/24"), None, true)]);

    let before = h.inventory().await;
    let mut enforced = h.following(&db.cluster);
    enforced["EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic"] = json!("on");
    let refused = h.send(&h.create_event(&enforced)).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains("EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic and LoadBalancerClients:"),
        "{reason}"
    );
    let mut given = h.following(&db.cluster);
    given["SecurityGroupIds"] = json!([h.seed.security_group]);
    given["LoadBalancerClients"] = json!(["10.0.7.0/24"]);
    let refused = h.send(&h.create_event(&given)).await;
    assert!(refused["Reason"].as_str().unwrap().starts_with("LoadBalancerClients:"), "{refused}");
    assert_eq!(h.inventory().await, before, "nothing created for either");
    enforced["LoadBalancerClients"] = json!(["10.20.0.0/16"]);
    let allowed = h.create(&enforced).await;
    assert_eq!(allowed["Data"]["EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic"], "on");
}

impl Harness {
    /// The stack's `Custom::DatabaseSecurityGroups` request for `properties`.
    fn lookup_event(&self, kind: &str, properties: &Value) -> Value {
        let mut event = match kind {
            "Create" => self.create_event(properties),
            _ => self.update_event("reverse-privatelink-database-security-groups", properties, properties),
        };
        event["ResourceType"] = json!("Custom::DatabaseSecurityGroups");
        event["LogicalResourceId"] = json!("DatabaseSecurityGroups");
        event
    }
}

#[tokio::test]
async fn the_builder_learns_which_security_groups_it_may_open() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let arn = |group: &str| format!("arn:aws:ec2:us-east-1:123456789012:security-group/{group}");
    let looked = h.send(&h.lookup_event("Create", &h.following(&db.cluster))).await;
    assert_eq!(looked["Status"], "SUCCESS", "{looked}");
    assert_eq!(looked["PhysicalResourceId"], "reverse-privatelink-database-security-groups");
    assert_eq!(looked["Data"]["Arns"], arn(&db.security_group));
    // Fixed addresses: no group to open; the list names none.
    let fixed = h.send(&h.lookup_event("Create", &h.properties())).await;
    assert_eq!(fixed["Data"]["Arns"], arn("none"));
    assert!(h.inventory().await.is_empty(), "a lookup builds nothing");

    // Once the stack added a rule to the database's group, that group stays listed (to revoke
    // it) even after the chain stopped needing it.
    h.create(&h.following(&db.cluster)).await;
    let mut elsewhere = h.properties();
    elsewhere["AllowDatabaseIngress"] = json!("false");
    let after = h.send(&h.lookup_event("Update", &elsewhere)).await;
    assert_eq!(after["Data"]["Arns"], arn(&db.security_group));
    let deleted = h.send(&h.delete_event("reverse-privatelink-database-security-groups", &elsewhere)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
}

#[tokio::test]
async fn the_follower_never_registers_an_address_outside_the_target_groups_vpc() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let created = h.create(&h.following(&db.cluster)).await;
    let tg = created["Data"]["TargetGroupArn"].as_str().unwrap().to_string();
    // Someone allowed to tag points the chain at a name of theirs.
    h.dns.set("elsewhere.example.internal", &["192.168.7.7".parse().unwrap()]);
    let tag =
        aws_sdk_elasticloadbalancingv2::types::Tag::builder().key(DATABASE_TAG).value("elsewhere.example.internal");
    h.elb.add_tags().resource_arns(&tg).tags(tag.build()).send().await.unwrap();
    h.deliver(&h.scheduled_event()).await;
    assert_eq!(h.targets(&tg).await, [db.writer.address.to_string()].into(), "nothing changed");
}

#[tokio::test]
async fn overlapping_follower_runs_never_undo_each_other() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    let created = h.create(&h.following(&db.cluster)).await;
    let tg = created["Data"]["TargetGroupArn"].as_str().unwrap().to_string();
    let fail_over = || async {
        h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster).send().await.unwrap();
    };
    // Run A sees the first failover and is about to register the new writer...
    fail_over().await;
    proxy.inject("RegisterTargets", Fault::Pause, Some(1));
    let scheduled = h.scheduled_event();
    let first = h.deliver(&scheduled);
    let meanwhile = async {
        proxy.paused().await;
        // ...when the cluster fails back and run B finds the target right.
        fail_over().await;
        h.deliver(&h.scheduled_event()).await;
        assert_eq!(h.targets(&tg).await, [db.writer.address.to_string()].into());
        proxy.release();
    };
    tokio::join!(first, meanwhile);
    assert_eq!(
        h.targets(&tg).await,
        [db.writer.address.to_string()].into(),
        "run A asked again before deregistering, and followed the writer back"
    );
}

/// The error code and message of a refused SDK call.
fn refusal<E>(
    result: Result<
        impl std::fmt::Debug,
        aws_sdk_ec2::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    >,
) -> (String, String, u16)
where
    E: aws_smithy_runtime_api::client::result::CreateUnhandledError + ProvideErrorMetadata + std::error::Error,
    E: Send + Sync + 'static,
{
    let error = result.expect_err("AWS refuses it");
    let status = error.raw_response().map(|r| r.status().as_u16()).unwrap_or_default();
    let error = error.into_service_error();
    (error.code().unwrap_or_default().to_string(), error.message().unwrap_or_default().to_string(), status)
}

#[tokio::test]
async fn the_follower_may_create_nothing_and_move_no_other_stacks_targets() {
    let h = Harness::new().await;
    let follower = h.moto.sdk_config_as(FOLLOWER_KEY, &h.moto.endpoint).await;
    let (ec2, elb) = (aws_sdk_ec2::Client::new(&follower), aws_sdk_elasticloadbalancingv2::Client::new(&follower));

    let group = ec2.create_security_group().group_name("mine").description("x").vpc_id(&h.seed.vpc_id).send().await;
    let (code, message, status) = refusal(group);
    assert_eq!((code.as_str(), status), ("UnauthorizedOperation", 403), "{message}");
    assert!(message.contains("is not authorized to perform: ec2:CreateSecurityGroup on resource: arn:aws:ec2:us-east-1:123456789012:security-group/*"), "{message}");

    let lb = elb
        .create_load_balancer()
        .name("mine")
        .r#type(aws_sdk_elasticloadbalancingv2::types::LoadBalancerTypeEnum::Network)
        .scheme(aws_sdk_elasticloadbalancingv2::types::LoadBalancerSchemeEnum::Internal)
        .set_subnets(Some(h.seed.subnets.clone()))
        .send()
        .await;
    let (code, message, status) = refusal(lb);
    assert_eq!((code.as_str(), status), ("AccessDenied", 403), "{message}");
    assert!(message.contains("elasticloadbalancing:CreateLoadBalancer on resource: arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/mine/*"), "{message}");

    // A target group of another stack: the follower reads it, and may not move its targets.
    let other_stack = "arn:aws:cloudformation:us-east-1:123456789012:stack/other/1";
    let tag = aws_sdk_elasticloadbalancingv2::types::Tag::builder().key(STACK_ID_TAG).value(other_stack).build();
    let theirs = h
        .elb
        .create_target_group()
        .name("theirs")
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Tcp)
        .port(3306)
        .vpc_id(&h.seed.vpc_id)
        .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
        .tags(tag)
        .send()
        .await
        .unwrap()
        .target_groups
        .unwrap()[0]
        .target_group_arn
        .clone()
        .unwrap();
    elb.describe_target_groups().target_group_arns(&theirs).send().await.expect("reading is allowed");
    let target = aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder().id("10.0.1.9").build();
    let (code, message, _) = refusal(elb.register_targets().target_group_arn(&theirs).targets(target).send().await);
    assert_eq!(code, "AccessDenied", "{message}");
    assert!(message.contains(&format!("elasticloadbalancing:RegisterTargets on resource: {theirs}")), "{message}");

    let denials = h.moto.denials();
    let refused: Vec<&str> = denials.iter().filter_map(|d| d["action"].as_str()).collect();
    assert_eq!(
        refused,
        ["ec2:CreateSecurityGroup", "elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:RegisterTargets"]
    );
    assert!(denials.iter().all(|d| d["role"] == "FollowerRole" && d["nearest"].is_string()), "{denials:?}");
    h.moto.forget_denials();
}
