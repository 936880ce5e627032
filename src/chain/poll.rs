//! Waiting for AWS with the SDK's own waiter orchestrator, at a fixed 2 s: the
//! generated waiters back off from 15 s, which answered CloudFormation 20–40 s
//! after a load balancer was ready. While it waits, it asks the requester every
//! minute whether it still waits.

use std::future::Future;
use std::time::Duration;

use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_async::time::SharedTimeSource;
use aws_smithy_runtime::client::waiters::WaiterOrchestrator;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::{CreateUnhandledError, SdkError};
use aws_smithy_runtime_api::client::waiters::error::WaiterError;

pub use aws_smithy_runtime::client::waiters::AcceptorState;

use aws_sdk_ec2::error::ProvideErrorMetadata;

use super::Progress;
use crate::error::{Error, Result};

/// One describe per 2 s at most, and an answer at most 2 s after the state changed.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How often a long wait asks whether the requester still waits.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// How a wait ended well.
pub enum Waited<O, E> {
    /// The state wanted, with the last answer.
    Reached(O),
    /// An error the acceptor called success (say, NotFound while waiting for a deletion).
    Gone(E),
    /// A state that will never become the one wanted.
    Failed(std::result::Result<O, E>),
}

/// Polls `operation` every 2 s until `acceptor` calls the answer a success or a
/// failure, or `max_wait` passes (an error saying `what` was awaited).
pub async fn until<O, E, Fut>(
    what: &'static str,
    operation: impl Fn() -> Fut,
    acceptor: impl Fn(std::result::Result<&O, &E>) -> AcceptorState,
    max_wait: Duration,
    progress: &Progress,
) -> Result<Waited<O, E>>
where
    Fut: Future<Output = std::result::Result<O, SdkError<E, HttpResponse>>>,
    E: CreateUnhandledError + std::error::Error + Send + Sync + 'static,
    E: ProvideErrorMetadata,
    O: std::fmt::Debug,
{
    let _step = progress.step(what);
    let orchestrator = WaiterOrchestrator::builder()
        .min_delay(INTERVAL)
        .max_delay(INTERVAL)
        .max_wait(max_wait)
        .time_source(SharedTimeSource::default())
        .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
        .acceptor(acceptor)
        .operation(operation)
        .build();
    // Asked once the first answer said "not yet", so before the wait is long, then every minute.
    let watch = async {
        let mut pause = INTERVAL;
        loop {
            tokio::time::sleep(pause).await;
            progress.checkpoint().await?;
            pause = CHECK_EVERY;
        }
    };
    let waited = tokio::select! {
        waited = orchestrator.orchestrate() => waited,
        stopped = watch => return stopped,
    };
    match waited {
        Ok(done) => Ok(match done.into_result() {
            Ok(output) => Waited::Reached(output),
            Err(err) => match err.into_service_error_opt() {
                Some(err) => Waited::Gone(err),
                None => {
                    return Err(Error::Unexpected { step: what, message: "the waiter ended without an answer".into() });
                }
            },
        }),
        Err(WaiterError::FailureState(failed)) => Ok(Waited::Failed(failed.into_final_poll().into_result())),
        Err(WaiterError::ExceededMaxWait(_)) => Err(Error::Timeout(what.to_string())),
        Err(WaiterError::OperationFailed(failed)) => Err(Error::aws(what)(failed.into_error())),
        Err(other) => Err(Error::Unexpected { step: what, message: format!("{other:?}") }),
    }
}

/// Whether an error is AWS's code `code`.
pub fn is<E: ProvideErrorMetadata>(err: &E, codes: &[&str]) -> bool {
    err.code().is_some_and(|code| codes.contains(&code))
}

trait IntoServiceErrorOpt<E> {
    fn into_service_error_opt(self) -> Option<E>;
}

impl<E> IntoServiceErrorOpt<E> for SdkError<E, HttpResponse> {
    fn into_service_error_opt(self) -> Option<E> {
        match self {
            SdkError::ServiceError(err) => Some(err.into_err()),
            _ => None,
        }
    }
}

/// How long a resource created moments ago may still be unknown to AWS's other calls.
const SETTLE: Duration = Duration::from_secs(30);

/// Calls `call`, and when `fresh` (this request created the resource moments
/// ago) retries for up to 30 s while AWS answers one of the NotFound `codes`:
/// right after a create, a describe or modify can say NotFound for seconds
/// (eventual consistency of the EC2 and ELB APIs).
pub async fn settled<T, E, R, Fut>(
    fresh: bool,
    codes: &[&str],
    call: impl Fn() -> Fut,
) -> std::result::Result<T, SdkError<E, R>>
where
    Fut: Future<Output = std::result::Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata,
{
    let give_up = tokio::time::Instant::now() + SETTLE;
    let mut pause = Duration::from_millis(500);
    loop {
        match call().await {
            Err(err)
                if fresh
                    && err.as_service_error().is_some_and(|e| is(e, codes))
                    && tokio::time::Instant::now() + pause < give_up =>
            {
                tracing::info!(
                    code = err.as_service_error().and_then(|e| e.code()),
                    "AWS has not caught up with a change made moments ago; asking again"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            other => return other,
        }
    }
}

/// NotFound codes, by resource.
pub const LOAD_BALANCER_NOT_FOUND: &[&str] = &["LoadBalancerNotFound"];
pub const TARGET_GROUP_NOT_FOUND: &[&str] = &["TargetGroupNotFound"];
pub const SERVICE_NOT_FOUND: &[&str] = &["InvalidVpcEndpointServiceId.NotFound", "InvalidVpcEndpointService.NotFound"];
pub const GROUP_NOT_FOUND: &[&str] = &["InvalidGroup.NotFound", "InvalidGroupId.NotFound", "InvalidSecurityGroup"];
/// A policy the stack granted moments before (the database's groups, learnt at deploy
/// time) can still be refused for seconds: IAM changes are eventually consistent (IAM
/// user guide, "Changes that I make are not always immediately visible").
pub const NOT_AUTHORIZED_YET: &[&str] = &["UnauthorizedOperation"];
