//! The chain: internal NLB → TCP target group with the writer's IP → listener →
//! VPC endpoint service → allowed principals. Everything is found by the tags
//! this module puts on it, compared with what is wanted, and only the difference
//! is changed, so a retry, a re-delivered request or a clean-up after a crash
//! all take the same path.

mod converge;
pub mod endpoint_service;
mod group_holders;
pub mod health;
pub mod ingress;
mod inventory;
pub mod listener;
pub mod load_balancer;
pub mod network;
mod poll;
mod refused_zones;
pub mod rules;
mod security_group;
mod tags;
pub mod target_group;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use tracing::info;

pub use crate::aws::Aws;
pub use crate::deadline::Progress;
use crate::error::{Error, Result};
use crate::spec::Spec;

pub use endpoint_service::{EndpointService, ID_PREFIX as SERVICE_ID_PREFIX};
pub use health::{TargetHealth, describe as describe_health};
pub use ingress::IngressRule;
pub use inventory::{Inventory, tagged};
pub use load_balancer::LoadBalancer;
pub use network::{Network, Zone};
pub use security_group::SecurityGroup;
pub use tags::{
    ANSWERED_TAG, CONSUMER_ZONES_TAG, DATABASE_TAG, GENERATION_TAG, LOGICAL_ID_TAG, PRINCIPALS_TAG, REPORT_TO_TAG,
    STACK_ID_TAG, describe_elb as describe_elb_tags, ec2_map, principals_record,
};
pub use target_group::TargetGroup;

pub use crate::spec::GENERATION_LEN;

/// How long to wait for one load balancer state change at most; the caller's
/// deadline usually ends the wait sooner.
pub(super) const MAX_STATE_WAIT: Duration = Duration::from_secs(600);

/// Who a chain belongs to: a stack and the logical ID of the resource in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub stack_id: String,
    pub logical_id: String,
}

/// The generation of a chain built for `request_id`: the same request (a
/// re-delivery) finds the same chain, another request (a replacement) gets its own.
pub fn generation(request_id: &str) -> String {
    stable_hash(request_id)[..GENERATION_LEN].to_string()
}

/// `text`'s 64-bit FNV-1a hash as 16 hex digits: stable across builds and platforms,
/// unlike std's hasher, so names and tags derived from it stay the same.
pub fn stable_hash(text: &str) -> String {
    let hash = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{hash:016x}")
}

/// The spec resolved against the account: where the chain goes and what it forwards to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub network: Network,
    pub subnet_ids: BTreeSet<String>,
    pub port: u16,
    pub target_ips: BTreeSet<Ipv4Addr>,
    /// The database the target group follows, as the user named it.
    pub follows: Option<String>,
    /// The database's VPC security groups, when RDS names them.
    pub database_security_groups: BTreeSet<String>,
    /// The writer could not be resolved (a failover settling): the chain keeps the
    /// targets it has, and `target_ips` is empty; the follower moves them once it settles.
    pub keep_targets: bool,
}

/// Everything one chain needs, checked against the account.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    pub spec: &'a Spec,
    pub resolved: &'a Resolved,
    pub generation: String,
    /// User tag keys an earlier version of the properties set and this one dropped.
    pub dropped_tag_keys: BTreeSet<String>,
}

impl Desired<'_> {
    /// The name of the load balancer and of the target group.
    pub fn resource_name(&self) -> String {
        format!("{}-{}", self.spec.name, self.generation)
    }

    /// The ARN of the bus the chain's target moves are reported to, if any.
    pub fn report_to(&self) -> Option<&str> {
        self.spec.report_to.as_ref().map(|bus| bus.arn.as_str())
    }
}

/// What a finished chain reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub service_id: String,
    pub service_name: String,
    pub load_balancer_arn: String,
    pub load_balancer_dns_name: String,
    pub target_group_arn: String,
    pub listener_arn: String,
    /// Sorted by zone name.
    pub zones: Vec<Zone>,
    pub target_ips: Vec<Ipv4Addr>,
    /// The load balancer's security groups (its own, or those given).
    pub security_groups: Vec<String>,
    /// Whether PrivateLink traffic is checked against the load balancer's inbound rules.
    pub enforce_inbound_on_private_link: bool,
    pub supported_regions: Vec<String>,
    pub target_health: Vec<TargetHealth>,
}

impl Built {
    /// The load balancer and target group, which carry the answered mark.
    pub fn elb_arns(&self) -> Vec<String> {
        vec![self.load_balancer_arn.clone(), self.target_group_arn.clone()]
    }
}

