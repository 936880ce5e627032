//! A small HTTP(S) server for tests: records requests, and can fail the next
//! ones with a status or by dropping the connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A throwaway certificate authority and a server certificate for localhost.
pub struct Tls {
    pub ca_pem: String,
    acceptor: TlsAcceptor,
}

impl Tls {
    pub fn new() -> Tls {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "reverse-privatelink test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        Tls { ca_pem: ca_cert.pem(), acceptor: TlsAcceptor::from(Arc::new(config)) }
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Shared {
    recorded: Mutex<Vec<Recorded>>,
    fail_with_status: AtomicUsize,
    status: Mutex<Option<StatusCode>>,
    drop_connections: AtomicUsize,
    attempts: AtomicUsize,
    hold_next: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

/// Answers every request 200 unless told to fail; keeps what it received.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub scheme: &'static str,
    shared: Arc<Shared>,
}

impl Server {
    pub async fn http() -> Server {
        Self::http_on(0).await
    }

    pub async fn http_on(port: u16) -> Server {
        Self::start(None, TcpListener::bind(("127.0.0.1", port)).await.unwrap())
    }

    pub async fn https(tls: &Tls) -> Server {
        Self::start(Some(tls.acceptor.clone()), TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn start(tls: Option<TlsAcceptor>, listener: TcpListener) -> Server {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(record).with_state(shared.clone());
        let accept_shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                if take_one(&accept_shared.drop_connections) {
                    accept_shared.attempts.fetch_add(1, Ordering::SeqCst);
                    drop(tcp);
                    continue;
                }
                let service = TowerToHyperService::new(app.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    // One request per connection, so dropping "the next connections" drops the next requests.
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().keep_alive(false);
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Server { addr, scheme, shared }
    }

    /// A URL on this server, with a query string standing in for a presigned signature.
    pub fn url(&self, path: &str) -> String {
        let host =
            if self.scheme == "https" { format!("localhost:{}", self.addr.port()) } else { self.addr.to_string() };
        format!("{}://{host}/{path}?X-Amz-Signature=SECRET-SIGNATURE-{path}", self.scheme)
    }

    /// The next `n` requests get `status`.
    pub fn fail_next(&self, n: usize, status: StatusCode) {
        *self.shared.status.lock().unwrap() = Some(status);
        self.shared.fail_with_status.store(n, Ordering::SeqCst);
    }

    /// The next request is recorded but never answered: the moment to kill the
    /// function right after CloudFormation got its answer.
    pub fn hold_next(&self) {
        self.shared.hold_next.store(true, Ordering::SeqCst);
    }

    /// The next `n` connections are closed before a response.
    pub fn drop_next(&self, n: usize) {
        self.shared.drop_connections.store(n, Ordering::SeqCst);
    }

    /// Requests made so far, counting a dropped connection as one: failed and answered alike.
    pub fn attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// Waits until `n` requests were answered 200 and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            let recorded = self.recorded();
            if recorded.len() >= n {
                return recorded;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.recorded();
            }
        }
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    shared.attempts.fetch_add(1, Ordering::SeqCst);
    if take_one(&shared.fail_with_status) {
        let status = shared.status.lock().unwrap().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "<Error><Code>InternalError</Code></Error>").into_response();
    }
    shared.recorded.lock().unwrap().push(Recorded { method, uri, headers, body });
    shared.notify.notify_waiters();
    if shared.hold_next.swap(false, Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    StatusCode::OK.into_response()
}
