//! Following the writer: the function takes a database instead of an address,
//! derives its network, and keeps the target on the writer through failovers,
//! whether the schedule or an RDS event asks.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::harness::{DB_PORT, DbSeed, Harness};
use crate::support::proxy::Fault;

fn figure(line: String) {
    println!("following: {line}");
}

fn id(answer: &Value) -> String {
    answer["PhysicalResourceId"].as_str().unwrap().to_string()
}

async fn failover(h: &Harness, db: &DbSeed) {
    h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster).send().await.unwrap();
}

/// The follower's one line per chain and run, from its JSON log.
fn sync_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["action"].is_string())
        .collect()
}

fn set(addresses: &[std::net::Ipv4Addr]) -> BTreeSet<String> {
    addresses.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn a_chain_from_the_cluster_identifier_alone_registers_the_writer_in_the_databases_network() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let answer = h.create(&h.following(&db.cluster)).await;
    let data = &answer["Data"];
    assert_eq!(data["Database"], "orders");
    assert_eq!(data["WriterInstance"], db.writer.id.as_str());
    assert_eq!(data["TargetIps"], db.writer.address.to_string());
    let chain = h.chain(&answer).await;
    assert_eq!(chain.targets, [(db.writer.address.to_string(), i32::from(DB_PORT))].into());
    assert_eq!(chain.subnets, h.seed.subnets.iter().cloned().collect(), "subnets from the DB subnet group");
    assert_eq!((chain.target_group_port, chain.listener_port), (i32::from(DB_PORT), i32::from(DB_PORT)));
    assert_eq!(data["AvailabilityZoneIds"], h.seed.zone_ids.join(","));
    assert_eq!(chain.target_group_tags.get("reverse-privatelink:database").map(String::as_str), Some("orders"));
    let attributes = h
        .elb
        .describe_target_group_attributes()
        .target_group_arn(&chain.target_group_arn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let attribute = |key: &str| attributes.iter().find(|a| a.key.as_deref() == Some(key)).and_then(|a| a.value.clone());
    assert_eq!(attribute("deregistration_delay.connection_termination.enabled").as_deref(), Some("true"));
    assert_eq!(attribute("deregistration_delay.timeout_seconds").as_deref(), Some("10"));
}

#[tokio::test]
async fn a_scheduled_sync_follows_a_failover_and_touches_only_the_targets() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    let answer = h.create(&h.following(&db.cluster)).await;
    let before = h.chain(&answer).await;
    let inventory = h.inventory().await;

    // Nothing moved: the sync only reads.
    let calls = proxy.actions().len();
    h.deliver(&h.scheduled_event()).await;
    let steady: Vec<String> = proxy.actions()[calls..].to_vec();
    assert!(steady.iter().all(|a| a.starts_with("Describe") || a == "GetResources"), "{steady:?}");

    failover(&h, &db).await;
    h.dns.set(&db.cluster_endpoint, &[db.reader.address]);
    let calls = proxy.actions().len();
    h.deliver(&h.scheduled_event()).await;
    let moved: Vec<String> = proxy.actions()[calls..].to_vec();

    let after = h.chain(&answer).await;
    assert_eq!(after.targets, [(db.reader.address.to_string(), i32::from(DB_PORT))].into());
    let mut expected = before.clone();
    expected.targets = after.targets.clone();
    assert_eq!(after, expected, "only the target changed");
    assert_eq!(h.inventory().await, inventory);
    let writes: Vec<&String> = moved.iter().filter(|a| !a.starts_with("Describe") && *a != "GetResources").collect();
    assert_eq!(writes, ["RegisterTargets", "DeregisterTargets"], "register the new writer, then deregister the old");
    figure(format!(
        "calls per scheduled sync of one chain: {} when the writer stayed, {} when it moved",
        steady.len(),
        moved.len()
    ));
}

#[tokio::test]
async fn an_rds_failover_event_moves_the_target_to_the_new_writer() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let answer = h.create(&h.following(&db.cluster)).await;
    let tg = answer["Data"]["TargetGroupArn"].as_str().unwrap().to_string();

    failover(&h, &db).await;
    let started = Instant::now();
    h.deliver(&h.rds_event("CLUSTER", &db.cluster, "RDS-EVENT-0071")).await;
    let took = started.elapsed();
    assert_eq!(h.targets(&tg).await, set(&[db.reader.address]));
    figure(format!("RDS failover event to the new writer registered: {} ms against the emulator", took.as_millis()));
}

