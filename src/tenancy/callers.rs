//! Caller authentication: who may call `CallBotService` and, with a tenants file, as which
//! tenant. Three modes, one per configuration: open (no caller authentication), the accepted
//! bearer tokens of `--caller-tokens-file`, or the identities of `--tenants-file` (bearer token
//! digests, and the SPIFFE ID and DNS names of an mTLS client certificate), each acting for its
//! tenant. Health and reflection stay open in every mode.

//! Who a caller is, from what it presents: the bearer tokens of `--caller-tokens-file` (kept as
//! SHA-256 digests, compared in constant time), the identities of `--tenants-file` (bearer token
//! digests, and the SPIFFE ID and DNS names of an mTLS client certificate) and the caller's own
//! `x-api-key`. The metadata keys of caller identity are read here and nowhere else.

use std::{collections::HashSet, sync::Arc};

use http::{HeaderValue, Request};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use x509_parser::extensions::GeneralName;

use super::{
    Tenant,
    file::{Identity, TenantTable},
};
use crate::status::FacadeError;

/// The metadata a caller names its expected tenant with (README, "Tenants").
const TENANT_HEADER: &str = "x-callbot-tenant";

/// The metadata a caller sends its own upstream key in (`--allow-caller-api-key`).
const API_KEY_HEADER: &str = "x-api-key";

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
    /// The file could not be read (the path named: the operator must see which file).
    #[error("--caller-tokens-file: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It holds no token: nobody could call, surely a mistake.
    #[error("the caller tokens file holds no token")]
    Empty,
}

impl CallerTokens {
    /// Parses the file's text: one token per line (blank lines and `#` comments skipped). The
    /// file itself is read (and re-read) by `reload.rs`.
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
        let Some(digest) = authorization.and_then(bearer_digest) else {
            return false;
        };
        // Check every digest, so the time taken does not depend on which (if any) matched.
        self.digests.iter().fold(0u8, |found, d| found | d.ct_eq(&digest).unwrap_u8()) == 1
    }
}

/// The SHA-256 of the token in `Bearer <token>`; `None` for another scheme or no token.
fn bearer_digest(authorization: &HeaderValue) -> Option<[u8; 32]> {
    let value = authorization.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    (!token.is_empty()).then(|| Sha256::digest(token.as_bytes()).into())
}

/// The tenant a `CallBotService` call runs as with a tenants file, in this order: the caller is
/// known (a bearer token it presents must be listed: a wrong token is never overlooked because a
/// certificate matched), the tenant it names (if it names one) is one it acts for, and it sends no
/// key of its own.
pub(super) fn tenant_of<B>(table: &TenantTable, req: &Request<B>) -> Result<Tenant, FacadeError> {
    // Distinct tenants of the caller's listed identities: one, rarely two.
    let mut found: Vec<usize> = Vec::with_capacity(1);
    let mut add = |i: usize| {
        if !found.contains(&i) {
            found.push(i);
        }
    };
    if let Some(authorization) = req.headers().get(http::header::AUTHORIZATION) {
        let digest = bearer_digest(authorization).ok_or(FacadeError::CallerNotListed)?;
        add(table.tenant_of(&Identity::Bearer(digest)).ok_or(FacadeError::CallerNotListed)?);
    }
    for identity in certificate_identities(req) {
        if let Some(i) = table.tenant_of(&identity) {
            add(i);
        }
    }
    let named = req.headers().get(TENANT_HEADER).filter(|v| !v.as_bytes().trim_ascii().is_empty());
    let index = match (named, found.as_slice()) {
        (_, []) => return Err(FacadeError::CallerNotListed),
        (Some(name), found) => {
            let name = name.to_str().map_err(|_| FacadeError::TenantNotAllowed)?.trim();
            table.by_name(name).filter(|i| found.contains(i)).ok_or(FacadeError::TenantNotAllowed)?
        }
        (None, [only]) => *only,
        (None, _) => return Err(FacadeError::TenantAmbiguous),
    };
    if req.headers().get(API_KEY_HEADER).is_some_and(|v| !v.as_bytes().trim_ascii().is_empty()) {
        return Err(FacadeError::CallerApiKeyWithTenants);
    }
    Ok(table.tenant(index).clone())
}

/// Whether `req` carries `Bearer <a token of tokens>`.
pub(super) fn presents_token<B>(tokens: &CallerTokens, req: &Request<B>) -> bool {
    tokens.accepts(req.headers().get(http::header::AUTHORIZATION))
}

/// The caller's own upstream key (`x-api-key` metadata), trimmed; `None` when absent or blank.
pub(super) fn caller_api_key<B>(req: &Request<B>) -> Option<&str> {
    let value = req.headers().get(API_KEY_HEADER)?.to_str().ok()?.trim();
    (!value.is_empty()).then_some(value)
}

/// The identities of the call's mTLS client certificate (none without mTLS): its SPIFFE ID (a
/// URI SAN `spiffe://...`) and its DNS SANs. rustls has verified the chain by then.
fn certificate_identities<B>(req: &Request<B>) -> Vec<Identity> {
    let certs = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(TlsConnectInfo::peer_certs);
    match certs.as_deref().and_then(|c| c.first()) {
        Some(leaf) => san_identities(leaf.as_ref()),
        None => Vec::new(),
    }
}

/// The SPIFFE and DNS identities in a DER certificate's subject alternative names.
fn san_identities(der: &[u8]) -> Vec<Identity> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(Identity::Spiffe((*uri).to_owned())),
            GeneralName::DNSName(dns) => Some(Identity::Dns(dns.to_ascii_lowercase())),
            _ => None,
        })
        .collect()
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
    fn certificate_sans_give_spiffe_and_dns_identities() {
        use rcgen::{CertificateParams, KeyPair, SanType, string::Ia5String};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![
            SanType::URI(Ia5String::try_from("spiffe://cluster.local/ns/a/sa/b").unwrap()),
            SanType::URI(Ia5String::try_from("https://not-spiffe.example").unwrap()),
            SanType::DnsName(Ia5String::try_from("Notifier.Grades.SVC").unwrap()),
            SanType::Rfc822Name(Ia5String::try_from("ops@example.com").unwrap()),
        ];
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            san_identities(cert.der()),
            [Identity::Spiffe("spiffe://cluster.local/ns/a/sa/b".into()), Identity::Dns("notifier.grades.svc".into())]
        );
        assert_eq!(san_identities(b"not a certificate"), []);
    }
}
