//! A fault-injecting proxy between the SDK and moto server. The function only
//! sees another `AWS_ENDPOINT_URL`; per API action the proxy can answer with
//! AWS's own throttling errors, fail with a server error, add latency, drop the
//! connection, or keep load balancers provisioning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// EC2's `RequestLimitExceeded` (HTTP 503) or ELB's `Throttling` (HTTP 400), as AWS sends them.
    Throttle,
    ServerError(u16),
    Latency(Duration),
    /// Closes the connection without an answer.
    Drop,
    /// Rewrites load balancer states in answers from `active` to `provisioning`.
    KeepProvisioning,
    /// Forwards the request, so the step takes effect, then never answers: the
    /// moment to kill the function "right after the step".
    HoldAfterForwarding,
    /// Forwards the request and rewrites the answer's body: states AWS would report and the emulator does not.
    Rewrite(Rewrite),
    /// Answers with AWS's error `code` (HTTP 400) without forwarding, as AWS refuses a call.
    Refuse(&'static str),
    /// Holds the request before forwarding it until `Proxy::release`: the moment
    /// for CloudFormation to do something while the function waits.
    Pause,
    /// Answers with AWS's error `code` and `message` (HTTP 400) when the request's body
    /// holds `needle` (a subnet ID, say); forwards it otherwise.
    RefuseIfBodyHas {
        needle: String,
        code: &'static str,
        message: String,
    },
}

/// A change to an answer's body.
#[derive(Clone)]
pub struct Rewrite(pub Arc<dyn Fn(&str) -> String + Send + Sync>);

impl Fault {
    pub fn rewrite(rewrite: impl Fn(&str) -> String + Send + Sync + 'static) -> Fault {
        Fault::Rewrite(Rewrite(Arc::new(rewrite)))
    }
}

impl std::fmt::Debug for Rewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rewrite")
    }
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Debug)]
struct Rule {
    action: String,
    fault: Fault,
    /// How many more requests it applies to; None for all.
    remaining: Option<usize>,
}

/// What AWS does and the emulator does not, switched on per test.
#[derive(Default)]
struct Modelled {
    /// `CreateVpcEndpointServiceConfiguration` answers a repeated `ClientToken` with the first answer.
    client_tokens: bool,
    answers_by_token: HashMap<String, String>,
    /// A tag filter omits services created less than this long ago.
    tag_filter_lag: Option<Duration>,
    created_services: Vec<(String, Instant)>,
}

#[derive(Default)]
struct Shared {
    modelled: Mutex<Modelled>,
    paused: tokio::sync::Notify,
    release: tokio::sync::Notify,
    rules: Mutex<Vec<Rule>>,
    actions: Mutex<Vec<String>>,
    bodies: Mutex<Vec<(String, String)>>,
    injected: Mutex<Vec<(String, Fault)>>,
    held: tokio::sync::Notify,
}

#[derive(Clone)]
pub struct Proxy {
    pub endpoint: String,
    shared: Arc<Shared>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let client = reqwest::Client::new();
        let upstream = upstream.to_string();
        let state = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (state, client, upstream) = (state.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (state, client, upstream) = (state.clone(), client.clone(), upstream.clone());
                        async move { handle(&state, &client, &upstream, request).await }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        Proxy { endpoint, shared }
    }

    /// Applies `fault` to the next `times` requests for `action` (all of them with None).
    pub fn inject(&self, action: &str, fault: Fault, times: Option<usize>) {
        self.shared.rules.lock().unwrap().push(Rule { action: action.to_string(), fault, remaining: times });
    }

    /// Applies `fault` once to the first request of every action seen from now on.
    pub fn inject_once_per_action(&self, fault: Fault) {
        self.inject("*", fault, None);
    }

    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Every action that reached the proxy, in order.
    pub fn actions(&self) -> Vec<String> {
        self.shared.actions.lock().unwrap().clone()
    }

    /// The bodies of the requests for `action`, in order, as the SDK sent them (URL-encoded).
    pub fn requests(&self, action: &str) -> Vec<String> {
        let bodies = self.shared.bodies.lock().unwrap();
        bodies.iter().filter(|(a, _)| a == action).map(|(_, body)| body.clone()).collect()
    }

    /// Makes a repeated client token of CreateVpcEndpointServiceConfiguration return the first service, as AWS does.
    pub fn model_client_tokens(&self) {
        self.shared.modelled.lock().unwrap().client_tokens = true;
    }

