//! The AWS clients, built once per process and shared by every kind of event.

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};

/// The SDK settings the function relies on: throttling is retried with backoff,
/// and no single call may hang past the deadline guard's reach.
pub fn config_loader() -> ConfigLoader {
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

/// One client per service. Each honours `AWS_ENDPOINT_URL_<SERVICE>` as well as
/// `AWS_ENDPOINT_URL`, so a test can put a CloudFormation stub beside the emulator.
#[derive(Clone, Debug)]
pub struct Aws {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub rds: aws_sdk_rds::Client,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub tagging: aws_sdk_resourcegroupstagging::Client,
    /// The fleet report's, in the function's region (another region's is derived from it).
    pub events: aws_sdk_eventbridge::Client,
}

impl Aws {
    pub fn new(config: &SdkConfig) -> Self {
        // Throttling and server errors are retried with the SDK's standard backoff, but
        // for a bounded time: an answer that cannot be had is "could not ask" (nothing is
        // concluded from it), and waiting a minute for it on every question is not worth it.
        let retries = RetryConfig::standard().with_max_attempts(3);
        let timeouts = TimeoutConfig::builder().operation_timeout(Duration::from_secs(10)).build();
        let cloudformation = aws_sdk_cloudformation::config::Builder::from(config)
            .retry_config(retries.clone())
            .timeout_config(timeouts.clone())
            .build();
        // The fleet report's: not worth a long wait either.
        let events =
            aws_sdk_eventbridge::config::Builder::from(config).retry_config(retries).timeout_config(timeouts).build();
        Aws {
            ec2: aws_sdk_ec2::Client::new(config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
            rds: aws_sdk_rds::Client::new(config),
            cloudformation: aws_sdk_cloudformation::Client::from_conf(cloudformation),
            tagging: aws_sdk_resourcegroupstagging::Client::new(config),
            events: aws_sdk_eventbridge::Client::from_conf(events),
        }
    }
}
