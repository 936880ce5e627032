//! The CloudFormation custom-resource protocol: read the event, let the resource
//! do its work, and PUT exactly one answer to the response URL, whatever happens
//! (bad events, errors, panics, the Lambda deadline). Nothing here knows what
//! the resource builds.

mod delivery;
mod event;
mod response;
mod status;

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use serde_json::Value;
use tracing::{Instrument, error, info, info_span, warn};

pub use aws_lambda_events::cloudformation::{CreateRequest, DeleteRequest, UpdateRequest};
pub use delivery::{DeliveryError, ResponseSender};
pub use event::{Request, redact};
pub use response::{MAX_BODY_BYTES, Success};
pub use status::{ResourceStatus, StackStatus, StatusReader};

pub use crate::deadline::Deadline;
use crate::deadline::panic_message;
use event::Envelope;
use response::Outcome;

/// A custom resource: turns one request into a physical ID and data, or an error
/// whose text CloudFormation shows as the reason.
pub trait CustomResource {
    type Error: Display;

    fn handle(&self, request: &Request, deadline: &Deadline) -> impl Future<Output = Result<Success, Self::Error>>;

    /// Whether `error` says that CloudFormation no longer waits for the request (it
    /// cancelled it, or a repeated delivery comes after its answer): then nothing is
    /// sent, as CloudFormation would ignore it at best, and at worst read it instead of
    /// the answer it already has.
    fn no_longer_awaited(error: &Self::Error) -> bool {
        let _ = error;
        false
    }

    /// Called once CloudFormation has received the answer to `request`: `success`, or
    /// FAILED with that reason. Only now does the stack know the physical ID.
    fn answered(&self, request: &Request, answer: Result<&Success, &str>) -> impl Future<Output = ()> {
        let _ = (request, answer);
        async {}
    }
}

/// Handles one invocation. Returns an error to the runtime (so Lambda delivers
/// the event again) only when the answer could not be delivered for reasons a
/// later attempt may overcome; everything else ends the invocation cleanly.
pub async fn serve<R: CustomResource>(
    resource: &R,
    sender: &ResponseSender,
    payload: Value,
    deadline: Deadline,
) -> Result<(), DeliveryError> {
    let envelope = Envelope::read(&payload);
    // Every line of this request says whose it is.
    let span = info_span!(
        "request",
        request_type = %envelope.request_type,
        request_id = %envelope.request_id,
        stack_id = %envelope.stack_id,
        logical_resource_id = %envelope.logical_resource_id,
    );
    answer(resource, sender, payload, envelope, deadline).instrument(span).await
}

async fn answer<R: CustomResource>(
    resource: &R,
    sender: &ResponseSender,
    payload: Value,
    envelope: Envelope,
    deadline: Deadline,
) -> Result<(), DeliveryError> {
    let Some(url) = envelope.response_url.clone() else {
        error!(
            "the event has no usable ResponseURL, so CloudFormation cannot be answered; ending the invocation without a response"
        );
        return Ok(());
    };
    info!(
        physical_resource_id = envelope.physical_resource_id.as_deref().unwrap_or(""),
        response_url = %redact(&url),
        "custom resource request received"
    );
    let request = event::parse(payload);
    let outcome = match &request {
        Ok(request) => run(resource, request, &deadline).await,
        Err(reason) => Some(Outcome::Failed(reason.clone())),
    };
    let Some(outcome) = outcome else {
        warn!("CloudFormation no longer waits for this request; sending no answer, so the one it has stands");
        return Ok(());
    };
    let answered = match &outcome {
        Outcome::Success(success) => {
            info!(physical_resource_id = %success.physical_resource_id, "answering SUCCESS");
            Ok(success.clone())
        }
        Outcome::Failed(reason) => {
            warn!(%reason, "answering FAILED");
            Err(reason.clone())
        }
    };
    let body = response::render(&envelope, outcome);
    match sender.deliver(&url, body, deadline.finish_by).await {
        Ok(()) => {
            if let Ok(request) = &request {
                let answer = answered.as_ref().map_err(String::as_str);
                // Bounded: running past the deadline would make Lambda deliver the event again.
                let answered = Box::pin(resource.answered(request, answer));
                let recorded = tokio::time::timeout_at(deadline.finish_by, answered).await;
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

/// Runs the resource, turning errors, panics and a missed deadline into FAILED;
/// None when CloudFormation no longer waits for an answer.
async fn run<R: CustomResource>(resource: &R, request: &Request, deadline: &Deadline) -> Option<Outcome> {
    let work = AssertUnwindSafe(resource.handle(request, deadline)).catch_unwind();
    Some(match tokio::time::timeout_at(deadline.answer_by, work).await {
        Ok(Ok(Ok(success))) => Outcome::Success(success),
        Ok(Ok(Err(err))) if R::no_longer_awaited(&err) => {
            info!(reason = %err, "the request is no longer awaited");
            return None;
        }
        Ok(Ok(Err(err))) => Outcome::Failed(err.to_string()),
        Ok(Err(panic)) => Outcome::Failed(format!("internal error: {}", panic_message(panic.as_ref()))),
        Err(_elapsed) => {
            Outcome::Failed("timed out: the work did not finish before the Lambda function's deadline".to_string())
        }
    })
}
