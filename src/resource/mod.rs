//! The custom resource: turns Create, Update and Delete requests into desired
//! state and hands it to the chain. Owns the rules that tie CloudFormation's
//! lifecycle to the chains:
//! - a request works on the generation its request ID names; a new chain is
//!   answered only while CloudFormation still waits, and marked answered only
//!   once CloudFormation shows it took the answer;
//! - an Update changes the named chain in place when AWS can, else answers with
//!   an answered chain that already matches (a rollback after a replacement), else
//!   builds a new generation;
//! - a failed or abandoned build removes what it made, and every later event of
//!   the resource removes the chains CloudFormation never received.

mod cleanup;
mod lookup;
mod report;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::{error, info, warn};

use crate::aws::Aws;
use crate::chain::{self, Built, Chain, Desired, Group, Owner, Resolved, SERVICE_ID_PREFIX};
use crate::cloudformation::{
    CreateRequest, CustomResource, DeleteRequest, Request, StatusReader, Success, UpdateRequest,
};
use crate::database::Databases;
use crate::deadline::{Deadline, Progress, within};
use crate::error::{Error, Result};
use crate::fleet::Reporter;
use crate::resolve::{Resolution, SETTLE_PATIENCE, WhileSettling, ZoneChecks, resolve};
use crate::spec::{Spec, same_value, tag_keys};
use watch::{Acceptance, NotRollingBack, StillAwaited, acceptance};

/// How often an Update asks the stack's status at its start before taking "could not ask"
/// for an answer: 3.5 s of pauses in all, beside the first reads.
const STACK_QUESTION_ATTEMPTS: u32 = 4;

/// The reverse-PrivateLink custom resource.
pub struct ReversePrivateLink {
    aws: Aws,
    databases: Databases,
    status: StatusReader,
    fleet: Reporter,
    /// What to do once CloudFormation has an answer, by request ID.
    after_answer: Mutex<BTreeMap<String, AfterAnswer>>,
}

/// What an Update's work shares with the request around it.
struct UpdateRun {
    progress: Progress,
    gate: Arc<NotRollingBack>,
    /// Set once the request starts building a new chain: only that is removed on failure.
    building_new: Mutex<bool>,
}

/// A chain CloudFormation has just been given, to be marked answered.
struct AfterAnswer {
    /// The load balancer and target group, which carry the mark with the service.
    elb_arns: Vec<String>,
    /// Everything the request made, removed if CloudFormation did not take it.
    made: Group,
    /// A new chain: marked only once CloudFormation shows it took it.
    confirm: bool,
    watch: Arc<StillAwaited>,
}

impl ReversePrivateLink {
    pub fn new(aws: Aws, databases: Databases) -> Self {
        let status = StatusReader::new(aws.cloudformation.clone());
        let fleet = Reporter::new(aws.events.clone());
        ReversePrivateLink { aws, databases, status, fleet, after_answer: Mutex::default() }
    }
}

impl CustomResource for ReversePrivateLink {
    type Error = Error;

    fn no_longer_awaited(error: &Error) -> bool {
        error.no_longer_awaited()
    }

    async fn handle(&self, request: &Request, deadline: &Deadline) -> Result<Success> {
        if let Request::Create(CreateRequest { resource_type, resource_properties, stack_id, .. })
        | Request::Update(UpdateRequest { resource_type, resource_properties, stack_id, .. }) = request
            && resource_type == lookup::RESOURCE_TYPE
        {
            return Box::pin(lookup::security_groups(&self.aws.ec2, &self.databases, resource_properties, stack_id))
                .await;
        }
        if let Request::Delete(delete) = request
            && delete.resource_type == lookup::RESOURCE_TYPE
        {
            // Nothing was made for it.
            let physical_resource_id = delete.physical_resource_id.clone();
            return Ok(Success { physical_resource_id, data: BTreeMap::new() });
        }
        match request {
            // Boxed: each request's future nests the whole chain and would not fit a thread's stack.
            Request::Create(create) => Box::pin(self.create(create, deadline)).await,
            Request::Update(update) => Box::pin(self.update(update, deadline)).await,
            Request::Delete(delete) => Box::pin(self.delete(delete, deadline)).await,
            _ => Err(Error::property("RequestType", "not Create, Update or Delete")),
        }
    }

    async fn answered(&self, request: &Request, answer: Result<&Success, &str>) {
        let report = async {
            if let Some((bus, report)) = report::of(request, answer) {
                self.fleet.send(&bus, &report).await;
            }
        };
        let record = async {
            if let Ok(success) = answer {
                self.record_answer(request, success).await;
            }
        };
        tokio::join!(report, record);
    }
}

