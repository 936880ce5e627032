//! The desired state resolved against the account: the spec's subnets, port and
//! targets, or those of the database it names. Reads only; every problem is an
//! error naming the property before anything is created.

mod zones;

use std::collections::BTreeSet;
use std::time::Duration;

use tracing::{info, warn};

use crate::aws::Aws;
use crate::chain::network::{self, Network, VpcBlocks};
use crate::chain::{LoadBalancer, Progress, Resolved};
use crate::database::{Databases, Described, SubnetGroup, Writer};
use crate::error::{Error, Result};
use crate::spec::{DEFAULT_PORT, Spec, Target};
pub use zones::ZoneChecks;
use zones::{DerivedSubnets, Needs};

/// How long a CloudFormation request that names a new database waits for a
/// failover to settle.
pub const SETTLE_PATIENCE: Duration = Duration::from_secs(30);

/// What a request does while the database's writer cannot be resolved (a failover
/// settling: no writer named yet, or DNS behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhileSettling {
    /// Waits up to this long, then fails: a Create, or an Update that names a new database.
    Fail(Duration),
    /// Waits up to this long, then keeps the targets the chain has and changes the rest:
    /// an Update that leaves the database alone (no wait), or a rollback, which must never
    /// fail for what it can defer to the follower.
    Keep(Duration),
}

/// The chain's inputs and, for a chain that follows a database, its writer now.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub resolved: Resolved,
    pub writer: Option<Writer>,
    /// Subnets derived from the database: what an existing chain may be extended with.
    derived: Option<DerivedSubnets>,
}

impl Resolution {
    /// What `lb`'s chain should become. A chain whose subnets were derived keeps every
    /// subnet it has and only gains one in each zone it lacks: a DB subnet group that
    /// changed since must never move a live load balancer (AWS refuses to remove a
    /// subnet while an endpoint service uses it, so moving one means a new service).
    pub fn for_chain(&self, lb: &LoadBalancer) -> Resolved {
        match &self.derived {
            Some(derived) if lb.vpc_id == self.resolved.network.vpc_id => {
                let mut resolved = self.resolved.clone();
                derived.extend(&mut resolved.network, &lb.subnets);
                resolved.subnet_ids = resolved.network.subnets.keys().cloned().collect();
                resolved
            }
            _ => self.resolved.clone(),
        }
    }
}

