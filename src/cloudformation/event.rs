//! Reading the event CloudFormation sent, even when it is malformed: whatever can
//! be read is needed to answer, and an event that cannot be answered must still
//! end its invocation cleanly.

use aws_lambda_events::cloudformation::CloudFormationCustomResourceRequest;
use reqwest::Url;
use serde_json::Value;

/// A custom-resource request with its properties still untyped: typing them is
/// the resource's job, and a bad property must become a FAILED answer, not a
/// deserialization error the runtime would retry.
pub type Request = CloudFormationCustomResourceRequest<Value, Value>;

/// The fields a response copies back, read one by one so that a malformed event
/// still yields as much of an answer as it allows.
#[derive(Debug, Default, Clone)]
pub struct Envelope {
    pub response_url: Option<Url>,
    pub request_type: String,
    pub request_id: String,
    pub stack_id: String,
    pub logical_resource_id: String,
    pub physical_resource_id: Option<String>,
}

impl Envelope {
    pub fn read(event: &Value) -> Self {
        let text = |field: &str| event.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
        Envelope {
            response_url: event
                .get("ResponseURL")
                .and_then(Value::as_str)
                .and_then(|url| Url::parse(url).ok())
                .filter(|url| matches!(url.scheme(), "https" | "http") && url.host().is_some()),
            request_type: text("RequestType"),
            request_id: text("RequestId"),
            stack_id: text("StackId"),
            logical_resource_id: text("LogicalResourceId"),
            physical_resource_id: event
                .get("PhysicalResourceId")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map(str::to_string),
        }
    }
}

/// Types the event, naming the field that is wrong when it cannot.
pub fn parse(event: Value) -> Result<Request, String> {
    match event.get("RequestType") {
        Some(Value::String(kind)) if matches!(kind.as_str(), "Create" | "Update" | "Delete") => {}
        Some(other) => return Err(format!("RequestType: {other} is not Create, Update or Delete")),
        None => return Err("RequestType: missing from the event".to_string()),
    }
    serde_json::from_value(event).map_err(|err| format!("malformed CloudFormation event: {err}"))
}

/// The response URL as it may be logged: a presigned URL's query string is its
/// signature, and whoever reads it can forge the stack's answer.
pub fn redact(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redaction_drops_the_signature_and_credentials() {
        let url = Url::parse(
            "https://user:pw@bucket.s3.amazonaws.com:8443/arn%3Aaws/x?X-Amz-Signature=abc&X-Amz-Credential=k",
        )
        .unwrap();
        let shown = redact(&url);
        assert_eq!(shown, "https://bucket.s3.amazonaws.com:8443/arn%3Aaws/x");
        assert!(!shown.contains("Signature") && !shown.contains("pw"));
    }

    #[test]
    fn envelope_reads_what_a_malformed_event_has() {
        let envelope = Envelope::read(&json!({"ResponseURL": "https://s3/x?sig=1", "RequestId": "r1", "StackId": 7}));
        assert_eq!(envelope.response_url.unwrap().as_str(), "https://s3/x?sig=1");
        assert_eq!(envelope.request_id, "r1");
        assert_eq!(envelope.stack_id, "");
        for unusable in [
            json!({}),
            json!({"ResponseURL": "not a url"}),
            json!({"ResponseURL": "ftp://h/x"}),
            json!({"ResponseURL": 3}),
        ] {
            assert!(Envelope::read(&unusable).response_url.is_none(), "{unusable}");
        }
    }

    #[test]
    fn parse_names_the_bad_field() {
        let base = json!({"RequestType": "Update", "ResponseURL": "https://h/x", "StackId": "s", "RequestId": "r",
            "ResourceType": "Custom::X", "LogicalResourceId": "L", "PhysicalResourceId": "p", "ResourceProperties": {}});
        let err = parse(base.clone()).unwrap_err();
        assert!(err.contains("OldResourceProperties"), "{err}");
        let mut wrong = base.clone();
        wrong["RequestType"] = json!("Destroy");
        assert!(parse(wrong).unwrap_err().starts_with("RequestType:"));
        let mut missing = base;
        missing.as_object_mut().unwrap().remove("RequestType");
        assert!(parse(missing).unwrap_err().starts_with("RequestType:"));
    }
}
