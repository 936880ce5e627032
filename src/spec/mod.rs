//! The desired state: the resource properties, typed and checked before any AWS
//! call. CloudFormation sends every scalar as a string ("3306", "true").
//! One file per topic, each with its own tests.

mod event_bus;
mod name;
mod network;
mod principals;
mod read;
mod regions;
mod tags;
mod target;
mod traffic;
mod zones;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::error::{Error, Result};
use read::{boolean, edit_distance, kind, noted};

pub use event_bus::{EventBus, report_to};
pub use name::{GENERATION_LEN, MAX_NAME_LEN, stack_name};
pub use regions::{own_account, own_partition, own_region};
pub use tags::{RESERVED_TAG_PREFIX, is_tag_char, tag_keys};
pub use target::{Database, PRIVATE_RANGES, Target, is_private};
pub use zones::CONSUMER_ZONES;

/// What the user asked for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Prefix of the load balancer and target group names.
    pub name: String,
    /// When given, the VPC the subnets must be in.
    pub vpc_id: Option<String>,
    /// Empty when they are to be derived from the database's subnet group.
    pub subnet_ids: BTreeSet<String>,
    pub security_group_ids: BTreeSet<String>,
    pub target: Target,
    /// None: the database's port, or 3306.
    pub port: Option<u16>,
    pub allowed_principals: BTreeSet<String>,
    pub acceptance_required: bool,
    pub cross_zone: bool,
    pub tags: BTreeMap<String, String>,
    /// `EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic` is "on".
    pub enforce_inbound_on_private_link: bool,
    pub allow_database_ingress: bool,
    pub wait_for_healthy_target: bool,
    /// Regions besides the stack's where consumers may create endpoints.
    pub supported_regions: BTreeSet<String>,
    /// Zone IDs the consumer's endpoint uses: the load balancer must serve each.
    pub consumer_zone_ids: BTreeSet<String>,
    /// Sources in the network (CIDR blocks, `sg-…`) the load balancer's own group admits.
    pub load_balancer_clients: BTreeSet<String>,
    /// The listener's idle timeout for TCP flows; None: AWS's default, 350 s.
    pub idle_timeout_seconds: Option<u16>,
    /// Where every answer and target move is reported, for the fleet's platform team.
    pub report_to: Option<EventBus>,
}

/// The port when neither the properties nor a database say otherwise (MySQL's).
pub const DEFAULT_PORT: u16 = 3306;

const PROPERTIES: &[&str] = &[
    "Database",
    "TargetIps",
    "VpcId",
    "SubnetIds",
    "SecurityGroupIds",
    "Port",
    "AllowedPrincipals",
    "AcceptanceRequired",
    "CrossZoneLoadBalancing",
    "Name",
    "Tags",
    "EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic",
    "AllowDatabaseIngress",
    "WaitForHealthyTarget",
    "SupportedRegions",
    "ConsumerAvailabilityZoneIds",
    "LoadBalancerClients",
    "IdleTimeoutSeconds",
    "ReportToEventBus",
];
/// CloudFormation's own, sent inside `ResourceProperties`.
const CLOUDFORMATION_PROPERTIES: &[&str] = &["ServiceToken", "ServiceTimeout"];

