//! The desired state: the resource properties, typed and checked before any AWS
//! call. CloudFormation sends every scalar as a string ("3306", "true").

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// What the user asked for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Prefix of the load balancer and target group names.
    pub name: String,
    pub subnet_ids: BTreeSet<String>,
    pub security_group_ids: BTreeSet<String>,
    pub target_ips: BTreeSet<Ipv4Addr>,
    pub port: u16,
    pub allowed_principals: BTreeSet<String>,
    pub acceptance_required: bool,
    pub cross_zone: bool,
    pub tags: BTreeMap<String, String>,
}

/// Room left in a 32-character AWS name for the generation suffix ("-" + 8 hex digits).
pub const MAX_NAME_LEN: usize = 32 - 1 - crate::chain::GENERATION_LEN;
/// Prefix of the tag keys this function keeps for itself.
pub const RESERVED_TAG_PREFIX: &str = "reverse-privatelink:";
/// ELB and EC2 allow 50 tags per resource; the function's own take the rest.
const MAX_USER_TAGS: usize = 45;
const MAX_SECURITY_GROUPS: usize = 5;
const MAX_TARGET_IPS: usize = 50;

const PROPERTIES: &[&str] = &[
    "SubnetIds",
    "SecurityGroupIds",
    "TargetIps",
    "Port",
    "AllowedPrincipals",
    "AcceptanceRequired",
    "CrossZoneLoadBalancing",
    "Name",
    "Tags",
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
        let spec = Spec {
            subnet_ids: noted(&mut errors, id_set(props, "SubnetIds", "subnet-", true)),
            security_group_ids: noted(&mut errors, id_set(props, "SecurityGroupIds", "sg-", false)),
            target_ips: noted(&mut errors, target_ips(props)),
            port: noted(&mut errors, port(props)),
            allowed_principals: noted(&mut errors, principals(props)),
            acceptance_required: noted(&mut errors, boolean(props, "AcceptanceRequired", false)),
            cross_zone: noted(&mut errors, boolean(props, "CrossZoneLoadBalancing", true)),
            name: noted(&mut errors, name(props, stack_id)),
            tags: noted(&mut errors, tags(props)),
        };
        Error::collect(errors)?;
        Ok(spec)
    }

    /// The user tag keys of earlier properties, read leniently: they only tell
    /// which tags an Update should remove.
    pub fn tag_keys(properties: &Value) -> BTreeSet<String> {
        properties
            .as_object()
            .and_then(|props| tags(props).ok())
            .map(|tags| tags.into_keys().collect())
            .unwrap_or_default()
    }
}

/// The value, or its default with the error added to `errors`.
fn noted<T: Default>(errors: &mut Vec<Error>, result: Result<T>) -> T {
    result.unwrap_or_else(|err| {
        errors.push(err);
        T::default()
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
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

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// A scalar CloudFormation sent as a string (or, from hand-written events, as a number or boolean).
fn scalar(props: &Map<String, Value>, property: &'static str) -> Result<Option<String>> {
    match props.get(property) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(Error::property(property, format!("expected a string, got {}", kind(other)))),
    }
}

/// A list of strings; a comma-separated string is accepted too, as a String
/// parameter passed with `Ref` arrives that way.
fn string_list(props: &Map<String, Value>, property: &'static str) -> Result<Vec<String>> {
    let items: Vec<String> = match props.get(property) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => s.split(',').map(|item| item.trim().to_string()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.trim().to_string()),
                other => {
                    Err(Error::property(property, format!("item {} is {}, expected a string", i + 1, kind(other))))
                }
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(Error::property(property, format!("expected a list of strings, got {}", kind(other))));
        }
    };
    if let Some(i) = items.iter().position(String::is_empty) {
        return Err(Error::property(property, format!("item {} is empty", i + 1)));
    }
    Ok(items)
}

/// Collects items into a set, refusing repeats (a repeat is usually a copy-paste slip).
fn unique<T: Ord + std::fmt::Display>(
    property: &'static str,
    items: impl IntoIterator<Item = T>,
) -> Result<BTreeSet<T>> {
    let mut set = BTreeSet::new();
    for item in items {
        if set.contains(&item) {
            return Err(Error::property(property, format!("{item} is listed twice")));
        }
        set.insert(item);
    }
    Ok(set)
}

