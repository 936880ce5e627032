//! The internal Network Load Balancer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::types::{
    EnforceSecurityGroupInboundRulesOnPrivateLinkTrafficEnum as Enforce, IpAddressType, LoadBalancerAttribute,
    LoadBalancerSchemeEnum, LoadBalancerStateEnum, LoadBalancerTypeEnum,
};
use tracing::{info, warn};

use super::poll::{self, AcceptorState, LOAD_BALANCER_NOT_FOUND, Waited};
use super::refused_zones::{self, REFUSED_ZONES_TAG};
use super::tags::{self, Tags};
use super::{Desired, Progress};
use crate::error::{Error, Result, code_of};

const CROSS_ZONE: &str = "load_balancing.cross_zone.enabled";

#[derive(Debug, Clone)]
pub struct LoadBalancer {
    pub arn: String,
    pub name: String,
    pub dns_name: String,
    pub vpc_id: String,
    pub subnets: BTreeSet<String>,
    pub security_groups: BTreeSet<String>,
    /// `EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic` as AWS reports it (an emulator may not).
    pub enforce_inbound_on_private_link: Option<bool>,
    /// Whether it was active when described.
    pub active: bool,
    pub internal: bool,
    /// Subnet ID → zone name.
    pub zones: BTreeMap<String, String>,
    pub generation: String,
    pub tags: BTreeMap<String, String>,
}

impl LoadBalancer {
    fn from_sdk(lb: elbv2::types::LoadBalancer) -> Self {
        LoadBalancer {
            arn: lb.load_balancer_arn.unwrap_or_default(),
            name: lb.load_balancer_name.unwrap_or_default(),
            dns_name: lb.dns_name.unwrap_or_default(),
            vpc_id: lb.vpc_id.unwrap_or_default(),
            subnets: lb
                .availability_zones
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|az| az.subnet_id)
                .collect(),
            security_groups: lb.security_groups.unwrap_or_default().into_iter().collect(),
            enforce_inbound_on_private_link: lb
                .enforce_security_group_inbound_rules_on_private_link_traffic
                .map(|value| value.eq_ignore_ascii_case("on")),
            active: lb.state.and_then(|s| s.code) == Some(LoadBalancerStateEnum::Active),
            internal: lb.scheme == Some(LoadBalancerSchemeEnum::Internal),
            zones: lb
                .availability_zones
                .unwrap_or_default()
                .into_iter()
                .filter_map(|az| Some((az.subnet_id?, az.zone_name?)))
                .collect(),
            generation: String::new(),
            tags: BTreeMap::new(),
        }
    }
}

/// A load balancer as a tag index lists it: ARN and tags; the rest is read when needed.
pub fn from_index(arn: String, tags: BTreeMap<String, String>, generation: String) -> LoadBalancer {
    // arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/net/<name>/<id>
    let name = arn.rsplit('/').nth(1).unwrap_or_default().to_string();
    LoadBalancer {
        arn,
        name,
        dns_name: String::new(),
        vpc_id: String::new(),
        subnets: BTreeSet::new(),
        security_groups: BTreeSet::new(),
        enforce_inbound_on_private_link: None,
        active: false,
        internal: true,
        zones: BTreeMap::new(),
        generation,
        tags,
    }
}

/// The load balancers with these ARNs, as AWS describes them now (no tags).
pub async fn by_arns(elb: &elbv2::Client, arns: Vec<String>) -> Result<Vec<LoadBalancer>> {
    if arns.is_empty() {
        return Ok(Vec::new());
    }
    match elb.describe_load_balancers().set_load_balancer_arns(Some(arns)).send().await {
        Ok(answer) => Ok(answer.load_balancers.unwrap_or_default().into_iter().map(LoadBalancer::from_sdk).collect()),
        Err(err) if code_of(&err) == Some("LoadBalancerNotFound") => Ok(Vec::new()),
        Err(err) => Err(Error::aws("reading the load balancer (DescribeLoadBalancers)")(err)),
    }
}

/// The load balancer called `name`, if any: names are unique in a region, and a
/// lookup by name does not wait for a tag index to catch up.
pub async fn by_name(elb: &elbv2::Client, name: &str) -> Result<Option<LoadBalancer>> {
    match elb.describe_load_balancers().names(name).send().await {
        Ok(answer) => Ok(answer.load_balancers.unwrap_or_default().into_iter().next().map(LoadBalancer::from_sdk)),
        Err(err) if code_of(&err) == Some("LoadBalancerNotFound") => Ok(None),
        Err(err) => Err(Error::aws("looking for the load balancer (DescribeLoadBalancers)")(err)),
    }
}

