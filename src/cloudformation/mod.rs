//! The CloudFormation custom-resource protocol: read the event, let the resource
//! do its work, and PUT exactly one answer to the response URL, whatever happens
//! (bad events, errors, panics, the Lambda deadline). Nothing here knows what
//! the resource builds.

mod delivery;
mod event;
mod response;

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use lambda_runtime::LambdaEvent;
use tokio::time::Instant;
use tracing::{error, info, warn};

pub use aws_lambda_events::cloudformation::{CreateRequest, DeleteRequest, UpdateRequest};
pub use delivery::{DeliveryError, ResponseSender};
pub use event::{Incoming, Request, redact};
pub use response::{MAX_BODY_BYTES, Success};

use event::Envelope;
use response::Outcome;

/// A custom resource: turns one request into a physical ID and data, or an error
/// whose text CloudFormation shows as the reason.
pub trait CustomResource {
    type Error: Display;

    fn handle(&self, request: &Request, deadline: &Deadline) -> impl Future<Output = Result<Success, Self::Error>>;

    /// Called once CloudFormation has received `success` for `request`: only
    /// now does the stack know the physical ID.
    fn answered(&self, request: &Request, success: &Success) -> impl Future<Output = ()> {
        let _ = (request, success);
        async {}
    }
}

/// Points in time derived from the invocation's deadline, latest last:
/// the resource stops working at `work_until` and stops cleaning up after
/// itself at `cleanup_until`; the protocol stops waiting for it at `answer_by`;
/// the answer must be delivered by `finish_by`.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub work_until: Instant,
    pub cleanup_until: Instant,
    pub answer_by: Instant,
    pub finish_by: Instant,
}

/// Used when the runtime gives no deadline: Lambda's longest timeout.
const UNKNOWN_DEADLINE: Duration = Duration::from_secs(900);

impl Deadline {
    /// Splits the time left between work, clean-up and delivery; short
    /// invocations get proportionally short reserves.
    pub fn after(remaining: Duration) -> Self {
        let now = Instant::now();
        let finish_by = now + remaining - (remaining / 20).min(Duration::from_secs(1));
        let answer_by = now + remaining - (remaining / 5).min(Duration::from_secs(15));
        let work_until = answer_by - (remaining / 4).min(Duration::from_secs(60));
        let cleanup_until = answer_by - (answer_by - work_until) / 10;
        Deadline { work_until, cleanup_until, answer_by, finish_by }
    }

    fn from_epoch_millis(deadline_ms: u64) -> Self {
        if deadline_ms == 0 {
            return Self::after(UNKNOWN_DEADLINE);
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        Self::after(Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
    }
}

/// Handles one invocation. Returns an error to the runtime (so Lambda delivers
/// the event again) only when the answer could not be delivered for reasons a
/// later attempt may overcome; everything else ends the invocation cleanly.
pub async fn serve<R: CustomResource>(
    resource: &R,
    sender: &ResponseSender,
    event: LambdaEvent<Incoming>,
) -> Result<(), DeliveryError> {
    let deadline = Deadline::from_epoch_millis(event.context.deadline);
    let payload = match event.payload {
        Incoming::Json(payload) => payload,
        Incoming::Unreadable(why) => {
            error!(error = %why, "the event is not JSON, so it has no ResponseURL to answer; ending the invocation without a response");
            return Ok(());
        }
    };
    let envelope = Envelope::read(&payload);
    let Some(url) = envelope.response_url.clone() else {
        error!(
            request_id = %envelope.request_id,
            stack_id = %envelope.stack_id,
            logical_resource_id = %envelope.logical_resource_id,
            "the event has no usable ResponseURL, so CloudFormation cannot be answered; ending the invocation without a response"
        );
        return Ok(());
    };
    info!(
        request_type = %envelope.request_type,
        request_id = %envelope.request_id,
        stack_id = %envelope.stack_id,
        logical_resource_id = %envelope.logical_resource_id,
        physical_resource_id = envelope.physical_resource_id.as_deref().unwrap_or(""),
        response_url = %redact(&url),
        "custom resource request received"
    );
    let request = event::parse(payload);
    let outcome = match &request {
        Ok(request) => run(resource, request, &deadline).await,
        Err(reason) => Outcome::Failed(reason.clone()),
    };
    let succeeded = match &outcome {
        Outcome::Success(success) => {
            info!(physical_resource_id = %success.physical_resource_id, "answering SUCCESS");
            Some(success.clone())
        }
        Outcome::Failed(reason) => {
            warn!(%reason, "answering FAILED");
            None
        }
    };
    let body = response::render(&envelope, outcome);
    match sender.deliver(&url, body, deadline.finish_by).await {
        Ok(()) => {
            if let (Ok(request), Some(success)) = (&request, &succeeded) {
                // Bounded: running past the deadline would make Lambda deliver the event again.
                let recorded = tokio::time::timeout_at(deadline.finish_by, resource.answered(request, success)).await;
                if recorded.is_err() {
                    warn!("the deadline came before the answer could be recorded on the resource");
                }
            }
            Ok(())
        }
        Err(err) if !err.is_transient() => {
            error!(error = %err, "CloudFormation's response URL refused the answer; a retry would not help");
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// Runs the resource, turning errors, panics and a missed deadline into FAILED.
async fn run<R: CustomResource>(resource: &R, request: &Request, deadline: &Deadline) -> Outcome {
    let work = AssertUnwindSafe(resource.handle(request, deadline)).catch_unwind();
    match tokio::time::timeout_at(deadline.answer_by, work).await {
        Ok(Ok(Ok(success))) => Outcome::Success(success),
        Ok(Ok(Err(err))) => Outcome::Failed(err.to_string()),
        Ok(Err(panic)) => Outcome::Failed(format!("internal error: {}", panic_message(panic.as_ref()))),
        Err(_elapsed) => {
            Outcome::Failed("timed out: the work did not finish before the Lambda function's deadline".to_string())
        }
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
        assert!(long.finish_by - long.work_until <= Duration::from_secs(80));
    }
}