fn id_set(
    props: &Map<String, Value>,
    property: &'static str,
    prefix: &str,
    required: bool,
) -> Result<BTreeSet<String>> {
    let ids = string_list(props, property)?;
    if required && ids.is_empty() {
        return Err(Error::property(property, "required: list at least one"));
    }
    for id in &ids {
        let hex = id.strip_prefix(prefix).unwrap_or_default();
        let well_formed =
            matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if !well_formed {
            return Err(Error::property(property, format!("{id:?} is not a {prefix}… ID")));
        }
    }
    if property == "SecurityGroupIds" && ids.len() > MAX_SECURITY_GROUPS {
        return Err(Error::property(
            property,
            format!("at most {MAX_SECURITY_GROUPS} security groups can be attached to a load balancer"),
        ));
    }
    unique(property, ids)
}

/// The ranges AWS accepts for IP targets besides the VPC's own: RFC 1918 and RFC 6598.
fn is_private(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private() || (a == 100 && (64..128).contains(&b))
}

fn target_ips(props: &Map<String, Value>) -> Result<BTreeSet<Ipv4Addr>> {
    const P: &str = "TargetIps";
    let items = string_list(props, P)?;
    if items.is_empty() {
        return Err(Error::property(P, "required: give the database writer's private IPv4 address"));
    }
    if items.len() > MAX_TARGET_IPS {
        return Err(Error::property(P, format!("at most {MAX_TARGET_IPS} addresses")));
    }
    let ips = items
        .iter()
        .map(|item| {
            let ip: Ipv4Addr = item.parse().map_err(|_| Error::property(P, format!("{item:?} is not an IPv4 address")))?;
            if !is_private(ip) {
                return Err(Error::property(
                    P,
                    format!("{ip} is not a private address; AWS accepts IP targets only in 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10"),
                ));
            }
            Ok(ip)
        })
        .collect::<Result<Vec<_>>>()?;
    unique(P, ips)
}

fn port(props: &Map<String, Value>) -> Result<u16> {
    const P: &str = "Port";
    match scalar(props, P)? {
        None => Ok(3306),
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(Error::property(P, format!("{text:?} is not a TCP port (1-65535)"))),
        },
    }
}

fn boolean(props: &Map<String, Value>, property: &'static str, default: bool) -> Result<bool> {
    match scalar(props, property)? {
        None => Ok(default),
        Some(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(text) => Err(Error::property(property, format!("{text:?} is not true or false"))),
    }
}

fn principals(props: &Map<String, Value>) -> Result<BTreeSet<String>> {
    const P: &str = "AllowedPrincipals";
    const EXAMPLE: &str = "arn:aws:iam::123456789012:root";
    let items = string_list(props, P)?;
    if items.is_empty() {
        return Err(Error::property(P, format!("required: list the consumer's IAM principal, e.g. {EXAMPLE}")));
    }
    for item in &items {
        if item.contains('*') {
            return Err(Error::property(
                P,
                format!(
                    "{item:?} is not allowed: a wildcard would let any AWS account connect to the database; name the consumer's principal, e.g. {EXAMPLE}"
                ),
            ));
        }
        if !is_principal_arn(item) {
            return Err(Error::property(P, format!("{item:?} is not an IAM principal ARN such as {EXAMPLE}")));
        }
    }
    unique(P, items)
}

/// `arn:<partition>:iam::<12-digit account>:root | user/… | role/…`
fn is_principal_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    let path_ok = |rest: &str| {
        !rest.is_empty()
            && !rest.ends_with('/')
            && rest.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
    };
    prefix == "arn"
        && (partition == "aws" || partition.starts_with("aws-"))
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && (resource == "root"
            || resource.strip_prefix("role/").is_some_and(path_ok)
            || resource.strip_prefix("user/").is_some_and(path_ok))
}

