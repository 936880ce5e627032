//! Errors a person reads in the CloudFormation console, so every message says
//! what was wrong and, where it helps, what to do instead.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A resource property is missing, malformed or contradicts the account's state.
    #[error("{property}: {message}")]
    Property { property: &'static str, message: String },

    /// Several property problems, reported together so one stack update can fix them all.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Properties(Vec<Error>),

    /// An AWS call failed after the SDK's own retries.
    #[error("{step} failed: {detail}")]
    Aws { step: &'static str, detail: String },

    /// AWS answered, but not in a way this chain can work with.
    #[error("{step}: {message}")]
    Unexpected { step: &'static str, message: String },

    /// The load balancer's health checks do not reach the database; says why and what to allow.
    #[error("{0}")]
    Unhealthy(String),

    /// CloudFormation no longer waits for this request: another resource failed and it
    /// cancelled this one, or this is a repeated delivery of a request it has the answer to.
    #[error("CloudFormation no longer waits for this request ({status}); what it does not hold was removed")]
    Abandoned {
        status: String,
        /// The physical ID CloudFormation holds for the resource now, if any.
        held: Option<String>,
    },

    /// The chain cannot take the change in place after all (AWS refused it): a new chain is built.
    #[error("{0}")]
    NeedsNewChain(String),

    /// The chain's own security group is used by what the function did not make (another
    /// group's rule, an interface): named, and never removed for the user.
    #[error("{0}")]
    GroupInUse(String),

    /// An Update stopped changing anything: its stack is rolling it back.
    #[error("{0}; stopped before changing anything more (the rollback puts the rest back)")]
    Stopped(String),

    /// The Lambda deadline came before the work finished.
    #[error("timed out {0} (the Lambda function's deadline was near)")]
    Timeout(String),

    /// A bug: the handler panicked.
    #[error("internal error: {0}")]
    Panic(String),

    /// The work failed and removing what it had created failed too.
    #[error("{error}; removing what was created also failed: {cleanup} (the stack's rollback will retry the removal)")]
    CleanupFailed { error: Box<Error>, cleanup: Box<Error> },
}

impl Error {
    /// Whether CloudFormation no longer waits for the request this error ends.
    pub fn no_longer_awaited(&self) -> bool {
        match self {
            Error::Abandoned { .. } => true,
            Error::CleanupFailed { error, .. } => error.no_longer_awaited(),
            _ => false,
        }
    }

    pub fn property(property: &'static str, message: impl Into<String>) -> Self {
        Error::Property { property, message: message.into() }
    }

    /// Wraps an SDK error as "`step` failed: Code: message", the form AWS's own console uses.
    pub fn aws<E, R>(step: &'static str) -> impl FnOnce(SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        move |err| {
            let detail = match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => DisplayErrorContext(&err).to_string(),
            };
            Error::Aws { step, detail }
        }
    }

    /// Folds a list of problems into one error, or none.
    pub fn collect(mut errors: Vec<Error>) -> Result<(), Error> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Properties(errors)),
        }
    }
}

/// The error code of an SDK error, for the few codes that mean "already done".
pub fn code_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(ProvideErrorMetadata::code)
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
