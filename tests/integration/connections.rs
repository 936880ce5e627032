//! Endpoint connections, which moto does not implement, at the SDK layer: the
//! rules below must be met in exactly this order or the mock panics.

use std::collections::BTreeMap;

use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::delete_vpc_endpoint_service_configurations::DeleteVpcEndpointServiceConfigurationsOutput;
use aws_sdk_ec2::operation::describe_vpc_endpoint_connections::DescribeVpcEndpointConnectionsOutput;
use aws_sdk_ec2::operation::describe_vpc_endpoint_service_configurations::DescribeVpcEndpointServiceConfigurationsError;
use aws_sdk_ec2::operation::reject_vpc_endpoint_connections::RejectVpcEndpointConnectionsOutput;
use aws_sdk_ec2::types::{State, UnsuccessfulItem, UnsuccessfulItemError, VpcEndpointConnection};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use reverse_privatelink::chain::{Aws, Chain, EndpointService, Group, Owner, Progress};

const SERVICE: &str = "vpce-svc-0123456789abcdef0";

fn aws(rules: &[&Rule]) -> Aws {
    let interceptor =
        rules.iter().fold(MockResponseInterceptor::new().rule_mode(RuleMode::Sequential), |i, rule| i.with_rule(rule));
    let ec2 = aws_sdk_ec2::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("a", "b", None, None, "test"))
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
        .build();
    // Every other client fails for want of a mocked answer: a teardown of a group holding only a service calls none.
    let unmocked = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(Credentials::new(
            "a", "b", None, None, "test",
        )))
        .http_client(create_mock_http_client())
        .build();
    Aws { ec2: aws_sdk_ec2::Client::from_conf(ec2), ..Aws::new(&unmocked) }
}

fn group() -> Group {
    Group {
        generation: "0123abcd".into(),
        services: vec![EndpointService {
            id: SERVICE.into(),
            name: format!("com.amazonaws.vpce.us-east-1.{SERVICE}"),
            acceptance_required: false,
            load_balancer_arns: vec![],
            supported_regions: Default::default(),
            state: "Available".into(),
            generation: "0123abcd".into(),
            tags: BTreeMap::new(),
        }],
        ..Group::default()
    }
}

fn refused_for_connections() -> Rule {
    mock!(aws_sdk_ec2::Client::delete_vpc_endpoint_service_configurations)
        .match_requests(|req| req.service_ids() == [SERVICE])
        .then_output(|| {
            DeleteVpcEndpointServiceConfigurationsOutput::builder()
                .unsuccessful(
                    UnsuccessfulItem::builder()
                        .resource_id(SERVICE)
                        .error(
                            UnsuccessfulItemError::builder()
                                .code("ExistingVpcEndpointConnections")
                                .message("Service has existing active VPC Endpoint connections")
                                .build(),
                        )
                        .build(),
                )
                .build()
        })
}

fn deleted() -> Rule {
    mock!(aws_sdk_ec2::Client::delete_vpc_endpoint_service_configurations)
        .match_requests(|req| req.service_ids() == [SERVICE])
        .then_output(|| DeleteVpcEndpointServiceConfigurationsOutput::builder().build())
}

fn gone() -> Rule {
    mock!(aws_sdk_ec2::Client::describe_vpc_endpoint_service_configurations).then_error(|| {
        DescribeVpcEndpointServiceConfigurationsError::generic(
            ErrorMetadata::builder().code("InvalidVpcEndpointServiceId.NotFound").build(),
        )
    })
}

fn connection(endpoint: &str, state: State) -> VpcEndpointConnection {
    VpcEndpointConnection::builder().service_id(SERVICE).vpc_endpoint_id(endpoint).vpc_endpoint_state(state).build()
}

#[tokio::test]
async fn delete_rejects_open_connections_before_the_service_is_deleted() {
    let listed = mock!(aws_sdk_ec2::Client::describe_vpc_endpoint_connections)
        .match_requests(|req| req.filters().iter().any(|f| f.name() == Some("service-id") && f.values() == [SERVICE]))
        .then_output(|| {
            DescribeVpcEndpointConnectionsOutput::builder()
                .vpc_endpoint_connections(connection("vpce-0aaaaaaaaaaaaaaaa", State::Available))
                .vpc_endpoint_connections(connection("vpce-0bbbbbbbbbbbbbbbb", State::PendingAcceptance))
                .vpc_endpoint_connections(connection("vpce-0cccccccccccccccc", State::Rejected))
                .build()
        });
    let rejected = mock!(aws_sdk_ec2::Client::reject_vpc_endpoint_connections)
        .match_requests(|req| {
            req.service_id() == Some(SERVICE)
                && req.vpc_endpoint_ids() == ["vpce-0aaaaaaaaaaaaaaaa", "vpce-0bbbbbbbbbbbbbbbb"]
        })
        .then_output(|| RejectVpcEndpointConnectionsOutput::builder().build());
    let (refused, deleted, gone) = (refused_for_connections(), deleted(), gone());
    let aws = aws(&[&refused, &listed, &rejected, &deleted, &gone]);
    let chain = Chain::new(&aws, Owner { stack_id: "stack".into(), logical_id: "Link".into() });

    chain.teardown(&group(), &Progress::default()).await.unwrap();

    for (rule, what) in [
        (&refused, "refused deletion"),
        (&listed, "listing"),
        (&rejected, "rejection"),
        (&deleted, "deletion"),
        (&gone, "wait"),
    ] {
        assert_eq!(rule.num_calls(), 1, "{what}");
    }
}

#[tokio::test]
async fn delete_of_a_service_already_gone_succeeds_without_touching_connections() {
    let already_gone = mock!(aws_sdk_ec2::Client::delete_vpc_endpoint_service_configurations).then_output(|| {
        DeleteVpcEndpointServiceConfigurationsOutput::builder()
            .unsuccessful(
                UnsuccessfulItem::builder()
                    .resource_id(SERVICE)
                    .error(UnsuccessfulItemError::builder().code("InvalidVpcEndpointService.NotFound").build())
                    .build(),
            )
            .build()
    });
    let aws = aws(&[&already_gone]);
    let chain = Chain::new(&aws, Owner { stack_id: "stack".into(), logical_id: "Link".into() });
    chain.teardown(&group(), &Progress::default()).await.unwrap();
    assert_eq!(already_gone.num_calls(), 1);
}

#[tokio::test]
async fn a_refusal_other_than_open_connections_fails_the_delete_with_its_reason() {
    let refused = mock!(aws_sdk_ec2::Client::delete_vpc_endpoint_service_configurations).then_output(|| {
        DeleteVpcEndpointServiceConfigurationsOutput::builder()
            .unsuccessful(
                UnsuccessfulItem::builder()
                    .resource_id(SERVICE)
                    .error(
                        UnsuccessfulItemError::builder().code("UnauthorizedOperation").message("not allowed").build(),
                    )
                    .build(),
            )
            .build()
    });
    let aws = aws(&[&refused]);
    let chain = Chain::new(&aws, Owner { stack_id: "stack".into(), logical_id: "Link".into() });
    let error = chain.teardown(&group(), &Progress::default()).await.unwrap_err().to_string();
    assert!(
        error.contains("deleting the endpoint service") && error.contains("UnauthorizedOperation: not allowed"),
        "{error}"
    );
}
