//! Caller authentication: the accepted bearer tokens (`--caller-tokens-file`) and which calls
//! must present one.

use std::{collections::HashSet, path::Path, sync::Arc};

use http::{HeaderValue, Request};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The methods that need a token; health and reflection stay open so probes and tooling work.
const SERVICE_PREFIX: &str = "/callbot.v1.CallBotService/";

/// Accepted caller tokens, kept only as SHA-256 digests and compared in constant time.
#[derive(Clone)]
pub struct CallerTokens {
    digests: Arc<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for CallerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallerTokens({} tokens)", self.digests.len())
    }
}

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CallerTokensError {
    /// The file could not be read.
    #[error("cannot read the caller tokens file: {0}")]
    Read(#[from] std::io::Error),
    /// It holds no token: nobody could call, surely a mistake.
    #[error("the caller tokens file holds no token")]
    Empty,
}

impl CallerTokens {
    /// Reads one token per line (blank lines and `#` comments skipped).
    pub fn from_file(path: &Path) -> Result<Self, CallerTokensError> {
        Self::from_text(&std::fs::read_to_string(path)?)
    }

    /// Parses the file's text.
    pub fn from_text(text: &str) -> Result<Self, CallerTokensError> {
        let digests: HashSet<[u8; 32]> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        if digests.is_empty() {
            return Err(CallerTokensError::Empty);
        }
        Ok(CallerTokens { digests: Arc::new(digests.into_iter().collect()) })
    }

    /// Whether `authorization` holds `Bearer <an accepted token>`.
    pub fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(token) = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Check every digest, so the time taken does not depend on which (if any) matched.
        self.digests.iter().fold(0u8, |found, d| found | d.ct_eq(&digest).unwrap_u8()) == 1
    }
}

/// Whether `req` may proceed: always without `tokens` (authentication off) and for the methods
/// outside `callbot.v1.CallBotService`, else only with an accepted bearer token.
pub(super) fn admits<B>(tokens: Option<&CallerTokens>, req: &Request<B>) -> bool {
    match tokens {
        Some(tokens) if req.uri().path().starts_with(SERVICE_PREFIX) => {
            tokens.accepts(req.headers().get(http::header::AUTHORIZATION))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_tokens_accept_only_listed_bearers() {
        let tokens = CallerTokens::from_text("# ops\n\nalpha\n  beta  \n").unwrap();
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(tokens.accepts(Some(&h("Bearer alpha"))));
        assert!(tokens.accepts(Some(&h("Bearer beta"))));
        assert!(!tokens.accepts(Some(&h("Bearer gamma"))));
        assert!(!tokens.accepts(Some(&h("alpha"))));
        assert!(!tokens.accepts(Some(&h("Basic alpha"))));
        assert!(!tokens.accepts(None));
        assert!(matches!(CallerTokens::from_text("# nothing\n\n"), Err(CallerTokensError::Empty)));
        assert!(!format!("{tokens:?}").contains("alpha"));
    }

    #[test]
    fn only_the_service_methods_need_a_token() {
        let tokens = CallerTokens::from_text("alpha\n").unwrap();
        let req = |path: &str, auth: Option<&str>| {
            let mut b = Request::builder().uri(path);
            if let Some(auth) = auth {
                b = b.header(http::header::AUTHORIZATION, auth);
            }
            b.body(()).unwrap()
        };
        let get_script = "/callbot.v1.CallBotService/GetScript";
        assert!(!admits(Some(&tokens), &req(get_script, None)));
        assert!(!admits(Some(&tokens), &req(get_script, Some("Bearer beta"))));
        assert!(admits(Some(&tokens), &req(get_script, Some("Bearer alpha"))));
        assert!(admits(Some(&tokens), &req("/grpc.health.v1.Health/Check", None)));
        assert!(admits(Some(&tokens), &req("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", None)));
        assert!(admits(None, &req(get_script, None)));
    }
}