fn name(props: &Map<String, Value>, stack_id: &str) -> Result<String> {
    const P: &str = "Name";
    let Some(name) = scalar(props, P)?.filter(|n| !n.is_empty()) else {
        return Ok(default_name(stack_id));
    };
    if name.len() > MAX_NAME_LEN {
        return Err(Error::property(
            P,
            format!(
                "{name:?} is {} characters; at most {MAX_NAME_LEN}, as AWS allows 32 and the function adds a 9-character suffix",
                name.len()
            ),
        ));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::property(P, format!("{name:?} may contain only letters, digits and hyphens")));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(Error::property(P, format!("{name:?} must not begin or end with a hyphen")));
    }
    if name.to_ascii_lowercase().starts_with("internal-") {
        return Err(Error::property(P, format!("{name:?} must not begin with \"internal-\" (AWS reserves it)")));
    }
    Ok(name)
}

/// The stack's name, cut to what AWS names allow.
fn default_name(stack_id: &str) -> String {
    // arn:aws:cloudformation:<region>:<account>:stack/<name>/<guid>
    let stack_name = stack_id.split(":stack/").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or(stack_id);
    let mut name: String = stack_name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    if name.to_ascii_lowercase().starts_with("internal-") {
        name.drain(.."internal-".len());
    }
    name.truncate(MAX_NAME_LEN);
    let name = name.trim_matches('-');
    if name.is_empty() { "privatelink".to_string() } else { name.to_string() }
}

fn tags(props: &Map<String, Value>) -> Result<BTreeMap<String, String>> {
    const P: &str = "Tags";
    let pairs: Vec<(String, String)> = match props.get(P) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| tag_pair(item).map_err(|message| Error::property(P, format!("item {}: {message}", i + 1))))
            .collect::<Result<_>>()?,
        Some(Value::Object(map)) => map
            .iter()
            .map(|(key, value)| match value {
                Value::String(v) => Ok((key.clone(), v.clone())),
                other => Err(Error::property(P, format!("the value of {key:?} is {}, expected a string", kind(other)))),
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(Error::property(P, format!("expected a list of {{Key, Value}}, got {}", kind(other))));
        }
    };
    if pairs.len() > MAX_USER_TAGS {
        return Err(Error::property(
            P,
            format!("at most {MAX_USER_TAGS} tags (AWS allows 50 and the function keeps some)"),
        ));
    }
    let mut tags = BTreeMap::new();
    for (key, value) in pairs {
        check_tag(&key, &value).map_err(|message| Error::property(P, message))?;
        if tags.insert(key.clone(), value).is_some() {
            return Err(Error::property(P, format!("key {key:?} appears twice")));
        }
    }
    Ok(tags)
}

fn tag_pair(item: &Value) -> std::result::Result<(String, String), String> {
    let Some(object) = item.as_object() else {
        return Err(format!("expected {{\"Key\": …, \"Value\": …}}, got {}", kind(item)));
    };
    if let Some(extra) = object.keys().find(|k| *k != "Key" && *k != "Value") {
        return Err(format!("unexpected field {extra:?}; a tag has only Key and Value"));
    }
    match (object.get("Key"), object.get("Value")) {
        (Some(Value::String(key)), Some(Value::String(value))) => Ok((key.clone(), value.clone())),
        (Some(Value::String(key)), None) => Ok((key.clone(), String::new())),
        (Some(Value::String(_)), Some(other)) => Err(format!("Value is {}, expected a string", kind(other))),
        (None, _) => Err("Key is missing".to_string()),
        (Some(other), _) => Err(format!("Key is {}, expected a string", kind(other))),
    }
}

