//! `Tags`: the user's tags, put on every resource of the chain.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::read::{Properties, kind};
use crate::error::{Error, Result};

/// Prefix of the tag keys this function keeps for itself.
pub const RESERVED_TAG_PREFIX: &str = "reverse-privatelink:";
/// ELB and EC2 allow 50 tags per resource; the function's own take the rest.
const MAX_USER_TAGS: usize = 45;

pub fn tags(props: &Properties) -> Result<BTreeMap<String, String>> {
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

/// The user tag keys of earlier properties, read leniently: they only tell
/// which tags an Update should remove.
pub fn tag_keys(properties: &Value) -> BTreeSet<String> {
    properties.as_object().and_then(|props| tags(props).ok()).map(|tags| tags.into_keys().collect()).unwrap_or_default()
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
    if let Some(bad) = key.chars().chain(value.chars()).find(|c| !is_tag_char(*c)) {
        return Err(format!("{key:?}: the character {bad:?} is not allowed in load balancer tags"));
    }
    Ok(())
}

/// Characters ELB accepts in tag keys and values.
pub fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: Value) -> Result<BTreeMap<String, String>> {
        tags(json!({"Tags": value}).as_object().unwrap())
    }

    #[test]
    fn tags_follow_elb_rules() {
        assert_eq!(read(json!([{"Key": "team", "Value": "data"}])).unwrap()["team"], "data");
        assert_eq!(read(json!({"team": "data"})).unwrap()["team"], "data");
        for (bad, expected) in [
            (json!([{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]), "Tags: key \"a\" appears twice"),
            (json!([{"Key": "aws:x", "Value": "1"}]), "Tags: key \"aws:x\""),
            (json!([{"Key": "reverse-privatelink:stack-id", "Value": "1"}]), "keeps for itself"),
            (json!([{"Value": "1"}]), "Tags: item 1: Key is missing"),
            (json!("team=data"), "Tags: expected a list"),
            (json!([{"Key": "a", "Value": "x".repeat(300)}]), "longer than 256"),
            (json!([{"Key": "a", "Value": "semi;colon"}]), "the character ';'"),
        ] {
            let err = read(bad.clone()).unwrap_err().to_string();
            assert!(err.contains(expected), "{bad}: {err}");
        }
    }
}
