//! What only a real account shows, modelled as AWS documents it: group names AWS refuses,
//! RDS events in the form AWS publishes them.

use serde_json::{Value, json};

use crate::support::harness::{CONSUMER, Harness, SECOND_CONSUMER};
use crate::support::proxy::Fault;
use reverse_privatelink::chain::DATABASE_TAG;

#[tokio::test]
async fn a_name_starting_with_sg_still_gives_the_own_group_a_name_aws_accepts() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let mut props = h.following(&db.cluster);
    // AWS refuses group names that start with "sg-" (the emulator does as AWS does).
    props["Name"] = json!("sg-import");
    let answer = h.create(&props).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let own = answer["Data"]["SecurityGroupIds"].as_str().unwrap().to_string();
    let groups = h.ec2.describe_security_groups().group_ids(&own).send().await.unwrap().security_groups.unwrap();
    let name = groups[0].group_name.clone().unwrap();
    assert!(name.starts_with("lb-sg-import-"), "{name}");
    let lb = h.chain(&answer).await.load_balancer_name;
    assert!(lb.starts_with("sg-import-"), "the load balancer keeps the name: {lb}");
}

#[tokio::test]
async fn a_database_typed_in_capitals_is_tagged_and_followed_as_rds_stores_it() {
    let h = Harness::new().await;
    let db = h.seed_database().await;
    let answer = h.create(&h.following(&db.cluster.to_uppercase())).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let chain = h.chain(&answer).await;
    assert_eq!(chain.target_group_tags.get(DATABASE_TAG), Some(&db.cluster), "the identifier RDS answered with");
    h.rds.failover_db_cluster().db_cluster_identifier(&db.cluster).send().await.unwrap();
    h.deliver(&h.rds_event("CLUSTER", &db.cluster, "RDS-EVENT-0071")).await;
    assert_eq!(h.targets(&chain.target_group_arn).await, [db.reader.address.to_string()].into());
}

async fn idle_timeout(h: &Harness, listener_arn: &str) -> String {
    let attributes = h.elb.describe_listener_attributes().listener_arn(listener_arn).send().await.unwrap();
    let attribute = attributes.attributes().iter().find(|a| a.key() == Some("tcp.idle_timeout.seconds")).cloned();
    attribute.and_then(|a| a.value).unwrap_or_default()
}

#[tokio::test]
async fn the_idle_timeout_is_set_changed_in_place_and_put_back() {
    let h = Harness::new().await;
    let mut props = h.properties();
    props["IdleTimeoutSeconds"] = json!("1200");
    let created = h.create(&props).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let service = created["PhysicalResourceId"].as_str().unwrap().to_string();
    let listener = created["Data"]["ListenerArn"].as_str().unwrap().to_string();
    assert_eq!(idle_timeout(&h, &listener).await, "1200");

    let mut shorter = props.clone();
    shorter["IdleTimeoutSeconds"] = json!("900");
    let updated = h.send(&h.update_event(&service, &props, &shorter)).await;
    assert_eq!(
        (updated["Status"].as_str(), updated["PhysicalResourceId"].as_str()),
        (Some("SUCCESS"), Some(service.as_str()))
    );
    assert_eq!(idle_timeout(&h, &listener).await, "900");

    let updated = h.send(&h.update_event(&service, &shorter, &h.properties())).await;
    assert_eq!(
        (updated["Status"].as_str(), updated["PhysicalResourceId"].as_str()),
        (Some("SUCCESS"), Some(service.as_str()))
    );
    assert_eq!(idle_timeout(&h, &listener).await, "350", "AWS's default again");
}

#[tokio::test]
async fn an_idle_timeout_outside_what_aws_allows_is_refused_naming_it() {
    let h = Harness::new().await;
    for bad in ["59", "6001", "an hour"] {
        let mut props = h.properties();
        props["IdleTimeoutSeconds"] = json!(bad);
        let answer = h.send(&h.create_event(&props)).await;
        assert_eq!(answer["Status"], "FAILED", "{answer}");
        assert!(answer["Reason"].as_str().unwrap().starts_with("IdleTimeoutSeconds: "), "{answer}");
    }
    assert!(h.inventory().await.is_empty(), "nothing created");
}

/// us-east-1c (the seed's third subnet) refuses load balancers, as a constrained zone does.
fn constrained(h: &Harness) -> Fault {
    Fault::RefuseIfBodyHas {
        needle: h.seed.subnets[2].clone(),
        code: "ValidationError",
        message: "The following Availability Zones us-east-1c cannot be associated with a load balancer. Please try a different Availability Zone.".into(),
    }
}

