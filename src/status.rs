//! THE table: every error the facade can meet becomes a `tonic::Status` here and nowhere else,
//! with `ErrorInfo` (domain `callbot.v1`, a stable UPPER_SNAKE reason, `upstream_code`,
//! `upstream_http_status`, `external_session_id`), `RetryInfo` when a retry can help,
//! `RequestInfo` with the request id, and `BadRequest` for validation failures.
//! Messages are fixed sentences: no upstream body, key or token ever reaches one.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    domain::{FieldViolation, ValidationError},
    policy::PolicyError,
    upstream::{UpstreamError, is_duplicate_session_code},
};

/// `ErrorInfo.domain` of every error.
pub const DOMAIN: &str = "callbot.v1";

/// Retry delay suggested when the upstream gave none.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Everything that can fail a call, from any layer.
#[derive(Debug, thiserror::Error)]
pub enum FacadeError {
    /// The request broke validation rules (all violations listed).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The upstream exchange failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// GetScript: no script with that id in the tenant's list.
    #[error("no script with that id")]
    ScriptNotFound,
    /// A caller sent `x-api-key` but `--allow-caller-api-key` is off.
    #[error("caller-supplied x-api-key is not allowed")]
    CallerApiKeyNotAllowed,
    /// Caller authentication is on and the bearer token is missing or wrong.
    #[error("missing or invalid caller bearer token")]
    CallerUnauthenticated,
    /// With a tenants file: the caller presented no identity the file lists.
    #[error("no listed caller identity")]
    CallerNotListed,
    /// With a tenants file: `x-callbot-tenant` names a tenant the caller does not act for.
    #[error("x-callbot-tenant names a tenant the caller does not act for")]
    TenantNotAllowed,
    /// With a tenants file: the caller's identities belong to several tenants and it named none.
    #[error("the caller's identities belong to several tenants")]
    TenantAmbiguous,
    /// With a tenants file: a caller sent `x-api-key` (the file holds the keys).
    #[error("caller-supplied x-api-key is not allowed with a tenants file")]
    CallerApiKeyWithTenants,
    /// Too many calls in flight; shed.
    #[error("too many calls in flight")]
    Overloaded,
    /// Too many open health watches or reflection streams (the methods open without credentials).
    #[error("too many open health watch or reflection streams")]
    OpenStreamsExhausted,
    /// A watcher's credentials were withdrawn by a reload while its stream was open.
    #[error("the caller's credentials were revoked")]
    CallerRevoked,
    /// A request message over `--max-message-bytes`.
    #[error("request message over the size limit")]
    MessageTooLarge,
    /// The caller's bytes are not a message of the method (tonic's decoder refused them).
    #[error("request message could not be decoded")]
    MalformedMessage,
    /// GetSessionReport: no retained record or event of that session.
    #[error("no retained record or event of that session")]
    SessionNotFound,
    /// WatchCallEvents: the cursor (given, or reached by a watcher that fell behind) is past
    /// the retention window or from another event store.
    #[error("the cursor is past the retention window or from another event store")]
    CursorExpired {
        /// Resume after this one to lose nothing more than what has expired.
        earliest_cursor: String,
        /// The last event the watcher was sent, when it was sent any.
        last_cursor: Option<String>,
    },
    /// The event store cannot take or give events now.
    #[error("the event store is unavailable: {0}")]
    EventStoreUnavailable(String),
    /// A stream ended because the facade is shutting down.
    #[error("the facade is shutting down")]
    ShuttingDown {
        /// The last event the watcher was sent, to resume elsewhere.
        last_cursor: Option<String>,
    },
    /// The calling policy: the start is outside the hours and deferral was not asked.
    #[error("the start is outside the calling hours")]
    OutsideCallingHours {
        /// The next opening (RFC 3339), when there is one within a year.
        next_opening: Option<String>,
    },
    /// The calling policy: the session's projected dialling does not fit in its window.
    #[error("the session's dialling does not fit in the calling window")]
    CallingWindowTooShort {
        /// How many contacts would fit.
        max_contacts: usize,
    },
    /// The calling policy refused every contact (do-not-call, frequency cap).
    #[error("no contact may be called")]
    NoCallableContacts,
    /// The calling policy's counts cannot be read or written: nothing is sent unchecked.
    #[error("the calling-policy store is unavailable: {0}")]
    PolicyStoreUnavailable(String),
}

