//! What a request leaves behind: a failed or abandoned build removes what it
//! made; later events of the resource remove what crashed requests left.

use tracing::{error, info, warn};

use crate::chain::{Chain, Group, Inventory};
use crate::cloudformation::{ResourceStatus, StackStatus, StatusReader};
use crate::deadline::{Progress, within};
use crate::error::{Error, Result};

/// Removes what a failed build of `generation` made (what it recorded, and what
/// an earlier attempt of the same request made, found by name), unless
/// CloudFormation holds it. Returns the error to answer with.
pub async fn after_failure(
    chain: &Chain<'_>,
    name: &str,
    generation: &str,
    made: &Progress,
    error: Error,
    until: tokio::time::Instant,
) -> Error {
    warn!(%error, generation, "the request failed; removing what it made");
    let progress = Progress::default();
    let mut group = Group::recorded(generation, made);
    // The physical ID CloudFormation holds, when it said it no longer waits for the request.
    let held = match &error {
        Error::Abandoned { held, .. } => held.clone(),
        _ => None,
    };
    let mut answered = false;
    let cleanup = within(until, &progress, async {
        match chain.own(name, generation).await {
            Ok(Some(found)) if found.answered_as().is_some() => answered = true,
            Ok(Some(found)) => group.merge(found),
            Ok(None) => {}
            // What this attempt recorded is removed all the same.
            Err(error) => warn!(%error, "could not look for what earlier attempts made"),
        }
        // CloudFormation holds it (a request delivered again after its answer, its mark
        // perhaps never written): it stays, whatever this attempt met.
        answered |= held.is_some() && group.service_id() == held.as_deref();
        if answered || group.is_empty() {
            return Ok(());
        }
        chain.teardown(&group, &progress).await
    })
    .await;
    if answered {
        info!(generation, "CloudFormation has this chain as its answer already; keeping it and sending nothing");
        let status = "a repeated delivery of a request already answered".to_string();
        return Error::Abandoned { status, held };
    }
    match cleanup {
        Ok(()) => error,
        Err(cleanup) => Error::CleanupFailed {
            error: Box::new(error),
            cleanup: Box::new(Error::Unexpected {
                step: "removing what the request made",
                message: format!(
                    "{cleanup}; possibly left: {} (the next event of this resource removes them)",
                    group.describe()
                ),
            }),
        },
    }
}

/// The request a sweep runs in: who it is about, and the physical ID the event names.
pub struct Asking<'a> {
    pub status: &'a StatusReader,
    pub stack_id: &'a str,
    pub logical_id: &'a str,
    pub physical_id: &'a str,
}

/// Removes what CloudFormation will never delete, except the generations in `keep`:
/// - this resource's chains CloudFormation never received (a crashed or failed
///   request's), each read again first: the index can lag behind the answered mark,
///   and the chain CloudFormation holds now is never touched even if its mark is missing;
/// - outside a rollback, answered chains CloudFormation no longer holds nor names in
///   this event: it drops a replaced resource whose clean-up Delete kept failing and
///   still completes the update (cloudformation-coverage-roadmap#744), and finishes one
///   stack operation before it starts the next, so such a chain is never referenced
///   again. During a rollback, chains of the operation being undone still can be.
///
/// Only CloudFormation's own answers count: if it cannot be asked, nothing is swept.
pub async fn sweep(
    chain: &Chain<'_>,
    index: &Inventory,
    keep: &[&str],
    asking: &Asking<'_>,
    progress: &Progress,
) -> Result<()> {
    let kept = |g: &&Group| !keep.contains(&g.generation.as_str());
    let unanswered: Vec<&Group> = index.groups().filter(kept).filter(|g| g.answered_as().is_none()).collect();
    let dropped: Vec<&Group> = index
        .groups()
        .filter(kept)
        .filter(|g| g.answered_as().is_some_and(|id| id != asking.physical_id) && !g.is_named(asking.physical_id))
        .collect();
    if unanswered.is_empty() && dropped.is_empty() {
        return Ok(());
    }
    let stack = async {
        match dropped.is_empty() {
            true => None,
            false => Some(asking.status.stack(asking.stack_id).await),
        }
    };
    let (held, stack) = tokio::join!(asking.status.resource(asking.stack_id, asking.logical_id), stack);
    if let ResourceStatus::Unreachable(why) = &held {
        // It may hold one of them unmarked: nothing is swept until it can say which.
        warn!(%why, "CloudFormation could not be asked which chain it holds; sweeping nothing this time");
        return Ok(());
    }
    for group in unanswered {
        if let Some(service_id) = group.service_id().filter(|id| Some(*id) == held.physical_id()) {
            info!(generation = %group.generation, "CloudFormation holds this chain though it carries no mark; marking it");
            if let Err(error) = chain.mark_answered(service_id, group.elb_arns()).await {
                error!(%error, "could not mark the chain CloudFormation holds");
            }
            continue;
        }
        if !chain.confirmed_unanswered(group).await? {
            continue;
        }
        info!(generation = %group.generation, resources = %group.describe(), "removing a chain CloudFormation never received");
        chain.teardown(group, progress).await?;
    }
    // Both questions answered by CloudFormation itself: the chain it holds, and a stack not rolling back.
    let (Some(held_id), Some(StackStatus::Known(stack_status))) = (held.physical_id(), stack) else { return Ok(()) };
    if stack_status.contains("ROLLBACK") {
        return Ok(());
    }
    for group in dropped.into_iter().filter(|g| !g.is_named(held_id)) {
        warn!(generation = %group.generation, service_id = group.answered_as().unwrap_or_default(), held = held_id, %stack_status, resources = %group.describe(), "removing a chain CloudFormation dropped: it neither holds nor names it");
        chain.teardown(group, progress).await?;
    }
    Ok(())
}
