//! Access tokens: how long one may be served (from the JWT `exp` claim minus a margin, 23 h when
//! it has none) and the `Authorization` header built once per token, marked sensitive.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::header::HeaderValue;

/// Refresh this long before the token's own expiry, so no call goes out with a dying token.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Lifetime assumed when the token carries no readable `exp` (the API documents 24 h).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(23 * 3600);

/// A fetched access token.
#[derive(Clone)]
pub struct AccessToken {
    /// `Bearer <token>`, sensitive so that HTTP debug output hides it.
    pub header: HeaderValue,
    /// Distinguishes tokens, so a 401 invalidates only the token it answered to.
    pub serial: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessToken(#{}, ***)", self.serial)
    }
}

/// How long a token may be served from now.
pub fn lifetime(token: &str, now: SystemTime) -> Duration {
    let Some(exp) = jwt_exp(token) else {
        return DEFAULT_LIFETIME;
    };
    let now_s = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let left = Duration::from_secs(exp.saturating_sub(now_s));
    if left > EXPIRY_MARGIN * 2 {
        (left - EXPIRY_MARGIN).min(Duration::from_secs(7 * 24 * 3600))
    } else {
        // A short-lived token: serve it for half its life.
        left / 2
    }
}

/// The `exp` claim (Unix seconds) of a JWT, when it has one we can read.
fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, claims) = (parts.next()?, parts.next()?);
    parts.next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match value.get("exp")? {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f > 0.0).map(|f| f as u64)),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Builds the sensitive `Authorization` header; `None` when the token holds bytes no header may.
pub fn bearer_header(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", e.encode(br#"{"alg":"HS256"}"#), e.encode(claims.as_bytes()))
    }

    #[test]
    fn lifetime_table() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let rows: [(String, Duration); 7] = [
            (jwt(r#"{"exp":1086400}"#), Duration::from_secs(86_400) - EXPIRY_MARGIN),
            (jwt(r#"{"exp":"1003600"}"#), Duration::from_secs(3600) - EXPIRY_MARGIN),
            (jwt(r#"{"exp":1000002}"#), Duration::from_secs(1)),
            (jwt(r#"{"exp":999000}"#), Duration::ZERO),
            (jwt(r#"{"sub":"x"}"#), DEFAULT_LIFETIME),
            ("not-a-jwt".to_owned(), DEFAULT_LIFETIME),
            ("a.%%%.c".to_owned(), DEFAULT_LIFETIME),
        ];
        for (token, want) in rows {
            assert_eq!(lifetime(&token, now), want, "{token}");
        }
    }

    #[test]
    fn header_is_sensitive_and_rejects_bad_bytes() {
        let h = bearer_header("abc").unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Bearer abc");
        assert!(bearer_header("a\nb").is_none());
        assert!(!format!("{:?}", AccessToken { header: h, serial: 1 }).contains("abc"));
    }
}