impl From<PolicyError> for FacadeError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::PurposeRequired => FacadeError::Invalid(ValidationError {
                violations: vec![FieldViolation {
                    field: "purpose".to_owned(),
                    description: "is required by the tenant's calling policy".to_owned(),
                }],
            }),
            PolicyError::OutsideHours { next_opening } => {
                FacadeError::OutsideCallingHours { next_opening: next_opening.map(|t| t.to_string()) }
            }
            PolicyError::WindowTooShort { max_contacts } => FacadeError::CallingWindowTooShort { max_contacts },
            PolicyError::NoCallableContacts { .. } => FacadeError::NoCallableContacts,
            PolicyError::Store(e) => FacadeError::PolicyStoreUnavailable(e.0),
        }
    }
}

/// Call facts that go into every status.
#[derive(Debug, Clone, Copy)]
pub struct ErrorContext<'a> {
    /// The call's `x-request-id`.
    pub request_id: &'a str,
    /// The session key of a CreateSession call past validation (so the caller can retry with it).
    pub external_session_id: Option<&'a str>,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// gRPC code.
    pub code: Code,
    /// `ErrorInfo.reason`.
    pub reason: &'static str,
    /// Status message (fixed text).
    pub message: &'static str,
    /// `RetryInfo.retry_delay`, when a retry can help.
    pub retry_after: Option<Duration>,
}

const fn row(code: Code, reason: &'static str, message: &'static str) -> Row {
    Row { code, reason, message, retry_after: None }
}

fn retry(mut r: Row, after: Option<Duration>) -> Row {
    r.retry_after = Some(after.unwrap_or(DEFAULT_RETRY_DELAY));
    r
}

/// The table: error -> code, reason, message, retry. `write` is true for CreateSession, where an
/// outcome the upstream may have acted on must say so.
pub fn classify(err: &FacadeError, write: bool) -> Row {
    use Code::*;
    match err {
        FacadeError::Invalid(_) => {
            row(InvalidArgument, "INVALID_REQUEST", "the request is invalid; see the field violations")
        }
        FacadeError::ScriptNotFound => row(NotFound, "SCRIPT_NOT_FOUND", "no script with that id"),
        FacadeError::CallerApiKeyNotAllowed => row(
            PermissionDenied,
            "CALLER_API_KEY_NOT_ALLOWED",
            "x-api-key metadata is not accepted by this facade (multi-tenant mode is off)",
        ),
        FacadeError::CallerUnauthenticated => {
            row(Unauthenticated, "CALLER_UNAUTHENTICATED", "missing or invalid bearer token")
        }
        FacadeError::CallerNotListed => row(
            Unauthenticated,
            "CALLER_UNAUTHENTICATED",
            "no caller identity this facade lists (bearer token or client certificate)",
        ),
        FacadeError::TenantNotAllowed => row(
            PermissionDenied,
            "TENANT_NOT_ALLOWED",
            "the caller may not act for the tenant named in x-callbot-tenant",
        ),
        FacadeError::TenantAmbiguous => row(
            PermissionDenied,
            "TENANT_NOT_ALLOWED",
            "the caller's identities belong to several tenants: name one in x-callbot-tenant",
        ),
        FacadeError::CallerApiKeyWithTenants => row(
            PermissionDenied,
            "CALLER_API_KEY_NOT_ALLOWED",
            "x-api-key metadata is not accepted: the caller's identity chooses the tenant and its key",
        ),
        FacadeError::Overloaded => retry(row(Unavailable, "OVERLOADED", "too many calls in flight; retry later"), None),
        FacadeError::OpenStreamsExhausted => row(
            ResourceExhausted,
            "OPEN_STREAMS_EXHAUSTED",
            "too many open health watch or reflection streams; close some and retry",
        ),
        FacadeError::CallerRevoked => {
            row(Unauthenticated, "CALLER_REVOKED", "the caller's credentials were revoked while the stream was open")
        }
        FacadeError::MessageTooLarge => row(
            ResourceExhausted,
            "MESSAGE_TOO_LARGE",
            "the request message is larger than this facade accepts (--max-message-bytes)",
        ),
        // INTERNAL, as gRPC documents for a request that does not parse (and tonic answers).
        FacadeError::MalformedMessage => row(
            Internal,
            "MALFORMED_REQUEST_MESSAGE",
            "the request message could not be decoded as the method's protobuf message",
        ),
        FacadeError::SessionNotFound => {
            row(NotFound, "SESSION_NOT_FOUND", "this facade knows no session with that id (created or called)")
        }
        FacadeError::CursorExpired { .. } => row(
            OutOfRange,
            "CURSOR_EXPIRED",
            "the cursor is before the retention window or from another event store; resume from earliest_cursor",
        ),
        FacadeError::EventStoreUnavailable(_) => {
            retry(row(Unavailable, "EVENT_STORE_UNAVAILABLE", "the call-event store is unavailable; retry later"), None)
        }
        FacadeError::ShuttingDown { .. } => retry(
            row(Unavailable, "SHUTTING_DOWN", "this facade is shutting down; resume after last_cursor on another"),
            None,
        ),
        FacadeError::OutsideCallingHours { .. } => row(
            FailedPrecondition,
            "OUTSIDE_CALLING_HOURS",
            "the start is outside the tenant's calling hours; start at metadata.next_opening or set defer_to_calling_hours",
        ),
        FacadeError::CallingWindowTooShort { .. } => row(
            FailedPrecondition,
            "CALLING_WINDOW_TOO_SHORT",
            "the session's dialling does not fit in the calling window; send at most metadata.max_contacts contacts",
        ),
        FacadeError::NoCallableContacts => row(
            FailedPrecondition,
            "NO_CALLABLE_CONTACTS",
            "the calling policy refused every contact (do-not-call, frequency cap)",
        ),
        FacadeError::PolicyStoreUnavailable(_) => retry(
            row(Unavailable, "POLICY_STORE_UNAVAILABLE", "the calling-policy store is unavailable; retry later"),
            None,
        ),
        FacadeError::Upstream(e) => classify_upstream(e, write),
    }
}