impl Spec {
    /// Reads `ResourceProperties`; `stack_id` supplies the default `Name`.
    /// Reports every problem found, each naming its property.
    pub fn from_properties(properties: &Value, stack_id: &str) -> Result<Spec> {
        let Some(props) = properties.as_object() else {
            return Err(Error::property("ResourceProperties", format!("expected an object, got {}", kind(properties))));
        };
        let mut errors = Vec::new();
        for key in props.keys() {
            if !PROPERTIES.contains(&key.as_str()) && !CLOUDFORMATION_PROPERTIES.contains(&key.as_str()) {
                errors.push(unknown_property(key));
            }
        }
        // A field that fails reads as its default; the errors decide the outcome.
        let target = target::target(props);
        // Subnets are derived only from an RDS identifier; a target that cannot be read has its own error.
        let subnets_needed = matches!(&target, Ok(Target::Ips(_) | Target::Database(Database::DnsName(_))));
        // Checked against the target only when that could be read, so one mistake gives one error.
        let allow_database_ingress = match &target {
            Ok(target) => traffic::allow_database_ingress(props, target),
            Err(_) => boolean(props, "AllowDatabaseIngress", false),
        };
        let target = noted(&mut errors, target);
        let spec = Spec {
            allow_database_ingress: noted(&mut errors, allow_database_ingress),
            target,
            vpc_id: noted(&mut errors, network::vpc_id(props)),
            subnet_ids: noted(&mut errors, network::id_set(props, "SubnetIds", "subnet-")),
            security_group_ids: noted(&mut errors, network::security_groups(props)),
            port: noted(&mut errors, network::port(props)),
            allowed_principals: noted(&mut errors, principals::principals(props)),
            acceptance_required: noted(&mut errors, boolean(props, "AcceptanceRequired", false)),
            cross_zone: noted(&mut errors, boolean(props, "CrossZoneLoadBalancing", true)),
            name: noted(&mut errors, name::name(props, stack_id)),
            tags: noted(&mut errors, tags::tags(props)),
            enforce_inbound_on_private_link: noted(&mut errors, traffic::enforce_inbound_on_private_link(props)),
            wait_for_healthy_target: noted(&mut errors, traffic::wait_for_healthy_target(props)),
            supported_regions: noted(&mut errors, regions::supported_regions(props, stack_id)),
            consumer_zone_ids: noted(&mut errors, zones::consumer_zone_ids(props)),
            load_balancer_clients: noted(&mut errors, traffic::load_balancer_clients(props)),
            idle_timeout_seconds: noted(&mut errors, traffic::idle_timeout(props)),
            report_to: noted(&mut errors, event_bus::report_to(props, stack_id)),
        };
        let own_group = spec.security_group_ids.is_empty();
        let clients = &spec.load_balancer_clients;
        if let Err(error) = traffic::check_enforcement(spec.enforce_inbound_on_private_link, own_group, clients) {
            errors.push(error);
        }
        let subnets_read = !errors.iter().any(|e| matches!(e, Error::Property { property: "SubnetIds", .. }));
        if spec.subnet_ids.is_empty() && subnets_needed && subnets_read {
            errors.push(Error::property(
                "SubnetIds",
                "required: list at least one (they are derived only when Database names an RDS cluster or instance)",
            ));
        }
        Error::collect(errors)?;
        Ok(spec)
    }

    /// The database the chain follows, if any.
    pub fn database(&self) -> Option<&Database> {
        match &self.target {
            Target::Database(database) => Some(database),
            Target::Ips(_) => None,
        }
    }
}

/// Whether `property` reads the same in two sets of properties (an Update's old
/// and new): lists compare as sets, and case is ignored (RDS identifiers, DNS
/// names and AWS IDs are all case-insensitive or lower case).
pub fn same_value(old: &Value, new: &Value, property: &'static str) -> bool {
    let read = |properties: &Value| -> Option<BTreeSet<String>> {
        let props = properties.as_object()?;
        let items = read::string_list(props, property).ok()?;
        Some(items.into_iter().map(|item| item.to_ascii_lowercase()).collect())
    };
    match (read(old), read(new)) {
        (Some(old), Some(new)) => old == new,
        _ => old.get(property) == new.get(property),
    }
}

