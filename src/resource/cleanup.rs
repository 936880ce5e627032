//! What a request leaves behind: a failed or abandoned build removes what it
//! made; later events of the resource remove what crashed requests left.

use tracing::{error, info, warn};

use crate::chain::{Chain, Group, Inventory};
use crate::cloudformation::StatusReader;
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
    let cleanup = within(until, &progress, async {
        match chain.own(name, generation).await {
            // CloudFormation holds it (a request delivered again after its answer): it stays.
            Ok(Some(found)) if found.answered_as().is_some() => return Ok(()),
            Ok(Some(found)) => group.merge(found),
            Ok(None) => {}
            // What this attempt recorded is removed all the same.
            Err(error) => warn!(%error, "could not look for what earlier attempts made"),
        }
        if group.is_empty() {
            return Ok(());
        }
        chain.teardown(&group, &progress).await
    })
    .await;
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

/// Removes this resource's chains that CloudFormation never received (a crashed
/// or failed request's), except the generations in `keep`. Each is read again
/// before it goes: the index can lag behind the answered mark, and the chain
/// CloudFormation holds now is never touched even if its mark is missing.
pub async fn sweep(
    chain: &Chain<'_>,
    index: &Inventory,
    keep: &[&str],
    status: &StatusReader,
    stack_id: &str,
    logical_id: &str,
    progress: &Progress,
) -> Result<()> {
    let candidates: Vec<&Group> =
        index.groups().filter(|g| g.answered_as().is_none() && !keep.contains(&g.generation.as_str())).collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let held = status.resource(stack_id, logical_id).await;
    for group in candidates {
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
    Ok(())
}