fn classify_upstream(err: &UpstreamError, write: bool) -> Row {
    use Code::*;
    match err {
        UpstreamError::Connect { .. } => {
            retry(row(Unavailable, "UPSTREAM_UNAVAILABLE", "the callBot API cannot be reached"), None)
        }
        UpstreamError::ConnectionLost { .. } if write => retry(
            row(
                Unavailable,
                "UPSTREAM_OUTCOME_UNKNOWN",
                "the connection to the callBot API broke after the request was sent; retry with the same external_session_id",
            ),
            None,
        ),
        UpstreamError::ConnectionLost { .. } => {
            retry(row(Unavailable, "UPSTREAM_CONNECTION_LOST", "the connection to the callBot API broke"), None)
        }
        UpstreamError::AttemptTimeout => {
            row(DeadlineExceeded, "UPSTREAM_TIMEOUT", "the callBot API did not answer in time")
        }
        UpstreamError::DeadlineExceeded => {
            row(DeadlineExceeded, "DEADLINE_EXCEEDED", "the deadline passed before the callBot API answered")
        }
        UpstreamError::Malformed { .. } => {
            row(Internal, "UPSTREAM_MALFORMED", "the callBot API answered with a malformed body")
        }
        UpstreamError::Rejected { code, .. } => classify_upstream_code(code),
        UpstreamError::Http { status, retry_after, .. } => match status {
            401 => row(Unauthenticated, "UPSTREAM_UNAUTHENTICATED", "the callBot API refused the credentials"),
            403 => row(PermissionDenied, "UPSTREAM_PERMISSION_DENIED", "the callBot API denied access"),
            404 => row(
                Internal,
                "UPSTREAM_ENDPOINT_NOT_FOUND",
                "the callBot API has no such endpoint: the upstream URL is misconfigured",
            ),
            429 => retry(
                row(ResourceExhausted, "UPSTREAM_RATE_LIMITED", "the callBot API is rate limiting; retry later"),
                *retry_after,
            ),
            502 | 503 => {
                retry(row(Unavailable, "UPSTREAM_UNAVAILABLE", "the callBot API is unavailable"), *retry_after)
            }
            504 => row(DeadlineExceeded, "UPSTREAM_TIMEOUT", "the callBot API timed out"),
            500..=599 => row(Internal, "UPSTREAM_INTERNAL_ERROR", "the callBot API failed"),
            _ => row(Internal, "UPSTREAM_HTTP_ERROR", "the callBot API answered with an unexpected HTTP status"),
        },
    }
}

