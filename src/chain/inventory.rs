//! Finding a chain's resources without listing the account. The request's own
//! generation is looked up by name, and the chain CloudFormation names by its
//! service ID: both read what AWS holds now. Every other generation comes from
//! tag indexes, which stay flat however many resources the account has but can
//! be a moment behind a create: good enough for chains of earlier requests, and
//! anything about to be destroyed on their word is read again first.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_resourcegroupstagging::types::TagFilter;

use super::tags::{self, ANSWERED_TAG, LOGICAL_ID_TAG, STACK_ID_TAG};
use super::{
    Chain, EndpointService, Group, Zone, endpoint_service, ingress, load_balancer, network, security_group,
    target_group,
};
use crate::error::{Error, Result};

/// Every chain an owner has in the account, by generation.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    groups: BTreeMap<String, Group>,
}

impl Inventory {
    pub fn generation(&self, generation: &str) -> Option<&Group> {
        self.groups.get(generation)
    }

    /// The chain CloudFormation knows as `service_id`, through its answered mark.
    pub fn named(&self, service_id: &str) -> Option<&Group> {
        self.groups.values().find(|group| group.is_named(service_id))
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    fn group_mut(&mut self, generation: &str) -> &mut Group {
        self.groups
            .entry(generation.to_string())
            .or_insert_with(|| Group { generation: generation.to_string(), ..Group::default() })
    }
}

/// Every resource of `types` carrying the tags in `filters` (a key, with a value
/// or any), with its tags, through the Resource Groups Tagging API.
pub async fn tagged(
    tagging: &aws_sdk_resourcegroupstagging::Client,
    filters: &[(&str, Option<&str>)],
    types: &[&str],
) -> std::result::Result<Vec<(String, BTreeMap<String, String>)>, GetResourcesSdkError> {
    let filters = filters
        .iter()
        .map(|(key, value)| TagFilter::builder().key(*key).set_values(value.map(|v| vec![v.to_string()])).build());
    let pages: Vec<_> = tagging
        .get_resources()
        .set_tag_filters(Some(filters.collect()))
        .set_resource_type_filters(Some(types.iter().map(ToString::to_string).collect()))
        .into_paginator()
        .send()
        .try_collect()
        .await?;
    Ok(pages
        .into_iter()
        .flat_map(|page| page.resource_tag_mapping_list.unwrap_or_default())
        .filter_map(|mapping| {
            let tags = mapping.tags.unwrap_or_default().into_iter().map(|t| (t.key, t.value)).collect();
            Some((mapping.resource_arn?, tags))
        })
        .collect())
}

/// The error of a failed `tag:GetResources`.
pub type GetResourcesSdkError = aws_sdk_resourcegroupstagging::error::SdkError<
    aws_sdk_resourcegroupstagging::operation::get_resources::GetResourcesError,
    aws_sdk_resourcegroupstagging::config::http::HttpResponse,
>;

impl Chain<'_> {
    /// Every resource carrying this owner's tags, through tag indexes: the
    /// Resource Groups Tagging API for load balancers and target groups, tag
    /// filters for the EC2 resources. A handful of calls in any account.
    pub async fn by_tags(&self) -> Result<Inventory> {
        let (elb_resources, services, security_groups, ingress_rules) = tokio::try_join!(
            self.tagged_elb_resources(),
            endpoint_service::list_owned(&self.aws.ec2, &self.owner),
            security_group::list_owned(&self.aws.ec2, &self.owner),
            ingress::list_owned(&self.aws.ec2, &self.owner),
        )?;
        let mut inventory = Inventory::default();
        for (arn, tags) in elb_resources {
            let Some(generation) = tags::owned_generation(&self.owner, &tags) else { continue };
            let group = inventory.group_mut(&generation);
            if arn.contains(":loadbalancer/") {
                group.load_balancers.push(load_balancer::from_index(arn, tags, generation));
            } else if arn.contains(":targetgroup/") {
                group.target_groups.push(target_group::from_index(arn, tags, generation));
            } else if arn.contains(":listener/") {
                group.listener_tags.insert(arn, tags);
            }
        }
        for service in services {
            inventory.group_mut(&service.generation).services.push(service);
        }
        for group in security_groups {
            inventory.group_mut(&group.generation).security_groups.push(group);
        }
        for rule in ingress_rules {
            inventory.group_mut(&rule.generation).ingress_rules.push(rule);
        }
        Ok(inventory)
    }

