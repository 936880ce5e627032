//! Who the database writer is and at which address: the RDS API names the
//! writer instance (`DBClusterMembers[].IsClusterWriter`) and its endpoint, DNS
//! gives the address. Shared by CloudFormation requests and the writer sync.

mod dns;
mod rds;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use tokio::time::Instant;
use tracing::info;

use crate::error::{Error, Result};
use crate::spec::{Database, PRIVATE_RANGES, is_private};

pub use dns::{DNS_SERVER_ENV, Dns, DnsError};
pub use rds::{Described, Kind, Member, Placement, SubnetGroup};

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
    ec2: aws_sdk_ec2::Client,
    dns: Dns,
}

impl Databases {
    pub fn new(rds: aws_sdk_rds::Client, ec2: aws_sdk_ec2::Client, dns: Dns) -> Self {
        Databases { rds, ec2, dns }
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
        let described = self.describe(database).await?;
        self.settle(database, described, patience, &BTreeSet::new()).await
    }

    /// Resolves the writer of `described` (read a moment ago), asking RDS and DNS
    /// again every 2 s while it settles, for up to `patience`. With `moved_from`,
    /// an address in it counts as not settled either: after a failover event for a
    /// database with no other member to compare with, only the address changing
    /// tells that DNS caught up. If it never changes, the last answer is returned.
    pub async fn settle(
        &self,
        database: &Database,
        described: Described,
        patience: Duration,
        moved_from: &BTreeSet<Ipv4Addr>,
    ) -> Result<(Described, Writer)> {
        let (described, writer) = self.settled(database, described, patience, moved_from).await?;
        let writer = writer.map_err(|why| {
            Error::property(
                "Database",
                format!("{why}; still so after {}s, try again once the failover has finished", patience.as_secs()),
            )
        })?;
        Ok((described, writer))
    }

    /// The writer of `database`, or why a failover has still not settled after `patience`.
    pub async fn writer_or_settling(
        &self,
        database: &Database,
        patience: Duration,
    ) -> Result<(Described, std::result::Result<Writer, String>)> {
        let described = self.describe(database).await?;
        self.settled(database, described, patience, &BTreeSet::new()).await
    }

    async fn settled(
        &self,
        database: &Database,
        mut described: Described,
        patience: Duration,
        moved_from: &BTreeSet<Ipv4Addr>,
    ) -> Result<(Described, std::result::Result<Writer, String>)> {
        let give_up = Instant::now() + patience;
        loop {
            let time_left = Instant::now() + SETTLE_POLL <= give_up;
            match self.address_of(&described).await {
                Ok(writer) if moved_from.contains(&writer.address) && time_left => {
                    info!(database = database.as_given(), address = %writer.address, "waiting for DNS to give the writer its new address");
                }
                Ok(writer) => return Ok((described, Ok(writer))),
                Err(Unresolved::Invalid(why)) => return Err(Error::property("Database", why)),
                Err(Unresolved::Settling(why)) if !time_left => return Ok((described, Err(why))),
                Err(Unresolved::Settling(why)) => {
                    info!(database = database.as_given(), reason = %why, "waiting for the writer to settle");
                }
            }
            tokio::time::sleep(SETTLE_POLL).await;
            described = self.describe(database).await?;
        }
    }

    /// Resolves the writer that `described` names. For a cluster, the writer's
    /// address must differ from every other member's: right after a failover DNS
    /// can still give the new writer's name the old writer's address. A public
    /// address (a publicly accessible database seen from outside its VPC) stands
    /// for the private address of the network interface that carries it.
    pub async fn address_of(&self, described: &Described) -> std::result::Result<Writer, Unresolved> {
        if let Some(global) = &described.secondary_of {
            return Err(Unresolved::Invalid(format!(
                "{} is a secondary cluster of the Aurora Global Database {global}, with no writer in this region; deploy the stack in the region of the global database's primary cluster and give that cluster",
                described.what()
            )));
        }
        let Some(writer) = &described.writer else {
            return Err(Unresolved::Settling(format!("{} has no writer right now", described.what())));
        };
        let address = self.one_address(&writer.endpoint, described).await?;
        // Compared as DNS gives them, public or private alike: the same address means the same instance.
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
        let address = match is_private(address) {
            true => address,
            false => self.private_address(&writer.endpoint, address, described).await?,
        };
        let instance = (!writer.instance.is_empty()).then(|| writer.instance.clone());
        Ok(Writer { address, instance, zone: writer.zone.clone() })
    }

    /// The private address behind `public`: that of the network interface whose
    /// association carries it (EC2 API reference, DescribeNetworkInterfaces,
    /// filter `association.public-ip`), in the database's VPC when RDS names it.
    async fn private_address(
        &self,
        name: &str,
        public: Ipv4Addr,
        described: &Described,
    ) -> std::result::Result<Ipv4Addr, Unresolved> {
        let vpc_id = self.vpc_of(described).await.map_err(|err| Unresolved::Settling(err.to_string()))?;
        let mut request = self
            .ec2
            .describe_network_interfaces()
            .filters(Filter::builder().name("association.public-ip").values(public.to_string()).build());
        if let Some(vpc_id) = &vpc_id {
            request = request.filters(Filter::builder().name("vpc-id").values(vpc_id).build());
        }
        let found = request
            .send()
            .await
            .map_err(|err| {
                Unresolved::Settling(
                    Error::aws("finding the database's private address (DescribeNetworkInterfaces)")(err).to_string(),
                )
            })?
            .network_interfaces
            .unwrap_or_default();
        let private: BTreeSet<Ipv4Addr> = found
            .iter()
            .filter_map(|interface| interface.private_ip_address.as_deref()?.parse().ok())
            .filter(|ip| is_private(*ip))
            .collect();
        match private.into_iter().collect::<Vec<_>>()[..] {
            [address] => {
                info!(%public, %address, "the database's endpoint is public; using the private address of its network interface");
                Ok(address)
            }
            [] => Err(Unresolved::Invalid(format!(
                "{name} resolves to {public}, which is not a private address (the database is publicly accessible), and no network interface {}carries {public}, so its private address is unknown; AWS accepts IP targets only in {PRIVATE_RANGES}",
                vpc_id.map(|vpc| format!("in {vpc} ")).unwrap_or_default()
            ))),
            ref several => Err(Unresolved::Invalid(format!(
                "{name} resolves to {public}, which {} network interfaces carry; give the database's private address as TargetIps",
                several.len()
            ))),
        }
    }

    /// The database's VPC, when RDS names it: its DB subnet group's.
    async fn vpc_of(&self, described: &Described) -> Result<Option<String>> {
        match (&described.subnet_group, &described.subnet_group_name) {
            (Some(group), _) => Ok(Some(group.vpc_id.clone())),
            (None, Some(name)) => Ok(Some(self.subnet_group(name).await?.vpc_id)),
            (None, None) => Ok(None),
        }
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
        Ok(address)
    }
}