/// The load balancer called `name` if it belongs to the generation of `tags`.
async fn adopt(elb: &elbv2::Client, name: &str, tags: &Tags) -> Result<Option<LoadBalancer>> {
    let Some(mut lb) = by_name(elb, name).await? else { return Ok(None) };
    lb.tags = tags::describe_elb(elb, vec![lb.arn.clone()]).await?.remove(&lb.arn).unwrap_or_default();
    Ok(tags.is_same_generation(&lb.tags).then_some(lb))
}

/// What AWS cannot change on an existing load balancer that is attached to an endpoint service.
pub fn replacement_reasons(lb: &LoadBalancer, want: &Desired<'_>) -> Vec<String> {
    let mut reasons = Vec::new();
    if lb.name != want.resource_name() {
        reasons.push(format!("Name: the load balancer is named {} and AWS cannot rename it", lb.name));
    }
    if lb.vpc_id != want.resolved.network.vpc_id {
        reasons.push(format!("SubnetIds: the subnets moved from {} to {}", lb.vpc_id, want.resolved.network.vpc_id));
    } else {
        // A zone's subnet is changed only by removing it, then adding the other (NLB guide,
        // "Update the Availability Zones for your Network Load Balancer"): the chain is replaced.
        let wanted_zones: BTreeMap<&str, &str> =
            want.resolved.network.subnets.iter().map(|(id, zone)| (zone.name.as_str(), id.as_str())).collect();
        for removed in lb.subnets.difference(&want.resolved.subnet_ids) {
            let zone = lb.zones.get(removed).map(String::as_str).unwrap_or_default();
            if let Some(other) = wanted_zones.get(zone).filter(|other| !lb.subnets.contains(**other)) {
                reasons.push(format!(
                    "SubnetIds: {other} would take the place of {removed} in {zone}, which AWS does only in two steps (remove, then add)"
                ));
            }
        }
    }
    if lb.security_groups.is_empty() && !want.spec.security_group_ids.is_empty() {
        reasons.push(
            "SecurityGroupIds: the load balancer has no security groups and AWS cannot add them later".to_string(),
        );
    }
    reasons
}

/// The subnets of `lb` that `want` leaves out (zones it no longer serves): AWS removes
/// them in place while no consumer's endpoint is associated (NLB guide, "Update the
/// Availability Zones for your Network Load Balancer").
pub fn removed_subnets(lb: &LoadBalancer, want: &Desired<'_>) -> Vec<String> {
    lb.subnets.difference(&want.resolved.subnet_ids).cloned().collect()
}