/// Resolves `spec`. `settling` says how long to wait for a failover to settle and
/// what to do if it has not. `checks` decides whether a zone of the database the
/// load balancer would not serve fails the request or is only logged.
pub async fn resolve(
    aws: &Aws,
    databases: &Databases,
    spec: &Spec,
    settling: WhileSettling,
    checks: ZoneChecks,
    progress: &Progress,
) -> Result<Resolution> {
    let database = match &spec.target {
        Target::Ips(ips) => {
            // The VPC's blocks: for a security group of the chain's own, or a target outside the subnets.
            let needs_vpc =
                |subnets: &VpcBlocks| spec.security_group_ids.is_empty() || ips.iter().any(|ip| !subnets.contains(*ip));
            let network = network::resolve(&aws.ec2, &spec.subnet_ids, &spec.security_group_ids, needs_vpc).await?;
            check_vpc(spec, &network)?;
            zones::check_consumer_zones(&aws.ec2, spec, &network).await?;
            let resolved = Resolved {
                network,
                subnet_ids: spec.subnet_ids.clone(),
                port: spec.port.unwrap_or(DEFAULT_PORT),
                target_ips: ips.clone(),
                follows: None,
                database_security_groups: BTreeSet::new(),
                keep_targets: false,
            };
            return Ok(Resolution { resolved, writer: None, derived: None });
        }
        Target::Database(database) => database,
    };
    let _step = progress.step("finding the Database writer and its address");
    let explicit = !spec.subnet_ids.is_empty();
    let given_network = async {
        if explicit {
            let own_group = spec.security_group_ids.is_empty();
            network::resolve(&aws.ec2, &spec.subnet_ids, &spec.security_group_ids, |_| own_group).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let patience = match settling {
        WhileSettling::Fail(patience) | WhileSettling::Keep(patience) => patience,
    };
    let ((described, writer), given_network) =
        tokio::try_join!(databases.writer_or_settling(database, patience), given_network)?;
    let writer = match (writer, settling) {
        (Ok(writer), _) => Some(writer),
        (Err(why), WhileSettling::Keep(_)) => {
            warn!(database = database.as_given(), reason = %why, "the writer is settling; keeping the registered targets, the follower moves them once it settles");
            None
        }
        (Err(why), WhileSettling::Fail(_)) => {
            return Err(Error::property(
                "Database",
                format!("{why}; still so after {}s, try again once the failover has finished", patience.as_secs()),
            ));
        }
    };
    let writer_address = writer.as_ref().map(|w| w.address);
    let outside = |blocks: &VpcBlocks| writer_address.is_some_and(|address| !blocks.contains(address));
    let subnet_group = subnet_group(databases, &described).await?;
    let (network, derived) = match given_network {
        Some(network) => {
            if let Some(group) = &subnet_group
                && group.vpc_id != network.vpc_id
            {
                return Err(Error::property(
                    "SubnetIds",
                    format!(
                        "the subnets are in {} but {} is in {} (DB subnet group {}); give subnets of the database's VPC, or none to use its subnet group",
                        network.vpc_id,
                        described.what(),
                        group.vpc_id,
                        group.name
                    ),
                ));
            }
            zones::check_placements(&described, subnet_group.as_ref(), &network, checks)?;
            zones::check_consumer_zones(&aws.ec2, spec, &network).await?;
            (network, None)
        }
        None => {
            let group = subnet_group.as_ref().ok_or_else(|| {
                Error::property(
                    "SubnetIds",
                    format!("required: {} has no DB subnet group to take them from", described.what()),
                )
            })?;
            let (listed, excluded) = tokio::try_join!(
                Box::pin(network::vpc_subnets(&aws.ec2, &group.vpc_id)),
                Box::pin(network::zones_without_load_balancers(&aws.ec2)),
            )?;
            let needs = Needs {
                group,
                placements: &described.placements,
                consumer_zone_ids: &spec.consumer_zone_ids,
                excluded_zones: &excluded,
            };
            let derived = DerivedSubnets::choose(&aws.ec2, &needs, listed, checks).await?;
            info!(database = database.as_given(), subnet_group = %group.name, subnets = ?derived.chosen(), "subnets derived from the database");
            let needs_vpc = |subnets: &VpcBlocks| spec.security_group_ids.is_empty() || outside(subnets);
            let network = derived.network(&aws.ec2, &group.vpc_id, &spec.security_group_ids, needs_vpc).await?;
            (network, Some(derived))
        }
    };
    let port = port(spec, &described)?;
    check_vpc(spec, &network)?;
    // A writer outside the subnets given: is it inside the VPC at all?
    let network = match outside(&network.blocks) {
        false => network,
        true => network.with_vpc_blocks(&aws.ec2).await?,
    };
    let resolved = Resolved {
        subnet_ids: network.subnets.keys().cloned().collect(),
        network,
        port,
        target_ips: writer_address.into_iter().collect(),
        follows: Some(described.canonical(database.as_given()).to_string()),
        database_security_groups: described.security_groups.iter().cloned().collect(),
        keep_targets: writer.is_none(),
    };
    Ok(Resolution { resolved, writer, derived })
}

async fn subnet_group(databases: &Databases, described: &Described) -> Result<Option<SubnetGroup>> {
    match (&described.subnet_group, &described.subnet_group_name) {
        (Some(group), _) => Ok(Some(group.clone())),
        (None, Some(name)) => databases.subnet_group(name).await.map(Some),
        (None, None) => Ok(None),
    }
}

fn check_vpc(spec: &Spec, network: &Network) -> Result<()> {
    match &spec.vpc_id {
        Some(vpc_id) if *vpc_id != network.vpc_id => Err(Error::property(
            "VpcId",
            format!(
                "{vpc_id} is given, but the subnets ({}) are in {}",
                network.subnets.keys().cloned().collect::<Vec<_>>().join(", "),
                network.vpc_id
            ),
        )),
        _ => Ok(()),
    }
}

fn port(spec: &Spec, described: &Described) -> Result<u16> {
    match (spec.port, described.port) {
        (Some(given), Some(actual)) if given != actual => Err(Error::property(
            "Port",
            format!("{given} is given but {} listens on {actual}; give {actual} or leave Port out", described.what()),
        )),
        (Some(given), _) => Ok(given),
        (None, actual) => Ok(actual.unwrap_or(DEFAULT_PORT)),
    }
}
