//! `{"Diagnose": {}}` to the built binary, as `aws lambda invoke` sends it: a report
//! of every link of the path, read now, on a healthy chain and on broken ones; and
//! any other direct payload answered, not failed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::harness::{CONSUMER, DB_PORT, Harness, SECOND_CONSUMER};
use crate::support::proxy::{Fault, Proxy};
use crate::support::runtime::{Ended, Process, RuntimeApi};

/// Invokes the builder binary (its stack known, as the template sets it) with `payload`.
async fn invoke(h: &Harness, endpoint: &str, payload: Value) -> Value {
    let runtime = RuntimeApi::start().await;
    let mut env = h.binary_env(endpoint);
    env.push(("REVERSE_PRIVATELINK_STACK_ID".into(), h.stack_id.clone()));
    let process = Process::start(&runtime, env);
    let ended = runtime.invoke(serde_json::to_vec(&payload).unwrap(), Duration::from_secs(120)).await;
    process.stop().await;
    match ended {
        Ended::Response(body) => serde_json::from_str(&body).unwrap(),
        Ended::Error(error) => panic!("the invocation failed: {error}"),
    }
}

async fn diagnose(h: &Harness, endpoint: &str) -> Value {
    invoke(h, endpoint, json!({"Diagnose": {}})).await
}

/// The check named `name` of the report's one chain.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    let chains = report["Chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1, "{report:#}");
    chains[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Check"] == name)
        .unwrap_or_else(|| panic!("no {name}: {report:#}"))
}

/// The IDs of `group`'s rules that `wanted` picks.
async fn rule_ids(
    h: &Harness,
    group: &str,
    wanted: impl Fn(&aws_sdk_ec2::types::SecurityGroupRule) -> bool,
) -> Vec<String> {
    let rules = h
        .ec2
        .describe_security_group_rules()
        .filters(aws_sdk_ec2::types::Filter::builder().name("group-id").values(group).build())
        .send()
        .await
        .unwrap()
        .security_group_rules
        .unwrap();
    rules.into_iter().filter(|r| wanted(r)).filter_map(|r| r.security_group_rule_id).collect()
}

fn failing(report: &Value) -> Vec<String> {
    let checks = report["Chains"][0]["Checks"].as_array().unwrap();
    checks.iter().filter(|c| c["Ok"] == false).map(|c| c["Check"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_healthy_chain_reports_every_link_ok() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    let mut props = h.following(&db.cluster);
    props["ConsumerAvailabilityZoneIds"] = json!(["use1-az6"]);
    let created = h.create(&props).await;
    let report = diagnose(&h, &proxy.endpoint).await;
    assert_eq!(report["Ok"], true, "{report:#}");
    let chain = &report["Chains"][0];
    assert_eq!(chain["ServiceId"], created["PhysicalResourceId"]);
    assert_eq!(chain["ServiceName"], created["Data"]["ServiceName"]);
    for name in [
        "Endpoint service",
        "Allowed principals",
        "Consumer connections",
        "Load balancer",
        "PrivateLink inbound-rule enforcement",
        "Listener",
        "Target is the writer",
        "Target health",
        "Load balancer may reach the target",
        "Database admits the load balancer",
    ] {
        assert_eq!(check(&report, name)["Ok"], true, "{name}: {report:#}");
    }
    assert!(
        check(&report, "Consumer connections")["Detail"].as_str().unwrap().contains("no consumer has connected yet")
    );
    assert!(check(&report, "Target is the writer")["Detail"].as_str().unwrap().contains(&db.writer.id));
    assert!(check(&report, "PrivateLink inbound-rule enforcement")["Detail"].as_str().unwrap().starts_with("off"));
    // Only reads.
    let writes: Vec<String> =
        proxy.actions().into_iter().filter(|a| !a.starts_with("Describe") && a != "GetResources").collect();
    let created_writes = writes.len();
    diagnose(&h, &proxy.endpoint).await;
    let writes_after =
        proxy.actions().into_iter().filter(|a| !a.starts_with("Describe") && a != "GetResources").count();
    assert_eq!(writes_after, created_writes, "a diagnosis writes nothing");
}

#[tokio::test]
async fn a_connected_consumer_is_listed_with_its_state() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let created = h.create(&h.properties()).await;
    let service = created["PhysicalResourceId"].as_str().unwrap().to_string();
    // The emulator has no endpoint connections; AWS lists the consumer's endpoint so.
    proxy.inject(
        "DescribeVpcEndpointConnections",
        Fault::rewrite(move |body| {
            body.replace(
                "<vpcEndpointConnectionSet/>",
                &format!("<vpcEndpointConnectionSet><item><serviceId>{service}</serviceId><vpcEndpointId>vpce-0123456789abcdef0</vpcEndpointId><vpcEndpointOwner>210987654321</vpcEndpointOwner><vpcEndpointState>available</vpcEndpointState></item></vpcEndpointConnectionSet>"),
            )
        }),
        None,
    );
    let report = diagnose(&h, &proxy.endpoint).await;
    let connections = check(&report, "Consumer connections");
    assert_eq!(connections["Ok"], true, "{report:#}");
    assert_eq!(connections["Detail"], "vpce-0123456789abcdef0 of account 210987654321: available", "{report:#}");
}

async fn broken(h: &Harness, proxy: &Proxy, expected: &str, parts: &[&str]) {
    let report = diagnose(h, &proxy.endpoint).await;
    assert_eq!(report["Ok"], false, "{report:#}");
    assert_eq!(failing(&report), [expected], "{report:#}");
    let detail = check(&report, expected)["Detail"].as_str().unwrap().to_string();
    for part in parts {
        assert!(detail.contains(part), "{expected}: {detail:?} should contain {part:?}");
    }
}

#[tokio::test]
async fn broken_paths_are_named_with_what_to_do() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    let mut props = h.following(&db.cluster);
    props["AllowedPrincipals"] = json!([CONSUMER, SECOND_CONSUMER]);
    let created = h.create(&props).await;
    let service = created["PhysicalResourceId"].as_str().unwrap().to_string();
    let own_group = created["Data"]["SecurityGroupIds"].as_str().unwrap().to_string();

    // The writer's health checks time out: the same diagnosis as WaitForHealthyTarget.
    proxy.inject(
        "DescribeTargetHealth",
        Fault::rewrite(|body| {
            body.replace("<State>healthy</State>", "<State>unhealthy</State><Reason>Target.Timeout</Reason>")
        }),
        None,
    );
    broken(&h, &proxy, "Target health", &["Target.Timeout", &own_group, &db.security_group, "(the database's)"]).await;
    proxy.clear();

    // A principal removed by hand.
    let remove =
        h.ec2.modify_vpc_endpoint_service_permissions().service_id(&service).remove_allowed_principals(SECOND_CONSUMER);
    remove.send().await.unwrap();
    broken(&h, &proxy, "Allowed principals", &[SECOND_CONSUMER, "missing"]).await;
    let add =
        h.ec2.modify_vpc_endpoint_service_permissions().service_id(&service).add_allowed_principals(SECOND_CONSUMER);
    add.send().await.unwrap();

    // The database's group lost the rule that lets the load balancer in.
    let rule = h.rules(&db.security_group).await;
    let ingress = rule_ids(&h, &db.security_group, |r| r.is_egress == Some(false)).await;
    assert_eq!(ingress.len(), 1, "{rule:?}");
    h.ec2
        .revoke_security_group_ingress()
        .group_id(&db.security_group)
        .set_security_group_rule_ids(Some(ingress))
        .send()
        .await
        .unwrap();
    broken(
        &h,
        &proxy,
        "Database admits the load balancer",
        &[&db.security_group, &own_group, &format!("TCP {DB_PORT}")],
    )
    .await;
}

