//! The databases users really have: publicly accessible ones, consumers in zones
//! of their own, DB subnet groups that change under a live chain, failovers to
//! every zone of the database, and endpoints that are not one writer.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::harness::{DbSeed, Harness, SECOND_CONSUMER, invoke};

fn id(answer: &Value) -> String {
    answer["PhysicalResourceId"].as_str().unwrap().to_string()
}

fn with(mut props: Value, extra: Value) -> Value {
    for (key, value) in extra.as_object().unwrap() {
        props[key] = value.clone();
    }
    props
}

fn set(addresses: &[Ipv4Addr]) -> BTreeSet<String> {
    addresses.iter().map(ToString::to_string).collect()
}

fn failed_naming(answer: &Value, parts: &[&str]) {
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    for part in parts {
        assert!(reason.contains(part), "{reason:?} should contain {part:?}");
    }
}

impl Harness {
    async fn subnet(&self, cidr: &str, zone: &str) -> String {
        let created =
            self.ec2.create_subnet().vpc_id(&self.seed.vpc_id).cidr_block(cidr).availability_zone(zone).send().await;
        created.unwrap().subnet.unwrap().subnet_id.unwrap()
    }

    async fn update(&self, physical_id: &str, old: &Value, new: &Value) -> Value {
        self.send(&self.update_event(physical_id, old, new)).await
    }
}

#[tokio::test]
async fn a_publicly_accessible_database_is_reached_at_its_private_address() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let created = h
        .rds
        .create_db_instance()
        .db_instance_identifier("public-db")
        .engine("mysql")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .publicly_accessible(true)
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .db_subnet_group_name("database-subnets")
        .vpc_security_group_ids(&db.security_group)
        .availability_zone("us-east-1b")
        .send()
        .await
        .unwrap()
        .db_instance
        .unwrap();
    // As on AWS: the instance's network interface has its private address and carries the
    // public one; from outside the VPC its endpoint resolves to the public address.
    let interface = h
        .ec2
        .create_network_interface()
        .subnet_id(&h.seed.subnets[1])
        .private_ip_address("10.0.2.77")
        .description("RDSNetworkInterface")
        .send()
        .await
        .unwrap()
        .network_interface
        .unwrap();
    let address = h.ec2.allocate_address().domain(aws_sdk_ec2::types::DomainType::Vpc).address("54.0.0.10");
    let allocation = address.send().await.unwrap().allocation_id.unwrap();
    let associate = h.ec2.associate_address().allocation_id(allocation);
    associate.network_interface_id(interface.network_interface_id.unwrap()).send().await.unwrap();
    h.dns.set(&created.endpoint.unwrap().address.unwrap(), &["54.0.0.10".parse().unwrap()]);

    let answer = h.create(&h.following("public-db")).await;
    assert_eq!(answer["Data"]["TargetIps"], "10.0.2.77", "{answer}");
    let tg = answer["Data"]["TargetGroupArn"].as_str().unwrap().to_string();
    assert_eq!(h.targets(&tg).await, set(&["10.0.2.77".parse().unwrap()]));
    // The sync maps it the same way: nothing moves.
    h.deliver(&h.scheduled_event()).await;
    assert_eq!(h.targets(&tg).await, set(&["10.0.2.77".parse().unwrap()]));

    // A public address no interface of the VPC carries: said so, and nothing built.
    let before = h.inventory().await;
    h.dns.set(&db.solo.endpoint, &["54.0.0.99".parse().unwrap()]);
    let refused = h.send(&h.create_event(&h.following("solo"))).await;
    failed_naming(&refused, &["Database:", "54.0.0.99", "not a private address", "no network interface"]);
    assert_eq!(h.inventory().await, before);
}

