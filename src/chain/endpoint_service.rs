//! The VPC endpoint service on the load balancer and who may connect to it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ResourceType, ServiceConfiguration, ServiceState, Tag, TagSpecification};
use tracing::info;

use super::tags::{self, LOGICAL_ID_TAG, STACK_ID_TAG, Tags};
use super::{Desired, Owner, Progress};
use crate::error::{Error, Result, code_of};

#[derive(Debug, Clone)]
pub struct EndpointService {
    pub id: String,
    pub name: String,
    pub acceptance_required: bool,
    pub load_balancer_arns: Vec<String>,
    /// Regions besides the service's own where consumers may connect.
    pub supported_regions: BTreeSet<String>,
    pub generation: String,
    pub tags: BTreeMap<String, String>,
}

impl EndpointService {
    fn from_sdk(service: ServiceConfiguration) -> Self {
        let tags = tags::ec2_map(service.tags.as_deref());
        // AWS lists the service's own region among them; the chain manages only the others.
        let own_region = service.service_name.as_deref().and_then(|name| name.split('.').nth(3)).unwrap_or_default();
        let supported_regions = service
            .supported_regions
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.region)
            .filter(|region| region != own_region)
            .collect();
        EndpointService {
            supported_regions,
            id: service.service_id.unwrap_or_default(),
            name: service.service_name.unwrap_or_default(),
            acceptance_required: service.acceptance_required.unwrap_or_default(),
            load_balancer_arns: service.network_load_balancer_arns.unwrap_or_default(),
            generation: String::new(),
            tags,
        }
    }
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(value).build()
}

fn is_not_found(code: Option<&str>) -> bool {
    code.is_some_and(|code| code.starts_with("InvalidVpcEndpointService"))
}

pub async fn list_owned(ec2: &aws_sdk_ec2::Client, owner: &Owner) -> Result<Vec<EndpointService>> {
    let services: Vec<_> = ec2
        .describe_vpc_endpoint_service_configurations()
        // The filters spare listing the whole account; the tags are checked again below.
        .filters(tag_filter(STACK_ID_TAG, &owner.stack_id))
        .filters(tag_filter(LOGICAL_ID_TAG, &owner.logical_id))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(Error::aws("listing endpoint services (DescribeVpcEndpointServiceConfigurations)"))?;
    Ok(services
        .into_iter()
        .filter(|s| s.service_state != Some(ServiceState::Deleted))
        .map(EndpointService::from_sdk)
        .filter_map(|mut service| {
            service.generation = tags::owned_generation(owner, &service.tags)?;
            Some(service)
        })
        .collect())
}