    async fn tagged_elb_resources(&self) -> Result<Vec<(String, BTreeMap<String, String>)>> {
        let filters =
            [(STACK_ID_TAG, Some(self.owner.stack_id.as_str())), (LOGICAL_ID_TAG, Some(&self.owner.logical_id))];
        let types =
            ["elasticloadbalancing:loadbalancer", "elasticloadbalancing:targetgroup", "elasticloadbalancing:listener"];
        tagged(&self.aws.tagging, &filters, &types)
            .await
            .map_err(Error::aws("finding the chain's load balancers and target groups (tag:GetResources)"))
    }

    /// The endpoint service `service_id` of this owner, read by its ID: a tag index can lag.
    pub async fn service(&self, service_id: &str) -> Result<Option<EndpointService>> {
        if !service_id.starts_with(endpoint_service::ID_PREFIX) {
            return Ok(None);
        }
        endpoint_service::by_id(&self.aws.ec2, &self.owner, service_id).await
    }

    /// The name of the service `service_id` and the zones its load balancer serves (sorted by
    /// name), as the consumer needs them; None when the service is gone.
    pub async fn published(&self, service_id: &str) -> Result<Option<(String, Vec<Zone>)>> {
        let Some(service) = self.service(service_id).await? else { return Ok(None) };
        let load_balancers = load_balancer::by_arns(&self.aws.elb, service.load_balancer_arns).await?;
        let subnets: BTreeSet<String> = load_balancers.into_iter().flat_map(|lb| lb.subnets).collect();
        let network = network::resolve(&self.aws.ec2, &subnets, &BTreeSet::new(), |_| false).await?;
        Ok(Some((service.name, network.zones())))
    }

    /// The chain CloudFormation knows as `service_id`: its `service` (read by ID),
    /// the rest from `index`, or read from the service's load balancer when the
    /// index has not caught up. Once the service is gone, the chain is known by its
    /// answered mark.
    pub async fn named(
        &self,
        service_id: &str,
        service: Option<EndpointService>,
        index: &Inventory,
    ) -> Result<Option<Group>> {
        let Some(service) = service else {
            return Ok(index.named(service_id).cloned());
        };
        let mut group = index
            .generation(&service.generation)
            .cloned()
            .unwrap_or_else(|| Group { generation: service.generation.clone(), ..Group::default() });
        if group.load_balancers.is_empty() && !service.load_balancer_arns.is_empty() {
            self.read_load_balancer_side(&mut group, service.load_balancer_arns.clone()).await?;
        }
        group.services.retain(|s| s.id != service.id);
        group.services.insert(0, service);
        Ok(Some(group))
    }

    /// What an earlier attempt of this very request built, looked up by the
    /// generation's name: a re-delivered Create finds what it made a second ago.
    pub async fn own(&self, name: &str, generation: &str) -> Result<Option<Group>> {
        let Some(lb) = load_balancer::by_name(&self.aws.elb, name).await? else {
            // Without its load balancer nothing else of the chain exists but a
            // target group or security group, which their creation adopts by name.
            return Ok(None);
        };
        let mut group = Group { generation: generation.to_string(), ..Group::default() };
        self.read_load_balancer_side(&mut group, vec![lb.arn]).await?;
        if group.load_balancers.is_empty() {
            return Ok(None);
        }
        let services = endpoint_service::list_owned(&self.aws.ec2, &self.owner).await?;
        group.services = services.into_iter().filter(|s| s.generation == generation).collect();
        Ok(Some(group))
    }

