//! What only a real account shows, modelled as AWS documents it: group names AWS refuses,
//! RDS events in the form AWS publishes them.

use serde_json::json;

use crate::support::harness::Harness;
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