#[tokio::test]
async fn a_zone_aws_refuses_is_left_out_remembered_and_not_tried_again() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    proxy.inject("CreateLoadBalancer", constrained(&h), None);
    proxy.inject("SetSubnets", constrained(&h), None);
    let props = h.following(&db.cluster);
    let created = h.create(&props).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    assert_eq!(created["Data"]["AvailabilityZones"], "us-east-1a,us-east-1b", "only the zones served");
    let refused_zone = h.seed.zone_ids[2].clone();
    assert!(!created["Data"]["AvailabilityZoneIds"].as_str().unwrap().contains(&refused_zone), "{created}");
    let chain = h.chain(&created).await;
    assert_eq!(chain.subnets, h.seed.subnets[..2].iter().cloned().collect());
    assert_eq!(chain.load_balancer_tags.get("reverse-privatelink:refused-zones"), Some(&refused_zone));

    // A later Update does not try the zone again.
    let service = created["PhysicalResourceId"].as_str().unwrap().to_string();
    let mut more = props.clone();
    more["AllowedPrincipals"] = json!([CONSUMER, SECOND_CONSUMER]);
    let before = proxy.actions().len();
    let updated = h.send(&h.update_event(&service, &props, &more)).await;
    assert_eq!(
        (updated["Status"].as_str(), updated["PhysicalResourceId"].as_str()),
        (Some("SUCCESS"), Some(service.as_str()))
    );
    let tried: Vec<String> = proxy.actions()[before..].iter().filter(|a| a.as_str() == "SetSubnets").cloned().collect();
    assert!(tried.is_empty(), "{tried:?}");
    assert_eq!(updated["Data"]["AvailabilityZones"], "us-east-1a,us-east-1b");
}

#[tokio::test]
async fn a_refused_zone_the_consumer_needs_fails_naming_it_and_leaves_nothing() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    proxy.inject("CreateLoadBalancer", constrained(&h), None);
    let mut props = h.following(&db.cluster);
    props["ConsumerAvailabilityZoneIds"] = json!([h.seed.zone_ids[2]]);
    let answer = h.send(&h.create_event(&props)).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    let named =
        format!("ConsumerAvailabilityZoneIds: AWS refuses load balancers in us-east-1c ({})", h.seed.zone_ids[2]);
    assert!(reason.starts_with(&named), "{reason}");
    let left = h.inventory().await;
    assert!(left.is_empty(), "nothing left: {left:?}");

    // Given subnets are the user's: a refused one fails too, naming it.
    let mut given = h.properties();
    given["SecurityGroupIds"] = json!([]);
    let answer = h.send(&h.create_event(&given)).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(reason.starts_with("SubnetIds: AWS refuses load balancers in us-east-1c"), "{reason}");
    assert!(reason.contains(&h.seed.subnets[2]), "{reason}");
    assert!(h.inventory().await.is_empty(), "nothing left");
}

#[tokio::test]
async fn derived_subnets_leave_out_local_zones() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let db = h.seed_database().await;
    // As AWS lists a Local Zone the account opted into.
    proxy.inject(
        "DescribeAvailabilityZones",
        Fault::rewrite(|body| {
            let items: Vec<String> = body
                .split("<item>")
                .map(|item| match item.contains("<zoneName>us-east-1c</zoneName>") {
                    true => item.replace("<zoneType>availability-zone</zoneType>", "<zoneType>local-zone</zoneType>"),
                    false => item.to_string(),
                })
                .collect();
            items.join("<item>")
        }),
        None,
    );
    let created = h.create(&h.following(&db.cluster)).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    assert_eq!(created["Data"]["AvailabilityZones"], "us-east-1a,us-east-1b");
    let tried = proxy.requests("CreateLoadBalancer");
    assert!(tried.iter().all(|body| !body.contains(&h.seed.subnets[2])), "{tried:?}");
}

/// A given-subnets chain (own group), created; and the properties without its third subnet.
async fn chain_losing_a_zone(h: &Harness) -> (Value, Value, Value) {
    let mut props = h.properties();
    props["SecurityGroupIds"] = json!([]);
    let created = h.create(&props).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let mut fewer = props.clone();
    fewer["SubnetIds"] = json!(h.seed.subnets[..2]);
    (created, props, fewer)
}

