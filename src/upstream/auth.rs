//! `GET /api/auth` and the access token's lifecycle: fetched on a key's first call, at most one
//! fetch at a time per key, served until shortly before it expires (the JWT `exp` claim minus a
//! margin, 23 h when it has none), and dropped when the upstream refuses it, so that the next
//! call fetches a new one.

use std::{
    sync::atomic::Ordering,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use http::{Method, StatusCode, header::HeaderValue};
use serde::Deserialize;
use tokio::time::Instant;

use super::{
    ApiKey, CallContext, UpstreamClient, UpstreamError,
    envelope::{Envelope, lenient_string},
    exchange::http_error,
    retry::Idempotency,
};

/// The endpoint's path.
pub(super) const PATH: &str = "/api/auth";

/// Refresh this long before the token's own expiry, so no call goes out with a dying token.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Lifetime assumed when the token carries no readable `exp` (the API documents 24 h).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(23 * 3600);

/// The auth payload.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthPayload {
    /// The JWT.
    #[serde(default, deserialize_with = "lenient_string")]
    pub access_token: String,
}

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

impl UpstreamClient {
    /// A valid access token for the call's key, fetched at most once at a time per key.
    pub(super) async fn token(&self, ctx: &CallContext) -> Result<AccessToken, UpstreamError> {
        // The fetch is boxed: it runs about once a day per key, and unboxed its state would be
        // part of every call's future (memory per call in flight).
        self.tokens.get_or_fetch(&ctx.api_key, || Box::pin(self.fetch_token(ctx))).await
    }

    /// Forgets `token` if it is still the key's current one (a concurrent call may already
    /// have replaced it, and that newer token must stay).
    pub(super) fn forget_token(&self, ctx: &CallContext, token: &AccessToken) {
        let serial = token.serial;
        self.tokens.invalidate_if(&ctx.api_key, |t| t.serial == serial);
    }

    /// Forgets the token of a key a reload retired (a rotated or removed tenant key), so that
    /// it is not kept in memory until the cache's LRU gets to it.
    pub(crate) fn forget_key(&self, key: &ApiKey) {
        self.tokens.remove(key);
    }

    /// `GET /api/auth?apiKey=`: a new token and until when it may be served.
    async fn fetch_token(&self, ctx: &CallContext) -> Result<(AccessToken, Instant), UpstreamError> {
        self.metrics.upstream().token_refresh();
        let endpoint = &self.endpoints.auth;
        let answer = self
            .with_retries(ctx, Idempotency::Read, endpoint, || {
                self.request(Method::GET, endpoint).query(&[("apiKey", ctx.api_key.expose())])
            })
            .await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            return Err(http_error(&answer));
        }
        let token = match self.decode::<AuthPayload>(&answer)? {
            Envelope::Success(p) => p.access_token,
            Envelope::Failure { code } => {
                return Err(UpstreamError::Rejected { code, http_status: answer.status.as_u16() });
            }
        };
        let header = bearer_header(&token).filter(|_| !token.is_empty()).ok_or_else(|| UpstreamError::Malformed {
            detail: "access token missing or not header-safe".into(),
            http_status: answer.status.as_u16(),
        })?;
        let lifetime = lifetime(&token, SystemTime::now());
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(serial, lifetime_s = lifetime.as_secs(), "fetched an access token");
        if let Some(accepted) = self.key_accepted.get() {
            accepted(&ctx.api_key);
        }
        Ok((AccessToken { header, serial }, Instant::now() + lifetime))
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
