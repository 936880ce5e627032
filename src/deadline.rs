//! Time budgets and the never-hang guard, shared by every kind of event: a
//! CloudFormation request and a writer sync both stop in time, and say what
//! was in flight when they had to.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Points in time derived from the invocation's deadline, latest last:
/// the work stops at `work_until` and the clean-up after a failure at
/// `cleanup_until`; the protocol stops waiting for either at `answer_by`;
/// the answer must be delivered by `finish_by`.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub work_until: Instant,
    pub cleanup_until: Instant,
    pub answer_by: Instant,
    pub finish_by: Instant,
}

/// The most kept for cleaning up after a failure.
const CLEANUP_RESERVE: Duration = Duration::from_secs(210);

/// Used when the runtime gives no deadline: Lambda's longest timeout.
const UNKNOWN_DEADLINE: Duration = Duration::from_secs(900);

impl Deadline {
    /// Splits the time left between work, clean-up and delivery; short
    /// invocations get proportionally short reserves. A failed Create must be able
    /// to delete its load balancer before answering, which on AWS often takes
    /// minutes: with Lambda's 900 s, over three minutes are kept for clean-up.
    pub fn after(remaining: Duration) -> Self {
        let now = Instant::now();
        let finish_by = now + remaining - (remaining / 20).min(Duration::from_secs(1));
        let answer_by = now + remaining - (remaining / 5).min(Duration::from_secs(15));
        let work_until = answer_by - (remaining / 4).min(CLEANUP_RESERVE);
        let cleanup_until = answer_by - (answer_by - work_until) / 10;
        Deadline { work_until, cleanup_until, answer_by, finish_by }
    }

    /// Until when a wait inside the work may last, so that it ends with its own
    /// reason (say, why the target is unhealthy) before the work's deadline cuts it off.
    pub fn waits_until(&self) -> Instant {
        let left = self.work_until.saturating_duration_since(Instant::now());
        self.work_until - (left / 20).min(Duration::from_secs(10))
    }

    /// From the runtime's deadline in milliseconds since the Unix epoch (0: unknown).
    pub fn from_epoch_millis(deadline_ms: u64) -> Self {
        if deadline_ms == 0 {
            return Self::after(UNKNOWN_DEADLINE);
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        Self::after(Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
    }
}

/// The text a panic was raised with.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the handler panicked".to_string())
}

/// Asks whether whoever requested the work still waits for it (CloudFormation may
/// have cancelled the request); an error says why not and stops the work.
pub trait Checkpoint: Send + Sync {
    fn check(&self) -> BoxFuture<'_, Result<()>>;
}

/// What the work is doing right now, so a timeout can say what it was waiting for,
/// and the checkpoint to pass before each long wait.
#[derive(Clone, Default)]
pub struct Progress {
    steps: Arc<Mutex<Vec<&'static str>>>,
    /// What the work made or took over, by kind: a failed request removes exactly these.
    made: Arc<Mutex<Vec<(&'static str, String)>>>,
    checkpoint: Option<Arc<dyn Checkpoint>>,
    /// Asked before each write: whether the work may still change anything.
    gate: Option<Arc<dyn Checkpoint>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("steps", &self.describe()).finish()
    }
}

/// Marks a step as in progress until dropped.
pub struct Step {
    progress: Progress,
    what: &'static str,
}

impl Progress {
    /// Progress whose long waits first ask `checkpoint`.
    pub fn with_checkpoint(checkpoint: Arc<dyn Checkpoint>) -> Self {
        Progress { checkpoint: Some(checkpoint), ..Progress::default() }
    }

    /// This progress, asking `gate` before each write.
    pub fn with_gate(self, gate: Arc<dyn Checkpoint>) -> Self {
        Progress { gate: Some(gate), ..self }
    }

    /// Passes when the work may still write (always, without a gate).
    pub async fn gate(&self) -> Result<()> {
        match &self.gate {
            Some(gate) => gate.check().await,
            None => Ok(()),
        }
    }

    /// Passes when the requester still waits (or nobody can tell).
    pub async fn checkpoint(&self) -> Result<()> {
        match &self.checkpoint {
            Some(checkpoint) => checkpoint.check().await,
            None => Ok(()),
        }
    }

    /// Notes a resource the work made or took over (`kind` e.g. "load balancer").
    pub fn record(&self, kind: &'static str, id: &str) {
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        if !made.iter().any(|(k, i)| *k == kind && i == id) {
            made.push((kind, id.to_string()));
        }
    }

    /// The IDs recorded for `kind`.
    pub fn recorded(&self, kind: &str) -> Vec<String> {
        let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        made.iter().filter(|(k, _)| *k == kind).map(|(_, id)| id.clone()).collect()
    }

    pub fn step(&self, what: &'static str) -> Step {
        self.steps().push(what);
        Step { progress: self.clone(), what }
    }

    /// "waiting for the load balancer to become active and registering the targets"
    pub fn describe(&self) -> String {
        let steps = self.steps();
        if steps.is_empty() { "between steps".to_string() } else { steps.join(" and ") }
    }

    fn steps(&self) -> MutexGuard<'_, Vec<&'static str>> {
        // A panic elsewhere must not hide what was in progress.
        self.steps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        let mut steps = self.progress.steps();
        if let Some(i) = steps.iter().position(|s| *s == self.what) {
            steps.remove(i);
        }
    }
}

/// Runs `work` until `until`, turning a timeout or a panic into an error that
/// says what was in progress.
pub async fn within<T>(until: Instant, progress: &Progress, work: impl Future<Output = Result<T>>) -> Result<T> {
    // Pinned here rather than handed to a timeout: the steps in flight must be
    // read before dropping the work ends them.
    let work = AssertUnwindSafe(work).catch_unwind();
    tokio::pin!(work);
    tokio::select! {
        finished = &mut work => finished.unwrap_or_else(|panic| Err(Error::Panic(panic_message(panic.as_ref())))),
        () = tokio::time::sleep_until(until) => Err(Error::Timeout(progress.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_reserves_time_for_cleanup_and_delivery() {
        for secs in [3, 10, 60, 900] {
            let remaining = Duration::from_secs(secs);
            let start = Instant::now();
            let d = Deadline::after(remaining);
            assert!(
                start < d.work_until
                    && d.work_until < d.cleanup_until
                    && d.cleanup_until < d.answer_by
                    && d.answer_by < d.finish_by
            );
            assert!(d.finish_by <= start + remaining + Duration::from_millis(5));
        }
        let long = Deadline::after(Duration::from_secs(900));
        assert!(long.cleanup_until - long.work_until >= Duration::from_secs(180), "three minutes to clean up");
        assert!(long.finish_by - long.work_until <= Duration::from_secs(230), "and not much more");
    }

    #[test]
    fn progress_names_what_is_in_flight() {
        let progress = Progress::default();
        let a = progress.step("creating the load balancer");
        {
            let _b = progress.step("creating the target group");
            assert_eq!(progress.describe(), "creating the load balancer and creating the target group");
        }
        assert_eq!(progress.describe(), "creating the load balancer");
        drop(a);
        assert_eq!(progress.describe(), "between steps");
    }
}