/// The resources of one generation. There is normally at most one of each;
/// more only if an emulator or an out-of-band change duplicated them, and then
/// tear-down removes them all.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub generation: String,
    pub services: Vec<EndpointService>,
    pub load_balancers: Vec<LoadBalancer>,
    pub target_groups: Vec<TargetGroup>,
    /// The load balancer's own security group.
    pub security_groups: Vec<SecurityGroup>,
    /// The rules that let the load balancer into the database.
    pub ingress_rules: Vec<IngressRule>,
    /// Listener ARN → tags, as a tag index lists them.
    pub listener_tags: BTreeMap<String, BTreeMap<String, String>>,
}

impl Group {
    /// The service ID CloudFormation received for this chain, if it received one. An
    /// unanswered chain belongs to nobody but a failed or crashed request.
    pub fn answered_as(&self) -> Option<&str> {
        let tags = self.services.iter().map(|s| &s.tags);
        let tags = tags
            .chain(self.load_balancers.iter().map(|lb| &lb.tags))
            .chain(self.target_groups.iter().map(|tg| &tg.tags));
        tags.filter_map(|tags| tags.get(ANSWERED_TAG)).map(String::as_str).next()
    }

    /// Whether `service_id` names this chain: its service, or, once the service is
    /// deleted, the load balancer or target group CloudFormation knew by that ID.
    pub fn is_named(&self, service_id: &str) -> bool {
        self.services.iter().any(|s| s.id == service_id) || self.answered_as() == Some(service_id)
    }

    pub fn service_id(&self) -> Option<&str> {
        self.services.first().map(|s| s.id.as_str())
    }

    /// The ARNs of the load balancer and target group, which carry the answered mark.
    pub fn elb_arns(&self) -> Vec<String> {
        self.load_balancers
            .iter()
            .map(|lb| lb.arn.clone())
            .chain(self.target_groups.iter().map(|tg| tg.arn.clone()))
            .collect()
    }

    /// Adds what `other` has and this group lacks.
    pub fn merge(&mut self, other: Group) {
        fn add<T>(into: &mut Vec<T>, from: Vec<T>, same: impl Fn(&T, &T) -> bool) {
            for item in from {
                if !into.iter().any(|known| same(known, &item)) {
                    into.push(item);
                }
            }
        }
        add(&mut self.services, other.services, |a, b| a.id == b.id);
        add(&mut self.load_balancers, other.load_balancers, |a, b| a.arn == b.arn);
        add(&mut self.target_groups, other.target_groups, |a, b| a.arn == b.arn);
        add(&mut self.security_groups, other.security_groups, |a, b| a.id == b.id);
        add(&mut self.ingress_rules, other.ingress_rules, |a, b| a.id == b.id);
        for (arn, tags) in other.listener_tags {
            self.listener_tags.entry(arn).or_insert(tags);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.load_balancers.is_empty()
            && self.target_groups.is_empty()
            && self.security_groups.is_empty()
            && self.ingress_rules.is_empty()
    }

    /// "endpoint service vpce-svc-…, load balancer arn:…, …", for a person to find them.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.services.iter().map(|s| format!("endpoint service {}", s.id)));
        parts.extend(self.load_balancers.iter().map(|lb| format!("load balancer {}", lb.arn)));
        parts.extend(self.target_groups.iter().map(|tg| format!("target group {}", tg.arn)));
        parts.extend(self.security_groups.iter().map(|g| format!("security group {}", g.id)));
        parts.extend(self.ingress_rules.iter().map(|r| format!("security group rule {} in {}", r.id, r.group_id)));
        parts.join(", ")
    }

    /// What a request recorded in `progress` as made for `generation`.
    pub fn recorded(generation: &str, progress: &Progress) -> Group {
        let generation = generation.to_string();
        Group {
            services: progress
                .recorded("endpoint service")
                .into_iter()
                .map(|id| EndpointService::known(id, generation.clone()))
                .collect(),
            load_balancers: progress
                .recorded("load balancer")
                .into_iter()
                .map(|arn| load_balancer::from_index(arn, BTreeMap::new(), generation.clone()))
                .collect(),
            target_groups: progress
                .recorded("target group")
                .into_iter()
                .map(|arn| target_group::from_index(arn, BTreeMap::new(), generation.clone()))
                .collect(),
            security_groups: progress
                .recorded("security group")
                .into_iter()
                .map(|id| SecurityGroup {
                    id,
                    name: String::new(),
                    generation: generation.clone(),
                    tags: BTreeMap::new(),
                })
                .collect(),
            ingress_rules: progress
                .recorded("database rule")
                .into_iter()
                .filter_map(|entry| {
                    let (group_id, id) = entry.split_once('/')?;
                    Some(IngressRule {
                        id: id.to_string(),
                        group_id: group_id.to_string(),
                        generation: generation.clone(),
                    })
                })
                .collect(),
            listener_tags: BTreeMap::new(),
            generation,
        }
    }

