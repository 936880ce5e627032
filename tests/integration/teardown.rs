//! Teardown a producer can trust: a Delete held by someone else's rule or interface
//! names it and completes once it is gone; one held by the load balancer's lingering
//! interfaces waits them out.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{IpPermission, UserIdGroupPair};
use serde_json::json;

use crate::support::harness::{DB_PORT, Harness};
use crate::support::proxy::Fault;
use crate::support::simulator::id;

/// An answer well before the deadline the tests give (120 s): the Delete did not wait for it.
const PROMPTLY: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_delete_held_by_a_colleagues_rule_names_it_and_completes_once_it_is_removed() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let props = h.following(&db.cluster);
    let created = h.create(&props).await;
    let own = created["Data"]["SecurityGroupIds"].as_str().unwrap().to_string();
    // Someone admits the load balancer's group in a group of their own, by hand.
    let colleague = h
        .ec2
        .create_security_group()
        .group_name("reporting-replica")
        .description("a colleague's")
        .vpc_id(&h.seed.vpc_id)
        .send()
        .await
        .unwrap()
        .group_id
        .unwrap();
    let from_own = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(i32::from(DB_PORT))
        .to_port(i32::from(DB_PORT))
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(&own).build())
        .build();
    let added =
        h.ec2.authorize_security_group_ingress().group_id(&colleague).ip_permissions(from_own).send().await.unwrap();
    let rule = added.security_group_rules.unwrap()[0].security_group_rule_id.clone().unwrap();

    let started = Instant::now();
    let deleted = h.send(&h.delete_event(&id(&created), &props)).await;
    let took = started.elapsed();
    assert_eq!(deleted["Status"], "FAILED", "{deleted}");
    let reason = deleted["Reason"].as_str().unwrap();
    for part in [own.as_str(), colleague.as_str(), rule.as_str(), "inbound", "remove it yourself"] {
        assert!(reason.contains(part), "{reason:?} should name {part:?}");
    }
    assert!(took < PROMPTLY, "answered at once, not at the deadline: {took:?}");
    let left = h.inventory().await;
    assert!(left.counts() == (0, 0, 0, 0), "everything else of the chain is gone: {left:?}");
    assert_eq!(left.security_groups, [own.clone()].into(), "{left:?}");
    let database_rules = h.rules(&db.security_group).await;
    assert!(
        !database_rules.iter().any(|r| r.source_group.as_deref() == Some(own.as_str())),
        "the database's rule the function added is gone: {database_rules:?}"
    );
    assert!(h.rules(&colleague).await.iter().any(|r| r.source_group.as_deref() == Some(own.as_str())), "never revoked");

    // The colleague removes the rule; CloudFormation's retried Delete completes.
    h.ec2.revoke_security_group_ingress().group_id(&colleague).security_group_rule_ids(&rule).send().await.unwrap();
    let again = h.send(&h.delete_event(&id(&created), &props)).await;
    assert_eq!(again["Status"], "SUCCESS", "{again}");
    assert!(h.inventory().await.is_empty(), "{:?}", h.inventory().await);
}

/// `DescribeNetworkInterfaces` answering with one interface that has the group.
fn interface_with_group(description: &'static str) -> Fault {
    Fault::rewrite(move |body| {
        let item = format!(
            "<networkInterfaceSet><item><networkInterfaceId>eni-0a1b2c3d4e5f60718</networkInterfaceId><description>{description}</description><status>in-use</status></item></networkInterfaceSet>"
        );
        body.replace("<networkInterfaceSet/>", &item)
    })
}

#[tokio::test]
async fn a_delete_waits_out_the_load_balancers_interfaces_but_names_anyone_elses() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let mut props = h.properties();
    props["SecurityGroupIds"] = json!([]);
    let created = h.create(&props).await;
    // AWS still releasing the deleted load balancer's interface: waited out.
    proxy.inject("DeleteSecurityGroup", Fault::Refuse("DependencyViolation"), Some(2));
    proxy.inject(
        "DescribeNetworkInterfaces",
        interface_with_group("ELB net/import-db-0a1b2c3d/50dc6c495c0c9188"),
        None,
    );
    let deleted = h.send(&h.delete_event(&id(&created), &props)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert!(h.inventory().await.is_empty(), "{:?}", h.inventory().await);
    let actions = proxy.actions();
    assert_eq!(actions.iter().filter(|a| *a == "DeleteSecurityGroup").count(), 3, "{actions:?}");
    assert!(actions.iter().any(|a| a == "DescribeNetworkInterfaces"), "asked who holds it: {actions:?}");
    proxy.clear();

    // An instance's interface in the group: named at once.
    let created = h.create(&props).await;
    let own = created["Data"]["SecurityGroupIds"].as_str().unwrap().to_string();
    proxy.inject("DeleteSecurityGroup", Fault::Refuse("DependencyViolation"), None);
    proxy.inject("DescribeNetworkInterfaces", interface_with_group("bastion"), None);
    let started = Instant::now();
    let deleted = h.send(&h.delete_event(&id(&created), &props)).await;
    assert_eq!(deleted["Status"], "FAILED", "{deleted}");
    assert!(started.elapsed() < PROMPTLY);
    let reason = deleted["Reason"].as_str().unwrap();
    assert!(reason.contains(&own) && reason.contains("eni-0a1b2c3d4e5f60718 (bastion)"), "{reason}");
    assert_eq!(h.inventory().await.counts(), (0, 0, 0, 0));
}

#[tokio::test]
async fn an_update_to_given_groups_held_by_a_colleagues_rule_says_so_and_keeps_the_chain() {
    let h = Harness::new().await;
    let mut own = h.properties();
    own["SecurityGroupIds"] = json!([]);
    let created = h.create(&own).await;
    let own_group = created["Data"]["SecurityGroupIds"].as_str().unwrap().to_string();
    let from_own = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(3306)
        .to_port(3306)
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(&own_group).build())
        .build();
    let added = h
        .ec2
        .authorize_security_group_ingress()
        .group_id(&h.seed.second_security_group)
        .ip_permissions(from_own)
        .send()
        .await
        .unwrap();
    let rule = added.security_group_rules.unwrap()[0].security_group_rule_id.clone().unwrap();

    let given = h.properties();
    let updated = h.send(&h.update_event(&id(&created), &own, &given)).await;
    assert_eq!(updated["Status"], "FAILED", "{updated}");
    let reason = updated["Reason"].as_str().unwrap();
    for part in [own_group.as_str(), rule.as_str(), "update the stack again", "uses the groups given"] {
        assert!(reason.contains(part), "{reason:?} should name {part:?}");
    }
    // The chain is CloudFormation's and stays; its rollback puts the own group back.
    assert_eq!(h.inventory().await.counts(), (1, 1, 1, 1));
}
