//! The custom resource: turns Create, Update and Delete requests into desired
//! state and hands it to the chain. Owns the rules that tie CloudFormation's
//! lifecycle to the chains: which generation a request works on, when a chain
//! is replaced, and what a failed or crashed request leaves to clean up.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{error, info, warn};

use crate::aws::Aws;
use crate::chain::{self, Built, Chain, Desired, Owner};
use crate::cloudformation::{CreateRequest, CustomResource, DeleteRequest, Request, Success, UpdateRequest};
use crate::database::Databases;
use crate::deadline::{Deadline, Progress, within};
use crate::error::{Error, Result};
use crate::resolve::{Resolution, resolve};
use crate::spec::{Spec, tag_keys};

/// Physical IDs of this resource are endpoint service IDs.
const SERVICE_ID_PREFIX: &str = "vpce-svc-";

/// The reverse-PrivateLink custom resource.
pub struct ReversePrivateLink {
    aws: Aws,
    databases: Databases,
}

impl ReversePrivateLink {
    pub fn new(aws: Aws, databases: Databases) -> Self {
        ReversePrivateLink { aws, databases }
    }
}

impl CustomResource for ReversePrivateLink {
    type Error = Error;

    async fn handle(&self, request: &Request, deadline: &Deadline) -> Result<Success> {
        match request {
            Request::Create(create) => self.create(create, deadline).await,
            Request::Update(update) => self.update(update, deadline).await,
            Request::Delete(delete) => self.delete(delete, deadline).await,
            _ => Err(Error::property("RequestType", "not Create, Update or Delete")),
        }
    }

    async fn answered(&self, request: &Request, success: &Success) {
        let (stack_id, logical_id) = match request {
            Request::Create(create) => (&create.stack_id, &create.logical_resource_id),
            Request::Update(update) => (&update.stack_id, &update.logical_resource_id),
            _ => return,
        };
        let service_id = &success.physical_resource_id;
        let elb_arns =
            ["LoadBalancerArn", "TargetGroupArn"].iter().filter_map(|key| success.data.get(*key).cloned()).collect();
        match self.chain(stack_id, logical_id).mark_answered(service_id, elb_arns).await {
            Ok(()) => info!(%service_id, "recorded that CloudFormation has the chain"),
            // The chain stays: only a Delete naming it removes it; a Delete with an invented ID will not.
            Err(error) => error!(%service_id, %error, "could not record that CloudFormation has the chain"),
        }
    }
}

impl ReversePrivateLink {
    fn chain(&self, stack_id: &str, logical_id: &str) -> Chain<'_> {
        Chain::new(&self.aws, Owner { stack_id: stack_id.to_string(), logical_id: logical_id.to_string() })
    }

    async fn create(&self, request: &CreateRequest, deadline: &Deadline) -> Result<Success> {
        let spec = Spec::from_properties(&request.resource_properties, &request.stack_id)?;
        let chain = self.chain(&request.stack_id, &request.logical_resource_id);
        let generation = chain::generation(&request.request_id);
        let progress = Progress::default();
        let built = within(deadline.work_until, &progress, async {
            let resolution = Box::pin(resolve(&self.aws, &self.databases, &spec, &progress)).await?;
            let inventory = chain.inventory().await?;
            let want = Desired {
                spec: &spec,
                resolved: &resolution.resolved,
                generation: generation.clone(),
                dropped_tag_keys: BTreeSet::new(),
            };
            let built =
                Box::pin(chain.converge(&want, inventory.generation(&generation), &progress, deadline.waits_until()))
                    .await?;
            Ok((built, resolution))
        })
        .await;
        finish(&chain, &spec, &generation, built, deadline).await
    }

    /// Changes the chain named by the physical ID in place where AWS can;
    /// otherwise builds a new chain, whose new ID tells CloudFormation to
    /// delete the old one once the stack update has succeeded.
    async fn update(&self, request: &UpdateRequest, deadline: &Deadline) -> Result<Success> {
        let spec = Spec::from_properties(&request.resource_properties, &request.stack_id)?;
        let dropped_tag_keys: BTreeSet<String> =
            tag_keys(&request.old_resource_properties).into_iter().filter(|key| !spec.tags.contains_key(key)).collect();
        let chain = self.chain(&request.stack_id, &request.logical_resource_id);
        let replacement = chain::generation(&request.request_id);
        let progress = Progress::default();
        let built = within(deadline.work_until, &progress, async {
            let resolution = Box::pin(resolve(&self.aws, &self.databases, &spec, &progress)).await?;
            let inventory = chain.inventory().await?;
            let mut want = Desired {
                spec: &spec,
                resolved: &resolution.resolved,
                generation: replacement.clone(),
                dropped_tag_keys,
            };
            match inventory.named(&request.physical_resource_id) {
                Some(current) => {
                    let in_place = Desired { generation: current.generation.clone(), ..want.clone() };
                    let reasons = chain.replacement_reasons(&in_place, current);
                    if reasons.is_empty() {
                        want = in_place;
                    } else {
                        info!(?reasons, "the change needs a new chain");
                    }
                }
                None => warn!(
                    physical_resource_id = %request.physical_resource_id,
                    "no chain of this resource holds that endpoint service; building a new one"
                ),
            }
            let built = Box::pin(chain.converge(
                &want,
                inventory.generation(&want.generation),
                &progress,
                deadline.waits_until(),
            ))
            .await?;
            Ok((built, resolution))
        })
        .await;
        // Only an unanswered replacement can be removed; a chain changed in place was answered and stays.
        finish(&chain, &spec, &replacement, built, deadline).await
    }

    /// Deletes the chain the physical ID names. An ID that names no service
    /// (a failed Create's, or one CloudFormation made up after a crash) stands for
    /// the chains whose ID CloudFormation never received: every unanswered chain of
    /// this resource goes. Answered chains are live until a Delete names them.
    async fn delete(&self, request: &DeleteRequest, deadline: &Deadline) -> Result<Success> {
        let chain = self.chain(&request.stack_id, &request.logical_resource_id);
        let named = request.physical_resource_id.as_str();
        let progress = Progress::default();
        within(deadline.work_until, &progress, async {
            let inventory = chain.inventory().await?;
            if let Some(group) = inventory.named(named) {
                return chain.teardown(group, &progress).await;
            }
            if named.starts_with(SERVICE_ID_PREFIX) {
                info!(physical_resource_id = %named, "no chain of this resource has that ID: already deleted");
                return Ok(());
            }
            for debris in inventory.unanswered() {
                info!(generation = %debris.generation, "removing a chain CloudFormation never received");
                chain.teardown(debris, &progress).await?;
            }
            Ok(())
        })
        .await?;
        Ok(Success { physical_resource_id: named.to_string(), data: BTreeMap::new() })
    }
}