/// Creates the load balancer with `groups`, or brings an existing one's subnets,
/// security groups, PrivateLink enforcement and tags to what is wanted, leaving out the
/// zones AWS refuses a load balancer in where it can ([`refused_zones`]). Returns its
/// ARN, whether this call created it, and the subnets it has now.
pub async fn ensure(
    elb: &elbv2::Client,
    existing: Option<&LoadBalancer>,
    want: &Desired<'_>,
    groups: &BTreeSet<String>,
    tags: &Tags,
    progress: &Progress,
) -> Result<(String, bool, BTreeSet<String>)> {
    let enforce = want.spec.enforce_inbound_on_private_link;
    let mut refused = existing.map(|lb| refused_zones::recorded(&lb.tags)).unwrap_or_default();
    let Some(lb) = existing else {
        let _step = progress.step("creating the load balancer");
        loop {
            let subnets = refused_zones::usable(want, &refused);
            let tags = tags.with(REFUSED_ZONES_TAG, refused_zones::tag_value(&refused));
            let created = elb
                .create_load_balancer()
                .name(want.resource_name())
                .r#type(LoadBalancerTypeEnum::Network)
                .scheme(LoadBalancerSchemeEnum::Internal)
                .ip_address_type(IpAddressType::Ipv4)
                .set_subnets(Some(subnets.iter().cloned().collect()))
                // Only at creation: an NLB created without security groups can never get any.
                .set_security_groups(Some(groups.iter().cloned().collect()).filter(|g: &Vec<_>| !g.is_empty()))
                .set_tags(Some(tags.elb()))
                .send()
                .await;
            let created = match created {
                Ok(created) => created,
                // AWS returns the existing load balancer for the same name and settings
                // (CreateLoadBalancer "is idempotent", ELB API reference) and this error for other
                // settings: an earlier attempt of this request made it if it carries its generation.
                Err(err) if code_of(&err) == Some("DuplicateLoadBalancerName") => {
                    let Some(lb) = adopt(elb, &want.resource_name(), &tags).await? else {
                        return Err(Error::aws("creating the load balancer (CreateLoadBalancer)")(err));
                    };
                    return Box::pin(ensure(elb, Some(&lb), want, groups, &tags, progress)).await;
                }
                Err(err) => match leave_out_refused(&err, want, &subnets, &mut refused) {
                    Some(left_out) => {
                        left_out?;
                        continue;
                    }
                    None => return Err(Error::aws("creating the load balancer (CreateLoadBalancer)")(err)),
                },
            };
            let arn = created
                .load_balancers
                .and_then(|lbs| lbs.into_iter().next())
                .and_then(|lb| lb.load_balancer_arn)
                .ok_or_else(|| Error::Unexpected {
                    step: "creating the load balancer",
                    message: "CreateLoadBalancer returned no ARN".into(),
                })?;
            progress.record("load balancer", &arn);
            return Ok((arn, true, subnets));
        }
    };
    let mut subnets = refused_zones::usable(want, &refused);
    while lb.subnets != subnets {
        let _step = progress.step("adding subnets to the load balancer");
        progress.gate().await?;
        match elb
            .set_subnets()
            .load_balancer_arn(&lb.arn)
            .set_subnets(Some(subnets.iter().cloned().collect()))
            .send()
            .await
        {
            Ok(_) => break,
            Err(err) => match leave_out_refused(&err, want, &subnets, &mut refused) {
                Some(left_out) => {
                    left_out?;
                    subnets = refused_zones::usable(want, &refused);
                }
                // AWS keeps subnets while a consumer's endpoint is associated, and says so.
                None if !lb.subnets.is_subset(&subnets) && names_endpoints(&err) => {
                    let message = elbv2::error::ProvideErrorMetadata::message(&err).unwrap_or_default().to_string();
                    return Err(Error::NeedsNewChain(format!("AWS keeps the load balancer's subnets: {message}")));
                }
                None => return Err(Error::aws("changing the load balancer's subnets (SetSubnets)")(err)),
            },
        }
    }
    // Enforcement is set only with security groups (AWS reports it for a load balancer that has some).
    let enforcement_differs = !groups.is_empty() && lb.enforce_inbound_on_private_link != Some(enforce);
    if (&lb.security_groups != groups || enforcement_differs) && !lb.security_groups.is_empty() {
        set_security_groups(elb, &lb.arn, groups, enforce, false, progress).await?;
    }
    let tags = tags.with(REFUSED_ZONES_TAG, refused_zones::tag_value(&refused));
    tags::sync_elb(elb, &lb.arn, &lb.tags, &tags, progress).await?;
    Ok((lb.arn.clone(), false, subnets))
}

/// Whether AWS's error speaks of VPC endpoints (associations or connections).
fn names_endpoints<E: elbv2::error::ProvideErrorMetadata, R>(err: &elbv2::error::SdkError<E, R>) -> bool {
    let message = err.as_service_error().and_then(|e| e.message()).unwrap_or_default().to_ascii_lowercase();
    message.contains("endpoint")
}

/// When `err` is AWS refusing load balancers in zones of `subnets`: Ok once those zones
/// are added to `refused`, if each can be left out, else the error naming what to change.
/// None when `err` is something else.
fn leave_out_refused<E: elbv2::error::ProvideErrorMetadata, R>(
    err: &elbv2::error::SdkError<E, R>,
    want: &Desired<'_>,
    subnets: &BTreeSet<String>,
    refused: &mut BTreeSet<String>,
) -> Option<Result<()>> {
    let message = err.as_service_error().and_then(|e| e.message()).unwrap_or_default();
    let zones = refused_zones::named(code_of(err), message, want, subnets);
    if zones.is_empty() {
        return None;
    }
    if let Some(error) = zones.iter().find_map(|zone| refused_zones::must_serve(zone, want, message)) {
        return Some(Err(error));
    }
    let fewer = subnets
        .iter()
        .filter(|id| want.resolved.network.subnets.get(*id).is_none_or(|zone| !zones.iter().any(|z| z.id == zone.id)));
    if fewer.count() == 0 {
        let problem = format!(
            "AWS refuses load balancers in every zone derived: \"{message}\"; give SubnetIds in zones that take one"
        );
        return Some(Err(Error::property("SubnetIds", problem)));
    }
    for zone in zones {
        warn!(
            zone = %zone.name, zone_id = %zone.id, aws_said = message,
            "AWS refuses load balancers in this zone; leaving it out (a database instance there is still reached, with cross-zone load balancing), and remembering it on the load balancer"
        );
        refused.insert(zone.id);
    }
    Some(Ok(()))
}

