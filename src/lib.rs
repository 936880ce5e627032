//! A CloudFormation custom resource that builds the producer side of reverse
//! PrivateLink: an internal NLB in front of a database writer, published as a
//! VPC endpoint service that only the consumer's principal may use.
//!
//! Three rooms, each calling only the next: [`cloudformation`] (the protocol)
//! → [`resource`] and [`spec`] (the desired state) → [`chain`] (the AWS calls).

pub mod chain;
pub mod cloudformation;
pub mod error;
pub mod resource;
pub mod spec;

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use lambda_runtime::LambdaEvent;

use chain::Aws;
use cloudformation::{Incoming, ResponseSender};
use resource::ReversePrivateLink;

/// The Lambda function: one custom resource and the way to answer CloudFormation.
pub struct Function {
    resource: ReversePrivateLink,
    sender: ResponseSender,
}

/// The SDK settings the chain relies on: throttling is retried with backoff,
/// and no single call may hang past the deadline guard's reach.
pub fn aws_config_loader() -> ConfigLoader {
    // Lambda always sets AWS_REGION; the fallback serves local runs against an emulator.
    let region = RegionProviderChain::default_provider().or_else(Region::new("us-east-1"));
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(RetryConfig::standard().with_max_attempts(6))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
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
        // Boxed: the chain's nested futures are too deep a type for the runtime's own future to lay out.
        Ok(Box::pin(cloudformation::serve(&self.resource, &self.sender, event)).await?)
    }
}
