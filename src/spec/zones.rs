//! `ConsumerAvailabilityZoneIds`: the zones, by ID, where the consumer places its
//! endpoint. A consumer can use only zones where the service's load balancer has a
//! subnet (PrivateLink guide: consumers see only the zones both sides share), and zone
//! names map differently in each account while zone IDs do not (EC2 user guide,
//! "Availability Zone IDs").

use std::collections::BTreeSet;

use super::read::{Properties, string_list, unique};
use crate::error::{Error, Result};

pub const CONSUMER_ZONES: &str = "ConsumerAvailabilityZoneIds";

pub fn consumer_zone_ids(props: &Properties) -> Result<BTreeSet<String>> {
    let ids = string_list(props, CONSUMER_ZONES)?;
    if let Some(id) = ids.iter().find(|id| !is_zone_id(id)) {
        let hint = if id.chars().last().is_some_and(|c| c.is_ascii_alphabetic()) && id.contains('-') {
            " (that looks like a zone name, which differs between accounts; ask the consumer for the zone IDs, e.g. `aws ec2 describe-availability-zones --query 'AvailabilityZones[].ZoneId'`)"
        } else {
            ""
        };
        return Err(Error::property(CONSUMER_ZONES, format!("{id:?} is not a zone ID such as use1-az1{hint}")));
    }
    unique(CONSUMER_ZONES, ids)
}

/// `use1-az1`, `apne1-az4`, `usw2-lax1-az1` (a Local Zone): a region code, an
/// optional location, then `az` and a number.
fn is_zone_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    let [region, middle @ .., zone] = parts.as_slice() else { return false };
    let lower_digits =
        |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    region.len() >= 3
        && lower_digits(region)
        && region.ends_with(|c: char| c.is_ascii_digit())
        && middle.len() <= 1
        && middle.iter().all(|part| lower_digits(part))
        && zone.strip_prefix("az").is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: serde_json::Value) -> Result<BTreeSet<String>> {
        consumer_zone_ids(json!({ CONSUMER_ZONES: value }).as_object().unwrap())
    }

    #[test]
    fn zone_ids_are_checked_and_zone_names_refused() {
        assert_eq!(read(json!(["use1-az1", "use1-az6"])).unwrap().len(), 2);
        assert_eq!(read(json!("apne1-az4, usw2-lax1-az1")).unwrap().len(), 2);
        assert!(read(json!(null)).unwrap().is_empty());
        let name = read(json!(["us-east-1a"])).unwrap_err().to_string();
        assert!(
            name.starts_with("ConsumerAvailabilityZoneIds: \"us-east-1a\" is not a zone ID")
                && name.contains("zone name"),
            "{name}"
        );
        for bad in ["use1", "USE1-AZ1", "use1-az", "use1-azx", "az1", "use1-a-b-az1"] {
            assert!(read(json!([bad])).is_err(), "{bad}");
        }
        assert_eq!(
            read(json!(["use1-az1", "use1-az1"])).unwrap_err().to_string(),
            "ConsumerAvailabilityZoneIds: use1-az1 is listed twice"
        );
    }
}