#[tokio::test]
async fn consumer_zones_are_served_when_derived_and_checked_when_given() {
    let h = Harness::new().await;
    h.seed_database().await;
    // us-east-1d is use1-az4 in the emulator's account; the DB subnet group has no subnet there.
    let outside_group = h.subnet("10.0.5.0/24", "us-east-1d").await;
    let derived = with(h.following("orders"), json!({"ConsumerAvailabilityZoneIds": ["use1-az4", "use1-az6"]}));
    let answer = h.create(&derived).await;
    assert_eq!(answer["Data"]["AvailabilityZoneIds"], format!("{},use1-az4", h.seed.zone_ids.join(",")));
    let mut subnets: BTreeSet<String> = h.seed.subnets.iter().cloned().collect();
    subnets.insert(outside_group);
    assert_eq!(h.chain(&answer).await.subnets, subnets);

    let before = h.inventory().await;
    let given = |zones: Value| {
        with(h.following("orders"), json!({"SubnetIds": &h.seed.subnets[..2], "ConsumerAvailabilityZoneIds": zones}))
    };
    let refusals = [
        // use1-az2 is us-east-1c, where the VPC has a subnet SubnetIds leaves out.
        (
            given(json!(["use1-az2"])),
            vec!["ConsumerAvailabilityZoneIds:", "use1-az2", "us-east-1c", &h.seed.subnets[2]],
        ),
        // use1-az3 is us-east-1e, where the VPC has no subnet.
        (given(json!(["use1-az3"])), vec!["ConsumerAvailabilityZoneIds:", "use1-az3", "us-east-1e", "no subnet there"]),
        (
            with(h.following("orders"), json!({"ConsumerAvailabilityZoneIds": ["use1-az3"]})),
            vec!["ConsumerAvailabilityZoneIds:", "use1-az3", "us-east-1e", "has no subnet"],
        ),
        (
            with(h.following("orders"), json!({"ConsumerAvailabilityZoneIds": ["use1-az9"]})),
            vec!["ConsumerAvailabilityZoneIds:", "use1-az9", "not a zone of this region"],
        ),
        (
            with(h.properties(), json!({"ConsumerAvailabilityZoneIds": ["use1-az4"]})),
            vec!["ConsumerAvailabilityZoneIds:", "use1-az4", "us-east-1d"],
        ),
    ];
    for (props, parts) in refusals {
        failed_naming(&h.send(&h.create_event(&props)).await, &parts);
        assert_eq!(h.inventory().await, before, "{props}");
    }
}

#[tokio::test]
async fn a_zone_of_the_database_the_given_subnets_miss_fails_what_the_user_changed_only() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    // The reader orders-2 is in us-east-1b: a failover to it would reach no subnet.
    let missing = with(h.following("orders"), json!({"SubnetIds": [&h.seed.subnets[0], &h.seed.subnets[2]]}));
    let refused = h.send(&h.create_event(&missing)).await;
    failed_naming(&refused, &["SubnetIds:", "orders-2", "us-east-1b", &h.seed.subnets[1]]);
    assert!(h.inventory().await.is_empty());

    let old = with(h.following("orders"), json!({"SubnetIds": &h.seed.subnets[..2]}));
    let created = h.create(&old).await;
    // A reader added since in a zone the subnets miss.
    h.cluster_member("orders-3", "us-east-1c", "10.0.3.50").await;
    let mut principal = old.clone();
    principal["AllowedPrincipals"] = json!([crate::support::harness::CONSUMER, SECOND_CONSUMER]);
    let updated = h.update(&id(&created), &old, &principal).await;
    assert_eq!(updated["Status"], "SUCCESS", "an unrelated update never fails for it: {updated}");
    assert_eq!(id(&updated), id(&created));
    // Naming the database otherwise is a change of Database: now it fails.
    let renamed = with(principal.clone(), json!({"Database": db.writer.id}));
    failed_naming(&h.update(&id(&created), &principal, &renamed).await, &["SubnetIds:", "orders-3", "us-east-1c"]);
}

#[tokio::test]
async fn derived_subnets_stay_put_when_the_subnet_group_changes_and_gain_a_readers_zone_in_place() {
    let h = Harness::new().await;
    h.seed_database().await;
    let old = h.following("orders");
    let created = h.create(&old).await;
    let before = h.chain(&created).await;
    assert_eq!(before.subnets, h.seed.subnets.iter().cloned().collect());

    // Someone swaps the group's us-east-1a subnet for one with a lower ID, and adds us-east-1d with a reader there.
    let mut lower = None;
    // Subnet IDs are random: enough tries that one is lower whatever the chain's is.
    for i in (10..99).chain(100..=255) {
        let subnet = h.subnet(&format!("10.0.{i}.0/24"), "us-east-1a").await;
        if subnet < h.seed.subnets[0] {
            lower = Some(subnet);
            break;
        }
    }
    let lower = lower.expect("a subnet with a lower ID than the chain's");
    let zone_d = h.subnet("10.0.99.0/24", "us-east-1d").await;
    let group = [lower.clone(), h.seed.subnets[1].clone(), h.seed.subnets[2].clone(), zone_d.clone()];
    let modify = h.rds.modify_db_subnet_group().db_subnet_group_name("database-subnets");
    modify.set_subnet_ids(Some(group.to_vec())).send().await.unwrap();
    h.cluster_member("orders-3", "us-east-1d", "10.0.99.50").await;

    let mut new = old.clone();
    new["AllowedPrincipals"] = json!([crate::support::harness::CONSUMER, SECOND_CONSUMER]);
    let updated = h.update(&id(&created), &old, &new).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(id(&updated), id(&created), "the consumer's service stays");
    let after = h.chain(&updated).await;
    let mut expected = before.subnets.clone();
    expected.insert(zone_d);
    assert_eq!(after.subnets, expected, "every subnet kept, us-east-1d added in place");
    assert!(!after.subnets.contains(&lower));
    assert!(updated["Data"]["AvailabilityZoneIds"].as_str().unwrap().contains("use1-az4"), "{updated}");
    assert_eq!(after.load_balancer_arn, before.load_balancer_arn);
}

