//! What can go wrong in one chat-completions call, and the one place it becomes lash's
//! transport error, with the key scrubbed out.

use std::time::Duration;

use lash_core::LlmTerminalReason;
use lash_core::llm::transport::{LlmTransportError, ProviderFailureKind};

use super::config::ApiKey;

/// What replaces the key wherever it would appear in text.
pub const REDACTED: &str = "[redacted]";

/// Which failure an [`OpenAiError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenAiErrorKind {
    /// The endpoint answered with a non-2xx status other than 429.
    Status,
    /// The endpoint answered 429 (rate limit or quota).
    RateLimited,
    /// The response body (or a stream chunk) is not what the API documents.
    MalformedBody,
    /// The stream carried an error object instead of a chunk.
    StreamError,
    /// lash's request has something chat completions cannot carry.
    UnsupportedRequest,
    /// The HTTP transport failed (connect, TLS, timeout, read).
    Transport,
}

/// A failed chat-completions call.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    /// A non-2xx status other than 429.
    #[error("the chat-completions endpoint answered HTTP {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The API's error message (or the body when it has none).
        message: String,
        /// The API's error code (`error.code` / `error.type`), when given.
        code: Option<String>,
        /// The response body.
        body: String,
        /// The response headers.
        headers: Vec<(String, String)>,
    },
    /// HTTP 429.
    #[error("the chat-completions endpoint is rate limiting (HTTP 429){}: {message}", retry_hint(*retry_after))]
    RateLimited {
        /// How long the endpoint asks to wait (`retry-after-ms` or `retry-after`).
        retry_after: Option<Duration>,
        /// The API's error message.
        message: String,
        /// The API's error code, when given.
        code: Option<String>,
        /// The response body.
        body: String,
        /// The response headers.
        headers: Vec<(String, String)>,
    },
    /// The body is not what the API documents.
    #[error(
        "the chat-completions response is malformed ({reason}); check that the base URL points at an OpenAI-compatible API"
    )]
    MalformedBody {
        /// What was wrong.
        reason: String,
        /// The offending body or chunk.
        body: String,
    },
    /// An error object arrived in the stream.
    #[error("the chat-completions stream reported an error: {message}")]
    StreamError {
        /// The API's error message.
        message: String,
        /// The API's error code, when given.
        code: Option<String>,
        /// The chunk.
        body: String,
    },
    /// lash's request cannot be expressed in chat completions.
    #[error("the request cannot be sent as chat completions: {reason}")]
    UnsupportedRequest {
        /// What cannot be expressed.
        reason: String,
    },
    /// lash's HTTP transport failed.
    #[error("the HTTP transport failed: {}", .0.message)]
    Transport(LlmTransportError),
}

fn retry_hint(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |wait| format!(", retry after {} ms", wait.as_millis()))
}

impl OpenAiError {
    /// Which failure this is.
    pub fn kind(&self) -> OpenAiErrorKind {
        match self {
            Self::Status { .. } => OpenAiErrorKind::Status,
            Self::RateLimited { .. } => OpenAiErrorKind::RateLimited,
            Self::MalformedBody { .. } => OpenAiErrorKind::MalformedBody,
            Self::StreamError { .. } => OpenAiErrorKind::StreamError,
            Self::UnsupportedRequest { .. } => OpenAiErrorKind::UnsupportedRequest,
            Self::Transport(_) => OpenAiErrorKind::Transport,
        }
    }

    /// A failed response: 429 is [`RateLimited`](Self::RateLimited), anything else
    /// [`Status`](Self::Status). The message comes from the API's `error` object.
    pub fn from_status(status: u16, headers: Vec<(String, String)>, body: String) -> Self {
        let (message, code) = error_object(&body).unwrap_or_else(|| (body.trim().to_owned(), None));
        if status == 429 {
            Self::RateLimited { retry_after: retry_after(&headers), message, code, body, headers }
        } else {
            Self::Status { status, message, code, body, headers }
        }
    }

    /// lash's transport error for this failure, with every occurrence of `key` replaced
    /// by [`REDACTED`] in its message, raw body, code and headers. The provider converts
    /// its errors here and nowhere else.
    pub fn into_transport_error(self, key: Option<&ApiKey>) -> LlmTransportError {
        let scrub = |text: &str| scrub(text, key);
        let message = scrub(&self.to_string());
        let error = match self {
            Self::Status { status, code, body, headers, .. } => LlmTransportError::new(message)
                .with_kind(ProviderFailureKind::Http)
                .with_status(status)
                .retryable(matches!(status, 408 | 409 | 425 | 500 | 502 | 503 | 504))
                .with_raw(scrub(&body))
                .with_headers(scrub_headers(headers, key))
                .with_code_opt(code.as_deref().map(scrub)),
            Self::RateLimited { retry_after, code, body, headers, .. } => {
                let error = LlmTransportError::new(message)
                    .with_kind(ProviderFailureKind::Quota)
                    .with_status(429)
                    .retryable(true)
                    .with_raw(scrub(&body))
                    .with_headers(scrub_headers(headers, key))
                    .with_code_opt(code.as_deref().map(scrub));
                match retry_after {
                    Some(wait) => error.with_retry_after(wait),
                    None => error,
                }
            }
            Self::MalformedBody { body, .. } => LlmTransportError::new(message)
                .with_kind(ProviderFailureKind::Stream)
                .with_code("malformed_body")
                .with_raw(scrub(&body)),
            Self::StreamError { code, body, .. } => LlmTransportError::new(message)
                .with_kind(ProviderFailureKind::Stream)
                .with_raw(scrub(&body))
                .with_code_opt(code.as_deref().map(scrub)),
            Self::UnsupportedRequest { .. } => LlmTransportError::new(message)
                .with_kind(ProviderFailureKind::Validation)
                .with_code("unsupported_request"),
            Self::Transport(inner) => {
                let mut error = inner;
                error.message = message;
                error.raw = error.raw.map(|raw| Box::new(scrub(&raw)));
                error.request_body = error.request_body.map(|body| scrub(&body));
                let headers = std::mem::take(&mut *error.headers);
                *error.headers = scrub_headers(headers, key);
                error
            }
        };
        error.with_terminal_reason(LlmTerminalReason::ProviderError)
    }
}