#[tokio::test]
async fn a_zone_removed_while_no_endpoint_is_connected_is_removed_in_place() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let (created, props, fewer) = chain_losing_a_zone(&h).await;
    let service = created["PhysicalResourceId"].as_str().unwrap().to_string();
    let updated = h.send(&h.update_event(&service, &props, &fewer)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(updated["PhysicalResourceId"], service.as_str(), "the consumer keeps the service name");
    assert_eq!(updated["Data"]["AvailabilityZones"], "us-east-1a,us-east-1b");
    assert_eq!(h.chain(&updated).await.subnets, h.seed.subnets[..2].iter().cloned().collect());
    assert_eq!(proxy.requests("SetSubnets").len(), 1);
}

#[tokio::test]
async fn a_zone_removed_while_an_endpoint_is_connected_gets_a_new_chain() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let (created, props, fewer) = chain_losing_a_zone(&h).await;
    let service = created["PhysicalResourceId"].as_str().unwrap().to_string();
    // A consumer's endpoint is connected (moto has no connections; AWS lists them so).
    let connected = format!(
        "<vpcEndpointConnectionSet><item><serviceId>{service}</serviceId><vpcEndpointId>vpce-0aaaaaaaaaaaaaaaa</vpcEndpointId><vpcEndpointState>available</vpcEndpointState></item></vpcEndpointConnectionSet>"
    );
    proxy.inject(
        "DescribeVpcEndpointConnections",
        Fault::rewrite(move |body| body.replace("<vpcEndpointConnectionSet/>", &connected)),
        None,
    );
    let updated = h.send(&h.update_event(&service, &props, &fewer)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_ne!(updated["PhysicalResourceId"], service.as_str(), "a new chain, as AWS keeps the subnet");
    assert!(proxy.requests("SetSubnets").is_empty(), "the connected chain is not touched");
}

#[tokio::test]
async fn a_zone_removal_aws_refuses_gets_a_new_chain() {
    let (h, proxy) = Harness::behind_proxy(None).await;
    let (created, props, fewer) = chain_losing_a_zone(&h).await;
    let service = created["PhysicalResourceId"].as_str().unwrap().to_string();
    let refusal = Fault::RefuseIfBodyHas {
        needle: "Action=SetSubnets".into(),
        code: "InvalidConfigurationRequest",
        message: "Subnets cannot be removed from a load balancer with active VPC endpoint associations".into(),
    };
    proxy.inject("SetSubnets", refusal, None);
    let updated = h.send(&h.update_event(&service, &props, &fewer)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    let replaced = updated["PhysicalResourceId"].as_str().unwrap().to_string();
    assert_ne!(replaced, service, "a new chain after AWS refused");
    assert_eq!(h.chain(&updated).await.subnets, h.seed.subnets[..2].iter().cloned().collect());
    // CloudFormation's clean-up Delete of the old chain leaves only the new one.
    assert_eq!(h.send(&h.delete_event(&service, &props)).await["Status"], "SUCCESS");
    assert_eq!(h.inventory().await.services, [replaced].into());
}

/// The own group's outbound TCP rules to single addresses.
async fn egress_to_addresses(h: &Harness, answer: &Value) -> std::collections::BTreeSet<String> {
    let group = answer["Data"]["SecurityGroupIds"].as_str().unwrap().to_string();
    h.rules(&group)
        .await
        .into_iter()
        .filter(|r| r.egress)
        .filter_map(|r| r.cidr)
        .filter(|c| c.ends_with("/32"))
        .collect()
}

#[tokio::test]
async fn a_target_outside_the_vpc_gets_its_own_way_out_kept_in_step() {
    let h = Harness::new().await;
    let mut props = h.properties();
    props["SecurityGroupIds"] = json!([]);
    // A peered VPC's or an on-premises database: private, outside the VPC's 10.0.0.0/16.
    props["TargetIps"] = json!(["192.168.5.10"]);
    let created = h.create(&props).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    assert_eq!(egress_to_addresses(&h, &created).await, ["192.168.5.10/32".to_string()].into());
    let service = created["PhysicalResourceId"].as_str().unwrap().to_string();

    let mut moved = props.clone();
    moved["TargetIps"] = json!(["192.168.5.20"]);
    let updated = h.send(&h.update_event(&service, &props, &moved)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(egress_to_addresses(&h, &updated).await, ["192.168.5.20/32".to_string()].into());

    let inside = h.properties();
    let mut inside_own = inside.clone();
    inside_own["SecurityGroupIds"] = json!([]);
    let updated = h.send(&h.update_event(&service, &moved, &inside_own)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert!(egress_to_addresses(&h, &updated).await.is_empty(), "inside the VPC, the VPC's blocks suffice");
}
