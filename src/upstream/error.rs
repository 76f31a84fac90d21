//! `UpstreamError`: every way a REST exchange can fail, typed so that `status.rs` can map each to
//! a gRPC status and the retry logic can tell "never reached the upstream" from "outcome unknown".
//! No variant carries a response body, an API key, a token or a URL with its query string.

use std::time::Duration;

/// A failed upstream exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP/TLS connection could not be made: the request provably never left.
    #[error("could not connect to the upstream: {detail}")]
    Connect {
        /// Sanitized cause (no URL).
        detail: String,
    },
    /// The connection broke after the request may have been sent (reset, closed early).
    #[error("the upstream connection was lost: {detail}")]
    ConnectionLost {
        /// Sanitized cause (no URL).
        detail: String,
    },
    /// One attempt took longer than its timeout; the upstream may still act on it.
    #[error("the upstream did not answer within the attempt timeout")]
    AttemptTimeout,
    /// The caller's deadline (or `--upstream-timeout`) passed before the exchange ended.
    #[error("the deadline passed before the upstream answered")]
    DeadlineExceeded,
    /// An HTTP status that is an error in itself (401, 403, 404, 429, 5xx, other 4xx).
    #[error("the upstream answered HTTP {status}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// `Retry-After`, when given (429, 503).
        retry_after: Option<Duration>,
        /// The envelope's error code, when the body was an envelope that had one.
        upstream_code: Option<String>,
    },
    /// The envelope said -9999 (failure) with this error code.
    #[error("the upstream rejected the request ({code})")]
    Rejected {
        /// `payload.error` or `message` of the envelope (`Unknown` when it gave none).
        code: String,
        /// The HTTP status it came with.
        http_status: u16,
    },
    /// The body was not the JSON envelope we expect (not JSON, truncated, wrong shape, too big).
    #[error("the upstream answered with a malformed body: {detail}")]
    Malformed {
        /// What was wrong, in our words (never the body itself).
        detail: String,
        /// The HTTP status it came with.
        http_status: u16,
    },
}

impl UpstreamError {
    /// The HTTP status of the exchange, when one happened.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            UpstreamError::Http { status, .. } => Some(*status),
            UpstreamError::Rejected { http_status, .. } | UpstreamError::Malformed { http_status, .. } => {
                Some(*http_status)
            }
            _ => None,
        }
    }

    /// The upstream's own error code, when it gave one.
    pub fn upstream_code(&self) -> Option<&str> {
        match self {
            UpstreamError::Rejected { code, .. } => Some(code),
            UpstreamError::Http { upstream_code, .. } => upstream_code.as_deref(),
            _ => None,
        }
    }

    /// Whether the upstream refused to start a session because it already has one with this
    /// key: a re-run of a campaign chunk, which is then resumed rather than failed.
    pub fn is_duplicate_session(&self) -> bool {
        matches!(self, UpstreamError::Rejected { code, .. } if is_duplicate_session_code(code))
    }

    /// Turns the HTTP client's error into ours: a connection that could not be made (TCP, TLS,
    /// its timeout) left nothing sent; any other failure may have come after the request left.
    /// The client's errors never carry the URL (the auth URL carries the API key).
    pub(super) fn from_send(err: super::client::SendError) -> Self {
        match err {
            super::client::SendError::InvalidHeader(name) => {
                UpstreamError::Connect { detail: format!("not sent: the {name} value is not a valid header value") }
            }
            super::client::SendError::Client(e) if e.is_connect() => UpstreamError::Connect { detail: describe(&e) },
            super::client::SendError::Client(e) => UpstreamError::ConnectionLost { detail: describe(&e) },
        }
    }
}

/// Whether an envelope error code says "a session with this key already exists" (the
/// upstream words it several ways; credential and tenant codes, which can contain "invalid" or
/// "exist", are never it).
pub fn is_duplicate_session_code(code: &str) -> bool {
    let lower = code.to_ascii_lowercase();
    !lower.starts_with("api_key")
        && lower != "tenant_invalid"
        && (lower.contains("duplicat") || lower.contains("already") || lower.contains("exist"))
}

/// The error and its causes on one line, e.g. "error sending request: connection closed".
fn describe(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
