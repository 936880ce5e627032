//! Who the database writer is and at which address: the RDS API names the
//! writer instance (`DBClusterMembers[].IsClusterWriter`) and its endpoint, DNS
//! gives the address. Shared by CloudFormation requests and the writer sync.

mod dns;
mod rds;

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::error::{Error, Result};
use crate::spec::{Database, PRIVATE_RANGES, is_private};

pub use dns::{DNS_SERVER_ENV, Dns, DnsError};
pub use rds::{Described, Member, SubnetGroup};

/// How often to ask again while a failover settles.
const SETTLE_POLL: Duration = Duration::from_secs(2);

/// The writer as found now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub address: Ipv4Addr,
    /// The writer instance; None for a database named by DNS only.
    pub instance: Option<String>,
    /// Its Availability Zone name, when RDS says.
    pub zone: Option<String>,
}

/// Why there is no writer address right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    /// A failover in progress or DNS catching up: asking again soon will help.
    #[error("{0}")]
    Settling(String),
    /// The database or its name is wrong: asking again will not help.
    #[error("{0}")]
    Invalid(String),
}

/// Finds databases and their writers.
#[derive(Clone, Debug)]
pub struct Databases {
    rds: aws_sdk_rds::Client,
    dns: Dns,
}

impl Databases {
    pub fn new(rds: aws_sdk_rds::Client, dns: Dns) -> Self {
        Databases { rds, dns }
    }

    /// What RDS says about `database` (nothing for a DNS name).
    pub async fn describe(&self, database: &Database) -> Result<Described> {
        match database {
            Database::Identifier(id) => rds::describe(&self.rds, id).await,
            Database::DnsName(name) => Ok(Described::dns(name)),
        }
    }

    /// The DB subnet group `name`.
    pub async fn subnet_group(&self, name: &str) -> Result<SubnetGroup> {
        rds::subnet_group(&self.rds, name).await
    }

    /// The writer of `database`. While a failover settles (no writer named yet,
    /// or DNS still answering with another member's address) it asks again every
    /// 2 s for up to `patience`; RDS says "DNS propagation may take a few minutes"
    /// (RDS-EVENT-0015). Returns the description it settled on with the writer.
    pub async fn writer(&self, database: &Database, patience: Duration) -> Result<(Described, Writer)> {
        let give_up = Instant::now() + patience;
        loop {
            let described = self.describe(database).await?;
            match self.address_of(&described).await {
                Ok(writer) => return Ok((described, writer)),
                Err(Unresolved::Invalid(why)) => return Err(Error::property("Database", why)),
                Err(Unresolved::Settling(why)) if Instant::now() + SETTLE_POLL > give_up => {
                    return Err(Error::property(
                        "Database",
                        format!(
                            "{why}; still so after {}s, try again once the failover has finished",
                            patience.as_secs()
                        ),
                    ));
                }
                Err(Unresolved::Settling(why)) => {
                    info!(database = database.as_given(), reason = %why, "waiting for the writer to settle");
                    tokio::time::sleep(SETTLE_POLL).await;
                }
            }
        }
    }

    /// Resolves the writer that `described` names. For a cluster, the writer's
    /// address must differ from every other member's: right after a failover DNS
    /// can still give the new writer's name the old writer's address.
    pub async fn address_of(&self, described: &Described) -> std::result::Result<Writer, Unresolved> {
        let Some(writer) = &described.writer else {
            return Err(Unresolved::Settling(format!("{} has no writer right now", described.what())));
        };
        let address = self.one_address(&writer.endpoint, described).await?;
        let others = futures::future::join_all(
            described.members.iter().filter(|m| m.instance != writer.instance).map(|m| self.dns.ipv4(&m.endpoint)),
        )
        .await;
        if let Some(reader) =
            described.members.iter().filter(|m| m.instance != writer.instance).zip(&others).find_map(
                |(member, addresses)| addresses.as_ref().ok().filter(|a| a.contains(&address)).map(|_| member),
            )
        {
            return Err(Unresolved::Settling(format!(
                "DNS still gives the writer {} the address {address} of {}, so it has not caught up with the failover",
                writer.instance, reader.instance
            )));
        }
        let instance = (!writer.instance.is_empty()).then(|| writer.instance.clone());
        Ok(Writer { address, instance, zone: writer.zone.clone() })
    }

    async fn one_address(&self, name: &str, described: &Described) -> std::result::Result<Ipv4Addr, Unresolved> {
        let addresses = match self.dns.ipv4(name).await {
            Ok(addresses) => addresses,
            // A new writer's name can be missing for a moment; a name the user typed is just wrong.
            Err(err @ (DnsError::NoSuchName(_) | DnsError::NoAddress(_))) if described.is_rds() => {
                return Err(Unresolved::Settling(format!("the writer's endpoint {err}")));
            }
            Err(err @ DnsError::Failed { .. }) => return Err(Unresolved::Settling(err.to_string())),
            Err(err) => return Err(Unresolved::Invalid(err.to_string())),
        };
        let [address] = addresses[..] else {
            let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            return Err(Unresolved::Invalid(format!(
                "{name} resolves to {} addresses ({}); the load balancer exposes exactly one writer, so name one database or instance",
                addresses.len(),
                list.join(", ")
            )));
        };
        if !is_private(address) {
            return Err(Unresolved::Invalid(format!(
                "{name} resolves to {address}, which is not a private address; AWS accepts IP targets only in {PRIVATE_RANGES}"
            )));
        }
        Ok(address)
    }
}
