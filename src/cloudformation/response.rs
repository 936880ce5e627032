//! The body CloudFormation reads from the response URL.

use std::collections::BTreeMap;

use aws_lambda_events::cloudformation::{
    CloudFormationCustomResourceResponse, CloudFormationCustomResourceResponseStatus,
};

use tracing::warn;

use super::event::Envelope;

/// CloudFormation rejects larger bodies ("Response object is too long").
pub const MAX_BODY_BYTES: usize = 4096;
/// CloudFormation's own limit on a physical resource ID.
const MAX_PHYSICAL_ID_BYTES: usize = 1024;

/// What a resource hands back on success.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    pub physical_resource_id: String,
    /// Values for `Fn::GetAtt`; CloudFormation reads only strings.
    pub data: BTreeMap<String, String>,
}

#[derive(Debug)]
pub enum Outcome {
    Success(Success),
    Failed(String),
}

/// Renders the response body, within CloudFormation's size limit.
pub fn render(envelope: &Envelope, outcome: Outcome) -> String {
    let mut response = CloudFormationCustomResourceResponse::default();
    response.stack_id = envelope.stack_id.clone();
    response.request_id = envelope.request_id.clone();
    response.logical_resource_id = envelope.logical_resource_id.clone();
    match outcome {
        Outcome::Success(success) if valid_physical_id(&success.physical_resource_id) => {
            response.status = CloudFormationCustomResourceResponseStatus::Success;
            response.reason = Some(logs_hint());
            response.physical_resource_id = success.physical_resource_id;
            response.data = success.data.into_iter().collect();
        }
        Outcome::Success(success) => {
            response.status = CloudFormationCustomResourceResponseStatus::Failed;
            response.reason = Some(format!(
                "internal error: the resource returned an unusable physical ID ({} bytes)",
                success.physical_resource_id.len()
            ));
            response.physical_resource_id = physical_id_for_failure(envelope);
        }
        Outcome::Failed(reason) => {
            response.status = CloudFormationCustomResourceResponseStatus::Failed;
            response.reason = Some(reason);
            response.physical_resource_id = physical_id_for_failure(envelope);
        }
    }
    fit(response)
}

fn valid_physical_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_PHYSICAL_ID_BYTES
}

/// A failed Update or Delete keeps the resource's ID: a different one would read
/// as a replacement. A failed Create has none yet; CloudFormation will send a
/// Delete carrying whatever is given here, so it must not look like a real one.
fn physical_id_for_failure(envelope: &Envelope) -> String {
    match &envelope.physical_resource_id {
        Some(id) if valid_physical_id(id) => id.clone(),
        _ => {
            let mut id = format!("create-failed-{}", envelope.request_id);
            id.truncate(MAX_PHYSICAL_ID_BYTES);
            id
        }
    }
}

fn logs_hint() -> String {
    match (std::env::var("AWS_LAMBDA_LOG_GROUP_NAME"), std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")) {
        (Ok(group), Ok(stream)) => format!("See CloudWatch Logs: {group} {stream}"),
        _ => "OK".to_string(),
    }
}

/// Shortens `Data`'s longest values, then `Reason`, as little as needed for the body
/// to fit; should the rest alone be too large, answers FAILED without `Data` rather
/// than let CloudFormation drop the answer.
fn fit(mut response: CloudFormationCustomResourceResponse) -> String {
    let body = to_json(&response);
    if body.len() <= MAX_BODY_BYTES {
        return body;
    }
    shorten_data(&mut response);
    let body = to_json(&response);
    if body.len() <= MAX_BODY_BYTES {
        return body;
    }
    let reason = response.reason.take().unwrap_or_default();
    let cuts: Vec<usize> = reason.char_indices().map(|(i, _)| i).collect();
    let shortened = |keep: usize| format!("{}…", &reason[..cuts.get(keep).copied().unwrap_or(reason.len())]);
    // Escaping makes the JSON size of a prefix hard to predict, so search for the longest that fits.
    let (mut fits, mut too_long) = (None, cuts.len());
    let mut low = 0;
    while low < too_long {
        let mid = (low + too_long) / 2;
        response.reason = Some(shortened(mid));
        if to_json(&response).len() <= MAX_BODY_BYTES {
            fits = Some(mid);
            low = mid + 1;
        } else {
            too_long = mid;
        }
    }
    match fits {
        Some(keep) => response.reason = Some(shortened(keep)),
        None => {
            response.status = CloudFormationCustomResourceResponseStatus::Failed;
            response.data.clear();
            response.reason = Some("the response exceeded CloudFormation's 4096-byte limit".to_string());
        }
    }
    to_json(&response)
}

