//! The TCP target group of type `ip` and the writer's address registered in it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::types::{ProtocolEnum, TargetDescription, TargetGroupAttribute, TargetHealthStateEnum, TargetTypeEnum};

use super::poll::{self, TARGET_GROUP_NOT_FOUND};
use super::tags::{self, Tags};
use super::{Desired, Progress};
use crate::error::{Error, Result, code_of};

/// Tells AWS a target outside the VPC (peering, Transit Gateway, on-premises) may take traffic from every zone.
const ALL_ZONES: &str = "all";

/// When the writer moves, connections still open to the old one (now a reader,
/// or gone) are cut so the importer reconnects to the new writer; without this a
/// deregistered target that stays healthy keeps its connections (NLB target
/// group attributes, `deregistration_delay.connection_termination.enabled`).
/// The delay is short because an address deregistered moments ago cannot be
/// registered again until it has passed, and a failback needs exactly that.
const ATTRIBUTES: [(&str, &str); 2] =
    [("deregistration_delay.connection_termination.enabled", "true"), ("deregistration_delay.timeout_seconds", "10")];

/// Health checks sized for failover. With AWS's TCP defaults (every 30 s, 5 in a
/// row to be healthy; ELB API reference, CreateTargetGroup) a new writer sits in
/// `initial`, taking no traffic, for about two and a half minutes after each
/// failover; with these, about 20 s. Every check is a TCP connect that MySQL
/// counts toward `max_connect_errors` (README, "MySQL and health checks").
pub const HEALTH_CHECK: HealthCheck = HealthCheck { interval: 10, timeout: 5, healthy: 2, unhealthy: 2 };

/// A target group's health check timing, in seconds and consecutive checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: i32,
    pub timeout: i32,
    pub healthy: i32,
    pub unhealthy: i32,
}

#[derive(Debug, Clone)]
pub struct TargetGroup {
    pub arn: String,
    pub port: u16,
    pub vpc_id: String,
    /// As AWS describes it; None when only a tag index listed the target group.
    pub health_check: Option<HealthCheck>,
    pub generation: String,
    pub tags: BTreeMap<String, String>,
}

impl TargetGroup {
    fn from_sdk(tg: elbv2::types::TargetGroup) -> Self {
        let health_check = HealthCheck {
            interval: tg.health_check_interval_seconds.unwrap_or_default(),
            timeout: tg.health_check_timeout_seconds.unwrap_or_default(),
            healthy: tg.healthy_threshold_count.unwrap_or_default(),
            unhealthy: tg.unhealthy_threshold_count.unwrap_or_default(),
        };
        TargetGroup {
            arn: tg.target_group_arn.unwrap_or_default(),
            port: tg.port.and_then(|p| u16::try_from(p).ok()).unwrap_or_default(),
            vpc_id: tg.vpc_id.unwrap_or_default(),
            health_check: Some(health_check),
            generation: String::new(),
            tags: BTreeMap::new(),
        }
    }
}

/// A target group as a tag index lists it: ARN and tags; the rest is read when needed.
pub fn from_index(arn: String, tags: BTreeMap<String, String>, generation: String) -> TargetGroup {
    TargetGroup { arn, port: 0, vpc_id: String::new(), health_check: None, generation, tags }
}

/// The target groups with these ARNs, or called these names, as AWS describes them now (no tags).
pub async fn describe(elb: &elbv2::Client, arns: Vec<String>, names: Vec<String>) -> Result<Vec<TargetGroup>> {
    if arns.is_empty() && names.is_empty() {
        return Ok(Vec::new());
    }
    let answer = elb
        .describe_target_groups()
        .set_target_group_arns(Some(arns).filter(|a| !a.is_empty()))
        .set_names(Some(names).filter(|n| !n.is_empty()))
        .send()
        .await;
    match answer {
        Ok(answer) => Ok(answer.target_groups.unwrap_or_default().into_iter().map(TargetGroup::from_sdk).collect()),
        Err(err) if code_of(&err) == Some("TargetGroupNotFound") => Ok(Vec::new()),
        Err(err) => Err(Error::aws("reading the target group (DescribeTargetGroups)")(err)),
    }
}

