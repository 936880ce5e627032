//! Bad properties are refused with a reason naming the property, and leave nothing behind.

use serde_json::{Value, json};

use crate::support::harness::Harness;
use crate::support::moto::Moto;

fn with(props: &Value, key: &str, value: Value) -> Value {
    let mut props = props.clone();
    props[key] = value;
    props
}

fn without(props: &Value, key: &str) -> Value {
    let mut props = props.clone();
    props.as_object_mut().unwrap().remove(key);
    props
}

#[tokio::test]
async fn bad_properties_are_refused_naming_the_property_and_nothing_is_created() {
    let h = Harness::new().await;
    let p = h.properties();
    let s = h.seed.clone();
    let cases = [
        ("no subnets", without(&p, "SubnetIds"), "SubnetIds: required"),
        (
            "an unknown subnet",
            with(&p, "SubnetIds", json!([s.subnets[0], "subnet-0000000000000000f"])),
            "SubnetIds: subnet-0000000000000000f not found",
        ),
        (
            "subnets in two VPCs",
            with(&p, "SubnetIds", json!([s.subnets[0], s.other_vpc_subnet])),
            "all subnets must be in one VPC",
        ),
        (
            "two subnets in one zone",
            with(&p, "SubnetIds", json!([s.subnets[0], s.same_zone_subnet])),
            "both in us-east-1a",
        ),
        (
            "an unknown security group",
            with(&p, "SecurityGroupIds", json!(["sg-0000000000000000f"])),
            "SecurityGroupIds: sg-0000000000000000f not found",
        ),
        (
            "a security group of another VPC",
            with(&p, "SecurityGroupIds", json!([s.other_vpc_security_group])),
            "SecurityGroupIds:",
        ),
        ("a public target", with(&p, "TargetIps", json!(["8.8.8.8"])), "TargetIps: 8.8.8.8 is not a private address"),
        ("everyone allowed", with(&p, "AllowedPrincipals", json!(["*"])), "AllowedPrincipals: \"*\" is not allowed"),
        ("a port out of range", with(&p, "Port", json!("70000")), "Port:"),
        ("a yes for a boolean", with(&p, "AcceptanceRequired", json!("yes")), "AcceptanceRequired:"),
        ("a typo", with(&p, "TargetIp", json!(["10.0.1.25"])), "unknown property \"TargetIp\""),
        ("a tag twice", with(&p, "Tags", json!([{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}])), "Tags:"),
    ];
    for (what, props, expected) in cases {
        let answer = h.send(&h.create_event(&props)).await;
        assert_eq!(answer["Status"], "FAILED", "{what}: {answer}");
        let reason = answer["Reason"].as_str().unwrap();
        assert!(reason.contains(expected), "{what}: {reason:?} should contain {expected:?}");
        assert!(!answer["PhysicalResourceId"].as_str().unwrap().starts_with("vpce-svc-"));
        assert!(h.inventory().await.is_empty(), "{what} left {:?}", h.inventory().await);
    }
}

#[tokio::test]
async fn property_errors_are_found_before_any_aws_call() {
    let moto = Moto::start().await;
    // Every AWS call of this function would fail: nothing listens there.
    let h = Harness::reaching(moto, "http://127.0.0.1:9", None).await;
    let props = with(&h.properties(), "AllowedPrincipals", json!(["*"]));
    let answer = h.send(&h.create_event(&props)).await;
    assert_eq!(answer["Status"], "FAILED");
    assert!(answer["Reason"].as_str().unwrap().starts_with("AllowedPrincipals:"), "{answer}");
}

#[tokio::test]
async fn a_bad_update_leaves_the_chain_as_it_was() {
    let h = Harness::new().await;
    let props = h.properties();
    let created = h.create(&props).await;
    let before = h.chain(&created).await;
    let id = created["PhysicalResourceId"].as_str().unwrap();
    for bad in [
        with(&props, "TargetIps", json!(["not-an-ip"])),
        with(&props, "SubnetIds", json!([h.seed.subnets[0], h.seed.other_vpc_subnet])),
    ] {
        let answer = h.send(&h.update_event(id, &props, &bad)).await;
        assert_eq!(answer["Status"], "FAILED", "{answer}");
        assert_eq!(answer["PhysicalResourceId"], id, "a failed update keeps the ID");
        assert_eq!(h.chain(&created).await, before);
    }
    assert_eq!(h.inventory().await.load_balancers.len(), 1);
}