/// Creates the endpoint service on the load balancer, or brings an existing
/// one's acceptance setting, load balancer and tags to what is wanted.
pub async fn ensure(
    ec2: &aws_sdk_ec2::Client,
    existing: Option<&EndpointService>,
    lb_arn: &str,
    want: &Desired<'_>,
    tags: &Tags,
    progress: &Progress,
) -> Result<EndpointService> {
    let acceptance_required = want.spec.acceptance_required;
    let Some(service) = existing else {
        let _step = progress.step("creating the endpoint service");
        let created = ec2
            .create_vpc_endpoint_service_configuration()
            .network_load_balancer_arns(lb_arn)
            .acceptance_required(acceptance_required)
            .set_supported_regions(
                Some(want.spec.supported_regions.iter().cloned().collect()).filter(|r: &Vec<_>| !r.is_empty()),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::VpcEndpointService)
                    .set_tags(Some(tags.ec2()))
                    .build(),
            )
            .send()
            .await
            .map_err(Error::aws("creating the endpoint service (CreateVpcEndpointServiceConfiguration)"))?;
        let service = created.service_configuration.map(EndpointService::from_sdk).filter(|s| !s.id.is_empty());
        return service.ok_or_else(|| Error::Unexpected {
            step: "creating the endpoint service",
            message: "CreateVpcEndpointServiceConfiguration returned no service ID".into(),
        });
    };
    let mut service = service.clone();
    let stale: Vec<String> = service.load_balancer_arns.iter().filter(|arn| *arn != lb_arn).cloned().collect();
    let missing = !service.load_balancer_arns.iter().any(|arn| arn == lb_arn);
    let regions = &want.spec.supported_regions;
    let add_regions: Vec<String> = regions.difference(&service.supported_regions).cloned().collect();
    let remove_regions: Vec<String> = service.supported_regions.difference(regions).cloned().collect();
    let changes = service.acceptance_required != acceptance_required
        || missing
        || !stale.is_empty()
        || !add_regions.is_empty()
        || !remove_regions.is_empty();
    if changes {
        let _step = progress.step("changing the endpoint service");
        ec2.modify_vpc_endpoint_service_configuration()
            .service_id(&service.id)
            .acceptance_required(acceptance_required)
            .set_add_network_load_balancer_arns(missing.then(|| vec![lb_arn.to_string()]))
            .set_remove_network_load_balancer_arns(Some(stale).filter(|s| !s.is_empty()))
            .set_add_supported_regions(Some(add_regions).filter(|r| !r.is_empty()))
            .set_remove_supported_regions(Some(remove_regions).filter(|r| !r.is_empty()))
            .send()
            .await
            .map_err(Error::aws("changing the endpoint service (ModifyVpcEndpointServiceConfiguration)"))?;
        service.acceptance_required = acceptance_required;
        service.load_balancer_arns = vec![lb_arn.to_string()];
        service.supported_regions = regions.clone();
    }
    sync_tags(ec2, &service, tags, progress).await?;
    Ok(service)
}

async fn sync_tags(
    ec2: &aws_sdk_ec2::Client,
    service: &EndpointService,
    tags: &Tags,
    progress: &Progress,
) -> Result<()> {
    let (set, remove) = tags.difference(&service.tags);
    if !set.is_empty() {
        let _step = progress.step("tagging the endpoint service");
        tag(ec2, &service.id, &set).await?;
    }
    if !remove.is_empty() {
        let _step = progress.step("removing dropped tags from the endpoint service");
        let remove = remove.into_iter().map(|k| Tag::builder().key(k).build()).collect();
        ec2.delete_tags()
            .resources(&service.id)
            .set_tags(Some(remove))
            .send()
            .await
            .map_err(Error::aws("removing tags from the endpoint service (DeleteTags)"))?;
    }
    Ok(())
}

/// Allows exactly `principals` to connect: adds the missing, removes the rest.
pub async fn ensure_principals(
    ec2: &aws_sdk_ec2::Client,
    service_id: &str,
    principals: &BTreeSet<String>,
    progress: &Progress,
) -> Result<()> {
    let _step = progress.step("allowing the consumer's principals");
    let current: BTreeSet<String> = ec2
        .describe_vpc_endpoint_service_permissions()
        .service_id(service_id)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(Error::aws("reading the allowed principals (DescribeVpcEndpointServicePermissions)"))?
        .into_iter()
        .filter_map(|allowed| allowed.principal)
        .collect();
    let add: Vec<String> = principals.difference(&current).cloned().collect();
    let remove: Vec<String> = current.difference(principals).cloned().collect();
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    ec2.modify_vpc_endpoint_service_permissions()
        .service_id(service_id)
        .set_add_allowed_principals(Some(add).filter(|a| !a.is_empty()))
        .set_remove_allowed_principals(Some(remove).filter(|r| !r.is_empty()))
        .send()
        .await
        .map_err(Error::aws("changing the allowed principals (ModifyVpcEndpointServicePermissions)"))?;
    Ok(())
}

