//! Generic readers for CloudFormation's properties, where every scalar arrives as a string.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub type Properties = Map<String, Value>;

/// The value, or its default with the error added to `errors`.
pub fn noted<T: Default>(errors: &mut Vec<Error>, result: Result<T>) -> T {
    result.unwrap_or_else(|err| {
        errors.push(err);
        T::default()
    })
}

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A scalar CloudFormation sent as a string (or, from hand-written events, as a number or boolean).
pub fn scalar(props: &Properties, property: &'static str) -> Result<Option<String>> {
    match props.get(property) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(Error::property(property, format!("expected a string, got {}", kind(other)))),
    }
}

/// A list of strings; a comma-separated string is accepted too, as a String
/// parameter passed with `Ref` arrives that way.
pub fn string_list(props: &Properties, property: &'static str) -> Result<Vec<String>> {
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
pub fn unique<T: Ord + std::fmt::Display>(
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

pub fn boolean(props: &Properties, property: &'static str, default: bool) -> Result<bool> {
    match scalar(props, property)? {
        None => Ok(default),
        Some(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(text) => Err(Error::property(property, format!("{text:?} is not true or false"))),
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(value: Value) -> Properties {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn lists_arrive_as_lists_or_comma_separated_strings() {
        let p = props(json!({"A": ["x", " y"], "B": "x, y", "C": "", "D": ["x", ""], "E": 3}));
        assert_eq!(string_list(&p, "A").unwrap(), ["x", "y"]);
        assert_eq!(string_list(&p, "B").unwrap(), ["x", "y"]);
        assert!(string_list(&p, "C").unwrap().is_empty());
        assert!(string_list(&p, "Missing").unwrap().is_empty());
        assert_eq!(string_list(&p, "D").unwrap_err().to_string(), "D: item 2 is empty");
        assert!(string_list(&p, "E").unwrap_err().to_string().starts_with("E: expected a list"));
    }

    #[test]
    fn scalars_and_booleans() {
        let p = props(json!({"A": " 5 ", "B": 7, "C": "", "D": "True", "E": "yes", "F": ["x"]}));
        assert_eq!(scalar(&p, "A").unwrap().as_deref(), Some("5"));
        assert_eq!(scalar(&p, "B").unwrap().as_deref(), Some("7"));
        assert_eq!(scalar(&p, "C").unwrap(), None, "an empty parameter means unset");
        assert!(boolean(&p, "D", false).unwrap());
        assert!(boolean(&p, "E", false).unwrap_err().to_string().starts_with("E:"));
        assert!(scalar(&p, "F").is_err());
    }

    #[test]
    fn repeats_are_refused() {
        assert_eq!(unique("P", ["a", "b", "a"]).unwrap_err().to_string(), "P: a is listed twice");
        assert_eq!(edit_distance("SubnetID", "SubnetIds"), 2);
    }
}
