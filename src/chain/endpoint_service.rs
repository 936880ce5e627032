//! The VPC endpoint service on the load balancer and who may connect to it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ResourceType, ServiceConfiguration, ServiceState, Tag, TagSpecification};
use tracing::info;

use super::poll::{self, AcceptorState, SERVICE_NOT_FOUND, Waited};
use super::tags::{self, LOGICAL_ID_TAG, STACK_ID_TAG, Tags};
use super::{Desired, Owner, Progress};
use crate::error::{Error, Result, code_of};

/// Every endpoint service ID starts so; the chain's physical ID is its service's.
pub const ID_PREFIX: &str = "vpce-svc-";

#[derive(Debug, Clone)]
pub struct EndpointService {
    pub id: String,
    pub name: String,
    pub acceptance_required: bool,
    pub load_balancer_arns: Vec<String>,
    /// Regions besides the service's own where consumers may connect.
    pub supported_regions: BTreeSet<String>,
    /// `Available`, `Pending`, `Failed`, … as AWS reports it (empty when only known by ID).
    pub state: String,
    pub generation: String,
    pub tags: BTreeMap<String, String>,
}

impl EndpointService {
    /// A service known only by its ID (recorded when it was created).
    pub fn known(id: String, generation: String) -> Self {
        EndpointService {
            name: String::new(),
            id,
            acceptance_required: false,
            load_balancer_arns: Vec::new(),
            supported_regions: BTreeSet::new(),
            state: String::new(),
            generation,
            tags: BTreeMap::new(),
        }
    }

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
            state: service.service_state.map(|s| s.as_str().to_string()).unwrap_or_default(),
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

/// The service with this ID, read by ID rather than through the tag filter,
/// which can lag behind; None when it is gone.
pub async fn by_id(ec2: &aws_sdk_ec2::Client, owner: &Owner, service_id: &str) -> Result<Option<EndpointService>> {
    let answer = match ec2.describe_vpc_endpoint_service_configurations().service_ids(service_id).send().await {
        Ok(answer) => answer,
        Err(err) if is_not_found(code_of(&err)) => return Ok(None),
        Err(err) => {
            return Err(Error::aws("reading the endpoint service (DescribeVpcEndpointServiceConfigurations)")(err));
        }
    };
    Ok(answer
        .service_configurations
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.service_state != Some(ServiceState::Deleted))
        .map(EndpointService::from_sdk)
        .find_map(|mut service| {
            service.generation = tags::owned_generation(owner, &service.tags)?;
            Some(service)
        }))
}

/// The idempotency token of one chain's service: a retried or re-delivered
/// create returns the service made the first time instead of a second one.
fn client_token(tags: &Tags) -> String {
    let tag = |key: &str| tags.wanted.get(key).map(String::as_str).unwrap_or_default();
    let owner = format!("{}/{}", tag(STACK_ID_TAG), tag(LOGICAL_ID_TAG));
    format!("reverse-privatelink-{}-{}", tag(tags::GENERATION_TAG), super::stable_hash(&owner))
}