fn unknown_property(key: &str) -> Error {
    let suggestion = PROPERTIES
        .iter()
        .map(|known| (edit_distance(&key.to_ascii_lowercase(), &known.to_ascii_lowercase()), known))
        .min()
        .filter(|(distance, _)| *distance <= 3)
        .map(|(_, known)| format!(" (did you mean {known}?)"))
        .unwrap_or_default();
    Error::Property {
        property: "ResourceProperties",
        message: format!("unknown property {key:?}{suggestion}; known properties are {}", PROPERTIES.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STACK: &str =
        "arn:aws:cloudformation:us-east-1:123456789012:stack/import-db/6b6f2b10-0000-0000-0000-000000000000";

    fn valid() -> Value {
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
            "ServiceTimeout": "900",
            "SubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
            "TargetIps": ["10.0.1.25"],
            "AllowedPrincipals": ["arn:aws:iam::123456789012:root"],
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut props = valid();
        props[key] = value;
        props
    }

    fn error(props: Value) -> String {
        Spec::from_properties(&props, STACK).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_the_contract() {
        let spec = Spec::from_properties(&valid(), STACK).unwrap();
        assert_eq!(spec.port, None);
        assert!(!spec.acceptance_required);
        assert!(spec.cross_zone);
        assert_eq!(spec.name, "import-db");
        assert!(spec.security_group_ids.is_empty());
        assert!(spec.tags.is_empty());
        assert_eq!(spec.database(), None);
        assert!(!spec.enforce_inbound_on_private_link && !spec.allow_database_ingress && !spec.wait_for_healthy_target);
        assert!(spec.supported_regions.is_empty() && spec.consumer_zone_ids.is_empty());
    }

    #[test]
    fn strings_are_typed() {
        let mut props = valid();
        props["Port"] = json!("5432");
        props["AcceptanceRequired"] = json!("True");
        props["CrossZoneLoadBalancing"] = json!("false");
        props["SecurityGroupIds"] = json!("sg-0123456789abcdef0, sg-01234567");
        props["Tags"] = json!([{"Key": "team", "Value": "data"}]);
        let spec = Spec::from_properties(&props, STACK).unwrap();
        assert_eq!(spec.port, Some(5432));
        assert!(spec.acceptance_required);
        assert!(!spec.cross_zone);
        assert_eq!(spec.security_group_ids.len(), 2);
        assert_eq!(spec.tags["team"], "data");
    }

    #[test]
    fn a_database_identifier_makes_subnets_and_port_optional() {
        let props = json!({"Database": "orders", "AllowedPrincipals": ["arn:aws:iam::123456789012:root"]});
        let spec = Spec::from_properties(&props, STACK).unwrap();
        assert_eq!(spec.database(), Some(&Database::Identifier("orders".into())));
        assert!(spec.subnet_ids.is_empty() && spec.port.is_none());
        assert!(spec.allow_database_ingress, "on by default for an RDS database");
        let by_name =
            json!({"Database": "db.example.internal", "AllowedPrincipals": ["arn:aws:iam::123456789012:root"]});
        assert!(error(by_name).starts_with("SubnetIds: required"));
    }

    #[test]
    fn a_target_that_cannot_be_read_gives_its_own_error_only() {
        let principals = json!(["arn:aws:iam::123456789012:root"]);
        for (props, expected) in [
            (
                json!({"Database": "orders", "TargetIps": ["10.0.1.25"], "AllowDatabaseIngress": "true"}),
                "Database and TargetIps: both are given; give exactly one",
            ),
            (json!({}), "Database and TargetIps: neither is given; give exactly one"),
            (
                json!({"Database": "10.0.1.25"}),
                "Database: 10.0.1.25 is an IP address; give fixed addresses as TargetIps",
            ),
        ] {
            let mut props = props;
            props["AllowedPrincipals"] = principals.clone();
            let err = error(props.clone());
            assert!(
                err.starts_with(expected) && !err.contains("; SubnetIds") && !err.contains("AllowDatabaseIngress:"),
                "{props}: {err}"
            );
        }
    }

    #[test]
    fn each_bad_property_is_named() {
        let cases = [
            (with("Port", json!("0")), "Port:"),
            (with("AllowedPrincipals", json!(["*"])), "AllowedPrincipals: \"*\" is not allowed"),
            (with("AllowedPrincipals", json!(["arn:aws:iam::*:root"])), "AllowedPrincipals:"),
            (with("AllowedPrincipals", json!(["123456789012"])), "AllowedPrincipals:"),
            (with("AllowedPrincipals", json!([])), "AllowedPrincipals: required"),
            (with("AcceptanceRequired", json!("yes")), "AcceptanceRequired:"),
            (with("CrossZoneLoadBalancing", json!(["true"])), "CrossZoneLoadBalancing:"),
            (with("SubnetIds", json!([])), "SubnetIds: required"),
            (with("SubnetIds", json!(["subnet-xyz"])), "SubnetIds:"),
            (
                with("SubnetIds", json!(["subnet-01234567", "subnet-01234567"])),
                "SubnetIds: subnet-01234567 is listed twice",
            ),
            (with("SecurityGroupIds", json!(["vpc-01234567"])), "SecurityGroupIds:"),
            (with("VpcId", json!("subnet-01234567")), "VpcId:"),
            (with("TargetIps", json!(["8.8.8.8"])), "TargetIps: 8.8.8.8 is not a private address"),
            (with("Database", json!("orders")), "Database and TargetIps: both are given"),
            (with("Name", json!("a".repeat(MAX_NAME_LEN + 1))), "Name:"),
            (with("Name", json!("has_underscore")), "Name:"),
            (with("Name", json!("-lead")), "Name:"),
            (with("Name", json!("internal-db")), "Name:"),
            (with("Tags", json!([{"Key": "aws:x", "Value": "1"}])), "Tags:"),
            (
                with("EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic", json!("yes")),
                "EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic:",
            ),
            (with("AllowDatabaseIngress", json!("true")), "AllowDatabaseIngress: true needs"),
            (with("WaitForHealthyTarget", json!("soon")), "WaitForHealthyTarget:"),
            (with("SupportedRegions", json!(["us-east-1"])), "SupportedRegions: us-east-1 is the stack's own region"),
            (with("ConsumerAvailabilityZoneIds", json!(["us-east-1a"])), "ConsumerAvailabilityZoneIds: \"us-east-1a\""),
            (with("SubnetID", json!(["subnet-01234567"])), "unknown property \"SubnetID\" (did you mean SubnetIds?)"),
        ];
        for (props, expected) in cases {
            let err = error(props.clone());
            assert!(err.contains(expected), "{props}\n  gave: {err}\n  want: {expected}");
        }
    }

    #[test]
    fn same_value_ignores_list_order_form_and_case() {
        let old = json!({"Database": "Orders", "SubnetIds": ["subnet-0b", "subnet-0a"]});
        assert!(same_value(&old, &json!({"Database": "orders", "SubnetIds": "subnet-0a, subnet-0b"}), "SubnetIds"));
        assert!(same_value(&old, &json!({"Database": "orders"}), "Database"));
        assert!(!same_value(&old, &json!({"Database": "solo"}), "Database"));
        assert!(!same_value(&old, &json!({"SubnetIds": ["subnet-0a"]}), "SubnetIds"));
        assert!(!same_value(&old, &json!({}), "SubnetIds"), "removed is a change");
        assert!(same_value(&json!({}), &json!({"SubnetIds": []}), "SubnetIds"));
    }

    #[test]
    fn all_problems_are_reported_together() {
        let err = error(
            json!({"TargetIps": ["10.0.1.25"], "Port": "abc", "AllowedPrincipals": ["*"], "AcceptanceRequired": 1}),
        );
        for property in ["SubnetIds", "Port", "AllowedPrincipals", "AcceptanceRequired"] {
            assert!(err.contains(property), "{err}");
        }
        assert!(error(json!("nope")).starts_with("ResourceProperties:"));
    }
}
