//! The internal Network Load Balancer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::client::Waiters;
use elbv2::types::{
    EnforceSecurityGroupInboundRulesOnPrivateLinkTrafficEnum as Enforce, IpAddressType, LoadBalancerAttribute,
    LoadBalancerSchemeEnum, LoadBalancerTypeEnum,
};

use super::tags::{self, Tags};
use super::{Desired, Owner, Progress};
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
            subnets: lb.availability_zones.unwrap_or_default().into_iter().filter_map(|az| az.subnet_id).collect(),
            security_groups: lb.security_groups.unwrap_or_default().into_iter().collect(),
            enforce_inbound_on_private_link: lb
                .enforce_security_group_inbound_rules_on_private_link_traffic
                .map(|value| value.eq_ignore_ascii_case("on")),
            generation: String::new(),
            tags: BTreeMap::new(),
        }
    }
}

pub async fn list_owned(elb: &elbv2::Client, owner: &Owner) -> Result<Vec<LoadBalancer>> {
    let all: Vec<_> = elb
        .describe_load_balancers()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(Error::aws("listing load balancers (DescribeLoadBalancers)"))?;
    let all: Vec<LoadBalancer> = all
        .into_iter()
        .filter(|lb| lb.r#type == Some(LoadBalancerTypeEnum::Network))
        .map(LoadBalancer::from_sdk)
        .collect();
    let mut tags = tags::describe_elb(elb, all.iter().map(|lb| lb.arn.clone()).collect()).await?;
    Ok(all
        .into_iter()
        .filter_map(|mut lb| {
            lb.tags = tags.remove(&lb.arn)?;
            lb.generation = tags::owned_generation(owner, &lb.tags)?;
            Some(lb)
        })
        .collect())
}

/// What AWS cannot change on an existing load balancer that is attached to an endpoint service.
pub fn replacement_reasons(lb: &LoadBalancer, want: &Desired<'_>) -> Vec<String> {
    let mut reasons = Vec::new();
    if lb.name != want.resource_name() {
        reasons.push(format!("Name: the load balancer is named {} and AWS cannot rename it", lb.name));
    }
    if lb.vpc_id != want.resolved.network.vpc_id {
        reasons.push(format!("SubnetIds: the subnets moved from {} to {}", lb.vpc_id, want.resolved.network.vpc_id));
    } else if !lb.subnets.is_subset(&want.resolved.subnet_ids) {
        let removed: Vec<&str> = lb.subnets.difference(&want.resolved.subnet_ids).map(String::as_str).collect();
        reasons.push(format!(
            "SubnetIds: {} would be removed, which AWS refuses while an endpoint service uses the load balancer",
            removed.join(", ")
        ));
    }
    if lb.security_groups.is_empty() && !want.spec.security_group_ids.is_empty() {
        reasons.push(
            "SecurityGroupIds: the load balancer has no security groups and AWS cannot add them later".to_string(),
        );
    }
    reasons
}

/// Creates the load balancer with `groups`, or brings an existing one's subnets,
/// security groups, PrivateLink enforcement and tags to what is wanted. Returns its ARN.
pub async fn ensure(
    elb: &elbv2::Client,
    existing: Option<&LoadBalancer>,
    want: &Desired<'_>,
    groups: &BTreeSet<String>,
    tags: &Tags,
    progress: &Progress,
) -> Result<String> {
    let enforce = want.spec.enforce_inbound_on_private_link;
    let Some(lb) = existing else {
        let _step = progress.step("creating the load balancer");
        let created = elb
            .create_load_balancer()
            .name(want.resource_name())
            .r#type(LoadBalancerTypeEnum::Network)
            .scheme(LoadBalancerSchemeEnum::Internal)
            .ip_address_type(IpAddressType::Ipv4)
            .set_subnets(Some(want.resolved.subnet_ids.iter().cloned().collect()))
            // Only at creation: an NLB created without security groups can never get any.
            .set_security_groups(Some(groups.iter().cloned().collect()).filter(|g: &Vec<_>| !g.is_empty()))
            .set_tags(Some(tags.elb()))
            .send()
            .await
            .map_err(Error::aws("creating the load balancer (CreateLoadBalancer)"))?;
        let arn = created
            .load_balancers
            .and_then(|lbs| lbs.into_iter().next())
            .and_then(|lb| lb.load_balancer_arn)
            .ok_or_else(|| Error::Unexpected {
                step: "creating the load balancer",
                message: "CreateLoadBalancer returned no ARN".into(),
            })?;
        // AWS turns enforcement on for an NLB created with security groups.
        if !groups.is_empty() && !enforce {
            set_security_groups(elb, &arn, groups, enforce, progress).await?;
        }
        return Ok(arn);
    };
    if lb.subnets != want.resolved.subnet_ids {
        let _step = progress.step("adding subnets to the load balancer");
        elb.set_subnets()
            .load_balancer_arn(&lb.arn)
            .set_subnets(Some(want.resolved.subnet_ids.iter().cloned().collect()))
            .send()
            .await
            .map_err(Error::aws("changing the load balancer's subnets (SetSubnets)"))?;
    }
    // Enforcement is set only with security groups; an emulator that does not report it gets it set again.
    let enforcement_differs = !groups.is_empty() && lb.enforce_inbound_on_private_link != Some(enforce);
    if (&lb.security_groups != groups || enforcement_differs) && !lb.security_groups.is_empty() {
        set_security_groups(elb, &lb.arn, groups, enforce, progress).await?;
    }
    tags::sync_elb(elb, &lb.arn, &lb.tags, tags, progress).await?;
    Ok(lb.arn.clone())
}

/// Sets the groups and whether PrivateLink traffic must pass their inbound rules.
async fn set_security_groups(
    elb: &elbv2::Client,
    arn: &str,
    groups: &BTreeSet<String>,
    enforce: bool,
    progress: &Progress,
) -> Result<()> {
    let _step = progress.step("setting the load balancer's security groups");
    elb.set_security_groups()
        .load_balancer_arn(arn)
        .set_security_groups(Some(groups.iter().cloned().collect()))
        .enforce_security_group_inbound_rules_on_private_link_traffic(if enforce { Enforce::On } else { Enforce::Off })
        .send()
        .await
        .map_err(Error::aws("setting the load balancer's security groups (SetSecurityGroups)"))?;
    Ok(())
}

/// Waits until the load balancer is active and returns it.
pub async fn wait_active(
    elb: &elbv2::Client,
    arn: &str,
    max_wait: Duration,
    progress: &Progress,
) -> Result<LoadBalancer> {
    let _step = progress.step("waiting for the load balancer to become active");
    let done =
        elb.wait_until_load_balancer_available().load_balancer_arns(arn).wait(max_wait).await.map_err(|err| {
            Error::Unexpected { step: "waiting for the load balancer to become active", message: err.to_string() }
        })?;
    done.into_result()
        .ok()
        .and_then(|answer| answer.load_balancers)
        .and_then(|lbs| lbs.into_iter().next())
        .map(LoadBalancer::from_sdk)
        .ok_or_else(|| Error::Unexpected {
            step: "waiting for the load balancer",
            message: "it is no longer described".into(),
        })
}

pub async fn ensure_cross_zone(elb: &elbv2::Client, arn: &str, enabled: bool, progress: &Progress) -> Result<()> {
    let _step = progress.step("setting cross-zone load balancing");
    let attributes = elb
        .describe_load_balancer_attributes()
        .load_balancer_arn(arn)
        .send()
        .await
        .map_err(Error::aws("reading the load balancer's attributes (DescribeLoadBalancerAttributes)"))?;
    let current = attributes
        .attributes
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.key.as_deref() == Some(CROSS_ZONE))
        .and_then(|a| a.value);
    if current.as_deref() == Some(&enabled.to_string()) {
        return Ok(());
    }
    elb.modify_load_balancer_attributes()
        .load_balancer_arn(arn)
        .attributes(LoadBalancerAttribute::builder().key(CROSS_ZONE).value(enabled.to_string()).build())
        .send()
        .await
        .map_err(Error::aws("setting cross-zone load balancing (ModifyLoadBalancerAttributes)"))?;
    Ok(())
}

/// Deletes the load balancer and waits until it is gone (its target group can
/// be deleted only then). Already gone is fine.
pub async fn delete(elb: &elbv2::Client, arn: &str, max_wait: Duration, progress: &Progress) -> Result<()> {
    let _step = progress.step("deleting the load balancer");
    match elb.delete_load_balancer().load_balancer_arn(arn).send().await {
        Ok(_) => {}
        Err(err) if code_of(&err) == Some("LoadBalancerNotFound") => return Ok(()),
        Err(err) => return Err(Error::aws("deleting the load balancer (DeleteLoadBalancer)")(err)),
    }
    elb.wait_until_load_balancers_deleted().load_balancer_arns(arn).wait(max_wait).await.map_err(|err| {
        Error::Unexpected { step: "waiting for the load balancer to be deleted", message: err.to_string() }
    })?;
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
        };
        let resolved = Resolved {
            network,
            subnet_ids: spec.subnet_ids.clone(),
            port: 3306,
            target_ips: BTreeSet::new(),
            follows: None,
            database_security_groups: BTreeSet::new(),
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
