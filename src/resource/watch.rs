//! Whether CloudFormation still waits for a request, and whether it took the
//! answer: asked before answering, before each long wait, and after answering.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cloudformation::{ResourceStatus, StackStatus, StatusReader};
use crate::deadline::Checkpoint;
use crate::error::{Error, Result};

/// How long to wait, after answering, for CloudFormation to show that it took the answer.
const ACCEPTANCE_WAIT: Duration = Duration::from_secs(30);
const ACCEPTANCE_POLL: Duration = Duration::from_secs(2);
/// How many more times to ask, in a row and how far apart, when CloudFormation could
/// not be asked: after answering, if it answered earlier in the request (a throttling or a
/// denial passes within a few asks; an outage that lasted the whole request is not waited
/// out), and at the first question, if it was denied.
const UNREACHABLE_RETRIES: u32 = 3;
const UNREACHABLE_POLL: Duration = Duration::from_secs(1);

/// The checkpoint of a Create or Update: passes while CloudFormation still shows
/// the resource in progress, or knows no such stack (an emulator, a local run).
pub struct StillAwaited {
    pub status: StatusReader,
    pub stack_id: String,
    pub logical_id: String,
    /// Whether CloudFormation knew the stack when last asked.
    known: Mutex<Option<bool>>,
    /// Whether the first question was asked: the one that tells a request CloudFormation
    /// still waits for from a late repeat of one it has the answer to.
    first_asked: AtomicBool,
}

impl StillAwaited {
    pub fn new(status: StatusReader, stack_id: &str, logical_id: &str) -> Self {
        StillAwaited {
            status,
            stack_id: stack_id.to_string(),
            logical_id: logical_id.to_string(),
            known: Mutex::new(None),
            first_asked: AtomicBool::new(false),
        }
    }

    /// Whether any CloudFormation was seen to know the stack.
    pub fn stack_known(&self) -> Option<bool> {
        *self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn ask(&self) -> ResourceStatus {
        let status = self.status.resource(&self.stack_id, &self.logical_id).await;
        let known = match status {
            ResourceStatus::NoStack(_) => Some(false),
            ResourceStatus::Unreachable(_) => return status,
            ResourceStatus::InProgress { .. } | ResourceStatus::Settled { .. } => Some(true),
        };
        *self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = known;
        status
    }
}

impl Checkpoint for StillAwaited {
    fn check(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut status = self.ask().await;
            // Proceeding on a denied first question would let a late repeat of an answered
            // request build and answer anew: asked again a few times first (soak seed 116).
            if !self.first_asked.swap(true, Ordering::SeqCst) {
                for _ in 0..UNREACHABLE_RETRIES {
                    if !status.denied() {
                        break;
                    }
                    tokio::time::sleep(UNREACHABLE_POLL).await;
                    status = self.ask().await;
                }
            }
            if status.abandoned() {
                warn!(%status, "CloudFormation no longer waits for this request");
                let held = status.physical_id().map(str::to_string);
                return Err(Error::Abandoned { status: status.to_string(), held });
            }
            Ok(())
        })
    }
}

/// The gate of an Update's writes: it passes unless the stack has started rolling
/// back since the Update started. A rollback is itself an Update (the resource shows
/// `UPDATE_IN_PROGRESS` for both), started while the stack already rolls back: its own
/// gate always passes. Asked afresh before every write: an answer even a second old
/// could let a write through after the rollback read.
pub struct NotRollingBack {
    status: StatusReader,
    stack_id: String,
    /// Whether writes are gated: set once the stack's status at the start is known.
    gated: OnceLock<bool>,
}

impl NotRollingBack {
    pub fn new(status: StatusReader, stack_id: &str) -> Self {
        NotRollingBack { status, stack_id: stack_id.to_string(), gated: OnceLock::new() }
    }

    /// The stack's status when the Update started. Without CloudFormation there is no
    /// rollback to yield to; if it could not be asked, each write asks again.
    pub fn started(&self, stack: &StackStatus) {
        let gated = match stack {
            StackStatus::NoStack(_) => false,
            StackStatus::Unreachable(_) => true,
            StackStatus::Known(_) => !stack.rolling_back(),
        };
        let _ = self.gated.set(gated);
    }
}

impl Checkpoint for NotRollingBack {
    fn check(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.gated.get() != Some(&true) || !self.status.stack(&self.stack_id).await.rolling_back() {
                return Ok(());
            }
            warn!("the stack is rolling this update back; stopping before the next change");
            Err(Error::Stopped("the stack is rolling this update back".into()))
        })
    }
}

/// What CloudFormation did with an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// It holds `service_id` now, or no CloudFormation knows the stack (an emulator).
    Taken,
    /// It moved on without it: the request was cancelled before the answer arrived.
    Refused(String),
    /// It had not shown either way within the wait, or could not be asked.
    Unsure,
}

/// Waits briefly for CloudFormation to show whether it took `service_id`. A Create
/// cancelled between the last check and the answer ignores the answer; its
/// chain must then go, or nothing would ever delete it.
pub async fn acceptance(watch: &StillAwaited, service_id: &str) -> Acceptance {
    let give_up = Instant::now() + ACCEPTANCE_WAIT;
    let unreachable_retries = if watch.stack_known().is_some() { UNREACHABLE_RETRIES } else { 0 };
    let mut unreachable_in_a_row = 0;
    loop {
        let status = watch.ask().await;
        if let ResourceStatus::Unreachable(_) = status {
            unreachable_in_a_row += 1;
        } else {
            unreachable_in_a_row = 0;
        }
        match status {
            ResourceStatus::NoStack(_) => return Acceptance::Taken,
            _ if status.physical_id() == Some(service_id) => return Acceptance::Taken,
            ResourceStatus::Settled { .. } => return Acceptance::Refused(status.to_string()),
            // Not shown yet, or not asked (a denial or throttling can pass): asked again
            // within the wait, as an unsure chain of a cancelled Create outlives its stack.
            ResourceStatus::InProgress { .. } | ResourceStatus::Unreachable(_)
                if Instant::now() + ACCEPTANCE_POLL > give_up || unreachable_in_a_row > unreachable_retries =>
            {
                info!(%status, "CloudFormation has not shown the answer yet");
                return Acceptance::Unsure;
            }
            ResourceStatus::InProgress { .. } => tokio::time::sleep(ACCEPTANCE_POLL).await,
            ResourceStatus::Unreachable(_) => tokio::time::sleep(UNREACHABLE_POLL).await,
        }
    }
}
