//! The network the chain lives in, checked before anything is created: AWS's
//! own checks would only fire halfway through the chain (and an emulator skips
//! some of them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use aws_sdk_ec2::types::Filter;

use crate::error::{Error, Result};

/// An Availability Zone by name (which differs between accounts) and ID (which does not).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Zone {
    pub name: String,
    pub id: String,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub vpc_id: String,
    /// Subnet ID → its zone.
    pub subnets: BTreeMap<String, Zone>,
    /// The VPC's address blocks; or, when nothing needed more (no security group of
    /// the chain's own to open to the VPC, every target inside a subnet), just the
    /// subnets' blocks, which is enough to tell the targets are inside the VPC.
    pub blocks: VpcBlocks,
    pub blocks_are_vpc: bool,
}

/// A VPC's IPv4 blocks as (network, prefix length).
#[derive(Debug, Clone, Default)]
pub struct VpcBlocks(pub Vec<(Ipv4Addr, u8)>);

impl VpcBlocks {
    /// "10.0.0.0/16", …
    pub fn cidrs(&self) -> Vec<String> {
        self.0.iter().map(|(net, len)| format!("{net}/{len}")).collect()
    }

    /// Whether `ip` is inside the VPC; targets outside it (peered VPCs, on-premises)
    /// must be registered for all zones.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.iter().any(|(net, len)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(*net) & mask
        })
    }
}

impl Network {
    /// The zones of the subnets, sorted by name.
    pub fn zones(&self) -> Vec<Zone> {
        let zones: BTreeSet<Zone> = self.subnets.values().cloned().collect();
        zones.into_iter().collect()
    }

    /// The zones of those of its subnets that are in `subnets`.
    pub fn zones_of(&self, subnets: &BTreeSet<String>) -> Vec<Zone> {
        let zones: BTreeSet<Zone> =
            self.subnets.iter().filter(|(id, _)| subnets.contains(*id)).map(|(_, zone)| zone.clone()).collect();
        zones.into_iter().collect()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.blocks.contains(ip)
    }

    /// This network with the VPC's own blocks, read if only the subnets' were.
    pub async fn with_vpc_blocks(mut self, ec2: &aws_sdk_ec2::Client) -> Result<Network> {
        if !self.blocks_are_vpc {
            self.blocks = vpc_blocks(ec2, &self.vpc_id).await?;
            self.blocks_are_vpc = true;
        }
        Ok(self)
    }
}

/// A subnet of a VPC as a listing gives it: where it is and how much room it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcSubnet {
    pub id: String,
    pub zone: Zone,
    /// Free IPv4 addresses: a load balancer needs at least 8 (ELB guide, "Availability Zones for your NLB").
    pub free_addresses: i32,
    pub block: Option<(Ipv4Addr, u8)>,
}

