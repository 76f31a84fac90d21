//! `ListSessionsRequest` validated: the page size, the page token (the place after which the next
//! page starts), the campaign prefix and the creation bound.
//!
//! The page token is opaque to callers: URL-safe base64 of a version byte, the last listed
//! session's creation time (Unix ms, big-endian) and its id. The listing is ordered by exactly
//! that pair, newest first, so a token names a place that stays valid while sessions are added
//! (new ones come before it) or expire (the place does not move).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{ValidationError, Violations, at_most_chars, is_space_or_control};
use crate::pb;

/// Sessions per page when the caller leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Most sessions per page.
pub const MAX_PAGE_SIZE: usize = 500;
/// Longest `campaign_id` prefix: an external session id is at most 128 characters.
const MAX_PREFIX_CHARS: usize = 128;
/// The token's version byte.
const TOKEN_VERSION: u8 = 1;
/// Longest token accepted: version, time and a session id of at most 128 bytes, in base64.
const MAX_TOKEN_LEN: usize = 4 * (1 + 8 + 128_usize).div_ceil(3);

/// A validated `ListSessionsRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionListing {
    /// 1..=500.
    pub page_size: usize,
    /// The previous page's last session: (creation Unix ms, session id).
    pub after: Option<(u64, String)>,
    /// Prefix of the external session id (empty = all).
    pub campaign_id: String,
    /// Only sessions created strictly after this Unix millisecond.
    pub created_after_ms: Option<u64>,
}

impl SessionListing {
    /// Validates every field at once: `page_size` 0..=500, `page_token` one this facade gave,
    /// `campaign_id` at most 128 characters without spaces, `created_after` a valid instant.
    pub fn parse(req: pb::ListSessionsRequest) -> Result<SessionListing, ValidationError> {
        let pb::ListSessionsRequest { page_size, page_token, campaign_id, created_after } = req;
        let mut v = Violations::default();
        let page_size = v.take(
            || "page_size".into(),
            match usize::try_from(page_size) {
                Ok(0) => Ok(DEFAULT_PAGE_SIZE),
                Ok(n) if n <= MAX_PAGE_SIZE => Ok(n),
                _ => Err("must be between 1 and 500 (0 = 50)"),
            },
        );
        let after = if page_token.is_empty() {
            None
        } else {
            v.take(|| "page_token".into(), decode_token(&page_token).map(Some).ok_or("not a token this facade gave"))
        };
        if !at_most_chars(&campaign_id, MAX_PREFIX_CHARS) || campaign_id.chars().any(is_space_or_control) {
            v.push("campaign_id", "at most 128 characters, no spaces or control characters");
        }
        let created_after_ms = match created_after {
            None => None,
            Some(ts) => v.take(|| "created_after".into(), instant_ms(&ts).map(Some)),
        };
        v.into_result(SessionListing { page_size, after, campaign_id, created_after_ms })
    }
}

/// Unix milliseconds of a valid instant at or after 1970.
fn instant_ms(ts: &prost_types::Timestamp) -> Result<u64, &'static str> {
    const BAD: &str = "must be a valid instant after 1970";
    let seconds = u64::try_from(ts.seconds).map_err(|_| BAD)?;
    let nanos = u64::try_from(ts.nanos).ok().filter(|n| *n < 1_000_000_000).ok_or(BAD)?;
    Ok(seconds.saturating_mul(1000).saturating_add(nanos / 1_000_000))
}

/// The token naming the place right after the session created at `created_at_ms` with `session_id`.
pub fn encode_token(created_at_ms: u64, session_id: &str) -> String {
    let mut bytes = Vec::with_capacity(9 + session_id.len());
    bytes.push(TOKEN_VERSION);
    bytes.extend_from_slice(&created_at_ms.to_be_bytes());
    bytes.extend_from_slice(session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_token(text: &str) -> Option<(u64, String)> {
    if text.len() > MAX_TOKEN_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let (&version, rest) = bytes.split_first()?;
    if version != TOKEN_VERSION || rest.len() < 9 {
        return None;
    }
    let (ms, id) = rest.split_at(8);
    let ms = u64::from_be_bytes(ms.try_into().ok()?);
    let id = String::from_utf8(id.to_vec()).ok()?;
    Some((ms, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(page_size: i32, page_token: &str, campaign_id: &str, after: Option<(i64, i32)>) -> pb::ListSessionsRequest {
        pb::ListSessionsRequest {
            page_size,
            page_token: page_token.into(),
            campaign_id: campaign_id.into(),
            created_after: after.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        }
    }

    #[test]
    fn defaults_and_bounds() {
        let l = SessionListing::parse(req(0, "", "", None)).unwrap();
        assert_eq!(
            l,
            SessionListing { page_size: 50, after: None, campaign_id: String::new(), created_after_ms: None }
        );
        assert_eq!(SessionListing::parse(req(500, "", "", None)).unwrap().page_size, 500);
        let token = encode_token(1_700_000_000_123, "s-42");
        let l = SessionListing::parse(req(7, &token, "camp-", Some((1_700_000_000, 5_000_000)))).unwrap();
        assert_eq!(l.after, Some((1_700_000_000_123, "s-42".to_owned())));
        assert_eq!(l.created_after_ms, Some(1_700_000_000_005));
        assert_eq!(l.campaign_id, "camp-");
    }

    #[test]
    fn every_violation_at_once() {
        let err = SessionListing::parse(req(501, "junk!", "a b", Some((-1, 0)))).unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["page_size", "page_token", "campaign_id", "created_after"]);
        let err = SessionListing::parse(req(-1, &URL_SAFE_NO_PAD.encode([2u8; 12]), "", None)).unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["page_size", "page_token"], "a token of another version is refused");
    }
}