#[tokio::test]
async fn a_failback_while_the_old_target_is_still_draining_registers_it_again() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    let answer = h.create(&h.following(&db.cluster)).await;
    let tg = answer["Data"]["TargetGroupArn"].as_str().unwrap().to_string();
    failover(&h, &db).await;
    h.deliver(&h.rds_event("CLUSTER", &db.cluster, "RDS-EVENT-0071")).await;
    assert_eq!(h.targets(&tg).await, set(&[db.reader.address]));

    // AWS keeps the old writer listed as draining for the deregistration delay; the emulator drops it at once.
    let old = db.writer.address.to_string();
    proxy.inject(
        "DescribeTargetHealth",
        Fault::rewrite(move |body| {
            body.replace(
                "<TargetHealthDescriptions>",
                &format!(
                    "<TargetHealthDescriptions><member><Target><Id>{old}</Id><Port>{DB_PORT}</Port></Target><TargetHealth><State>draining</State><Reason>Target.DeregistrationInProgress</Reason></TargetHealth></member>"
                ),
            )
        }),
        None,
    );
    failover(&h, &db).await; // back to the first writer
    h.deliver(&h.rds_event("CLUSTER", &db.cluster, "RDS-EVENT-0071")).await;
    proxy.clear();
    assert_eq!(h.targets(&tg).await, set(&[db.writer.address]), "the draining address was registered again");
}

#[tokio::test]
async fn after_a_failover_event_the_sync_waits_for_dns_to_catch_up() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let answer = h.create(&h.following(&db.cluster)).await;
    let tg = answer["Data"]["TargetGroupArn"].as_str().unwrap().to_string();

    failover(&h, &db).await;
    // DNS lags: the new writer's name still gives the old writer's address.
    h.dns.set(&db.reader.endpoint, &[db.writer.address]);
    h.deliver(&h.scheduled_event()).await;
    assert_eq!(h.targets(&tg).await, set(&[db.writer.address]), "a scheduled run never registers an unsettled address");

    let lag = Duration::from_secs(5);
    let dns = h.dns.clone();
    let (endpoint, address) = (db.reader.endpoint.clone(), db.reader.address);
    tokio::spawn(async move {
        tokio::time::sleep(lag).await;
        dns.set(&endpoint, &[address]);
    });
    let started = Instant::now();
    h.deliver(&h.rds_event("CLUSTER", &db.cluster, "RDS-EVENT-0071")).await;
    let took = started.elapsed();
    assert_eq!(h.targets(&tg).await, set(&[db.reader.address]));
    assert!(took >= lag, "the run must have waited for DNS: {took:?}");
    assert!(took < lag + Duration::from_secs(10), "and not much longer: {took:?}");
    figure(format!("DNS {lag:?} behind the failover: new writer registered {:.1?} after the event", took));
}

#[tokio::test]
async fn an_instance_a_cluster_member_and_a_dns_name_are_followed_too() {
    let h = Harness::new().await;
    let db = h.seed_database().await;

    let solo = h.create(&h.following("solo")).await;
    assert_eq!(solo["Data"]["WriterInstance"], "solo");
    assert_eq!(solo["Data"]["TargetIps"], db.solo.address.to_string());
    assert_eq!(h.chain(&solo).await.target_group_port, i32::from(DB_PORT));

    // A member's identifier stands for its cluster: the reader named, the writer followed.
    let member = h.create(&h.following(&db.reader.id)).await;
    assert_eq!(member["Data"]["Database"], db.reader.id.as_str());
    assert_eq!(member["Data"]["WriterInstance"], db.writer.id.as_str());
    assert_eq!(member["Data"]["TargetIps"], db.writer.address.to_string());

    h.dns.set("writer.db.example.internal", &[db.writer.address]);
    // As a user may type it: DNS ignores case, and Data shows it as given.
    let mut by_name = h.following("Writer.DB.example.internal.");
    by_name["SubnetIds"] = json!(h.seed.subnets);
    let named = h.create(&by_name).await;
    assert_eq!(named["Data"]["Database"], "Writer.DB.example.internal.");
    assert_eq!(named["Data"]["WriterInstance"], "");
    assert_eq!(named["Data"]["TargetIps"], db.writer.address.to_string());
    assert_eq!(h.chain(&named).await.target_group_port, 3306, "no database to take the port from");

    // A DNS name is re-resolved by the sync like any other.
    h.dns.set("writer.db.example.internal", &[db.reader.address]);
    h.deliver(&h.scheduled_event()).await;
    let tg = named["Data"]["TargetGroupArn"].as_str().unwrap();
    assert_eq!(h.targets(tg).await, set(&[db.reader.address]));
}