/// For a load balancer created just now with `groups`: AWS turns PrivateLink
/// enforcement on for an NLB created with security groups, so "off" is set at once.
pub async fn ensure_new_enforcement(
    elb: &elbv2::Client,
    arn: &str,
    groups: &BTreeSet<String>,
    want: &Desired<'_>,
    progress: &Progress,
) -> Result<()> {
    let enforce = want.spec.enforce_inbound_on_private_link;
    if groups.is_empty() || enforce {
        return Ok(());
    }
    set_security_groups(elb, arn, groups, enforce, true, progress).await
}

/// Sets the groups and whether PrivateLink traffic must pass their inbound rules.
async fn set_security_groups(
    elb: &elbv2::Client,
    arn: &str,
    groups: &BTreeSet<String>,
    enforce: bool,
    fresh: bool,
    progress: &Progress,
) -> Result<()> {
    let _step = progress.step("setting the load balancer's security groups");
    progress.gate().await?;
    let enforce = if enforce { Enforce::On } else { Enforce::Off };
    poll::settled(fresh, LOAD_BALANCER_NOT_FOUND, || {
        elb.set_security_groups()
            .load_balancer_arn(arn)
            .set_security_groups(Some(groups.iter().cloned().collect()))
            .enforce_security_group_inbound_rules_on_private_link_traffic(enforce.clone())
            .send()
    })
    .await
    .map_err(Error::aws("setting the load balancer's security groups (SetSecurityGroups)"))?;
    Ok(())
}

/// Waits until the load balancer is active and returns it; a load balancer
/// created moments ago (`fresh`) may not be found yet. A `failed` one ends the wait at once.
pub async fn wait_active(
    elb: &elbv2::Client,
    arn: &str,
    fresh: bool,
    max_wait: Duration,
    progress: &Progress,
) -> Result<LoadBalancer> {
    const WHAT: &str = "waiting for the load balancer to become active (DescribeLoadBalancers)";
    let state = |lbs: &[elbv2::types::LoadBalancer]| lbs.first().and_then(|lb| lb.state.clone());
    let waited = poll::until(
        WHAT,
        || elb.describe_load_balancers().load_balancer_arns(arn).send(),
        |answer| match answer {
            Ok(output) => match state(output.load_balancers()).and_then(|s| s.code) {
                Some(LoadBalancerStateEnum::Active) => AcceptorState::Success,
                Some(LoadBalancerStateEnum::Failed) => AcceptorState::Failure,
                _ => AcceptorState::Retry,
            },
            Err(err) if fresh && poll::is(err, LOAD_BALANCER_NOT_FOUND) => AcceptorState::Retry,
            Err(_) => AcceptorState::NoAcceptorsMatched,
        },
        max_wait,
        progress,
    )
    .await?;
    match waited {
        Waited::Reached(output) => output
            .load_balancers
            .and_then(|lbs| lbs.into_iter().next())
            .map(LoadBalancer::from_sdk)
            .ok_or_else(|| Error::Unexpected { step: WHAT, message: "it is no longer described".into() }),
        Waited::Failed(answer) => {
            let reason = answer.ok().and_then(|o| state(o.load_balancers())).and_then(|s| s.reason);
            Err(Error::Unexpected {
                step: WHAT,
                message: format!(
                    "AWS reports the load balancer {arn} failed{}",
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                ),
            })
        }
        Waited::Gone(_) => Err(Error::Unexpected { step: WHAT, message: format!("{arn} no longer exists") }),
    }
}

/// Turns cross-zone load balancing on or off. A load balancer created just now has
/// AWS's default (off for a Network Load Balancer), so it is not read first.
pub async fn ensure_cross_zone(
    elb: &elbv2::Client,
    arn: &str,
    enabled: bool,
    fresh: bool,
    progress: &Progress,
) -> Result<()> {
    let _step = progress.step("setting cross-zone load balancing");
    let current = if fresh {
        Some("false".to_string())
    } else {
        let attributes = elb
            .describe_load_balancer_attributes()
            .load_balancer_arn(arn)
            .send()
            .await
            .map_err(Error::aws("reading the load balancer's attributes (DescribeLoadBalancerAttributes)"))?;
        attributes
            .attributes
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.key.as_deref() == Some(CROSS_ZONE))
            .and_then(|a| a.value)
    };
    if current.as_deref() == Some(&enabled.to_string()) {
        return Ok(());
    }
    progress.gate().await?;
    poll::settled(fresh, LOAD_BALANCER_NOT_FOUND, || {
        elb.modify_load_balancer_attributes()
            .load_balancer_arn(arn)
            .attributes(LoadBalancerAttribute::builder().key(CROSS_ZONE).value(enabled.to_string()).build())
            .send()
    })
    .await
    .map_err(Error::aws("setting cross-zone load balancing (ModifyLoadBalancerAttributes)"))?;
    Ok(())
}

