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
    /// CloudFormation knows no such stack (an emulator, a local run) or could not
    /// be asked: nobody can cancel the request, so it proceeds.
    Unknown(String),
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

    pub fn physical_id(&self) -> Option<&str> {
        match self {
            ResourceStatus::Unknown(_) => None,
            ResourceStatus::InProgress { physical_id } | ResourceStatus::Settled { physical_id, .. } => {
                physical_id.as_deref()
            }
        }
    }
}

impl std::fmt::Display for ResourceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResourceStatus::Unknown(why) => write!(f, "unknown ({why})"),
            ResourceStatus::InProgress { .. } => f.write_str("in progress"),
            ResourceStatus::Settled { status, reason: Some(reason), .. } => write!(f, "{status}: {reason}"),
            ResourceStatus::Settled { status, reason: None, .. } => f.write_str(status),
        }
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
                let why = match (err.code(), err.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.to_string(),
                    _ => aws_sdk_cloudformation::error::DisplayErrorContext(&err).to_string(),
                };
                if why.contains("does not exist") {
                    info!(%why, "CloudFormation does not know the stack; proceeding");
                } else {
                    warn!(%why, "could not ask CloudFormation whether it still waits; proceeding");
                }
                return ResourceStatus::Unknown(why);
            }
        };
        let Some(detail) = detail else {
            return ResourceStatus::Unknown("DescribeStackResource returned no resource".into());
        };
        let status = detail.resource_status.map(|s| s.as_str().to_string()).unwrap_or_default();
        let physical_id = detail.physical_resource_id.filter(|id| !id.is_empty());
        match status.as_str() {
            "CREATE_IN_PROGRESS" | "UPDATE_IN_PROGRESS" => ResourceStatus::InProgress { physical_id },
            _ => ResourceStatus::Settled { status, reason: detail.resource_status_reason, physical_id },
        }
    }
}
