//! CloudFormation's side of a custom resource, as a stand-in the built binary
//! talks to: the response URL it answers (`PUT /responses/<request>`) and the
//! `DescribeStackResource` and `DescribeStacks` it asks (through
//! `AWS_ENDPOINT_URL_CLOUDFORMATION`). The resource's status evolves as
//! CloudFormation's would: a request is awaited until its answer arrives; an answer
//! to a request no longer awaited (cancelled) is ignored. Like any AWS API it can
//! throttle, fail or deny a question; and, as the emulator does for every other API,
//! it authorizes each question by the caller's role first (`/_iam/authorize`).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{post, put};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One resource of one stack.
#[derive(Debug, Clone, Default)]
pub struct Resource {
    /// None: no such stack yet.
    pub status: Option<String>,
    pub reason: Option<String>,
    pub physical_id: Option<String>,
    /// The request whose answer CloudFormation takes, and what it is.
    awaiting: Option<(String, String)>,
}

#[derive(Default)]
struct Shared {
    stack_id: Mutex<String>,
    logical_id: Mutex<String>,
    resource: Mutex<Resource>,
    answers: Mutex<Vec<Value>>,
    /// Answer the next DescribeStackResource "in progress", then cancel the request.
    cancel_after_next_describe: Mutex<bool>,
    cancelled: Notify,
    describes: Mutex<usize>,
    /// The stack's status when a test sets it; else it follows the resource's.
    stack_status: Mutex<Option<String>>,
    /// How questions fail while set.
    failing: Mutex<Option<Failing>>,
    /// How many of the next questions fail, and how.
    failing_next: Mutex<(usize, Option<Failing>)>,
    /// How many of the next answers the response URL refuses (HTTP 500).
    refusing_answers: Mutex<usize>,
    /// The emulator that authorizes each question.
    authorizer: Mutex<String>,
}

/// How CloudFormation refuses a question, as AWS answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failing {
    Throttling,
    ServerError,
    AccessDenied,
}

#[derive(Clone)]
pub struct CloudFormation {
    pub endpoint: String,
    shared: Arc<Shared>,
}

impl CloudFormation {
    /// The stand-in for `stack_id`'s `logical_id`, authorizing questions at the emulator `authorizer`.
    pub async fn start(stack_id: &str, logical_id: &str, authorizer: &str) -> CloudFormation {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        *shared.stack_id.lock().unwrap() = stack_id.to_string();
        *shared.logical_id.lock().unwrap() = logical_id.to_string();
        *shared.authorizer.lock().unwrap() = authorizer.to_string();
        let app = Router::new()
            .route("/responses/{request_id}", put(answer))
            .route("/", post(describe))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        CloudFormation { endpoint, shared }
    }

    pub fn response_url(&self, request_id: &str) -> String {
        format!("{}/responses/{request_id}?X-Amz-Signature=SECRET", self.endpoint)
    }

    /// CloudFormation sends `request_id` and waits for its answer.
    pub fn awaits(&self, request_type: &str, request_id: &str) {
        let mut resource = self.shared.resource.lock().unwrap();
        resource.status =
            Some(if request_type == "Delete" { "DELETE_IN_PROGRESS" } else { in_progress(request_type) }.into());
        resource.reason = None;
        resource.awaiting = Some((request_type.to_string(), request_id.to_string()));
    }

    /// Another resource failed: this one's request is cancelled (CREATE_FAILED
    /// "Resource creation cancelled"); its answer will be ignored.
    pub fn cancel(&self) {
        let mut resource = self.shared.resource.lock().unwrap();
        let kind = resource.awaiting.take().map(|(kind, _)| kind).unwrap_or_else(|| "Create".into());
        resource.status = Some(format!("{}_FAILED", kind.to_ascii_uppercase()));
        resource.reason = Some(format!("Resource {} cancelled", if kind == "Create" { "creation" } else { "update" }));
    }

    /// The next DescribeStackResource is answered "in progress", and right after it the request is cancelled.
    pub fn cancel_after_next_describe(&self) {
        *self.shared.cancel_after_next_describe.lock().unwrap() = true;
    }

    pub async fn cancelled(&self) {
        tokio::time::timeout(std::time::Duration::from_secs(60), self.shared.cancelled.notified())
            .await
            .expect("the request was never asked about");
    }