/// Deletes the load balancer (its listeners go with it) and waits until it is
/// gone, as its target group and security group can be deleted only then. AWS
/// refuses with `ResourceInUse` while an endpoint service that was using it is
/// still being deleted; that is retried until the service is gone, the caller's
/// deadline bounding the wait. Already gone is fine.
pub async fn delete(elb: &elbv2::Client, arn: &str, max_wait: Duration, progress: &Progress) -> Result<()> {
    let _step = progress.step("deleting the load balancer");
    loop {
        match elb.delete_load_balancer().load_balancer_arn(arn).send().await {
            Ok(_) => break,
            Err(err) if code_of(&err) == Some("LoadBalancerNotFound") => return Ok(()),
            Err(err) if code_of(&err) == Some("ResourceInUse") => {
                info!(arn, "the endpoint service still holds the load balancer; trying again");
                tokio::time::sleep(poll::INTERVAL).await;
            }
            Err(err) => return Err(Error::aws("deleting the load balancer (DeleteLoadBalancer)")(err)),
        }
    }
    let gone = poll::until(
        "waiting for the load balancer to be deleted (DescribeLoadBalancers)",
        || elb.describe_load_balancers().load_balancer_arns(arn).send(),
        |answer| match answer {
            Ok(output) if output.load_balancers().is_empty() => AcceptorState::Success,
            Ok(_) => AcceptorState::Retry,
            Err(err) if poll::is(err, LOAD_BALANCER_NOT_FOUND) => AcceptorState::Success,
            Err(_) => AcceptorState::NoAcceptorsMatched,
        },
        max_wait,
        progress,
    )
    .await;
    match gone {
        // Unable to watch it go, the tear-down goes on: deleting the target group and
        // the security group waits for the load balancer to let go of them anyway.
        Err(error @ Error::Aws { .. }) => warn!(%error, "could not watch the load balancer go; going on"),
        other => {
            other?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::network::{Network, VpcBlocks};
    use crate::chain::{Resolved, Zone};
    use crate::spec::Spec;
    use serde_json::json;

    #[test]
    fn a_load_balancer_created_without_security_groups_is_replaced_to_get_some() {
        let props = json!({"SubnetIds": ["subnet-0000000a"], "TargetIps": ["10.0.1.25"],
            "AllowedPrincipals": ["arn:aws:iam::123456789012:root"], "SecurityGroupIds": ["sg-0000000a"]});
        let spec = Spec::from_properties(&props, "arn:aws:cloudformation:us-east-1:1:stack/s/g").unwrap();
        let zone = Zone { name: "us-east-1a".into(), id: "use1-az6".into() };
        let network = Network {
            vpc_id: "vpc-1".into(),
            subnets: [("subnet-0000000a".to_string(), zone)].into(),
            blocks: VpcBlocks::default(),
            blocks_are_vpc: true,
        };
        let resolved = Resolved {
            network,
            subnet_ids: spec.subnet_ids.clone(),
            port: 3306,
            target_ips: BTreeSet::new(),
            follows: None,
            database_security_groups: BTreeSet::new(),
            keep_targets: false,
        };
        let want =
            Desired { spec: &spec, resolved: &resolved, generation: "g".into(), dropped_tag_keys: BTreeSet::new() };
        let legacy = LoadBalancer {
            arn: "arn".into(),
            name: format!("{}-g", spec.name),
            dns_name: String::new(),
            vpc_id: "vpc-1".into(),
            subnets: spec.subnet_ids.clone(),
            security_groups: BTreeSet::new(),
            enforce_inbound_on_private_link: None,
            active: true,
            internal: true,
            zones: BTreeMap::new(),
            generation: "g".into(),
            tags: BTreeMap::new(),
        };
        let reasons = replacement_reasons(&legacy, &want);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].starts_with("SecurityGroupIds: the load balancer has no security groups"));
        let with_groups = LoadBalancer { security_groups: ["sg-0000000b".to_string()].into(), ..legacy };
        assert!(replacement_reasons(&with_groups, &want).is_empty(), "changing groups is in place");
    }
}