/// Sets `tags` on the service.
pub async fn tag(ec2: &aws_sdk_ec2::Client, service_id: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    let tags = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build());
    ec2.create_tags()
        .resources(service_id)
        .set_tags(Some(tags.collect()))
        .send()
        .await
        .map_err(Error::aws("tagging the endpoint service (CreateTags)"))?;
    Ok(())
}

/// Deletes the endpoint service and waits until it is gone. Open connections
/// make AWS refuse the deletion; they are rejected and the deletion tried again.
pub async fn delete(ec2: &aws_sdk_ec2::Client, service_id: &str, progress: &Progress) -> Result<()> {
    let _step = progress.step("deleting the endpoint service");
    let mut pause = Duration::from_secs(1);
    loop {
        let answer = match ec2.delete_vpc_endpoint_service_configurations().service_ids(service_id).send().await {
            Ok(answer) => answer,
            Err(err) if is_not_found(code_of(&err)) => return Ok(()),
            Err(err) => {
                return Err(Error::aws("deleting the endpoint service (DeleteVpcEndpointServiceConfigurations)")(err));
            }
        };
        // Refusals come back inside a successful answer, not as an error.
        let refusal = answer.unsuccessful.unwrap_or_default().into_iter().find_map(|item| item.error);
        let Some(refusal) = refusal else { break };
        match refusal.code.as_deref() {
            code if is_not_found(code) => return Ok(()),
            Some("ExistingVpcEndpointConnections") if pause <= Duration::from_secs(32) => {
                reject_connections(ec2, service_id, progress).await?;
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            code => {
                return Err(Error::Aws {
                    step: "deleting the endpoint service (DeleteVpcEndpointServiceConfigurations)",
                    detail: format!("{}: {}", code.unwrap_or("refused"), refusal.message.unwrap_or_default()),
                });
            }
        }
    }
    wait_deleted(ec2, service_id, progress).await
}

/// Rejects every connection that is open or waiting for acceptance.
async fn reject_connections(ec2: &aws_sdk_ec2::Client, service_id: &str, progress: &Progress) -> Result<()> {
    let _step = progress.step("rejecting the endpoint connections still open");
    let connections: Vec<_> = ec2
        .describe_vpc_endpoint_connections()
        .filters(Filter::builder().name("service-id").values(service_id).build())
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(Error::aws("listing endpoint connections (DescribeVpcEndpointConnections)"))?;
    let open: Vec<String> = connections
        .into_iter()
        // AWS spells these states in more than one case ("available", "Available").
        .filter(|c| {
            let state = c.vpc_endpoint_state.as_ref().map(|s| s.as_str().to_ascii_lowercase()).unwrap_or_default();
            matches!(state.as_str(), "available" | "pendingacceptance" | "pending")
        })
        .filter_map(|c| c.vpc_endpoint_id)
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    info!(service_id, endpoints = ?open, "rejecting endpoint connections so the service can be deleted");
    ec2.reject_vpc_endpoint_connections()
        .service_id(service_id)
        .set_vpc_endpoint_ids(Some(open))
        .send()
        .await
        .map_err(Error::aws("rejecting endpoint connections (RejectVpcEndpointConnections)"))?;
    Ok(())
}

async fn wait_deleted(ec2: &aws_sdk_ec2::Client, service_id: &str, progress: &Progress) -> Result<()> {
    let _step = progress.step("waiting for the endpoint service to be deleted");
    let mut pause = Duration::from_millis(500);
    loop {
        match ec2.describe_vpc_endpoint_service_configurations().service_ids(service_id).send().await {
            Err(err) if is_not_found(code_of(&err)) => return Ok(()),
            Err(err) => {
                return Err(Error::aws(
                    "waiting for the endpoint service to be deleted (DescribeVpcEndpointServiceConfigurations)",
                )(err));
            }
            Ok(answer) => {
                let state =
                    answer.service_configurations.unwrap_or_default().into_iter().next().and_then(|s| s.service_state);
                if matches!(state, None | Some(ServiceState::Deleted)) {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}