/// Answers with the chain, or removes what a failed build of `generation`
/// left unfinished before answering with the error: a failed request leaves
/// nothing behind.
async fn finish(
    chain: &Chain<'_>,
    spec: &Spec,
    generation: &str,
    built: Result<(Built, Resolution)>,
    deadline: &Deadline,
) -> Result<Success> {
    let error = match built {
        Ok((built, resolution)) => return Ok(success(spec, built, resolution)),
        // Refused before anything was created.
        Err(error @ (Error::Property { .. } | Error::Properties(_))) => return Err(error),
        Err(error) => error,
    };
    warn!(%error, generation, "the request failed; removing what it left unfinished");
    let progress = Progress::default();
    let cleanup = within(deadline.cleanup_until, &progress, async {
        let inventory = chain.inventory().await?;
        match inventory.generation(generation) {
            Some(group) if group.answered_as().is_none() => chain.teardown(group, &progress).await,
            _ => Ok(()),
        }
    })
    .await;
    Err(match cleanup {
        Ok(()) => error,
        Err(cleanup) => Error::CleanupFailed { error: Box::new(error), cleanup: Box::new(cleanup) },
    })
}

fn success(spec: &Spec, built: Built, resolution: Resolution) -> Success {
    let join = |items: Vec<String>| items.join(",");
    let database = spec.database().map(|d| d.as_given().to_string()).unwrap_or_default();
    let writer_instance = resolution.writer.and_then(|w| w.instance).unwrap_or_default();
    let data = BTreeMap::from([
        ("ServiceId".to_string(), built.service_id.clone()),
        ("ServiceName".to_string(), built.service_name),
        ("LoadBalancerArn".to_string(), built.load_balancer_arn),
        ("LoadBalancerDnsName".to_string(), built.load_balancer_dns_name),
        ("TargetGroupArn".to_string(), built.target_group_arn),
        ("ListenerArn".to_string(), built.listener_arn),
        ("AvailabilityZones".to_string(), join(built.zones.iter().map(|z| z.name.clone()).collect())),
        ("AvailabilityZoneIds".to_string(), join(built.zones.iter().map(|z| z.id.clone()).collect())),
        ("TargetIps".to_string(), join(built.target_ips.iter().map(ToString::to_string).collect())),
        ("Database".to_string(), database),
        ("WriterInstance".to_string(), writer_instance),
        ("TargetHealth".to_string(), chain::describe_health(&built.target_health)),
        ("SecurityGroupIds".to_string(), join(built.security_groups)),
        (
            "EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic".to_string(),
            if built.enforce_inbound_on_private_link { "on" } else { "off" }.to_string(),
        ),
        ("SupportedRegions".to_string(), join(built.supported_regions)),
    ]);
    Success { physical_resource_id: built.service_id, data }
}