#[tokio::test]
async fn a_target_the_load_balancer_may_not_reach_is_named() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let mut props = h.properties();
    props["SecurityGroupIds"] = json!([]);
    // On premises or in a peered VPC: outside the VPC's 10.0.0.0/16.
    props["TargetIps"] = json!(["192.168.5.10"]);
    let created = h.create(&props).await;
    let own_group = created["Data"]["SecurityGroupIds"].as_str().unwrap().to_string();
    assert_eq!(check(&diagnose(&h, &proxy.endpoint).await, "Load balancer may reach the target")["Ok"], true);

    // The way out to that address removed by hand: health checks and traffic stop.
    let way_out =
        rule_ids(&h, &own_group, |r| r.is_egress == Some(true) && r.cidr_ipv4.as_deref() == Some("192.168.5.10/32"))
            .await;
    assert_eq!(way_out.len(), 1);
    h.ec2
        .revoke_security_group_egress()
        .group_id(&own_group)
        .set_security_group_rule_ids(Some(way_out))
        .send()
        .await
        .unwrap();
    broken(
        &h,
        &proxy,
        "Load balancer may reach the target",
        &["192.168.5.10", &own_group, "TCP 3306", "outbound rule"],
    )
    .await;
}

#[tokio::test]
async fn a_failover_nobody_followed_yet_is_caught() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    h.create(&h.following(&db.cluster)).await;
    h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster).send().await.unwrap();
    broken(
        &h,
        &proxy,
        "Target is the writer",
        &[&db.writer.address.to_string(), &db.reader.id, &db.reader.address.to_string()],
    )
    .await;
    // Once the follower ran, it is whole again.
    h.deliver(&h.scheduled_event()).await;
    assert_eq!(diagnose(&h, &proxy.endpoint).await["Ok"], true);
}

#[tokio::test]
async fn any_other_direct_payload_is_answered_with_what_is_understood() {
    let h = Harness::new().await;
    for payload in [json!({"hello": "world"}), json!([1, 2]), json!({"Diagnose": {}, "And": 1})] {
        let answer = invoke(&h, &h.moto.endpoint, payload.clone()).await;
        assert_eq!(answer["Error"], "the payload was not understood", "{payload}: {answer}");
        let understood = answer["Understood"].to_string();
        assert!(
            understood.contains("CloudFormation")
                && understood.contains("EventBridge")
                && understood.contains("Diagnose"),
            "{answer}"
        );
    }
    assert!(h.cloudformation.recorded().is_empty(), "nothing was answered to CloudFormation");
    // Without a chain, a diagnosis says so.
    let report = diagnose(&h, &h.moto.endpoint).await;
    assert_eq!(report["Ok"], false);
    assert!(report["Detail"].as_str().unwrap().contains("no chain"), "{report}");
}
