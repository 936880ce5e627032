//! A Lambda Runtime API, enough to run the built binary as Lambda would: it
//! hands out one event at a time and records how each invocation ended.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc};

/// How the runtime heard an invocation end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Response(String),
    Error(String),
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<(String, Bytes, u64)>>,
    queued: Notify,
    ended: Mutex<HashMap<String, Ended>>,
    ended_notify: Notify,
}

pub struct RuntimeApi {
    pub address: String,
    shared: Arc<Shared>,
    counter: std::sync::atomic::AtomicUsize,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        RuntimeApi { address, shared, counter: Default::default() }
    }

    /// Queues `payload` as the next invocation, with `timeout` until its deadline,
    /// and waits for the function to finish it.
    pub async fn invoke(&self, payload: impl Into<Bytes>, timeout: Duration) -> Ended {
        let id = self.submit(payload, timeout);
        self.ended(&id, timeout).await
    }

    /// Queues `payload` as the next invocation without waiting; returns its ID.
    pub fn submit(&self, payload: impl Into<Bytes>, timeout: Duration) -> String {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("invocation-{n}");
        let deadline = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + timeout).as_millis() as u64;
        self.shared.queue.lock().unwrap().push_back((id.clone(), payload.into(), deadline));
        self.shared.queued.notify_one();
        id
    }

    /// Waits until invocation `id` ended.
    pub async fn ended(&self, id: &str, timeout: Duration) -> Ended {
        let wait = async {
            loop {
                let notified = self.shared.ended_notify.notified();
                if let Some(ended) = self.shared.ended.lock().unwrap().get(id) {
                    return ended.clone();
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout + Duration::from_secs(30), wait)
            .await
            .expect("the function never finished the invocation")
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    loop {
        let notified = shared.queued.notified();
        if let Some((id, body, deadline)) = shared.queue.lock().unwrap().pop_front() {
            let mut headers = HeaderMap::new();
            headers.insert("Lambda-Runtime-Aws-Request-Id", HeaderValue::from_str(&id).unwrap());
            headers.insert("Lambda-Runtime-Deadline-Ms", HeaderValue::from(deadline));
            headers.insert(
                "Lambda-Runtime-Invoked-Function-Arn",
                HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:reverse-privatelink"),
            );
            headers.insert(
                "Lambda-Runtime-Trace-Id",
                HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
            );
            return (StatusCode::OK, headers, body);
        }
        notified.await;
    }
}

fn end(shared: &Shared, id: String, ended: Ended) -> StatusCode {
    shared.ended.lock().unwrap().insert(id, ended);
    shared.ended_notify.notify_waiters();
    StatusCode::ACCEPTED
}

async fn response(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: String) -> StatusCode {
    end(&shared, id, Ended::Response(body))
}

async fn error(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: String) -> StatusCode {
    end(&shared, id, Ended::Error(body))
}

async fn init_error(body: String) -> StatusCode {
    panic!("the function failed to start: {body}");
}

/// The built function, started against `runtime` with `env` added.
pub struct Process {
    child: Child,
    output: mpsc::UnboundedReceiver<String>,
    lines: Vec<String>,
}

impl Process {
    pub fn start<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        runtime: &RuntimeApi,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Process {
        let binary = Path::new(env!("CARGO_BIN_EXE_reverse-privatelink"));
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", &runtime.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", "reverse-privatelink")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_REGION", super::moto::REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let (sender, output) = mpsc::unbounded_channel();
        for mut stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let _ = stream.read_to_end(&mut buffer).await;
                let _ = sender.send(String::from_utf8_lossy(&buffer).into_owned());
            });
        }
        Process { child, output, lines: Vec::new() }
    }

    /// Stops the function and returns everything it wrote.
    pub async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        while let Some(chunk) = self.output.recv().await {
            self.lines.push(chunk);
        }
        self.lines.concat()
    }
}
