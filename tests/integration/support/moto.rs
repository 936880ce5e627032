//! A moto server of the test's own, on a free loopback port, so tests can count
//! what exists without seeing each other's resources.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const REGION: &str = "us-east-1";

pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

/// The Python with moto: `MOTO_PYTHON`, or the project's `.venv` that `make test` prepares.
fn moto_python() -> PathBuf {
    std::env::var_os("MOTO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// moto server with the AWS behaviour it lacks and the tests rely on (see the script).
fn moto_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/moto_server.py")
}

impl Moto {
    /// Starts a server on a port it binds itself and reports (`-p 0`): a port picked here
    /// and bound there could meanwhile be taken by another test's server, which would
    /// then answer for both.
    pub async fn start() -> Moto {
        let python = moto_python();
        assert!(python.exists(), "{} not found: run the tests with `make test`, which installs moto", python.display());
        let mut child = Command::new(&python)
            .arg(moto_script())
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        let read = stdout.read_line(&mut first);
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("moto server did not report its port")
            .unwrap();
        let port: u16 = first.trim().parse().unwrap_or_else(|_| panic!("moto server reported {first:?}, not a port"));
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if reqwest::get(format!("{endpoint}/moto-api/")).await.is_ok_and(|r| r.status().is_success()) {
                return Moto { endpoint, _child: child };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto server did not answer on port {port}");
    }

    /// SDK settings as the function uses them, pointed at this server.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.sdk_config_at(&self.endpoint).await
    }

    /// The same settings pointed elsewhere (a fault-injecting proxy, say).
    pub async fn sdk_config_at(&self, endpoint: &str) -> SdkConfig {
        self.loader(endpoint).load().await
    }

    /// Pointed at `endpoint`, giving up after `attempts` tries with short pauses:
    /// for tests of persistent failures, which the SDK would otherwise retry for a minute.
    pub async fn sdk_config_impatient(&self, endpoint: &str, attempts: u32) -> SdkConfig {
        let retries = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(attempts)
            .with_initial_backoff(Duration::from_millis(20))
            .with_max_backoff(Duration::from_millis(100));
        self.loader(endpoint).retry_config(retries).load().await
    }

    fn loader(&self, endpoint: &str) -> aws_config::ConfigLoader {
        reverse_privatelink::aws_config_loader()
            .endpoint_url(endpoint)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
    }
}
