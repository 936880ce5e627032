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
