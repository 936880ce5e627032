//! The CloudFormation protocol, with stand-in resources: one answer per event,
//! whatever the resource does, and a PUT that survives a flaky response URL.

use std::collections::BTreeMap;
use std::future::pending;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reverse_privatelink::cloudformation::{
    CustomResource, Deadline, MAX_BODY_BYTES, Request, ResponseSender, Success, serve,
};
use serde_json::{Value, json};

use crate::support::http::Server;

/// A resource that behaves as told.
enum Stub {
    Succeed,
    Fail(String),
    Panic,
    Hang,
}

impl CustomResource for Stub {
    type Error = String;

    async fn handle(&self, _request: &Request, _deadline: &Deadline) -> Result<Success, String> {
        match self {
            Stub::Succeed => Ok(Success {
                physical_resource_id: "vpce-svc-0123456789abcdef0".into(),
                data: BTreeMap::from([("ServiceId".to_string(), "vpce-svc-0123456789abcdef0".to_string())]),
            }),
            Stub::Fail(reason) => Err(reason.clone()),
            Stub::Panic => panic!("boom"),
            Stub::Hang => pending().await,
        }
    }
}

fn event(request_type: &str, url: &str) -> Value {
    let mut event = json!({
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/guid",
        "RequestId": "request-1",
        "ResourceType": "Custom::ReversePrivateLink",
        "LogicalResourceId": "Link",
        "ResourceProperties": {"ServiceToken": "arn"},
    });
    if request_type != "Create" {
        event["PhysicalResourceId"] = json!("vpce-svc-0000000000000000a");
    }
    if request_type == "Update" {
        event["OldResourceProperties"] = json!({});
    }
    event
}

fn sender() -> ResponseSender {
    ResponseSender::new().unwrap().with_retries(4, Duration::from_millis(100))
}

async fn answer(stub: Stub, event: Value, server: &Server) -> Value {
    serve(&stub, &sender(), event, Deadline::after(Duration::from_secs(30))).await.unwrap();
    let recorded = server.recorded();
    assert_eq!(recorded.len(), 1, "exactly one answer");
    recorded[0].json()
}

#[tokio::test]
async fn a_success_answer_carries_what_cloudformation_reads() {
    let server = Server::http().await;
    let url = server.url("stack/request-1");
    serve(&Stub::Succeed, &sender(), event("Create", &url), Deadline::after(Duration::from_secs(30))).await.unwrap();
    let recorded = server.recorded();
    assert_eq!(recorded.len(), 1);
    let put = &recorded[0];
    assert_eq!(put.method, "PUT");
    assert_eq!(
        put.uri.to_string(),
        "/stack/request-1?X-Amz-Signature=SECRET-SIGNATURE-stack/request-1",
        "the presigned query must reach S3 unchanged"
    );
    assert_eq!(
        put.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b""[..]),
        "the URL was signed without a content type"
    );
    let body = put.json();
    assert_eq!(body["Status"], "SUCCESS");
    assert_eq!(body["PhysicalResourceId"], "vpce-svc-0123456789abcdef0");
    assert_eq!(body["StackId"], "arn:aws:cloudformation:us-east-1:123456789012:stack/s/guid");
    assert_eq!(body["RequestId"], "request-1");
    assert_eq!(body["LogicalResourceId"], "Link");
    assert_eq!(body["Data"]["ServiceId"], "vpce-svc-0123456789abcdef0");
    assert!(body["Reason"].is_string());
    assert_eq!(body["NoEcho"], false);
}

#[tokio::test]
async fn a_failed_answer_carries_the_reason_and_the_right_physical_id() {
    let server = Server::http().await;
    let url = server.url("r");
    let created = answer(Stub::Fail("Port: \"0\" is not a TCP port".into()), event("Create", &url), &server).await;
    assert_eq!(created["Status"], "FAILED");
    assert_eq!(created["Reason"], "Port: \"0\" is not a TCP port");
    assert_eq!(
        created["PhysicalResourceId"], "create-failed-request-1",
        "a failed Create must not look like a service ID"
    );

    let server = Server::http().await;
    let updated = answer(Stub::Fail("no".into()), event("Update", &server.url("r")), &server).await;
    assert_eq!(updated["PhysicalResourceId"], "vpce-svc-0000000000000000a", "a failed Update keeps its ID");
}

#[tokio::test]
async fn a_long_reason_is_cut_to_fit_4096_bytes() {
    let server = Server::http().await;
    let reason = "SubnetIds: \"subnet-x\" is wrong; ".repeat(400);
    let body = answer(Stub::Fail(reason.clone()), event("Create", &server.url("r")), &server).await;
    let raw = server.recorded()[0].body.len();
    assert!(raw <= MAX_BODY_BYTES, "{raw} bytes");
    assert!(raw > MAX_BODY_BYTES - 64, "cut far more than needed: {raw} bytes");
    let cut = body["Reason"].as_str().unwrap();
    assert!(reason.starts_with(cut.trim_end_matches('…')) && cut.ends_with('…'));
}

