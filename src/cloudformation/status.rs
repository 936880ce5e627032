//! Whether CloudFormation still waits for a request: the resource's status as
//! `DescribeStackResource` tells it (StackName = the event's `StackId`). When
//! another resource of the stack fails, CloudFormation marks this one
//! `CREATE_FAILED` "Resource creation cancelled" and sends a Delete while the
//! Create still runs (cloudformation-coverage-roadmap#1730, aws-cdk#26139).

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use tracing::{info, warn};

/// The resource as CloudFormation sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceStatus {
    /// CloudFormation answered that no such stack exists (an emulator, a local run):
    /// nobody can cancel the request, so it proceeds.
    NoStack(String),
    /// CloudFormation could not be asked (throttled after the SDK's retries, failing,
    /// denied). It may well hold the chain: nothing may be concluded from it.
    Unreachable(String),
    /// `CREATE_IN_PROGRESS` or `UPDATE_IN_PROGRESS`: the request is still awaited.
    InProgress { physical_id: Option<String> },
    /// Anything else, e.g. `CREATE_FAILED` (cancelled), `DELETE_IN_PROGRESS`, `CREATE_COMPLETE`.
    Settled { status: String, reason: Option<String>, physical_id: Option<String> },
}

impl ResourceStatus {
    /// Whether CloudFormation has stopped waiting for an answer.
    pub fn abandoned(&self) -> bool {
        matches!(self, ResourceStatus::Settled { .. })
    }

    /// Whether the question was refused (`AccessDenied`), which the SDK does not retry:
    /// a role moments old, whose policies IAM has not spread yet, is refused for a while.
    pub fn denied(&self) -> bool {
        matches!(self, ResourceStatus::Unreachable(why) if why.starts_with("AccessDenied"))
    }

    /// The physical ID CloudFormation holds, when it answered with one.
    pub fn physical_id(&self) -> Option<&str> {
        match self {
            ResourceStatus::NoStack(_) | ResourceStatus::Unreachable(_) => None,
            ResourceStatus::InProgress { physical_id } | ResourceStatus::Settled { physical_id, .. } => {
                physical_id.as_deref()
            }
        }
    }
}

impl std::fmt::Display for ResourceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResourceStatus::NoStack(why) => write!(f, "no such stack ({why})"),
            ResourceStatus::Unreachable(why) => write!(f, "CloudFormation could not be asked ({why})"),
            ResourceStatus::InProgress { .. } => f.write_str("in progress"),
            ResourceStatus::Settled { status, reason: Some(reason), .. } => write!(f, "{status}: {reason}"),
            ResourceStatus::Settled { status, reason: None, .. } => f.write_str(status),
        }
    }
}

/// The stack's own status (`DescribeStacks`): it tells a rollback
/// (`UPDATE_ROLLBACK_IN_PROGRESS`) from the update it undoes, which both show the
/// resource `UPDATE_IN_PROGRESS` (aws-cdk#31541).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackStatus {
    NoStack(String),
    Unreachable(String),
    Known(String),
}

impl StackStatus {
    /// Known to be rolling back (any `…ROLLBACK…` status).
    pub fn rolling_back(&self) -> bool {
        matches!(self, StackStatus::Known(status) if status.contains("ROLLBACK"))
    }
}

/// How a failed question is read: only CloudFormation's own "does not exist" means
/// there is no stack to ask about.
enum Failure {
    NoStack(String),
    Unreachable(String),
}

fn failure<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    err: &aws_sdk_cloudformation::error::SdkError<E, R>,
) -> Failure {
    let why = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_sdk_cloudformation::error::DisplayErrorContext(err).to_string(),
    };
    // "Stack with id … does not exist" (ValidationError): the documented answer for an unknown stack.
    if err.code() == Some("ValidationError") && why.contains("does not exist") {
        info!(%why, "CloudFormation does not know the stack; proceeding");
        Failure::NoStack(why)
    } else {
        warn!(%why, "could not ask CloudFormation; concluding nothing from it");
        Failure::Unreachable(why)
    }
}

/// Asks CloudFormation about one resource of one stack.
#[derive(Clone, Debug)]
pub struct StatusReader {
    cloudformation: aws_sdk_cloudformation::Client,
}

impl StatusReader {
    pub fn new(cloudformation: aws_sdk_cloudformation::Client) -> Self {
        StatusReader { cloudformation }
    }

    pub async fn resource(&self, stack_id: &str, logical_id: &str) -> ResourceStatus {
        let answer = self
            .cloudformation
            .describe_stack_resource()
            .stack_name(stack_id)
            .logical_resource_id(logical_id)
            .send()
            .await;
        let detail = match answer {
            Ok(answer) => answer.stack_resource_detail,
            Err(err) => {
                return match failure(&err) {
                    Failure::NoStack(why) => ResourceStatus::NoStack(why),
                    Failure::Unreachable(why) => ResourceStatus::Unreachable(why),
                };
            }
        };
        let Some(detail) = detail else {
            return ResourceStatus::Unreachable("DescribeStackResource returned no resource".into());
        };
        let status = detail.resource_status.map(|s| s.as_str().to_string()).unwrap_or_default();
        let physical_id = detail.physical_resource_id.filter(|id| !id.is_empty());
        match status.as_str() {
            "CREATE_IN_PROGRESS" | "UPDATE_IN_PROGRESS" => ResourceStatus::InProgress { physical_id },
            _ => ResourceStatus::Settled { status, reason: detail.resource_status_reason, physical_id },
        }
    }

    /// The stack's status, asked up to `attempts` times (0.5 s, 1 s, 2 s … apart) while
    /// CloudFormation cannot be asked: for a decision taken once, on the first answer. A
    /// denial can pass (IAM's changes are eventually consistent, IAM user guide,
    /// "Troubleshoot IAM": a new role's policy may not apply at once), and throttling
    /// outlasts the SDK's own retries.
    pub async fn stack_patiently(&self, stack_id: &str, attempts: u32) -> StackStatus {
        let mut pause = std::time::Duration::from_millis(500);
        let mut status = self.stack(stack_id).await;
        for _ in 1..attempts {
            if !matches!(status, StackStatus::Unreachable(_)) {
                break;
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
            status = self.stack(stack_id).await;
        }
        status
    }

    pub async fn stack(&self, stack_id: &str) -> StackStatus {
        match self.cloudformation.describe_stacks().stack_name(stack_id).send().await {
            Ok(answer) => {
                let stack = answer.stacks.unwrap_or_default().into_iter().next();
                match stack.and_then(|s| s.stack_status) {
                    Some(status) => StackStatus::Known(status.as_str().to_string()),
                    None => StackStatus::Unreachable("DescribeStacks returned no stack status".into()),
                }
            }
            Err(err) => match failure(&err) {
                Failure::NoStack(why) => StackStatus::NoStack(why),
                Failure::Unreachable(why) => StackStatus::Unreachable(why),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rollback_statuses_roll_back() {
        for status in
            ["UPDATE_ROLLBACK_IN_PROGRESS", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "ROLLBACK_IN_PROGRESS"]
        {
            assert!(StackStatus::Known(status.into()).rolling_back(), "{status}");
        }
        for status in [
            StackStatus::Known("UPDATE_IN_PROGRESS".into()),
            StackStatus::Known("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS".into()),
        ] {
            assert!(!status.rolling_back(), "{status:?}");
        }
        assert!(!StackStatus::Unreachable("x".into()).rolling_back());
    }
}