#[tokio::test]
async fn changing_the_database_on_update_retargets_in_place() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let old = h.following(&db.cluster);
    let created = h.create(&old).await;
    let new = h.following("solo");
    let updated = h.send(&h.update_event(&id(&created), &old, &new)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(id(&updated), id(&created), "same subnets and port: in place");
    assert_eq!(updated["Data"]["WriterInstance"], "solo");
    let chain = h.chain(&updated).await;
    assert_eq!(chain.targets, [(db.solo.address.to_string(), i32::from(DB_PORT))].into());
    assert_eq!(chain.target_group_tags.get("reverse-privatelink:database").map(String::as_str), Some("solo"));

    // And to fixed addresses: the chain stops following.
    let mut fixed = new.clone();
    fixed.as_object_mut().unwrap().remove("Database");
    fixed["TargetIps"] = json!(["10.0.2.99"]);
    fixed["SubnetIds"] = json!(h.seed.subnets);
    fixed["Port"] = json!(DB_PORT.to_string());
    let updated = h.send(&h.update_event(&id(&created), &new, &fixed)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(id(&updated), id(&created));
    let chain = h.chain(&updated).await;
    assert!(!chain.target_group_tags.contains_key("reverse-privatelink:database"), "{:?}", chain.target_group_tags);
    assert_eq!(updated["Data"]["Database"], "");
}

#[tokio::test]
async fn bad_databases_fail_naming_the_property_and_create_nothing() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    h.dns.set("two.db.example.internal", &[db.writer.address, db.reader.address]);
    h.dns.set("public.db.example.internal", &["8.8.8.8".parse().unwrap()]);
    let with = |database: &str, extra: Value| {
        let mut props = h.following(database);
        for (k, v) in extra.as_object().unwrap() {
            props[k] = v.clone();
        }
        props
    };
    let subnets = json!({"SubnetIds": h.seed.subnets});
    let cases = [
        ("both", with("orders", json!({"TargetIps": ["10.0.1.25"]})), vec!["Database", "TargetIps"]),
        (
            "neither",
            json!({"AllowedPrincipals": [crate::support::harness::CONSUMER], "SubnetIds": h.seed.subnets}),
            vec!["Database", "TargetIps"],
        ),
        ("unknown identifier", h.following("nope"), vec!["Database:", "nope"]),
        (
            "a name that does not resolve",
            with("gone.db.example.internal", subnets.clone()),
            vec!["Database:", "NXDOMAIN"],
        ),
        (
            "a public address",
            with("public.db.example.internal", subnets.clone()),
            vec!["Database:", "8.8.8.8", "not a private address"],
        ),
        ("several addresses", with("two.db.example.internal", subnets.clone()), vec!["Database:", "2 addresses"]),
        ("a DNS name without subnets", h.following("two.db.example.internal"), vec!["SubnetIds: required"]),
        (
            "subnets of another VPC",
            with("orders", json!({"SubnetIds": [h.seed.other_vpc_subnet]})),
            vec!["SubnetIds:", "vpc-"],
        ),
        ("another port", with("orders", json!({"Port": "5432"})), vec!["Port: 5432", "3307"]),
        (
            "a VpcId the subnets are not in",
            with("orders", json!({"VpcId": "vpc-0123456789abcdef0"})),
            vec!["VpcId: vpc-0123456789abcdef0", &h.seed.vpc_id],
        ),
        (
            "no subnet in the writer's zone",
            with("orders", json!({"SubnetIds": &h.seed.subnets[1..]})),
            vec!["SubnetIds:", "us-east-1a"],
        ),
    ];
    for (what, props, expected) in cases {
        let answer = h.send(&h.create_event(&props)).await;
        assert_eq!(answer["Status"], "FAILED", "{what}: {answer}");
        let reason = answer["Reason"].as_str().unwrap();
        for part in expected {
            assert!(reason.contains(part), "{what}: {reason:?} should contain {part:?}");
        }
        assert!(h.inventory().await.is_empty(), "{what} left {:?}", h.inventory().await);
    }
}