    /// Load balancers, their target groups and their own security groups, read
    /// from AWS now rather than from an index; only this owner's `group.generation`.
    async fn read_load_balancer_side(&self, group: &mut Group, arns: Vec<String>) -> Result<()> {
        let elb = &self.aws.elb;
        let load_balancers = load_balancer::by_arns(elb, arns).await?;
        let target_groups = futures::future::try_join_all(
            load_balancers.iter().map(|lb| async { target_group::by_load_balancer(elb, &lb.arn).await }),
        )
        .await?
        .into_iter()
        .flatten();
        let target_groups: Vec<_> = target_groups.collect();
        let arns = load_balancers.iter().map(|lb| lb.arn.clone()).chain(target_groups.iter().map(|tg| tg.arn.clone()));
        let mut tags = tags::describe_elb(elb, arns.collect()).await?;
        let ours = |tags: &BTreeMap<String, String>| {
            tags::owned_generation(&self.owner, tags).as_deref() == Some(group.generation.as_str())
        };
        for mut lb in load_balancers {
            lb.tags = tags.remove(&lb.arn).unwrap_or_default();
            if ours(&lb.tags) {
                lb.generation = group.generation.clone();
                let own_groups = security_group::owned_among(&self.aws.ec2, &self.owner, &lb.security_groups).await?;
                group.security_groups.extend(own_groups.into_iter().filter(|g| g.generation == group.generation));
                group.load_balancers.push(lb);
            }
        }
        for mut tg in target_groups {
            tg.tags = tags.remove(&tg.arn).unwrap_or_default();
            if ours(&tg.tags) {
                tg.generation = group.generation.clone();
                group.target_groups.push(tg);
            }
        }
        Ok(())
    }

    /// Load balancer and target group as AWS describes them now (subnets,
    /// security groups, port), for deciding whether a change can be made in place.
    pub async fn with_details(&self, group: &Group) -> Result<Group> {
        let elb = &self.aws.elb;
        let (load_balancers, target_groups) = tokio::try_join!(
            load_balancer::by_arns(elb, group.load_balancers.iter().map(|lb| lb.arn.clone()).collect()),
            target_group::describe(elb, group.target_groups.iter().map(|tg| tg.arn.clone()).collect(), Vec::new()),
        )?;
        let mut detailed = group.clone();
        detailed.load_balancers = load_balancers
            .into_iter()
            .map(|lb| {
                let known = group.load_balancers.iter().find(|l| l.arn == lb.arn);
                load_balancer::LoadBalancer {
                    tags: known.map(|l| l.tags.clone()).unwrap_or_default(),
                    generation: group.generation.clone(),
                    ..lb
                }
            })
            .collect();
        detailed.target_groups = target_groups
            .into_iter()
            .map(|tg| {
                let known = group.target_groups.iter().find(|t| t.arn == tg.arn);
                target_group::TargetGroup {
                    tags: known.map(|t| t.tags.clone()).unwrap_or_default(),
                    generation: group.generation.clone(),
                    ..tg
                }
            })
            .collect();
        Ok(detailed)
    }

    /// Whether AWS, read now, still shows no answered mark on `group`: a tag index
    /// can lag behind the mark, and an answered chain must never be swept.
    pub async fn confirmed_unanswered(&self, group: &Group) -> Result<bool> {
        let arns: Vec<String> = group
            .load_balancers
            .iter()
            .map(|lb| lb.arn.clone())
            .chain(group.target_groups.iter().map(|tg| tg.arn.clone()))
            .collect();
        let tags = tags::describe_elb(&self.aws.elb, arns).await?;
        let service_marked = group.services.iter().any(|s| s.tags.contains_key(ANSWERED_TAG));
        Ok(!service_marked && tags.values().all(|tags| !tags.contains_key(ANSWERED_TAG)))
    }
}
