//! `SupportedRegions`: regions where consumers may create endpoints (cross-region
//! PrivateLink, NLB-backed services only, same partition; EC2 API reference,
//! CreateVpcEndpointServiceConfiguration).

use std::collections::BTreeSet;

use super::read::{Properties, string_list, unique};
use crate::error::{Error, Result};

pub fn supported_regions(props: &Properties, stack_id: &str) -> Result<BTreeSet<String>> {
    const P: &str = "SupportedRegions";
    let regions = string_list(props, P)?;
    let own = own_region(stack_id);
    for region in &regions {
        if !is_region_name(region) {
            return Err(Error::property(P, format!("{region:?} is not a region name such as eu-west-1")));
        }
        if Some(region.as_str()) == own {
            return Err(Error::property(
                P,
                format!(
                    "{region} is the stack's own region, where consumers can always connect; list only other regions"
                ),
            ));
        }
    }
    unique(P, regions)
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-7`.
pub(super) fn is_region_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    let [first, middle @ .., number] = parts.as_slice() else { return false };
    first.len() == 2
        && first.chars().all(|c| c.is_ascii_lowercase())
        && !middle.is_empty()
        && middle.iter().all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase()))
        && !number.is_empty()
        && number.len() <= 2
        && number.chars().all(|c| c.is_ascii_digit())
}

/// The region of `arn:aws:cloudformation:<region>:<account>:stack/…`.
pub fn own_region(stack_id: &str) -> Option<&str> {
    stack_field(stack_id, 3)
}

/// The partition (`aws`, `aws-cn`, …) of the stack's ID.
pub fn own_partition(stack_id: &str) -> Option<&str> {
    stack_field(stack_id, 1)
}

/// The account of the stack's ID.
pub fn own_account(stack_id: &str) -> Option<&str> {
    stack_field(stack_id, 4)
}

/// Field `n` of `arn:<partition>:cloudformation:<region>:<account>:stack/…`, if not empty.
fn stack_field(stack_id: &str, n: usize) -> Option<&str> {
    stack_id.split(':').nth(n).filter(|field| !field.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STACK: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/s/guid";

    fn read(value: serde_json::Value) -> Result<BTreeSet<String>> {
        supported_regions(json!({"SupportedRegions": value}).as_object().unwrap(), STACK)
    }

    #[test]
    fn regions_are_well_formed_foreign_and_listed_once() {
        assert_eq!(read(json!(["eu-west-1", "us-gov-west-1"])).unwrap().len(), 2);
        assert_eq!(read(json!("us-west-2, ap-southeast-7")).unwrap().len(), 2);
        assert!(read(json!([])).unwrap().is_empty());
        for (bad, expected) in [
            (json!(["us-east-1"]), "the stack's own region"),
            (json!(["eu-west-1", "eu-west-1"]), "listed twice"),
            (json!(["europe"]), "not a region name"),
            (json!(["EU-WEST-1"]), "not a region name"),
            (json!(["eu-west-"]), "not a region name"),
        ] {
            let err = read(bad.clone()).unwrap_err().to_string();
            assert!(err.starts_with("SupportedRegions:") && err.contains(expected), "{bad}: {err}");
        }
    }
}