/// Halves the longest `Data` value until the body fits or no value is worth shortening:
/// a comma-separated list keeps its first items and says how many it left out, other
/// text is cut. The work succeeded; a shortened value beats a FAILED answer.
fn shorten_data(response: &mut CloudFormationCustomResourceResponse) {
    const WORTH_SHORTENING: usize = 64;
    while to_json(response).len() > MAX_BODY_BYTES {
        let Some((key, value)) = response
            .data
            .iter()
            .filter(|(_, value)| value.len() > WORTH_SHORTENING)
            .max_by_key(|(_, value)| value.len())
            .map(|(key, value)| (key.clone(), value.clone()))
        else {
            return;
        };
        let items: Vec<&str> = value.split(" (and ").next().unwrap_or_default().split(',').collect();
        let left_out: usize =
            value.rsplit_once(" (and ").and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok()).unwrap_or(0);
        let shortened = if items.len() > 1 {
            let keep = items.len() / 2;
            format!("{} (and {} more)", items[..keep].join(","), items.len() - keep + left_out)
        } else {
            let cut = value.char_indices().map(|(i, _)| i).nth(value.chars().count() / 2).unwrap_or(value.len());
            format!("{}…", &value[..cut])
        };
        warn!(key = %key, "shortened Data.{key} to fit CloudFormation's 4096-byte response");
        response.data.insert(key, shortened);
    }
}

fn to_json(response: &CloudFormationCustomResourceResponse) -> String {
    // Serializing plain strings and maps cannot fail.
    serde_json::to_string(response).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn envelope() -> Envelope {
        Envelope {
            request_id: "req-1".into(),
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/guid".into(),
            logical_resource_id: "Link".into(),
            ..Envelope::default()
        }
    }

    #[test]
    fn success_carries_id_and_data() {
        let data = BTreeMap::from([("ServiceId".to_string(), "vpce-svc-1".to_string())]);
        let body = render(&envelope(), Outcome::Success(Success { physical_resource_id: "vpce-svc-1".into(), data }));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["Status"], "SUCCESS");
        assert_eq!(v["PhysicalResourceId"], "vpce-svc-1");
        assert_eq!(v["Data"]["ServiceId"], "vpce-svc-1");
        assert_eq!(v["RequestId"], "req-1");
        assert_eq!(v["LogicalResourceId"], "Link");
        assert!(v["Reason"].is_string());
    }

    #[test]
    fn failed_create_gets_a_marker_id_and_failed_update_keeps_its_id() {
        let v: Value = serde_json::from_str(&render(&envelope(), Outcome::Failed("bad".into()))).unwrap();
        assert_eq!(v["Status"], "FAILED");
        assert_eq!(v["Reason"], "bad");
        assert_eq!(v["PhysicalResourceId"], "create-failed-req-1");
        let update = Envelope { physical_resource_id: Some("vpce-svc-9".into()), ..envelope() };
        let v: Value = serde_json::from_str(&render(&update, Outcome::Failed("bad".into()))).unwrap();
        assert_eq!(v["PhysicalResourceId"], "vpce-svc-9");
    }

    #[test]
    fn long_reasons_are_cut_to_fit_4096_bytes() {
        for filler in ["x", "é", "\"", "\u{1}"] {
            let reason = filler.repeat(10_000);
            let body = render(&envelope(), Outcome::Failed(reason));
            assert!(body.len() <= MAX_BODY_BYTES, "{filler}: {}", body.len());
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["Status"], "FAILED");
            assert!(v["Reason"].as_str().unwrap().ends_with('…'));
            assert!(body.len() > MAX_BODY_BYTES - 16, "cut more than needed: {}", body.len());
        }
    }

    #[test]
    fn long_data_lists_are_shortened_with_a_note_not_failed() {
        let ips: Vec<String> = (0..50).map(|i| format!("100.127.255.{}", 200 + i)).collect();
        let data = BTreeMap::from([
            ("TargetIps".to_string(), ips.join(",")),
            (
                "TargetHealth".to_string(),
                ips.iter()
                    .map(|ip| format!("{ip}: unhealthy: Target.FailedHealthChecks (Health checks failed)"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("ServiceId".to_string(), "vpce-svc-1".to_string()),
        ]);
        let body = render(&envelope(), Outcome::Success(Success { physical_resource_id: "vpce-svc-1".into(), data }));
        assert!(body.len() <= MAX_BODY_BYTES, "{}", body.len());
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["Status"], "SUCCESS");
        assert_eq!(v["Data"]["ServiceId"], "vpce-svc-1", "short values stay whole");
        let health = v["Data"]["TargetHealth"].as_str().unwrap();
        assert!(health.starts_with("100.127.255.200: unhealthy") && health.ends_with(" more)"), "{health}");
        let shown = health.split(" (and ").next().unwrap().split(',').count();
        let more: usize = health.rsplit_once(" (and ").unwrap().1.split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(shown + more, 50, "{health}");
    }

    #[test]
    fn oversized_data_becomes_a_failure_that_fits() {
        let data = (0..200).map(|i| (format!("Key{i}"), "v".repeat(40))).collect();
        let body = render(&envelope(), Outcome::Success(Success { physical_resource_id: "vpce-svc-1".into(), data }));
        assert!(body.len() <= MAX_BODY_BYTES);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["Status"], "FAILED");
    }
}