/// Creates the endpoint service on the load balancer, or brings an existing
/// one's acceptance setting, load balancer, regions and tags to what is wanted.
/// Returns it and whether this call created it.
pub async fn ensure(
    ec2: &aws_sdk_ec2::Client,
    existing: Option<&EndpointService>,
    lb_arn: &str,
    want: &Desired<'_>,
    tags: &Tags,
    progress: &Progress,
) -> Result<(EndpointService, bool)> {
    let acceptance_required = want.spec.acceptance_required;
    let Some(service) = existing else {
        let _step = progress.step("creating the endpoint service");
        let created = ec2
            .create_vpc_endpoint_service_configuration()
            .client_token(client_token(tags))
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
        let service = service.ok_or_else(|| Error::Unexpected {
            step: "creating the endpoint service",
            message: "CreateVpcEndpointServiceConfiguration returned no service ID".into(),
        })?;
        progress.record("endpoint service", &service.id);
        return Ok((service, true));
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
        progress.gate().await?;
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
    Ok((service, false))
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
        progress.gate().await?;
        tag(ec2, &service.id, &set, false).await?;
    }
    if !remove.is_empty() {
        let _step = progress.step("removing dropped tags from the endpoint service");
        progress.gate().await?;
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

/// Allows exactly `principals` to connect: adds the missing, removes the rest. A
/// service created just now (`fresh`) allows nobody yet, so it is not read first.
pub async fn ensure_principals(
    ec2: &aws_sdk_ec2::Client,
    service_id: &str,
    principals: &BTreeSet<String>,
    fresh: bool,
    progress: &Progress,
) -> Result<()> {
    let _step = progress.step("allowing the consumer's principals");
    let current: BTreeSet<String> = if fresh {
        BTreeSet::new()
    } else {
        ec2.describe_vpc_endpoint_service_permissions()
            .service_id(service_id)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(Error::aws("reading the allowed principals (DescribeVpcEndpointServicePermissions)"))?
            .into_iter()
            .filter_map(|allowed| allowed.principal)
            .collect()
    };
    let add: Vec<String> = principals.difference(&current).cloned().collect();
    let remove: Vec<String> = current.difference(principals).cloned().collect();
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    progress.gate().await?;
    poll::settled(fresh, SERVICE_NOT_FOUND, || {
        ec2.modify_vpc_endpoint_service_permissions()
            .service_id(service_id)
            .set_add_allowed_principals(Some(add.clone()).filter(|a| !a.is_empty()))
            .set_remove_allowed_principals(Some(remove.clone()).filter(|r| !r.is_empty()))
            .send()
    })
    .await
    .map_err(Error::aws("changing the allowed principals (ModifyVpcEndpointServicePermissions)"))?;
    Ok(())
}

/// Sets `tags` on the service; `fresh`: it was created moments ago.
pub async fn tag(
    ec2: &aws_sdk_ec2::Client,
    service_id: &str,
    tags: &BTreeMap<String, String>,
    fresh: bool,
) -> Result<()> {
    let tags: Vec<Tag> = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    poll::settled(fresh, SERVICE_NOT_FOUND, || {
        ec2.create_tags().resources(service_id).set_tags(Some(tags.clone())).send()
    })
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

/// The consumers' endpoints connected to the service or waiting for acceptance.
pub async fn active_connections(ec2: &aws_sdk_ec2::Client, service_id: &str) -> Result<Vec<String>> {
    let connections: Vec<_> = ec2
        .describe_vpc_endpoint_connections()
        .filters(Filter::builder().name("service-id").values(service_id).build())
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(Error::aws("listing endpoint connections (DescribeVpcEndpointConnections)"))?;
    Ok(connections
        .into_iter()
        // AWS spells these states in more than one case ("available", "Available").
        .filter(|c| {
            let state = c.vpc_endpoint_state.as_ref().map(|s| s.as_str().to_ascii_lowercase()).unwrap_or_default();
            matches!(state.as_str(), "available" | "pendingacceptance" | "pending")
        })
        .filter_map(|c| c.vpc_endpoint_id)
        .collect())
}

/// Rejects every connection that is open or waiting for acceptance.
async fn reject_connections(ec2: &aws_sdk_ec2::Client, service_id: &str, progress: &Progress) -> Result<()> {
    let _step = progress.step("rejecting the endpoint connections still open");
    let open = active_connections(ec2, service_id).await?;
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

/// Waits until the service is gone; one AWS reports `Failed` ends the wait at once.
async fn wait_deleted(ec2: &aws_sdk_ec2::Client, service_id: &str, progress: &Progress) -> Result<()> {
    const WHAT: &str = "waiting for the endpoint service to be deleted (DescribeVpcEndpointServiceConfigurations)";
    let state = |output: &aws_sdk_ec2::operation::describe_vpc_endpoint_service_configurations::DescribeVpcEndpointServiceConfigurationsOutput| {
        output.service_configurations().first().and_then(|s| s.service_state.clone())
    };
    let waited = poll::until(
        WHAT,
        || ec2.describe_vpc_endpoint_service_configurations().service_ids(service_id).send(),
        |answer| match answer {
            Ok(output) => match state(output) {
                None | Some(ServiceState::Deleted) => AcceptorState::Success,
                Some(ServiceState::Failed) => AcceptorState::Failure,
                Some(_) => AcceptorState::Retry,
            },
            Err(err) if poll::is(err, SERVICE_NOT_FOUND) => AcceptorState::Success,
            Err(_) => AcceptorState::NoAcceptorsMatched,
        },
        MAX_DELETE_WAIT,
        progress,
    )
    .await?;
    match waited {
        Waited::Failed(_) => Err(Error::Unexpected {
            step: WHAT,
            message: format!(
                "AWS reports the endpoint service {service_id} Failed; delete it in the VPC console and retry"
            ),
        }),
        Waited::Reached(_) | Waited::Gone(_) => Ok(()),
    }
}

/// How long a deletion may take at most; the caller's deadline usually ends the wait sooner.
const MAX_DELETE_WAIT: Duration = Duration::from_secs(600);