/// The rules ELB enforces (EC2's are looser), checked here so the chain is
/// refused before anything is created rather than halfway through.
fn check_tag(key: &str, value: &str) -> std::result::Result<(), String> {
    let allowed = |c: char| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c);
    if key.is_empty() || key.chars().count() > 128 {
        return Err(format!("key {key:?} must be 1 to 128 characters"));
    }
    if value.chars().count() > 256 {
        return Err(format!("the value of {key:?} is longer than 256 characters"));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!("key {key:?} uses the prefix \"aws:\", which AWS reserves"));
    }
    if key.starts_with(RESERVED_TAG_PREFIX) {
        return Err(format!(
            "key {key:?} uses the prefix {RESERVED_TAG_PREFIX:?}, which this function keeps for itself"
        ));
    }
    if let Some(bad) = key.chars().chain(value.chars()).find(|c| !allowed(*c)) {
        return Err(format!("{key:?}: the character {bad:?} is not allowed in load balancer tags"));
    }
    Ok(())
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
        assert_eq!(spec.port, 3306);
        assert!(!spec.acceptance_required);
        assert!(spec.cross_zone);
        assert_eq!(spec.name, "import-db");
        assert!(spec.security_group_ids.is_empty());
        assert!(spec.tags.is_empty());
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
        assert_eq!(spec.port, 5432);
        assert!(spec.acceptance_required);
        assert!(!spec.cross_zone);
        assert_eq!(spec.security_group_ids.len(), 2);
        assert_eq!(spec.tags["team"], "data");
    }

    #[test]
    fn each_bad_property_is_named() {
        let cases = [
            (with("Port", json!("0")), "Port:"),
            (with("Port", json!("70000")), "Port:"),
            (with("Port", json!("abc")), "Port:"),
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
            (with("TargetIps", json!(["10.0.1"])), "TargetIps:"),
            (with("TargetIps", json!(["8.8.8.8"])), "TargetIps: 8.8.8.8 is not a private address"),
            (with("TargetIps", json!(["fd00::1"])), "TargetIps:"),
            (with("TargetIps", json!([])), "TargetIps: required"),
            (with("Name", json!("a".repeat(MAX_NAME_LEN + 1))), "Name:"),
            (with("Name", json!("has_underscore")), "Name:"),
            (with("Name", json!("-lead")), "Name:"),
            (with("Name", json!("internal-db")), "Name:"),
            (
                with("Tags", json!([{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}])),
                "Tags: key \"a\" appears twice",
            ),
            (with("Tags", json!([{"Key": "aws:x", "Value": "1"}])), "Tags:"),
            (with("Tags", json!([{"Key": "reverse-privatelink:stack-id", "Value": "1"}])), "Tags:"),
            (with("Tags", json!([{"Value": "1"}])), "Tags: item 1: Key is missing"),
            (with("Tags", json!("team=data")), "Tags:"),
            (with("SubnetID", json!(["subnet-01234567"])), "unknown property \"SubnetID\" (did you mean SubnetIds?)"),
        ];
        for (props, expected) in cases {
            let err = error(props.clone());
            assert!(err.contains(expected), "{props}\n  gave: {err}\n  want: {expected}");
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let err = error(json!({"Port": "abc", "AllowedPrincipals": ["*"]}));
        for property in ["SubnetIds", "TargetIps", "Port", "AllowedPrincipals"] {
            assert!(err.contains(&format!("{property}:")), "{err}");
        }
        assert!(error(json!("nope")).starts_with("ResourceProperties:"));
    }

    #[test]
    fn private_ranges_include_rfc6598() {
        for ip in ["10.1.2.3", "172.31.0.1", "192.168.0.1", "100.64.0.1", "100.127.255.254"] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["100.128.0.1", "172.32.0.1", "11.0.0.1", "127.0.0.1", "169.254.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn principal_arns() {
        for ok in [
            "arn:aws:iam::123456789012:root",
            "arn:aws-cn:iam::123456789012:role/path/r",
            "arn:aws:iam::123456789012:user/u",
        ] {
            assert!(is_principal_arn(ok), "{ok}");
        }
        for bad in [
            "arn:aws:iam::12345678901:root",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:group/g",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert!(!is_principal_arn(bad), "{bad}");
        }
    }

    #[test]
    fn default_names_fit_aws_rules() {
        assert_eq!(default_name("arn:aws:cloudformation:us-east-1:1:stack/internal-x/guid"), "x");
        assert_eq!(
            default_name("arn:aws:cloudformation:us-east-1:1:stack/StackSet-abc-0123456789-abcdef-0123456789/guid")
                .len(),
            MAX_NAME_LEN
        );
        assert_eq!(default_name("arn:aws:cloudformation:us-east-1:1:stack/a-------------------------b/g"), "a");
        assert_eq!(default_name(""), "privatelink");
    }
}
