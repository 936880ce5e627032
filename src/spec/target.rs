//! What the load balancer forwards to: fixed `TargetIps`, or the writer of a
//! `Database` that the function finds and keeps following.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::read::{Properties, scalar, string_list, unique};
use crate::error::{Error, Result};

const MAX_TARGET_IPS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ips(BTreeSet<Ipv4Addr>),
    Database(Database),
}

impl Default for Target {
    fn default() -> Self {
        Target::Ips(BTreeSet::new())
    }
}

/// A database as the user named it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Database {
    /// An Aurora DB cluster or an RDS DB instance identifier.
    Identifier(String),
    /// A cluster or instance endpoint, or a name the user owns, resolved through DNS.
    DnsName(String),
}

impl Database {
    /// Reads a database as given, refusing what is neither an identifier nor a DNS name.
    pub fn parse(text: &str) -> std::result::Result<Database, String> {
        let text = text.trim();
        if text.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!("{text} is an IP address; give fixed addresses as TargetIps"));
        }
        if text.contains('.') {
            let name = text.strip_suffix('.').unwrap_or(text);
            if !is_dns_name(name) {
                return Err(format!("{text:?} is not a valid DNS name"));
            }
            if let Some(why) = not_one_writer(name) {
                return Err(why);
            }
            // Kept as given (DNS ignores case, and the resolver takes a trailing dot), so Data shows it so.
            return Ok(Database::DnsName(text.to_string()));
        }
        is_rds_identifier(text).then(|| Database::Identifier(text.to_string())).ok_or_else(|| {
            format!(
                "{text:?} is neither an RDS identifier (1-63 letters, digits and hyphens, starting with a letter) nor a DNS name"
            )
        })
    }

    /// The database as the user gave it.
    pub fn as_given(&self) -> &str {
        match self {
            Database::Identifier(id) | Database::DnsName(id) => id,
        }
    }
}

/// The rule RDS applies to DB cluster and instance identifiers (RDS API reference, CreateDBCluster).
fn is_rds_identifier(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.ends_with('-')
        && !id.contains("--")
}

/// RDS endpoint names that stand for several instances, not the one writer
/// (Aurora user guide, "Amazon Aurora endpoint connections"; RDS Proxy endpoints):
/// the load balancer would forward to whichever address DNS gave that moment.
fn not_one_writer(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    let rds = lower.ends_with(".rds.amazonaws.com") || lower.ends_with(".rds.amazonaws.com.cn");
    if !rds || labels.len() < 5 {
        return None;
    }
    let first = labels[0];
    let what = if labels[1].starts_with("cluster-ro-") {
        format!(
            "a cluster reader endpoint, which spreads connections over the readers; give the cluster identifier ({first}) to follow its writer"
        )
    } else if labels[1].starts_with("cluster-custom-") {
        "a custom cluster endpoint, which spreads connections over the instances it lists; give the cluster identifier to follow its writer".to_string()
    } else if labels.iter().any(|label| label.starts_with("proxy-")) {
        "an RDS Proxy endpoint, which has one address per subnet; give the identifier of the cluster or instance behind the proxy".to_string()
    } else {
        return None;
    };
    Some(format!("{name} is {what}"))
}

fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').count() >= 2
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The ranges AWS accepts for IP targets besides the VPC's own: RFC 1918 and RFC 6598.
pub fn is_private(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private() || (a == 100 && (64..128).contains(&b))
}

pub const PRIVATE_RANGES: &str = "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10";

/// How errors about the pair name it.
const BOTH: &str = "Database and TargetIps";

/// Exactly one of `Database` and `TargetIps`.
pub fn target(props: &Properties) -> Result<Target> {
    let database = database(props);
    let ips = target_ips(props);
    match (database, ips) {
        (Ok(Some(_)), Ok(ips)) if !ips.is_empty() => Err(Error::property(
            BOTH,
            "both are given; give exactly one: Database to follow the database's writer, or TargetIps for fixed addresses",
        )),
        (Ok(None), Ok(ips)) if ips.is_empty() => Err(Error::property(
            BOTH,
            "neither is given; give exactly one: Database (an RDS cluster or instance identifier, or a DNS name) to follow the writer, or TargetIps (with SubnetIds) for fixed private addresses",
        )),
        (Ok(Some(database)), Ok(_)) => Ok(Target::Database(database)),
        (Ok(None), Ok(ips)) => Ok(Target::Ips(ips)),
        (Err(database), Err(ips)) => Err(Error::Properties(vec![database, ips])),
        (Err(err), _) | (_, Err(err)) => Err(err),
    }
}