/// The target groups a load balancer's listeners forward to.
pub async fn by_load_balancer(elb: &elbv2::Client, lb_arn: &str) -> Result<Vec<TargetGroup>> {
    match elb.describe_target_groups().load_balancer_arn(lb_arn).send().await {
        Ok(answer) => Ok(answer.target_groups.unwrap_or_default().into_iter().map(TargetGroup::from_sdk).collect()),
        Err(err) if matches!(code_of(&err), Some("LoadBalancerNotFound" | "TargetGroupNotFound")) => Ok(Vec::new()),
        Err(err) => Err(Error::aws("reading the load balancer's target group (DescribeTargetGroups)")(err)),
    }
}

pub fn replacement_reasons(tg: &TargetGroup, want: &Desired<'_>) -> Vec<String> {
    let mut reasons = Vec::new();
    if tg.port != want.resolved.port {
        reasons
            .push(format!("Port: the target group listens on {} and AWS cannot change a target group's port", tg.port));
    }
    let vpc_id = &want.resolved.network.vpc_id;
    if &tg.vpc_id != vpc_id {
        reasons.push(format!("SubnetIds: the target group is in {}, the subnets in {vpc_id}", tg.vpc_id));
    }
    reasons
}

/// Creates the target group or brings an existing one's tags and attributes up to
/// date. Returns its ARN and whether this call created it.
pub async fn ensure(
    elb: &elbv2::Client,
    existing: Option<&TargetGroup>,
    want: &Desired<'_>,
    tags: &Tags,
    progress: &Progress,
) -> Result<(String, bool)> {
    if let Some(tg) = existing {
        tokio::try_join!(
            tags::sync_elb(elb, &tg.arn, &tg.tags, tags, progress),
            ensure_health_check(elb, tg, progress)
        )?;
        return Ok((tg.arn.clone(), false));
    }
    let _step = progress.step("creating the target group");
    let name = want.resource_name();
    let created = elb
        .create_target_group()
        .name(&name)
        .protocol(ProtocolEnum::Tcp)
        .port(i32::from(want.resolved.port))
        .vpc_id(&want.resolved.network.vpc_id)
        .target_type(TargetTypeEnum::Ip)
        .health_check_interval_seconds(HEALTH_CHECK.interval)
        .health_check_timeout_seconds(HEALTH_CHECK.timeout)
        .healthy_threshold_count(HEALTH_CHECK.healthy)
        .unhealthy_threshold_count(HEALTH_CHECK.unhealthy)
        .set_tags(Some(tags.elb()))
        .send()
        .await;
    let created = match created {
        Ok(created) => created,
        // An earlier attempt of the same request made it (the name carries the generation), or someone else did.
        Err(err) if code_of(&err) == Some("DuplicateTargetGroupName") => {
            let Some(tg) = adopt(elb, &name, tags).await? else {
                return Err(Error::aws("creating the target group (CreateTargetGroup)")(err));
            };
            return Box::pin(ensure(elb, Some(&tg), want, tags, progress)).await;
        }
        Err(err) => return Err(Error::aws("creating the target group (CreateTargetGroup)")(err)),
    };
    let arn =
        created.target_groups.and_then(|tgs| tgs.into_iter().next()).and_then(|tg| tg.target_group_arn).ok_or_else(
            || Error::Unexpected {
                step: "creating the target group",
                message: "CreateTargetGroup returned no ARN".into(),
            },
        )?;
    progress.record("target group", &arn);
    Ok((arn, true))
}