/// Every subnet of the VPC, by ID.
pub async fn vpc_subnets(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<BTreeMap<String, VpcSubnet>> {
    let pages: Vec<_> = ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(Error::aws("reading the database's VPC subnets (DescribeSubnets)"))?;
    Ok(pages
        .into_iter()
        .flat_map(|page| page.subnets.unwrap_or_default())
        .filter_map(|subnet| {
            let id = subnet.subnet_id?;
            let zone = Zone { name: subnet.availability_zone?, id: subnet.availability_zone_id? };
            let block = subnet.cidr_block.as_deref().and_then(parse_block);
            Some((
                id.clone(),
                VpcSubnet { id, zone, free_addresses: subnet.available_ip_address_count.unwrap_or(0), block },
            ))
        })
        .collect())
}

/// The region's zones the account can use, each with its `ZoneType`.
async fn described_zones(ec2: &aws_sdk_ec2::Client) -> Result<Vec<(Zone, Option<String>)>> {
    let zones = ec2
        .describe_availability_zones()
        .send()
        .await
        .map_err(Error::aws("reading the region's Availability Zones (DescribeAvailabilityZones)"))?;
    Ok(zones
        .availability_zones
        .unwrap_or_default()
        .into_iter()
        .filter_map(|zone| Some((Zone { name: zone.zone_name?, id: zone.zone_id? }, zone.zone_type)))
        .collect())
}

/// The region's zones that cannot hold a load balancer, by name, with their type: Local
/// Zones and Wavelength Zones (`ZoneType` other than `availability-zone`; NLB guide,
/// "Update the Availability Zones for your Network Load Balancer": no subnet in a Local Zone).
pub async fn zones_without_load_balancers(ec2: &aws_sdk_ec2::Client) -> Result<BTreeMap<String, String>> {
    Ok(described_zones(ec2)
        .await?
        .into_iter()
        .filter_map(|(zone, kind)| Some((zone.name, kind.filter(|kind| kind != "availability-zone")?)))
        .collect())
}

/// The zones of this region the account can use, by zone ID.
pub async fn region_zones(ec2: &aws_sdk_ec2::Client) -> Result<BTreeMap<String, Zone>> {
    Ok(described_zones(ec2).await?.into_iter().map(|(zone, _)| (zone.id.clone(), zone)).collect())
}

/// The network of `chosen` subnets of a VPC already listed, with the given
/// security groups checked against it (none of it read again).
pub async fn of_listed(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    listed: &BTreeMap<String, VpcSubnet>,
    chosen: &BTreeSet<String>,
    security_group_ids: &BTreeSet<String>,
    needs_vpc_blocks: impl FnOnce(&VpcBlocks) -> bool,
) -> Result<Network> {
    let groups = security_groups(ec2, security_group_ids).await?;
    check_security_groups(security_group_ids, &groups, vpc_id)?;
    let picked = chosen.iter().filter_map(|id| listed.get(id));
    let subnets = picked.clone().map(|s| (s.id.clone(), s.zone.clone())).collect();
    let subnet_blocks = VpcBlocks(picked.filter_map(|s| s.block).collect());
    let network = Network { vpc_id: vpc_id.to_string(), subnets, blocks: subnet_blocks, blocks_are_vpc: false };
    match needs_vpc_blocks(&network.blocks) {
        true => network.with_vpc_blocks(ec2).await,
        false => Ok(network),
    }
}

/// Checks the subnets and security groups against the account, changing nothing.
/// The VPC's address blocks are read only if `needs_vpc_blocks` says the
/// subnets' own blocks are not enough (see [`Network::blocks`]).
pub async fn resolve(
    ec2: &aws_sdk_ec2::Client,
    subnet_ids: &BTreeSet<String>,
    security_group_ids: &BTreeSet<String>,
    needs_vpc_blocks: impl FnOnce(&VpcBlocks) -> bool,
) -> Result<Network> {
    const SUBNETS: &str = "SubnetIds";
    // A filter, not SubnetIds: it lists what exists instead of failing on the
    // first missing ID, so the error can name every one that is missing.
    let (subnets, groups) = tokio::try_join!(
        async {
            ec2.describe_subnets()
                .filters(
                    Filter::builder().name("subnet-id").set_values(Some(subnet_ids.iter().cloned().collect())).build(),
                )
                .send()
                .await
                .map_err(Error::aws("reading the subnets (DescribeSubnets)"))
        },
        security_groups(ec2, security_group_ids),
    )?;
    let subnets = subnets.subnets.unwrap_or_default();

    let found: BTreeSet<&str> = subnets.iter().filter_map(|s| s.subnet_id.as_deref()).collect();
    let missing: Vec<&str> = subnet_ids.iter().map(String::as_str).filter(|id| !found.contains(id)).collect();
    if !missing.is_empty() {
        return Err(Error::property(SUBNETS, format!("{} not found in this account and region", missing.join(", "))));
    }

    let mut vpc_of: Vec<(&str, &str)> = Vec::new();
    let mut by_zone: BTreeMap<&str, &str> = BTreeMap::new();
    let mut zones = BTreeMap::new();
    for subnet in &subnets {
        let (Some(id), Some(vpc), Some(zone), Some(zone_id)) = (
            subnet.subnet_id.as_deref(),
            subnet.vpc_id.as_deref(),
            subnet.availability_zone.as_deref(),
            subnet.availability_zone_id.as_deref(),
        ) else {
            return Err(Error::Unexpected {
                step: "reading the subnets",
                message: "DescribeSubnets returned a subnet without ID, VPC or zone".into(),
            });
        };
        if let Some((other, other_vpc)) = vpc_of.iter().find(|(_, v)| *v != vpc) {
            return Err(Error::property(
                SUBNETS,
                format!("{other} is in {other_vpc} but {id} is in {vpc}; all subnets must be in one VPC"),
            ));
        }
        vpc_of.push((id, vpc));
        if let Some(other) = by_zone.insert(zone, id) {
            return Err(Error::property(
                SUBNETS,
                format!(
                    "{other} and {id} are both in {zone} ({zone_id}); a load balancer takes at most one subnet per Availability Zone"
                ),
            ));
        }
        zones.insert(id.to_string(), Zone { name: zone.to_string(), id: zone_id.to_string() });
    }
    let vpc_id = vpc_of.first().map(|(_, vpc)| vpc.to_string()).unwrap_or_default();
    check_security_groups(security_group_ids, &groups, &vpc_id)?;
    let subnet_blocks = VpcBlocks(subnets.iter().filter_map(|s| parse_block(s.cidr_block.as_deref()?)).collect());
    let (blocks, blocks_are_vpc) = match needs_vpc_blocks(&subnet_blocks) {
        true => (vpc_blocks(ec2, &vpc_id).await?, true),
        false => (subnet_blocks, false),
    };
    Ok(Network { vpc_id, subnets: zones, blocks, blocks_are_vpc })
}

fn parse_block(block: &str) -> Option<(Ipv4Addr, u8)> {
    let (net, len) = block.split_once('/')?;
    Some((net.parse().ok()?, len.parse().ok().filter(|len| *len <= 32)?))
}

pub async fn vpc_blocks(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<VpcBlocks> {
    let vpcs =
        ec2.describe_vpcs().vpc_ids(vpc_id).send().await.map_err(Error::aws("reading the VPC (DescribeVpcs)"))?;
    let blocks = vpcs
        .vpcs
        .unwrap_or_default()
        .into_iter()
        .flat_map(|vpc| {
            let associated =
                vpc.cidr_block_association_set.unwrap_or_default().into_iter().filter_map(|a| a.cidr_block);
            associated.chain(vpc.cidr_block)
        })
        .filter_map(|block| parse_block(&block))
        .collect();
    Ok(VpcBlocks(blocks))
}

/// The given security groups as (ID, VPC).
async fn security_groups(ec2: &aws_sdk_ec2::Client, ids: &BTreeSet<String>) -> Result<BTreeMap<String, String>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let groups = ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-id").set_values(Some(ids.iter().cloned().collect())).build())
        .send()
        .await
        .map_err(Error::aws("reading the security groups (DescribeSecurityGroups)"))?
        .security_groups
        .unwrap_or_default();
    Ok(groups.into_iter().filter_map(|g| Some((g.group_id?, g.vpc_id.unwrap_or_default()))).collect())
}

fn check_security_groups(ids: &BTreeSet<String>, found: &BTreeMap<String, String>, vpc_id: &str) -> Result<()> {
    const GROUPS: &str = "SecurityGroupIds";
    let missing: Vec<&str> = ids.iter().map(String::as_str).filter(|id| !found.contains_key(*id)).collect();
    if !missing.is_empty() {
        return Err(Error::property(GROUPS, format!("{} not found in this account and region", missing.join(", "))));
    }
    if let Some((id, vpc)) = found.iter().find(|(_, vpc)| *vpc != vpc_id) {
        return Err(Error::property(GROUPS, format!("{id} is in {vpc}, not in {vpc_id} where the subnets are")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_checks_every_block() {
        let network = Network {
            vpc_id: "vpc-1".into(),
            subnets: BTreeMap::new(),
            blocks: VpcBlocks(vec![("10.0.0.0".parse().unwrap(), 16), ("100.64.0.0".parse().unwrap(), 24)]),
            blocks_are_vpc: true,
        };
        assert!(network.contains("10.0.255.1".parse().unwrap()));
        assert!(network.contains("100.64.0.9".parse().unwrap()));
        assert!(!network.contains("10.1.0.1".parse().unwrap()));
        assert!(!network.contains("192.168.0.1".parse().unwrap()));
    }
}
