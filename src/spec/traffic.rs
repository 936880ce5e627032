//! What lets traffic through: `EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic`,
//! `LoadBalancerClients`, `AllowDatabaseIngress`, `WaitForHealthyTarget` and
//! `IdleTimeoutSeconds`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::read::{Properties, boolean, scalar, string_list, unique};
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

/// What AWS allows for a TCP listener's `tcp.idle_timeout.seconds` (ELB user guide,
/// "Listeners for your Network Load Balancers", "TCP idle timeout").
const IDLE_TIMEOUT_RANGE: std::ops::RangeInclusive<u16> = 60..=6000;

/// `IdleTimeoutSeconds`: how long the load balancer keeps an idle TCP flow; None leaves
/// AWS's default.
pub fn idle_timeout(props: &Properties) -> Result<Option<u16>> {
    const P: &str = "IdleTimeoutSeconds";
    let Some(text) = scalar(props, P)? else { return Ok(None) };
    match text.parse::<u16>() {
        Ok(seconds) if IDLE_TIMEOUT_RANGE.contains(&seconds) => Ok(Some(seconds)),
        _ => Err(Error::property(
            P,
            format!(
                "{text:?} is not a number of seconds from {} to {}, the range AWS allows for a TCP listener's idle timeout",
                IDLE_TIMEOUT_RANGE.start(),
                IDLE_TIMEOUT_RANGE.end()
            ),
        )),
    }
}

pub const CLIENTS: &str = "LoadBalancerClients";
const MAX_CLIENTS: usize = 20;

/// `LoadBalancerClients`: sources inside the network (IPv4 CIDR blocks or security
/// group IDs) that may connect to the load balancer directly, an opt-in: its own
/// security group admits nothing else, as PrivateLink traffic needs no inbound rule
/// while enforcement is off.
pub fn load_balancer_clients(props: &Properties) -> Result<BTreeSet<String>> {
    let items = string_list(props, CLIENTS)?;
    if items.len() > MAX_CLIENTS {
        return Err(Error::property(CLIENTS, format!("at most {MAX_CLIENTS} sources")));
    }
    for item in &items {
        if let Err(why) = client_source(item) {
            return Err(Error::property(CLIENTS, why));
        }
    }
    unique(CLIENTS, items)
}

/// An IPv4 CIDR block (its network address, as EC2 takes it) or a security group ID.
fn client_source(item: &str) -> std::result::Result<(), String> {
    if let Some(hex) = item.strip_prefix("sg-") {
        let well_formed =
            matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        return well_formed.then_some(()).ok_or_else(|| format!("{item:?} is not a sg-… ID"));
    }
    let not_cidr = || format!("{item:?} is neither an IPv4 CIDR block such as 10.0.5.0/24 nor a security group ID");
    let (address, length) = item.split_once('/').ok_or_else(not_cidr)?;
    let address: Ipv4Addr = address.parse().map_err(|_| not_cidr())?;
    let length: u32 = length.parse().ok().filter(|len| *len <= 32).ok_or_else(not_cidr)?;
    let mask = u32::MAX.checked_shl(32 - length).unwrap_or(0);
    if u32::from(address) & !mask != 0 {
        let network = Ipv4Addr::from(u32::from(address) & mask);
        return Err(format!("{item:?} has host bits set; did you mean {network}/{length}?"));
    }
    Ok(())
}

/// With PrivateLink enforcement on, the consumer's traffic must pass the inbound rules
/// of the load balancer's groups; its own group admits only `LoadBalancerClients`.
pub fn check_enforcement(enforce: bool, own_group: bool, clients: &BTreeSet<String>) -> Result<()> {
    if enforce && own_group && clients.is_empty() {
        return Err(Error::property(
            "EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic and LoadBalancerClients",
            "with enforcement on, PrivateLink traffic must pass the inbound rules of the load balancer's own security group, which admits only LoadBalancerClients; list the consumer's client sources there, or keep enforcement off (the endpoint service's allowed principals already decide who may connect)",
        ));
    }
    if !own_group && !clients.is_empty() {
        return Err(Error::property(
            CLIENTS,
            "applies to the load balancer's own security group only; with SecurityGroupIds given, allow the clients in those groups yourself",
        ));
    }
    Ok(())
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
    fn clients_are_cidr_blocks_or_groups_and_enforcement_needs_them() {
        let read = |v: Value| load_balancer_clients(&props(json!({CLIENTS: v})));
        assert_eq!(read(json!(["10.0.5.0/24", "sg-0123456789abcdef0", "192.168.1.7/32"])).unwrap().len(), 3);
        assert!(read(json!(null)).unwrap().is_empty());
        for (bad, expected) in [
            ("10.0.5.1/24", "did you mean 10.0.5.0/24?"),
            ("10.0.5.0", "neither an IPv4 CIDR block"),
            ("10.0.5.0/33", "neither"),
            ("sg-XYZ", "not a sg-"),
            ("fd00::/8", "neither"),
        ] {
            let err = read(json!([bad])).unwrap_err().to_string();
            assert!(err.starts_with("LoadBalancerClients:") && err.contains(expected), "{bad}: {err}");
        }
        let none = BTreeSet::new();
        let some = BTreeSet::from(["10.0.5.0/24".to_string()]);
        let err = check_enforcement(true, true, &none).unwrap_err().to_string();
        assert!(
            err.starts_with("EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic and LoadBalancerClients:"),
            "{err}"
        );
        assert!(check_enforcement(true, true, &some).is_ok());
        assert!(check_enforcement(true, false, &none).is_ok(), "given groups carry the user's own rules");
        assert!(check_enforcement(false, true, &none).is_ok());
        assert!(check_enforcement(false, false, &some).unwrap_err().to_string().starts_with("LoadBalancerClients:"));
    }

    #[test]
    fn idle_timeouts_are_what_aws_allows() {
        assert_eq!(idle_timeout(&props(json!({}))).unwrap(), None);
        assert_eq!(idle_timeout(&props(json!({"IdleTimeoutSeconds": "3600"}))).unwrap(), Some(3600));
        assert_eq!(idle_timeout(&props(json!({"IdleTimeoutSeconds": "60"}))).unwrap(), Some(60));
        assert_eq!(idle_timeout(&props(json!({"IdleTimeoutSeconds": "6000"}))).unwrap(), Some(6000));
        for bad in ["59", "6001", "0", "-1", "ten", "3600.5"] {
            let err = idle_timeout(&props(json!({"IdleTimeoutSeconds": bad}))).unwrap_err().to_string();
            assert!(err.starts_with("IdleTimeoutSeconds: "), "{err}");
            assert!(err.contains("from 60 to 6000"), "{err}");
        }
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