/// Brings a target group made before this release (AWS's defaults) to [`HEALTH_CHECK`].
async fn ensure_health_check(elb: &elbv2::Client, tg: &TargetGroup, progress: &Progress) -> Result<()> {
    match tg.health_check {
        Some(current) if current != HEALTH_CHECK => {
            progress.gate().await?;
            elb.modify_target_group()
                .target_group_arn(&tg.arn)
                .health_check_interval_seconds(HEALTH_CHECK.interval)
                .health_check_timeout_seconds(HEALTH_CHECK.timeout)
                .healthy_threshold_count(HEALTH_CHECK.healthy)
                .unhealthy_threshold_count(HEALTH_CHECK.unhealthy)
                .send()
                .await
                .map_err(Error::aws("setting the target group's health checks (ModifyTargetGroup)"))?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The target group called `name` if this chain's generation made it.
async fn adopt(elb: &elbv2::Client, name: &str, tags: &Tags) -> Result<Option<TargetGroup>> {
    let Some(mut tg) = describe(elb, Vec::new(), vec![name.to_string()]).await?.into_iter().next() else {
        return Ok(None);
    };
    tg.tags = tags::describe_elb(elb, vec![tg.arn.clone()]).await?.remove(&tg.arn).unwrap_or_default();
    Ok(tags.is_same_generation(&tg.tags).then_some(tg))
}

/// Sets the failover attributes on a chain that follows a database; one with
/// fixed addresses keeps AWS's defaults (the user moves its target, by Update).
/// A target group created just now has AWS's defaults, so it is not read first.
pub async fn ensure_failover_attributes(
    elb: &elbv2::Client,
    arn: &str,
    fresh: bool,
    want: &Desired<'_>,
    progress: &Progress,
) -> Result<()> {
    if want.resolved.follows.is_none() {
        return Ok(());
    }
    if !fresh {
        let current = elb
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(Error::aws("reading the target group's attributes (DescribeTargetGroupAttributes)"))?
            .attributes
            .unwrap_or_default();
        let set = |key: &str, value: &str| {
            current.iter().any(|a| a.key.as_deref() == Some(key) && a.value.as_deref() == Some(value))
        };
        if ATTRIBUTES.iter().all(|(key, value)| set(key, value)) {
            return Ok(());
        }
        progress.gate().await?;
    }
    poll::settled(fresh, TARGET_GROUP_NOT_FOUND, || {
        elb.modify_target_group_attributes()
            .target_group_arn(arn)
            .set_attributes(Some(
                ATTRIBUTES.iter().map(|(k, v)| TargetGroupAttribute::builder().key(*k).value(*v).build()).collect(),
            ))
            .send()
    })
    .await
    .map_err(Error::aws("setting the target group's deregistration attributes (ModifyTargetGroupAttributes)"))?;
    Ok(())
}

/// Makes the wanted addresses the only targets. A target group created just now
/// has none, so it is not read first.
pub async fn ensure_targets(
    elb: &elbv2::Client,
    arn: &str,
    fresh: bool,
    want: &Desired<'_>,
    progress: &Progress,
) -> Result<()> {
    let _step = progress.step("registering the database writer as the target");
    let current = if fresh { Registered::new() } else { registered(elb, arn).await? };
    let network = &want.resolved.network;
    let wanted =
        Targets { ips: &want.resolved.target_ips, port: want.resolved.port, in_vpc: &|ip| network.contains(ip) };
    set_targets(elb, arn, &current, &wanted, fresh).await?;
    Ok(())
}

/// The addresses a target group should hold, on `port`; `in_vpc` tells whether an
/// address is inside the target group's VPC.
pub struct Targets<'a> {
    pub ips: &'a BTreeSet<Ipv4Addr>,
    pub port: u16,
    pub in_vpc: &'a dyn Fn(Ipv4Addr) -> bool,
}

/// Makes the wanted addresses the only targets of an existing target group.
/// Returns the health read to decide it when nothing changed (it is still current).
pub async fn converge_targets(
    elb: &elbv2::Client,
    arn: &str,
    want: &Desired<'_>,
    progress: &Progress,
) -> Result<Option<Vec<super::TargetHealth>>> {
    let _step = progress.step("registering the database writer as the target");
    let read = super::health::read(elb, arn, false).await?;
    if want.resolved.keep_targets {
        return Ok(Some(read));
    }
    let current: Registered = read.iter().filter(|t| t.state != "draining").map(|t| (t.id.clone(), t.port)).collect();
    let network = &want.resolved.network;
    let wanted =
        Targets { ips: &want.resolved.target_ips, port: want.resolved.port, in_vpc: &|ip| network.contains(ip) };
    let port = i32::from(want.resolved.port);
    if current != want.resolved.target_ips.iter().map(|ip| (ip.to_string(), port)).collect() {
        progress.gate().await?;
    }
    let change = set_targets(elb, arn, &current, &wanted, false).await?;
    Ok((change.registered.is_empty() && change.deregistered.is_empty()).then_some(read))
}

/// A registered target: address (or other ID) and port.
pub type Registered = BTreeSet<(String, i32)>;

/// The targets registered and staying. A draining target is on its way out:
/// one that is wanted again (a failback) must be registered again.
pub async fn registered(elb: &elbv2::Client, arn: &str) -> Result<Registered> {
    let health = elb
        .describe_target_health()
        .target_group_arn(arn)
        .send()
        .await
        .map_err(Error::aws("reading the registered targets (DescribeTargetHealth)"))?;
    Ok(health
        .target_health_descriptions
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.target_health.as_ref().and_then(|h| h.state.as_ref()) != Some(&TargetHealthStateEnum::Draining))
        .filter_map(|d| d.target.and_then(|t| Some((t.id?, t.port?))))
        .collect())
}

/// What `set_targets` changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TargetChange {
    pub registered: Vec<String>,
    pub deregistered: Vec<String>,
}