fn database(props: &Properties) -> Result<Option<Database>> {
    scalar(props, "Database")?
        .map(|text| Database::parse(&text).map_err(|m| Error::property("Database", m)))
        .transpose()
}

fn target_ips(props: &Properties) -> Result<BTreeSet<Ipv4Addr>> {
    const P: &str = "TargetIps";
    let items = string_list(props, P)?;
    if items.len() > MAX_TARGET_IPS {
        return Err(Error::property(P, format!("at most {MAX_TARGET_IPS} addresses")));
    }
    let ips = items
        .iter()
        .map(|item| {
            let ip: Ipv4Addr =
                item.parse().map_err(|_| Error::property(P, format!("{item:?} is not an IPv4 address")))?;
            if !is_private(ip) {
                return Err(Error::property(
                    P,
                    format!("{ip} is not a private address; AWS accepts IP targets only in {PRIVATE_RANGES}"),
                ));
            }
            Ok(ip)
        })
        .collect::<Result<Vec<_>>>()?;
    unique(P, ips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn read(value: Value) -> Result<Target> {
        target(value.as_object().unwrap())
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
    fn databases_are_identifiers_or_dns_names() {
        assert_eq!(Database::parse("orders").unwrap(), Database::Identifier("orders".into()));
        assert_eq!(Database::parse("orders-db-1").unwrap(), Database::Identifier("orders-db-1".into()));
        assert_eq!(
            Database::parse(" Orders.cluster-abc.us-east-1.rds.amazonaws.com. ").unwrap(),
            Database::DnsName("Orders.cluster-abc.us-east-1.rds.amazonaws.com.".into())
        );
        for bad in ["1orders", "orders-", "or--ders", "orders_db", "a..b", "-a.b", "10.0.1.25", &"a".repeat(64)] {
            assert!(Database::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_that_are_not_one_writer_are_refused_saying_what_to_give() {
        for (name, expected) in [
            ("orders.cluster-ro-abc123.us-east-1.rds.amazonaws.com", "cluster reader endpoint"),
            ("Orders.Cluster-RO-abc123.us-east-1.rds.amazonaws.com.", "give the cluster identifier (orders)"),
            ("reports.cluster-custom-abc123.us-east-1.rds.amazonaws.com", "custom cluster endpoint"),
            ("imports.proxy-abc123.us-east-1.rds.amazonaws.com", "RDS Proxy endpoint"),
            ("reader.endpoint.proxy-abc123.cn-north-1.rds.amazonaws.com.cn", "RDS Proxy endpoint"),
        ] {
            let err = Database::parse(name).unwrap_err();
            assert!(err.contains(expected), "{name}: {err}");
        }
        for writer in [
            "orders.cluster-abc123.us-east-1.rds.amazonaws.com",
            "orders-1.abc123.us-east-1.rds.amazonaws.com",
            "db.cluster-ro-example.internal",
        ] {
            assert!(Database::parse(writer).is_ok(), "{writer}");
        }
    }

    #[test]
    fn exactly_one_of_database_and_target_ips() {
        assert_eq!(
            read(json!({"Database": "orders"})).unwrap(),
            Target::Database(Database::Identifier("orders".into()))
        );
        assert!(matches!(read(json!({"TargetIps": ["10.0.1.25"]})).unwrap(), Target::Ips(ips) if ips.len() == 1));
        for both_or_neither in
            [json!({"Database": "orders", "TargetIps": ["10.0.1.25"]}), json!({}), json!({"Database": ""})]
        {
            let err = read(both_or_neither.clone()).unwrap_err().to_string();
            assert!(err.contains("Database") && err.contains("TargetIps"), "{both_or_neither}: {err}");
        }
        for (bad, expected) in [
            (json!({"TargetIps": ["10.0.1"]}), "TargetIps: \"10.0.1\" is not an IPv4 address"),
            (json!({"TargetIps": ["8.8.8.8"]}), "TargetIps: 8.8.8.8 is not a private address"),
            (json!({"TargetIps": ["fd00::1"]}), "TargetIps:"),
            (json!({"TargetIps": ["10.0.1.25", "10.0.1.25"]}), "TargetIps: 10.0.1.25 is listed twice"),
            (json!({"Database": "db_1"}), "Database: \"db_1\" is neither"),
            (json!({"Database": ["orders"]}), "Database: expected a string"),
        ] {
            let err = read(bad.clone()).unwrap_err().to_string();
            assert!(err.contains(expected), "{bad}: {err}");
        }
    }
}
