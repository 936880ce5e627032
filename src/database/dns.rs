//! Names to addresses. RDS names the writer but gives only host names; the
//! address comes from DNS (RDS API reference, `Endpoint`; a non-public endpoint
//! resolves to its private address in public DNS).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

/// Points the resolver at one DNS server (`10.0.0.2` or `127.0.0.1:5353`) instead
/// of the system's (`/etc/resolv.conf`); tests and the demo use it for a
/// responder that knows the emulator's endpoint names.
pub const DNS_SERVER_ENV: &str = "REVERSE_PRIVATELINK_DNS_SERVER";

/// Why a name gave no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{0} does not exist in DNS (NXDOMAIN)")]
    NoSuchName(String),
    #[error("{0} has no IPv4 address in DNS")]
    NoAddress(String),
    #[error("looking up {name} failed: {message}")]
    Failed { name: String, message: String },
}

#[derive(Clone)]
pub struct Dns {
    resolver: Result<TokioResolver, String>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").field("ready", &self.resolver.is_ok()).finish()
    }
}

impl Dns {
    /// The system's resolver, or the server `REVERSE_PRIVATELINK_DNS_SERVER` names.
    /// A broken configuration is reported when a name is first looked up, so that
    /// chains with fixed addresses never depend on DNS.
    pub fn from_env() -> Dns {
        match std::env::var(DNS_SERVER_ENV) {
            Ok(server) if !server.trim().is_empty() => match parse_server(server.trim()) {
                Some(server) => Dns::server(server),
                None => Dns { resolver: Err(format!("{DNS_SERVER_ENV}={server:?} is not an address[:port]")) },
            },
            _ => Dns::system(),
        }
    }

    pub fn system() -> Dns {
        let resolver = TokioResolver::builder_tokio().and_then(|builder| builder.build());
        Dns { resolver: resolver.map_err(|err| format!("the system's DNS configuration cannot be used: {err}")) }
    }

    /// Asks only `server`, over UDP and then TCP.
    pub fn server(server: SocketAddr) -> Dns {
        let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
            .into_iter()
            .map(|mut connection| {
                connection.port = server.port();
                connection
            })
            .collect();
        let config =
            ResolverConfig::from_parts(None, vec![], vec![NameServerConfig::new(server.ip(), true, connections)]);
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).build();
        Dns { resolver: resolver.map_err(|err| format!("cannot use the DNS server {server}: {err}")) }
    }

    /// The IPv4 addresses of `name`, asked afresh: a failover changes them, and
    /// waiting out a cached answer would only delay following it.
    pub async fn ipv4(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        let resolver = self
            .resolver
            .as_ref()
            .map_err(|message| DnsError::Failed { name: name.to_string(), message: message.clone() })?;
        resolver.clear_cache();
        // Fully qualified, so no search domain is tried first.
        let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
        match resolver.lookup(fqdn.as_str(), RecordType::A).await {
            Ok(lookup) => {
                let mut addresses: Vec<Ipv4Addr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect();
                addresses.sort();
                addresses.dedup();
                if addresses.is_empty() { Err(DnsError::NoAddress(name.to_string())) } else { Ok(addresses) }
            }
            Err(err) if err.is_nx_domain() => Err(DnsError::NoSuchName(name.to_string())),
            Err(err) if err.is_no_records_found() => Err(DnsError::NoAddress(name.to_string())),
            Err(err) => Err(DnsError::Failed { name: name.to_string(), message: err.to_string() }),
        }
    }
}

fn parse_server(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_addresses_with_an_optional_port() {
        assert_eq!(parse_server("10.0.0.2"), Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(parse_server("127.0.0.1:5353"), Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(parse_server("dns.example.com"), None);
    }
}
