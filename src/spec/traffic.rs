//! What lets traffic through: `EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic`,
//! `AllowDatabaseIngress` and `WaitForHealthyTarget`.

use super::read::{Properties, boolean, scalar};
use super::target::{Database, Target};
use crate::error::{Error, Result};

/// `"on"` / `"off"`, default off: the endpoint service's allowed principals already
/// decide who may connect, and with it on the NLB's inbound rules see the consumer's
/// client addresses, which the producer does not know (ELB user guide, "Security
/// groups for your Network Load Balancer").
pub fn enforce_inbound_on_private_link(props: &Properties) -> Result<bool> {
    const P: &str = "EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic";
    match scalar(props, P)? {
        None => Ok(false),
        Some(text) if text.eq_ignore_ascii_case("on") => Ok(true),
        Some(text) if text.eq_ignore_ascii_case("off") => Ok(false),
        Some(text) => Err(Error::property(P, format!("{text:?} is not on or off"))),
    }
}

/// Whether to allow the load balancer into the database's security groups: by
/// default when `Database` names an RDS cluster or instance, whose groups RDS names.
pub fn allow_database_ingress(props: &Properties, target: &Target) -> Result<bool> {
    const P: &str = "AllowDatabaseIngress";
    let names_rds = matches!(target, Target::Database(Database::Identifier(_)));
    let allow = boolean(props, P, names_rds)?;
    if allow && !names_rds {
        return Err(Error::property(
            P,
            "true needs Database to name an RDS cluster or instance; for fixed TargetIps or a DNS name there is no security group to find, so allow the load balancer's security group in the database's yourself",
        ));
    }
    Ok(allow)
}

pub fn wait_for_healthy_target(props: &Properties) -> Result<bool> {
    boolean(props, "WaitForHealthyTarget", false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn props(value: Value) -> Properties {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn enforcement_is_on_or_off_and_off_by_default() {
        let p = |v: Value| {
            enforce_inbound_on_private_link(&props(json!({"EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic": v})))
        };
        assert!(!p(Value::Null).unwrap());
        assert!(p(json!("On")).unwrap());
        assert!(!p(json!("off")).unwrap());
        assert!(
            p(json!("true"))
                .unwrap_err()
                .to_string()
                .starts_with("EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic:")
        );
    }

    #[test]
    fn database_ingress_defaults_to_rds_databases_only() {
        let rds = Target::Database(Database::Identifier("orders".into()));
        let name = Target::Database(Database::DnsName("db.example.com".into()));
        let ips = Target::Ips(["10.0.1.25".parse().unwrap()].into());
        assert!(allow_database_ingress(&props(json!({})), &rds).unwrap());
        assert!(!allow_database_ingress(&props(json!({})), &name).unwrap());
        assert!(!allow_database_ingress(&props(json!({"AllowDatabaseIngress": "false"})), &rds).unwrap());
        for target in [name, ips] {
            let err = allow_database_ingress(&props(json!({"AllowDatabaseIngress": "true"})), &target).unwrap_err();
            assert!(err.to_string().starts_with("AllowDatabaseIngress: true needs"), "{err}");
        }
        assert!(allow_database_ingress(&props(json!({"AllowDatabaseIngress": "yes"})), &rds).is_err());
    }
}
