//! The one PUT that tells CloudFormation how the request went.

use std::time::Duration;

use reqwest::{StatusCode, Url, header::CONTENT_TYPE};
use tokio::time::Instant;
use tracing::{info, warn};

use super::event::redact;

/// Delivers response bodies to presigned response URLs.
#[derive(Clone, Debug)]
pub struct ResponseSender {
    client: reqwest::Client,
    max_attempts: u32,
    first_backoff: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The URL answered, and no retry will change its mind (expired or forged URL).
    #[error("the response URL refused the response: HTTP {status}{code}")]
    Refused { status: StatusCode, code: String },
    /// Connection errors or server errors until attempts or time ran out.
    #[error("the response could not be delivered in {attempts} attempts; last error: {last}")]
    GaveUp { attempts: u32, last: String },
}

impl DeliveryError {
    /// Whether Lambda's own retry of the whole event might still get the answer through.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeliveryError::GaveUp { .. })
    }
}

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(4);

impl ResponseSender {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(ResponseSender { client, max_attempts: 6, first_backoff: Duration::from_millis(250) })
    }

    /// Tries up to `max_attempts` times, the first pause lasting `first_backoff` and each next twice as long.
    pub fn with_retries(mut self, max_attempts: u32, first_backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.first_backoff = first_backoff;
        self
    }

    /// PUTs `body` to `url`, retrying connection errors and 5xx answers with
    /// backoff, and giving up in time to finish by `finish_by`.
    pub async fn deliver(&self, url: &Url, body: String, finish_by: Instant) -> Result<(), DeliveryError> {
        let shown = redact(url);
        let mut backoff = self.first_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let time_left = finish_by.saturating_duration_since(Instant::now());
            let request = self
                .client
                .put(url.clone())
                // The presigned URL was signed without a content type; sending one breaks the signature.
                .header(CONTENT_TYPE, "")
                .body(body.clone())
                .timeout(ATTEMPT_TIMEOUT.min(time_left).max(Duration::from_millis(100)));
            let last = match request.send().await {
                Ok(answer) if answer.status().is_success() => {
                    info!(url = %shown, status = answer.status().as_u16(), attempt, "response delivered to CloudFormation");
                    return Ok(());
                }
                Ok(answer) if is_retryable(answer.status()) => format!("HTTP {}", answer.status()),
                Ok(answer) => {
                    let status = answer.status();
                    // Only the error code: an S3 error body can echo the signature back.
                    let code = answer
                        .text()
                        .await
                        .ok()
                        .and_then(|text| s3_error_code(&text))
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default();
                    return Err(DeliveryError::Refused { status, code });
                }
                Err(err) => error_chain(&err.without_url()),
            };
            let out_of_time = Instant::now() + backoff >= finish_by;
            if attempt >= self.max_attempts || out_of_time {
                return Err(DeliveryError::GaveUp { attempts: attempt, last });
            }
            warn!(url = %shown, attempt, error = %last, "response delivery failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

fn s3_error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = start + body[start..].find("</Code>")?;
    Some(body[start..end].chars().take(64).collect())
}

/// "error sending request: connection refused", not just the outermost message.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_code_is_read_without_the_rest() {
        let body = "<Error><Code>SignatureDoesNotMatch</Code><SignatureProvided>secret</SignatureProvided></Error>";
        assert_eq!(s3_error_code(body).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(s3_error_code("nope"), None);
    }
}
