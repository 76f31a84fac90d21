//! Validated request types, built from the generated protobuf messages before any I/O.
//!
//! Everything here is pure: no tonic, no network, no clock reads (the clock is injected through
//! [`SessionLimits`]). A request either becomes a typed value that the upstream client can send
//! as is, or a [`ValidationError`] listing *every* bad field at once, with paths like
//! `contacts[2].phone`, which the status layer turns into a `BadRequest`.
//!
//! Layout:
//! - [`mod@fold`]: Vietnamese-aware search folding for `ListScriptsRequest.name_contains`.
//! - [`phone`]: the phone number rule, and masking for logs.
//! - [`session`]: [`NewSession`], the validated `CreateSessionRequest`, and the `script_id` rule.
//! - [`campaign`]: [`CampaignPlan`], the validated `CampaignSpec`, and per-chunk validation.
//! - [`event`]: [`CallEvent`], the normalized call event, and [`SessionRecord`], what a created
//!   session leaves for its report: the one shape every event store keeps.
//! - [`listing`]: [`SessionListing`], the validated `ListSessionsRequest`, and its page token.
//! - [`variables`]: `check_variables`, contacts against their script's variables.

pub mod api_key;
pub mod campaign;
pub mod contact;
pub mod event;
pub mod fold;
pub mod listing;
pub mod phone;
pub mod session;
pub mod variables;

pub use api_key::ApiKey;
pub use campaign::CampaignPlan;
pub use event::{CallEvent, CallOutcome, CallState, EventSource, Fact, SessionRecord, no_text};
pub use fold::{fold, matches};
pub use listing::SessionListing;
pub use phone::{is_valid_phone, mask_phone, national, national_key};
pub use session::{NewSession, Purpose, SessionLimits, ValidContact, validate_contacts, validate_script_id};
pub use variables::ScriptVariables;

/// One bad field of a request: `field` is a path like `contacts[2].phone`, `contacts[0].variables[ten]`.
///
/// It exists so the status layer can emit one `BadRequest.FieldViolation` per bad field. The
/// description names the rule and never echoes the value (phone numbers are personal data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the offending field in the request, e.g. `contacts[2].phone`.
    pub field: String,
    /// Short English sentence naming the rule that failed.
    pub description: String,
}

/// Every violation found in one request, all at once (never empty).
///
/// Callers fix a request in one round trip instead of one error at a time. The `Display`
/// message only counts the violations: it must never contain field values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {} violation(s)", .violations.len())]
pub struct ValidationError {
    /// The violations, in request order; never empty.
    pub violations: Vec<FieldViolation>,
}

/// Collects violations while a request is walked, so a validator reads as a list of rules and
/// never stops at the first failure.
#[derive(Debug, Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records one bad field.
    fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation { field: field.into(), description: description.into() });
    }

    /// Records `result`'s error under `field` (built lazily: paths cost an allocation) and
    /// returns the value, or a placeholder that is discarded because the request is invalid.
    fn take<T: Default>(&mut self, field: impl FnOnce() -> String, result: Result<T, &'static str>) -> T {
        result.unwrap_or_else(|description| {
            self.push(field(), description);
            T::default()
        })
    }

    /// `Ok(value)` when nothing was recorded, otherwise every violation.
    fn into_result<T>(self, value: T) -> Result<T, ValidationError> {
        if self.0.is_empty() { Ok(value) } else { Err(ValidationError { violations: self.0 }) }
    }
}

/// True when `s` has at most `max` chars (Unicode scalar values, not bytes), without walking
/// more than `max + 1` chars of a huge string.
fn at_most_chars(s: &str, max: usize) -> bool {
    s.len() <= max || s.chars().nth(max).is_none()
}

/// True for characters that never belong in an identifier-like field.
fn is_space_or_control(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_counts_without_values() {
        let err = ValidationError {
            violations: vec![FieldViolation { field: "contacts[0].phone".into(), description: "must be valid".into() }],
        };
        assert_eq!(err.to_string(), "invalid request: 1 violation(s)");
    }

    #[test]
    fn collector() {
        let mut v = Violations::default();
        assert_eq!(v.take(|| "a".into(), Ok::<_, &str>(5)), 5);
        assert_eq!(v.take(|| "b".into(), Err::<i32, _>("bad")), 0);
        v.push("c", "worse");
        let err = v.into_result(()).unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["b", "c"]);
        assert_eq!(Violations::default().into_result(7), Ok(7));
    }

    #[test]
    fn char_limits() {
        assert!(at_most_chars("", 0));
        assert!(at_most_chars("ễễ", 2));
        assert!(!at_most_chars("ễễễ", 2));
        assert!(at_most_chars("ab", 5));
        assert!(!at_most_chars(&"x".repeat(10_000), 64));
    }
}