#[tokio::test]
async fn a_sync_with_one_database_gone_still_follows_the_others() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let orders = h.create(&h.following(&db.cluster)).await;
    let mut other = h.create_event(&h.following("solo"));
    other["LogicalResourceId"] = json!("Second");
    let solo = h.send(&other).await;
    assert_eq!(solo["Status"], "SUCCESS", "{solo}");

    h.rds.delete_db_instance().db_instance_identifier("solo").skip_final_snapshot(true).send().await.unwrap();
    failover(&h, &db).await;
    h.deliver(&h.scheduled_event()).await;
    let tg = |answer: &Value| answer["Data"]["TargetGroupArn"].as_str().unwrap().to_string();
    assert_eq!(h.targets(&tg(&orders)).await, set(&[db.reader.address]));
    assert_eq!(h.targets(&tg(&solo)).await, set(&[db.solo.address]), "left as it was");
}

#[tokio::test]
async fn the_binary_serves_as_builder_and_follower_and_the_follower_logs_one_line_per_chain() {
    use crate::support::runtime::{Ended, Process, RuntimeApi};
    let h = Harness::new().await;
    let db = h.seed_database().await;
    // One zip, two functions, each with its own Runtime API, as the template deploys them.
    let (builder_api, follower_api) = (RuntimeApi::start().await, RuntimeApi::start().await);
    let mut env = h.binary_env(&h.moto.endpoint);
    env.push(("REVERSE_PRIVATELINK_STACK_ID".into(), h.stack_id.clone()));
    let builder = Process::start(&builder_api, env);
    let follower = Process::start(&follower_api, h.follower_env(&h.moto.endpoint));
    let create = h.create_event(&h.following(&db.cluster));
    h.as_cloudformation_would(&create).await;
    assert_eq!(
        builder_api.invoke(serde_json::to_vec(&create).unwrap(), Duration::from_secs(120)).await,
        Ended::Response("null".into())
    );
    let answer = h.answer_to(&create);
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let tg = answer["Data"]["TargetGroupArn"].as_str().unwrap().to_string();

    failover(&h, &db).await;
    let event = h.rds_event("CLUSTER", &db.cluster, "RDS-EVENT-0071");
    assert_eq!(
        follower_api.invoke(serde_json::to_vec(&event).unwrap(), Duration::from_secs(120)).await,
        Ended::Response("null".into())
    );
    assert_eq!(h.targets(&tg).await, set(&[db.reader.address]));
    // Not ours: ends quietly too.
    let mut foreign = h.scheduled_event();
    foreign["source"] = json!("aws.ec2");
    foreign["detail-type"] = json!("EC2 Instance State-change Notification");
    assert_eq!(
        follower_api.invoke(serde_json::to_vec(&foreign).unwrap(), Duration::from_secs(30)).await,
        Ended::Response("null".into())
    );
    assert_eq!(h.cloudformation.recorded().len(), 1, "a sync never answers CloudFormation");
    builder.stop().await;

    let logs = follower.stop().await;
    let lines = sync_lines(&logs);
    assert_eq!(lines.len(), 1, "one line per chain and run: {lines:?}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["action"], "retargeted");
    assert_eq!(fields["database"], "orders");
    assert_eq!(fields["old"], db.writer.address.to_string());
    assert_eq!(fields["new"], db.reader.address.to_string());
    assert!(fields["millis"].is_u64(), "{fields}");
}

#[tokio::test]
async fn a_writer_in_a_zone_the_load_balancer_lacks_is_said_on_every_run_while_it_lasts() {
    use crate::support::runtime::{Ended, Process, RuntimeApi};
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let mut props = h.following(&db.cluster);
    props["SubnetIds"] = json!(&h.seed.subnets[..2]);
    h.create(&props).await;
    // A reader added since in us-east-1c, where the load balancer has no subnet, becomes the writer.
    let third = h.cluster_member("orders-3", "us-east-1c", "10.0.3.50").await;
    let failover = h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster);
    failover.target_db_instance_identifier(&third.id).send().await.unwrap();

    let api = RuntimeApi::start().await;
    let follower = Process::start(&api, h.follower_env(&h.moto.endpoint));
    for _ in 0..3 {
        let run = api.invoke(serde_json::to_vec(&h.scheduled_event()).unwrap(), Duration::from_secs(120)).await;
        assert_eq!(run, Ended::Response("null".into()));
    }
    let logs = follower.stop().await;
    let lines = sync_lines(&logs);
    let actions: Vec<&str> = lines.iter().map(|l| l["fields"]["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["retargeted", "unchanged", "unchanged"], "{lines:?}");
    for line in &lines {
        // What the stack's metric filter counts, on every run: its alarm needs runs in a row.
        assert_eq!(line["fields"]["problem"], "zone-not-served", "{line}");
        assert!(line["fields"]["message"].as_str().unwrap().contains("us-east-1c"), "{line}");
    }
}
