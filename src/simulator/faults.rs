//! Fault injection: the JSON format of `POST /_sim/faults` and how a taken fault shapes the answer.
//!
//! A fault is a JSON object; `POST /_sim/faults` takes one object or an array of them, queued FIFO:
//!
//! ```json
//! {"path": "/api/call_bot/execute_by_phone", "count": 2, "delay_ms": 100,
//!  "status": 503, "error": "limit_service", "body": "<html>", "content_type": "text/html",
//!  "retry_after": 3, "truncate": false, "drop": false, "expire_tokens": false}
//! ```
//!
//! Every field is optional. `path` is a path prefix (absent = every API path; `/_sim/*` is never faulted);
//! `count` (default 1) is how many matching requests the fault applies to. Each API request takes one count of
//! the first queued fault whose path matches. Then, in order: sleep `delay_ms`; if `expire_tokens`, forget every
//! issued token; if `drop`, close the connection with no response; if `truncate`, answer 200 with half of a
//! valid success body and abort; if `abort_after_headers`, send the normal answer's status and headers, then
//! abort before the first body byte; if any of `status`/`error`/`body`/`body_base64` is set, answer that (status
//! default 200, body default an envelope with `error`, or `http_<status>` when only `status` is given;
//! `body_base64` is a body of raw bytes, e.g. not UTF-8), with `content_type` (default `application/json`) and
//! `Retry-After: <retry_after>` when given. A fault with none of
//! `drop`/`truncate`/`abort_after_headers`/`status`/`error`/`body`/`body_base64` lets the request be processed
//! normally after its delay; `content_type` then replaces the real answer's `Content-Type`.
//!
//! Whatever the answer (canned or real), its body can then be reshaped: `body_size: N` pads it with spaces up to
//! N bytes (JSON stays valid; the padding is streamed in 64 KiB pieces, never held whole, so a 64 MiB body
//! costs the simulator nothing), and `body_chunk_delay_ms: D` dribbles it out in `body_chunks` pieces (default
//! 4): the headers and the first piece at once, each next piece after a pause of D ms (the padding follows the
//! last piece).
//! A reshaped body has no `Content-Length` (chunked over HTTP/1.1). `/_sim/stats` counts the padding handed to
//! connections in `padding_bytes_sent`: a client that stops reading early stops it.
//!
//! A count is consumed when a matching request arrives. Faulted requests are counted in `/_sim/stats` but never
//! recorded as sessions (a truncated or aborted execute is validated but not recorded), except when the fault
//! only delays, expires tokens, or reshapes the delivery of a real answer (`content_type`, `body_size`,
//! `body_chunk_delay_ms`): that answer is complete, so the upstream did act. Over HTTP/2, `drop`, `truncate`
//! and `abort_after_headers` reset the stream instead of the connection.
//! `GET /_sim/faults` lists pending faults with their remaining counts; `DELETE /_sim/faults` clears them;
//! an unknown key, `count: 0`, `body_chunks: 0`, an invalid status, `body_base64` that is not base64, or both
//! `body` and `body_base64` is refused with HTTP 400.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One queued fault (see the module documentation for the semantics of each field).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default = "one")]
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Value>,
    #[serde(default)]
    pub truncate: bool,
    #[serde(default)]
    pub drop: bool,
    #[serde(default)]
    pub expire_tokens: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    #[serde(default)]
    pub abort_after_headers: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_chunk_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_chunks: Option<u32>,
}

fn one() -> u64 {
    1
}

impl Fault {
    /// Whether this fault applies to a request on `path` (never to `/_sim/*`).
    pub(crate) fn matches(&self, path: &str) -> bool {
        !is_admin_path(path) && self.path.as_deref().is_none_or(|p| path.starts_with(p))
    }

    /// Whether the fault replaces the normal answer with a canned one (status, error or body).
    pub(crate) fn canned(&self) -> bool {
        self.status.is_some() || self.error.is_some() || self.body.is_some() || self.body_base64.is_some()
    }

    /// The canned body's raw bytes, when `body` or `body_base64` gives one (validated beforehand).
    pub(crate) fn body_bytes(&self) -> Option<Vec<u8>> {
        match (&self.body, &self.body_base64) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64).ok(),
            (None, None) => None,
        }
    }

    /// Whether the body is reshaped on its way out (padded and/or dribbled).
    pub(crate) fn reshapes_body(&self) -> bool {
        self.body_size.is_some() || self.body_chunk_delay_ms.is_some()
    }

    /// The `Retry-After` header value, if any.
    pub(crate) fn retry_after_value(&self) -> Option<String> {
        match &self.retry_after {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        }
    }

    /// Check the fields that can be wrong beyond their types.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("count must be at least 1".into());
        }
        if self.body_chunks == Some(0) {
            return Err("body_chunks must be at least 1".into());
        }
        if let Some(b64) = &self.body_base64 {
            if self.body.is_some() {
                return Err("give body or body_base64, not both".into());
            }
            if base64::engine::general_purpose::STANDARD.decode(b64).is_err() {
                return Err("body_base64 is not standard base64".into());
            }
        }
        if let Some(s) = self.status {
            if http::StatusCode::from_u16(s).is_err() {
                return Err(format!("status {s} is not a valid HTTP status"));
            }
        }
        if let Some(ct) = &self.content_type {
            if http::HeaderValue::from_str(ct).is_err() {
                return Err("content_type is not a valid header value".into());
            }
        }
        if let Some(ra) = self.retry_after_value() {
            if http::HeaderValue::from_str(&ra).is_err() {
                return Err("retry_after is not a valid header value".into());
            }
        }
        Ok(())
    }
}

/// Whether `path` is one of the simulator's own control paths.
pub(crate) fn is_admin_path(path: &str) -> bool {
    path == "/_sim" || path.starts_with("/_sim/")
}

/// Parse the body of `POST /_sim/faults`: one fault object or an array of them.
pub(crate) fn parse_faults(body: &[u8]) -> Result<Vec<Fault>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return Err("expected a fault object or an array of fault objects".into()),
    };
    let faults = items
        .into_iter()
        .map(|v| serde_json::from_value::<Fault>(v).map_err(|e| format!("invalid fault: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    for f in &faults {
        f.validate()?;
    }
    Ok(faults)
}