/// The -9999 envelope codes (docs/upstream.md §6). Quota, plan and balance codes are
/// FAILED_PRECONDITION: they need an operator (top-up, plan change), so retrying soon cannot help;
/// RESOURCE_EXHAUSTED is kept for rate limiting (HTTP 429), which a retry does fix.
pub fn classify_upstream_code(code: &str) -> Row {
    use Code::*;
    let lower = code.to_ascii_lowercase();
    if lower.starts_with("api_key") {
        row(Unauthenticated, "UPSTREAM_UNAUTHENTICATED", "the callBot API refused the API key")
    } else if lower == "tenant_invalid" {
        row(PermissionDenied, "UPSTREAM_PERMISSION_DENIED", "the callBot API refused the tenant")
    } else if is_duplicate_session_code(code) {
        row(AlreadyExists, "SESSION_ALREADY_EXISTS", "a session with this external_session_id already exists")
    } else if lower == "balance_is_not_enough" {
        row(FailedPrecondition, "UPSTREAM_INSUFFICIENT_BALANCE", "the tenant's balance is not enough")
    } else if lower == "limit_service" {
        row(FailedPrecondition, "UPSTREAM_PLAN_LIMIT", "the tenant's plan cannot run automatic calls")
    } else if lower.starts_with("limit_") {
        row(FailedPrecondition, "UPSTREAM_QUOTA_EXCEEDED", "the tenant's text-to-speech quota is used up")
    } else if lower == "do_not_call" {
        row(FailedPrecondition, "UPSTREAM_DO_NOT_CALL", "the callBot API refused: do-not-call")
    } else if lower.ends_with("_required") || lower.ends_with("_invalid") || lower.contains("invalid_") {
        row(InvalidArgument, "UPSTREAM_REJECTED", "the callBot API rejected the request as invalid")
    } else {
        row(Unknown, "UPSTREAM_UNKNOWN_ERROR", "the callBot API failed with an unknown error")
    }
}

