//! Which zones the load balancer must serve, and with which subnets: the consumer
//! can place its endpoint only in zones the load balancer serves (PrivateLink
//! guide: consumers see only the zones both sides share), and AWS routes no traffic
//! to a target in a zone it does not serve, even with cross-zone load balancing on
//! (ELB guide, "Availability Zones for your NLB"), so every zone an instance of the
//! database can fail over to must be served too.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{error, info};

use crate::chain::network::{self, Network, VpcBlocks, VpcSubnet};
use crate::database::{Described, Placement, SubnetGroup};
use crate::error::{Error, Result};
use crate::spec::{CONSUMER_ZONES, Spec};

/// A load balancer subnet needs at least this many free addresses (ELB guide,
/// "Availability Zones for your NLB").
const MIN_FREE_ADDRESSES: i32 = 8;

/// What a zone of the database that the load balancer would not serve does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneChecks {
    /// It fails: a Create, or an Update that changes `Database` or `SubnetIds`.
    Strict,
    /// It is logged as an error: an Update that changes neither must not fail for
    /// what happened to the database since (a reader added in a new zone, say).
    Lenient,
}

/// What the derived subnets must cover.
pub struct Needs<'a> {
    pub group: &'a SubnetGroup,
    pub placements: &'a [Placement],
    pub consumer_zone_ids: &'a BTreeSet<String>,
    /// Zones that never hold a load balancer (Local, Wavelength), by name, with their type.
    pub excluded_zones: &'a BTreeMap<String, String>,
}

/// Subnets derived from the database: one per zone that needs one, and the VPC's
/// subnets as listed, to extend an existing chain with.
#[derive(Debug, Clone)]
pub struct DerivedSubnets {
    listed: BTreeMap<String, VpcSubnet>,
    /// Zone name → the subnet chosen there.
    chosen: BTreeMap<String, String>,
}

/// Why a zone must be served, strongest last.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reason {
    SubnetGroup,
    Instance(String),
    Consumer(String),
}

impl DerivedSubnets {
    /// One subnet in each zone of the DB subnet group, of the database's instances
    /// and of the consumer: the DB subnet group's first, else the VPC's other
    /// subnets; the lowest ID among those with 8 free addresses, so every request
    /// chooses the same.
    pub async fn choose(
        ec2: &aws_sdk_ec2::Client,
        needs: &Needs<'_>,
        listed: BTreeMap<String, VpcSubnet>,
        checks: ZoneChecks,
    ) -> Result<DerivedSubnets> {
        let mut wanted: BTreeMap<String, Reason> = BTreeMap::new();
        let mut want = |zone: &str, reason: Reason| {
            let entry = wanted.entry(zone.to_string()).or_insert(reason.clone());
            *entry = (*entry).clone().max(reason);
        };
        for (_, zone) in &needs.group.subnets {
            want(zone, Reason::SubnetGroup);
        }
        for placement in needs.placements {
            want(&placement.zone, Reason::Instance(placement.instance.clone()));
        }
        let mut errors = Vec::new();
        let unlisted: Vec<&String> =
            needs.consumer_zone_ids.iter().filter(|id| !listed.values().any(|s| &s.zone.id == *id)).collect();
        for id in needs.consumer_zone_ids {
            if let Some(subnet) = listed.values().find(|s| &s.zone.id == id) {
                want(&subnet.zone.name, Reason::Consumer(id.clone()));
            }
        }
        if !unlisted.is_empty() {
            let region = network::region_zones(ec2).await?;
            for id in unlisted {
                errors.push(match region.get(id) {
                    None => not_in_region(id, &region),
                    Some(zone) => Error::property(
                        CONSUMER_ZONES,
                        format!(
                            "{id} ({} in this account) has no subnet of the database's VPC {}, so the load balancer cannot serve it; create a subnet there with at least {MIN_FREE_ADDRESSES} free addresses, or leave {id} out",
                            zone.name, needs.group.vpc_id
                        ),
                    ),
                });
            }
        }

        let mut chosen = BTreeMap::new();
        for (zone, reason) in wanted {
            if let Some(kind) = needs.excluded_zones.get(&zone) {
                match reason {
                    Reason::Consumer(id) => errors.push(Error::property(
                        CONSUMER_ZONES,
                        format!("{id} ({zone}) is a {kind}, where AWS places no load balancer; leave it out, and have the consumer place its endpoint in an Availability Zone"),
                    )),
                    _ => info!(%zone, %kind, "leaving out a zone where AWS places no load balancer; cross-zone load balancing reaches the database there"),
                }
                continue;
            }
            let in_group = needs.group.subnets.iter().filter(|(_, z)| *z == zone).map(|(id, _)| id);
            let usable = |id: &&String| listed.get(*id).is_some_and(|s| s.free_addresses >= MIN_FREE_ADDRESSES);
            let mut group_picks: Vec<&String> = in_group.filter(usable).collect();
            group_picks.sort();
            let pick = group_picks
                .first()
                .copied()
                .or_else(|| listed.values().filter(|s| s.zone.name == zone).map(|s| &s.id).find(|id| usable(id)));
            if let Some(subnet) = pick {
                chosen.insert(zone, subnet.clone());
                continue;
            }
            let room = crowded(&listed, &zone);
            match reason {
                Reason::SubnetGroup => {
                    info!(%zone, "no subnet of the DB subnet group's zone {zone} has room for the load balancer ({room}); leaving the zone out");
                }
                Reason::Consumer(id) => errors.push(Error::property(
                    CONSUMER_ZONES,
                    format!(
                        "no subnet of {} in {id} ({zone}) has the {MIN_FREE_ADDRESSES} free addresses a load balancer needs ({room}); free some, or leave {id} out",
                        needs.group.vpc_id
                    ),
                )),
                Reason::Instance(instance) => {
                    let problem = format!(
                        "the database's instance {instance} is in {zone}, where no subnet of {} has the {MIN_FREE_ADDRESSES} free addresses a load balancer needs ({room}), so a failover to it would cut the path; free some, or give SubnetIds",
                        needs.group.vpc_id
                    );
                    match checks {
                        ZoneChecks::Strict => errors.push(Error::property("SubnetIds", problem)),
                        ZoneChecks::Lenient => error!(%zone, %instance, "{problem}"),
                    }
                }
            }
        }
        Error::collect(errors)?;
        Ok(DerivedSubnets { listed, chosen })
    }

