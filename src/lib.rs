//! A CloudFormation custom resource that builds the producer side of reverse
//! PrivateLink: an internal NLB in front of a database writer, published as a
//! VPC endpoint service that only the consumer's principal may use.
//!
//! Three rooms, each calling only the next: [`cloudformation`] (the protocol)
//! → [`resource`], [`spec`] and [`resolve`] (the desired state) → [`chain`]
//! (the AWS calls). Beside the protocol, [`sync`] handles the schedule and RDS
//! events and shares the chain; [`database`] says who the writer is.
//! [`incoming`] sorts each event to its room; [`deadline`] keeps every room
//! within the invocation's time.

pub mod aws;
pub mod chain;
pub mod cloudformation;
pub mod database;
pub mod deadline;
pub mod error;
pub mod incoming;
pub mod resolve;
pub mod resource;
pub mod spec;
pub mod sync;

use aws_config::SdkConfig;
use lambda_runtime::LambdaEvent;
use tracing::error;

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
    resource: ReversePrivateLink,
    sender: ResponseSender,
    sync: Sync,
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
        Function { resource: ReversePrivateLink::new(aws, databases), sender, sync }
    }

    /// Handles one invocation; an error asks Lambda to deliver the event again.
    pub async fn handle(&self, event: LambdaEvent<Incoming>) -> Result<(), lambda_runtime::Error> {
        let deadline = Deadline::from_epoch_millis(event.context.deadline);
        match event.payload {
            // Boxed: the chain's nested futures are too deep a type for the runtime's own future to lay out.
            Incoming::CloudFormation(payload) => {
                Ok(Box::pin(cloudformation::serve(&self.resource, &self.sender, payload, deadline)).await?)
            }
            Incoming::EventBridge(event) => {
                Box::pin(self.sync.serve(&event, deadline)).await;
                Ok(())
            }
            Incoming::Unreadable(why) => {
                error!(error = %why, "the event cannot be read, so it has no ResponseURL to answer; ending the invocation without a response");
                Ok(())
            }
        }
    }
}
