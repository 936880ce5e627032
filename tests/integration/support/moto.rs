//! A moto server of the test's own, on a free loopback port, so tests can count
//! what exists without seeing each other's resources. It authorizes every request as
//! AWS would, with the template's policies (scripts/iam/emulator.py): the builder and
//! the follower sign with keys of their own, mapped to their roles; the test's own
//! clients sign with the `admin` key, which is not checked.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const REGION: &str = "us-east-1";

/// The access keys of the template's two roles, and the test's own.
pub const BUILDER_KEY: &str = "builder";
pub const FOLLOWER_KEY: &str = "follower";
pub const ADMIN_KEY: &str = "admin";

pub struct Moto {
    pub endpoint: String,
    /// Every refused authorization, one JSON object per line.
    denials: tempfile::NamedTempFile,
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
        let denials = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(&python)
            .arg(moto_script())
            .args(["-H", "127.0.0.1", "-p", "0", "--denials"])
            .arg(denials.path())
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
                return Moto { endpoint, denials, _child: child };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto server did not answer on port {port}");
    }

    /// The test's own settings: the `admin` key, which the emulator does not check.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.loader(&self.endpoint, ADMIN_KEY).load().await
    }

    /// Settings as the function uses them, signing with `key`, pointed at `endpoint` (this
    /// server, or a fault-injecting proxy in front of it).
    pub async fn sdk_config_as(&self, key: &str, endpoint: &str) -> SdkConfig {
        self.loader(endpoint, key).load().await
    }

    /// The same, giving up after `attempts` tries with short pauses: for tests of
    /// persistent failures, which the SDK would otherwise retry for a minute.
    pub async fn sdk_config_impatient(&self, key: &str, endpoint: &str, attempts: u32) -> SdkConfig {
        let retries = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(attempts)
            .with_initial_backoff(Duration::from_millis(20))
            .with_max_backoff(Duration::from_millis(100));
        self.loader(endpoint, key).retry_config(retries).load().await
    }

    fn loader(&self, endpoint: &str, key: &str) -> aws_config::ConfigLoader {
        reverse_privatelink::aws_config_loader()
            .endpoint_url(endpoint)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(key, "testing", None, None, "test"))
    }

    /// Maps `keys` (the builder's and the follower's) to the template's roles for `stack_id`,
    /// or updates what the policies are rendered with: the custom resources' answers
    /// (`DatabaseSecurityGroups.Arns`...), once CloudFormation has them.
    pub async fn deploy_stack(&self, stack_id: &str, attributes: &Value, keys: Option<(&str, &str)>) {
        let keys = keys.map(|(builder, follower)| json!({builder: "FunctionRole", follower: "FollowerRole"}));
        self.register(json!({"stack_id": stack_id, "attributes": attributes, "keys": keys.unwrap_or(json!({}))})).await;
    }

    /// Sets template parameters of `stack_id` (deployed already), re-rendering its roles' policies.
    pub async fn set_parameters(&self, stack_id: &str, parameters: &Value) {
        self.register(json!({"stack_id": stack_id, "parameters": parameters})).await;
    }

    async fn register(&self, body: Value) {
        let url = format!("{}/_iam/principals", self.endpoint);
        let answer = reqwest::Client::new().post(url).body(body.to_string()).send().await;
        assert!(answer.is_ok_and(|a| a.status().is_success()), "the emulator did not take the stack: {body}");
    }

    /// The authorizations refused so far: each names the role, the request, the action and
    /// resource refused, and the statement that came nearest.
    pub fn denials(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.denials.path()).unwrap_or_default();
        text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// Forgets the refusals so far (a test that provoked one on purpose).
    pub fn forget_denials(&self) {
        std::fs::write(self.denials.path(), "").unwrap();
    }
}

impl Drop for Moto {
    /// A refusal the test did not expect fails it, naming what was refused: the template's
    /// policies must allow everything the functions do.
    fn drop(&mut self) {
        let denials = self.denials();
        if denials.is_empty() {
            return;
        }
        let lines: Vec<String> = denials.iter().map(Value::to_string).collect();
        let refused = format!("the emulator refused {} request(s) as AWS would:\n{}", denials.len(), lines.join("\n"));
        // A test failing on what a refusal caused still says what was refused.
        match std::thread::panicking() {
            true => eprintln!("{refused}"),
            false => panic!("{refused}"),
        }
    }
}
