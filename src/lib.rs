//! A CloudFormation custom resource that builds the producer side of reverse
//! PrivateLink: an internal NLB in front of a database writer, published as a
//! VPC endpoint service that only the consumer's principal may use.
//!
//! Three rooms, each calling only the next: [`cloudformation`] (the protocol)
//! → [`resource`], [`spec`] and [`resolve`] (the desired state) → [`chain`]
//! (the AWS calls). Beside the protocol, [`sync`] handles the schedule and RDS
//! events and [`diagnose`] a direct request for a report; both share the chain;
//! [`database`] says who the writer is; [`fleet`] tells the organization's bus what
//! each answer and target move left. [`incoming`] sorts each event to its room;
//! [`deadline`] keeps every room within the invocation's time.

pub mod aws;
pub mod chain;
pub mod cloudformation;
pub mod database;
pub mod deadline;
pub mod diagnose;
pub mod error;
pub mod fleet;
pub mod incoming;
pub mod resolve;
pub mod resource;
pub mod spec;
pub mod sync;

use aws_config::SdkConfig;
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use tracing::{error, warn};

use aws::Aws;
use cloudformation::ResponseSender;
use database::{Databases, Dns};
use deadline::Deadline;
use incoming::Incoming;
use resource::ReversePrivateLink;
use sync::Sync;

pub use aws::config_loader as aws_config_loader;

/// The Lambda function: one custom resource and the way to answer CloudFormation,
/// and the sync that keeps its chains on the database writer.
pub struct Function {
    aws: Aws,
    databases: Databases,
    resource: ReversePrivateLink,
    sender: ResponseSender,
    sync: Sync,
    /// The stack whose chains a diagnosis reports (the template sets it).
    stack_id: Option<String>,
}

impl Function {
    /// Reads the AWS settings from the environment (`AWS_REGION`, credentials,
    /// `AWS_ENDPOINT_URL`) and the DNS server to ask (`REVERSE_PRIVATELINK_DNS_SERVER`,
    /// else the system's).
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        Ok(Self::new(&aws_config_loader().load().await, Dns::from_env())?)
    }

    pub fn new(config: &SdkConfig, dns: Dns) -> Result<Self, reqwest::Error> {
        Ok(Self::with_sender(config, dns, ResponseSender::new()?))
    }

    pub fn with_sender(config: &SdkConfig, dns: Dns, sender: ResponseSender) -> Self {
        let aws = Aws::new(config);
        let databases = Databases::new(aws.rds.clone(), aws.ec2.clone(), dns);
        let sync = Sync::new(aws.clone(), databases.clone());
        let stack_id = std::env::var(sync::STACK_ENV).ok().filter(|s| !s.is_empty());
        let resource = ReversePrivateLink::new(aws.clone(), databases.clone());
        Function { aws, databases, resource, sender, sync, stack_id }
    }

    /// Handles one invocation and returns what the invoker reads (null but for a
    /// diagnosis); an error asks Lambda to deliver the event again.
    pub async fn handle(&self, event: LambdaEvent<Incoming>) -> Result<Value, lambda_runtime::Error> {
        let deadline = Deadline::from_epoch_millis(event.context.deadline);
        match event.payload {
            // Boxed: the chain's nested futures are too deep a type for the runtime's own future to lay out.
            Incoming::CloudFormation(payload) => {
                Box::pin(cloudformation::serve(&self.resource, &self.sender, payload, deadline)).await?;
                Ok(Value::Null)
            }
            Incoming::EventBridge(event) => {
                Box::pin(self.sync.serve(&event, deadline)).await;
                Ok(Value::Null)
            }
            Incoming::Diagnose => {
                let report = diagnose::diagnose(&self.aws, &self.databases, self.stack_id.as_deref());
                let report = tokio::time::timeout_at(deadline.work_until, Box::pin(report)).await;
                Ok(report
                    .map(|report| report.to_json())
                    .unwrap_or_else(|_| json!({"Ok": false, "Chains": [], "Detail": "the diagnosis ran out of time"})))
            }
            Incoming::NotUnderstood(payload) => {
                warn!(%payload, "a payload that is neither a CloudFormation request, an EventBridge event nor a diagnosis");
                // A response, not an error: an asynchronous sender would retry an error.
                Ok(json!({
                    "Error": "the payload was not understood",
                    "Understood": [
                        "a CloudFormation custom-resource request (RequestType, ResponseURL, StackId, ...)",
                        "an EventBridge event: the schedule (aws.events, Scheduled Event) or an RDS event (aws.rds)",
                        {"Diagnose": {}},
                    ],
                }))
            }
            Incoming::Unreadable(why) => {
                error!(error = %why, "the event cannot be read, so it has no ResponseURL to answer; ending the invocation without a response");
                Ok(Value::Null)
            }
        }
    }
}
