//! Where the load balancer goes: `SubnetIds`, `SecurityGroupIds` and `Port`.

use std::collections::BTreeSet;

use super::read::{Properties, scalar, string_list, unique};
use crate::error::{Error, Result};

const MAX_SECURITY_GROUPS: usize = 5;

/// IDs of the form `<prefix><8 or 17 lowercase hex digits>`, each at most once.
pub fn id_set(props: &Properties, property: &'static str, prefix: &str) -> Result<BTreeSet<String>> {
    let ids = string_list(props, property)?;
    for id in &ids {
        let hex = id.strip_prefix(prefix).unwrap_or_default();
        let well_formed =
            matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if !well_formed {
            return Err(Error::property(property, format!("{id:?} is not a {prefix}… ID")));
        }
    }
    unique(property, ids)
}

/// `VpcId`: optional; when given, the subnets (given or derived) must be in it.
pub fn vpc_id(props: &Properties) -> Result<Option<String>> {
    const P: &str = "VpcId";
    let Some(id) = scalar(props, P)? else { return Ok(None) };
    let hex = id.strip_prefix("vpc-").unwrap_or_default();
    if !(matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())) {
        return Err(Error::property(P, format!("{id:?} is not a vpc-… ID")));
    }
    Ok(Some(id))
}

pub fn security_groups(props: &Properties) -> Result<BTreeSet<String>> {
    const P: &str = "SecurityGroupIds";
    let groups = id_set(props, P, "sg-")?;
    if groups.len() > MAX_SECURITY_GROUPS {
        return Err(Error::property(
            P,
            format!("at most {MAX_SECURITY_GROUPS} security groups can be attached to a load balancer"),
        ));
    }
    Ok(groups)
}

/// The port, if given; the default comes from the database or is 3306.
pub fn port(props: &Properties) -> Result<Option<u16>> {
    const P: &str = "Port";
    match scalar(props, P)? {
        None => Ok(None),
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Some(port)),
            _ => Err(Error::property(P, format!("{text:?} is not a TCP port (1-65535)"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(value: serde_json::Value) -> Properties {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn ids_must_be_well_formed() {
        let p = props(json!({"S": ["subnet-0123456789abcdef0", "subnet-01234567"], "Bad": ["subnet-XYZ"]}));
        assert_eq!(id_set(&p, "S", "subnet-").unwrap().len(), 2);
        assert!(id_set(&p, "Bad", "subnet-").unwrap_err().to_string().contains("is not a subnet-… ID"));
        let six = props(json!({"SecurityGroupIds": (1..=6).map(|i| format!("sg-0000000{i}")).collect::<Vec<_>>()}));
        assert!(security_groups(&six).unwrap_err().to_string().contains("at most 5"));
    }

    #[test]
    fn ports() {
        assert_eq!(port(&props(json!({"Port": "5432"}))).unwrap(), Some(5432));
        assert_eq!(port(&props(json!({}))).unwrap(), None);
        for bad in ["0", "70000", "abc", "-1"] {
            assert!(port(&props(json!({"Port": bad}))).unwrap_err().to_string().starts_with("Port:"), "{bad}");
        }
    }
}