    /// Makes tag filters of DescribeVpcEndpointServiceConfigurations omit services created less than `lag` ago.
    pub fn lag_service_tag_filter(&self, lag: Duration) {
        self.shared.modelled.lock().unwrap().tag_filter_lag = Some(lag);
    }

    /// Waits until a request is held by `Pause`.
    pub async fn paused(&self) {
        tokio::time::timeout(Duration::from_secs(60), self.shared.paused.notified())
            .await
            .expect("the paused step was never reached");
    }

    /// Lets the request held by `Pause` go on.
    pub fn release(&self) {
        self.shared.release.notify_one();
    }

    /// Waits until a request was held by `HoldAfterForwarding`.
    pub async fn held(&self) {
        tokio::time::timeout(Duration::from_secs(60), self.shared.held.notified())
            .await
            .expect("the step was never reached");
    }

    /// Every fault the proxy injected.
    pub fn injected(&self) -> Vec<(String, Fault)> {
        self.shared.injected.lock().unwrap().clone()
    }
}

/// The fault for this request, if a rule applies. A "*" rule hits each action once.
fn fault_for(shared: &Shared, action: &str) -> Option<Fault> {
    let mut rules = shared.rules.lock().unwrap();
    let seen_before = shared.actions.lock().unwrap().iter().filter(|a| *a == action).count() > 1;
    let rule = rules
        .iter_mut()
        .find(|rule| (rule.action == action || (rule.action == "*" && !seen_before)) && rule.remaining != Some(0))?;
    if let Some(n) = rule.remaining.as_mut() {
        *n -= 1;
    }
    Some(rule.fault.clone())
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|pair| pair.strip_prefix(&format!("{key}="))).map(str::to_string)
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    Some(&text[start..start + text[start..].find(close)?])
}

/// The answer with the top-level items of `serviceConfigurationSet` that name one of `ids` removed.
fn without_services(text: &str, ids: &[String]) -> String {
    let Some(set_start) = text.find("<serviceConfigurationSet>").map(|i| i + "<serviceConfigurationSet>".len()) else {
        return text.to_string();
    };
    let Some(set_end) = text.find("</serviceConfigurationSet>") else { return text.to_string() };
    let (mut kept, mut depth, mut item_start, mut i) = (String::new(), 0usize, 0usize, set_start);
    let set = &text[..set_end];
    while i < set_end {
        if set[i..].starts_with("<item>") {
            if depth == 0 {
                item_start = i;
            }
            depth += 1;
            i += "<item>".len();
        } else if set[i..].starts_with("</item>") {
            depth -= 1;
            i += "</item>".len();
            if depth == 0 {
                let item = &set[item_start..i];
                if !ids.iter().any(|id| item.contains(&format!("<serviceId>{id}</serviceId>"))) {
                    kept.push_str(item);
                }
            }
        } else {
            i += set[i..].chars().next().map(char::len_utf8).unwrap_or(1);
        }
    }
    format!("{}{kept}{}", &text[..set_start], &text[set_end..])
}

/// The API action: `Action=` in a query-protocol body, or the JSON protocol's `X-Amz-Target` header.
fn action_of(headers: &axum::http::HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .unwrap_or("Unknown")
        .to_string()
}

/// How a service speaks, for answering in its own error format.
#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Ec2,
    /// ELB, RDS, CloudFormation.
    Query,
    /// The Resource Groups Tagging API.
    Json,
}

fn protocol(headers: &axum::http::HeaderMap, body: &[u8]) -> Protocol {
    if headers.contains_key("x-amz-target") {
        Protocol::Json
    } else if String::from_utf8_lossy(body).contains("Version=2016-11-15") {
        Protocol::Ec2
    } else {
        Protocol::Query
    }
}

fn throttled(protocol: Protocol) -> Response<Body> {
    match protocol {
        Protocol::Ec2 => {
            aws_error(protocol, StatusCode::SERVICE_UNAVAILABLE, "RequestLimitExceeded", "Request limit exceeded.")
        }
        Protocol::Query => aws_error(protocol, StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        Protocol::Json => aws_error(protocol, StatusCode::BAD_REQUEST, "ThrottledException", "Rate exceeded"),
    }
}

/// An error as EC2 (its own XML), the query-protocol services or the JSON ones send it.
fn aws_error(protocol: Protocol, status: StatusCode, code: &str, message: &str) -> Response<Body> {
    if protocol == Protocol::Json {
        let body = format!("{{\"__type\": \"{code}\", \"Message\": \"{message}\"}}");
        return Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", code)
            .body(Body::from(body))
            .unwrap();
    }
    let body = if protocol == Protocol::Ec2 {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
        )
    } else {
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        )
    };
    Response::builder().status(status).header("content-type", "text/xml").body(Body::from(body)).unwrap()
}