trait WithCodeOpt {
    fn with_code_opt(self, code: Option<String>) -> Self;
}

impl WithCodeOpt for LlmTransportError {
    fn with_code_opt(self, code: Option<String>) -> Self {
        match code {
            Some(code) => self.with_code(code),
            None => self,
        }
    }
}

/// `text` with every occurrence of the key replaced by [`REDACTED`].
pub fn scrub(text: &str, key: Option<&ApiKey>) -> String {
    match key.map(ApiKey::expose).filter(|key| !key.is_empty()) {
        Some(key) => text.replace(key, REDACTED),
        None => text.to_owned(),
    }
}

fn scrub_headers(headers: Vec<(String, String)>, key: Option<&ApiKey>) -> Vec<(String, String)> {
    headers.into_iter().map(|(name, value)| (name, scrub(&value, key))).collect()
}

/// `(message, code)` of the API's `{"error": {"message", "code" | "type"}}` body.
pub fn error_object(body: &str) -> Option<(String, Option<String>)> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let error = value.get("error")?;
    if let Some(message) = error.as_str() {
        return Some((message.to_owned(), None));
    }
    let message = error.get("message")?.as_str()?.to_owned();
    let code = ["code", "type"].iter().find_map(|field| match error.get(*field) {
        Some(serde_json::Value::String(code)) => Some(code.clone()),
        Some(serde_json::Value::Number(code)) => Some(code.to_string()),
        _ => None,
    });
    Some((message, code))
}

/// How long the endpoint asks to wait: `retry-after-ms` (OpenAI) first, then
/// `retry-after` in whole or fractional seconds.
pub fn retry_after(headers: &[(String, String)]) -> Option<Duration> {
    let header = |name: &str| {
        headers.iter().find(|(header, _)| header.eq_ignore_ascii_case(name)).map(|(_, value)| value.trim())
    };
    if let Some(ms) = header("retry-after-ms").and_then(|value| value.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let seconds = header("retry-after")?.parse::<f64>().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    /// Response headers, and the wait they ask for.
    type Case = (&'static [(&'static str, &'static str)], Option<Duration>);

    #[test]
    fn retry_after_table() {
        let cases: &[Case] = &[
            (&[], None),
            (&[("Retry-After", "3")], Some(Duration::from_secs(3))),
            (&[("retry-after", "1.5")], Some(Duration::from_millis(1500))),
            (&[("retry-after-ms", "250"), ("retry-after", "9")], Some(Duration::from_millis(250))),
            (&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], None),
            (&[("retry-after", "-1")], None),
        ];
        for (pairs, expected) in cases {
            assert_eq!(retry_after(&headers(pairs)), *expected, "{pairs:?}");
        }
    }

    #[test]
    fn error_object_table() {
        let cases = [
            (
                r#"{"error":{"message":"bad","type":"invalid_request_error"}}"#,
                Some(("bad", Some("invalid_request_error"))),
            ),
            (
                r#"{"error":{"message":"m","code":"rate_limit_exceeded","type":"requests"}}"#,
                Some(("m", Some("rate_limit_exceeded"))),
            ),
            (r#"{"error":"model not found"}"#, Some(("model not found", None))),
            ("<html>502</html>", None),
        ];
        for (body, expected) in cases {
            let expected = expected.map(|(message, code)| (message.to_owned(), code.map(str::to_owned)));
            assert_eq!(error_object(body), expected, "{body}");
        }
    }

    #[test]
    fn status_classification_table() {
        let cases = [
            (429, OpenAiErrorKind::RateLimited, ProviderFailureKind::Quota, true),
            (401, OpenAiErrorKind::Status, ProviderFailureKind::Http, false),
            (400, OpenAiErrorKind::Status, ProviderFailureKind::Http, false),
            (503, OpenAiErrorKind::Status, ProviderFailureKind::Http, true),
        ];
        for (status, kind, transport_kind, retryable) in cases {
            let error = OpenAiError::from_status(status, Vec::new(), "{}".into());
            assert_eq!(error.kind(), kind, "{status}");
            let transport = error.into_transport_error(None);
            assert_eq!(
                (transport.kind, transport.retryable, transport.status),
                (transport_kind, retryable, Some(status))
            );
        }
    }

    #[test]
    fn the_key_is_scrubbed_from_every_field_of_the_transport_error() {
        let key = ApiKey::new("sk-live-abc");
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-live-abc","code":"invalid_api_key"}}"#;
        let error = OpenAiError::from_status(401, headers(&[("x-echo", "Bearer sk-live-abc")]), body.into());
        let transport = error.into_transport_error(Some(&key));
        let everything = format!("{transport:?} {transport}");
        assert!(!everything.contains("sk-live-abc"), "{everything}");
        assert!(transport.message.contains(REDACTED), "{}", transport.message);
    }
}