/// Builds the status for `err`, and logs the cause chain (once, here).
pub fn to_status(err: &FacadeError, ctx: &ErrorContext<'_>) -> Status {
    let r = classify(err, ctx.external_session_id.is_some());
    let mut metadata = HashMap::new();
    if let FacadeError::Upstream(u) = err {
        if let Some(code) = u.upstream_code() {
            metadata.insert("upstream_code".to_owned(), code.to_owned());
        }
        if let Some(status) = u.http_status().filter(|s| *s != 0) {
            metadata.insert("upstream_http_status".to_owned(), status.to_string());
        }
    }
    match err {
        FacadeError::CursorExpired { earliest_cursor, last_cursor } => {
            metadata.insert("earliest_cursor".to_owned(), earliest_cursor.clone());
            if let Some(last) = last_cursor {
                metadata.insert("last_cursor".to_owned(), last.clone());
            }
        }
        FacadeError::ShuttingDown { last_cursor: Some(last) } => {
            metadata.insert("last_cursor".to_owned(), last.clone());
        }
        FacadeError::OutsideCallingHours { next_opening: Some(at) } => {
            metadata.insert("next_opening".to_owned(), at.clone());
        }
        FacadeError::CallingWindowTooShort { max_contacts } => {
            metadata.insert("max_contacts".to_owned(), max_contacts.to_string());
        }
        _ => {}
    }
    if let Some(key) = ctx.external_session_id {
        metadata.insert("external_session_id".to_owned(), key.to_owned());
    }
    let mut details = ErrorDetails::new();
    details.set_error_info(r.reason, DOMAIN, metadata);
    details.set_request_info(ctx.request_id, "");
    if let Some(delay) = r.retry_after {
        details.set_retry_info(Some(delay));
    }
    if let FacadeError::Invalid(v) = err {
        for violation in &v.violations {
            details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
        }
    }
    match r.code {
        Code::Internal | Code::Unknown | Code::Unavailable | Code::DeadlineExceeded => {
            tracing::warn!(request_id = ctx.request_id, reason = r.reason, error = %err, "call failed")
        }
        _ => {
            tracing::info!(request_id = ctx.request_id, reason = r.reason, error = %err, "call failed")
        }
    }
    Status::with_error_details(r.code, r.message, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldViolation;

    fn http(status: u16) -> FacadeError {
        FacadeError::Upstream(UpstreamError::Http { status, retry_after: None, upstream_code: None })
    }
    fn rejected(code: &str) -> FacadeError {
        FacadeError::Upstream(UpstreamError::Rejected { code: code.into(), http_status: 200 })
    }

    #[test]
    fn the_table() {
        use Code::*;
        let d = Some(DEFAULT_RETRY_DELAY);
        let rows: Vec<(FacadeError, bool, Code, &str, Option<Duration>)> = vec![
            (
                FacadeError::Invalid(ValidationError { violations: vec![] }),
                false,
                InvalidArgument,
                "INVALID_REQUEST",
                None,
            ),
            (FacadeError::ScriptNotFound, false, NotFound, "SCRIPT_NOT_FOUND", None),
            (FacadeError::CallerApiKeyNotAllowed, false, PermissionDenied, "CALLER_API_KEY_NOT_ALLOWED", None),
            (FacadeError::CallerUnauthenticated, false, Unauthenticated, "CALLER_UNAUTHENTICATED", None),
            (FacadeError::CallerNotListed, false, Unauthenticated, "CALLER_UNAUTHENTICATED", None),
            (FacadeError::TenantNotAllowed, false, PermissionDenied, "TENANT_NOT_ALLOWED", None),
            (FacadeError::TenantAmbiguous, false, PermissionDenied, "TENANT_NOT_ALLOWED", None),
            (FacadeError::CallerApiKeyWithTenants, false, PermissionDenied, "CALLER_API_KEY_NOT_ALLOWED", None),
            (FacadeError::Overloaded, false, Unavailable, "OVERLOADED", d),
            (FacadeError::OpenStreamsExhausted, false, ResourceExhausted, "OPEN_STREAMS_EXHAUSTED", None),
            (FacadeError::CallerRevoked, false, Unauthenticated, "CALLER_REVOKED", None),
            (FacadeError::MessageTooLarge, false, ResourceExhausted, "MESSAGE_TOO_LARGE", None),
            (FacadeError::MalformedMessage, false, Internal, "MALFORMED_REQUEST_MESSAGE", None),
            (
                FacadeError::OutsideCallingHours { next_opening: None },
                true,
                FailedPrecondition,
                "OUTSIDE_CALLING_HOURS",
                None,
            ),
            (
                FacadeError::CallingWindowTooShort { max_contacts: 3 },
                true,
                FailedPrecondition,
                "CALLING_WINDOW_TOO_SHORT",
                None,
            ),
            (FacadeError::NoCallableContacts, true, FailedPrecondition, "NO_CALLABLE_CONTACTS", None),
            (FacadeError::PolicyStoreUnavailable("x".into()), true, Unavailable, "POLICY_STORE_UNAVAILABLE", d),
            (http(401), false, Unauthenticated, "UPSTREAM_UNAUTHENTICATED", None),
            (http(403), false, PermissionDenied, "UPSTREAM_PERMISSION_DENIED", None),
            (http(404), false, Internal, "UPSTREAM_ENDPOINT_NOT_FOUND", None),
            (http(429), false, ResourceExhausted, "UPSTREAM_RATE_LIMITED", d),
            (
                FacadeError::Upstream(UpstreamError::Http {
                    status: 429,
                    retry_after: Some(Duration::from_secs(7)),
                    upstream_code: None,
                }),
                false,
                ResourceExhausted,
                "UPSTREAM_RATE_LIMITED",
                Some(Duration::from_secs(7)),
            ),
            (http(500), false, Internal, "UPSTREAM_INTERNAL_ERROR", None),
            (http(501), false, Internal, "UPSTREAM_INTERNAL_ERROR", None),
            (http(502), false, Unavailable, "UPSTREAM_UNAVAILABLE", d),
            (http(503), true, Unavailable, "UPSTREAM_UNAVAILABLE", d),
            (http(504), false, DeadlineExceeded, "UPSTREAM_TIMEOUT", None),
            (http(418), false, Internal, "UPSTREAM_HTTP_ERROR", None),
            (
                FacadeError::Upstream(UpstreamError::Connect { detail: "refused".into() }),
                true,
                Unavailable,
                "UPSTREAM_UNAVAILABLE",
                d,
            ),
            (
                FacadeError::Upstream(UpstreamError::ConnectionLost { detail: "reset".into() }),
                false,
                Unavailable,
                "UPSTREAM_CONNECTION_LOST",
                d,
            ),
            (
                FacadeError::Upstream(UpstreamError::ConnectionLost { detail: "reset".into() }),
                true,
                Unavailable,
                "UPSTREAM_OUTCOME_UNKNOWN",
                d,
            ),
            (FacadeError::Upstream(UpstreamError::AttemptTimeout), true, DeadlineExceeded, "UPSTREAM_TIMEOUT", None),
            (
                FacadeError::Upstream(UpstreamError::DeadlineExceeded),
                false,
                DeadlineExceeded,
                "DEADLINE_EXCEEDED",
                None,
            ),
            (
                FacadeError::Upstream(UpstreamError::Malformed { detail: "x".into(), http_status: 200 }),
                false,
                Internal,
                "UPSTREAM_MALFORMED",
                None,
            ),
            (rejected("data_is_required"), true, InvalidArgument, "UPSTREAM_REJECTED", None),
            (rejected("request_body_required"), true, InvalidArgument, "UPSTREAM_REJECTED", None),
            (rejected("voice_invalid"), true, InvalidArgument, "UPSTREAM_REJECTED", None),
            (rejected("bot_script_id_is_required"), true, InvalidArgument, "UPSTREAM_REJECTED", None),
            (rejected("api_key_is_required"), false, Unauthenticated, "UPSTREAM_UNAUTHENTICATED", None),
            (rejected("api_key_invalid"), false, Unauthenticated, "UPSTREAM_UNAUTHENTICATED", None),
            (rejected("tenant_invalid"), false, PermissionDenied, "UPSTREAM_PERMISSION_DENIED", None),
            (rejected("ext_session_id_duplicated"), true, AlreadyExists, "SESSION_ALREADY_EXISTS", None),
            (rejected("session_already_exists"), true, AlreadyExists, "SESSION_ALREADY_EXISTS", None),
            (rejected("limit_service"), true, FailedPrecondition, "UPSTREAM_PLAN_LIMIT", None),
            (rejected("limit_word"), true, FailedPrecondition, "UPSTREAM_QUOTA_EXCEEDED", None),
            (rejected("limit_word_session"), true, FailedPrecondition, "UPSTREAM_QUOTA_EXCEEDED", None),
            (rejected("balance_is_not_enough"), true, FailedPrecondition, "UPSTREAM_INSUFFICIENT_BALANCE", None),
            (rejected("do_not_call"), true, FailedPrecondition, "UPSTREAM_DO_NOT_CALL", None),
            (rejected("Unknown"), true, Unknown, "UPSTREAM_UNKNOWN_ERROR", None),
            (rejected("something_new"), true, Unknown, "UPSTREAM_UNKNOWN_ERROR", None),
        ];
        for (err, write, code, reason, retry_after) in rows {
            let r = classify(&err, write);
            assert_eq!((r.code, r.reason, r.retry_after), (code, reason, retry_after), "{err:?} write={write}");
            assert!(r.reason.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        }
    }

    #[test]
    fn status_carries_every_detail() {
        let err = FacadeError::Upstream(UpstreamError::Http {
            status: 503,
            retry_after: Some(Duration::from_secs(3)),
            upstream_code: Some("http_503".into()),
        });
        let status = to_status(&err, &ErrorContext { request_id: "req-1", external_session_id: Some("key-1") });
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.domain, DOMAIN);
        assert_eq!(info.reason, "UPSTREAM_UNAVAILABLE");
        assert_eq!(info.metadata.get("upstream_code").map(String::as_str), Some("http_503"));
        assert_eq!(info.metadata.get("upstream_http_status").map(String::as_str), Some("503"));
        assert_eq!(info.metadata.get("external_session_id").map(String::as_str), Some("key-1"));
        assert_eq!(details.request_info().map(|r| r.request_id.as_str()), Some("req-1"));
        let delay = details.retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
        assert_eq!(delay, Duration::from_secs(3));
    }

    #[test]
    fn validation_lists_every_violation() {
        let err = FacadeError::Invalid(ValidationError {
            violations: vec![
                FieldViolation { field: "script_id".into(), description: "is required".into() },
                FieldViolation { field: "contacts[2].phone".into(), description: "bad".into() },
            ],
        });
        let status = to_status(&err, &ErrorContext { request_id: "r", external_session_id: None });
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details.bad_request().unwrap().field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["script_id", "contacts[2].phone"]);
        assert!(details.retry_info().is_none());
    }

    #[test]
    fn messages_never_carry_upstream_text() {
        let err = rejected("secret_body_text_api_key_abc");
        let status = to_status(&err, &ErrorContext { request_id: "r", external_session_id: None });
        assert!(!status.message().contains("secret_body_text"));
    }
}