impl ReversePrivateLink {
    /// Marks a chain CloudFormation has just been given as answered, once it shows it took it.
    async fn record_answer(&self, request: &Request, success: &Success) {
        let request_id = match request {
            Request::Create(create) => &create.request_id,
            Request::Update(update) => &update.request_id,
            _ => return,
        };
        let pending = self.after_answer.lock().unwrap_or_else(PoisonError::into_inner).remove(request_id);
        let Some(AfterAnswer { elb_arns, made, confirm, watch }) = pending else { return };
        let chain = self.chain(&watch.stack_id, &watch.logical_id);
        let service_id = &success.physical_resource_id;
        // A moment ago CloudFormation knew no such stack: nobody can have cancelled the request.
        if confirm && watch.stack_known() != Some(false) {
            match acceptance(&watch, service_id).await {
                Acceptance::Taken => {}
                Acceptance::Refused(status) => {
                    warn!(%service_id, %status, "CloudFormation did not take the answer; removing the chain");
                    if let Err(error) = chain.teardown(&made, &Progress::default()).await {
                        error!(%error, "could not remove the chain; the next event of this resource removes it");
                    }
                    return;
                }
                Acceptance::Unsure => {
                    // Unmarked it is still safe: the chain CloudFormation holds is never swept.
                    warn!(%service_id, "CloudFormation has not shown whether it took the answer; leaving the chain unmarked");
                    return;
                }
            }
        }
        match chain.mark_answered(service_id, elb_arns).await {
            Ok(()) => info!(%service_id, "recorded that CloudFormation has the chain"),
            Err(error) => error!(%service_id, %error, "could not record that CloudFormation has the chain"),
        }
    }