    /// The stack's resource now.
    pub fn resource(&self) -> Resource {
        self.shared.resource.lock().unwrap().clone()
    }

    /// Sets what CloudFormation holds (a rollback puts back the physical ID it had).
    pub fn holds(&self, status: &str, physical_id: Option<&str>) {
        let mut resource = self.shared.resource.lock().unwrap();
        resource.status = Some(status.to_string());
        resource.physical_id = physical_id.map(str::to_string);
    }

    /// Every answer received for `request_id`.
    pub fn answers_to(&self, request_id: &str) -> Vec<Value> {
        self.shared.answers.lock().unwrap().iter().filter(|a| a["RequestId"] == request_id).cloned().collect()
    }

    pub fn describes(&self) -> usize {
        *self.shared.describes.lock().unwrap()
    }

    /// The stack's own status from now on (`UPDATE_ROLLBACK_IN_PROGRESS`, …).
    pub fn stack_status(&self, status: &str) {
        *self.shared.stack_status.lock().unwrap() = Some(status.to_string());
    }

    /// Every question fails so until `failing(None)`.
    pub fn failing(&self, how: Option<Failing>) {
        *self.shared.failing.lock().unwrap() = how;
    }

    /// The next `n` questions fail so.
    pub fn fail_next(&self, n: usize, how: Failing) {
        *self.shared.failing_next.lock().unwrap() = (n, Some(how));
    }

    /// The response URL refuses the next `n` answers (HTTP 500), as S3 now and then does.
    pub fn refuse_next_answers(&self, n: usize) {
        *self.shared.refusing_answers.lock().unwrap() = n;
    }
}

fn in_progress(request_type: &str) -> &'static str {
    if request_type == "Create" { "CREATE_IN_PROGRESS" } else { "UPDATE_IN_PROGRESS" }
}

async fn answer(State(shared): State<Arc<Shared>>, Path(request_id): Path<String>, body: Bytes) -> StatusCode {
    {
        let mut refusing = shared.refusing_answers.lock().unwrap();
        if *refusing > 0 {
            *refusing -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    let Ok(answer) = serde_json::from_slice::<Value>(&body) else { return StatusCode::BAD_REQUEST };
    shared.answers.lock().unwrap().push(answer.clone());
    let mut resource = shared.resource.lock().unwrap();
    let Some((kind, awaited)) = resource.awaiting.clone() else { return StatusCode::OK };
    if awaited != request_id {
        return StatusCode::OK;
    }
    resource.awaiting = None;
    let succeeded = answer["Status"] == "SUCCESS";
    let kind = kind.to_ascii_uppercase();
    resource.status = Some(format!("{kind}_{}", if succeeded { "COMPLETE" } else { "FAILED" }));
    resource.reason = answer["Reason"].as_str().map(str::to_string);
    if kind != "DELETE" && (succeeded || kind == "CREATE") {
        resource.physical_id = answer["PhysicalResourceId"].as_str().map(str::to_string);
    }
    StatusCode::OK
}

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let xml = format!(
        "<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>0</RequestId></ErrorResponse>"
    );
    (status, [("content-type", "text/xml")], xml)
}

/// The emulator's decision on a question, as AWS's authorization comes before any answer.
async fn refused(shared: &Shared, headers: &HeaderMap, body: &str) -> Option<(StatusCode, String, String)> {
    let authorizer = shared.authorizer.lock().unwrap().clone();
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), Value::String(value.to_str().ok()?.to_string()))))
        .collect();
    let request = serde_json::json!({"headers": headers, "body": body});
    let url = format!("{authorizer}/_iam/authorize");
    let answer = reqwest::Client::new().post(url).body(request.to_string()).send().await.ok()?.text().await.ok()?;
    let decision: Value = serde_json::from_str(&answer).ok()?;
    if decision["allowed"] == true {
        return None;
    }
    let status = StatusCode::from_u16(decision["status"].as_u64().unwrap_or(403) as u16).unwrap();
    Some((status, decision["content_type"].as_str().unwrap_or("text/xml").into(), decision["body"].as_str()?.into()))
}