    pub fn chosen(&self) -> BTreeSet<&String> {
        self.chosen.values().collect()
    }

    /// The network of the chosen subnets.
    pub async fn network(
        &self,
        ec2: &aws_sdk_ec2::Client,
        vpc_id: &str,
        security_group_ids: &BTreeSet<String>,
        needs_vpc_blocks: impl FnOnce(&VpcBlocks) -> bool,
    ) -> Result<Network> {
        let chosen = self.chosen.values().cloned().collect();
        network::of_listed(ec2, vpc_id, &self.listed, &chosen, security_group_ids, needs_vpc_blocks).await
    }

    /// Makes `network` the `current` subnets of a chain plus a chosen one in every
    /// zone they do not cover.
    pub fn extend(&self, network: &mut Network, current: &BTreeSet<String>) {
        let mut subnets: BTreeMap<String, _> =
            current.iter().filter_map(|id| Some((id.clone(), self.listed.get(id)?.zone.clone()))).collect();
        let served: BTreeSet<String> = subnets.values().map(|zone| zone.name.clone()).collect();
        for (zone, subnet) in &self.chosen {
            if !served.contains(zone)
                && let Some(listed) = self.listed.get(subnet)
            {
                subnets.insert(subnet.clone(), listed.zone.clone());
            }
        }
        if !network.blocks_are_vpc {
            network.blocks = VpcBlocks(subnets.keys().filter_map(|id| self.listed.get(id)?.block).collect());
        }
        network.subnets = subnets;
    }
}

fn crowded(listed: &BTreeMap<String, VpcSubnet>, zone: &str) -> String {
    let there: Vec<String> = listed
        .values()
        .filter(|s| s.zone.name == zone)
        .map(|s| format!("{}: {} free", s.id, s.free_addresses))
        .collect();
    if there.is_empty() { "it has no subnet there".to_string() } else { there.join(", ") }
}

fn not_in_region(id: &str, region: &BTreeMap<String, network::Zone>) -> Error {
    let known: Vec<&str> = region.keys().map(String::as_str).collect();
    Error::property(CONSUMER_ZONES, format!("{id} is not a zone of this region (its zones are {})", known.join(", ")))
}