    fn chain(&self, stack_id: &str, logical_id: &str) -> Chain<'_> {
        Chain::new(&self.aws, Owner { stack_id: stack_id.to_string(), logical_id: logical_id.to_string() })
    }

    fn watch(&self, stack_id: &str, logical_id: &str) -> Arc<StillAwaited> {
        Arc::new(StillAwaited::new(self.status.clone(), stack_id, logical_id))
    }

    async fn create(&self, request: &CreateRequest, deadline: &Deadline) -> Result<Success> {
        let spec = Spec::from_properties(&request.resource_properties, &request.stack_id)?;
        let chain = self.chain(&request.stack_id, &request.logical_resource_id);
        let generation = chain::generation(&request.request_id);
        let name = format!("{}-{generation}", spec.name);
        let watch = self.watch(&request.stack_id, &request.logical_resource_id);
        let progress = Progress::with_checkpoint(watch.clone());
        let built = within(
            deadline.work_until,
            &progress,
            Box::pin(async {
                let settling = WhileSettling::Fail(SETTLE_PATIENCE);
                // Beside the reads, before any write: whether CloudFormation still waits. A
                // repeated delivery after the answer must not put back what an Update changed since.
                let (resolution, ()) = tokio::try_join!(
                    Box::pin(resolve(&self.aws, &self.databases, &spec, settling, ZoneChecks::Strict, &progress)),
                    progress.checkpoint(),
                )?;
                let want = Desired {
                    spec: &spec,
                    resolved: &resolution.resolved,
                    generation: generation.clone(),
                    dropped_tag_keys: BTreeSet::new(),
                };
                // What an earlier attempt of this request made is found as it goes (by name).
                let built = Box::pin(chain.converge(&want, None, &progress, deadline.waits_until())).await?;
                Ok((built, resolution))
            }),
        )
        .await;
        match built {
            Ok((built, resolution)) => {
                let made = Group::recorded(&generation, &progress);
                let after = AfterAnswer { elb_arns: built.elb_arns(), made, confirm: true, watch };
                Ok(self.answer(&request.request_id, &spec, built, resolution, Some(after)))
            }
            // Refused properties leave nothing, unless found only once building (a zone AWS refuses).
            Err(error @ (Error::Property { .. } | Error::Properties(_)))
                if Group::recorded(&generation, &progress).is_empty() =>
            {
                Err(error)
            }
            Err(error) => Err(Box::pin(cleanup::after_failure(
                &chain,
                &name,
                &generation,
                &progress,
                error,
                deadline.cleanup_until,
            ))
            .await),
        }
    }

    /// Changes the chain named by the physical ID in place where AWS can; else
    /// answers with another chain CloudFormation already has that matches (the
    /// rollback of a replacement); else builds a new chain, whose new ID tells
    /// CloudFormation to delete the old one once the stack update has succeeded.
    async fn update(&self, request: &UpdateRequest, deadline: &Deadline) -> Result<Success> {
        let spec = Spec::from_properties(&request.resource_properties, &request.stack_id)?;
        let chain = self.chain(&request.stack_id, &request.logical_resource_id);
        let replacement = chain::generation(&request.request_id);
        let name = format!("{}-{replacement}", spec.name);
        let watch = self.watch(&request.stack_id, &request.logical_resource_id);
        // An Update that started before its stack began rolling back stops before each write
        // once it has: the rollback's own Update must have the last word (aws-cdk#31541).
        let gate = Arc::new(NotRollingBack::new(self.status.clone(), &request.stack_id));
        let progress = Progress::with_checkpoint(watch.clone()).with_gate(gate.clone());
        let run = UpdateRun { progress, gate, building_new: Mutex::new(false) };
        let work = self.update_work(request, &spec, &chain, &run, deadline);
        let progress = &run.progress;
        let built = within(deadline.work_until, progress, Box::pin(work)).await;
        let new_chain = *run.building_new.lock().unwrap_or_else(PoisonError::into_inner);
        match built {
            Ok((built, resolution, unmarked)) => {
                // A chain CloudFormation already had needs marking only if its mark went missing.
                let made = Group::recorded(&replacement, progress);
                let after = (new_chain || unmarked).then(|| AfterAnswer {
                    elb_arns: built.elb_arns(),
                    made,
                    confirm: new_chain,
                    watch,
                });
                Ok(self.answer(&request.request_id, &spec, built, resolution, after))
            }
            Err(error @ (Error::Property { .. } | Error::Properties(_)))
                if Group::recorded(&replacement, progress).is_empty() =>
            {
                Err(error)
            }
            // A chain changed in place is CloudFormation's and stays.
            Err(error) if !new_chain => Err(error),
            Err(error) => Err(Box::pin(cleanup::after_failure(
                &chain,
                &name,
                &replacement,
                progress,
                error,
                deadline.cleanup_until,
            ))
            .await),
        }
    }

    async fn update_work(
        &self,
        request: &UpdateRequest,
        spec: &Spec,
        chain: &Chain<'_>,
        run: &UpdateRun,
        deadline: &Deadline,
    ) -> Result<(Built, Resolution, bool)> {
        let UpdateRun { progress, gate, building_new } = run;
        let physical_id = request.physical_resource_id.as_str();
        let replacement = chain::generation(&request.request_id);
        let dropped_tag_keys: BTreeSet<String> =
            tag_keys(&request.old_resource_properties).into_iter().filter(|key| !spec.tags.contains_key(key)).collect();
        // A zone the load balancer lacks fails only a request that changes where the chain goes.
        let (old, new) = (&request.old_resource_properties, &request.resource_properties);
        let checks = match ["Database", "SubnetIds"].iter().all(|property| same_value(old, new, property)) {
            true => ZoneChecks::Lenient,
            false => ZoneChecks::Strict,
        };
        // Whether the stack is rolling back when this Update starts decides whether it yields
        // to a rollback later, once and for all: a rollback's own Update that cannot tell
        // would stop, and leave the stack UPDATE_ROLLBACK_FAILED.
        let stack = async { self.status.stack_patiently(&request.stack_id, STACK_QUESTION_ATTEMPTS).await };
        let reads = |settling| async move {
            tokio::try_join!(
                Box::pin(resolve(&self.aws, &self.databases, spec, settling, checks, progress)),
                chain.by_tags(),
                chain.service(physical_id),
            )
        };
        // While a failover settles: an Update that leaves the database alone keeps the
        // registered target and changes the rest, without waiting; one that names a new
        // database waits for it, and fails unless it is a rollback, which must never fail
        // for what the follower can finish (custom-resource-helper#70).
        let read = async {
            match same_value(old, new, "Database") {
                true => tokio::join!(stack, reads(WhileSettling::Keep(Duration::ZERO))),
                false => {
                    let stack = stack.await;
                    let settling = match stack.rolling_back() {
                        true => WhileSettling::Keep(SETTLE_PATIENCE),
                        false => WhileSettling::Fail(SETTLE_PATIENCE),
                    };
                    (stack, reads(settling).await)
                }
            }
        };
        // Beside the reads, before any write: whether CloudFormation still waits. A repeated
        // delivery after the answer must not undo what later requests changed.
        let (awaited, (stack, reads)) = tokio::join!(progress.checkpoint(), Box::pin(read));
        awaited?;
        let (resolution, index, service) = reads?;
        gate.started(&stack);
        let named = chain.named(physical_id, service, &index).await?;
        let base = Desired {
            spec,
            resolved: &resolution.resolved,
            generation: replacement.clone(),
            dropped_tag_keys: dropped_tag_keys.clone(),
        };
        let in_place = Box::pin(self.in_place(chain, &base, &resolution, named.as_ref(), &index)).await?;
        let (resolved, existing) = match in_place {
            Some((group, resolved)) => (resolved, Some(group)),
            None => {
                *building_new.lock().unwrap_or_else(PoisonError::into_inner) = true;
                (resolution.resolved.clone(), None)
            }
        };
        let generation = existing.as_ref().map_or_else(|| replacement.clone(), |g| g.generation.clone());
        let want = Desired { spec, resolved: &resolved, generation, dropped_tag_keys };
        let named_generation = named.as_ref().map(|g| g.generation.as_str());
        let keep: Vec<&str> = [Some(replacement.as_str()), named_generation, Some(want.generation.as_str())]
            .into_iter()
            .flatten()
            .collect();
        // Alongside: the leftovers of crashed or failed requests of this resource go.
        let sweep_progress = Progress::default();
        let asking = cleanup::Asking {
            status: &self.status,
            stack_id: &request.stack_id,
            logical_id: &request.logical_resource_id,
            physical_id,
        };
        let sweep = cleanup::sweep(chain, &index, &keep, &asking, &sweep_progress);
        let converge = chain.converge(&want, existing.as_ref(), progress, deadline.waits_until());
        let (built, swept) = tokio::join!(Box::pin(converge), Box::pin(sweep));
        if let Err(error) = swept {
            error!(%error, "could not remove what earlier requests left; the next event of this resource tries again");
        }
        let (mut built, existing, want) = match built {
            // AWS refused a change it makes in place only sometimes (removing subnets while a
            // consumer's endpoint is associated): a new chain after all, as before that was possible.
            Err(Error::NeedsNewChain(reason)) if existing.is_some() => {
                warn!(%reason, "the chain cannot take the change in place after all; building a new chain");
                *building_new.lock().unwrap_or_else(PoisonError::into_inner) = true;
                let want = Desired {
                    spec,
                    resolved: &resolution.resolved,
                    generation: replacement.clone(),
                    dropped_tag_keys: want.dropped_tag_keys.clone(),
                };
                let built = Box::pin(chain.converge(&want, None, progress, deadline.waits_until())).await?;
                (built, None, want)
            }
            built => (built?, existing, want),
        };
        // A rollback reads and converges once more before answering: an update it undoes
        // may have written after the rollback read (it stops only at its next write).
        if let (true, Some(group)) = (stack.rolling_back(), &existing) {
            info!("converging once more: the update this rollback undoes may still have written");
            let service = chain.service(&built.service_id).await?;
            let again = Group { services: service.into_iter().collect(), ..group.clone() };
            let again = chain.with_details(&again).await?;
            built = Box::pin(chain.converge(&want, Some(&again), progress, deadline.waits_until())).await?;
        }
        let named_unmarked = existing.as_ref().is_some_and(|g| g.answered_as().is_none());
        Ok((built, resolution, named_unmarked))
    }

    /// The chain to change in place, with what it should become: the named one if it
    /// can take `want`, else an answered chain of this resource that can (a rollback
    /// Update after a replacement names the new chain but asks for the old properties).
    async fn in_place(
        &self,
        chain: &Chain<'_>,
        want: &Desired<'_>,
        resolution: &Resolution,
        named: Option<&Group>,
        index: &chain::Inventory,
    ) -> Result<Option<(Group, Resolved)>> {
        let fits = async |group: &Group| -> Result<Option<(Group, Resolved)>> {
            // A chain whose service was deleted outside CloudFormation cannot be completed under
            // its generation: EC2 may answer the service's client token with the deleted service
            // (EC2 API, "Ensuring idempotency"), and the old ID's Delete would take the new one.
            if group.services.is_empty() {
                warn!(generation = %group.generation, "the chain's endpoint service is gone; building a new chain");
                return Ok(None);
            }
            let detailed = chain.with_details(group).await?;
            let resolved = match detailed.load_balancers.first() {
                Some(lb) => resolution.for_chain(lb),
                None => resolution.resolved.clone(),
            };
            let in_place = Desired { generation: group.generation.clone(), resolved: &resolved, ..want.clone() };
            let reasons = chain.replacement_reasons(&in_place, &detailed).await?;
            if !reasons.is_empty() {
                info!(generation = %group.generation, ?reasons, "the chain cannot take the change in place");
            }
            Ok(reasons.is_empty().then_some((detailed, resolved)))
        };
        match named {
            Some(group) => {
                if let Some(fitting) = fits(group).await? {
                    return Ok(Some(fitting));
                }
            }
            None => warn!("no chain of this resource holds the physical ID"),
        }
        let named_generation = named.map(|g| g.generation.as_str());
        for group in
            index.groups().filter(|g| g.answered_as().is_some() && Some(g.generation.as_str()) != named_generation)
        {
            if let Some((group, resolved)) = fits(group).await? {
                info!(generation = %group.generation, service_id = group.service_id().unwrap_or_default(), "a chain CloudFormation already has matches; answering with it");
                return Ok(Some((group, resolved)));
            }
        }
        Ok(None)
    }

    /// Deletes the chain the physical ID names (read by its service's ID, as a tag
    /// index can lag), then every chain of this resource CloudFormation never
    /// received. An ID that names no service (a failed Create's, or one
    /// CloudFormation made up after a crash or a cancelled Create) leaves only the
    /// second part. Answered chains are live until a Delete names them.
    async fn delete(&self, request: &DeleteRequest, deadline: &Deadline) -> Result<Success> {
        let chain = self.chain(&request.stack_id, &request.logical_resource_id);
        let physical_id = request.physical_resource_id.as_str();
        let progress = Progress::default();
        within(deadline.work_until, &progress, Box::pin(async {
            let (index, service) = tokio::try_join!(chain.by_tags(), chain.service(physical_id))?;
            let named = chain.named(physical_id, service, &index).await?;
            match &named {
                Some(group) => {
                    // CloudFormation held it, so it is answered: marked first if its mark never
                    // landed, so that a Delete delivered again after a crash mid-way, with the
                    // service already gone, still finds the rest (the database rule among it).
                    if group.answered_as().is_none() && !group.elb_arns().is_empty() {
                        chain.mark_answered(physical_id, group.elb_arns()).await?;
                    }
                    chain.teardown(group, &progress).await?
                }
                None if physical_id.starts_with(SERVICE_ID_PREFIX) => {
                    info!(physical_resource_id = %physical_id, "no chain of this resource has that ID: already deleted");
                }
                None => {}
            }
            let keep: Vec<&str> = named.as_ref().map(|g| g.generation.as_str()).into_iter().collect();
            let asking = cleanup::Asking {
                status: &self.status,
                stack_id: &request.stack_id,
                logical_id: &request.logical_resource_id,
                physical_id,
            };
            cleanup::sweep(&chain, &index, &keep, &asking, &progress).await
        }))
        .await?;
        Ok(Success { physical_resource_id: physical_id.to_string(), data: BTreeMap::new() })
    }

    /// The answer, remembering what to do once CloudFormation has it.
    fn answer(
        &self,
        request_id: &str,
        spec: &Spec,
        built: Built,
        resolution: Resolution,
        after: Option<AfterAnswer>,
    ) -> Success {
        if let Some(after) = after {
            self.after_answer.lock().unwrap_or_else(PoisonError::into_inner).insert(request_id.to_string(), after);
        }
        success(spec, built, resolution)
    }
}

/// What follows the last `marker` of an ARN: `targetgroup/name/id` after ":",
/// `net/name/id` after ":loadbalancer/".
fn arn_suffix(arn: &str, marker: &str) -> String {
    arn.rsplit_once(marker).map(|(_, suffix)| suffix.to_string()).unwrap_or_default()
}

fn success(spec: &Spec, built: Built, resolution: Resolution) -> Success {
    let join = |items: Vec<String>| items.join(",");
    let database = spec.database().map(|d| d.as_given().to_string()).unwrap_or_default();
    let writer_instance = resolution.writer.and_then(|w| w.instance).unwrap_or_default();
    // The dimensions CloudWatch's AWS/NetworkELB metrics name them by (an alarm reads them).
    let target_group_dimension = arn_suffix(&built.target_group_arn, ":");
    let load_balancer_dimension = arn_suffix(&built.load_balancer_arn, ":loadbalancer/");
    let data = BTreeMap::from([
        ("TargetGroupDimension".to_string(), target_group_dimension),
        ("LoadBalancerDimension".to_string(), load_balancer_dimension),
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