    /// Whether every resource a converged chain has is there: it can be changed in place.
    pub fn is_complete(&self) -> bool {
        !self.services.is_empty() && !self.load_balancers.is_empty() && !self.target_groups.is_empty()
    }
}

/// One owner's view of the account.
pub struct Chain<'a> {
    aws: &'a Aws,
    owner: Owner,
}

impl<'a> Chain<'a> {
    pub fn new(aws: &'a Aws, owner: Owner) -> Self {
        Chain { aws, owner }
    }

    /// Why `group` cannot become `want` in place; empty when it can. Subnets are removed
    /// in place only while no consumer's endpoint is connected.
    pub async fn replacement_reasons(&self, want: &Desired<'_>, group: &Group) -> Result<Vec<String>> {
        let mut reasons = Vec::new();
        if let Some(lb) = group.load_balancers.first() {
            reasons.extend(load_balancer::replacement_reasons(lb, want));
            let removed = load_balancer::removed_subnets(lb, want);
            if let (false, true, Some(service)) = (removed.is_empty(), reasons.is_empty(), group.services.first()) {
                let connected = endpoint_service::active_connections(&self.aws.ec2, &service.id).await?;
                if !connected.is_empty() {
                    reasons.push(format!(
                        "SubnetIds: {} would be removed, which AWS refuses while consumers' endpoints are connected ({})",
                        removed.join(", "),
                        connected.join(", ")
                    ));
                }
            }
        }
        if let Some(tg) = group.target_groups.first() {
            reasons.extend(target_group::replacement_reasons(tg, want));
        }
        Ok(reasons)
    }

    /// Records that CloudFormation received `service_id` on the chain's load balancer
    /// and target group (`elb_arns`), so a Delete naming the ID finds what is left of
    /// the chain even after the service itself is gone.
    pub async fn mark_answered(&self, service_id: &str, elb_arns: Vec<String>) -> Result<()> {
        let answered = BTreeMap::from([(ANSWERED_TAG.to_string(), service_id.to_string())]);
        // Moments after the resources were created: a NotFound is AWS catching up. The
        // service itself needs no mark: it is found by its ID, and a tear-down deletes
        // it first, so what a crash can leave always includes the target group.
        tags::tag_elb(&self.aws.elb, elb_arns, &answered, true).await
    }

    /// Deletes a whole generation, in the order AWS requires and no more: the database
    /// rules beside the endpoint service, then the load balancer with its listeners, then,
    /// side by side, its security group (AWS refuses while the load balancer uses it) and the
    /// target group. Both run to the end, so someone else's rule holding the group leaves only
    /// the group, which the error names. A group left alone carries no answered mark: a Delete
    /// delivered again finds it among the chains CloudFormation does not hold, and sweeps it.
    /// What is already gone is skipped.
    pub async fn teardown(&self, group: &Group, progress: &Progress) -> Result<()> {
        let (elb, ec2) = (&self.aws.elb, &self.aws.ec2);
        info!(generation = %group.generation, "removing chain");
        let services = async {
            for service in &group.services {
                endpoint_service::delete(ec2, &service.id, progress).await?;
            }
            Ok(())
        };
        tokio::try_join!(ingress::release(ec2, &self.owner, &group.ingress_rules, progress), services)?;
        // Deleting a load balancer deletes its listeners, which frees the target group.
        futures::future::try_join_all(
            group.load_balancers.iter().map(|lb| load_balancer::delete(elb, &lb.arn, MAX_STATE_WAIT, progress)),
        )
        .await?;
        let own_groups = async {
            for security_group in &group.security_groups {
                security_group::delete(ec2, &security_group.id, progress).await?;
            }
            Ok(())
        };
        let target_groups = async {
            for tg in &group.target_groups {
                target_group::delete(elb, &tg.arn, progress).await?;
            }
            Ok::<_, Error>(())
        };
        let (own_groups, target_groups) = tokio::join!(Box::pin(own_groups), target_groups);
        own_groups.and(target_groups).map_err(|error| match error {
            Error::GroupInUse(held) => {
                Error::GroupInUse(format!("{held} (delete the stack again); everything else of the chain is gone"))
            }
            other => other,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_stable_and_distinct() {
        assert_eq!(generation("req-1"), generation("req-1"));
        assert_ne!(generation("req-1"), generation("req-2"));
        assert_eq!(generation("anything").len(), GENERATION_LEN);
        // Pinned: a change here would orphan chains built by an earlier release.
        assert_eq!(generation(""), "cbf29ce4");
        // FNV-1a's published test vector for "a"; service tokens and rule tags derive from it too.
        assert_eq!(stable_hash("a"), "af63dc4c8601ec8c");
    }
}