#[tokio::test]
async fn a_panic_becomes_failed() {
    let server = Server::http().await;
    let body = answer(Stub::Panic, event("Delete", &server.url("r")), &server).await;
    assert_eq!(body["Status"], "FAILED");
    assert!(body["Reason"].as_str().unwrap().contains("boom"), "{body}");
    assert_eq!(body["PhysicalResourceId"], "vpce-svc-0000000000000000a");
}

#[tokio::test]
async fn the_deadline_guard_answers_before_lambda_stops_the_function() {
    let server = Server::http().await;
    let started = Instant::now();
    let deadline = Duration::from_secs(3);
    serve(&Stub::Hang, &sender(), event("Create", &server.url("r")), Deadline::after(deadline)).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < deadline, "answered after the deadline: {elapsed:?}");
    let recorded = server.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].json()["Status"], "FAILED");
    assert!(recorded[0].json()["Reason"].as_str().unwrap().contains("timed out"));
}

#[tokio::test]
async fn server_errors_from_the_response_url_are_retried_and_one_answer_lands() {
    let server = Server::http().await;
    server.fail_next(2, StatusCode::INTERNAL_SERVER_ERROR);
    let body = answer(Stub::Succeed, event("Create", &server.url("r")), &server).await;
    assert_eq!(body["Status"], "SUCCESS");
    assert_eq!(server.attempts(), 3);
}

#[tokio::test]
async fn dropped_connections_are_retried_and_one_answer_lands() {
    let server = Server::http().await;
    server.drop_next(2);
    let body = answer(Stub::Succeed, event("Create", &server.url("r")), &server).await;
    assert_eq!(body["Status"], "SUCCESS");
    assert_eq!(server.attempts(), 3);
}

/// A loopback port nothing listens on (until the test starts a server there).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn refused_connections_are_retried_until_the_listener_is_up() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/r?X-Amz-Signature=s");
    let sender = ResponseSender::new().unwrap().with_retries(6, Duration::from_millis(300));
    let delivery = tokio::spawn(async move {
        serve(&Stub::Succeed, &sender, event("Create", &url), Deadline::after(Duration::from_secs(30))).await
    });
    // The first attempts meet a closed port (connection refused).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = Server::http_on(port).await;
    delivery.await.unwrap().unwrap();
    let recorded = server.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].json()["Status"], "SUCCESS");
}

#[tokio::test]
async fn a_refusing_response_url_is_not_retried_and_the_invocation_ends_cleanly() {
    let server = Server::http().await;
    server.fail_next(10, StatusCode::FORBIDDEN);
    let ended =
        serve(&Stub::Succeed, &sender(), event("Create", &server.url("r")), Deadline::after(Duration::from_secs(30)))
            .await;
    assert!(ended.is_ok(), "a retry by Lambda would meet the same refusal");
    assert_eq!(server.attempts(), 1);
}

#[tokio::test]
async fn an_unreachable_response_url_asks_lambda_to_deliver_the_event_again() {
    let server = Server::http().await;
    server.fail_next(100, StatusCode::SERVICE_UNAVAILABLE);
    let ended =
        serve(&Stub::Succeed, &sender(), event("Create", &server.url("r")), Deadline::after(Duration::from_secs(30)))
            .await;
    assert!(ended.is_err());
    assert_eq!(server.attempts(), 4, "the sender's attempts, no more");
}

#[tokio::test]
async fn malformed_events_get_one_failed_answer_naming_the_field() {
    let server = Server::http().await;
    let url = server.url("r");
    let mut destroy = event("Create", &url);
    destroy["RequestType"] = json!("Destroy");
    let mut no_old = event("Update", &url);
    no_old.as_object_mut().unwrap().remove("OldResourceProperties");
    let mut no_stack = event("Create", &url);
    no_stack.as_object_mut().unwrap().remove("StackId");
    for (bad, field) in [(destroy, "RequestType"), (no_old, "OldResourceProperties"), (no_stack, "StackId")] {
        let before = server.recorded().len();
        serve(&Stub::Succeed, &sender(), bad, Deadline::after(Duration::from_secs(30))).await.unwrap();
        let recorded = server.recorded();
        assert_eq!(recorded.len(), before + 1);
        let body = recorded[before].json();
        assert_eq!(body["Status"], "FAILED", "{field}");
        assert!(body["Reason"].as_str().unwrap().contains(field), "{field}: {body}");
    }
}

#[tokio::test]
async fn events_without_a_usable_response_url_end_quietly() {
    let server = Server::http().await;
    let mut no_url = event("Create", &server.url("r"));
    no_url.as_object_mut().unwrap().remove("ResponseURL");
    let mut bad_url = no_url.clone();
    bad_url["ResponseURL"] = json!("not a url");
    for payload in [no_url, bad_url, json!("hello")] {
        let ended = serve(&Stub::Succeed, &sender(), payload, Deadline::after(Duration::from_secs(30))).await;
        assert!(ended.is_ok(), "an error would make Lambda deliver the unanswerable event again");
    }
    assert_eq!(server.attempts(), 0);
}