async fn handle(
    shared: &Shared,
    client: &reqwest::Client,
    upstream: &str,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body: Bytes = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    let action = action_of(&parts.headers, &body);
    shared.actions.lock().unwrap().push(action.clone());
    shared.bodies.lock().unwrap().push((action.clone(), String::from_utf8_lossy(&body).into_owned()));
    let fault = fault_for(shared, &action);
    if let Some(fault) = &fault {
        shared.injected.lock().unwrap().push((action.clone(), fault.clone()));
    }
    match &fault {
        Some(Fault::Throttle) => return Ok(throttled(protocol(&parts.headers, &body))),
        Some(Fault::Refuse(code)) => {
            let protocol = protocol(&parts.headers, &body);
            return Ok(aws_error(protocol, StatusCode::BAD_REQUEST, code, "refused by the fault proxy"));
        }
        Some(Fault::RefuseIfBodyHas { needle, code, message })
            if String::from_utf8_lossy(&body).contains(needle.as_str()) =>
        {
            let protocol = protocol(&parts.headers, &body);
            return Ok(aws_error(protocol, StatusCode::BAD_REQUEST, code, message));
        }
        Some(Fault::ServerError(code)) => {
            return Ok(Response::builder().status(*code).body(Body::from("<html>server error</html>")).unwrap());
        }
        // An error from the service makes hyper close the connection without answering.
        Some(Fault::Drop) => return Err(std::io::Error::other("dropped by the fault proxy")),
        Some(Fault::Latency(delay)) => tokio::time::sleep(*delay).await,
        Some(Fault::Pause) => {
            shared.paused.notify_one();
            shared.release.notified().await;
        }
        Some(
            Fault::KeepProvisioning | Fault::HoldAfterForwarding | Fault::Rewrite(_) | Fault::RefuseIfBodyHas { .. },
        )
        | None => {}
    }
    let request_text = String::from_utf8_lossy(&body).into_owned();
    let token = (action == "CreateVpcEndpointServiceConfiguration")
        .then(|| form_value(&request_text, "ClientToken"))
        .flatten()
        .filter(|_| shared.modelled.lock().unwrap().client_tokens);
    if let Some(answer) = token.as_ref().and_then(|t| shared.modelled.lock().unwrap().answers_by_token.get(t).cloned())
    {
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/xml")
            .body(Body::from(answer))
            .unwrap());
    }
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut forward = client.request(parts.method.clone(), format!("{upstream}{path}")).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            forward = forward.header(name, value);
        }
    }
    let answer = forward.send().await.map_err(std::io::Error::other)?;
    if fault == Some(Fault::HoldAfterForwarding) {
        shared.held.notify_one();
        std::future::pending::<()>().await;
    }
    let status = answer.status();
    let content_type = answer.headers().get("content-type").cloned();
    let mut text = answer.text().await.map_err(std::io::Error::other)?;
    if status.is_success() {
        let mut modelled = shared.modelled.lock().unwrap();
        if let Some(token) = token {
            modelled.answers_by_token.insert(token, text.clone());
        }
        if action == "CreateVpcEndpointServiceConfiguration"
            && let Some(id) = between(&text, "<serviceId>", "</serviceId>")
        {
            modelled.created_services.push((id.to_string(), Instant::now()));
        }
        if action == "DescribeVpcEndpointServiceConfigurations"
            && request_text.contains("Filter")
            && let Some(lag) = modelled.tag_filter_lag
        {
            let recent: Vec<String> = modelled
                .created_services
                .iter()
                .filter(|(_, at)| at.elapsed() < lag)
                .map(|(id, _)| id.clone())
                .collect();
            text = without_services(&text, &recent);
        }
    }
    match &fault {
        Some(Fault::KeepProvisioning) => text = text.replace("<Code>active</Code>", "<Code>provisioning</Code>"),
        Some(Fault::Rewrite(rewrite)) => text = (rewrite.0)(&text),
        _ => {}
    }
    let mut response = Response::builder().status(status);
    if let Some(content_type) = content_type {
        response = response.header("content-type", content_type);
    }
    Ok(response.body(Body::from(text)).unwrap())
}