#[tokio::test]
async fn target_groups_check_health_often_enough_for_a_failover() {
    let h = Harness::new().await;
    let created = h.create(&h.properties()).await;
    let tg = created["Data"]["TargetGroupArn"].as_str().unwrap().to_string();
    let health = || async {
        let described = h.elb.describe_target_groups().target_group_arns(&tg).send().await.unwrap();
        let tg = described.target_groups.unwrap().remove(0);
        (
            tg.health_check_interval_seconds.unwrap(),
            tg.health_check_timeout_seconds.unwrap(),
            tg.healthy_threshold_count.unwrap(),
            tg.unhealthy_threshold_count.unwrap(),
        )
    };
    assert_eq!(health().await, (10, 5, 2, 2));

    // A target group an earlier release made keeps AWS's defaults until the next update.
    let modify = h.elb.modify_target_group().target_group_arn(&tg).health_check_interval_seconds(30);
    modify.health_check_timeout_seconds(10).healthy_threshold_count(5).send().await.unwrap();
    let mut new = h.properties();
    new["AllowedPrincipals"] = json!([crate::support::harness::CONSUMER, SECOND_CONSUMER]);
    let updated = h.update(&id(&created), &h.properties(), &new).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(health().await, (10, 5, 2, 2));
}

async fn fail_over_instance(h: &Harness, db: &DbSeed) {
    h.rds.reboot_db_instance().db_instance_identifier(&db.solo.id).force_failover(true).send().await.unwrap();
}

#[tokio::test]
async fn after_a_multi_az_failover_event_the_sync_waits_for_the_address_to_move() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let answer = h.create(&h.following("solo")).await;
    let tg = answer["Data"]["TargetGroupArn"].as_str().unwrap().to_string();

    fail_over_instance(&h, &db).await;
    let standby: Ipv4Addr = "10.0.1.60".parse().unwrap();
    let lag = Duration::from_secs(3);
    let (dns, endpoint) = (h.dns.clone(), db.solo.endpoint.clone());
    tokio::spawn(async move {
        tokio::time::sleep(lag).await;
        dns.set(&endpoint, &[standby]);
    });
    let started = Instant::now();
    h.deliver(&h.rds_event("DB_INSTANCE", "solo", "RDS-EVENT-0015")).await;
    let took = started.elapsed();
    assert_eq!(h.targets(&tg).await, set(&[standby]), "moved once DNS did");
    assert!(took >= lag && took < lag + Duration::from_secs(10), "{took:?}");
    println!(
        "databases: Multi-AZ failover event, DNS {lag:?} behind: new address registered {took:.1?} after the event"
    );

    // An address that never moves is left alone once the run's time is up.
    let started = Instant::now();
    let event = h.rds_event("DB_INSTANCE", "solo", "RDS-EVENT-0049");
    invoke(&h.follower, event, Duration::from_secs(20)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!(h.targets(&tg).await, set(&[standby]));
}

#[tokio::test]
async fn endpoints_that_are_not_one_writer_are_refused_saying_what_to_give() {
    let h = Harness::new().await;
    h.seed_database().await;
    let global = h.rds.create_global_cluster().global_cluster_identifier("orders-global").engine("aurora-mysql");
    global.send().await.unwrap();
    for cluster in ["orders-primary", "orders-secondary"] {
        let create = h.rds.create_db_cluster().db_cluster_identifier(cluster).engine("aurora-mysql");
        let create = create.master_username("admin").master_user_password("correct-horse-battery");
        create
            .db_subnet_group_name("database-subnets")
            .global_cluster_identifier("orders-global")
            .send()
            .await
            .unwrap();
    }
    let instance = h.rds.create_db_instance().db_instance_identifier("orders-secondary-1").engine("aurora-mysql");
    let instance = instance.db_cluster_identifier("orders-secondary").db_instance_class("db.r6g.large");
    let endpoint = instance.availability_zone("us-east-1a").send().await.unwrap().db_instance.unwrap().endpoint;
    h.dns.set(&endpoint.unwrap().address.unwrap(), &["10.0.1.70".parse().unwrap()]);

    let subnets = json!({"SubnetIds": h.seed.subnets});
    for (database, parts) in [
        ("orders.cluster-ro-abc123.us-east-1.rds.amazonaws.com", vec!["cluster reader endpoint", "(orders)"]),
        ("reports.cluster-custom-abc123.us-east-1.rds.amazonaws.com", vec!["custom cluster endpoint"]),
        ("imports.proxy-abc123.us-east-1.rds.amazonaws.com", vec!["RDS Proxy endpoint", "behind the proxy"]),
        ("orders-secondary", vec!["secondary cluster of the Aurora Global Database orders-global"]),
    ] {
        let answer = h.send(&h.create_event(&with(h.following(database), subnets.clone()))).await;
        let mut expected = vec!["Database:"];
        expected.extend(parts);
        failed_naming(&answer, &expected);
        assert!(h.inventory().await.is_empty(), "{database}");
    }
}
