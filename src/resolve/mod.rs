//! The desired state resolved against the account: the spec's subnets, port and
//! targets, or those of the database it names. Reads only; every problem is an
//! error naming the property before anything is created.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tracing::info;

use crate::aws::Aws;
use crate::chain::network::{self, Network, VpcBlocks};
use crate::chain::{Progress, Resolved};
use crate::database::{Databases, Described, SubnetGroup, Writer};
use crate::error::{Error, Result};
use crate::spec::{DEFAULT_PORT, Spec, Target};

/// How long a CloudFormation request waits for a failover to settle before it fails.
const SETTLE_PATIENCE: Duration = Duration::from_secs(30);

/// The chain's inputs and, for a chain that follows a database, its writer now.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub resolved: Resolved,
    pub writer: Option<Writer>,
}

pub async fn resolve(aws: &Aws, databases: &Databases, spec: &Spec, progress: &Progress) -> Result<Resolution> {
    let database = match &spec.target {
        Target::Ips(ips) => {
            // The VPC's blocks: for a security group of the chain's own, or a target outside the subnets.
            let needs_vpc =
                |subnets: &VpcBlocks| spec.security_group_ids.is_empty() || ips.iter().any(|ip| !subnets.contains(*ip));
            let network = network::resolve(&aws.ec2, &spec.subnet_ids, &spec.security_group_ids, needs_vpc).await?;
            check_vpc(spec, &network)?;
            let resolved = Resolved {
                network,
                subnet_ids: spec.subnet_ids.clone(),
                port: spec.port.unwrap_or(DEFAULT_PORT),
                target_ips: ips.clone(),
                follows: None,
                database_security_groups: BTreeSet::new(),
            };
            return Ok(Resolution { resolved, writer: None });
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
    let ((described, writer), given_network) =
        tokio::try_join!(databases.writer(database, SETTLE_PATIENCE), given_network)?;
    let subnet_group = subnet_group(databases, &described).await?;
    let (subnet_ids, network) = match given_network {
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
            (spec.subnet_ids.clone(), network)
        }
        None => {
            let group = subnet_group.as_ref().ok_or_else(|| {
                Error::property(
                    "SubnetIds",
                    format!("required: {} has no DB subnet group to take them from", described.what()),
                )
            })?;
            let subnet_ids = one_per_zone(group);
            info!(database = database.as_given(), subnet_group = %group.name, subnets = ?subnet_ids, "subnets taken from the database's subnet group");
            let needs_vpc =
                |subnets: &VpcBlocks| spec.security_group_ids.is_empty() || !subnets.contains(writer.address);
            let network = network::resolve(&aws.ec2, &subnet_ids, &spec.security_group_ids, needs_vpc).await?;
            (subnet_ids, network)
        }
    };
    let port = port(spec, &described)?;
    check_vpc(spec, &network)?;
    // A writer outside the subnets given: is it inside the VPC at all?
    let network = match network.contains(writer.address) {
        true => network,
        false => network.with_vpc_blocks(&aws.ec2).await?,
    };
    check_zone(&writer, &network)?;
    let resolved = Resolved {
        network,
        subnet_ids,
        port,
        target_ips: BTreeSet::from([writer.address]),
        follows: Some(database.as_given().to_string()),
        database_security_groups: described.security_groups.iter().cloned().collect(),
    };
    Ok(Resolution { resolved, writer: Some(writer) })
}

async fn subnet_group(databases: &Databases, described: &Described) -> Result<Option<SubnetGroup>> {
    match (&described.subnet_group, &described.subnet_group_name) {
        (Some(group), _) => Ok(Some(group.clone())),
        (None, Some(name)) => databases.subnet_group(name).await.map(Some),
        (None, None) => Ok(None),
    }
}

/// One subnet per zone of the group; where a zone has several, the lowest ID, so
/// every request picks the same.
fn one_per_zone(group: &SubnetGroup) -> BTreeSet<String> {
    let mut by_zone: BTreeMap<&str, &str> = BTreeMap::new();
    for (subnet, zone) in &group.subnets {
        let pick = by_zone.entry(zone).or_insert(subnet);
        if subnet.as_str() < *pick {
            *pick = subnet;
        }
    }
    by_zone.into_values().map(str::to_string).collect()
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

/// AWS does not route to a target in a zone the load balancer lacks, even with
/// cross-zone load balancing on (ELB user guide, "Availability Zones for your NLB").
fn check_zone(writer: &Writer, network: &Network) -> Result<()> {
    let Some(zone) = &writer.zone else { return Ok(()) };
    let zones = network.zones();
    if zones.iter().any(|z| &z.name == zone) {
        return Ok(());
    }
    let served: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
    Err(Error::property(
        "SubnetIds",
        format!(
            "the database writer {} is in {zone}, where the load balancer has no subnet (it has {}); add a subnet in {zone}",
            writer.instance.as_deref().unwrap_or("instance"),
            served.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_subnet_per_zone_lowest_id_first() {
        let group = SubnetGroup {
            name: "g".into(),
            vpc_id: "vpc-1".into(),
            subnets: vec![
                ("subnet-0c".into(), "us-east-1a".into()),
                ("subnet-0b".into(), "us-east-1b".into()),
                ("subnet-0a".into(), "us-east-1a".into()),
            ],
        };
        assert_eq!(one_per_zone(&group), BTreeSet::from(["subnet-0a".to_string(), "subnet-0b".to_string()]));
    }
}