/// With `SubnetIds` given: every zone holding an instance of the database (a
/// failover target) must be served.
pub fn check_placements(
    described: &Described,
    group: Option<&SubnetGroup>,
    network: &Network,
    checks: ZoneChecks,
) -> Result<()> {
    let served: BTreeSet<&str> = network.subnets.values().map(|zone| zone.name.as_str()).collect();
    let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for placement in &described.placements {
        if !served.contains(placement.zone.as_str()) {
            missing.entry(&placement.zone).or_default().push(&placement.instance);
        }
    }
    let mut problems = Vec::new();
    for (zone, instances) in missing {
        let suggestion = group
            .and_then(|g| g.subnets.iter().filter(|(_, z)| z == zone).map(|(id, _)| id).min())
            .map(|id| format!(" (for example {id}, of its DB subnet group)"))
            .unwrap_or_default();
        let problem = format!(
            "{} of {} is in {zone}, where the load balancer has no subnet (it has {}), so a failover to it would cut the path; add a subnet in {zone} to SubnetIds{suggestion}",
            instances.join(" and "),
            described.what(),
            served.iter().copied().collect::<Vec<_>>().join(", ")
        );
        match checks {
            ZoneChecks::Strict => problems.push(Error::property("SubnetIds", problem)),
            ZoneChecks::Lenient => error!(zone, "{problem}"),
        }
    }
    Error::collect(problems)
}