/// Registers the wanted addresses, then deregisters every other target, so the
/// writer is the only one and is never left without a target in between. `fresh`:
/// the target group was created moments ago.
pub async fn set_targets(
    elb: &elbv2::Client,
    arn: &str,
    current: &Registered,
    wanted: &Targets<'_>,
    fresh: bool,
) -> Result<TargetChange> {
    let registered = register(elb, arn, current, wanted, fresh).await?;
    let deregistered = deregister_others(elb, arn, current, wanted).await?;
    Ok(TargetChange { registered, deregistered })
}

/// Registers the wanted addresses that are not registered yet; returns them.
/// `fresh`: the target group was created just now and may not be found yet.
pub async fn register(
    elb: &elbv2::Client,
    arn: &str,
    current: &Registered,
    wanted: &Targets<'_>,
    fresh: bool,
) -> Result<Vec<String>> {
    let port = i32::from(wanted.port);
    let register: Vec<TargetDescription> = wanted
        .ips
        .iter()
        .filter(|ip| !current.contains(&(ip.to_string(), port)))
        .map(|ip| target(*ip, port, (wanted.in_vpc)(*ip)))
        .collect();
    if !register.is_empty() {
        poll::settled(fresh, TARGET_GROUP_NOT_FOUND, || {
            elb.register_targets().target_group_arn(arn).set_targets(Some(register.clone())).send()
        })
        .await
        .map_err(Error::aws("registering the database writer (RegisterTargets)"))?;
    }
    Ok(register.iter().filter_map(|t| t.id.clone()).collect())
}

/// Deregisters every target of `current` that is not wanted; returns their addresses.
pub async fn deregister_others(
    elb: &elbv2::Client,
    arn: &str,
    current: &Registered,
    wanted: &Targets<'_>,
) -> Result<Vec<String>> {
    let port = i32::from(wanted.port);
    let wanted_pairs: Registered = wanted.ips.iter().map(|ip| (ip.to_string(), port)).collect();
    let stale: Vec<&(String, i32)> = current.difference(&wanted_pairs).collect();
    if !stale.is_empty() {
        let deregister = stale.iter().map(|(id, port)| TargetDescription::builder().id(id).port(*port).build());
        elb.deregister_targets()
            .target_group_arn(arn)
            .set_targets(Some(deregister.collect()))
            .send()
            .await
            .map_err(Error::aws("deregistering old targets (DeregisterTargets)"))?;
    }
    Ok(stale.iter().map(|(id, _)| id.clone()).collect())
}

fn target(ip: Ipv4Addr, port: i32, in_vpc: bool) -> TargetDescription {
    let builder = TargetDescription::builder().id(ip.to_string()).port(port);
    let builder = if in_vpc { builder } else { builder.availability_zone(ALL_ZONES) };
    builder.build()
}

/// Deletes the target group. Right after its load balancer is deleted AWS may
/// still call it in use for a moment, so that is retried briefly.
pub async fn delete(elb: &elbv2::Client, arn: &str, progress: &Progress) -> Result<()> {
    let _step = progress.step("deleting the target group");
    let mut pause = Duration::from_secs(1);
    loop {
        match elb.delete_target_group().target_group_arn(arn).send().await {
            Ok(_) => return Ok(()),
            Err(err) if code_of(&err) == Some("TargetGroupNotFound") => return Ok(()),
            Err(err) if code_of(&err) == Some("ResourceInUse") && pause <= Duration::from_secs(16) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(err) => return Err(Error::aws("deleting the target group (DeleteTargetGroup)")(err)),
        }
    }
}
