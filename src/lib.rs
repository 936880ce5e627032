//! A CloudFormation custom resource that builds the producer side of reverse
//! PrivateLink: an internal NLB in front of a database writer, published as a
//! VPC endpoint service that only the consumer's principal may use.
//!
//! Three rooms, each calling only the next: [`cloudformation`] (the protocol)
//! → [`resource`] and [`spec`] (the desired state) → [`chain`] (the AWS calls).
//! [`incoming`] sorts each event to its room; [`deadline`] keeps every room
//! within the invocation's time.

pub mod aws;
pub mod chain;
pub mod cloudformation;
pub mod deadline;
pub mod error;
pub mod incoming;
pub mod resource;
pub mod spec;

use aws_config::SdkConfig;
use lambda_runtime::LambdaEvent;
use tracing::error;

use aws::Aws;
use cloudformation::ResponseSender;
use deadline::Deadline;
use incoming::Incoming;
use resource::ReversePrivateLink;

pub use aws::config_loader as aws_config_loader;

/// The Lambda function: one custom resource and the way to answer CloudFormation.
pub struct Function {
    resource: ReversePrivateLink,
    sender: ResponseSender,
}

impl Function {
    /// Reads the AWS settings from the environment (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL`).
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        Ok(Self::new(&aws_config_loader().load().await)?)
    }

    pub fn new(config: &SdkConfig) -> Result<Self, reqwest::Error> {
        Ok(Self::with_sender(config, ResponseSender::new()?))
    }

    pub fn with_sender(config: &SdkConfig, sender: ResponseSender) -> Self {
        Function { resource: ReversePrivateLink::new(Aws::new(config)), sender }
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
                error!(source = %event.source, detail_type = %event.detail_type, "no handler for EventBridge events yet");
                Ok(())
            }
            Incoming::Unreadable(why) => {
                error!(error = %why, "the event cannot be read, so it has no ResponseURL to answer; ending the invocation without a response");
                Ok(())
            }
        }
    }
}