/// Every consumer zone must be served by the load balancer's subnets.
pub async fn check_consumer_zones(ec2: &aws_sdk_ec2::Client, spec: &Spec, network: &Network) -> Result<()> {
    let served: BTreeSet<&str> = network.subnets.values().map(|zone| zone.id.as_str()).collect();
    let missing: Vec<&String> = spec.consumer_zone_ids.iter().filter(|id| !served.contains(id.as_str())).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let (region, listed) = tokio::try_join!(network::region_zones(ec2), network::vpc_subnets(ec2, &network.vpc_id))?;
    let problems = missing.into_iter().map(|id| {
        let Some(zone) = region.get(id) else { return not_in_region(id, &region) };
        let there = listed.values().filter(|s| &s.zone.id == id).map(|s| s.id.as_str()).min();
        let advice = match there {
            Some(subnet) => format!("the VPC has {subnet} there: add it to SubnetIds"),
            None => format!(
                "the VPC {} has no subnet there: create one and add it to SubnetIds, or leave {id} out",
                network.vpc_id
            ),
        };
        Error::property(
            CONSUMER_ZONES,
            format!(
                "{id} ({} in this account) is not served, as no subnet in SubnetIds is there (they cover {}); {advice}",
                zone.name,
                served.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        )
    });
    Error::collect(problems.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::network::Zone;

    fn subnet(id: &str, zone: &str, zone_id: &str, free: i32) -> (String, VpcSubnet) {
        let zone = Zone { name: zone.into(), id: zone_id.into() };
        (id.to_string(), VpcSubnet { id: id.into(), zone, free_addresses: free, block: None })
    }

    fn group(subnets: &[(&str, &str)]) -> SubnetGroup {
        SubnetGroup {
            name: "g".into(),
            vpc_id: "vpc-1".into(),
            subnets: subnets.iter().map(|(id, zone)| (id.to_string(), zone.to_string())).collect(),
        }
    }

    fn listed() -> BTreeMap<String, VpcSubnet> {
        BTreeMap::from([
            subnet("subnet-0a", "us-east-1a", "use1-az6", 200),
            subnet("subnet-0b", "us-east-1a", "use1-az6", 200),
            subnet("subnet-0c", "us-east-1b", "use1-az1", 3),
            subnet("subnet-0d", "us-east-1b", "use1-az1", 100),
            subnet("subnet-0e", "us-east-1d", "use1-az4", 100),
        ])
    }

    async fn choose(needs: &Needs<'_>) -> Result<DerivedSubnets> {
        // Never called: every zone asked for is listed.
        let config = aws_sdk_ec2::Config::builder().behavior_version_latest().build();
        DerivedSubnets::choose(&aws_sdk_ec2::Client::from_conf(config), needs, listed(), ZoneChecks::Strict).await
    }

    #[tokio::test]
    async fn the_subnet_group_first_then_the_vpc_lowest_id_with_room() {
        let group = group(&[("subnet-0b", "us-east-1a"), ("subnet-0a", "us-east-1a"), ("subnet-0c", "us-east-1b")]);
        let placements = [Placement { zone: "us-east-1b".into(), instance: "orders-2".into() }];
        let consumer = BTreeSet::from(["use1-az4".to_string()]);
        let needs = Needs {
            group: &group,
            placements: &placements,
            consumer_zone_ids: &consumer,
            excluded_zones: &BTreeMap::new(),
        };
        let derived = choose(&needs).await.unwrap();
        // 0c is the group's in us-east-1b but has 3 free addresses: the VPC's 0d instead.
        assert_eq!(
            derived.chosen,
            BTreeMap::from([
                ("us-east-1a".to_string(), "subnet-0a".to_string()),
                ("us-east-1b".to_string(), "subnet-0d".to_string()),
                ("us-east-1d".to_string(), "subnet-0e".to_string()),
            ])
        );
    }

    #[tokio::test]
    async fn a_chain_keeps_its_subnets_and_gains_only_missing_zones() {
        let group = group(&[("subnet-0a", "us-east-1a"), ("subnet-0d", "us-east-1b")]);
        let needs = Needs {
            group: &group,
            placements: &[],
            consumer_zone_ids: &BTreeSet::new(),
            excluded_zones: &BTreeMap::new(),
        };
        let derived = choose(&needs).await.unwrap();
        let mut network = Network {
            vpc_id: "vpc-1".into(),
            subnets: BTreeMap::new(),
            blocks: VpcBlocks::default(),
            blocks_are_vpc: true,
        };
        // The chain has 0b in us-east-1a (the group now prefers 0a there) and no subnet in us-east-1b.
        derived.extend(&mut network, &BTreeSet::from(["subnet-0b".to_string()]));
        assert_eq!(network.subnets.keys().collect::<Vec<_>>(), ["subnet-0b", "subnet-0d"]);
    }

    #[tokio::test]
    async fn an_instance_zone_without_room_fails_naming_subnet_ids() {
        let group = group(&[("subnet-0a", "us-east-1a")]);
        let placements = [Placement { zone: "us-east-1c".into(), instance: "orders-3".into() }];
        let needs = Needs {
            group: &group,
            placements: &placements,
            consumer_zone_ids: &BTreeSet::new(),
            excluded_zones: &BTreeMap::new(),
        };
        let err = choose(&needs).await.unwrap_err().to_string();
        assert!(err.starts_with("SubnetIds: the database's instance orders-3 is in us-east-1c"), "{err}");
        assert!(err.contains("it has no subnet there"), "{err}");
    }

    #[tokio::test]
    async fn zones_without_load_balancers_are_left_out_unless_the_consumer_needs_them() {
        let group = group(&[("subnet-0a", "us-east-1a"), ("subnet-0e", "us-east-1d")]);
        let placements = [Placement { zone: "us-east-1d".into(), instance: "orders-2".into() }];
        let local = BTreeMap::from([("us-east-1d".to_string(), "local-zone".to_string())]);
        let config = aws_sdk_ec2::Config::builder().behavior_version_latest().build();
        let ec2 = aws_sdk_ec2::Client::from_conf(config);
        let none = BTreeSet::new();
        let needs = Needs { group: &group, placements: &placements, consumer_zone_ids: &none, excluded_zones: &local };
        let derived = DerivedSubnets::choose(&ec2, &needs, listed(), ZoneChecks::Strict).await.unwrap();
        assert_eq!(derived.chosen, BTreeMap::from([("us-east-1a".to_string(), "subnet-0a".to_string())]));
        let consumer = BTreeSet::from(["use1-az4".to_string()]);
        let needs = Needs { group: &group, placements: &[], consumer_zone_ids: &consumer, excluded_zones: &local };
        let err = DerivedSubnets::choose(&ec2, &needs, listed(), ZoneChecks::Strict).await.unwrap_err().to_string();
        assert!(err.starts_with("ConsumerAvailabilityZoneIds: use1-az4 (us-east-1d) is a local-zone"), "{err}");
    }
}
