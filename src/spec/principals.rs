//! `AllowedPrincipals`: who may connect to the endpoint service.

use std::collections::BTreeSet;

use super::read::{Properties, string_list, unique};
use crate::error::{Error, Result};

const EXAMPLE: &str = "arn:aws:iam::123456789012:root";

pub fn principals(props: &Properties) -> Result<BTreeSet<String>> {
    const P: &str = "AllowedPrincipals";
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