async fn describe(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> axum::response::Response {
    if let Some((status, content_type, text)) = refused(&shared, &headers, &body).await {
        return (status, [("content-type", content_type)], text).into_response();
    }
    describe_authorized(&shared, body).into_response()
}

fn describe_authorized(shared: &Shared, body: String) -> impl IntoResponse + use<> {
    *shared.describes.lock().unwrap() += 1;
    let failing = {
        let mut next = shared.failing_next.lock().unwrap();
        match next.0 > 0 {
            true => {
                next.0 -= 1;
                next.1
            }
            false => *shared.failing.lock().unwrap(),
        }
    };
    match failing {
        Some(Failing::Throttling) => return error(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        Some(Failing::ServerError) => return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "internal"),
        Some(Failing::AccessDenied) => {
            return error(StatusCode::FORBIDDEN, "AccessDenied", "not authorized to perform: cloudformation:Describe");
        }
        None => {}
    }
    if body.contains("Action=DescribeStacks") {
        return describe_stack(shared, &body);
    }
    let stack_id = shared.stack_id.lock().unwrap().clone();
    let logical_id = shared.logical_id.lock().unwrap().clone();
    let asked = body.split('&').find_map(|p| p.strip_prefix("StackName=")).map(decode).unwrap_or_default();
    let resource = shared.resource.lock().unwrap().clone();
    let Some(status) = resource.status.clone().filter(|_| asked == stack_id) else {
        return error(StatusCode::BAD_REQUEST, "ValidationError", &format!("Stack with id {asked} does not exist"));
    };
    let mut cancel = shared.cancel_after_next_describe.lock().unwrap();
    if *cancel {
        *cancel = false;
        drop(cancel);
        // Answered "in progress", then cancelled before the function can answer.
        let mut resource = shared.resource.lock().unwrap();
        let kind = resource.awaiting.take().map(|(kind, _)| kind).unwrap_or_else(|| "Create".into());
        resource.status = Some(format!("{}_FAILED", kind.to_ascii_uppercase()));
        resource.reason = Some("Resource creation cancelled".into());
        shared.cancelled.notify_one();
    }
    let xml = format!(
        "<DescribeStackResourceResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><DescribeStackResourceResult><StackResourceDetail><StackId>{stack_id}</StackId><StackName>import-db</StackName><LogicalResourceId>{logical_id}</LogicalResourceId>{}<ResourceType>Custom::ReversePrivateLink</ResourceType><LastUpdatedTimestamp>2026-11-25T06:00:00Z</LastUpdatedTimestamp><ResourceStatus>{status}</ResourceStatus>{}</StackResourceDetail></DescribeStackResourceResult><ResponseMetadata><RequestId>0</RequestId></ResponseMetadata></DescribeStackResourceResponse>",
        resource.physical_id.map(|id| format!("<PhysicalResourceId>{id}</PhysicalResourceId>")).unwrap_or_default(),
        resource.reason.map(|r| format!("<ResourceStatusReason>{r}</ResourceStatusReason>")).unwrap_or_default(),
    );
    (StatusCode::OK, [("content-type", "text/xml")], xml)
}

/// `DescribeStacks`: the status a test set, else the one the resource's request implies.
fn describe_stack(shared: &Shared, body: &str) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let stack_id = shared.stack_id.lock().unwrap().clone();
    let asked = body.split('&').find_map(|p| p.strip_prefix("StackName=")).map(decode).unwrap_or_default();
    let resource = shared.resource.lock().unwrap().clone();
    let set = shared.stack_status.lock().unwrap().clone();
    let Some(status) = set.or(resource.status).filter(|_| asked == stack_id) else {
        return error(StatusCode::BAD_REQUEST, "ValidationError", &format!("Stack with id {asked} does not exist"));
    };
    let status = match status.as_str() {
        "DELETE_IN_PROGRESS" | "DELETE_COMPLETE" | "DELETE_FAILED" => "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS".to_string(),
        _ => status,
    };
    let xml = format!(
        "<DescribeStacksResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><DescribeStacksResult><Stacks><member><StackId>{stack_id}</StackId><StackName>import-db</StackName><CreationTime>2026-11-25T06:00:00Z</CreationTime><StackStatus>{status}</StackStatus></member></Stacks></DescribeStacksResult><ResponseMetadata><RequestId>0</RequestId></ResponseMetadata></DescribeStacksResponse>"
    );
    (StatusCode::OK, [("content-type", "text/xml")], xml)
}

fn decode(value: &str) -> String {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&value[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
