//! The built binary, run as Lambda runs it: through a Runtime API, answering an
//! https response URL whose certificate only a throwaway CA vouches for.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::harness::{Harness, SECOND_CONSUMER};
use crate::support::http::{Server, Tls};
use crate::support::runtime::{Ended, Process, RuntimeApi};

#[tokio::test]
async fn the_binary_creates_updates_and_deletes_through_the_runtime_api_over_https() {
    let h = Harness::new().await;
    let tls = Tls::new();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &tls.ca_pem).unwrap();
    let cloudformation = Server::https(&tls).await;
    let runtime = RuntimeApi::start().await;
    let mut env = h.binary_env(&h.moto.endpoint);
    env.push(("SSL_CERT_FILE".into(), ca.path().to_str().unwrap().into()));
    let process = Process::start(&runtime, env);

    let over_https = |mut event: Value| {
        let request_id = event["RequestId"].as_str().unwrap().to_string();
        event["ResponseURL"] = json!(cloudformation.url(&format!("responses/{request_id}")));
        event
    };
    let mut answers = 0;
    let mut run = async |event: Value| -> Value {
        let ended = runtime.invoke(serde_json::to_vec(&event).unwrap(), Duration::from_secs(120)).await;
        assert_eq!(ended, Ended::Response("null".into()), "the invocation must end well for the runtime");
        answers += 1;
        let recorded = cloudformation.wait_for(answers, Duration::from_secs(10)).await;
        assert_eq!(recorded.len(), answers, "one answer per event");
        recorded[answers - 1].json()
    };

    let props = h.properties();
    let created = run(over_https(h.create_event(&props))).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let id = created["PhysicalResourceId"].as_str().unwrap().to_string();
    assert!(id.starts_with("vpce-svc-"));
    assert_eq!(created["Data"]["AvailabilityZoneIds"], h.seed.zone_ids.join(","));

    let mut more = props.clone();
    more["AllowedPrincipals"] = json!([crate::support::harness::CONSUMER, SECOND_CONSUMER]);
    let updated = run(over_https(h.update_event(&id, &props, &more))).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(updated["PhysicalResourceId"], id.as_str());
    assert_eq!(h.chain(&updated).await.principals.len(), 2);

    let deleted = run(over_https(h.delete_event(&id, &more))).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert!(h.inventory().await.is_empty());

    // Events that cannot be answered still end their invocation cleanly.
    for unanswerable in [&b"{\"RequestType\": \"Create\"}"[..], &b"not json at all"[..]] {
        let ended = runtime.invoke(unanswerable.to_vec(), Duration::from_secs(30)).await;
        assert_eq!(ended, Ended::Response("null".into()));
    }
    assert_eq!(cloudformation.recorded().len(), answers);

    let logs = process.stop().await;
    assert!(!logs.contains("SECRET-SIGNATURE"), "the presigned signature leaked into the logs:\n{logs}");
    assert!(logs.contains("response delivered"), "{logs}");
    assert!(logs.contains("no usable ResponseURL") && logs.contains("not JSON"), "{logs}");
    let first = logs.lines().find(|line| line.starts_with('{')).expect("JSON log lines");
    serde_json::from_str::<Value>(first).expect("JSON logs when Lambda asks for them");
}
