//! Which tenants the receiver serves, their URL tokens and their keys.
//!
//! A tenant's id is `default` for the configured key, the tenant's name with a tenants file, and
//! `k-<20 hex of SHA-256(key)>` for a caller's own key (`--allow-caller-api-key`): stable across
//! restarts and replicas, and never the key. Its URL token is `<id>.<32 hex>`, the hex being the
//! start of HMAC-SHA256(`--webhook-secret`, "callbot-webhook:" + id): every replica sharing the
//! secret derives and accepts the same token, and checks it in constant time without having seen
//! the tenant before (a caller key seen by another replica). Tokens are never logged.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{
    domain::ApiKey,
    events::TenantId,
    tenancy::{ConfiguredKey, Tenancy},
};

/// Hex digits of the MAC in a token (128 bits).
const MAC_HEX: usize = 32;

/// The tenants' URL tokens, over the tenants the tenancy module serves.
pub(crate) struct Directory {
    /// What new tokens are derived from: fixed, or the live content of `--webhook-secret-file`.
    secret: ConfiguredKey,
    /// The secret before a rotation (`--webhook-secret-previous`): its tokens are still accepted.
    previous: Option<ApiKey>,
    tenancy: Arc<Tenancy>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Directory {
    /// A directory over `tenancy`, tokens keyed by `secret` (and `previous`, still accepted).
    pub(crate) fn new(secret: ConfiguredKey, previous: Option<ApiKey>, tenancy: Arc<Tenancy>) -> Self {
        Directory { secret, previous, tenancy }
    }

    fn mac(&self, tenant: &str) -> String {
        mac_of(&self.secret.current(), tenant)
    }
}

/// The MAC of `tenant`'s token under `secret`, as hex.
fn mac_of(secret: &ApiKey, tenant: &str) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return String::new();
    };
    mac.update(b"callbot-webhook:");
    mac.update(tenant.as_bytes());
    hex(&mac.finalize().into_bytes())[..MAC_HEX].to_owned()
}

impl Directory {
    /// The URL token of `tenant`.
    pub(crate) fn token(&self, tenant: &str) -> String {
        format!("{tenant}.{}", self.mac(tenant))
    }

    /// The tenant a token belongs to, when it is one of ours and the tenant is served.
    pub(crate) fn verify(&self, token: &str) -> Option<TenantId> {
        let (tenant, mac) = token.rsplit_once('.')?;
        if tenant.is_empty() || tenant.len() > 64 || mac.len() != MAC_HEX {
            return None;
        }
        let current = bool::from(self.mac(tenant).as_bytes().ct_eq(mac.as_bytes()));
        // Checked whether or not the current one matched, so the time taken says nothing.
        let previous =
            self.previous.as_ref().is_some_and(|p| bool::from(mac_of(p, tenant).as_bytes().ct_eq(mac.as_bytes())));
        if !(current | previous) {
            return None;
        }
        let served = self.tenancy.serves(tenant);
        served.then(|| Arc::from(tenant))
    }

    /// The key of `tenant`, when known.
    pub(crate) fn key_of(&self, tenant: &str) -> Option<ApiKey> {
        self.tenancy.key_of(tenant)
    }

    /// The tenants known from the start (the configured key's, or every tenant of the file).
    pub(crate) fn initial_tenants(&self) -> Vec<TenantId> {
        self.tenancy.initial_tenants()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{
        reload::Live,
        tenancy::{Callers, DEFAULT_TENANT, caller_key_tenant},
    };

    fn directory(secret: &str) -> Directory {
        let revisions = tokio::sync::watch::channel(0).1;
        let tenancy = Tenancy::new(Callers::Open, ConfiguredKey::Fixed(ApiKey::new("key-1")), true, revisions);
        Directory::new(ConfiguredKey::Fixed(ApiKey::new(secret)), None, Arc::new(tenancy))
    }

    #[test]
    fn tokens_are_derived_verified_and_tied_to_the_secret() {
        let a = directory("s3cret");
        let token = a.token(DEFAULT_TENANT);
        assert!(token.starts_with("default.") && token.len() == "default.".len() + MAC_HEX, "{token}");
        assert_eq!(directory("s3cret").token(DEFAULT_TENANT), token, "every replica derives the same");
        assert_eq!(a.verify(&token).as_deref(), Some(DEFAULT_TENANT));
        assert_eq!(directory("other").verify(&token), None, "another secret");
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        for bad in [&forged[..], "", ".", "default", "default.", &token[..token.len() - 1], &format!("{token}0")] {
            assert_eq!(a.verify(bad), None, "{bad}");
        }
        // A caller-key tenant's token is accepted without having seen it (another replica did).
        let caller = caller_key_tenant(&ApiKey::new("their-key"));
        assert!(caller.starts_with("k-") && !caller.contains("their"));
        assert_eq!(a.verify(&a.token(&caller)), Some(caller.clone()));
        // A tenant that is not served here.
        assert_eq!(a.verify(&a.token("school")), None);
        assert_eq!(a.key_of(&caller), None, "a caller key is known once its tenant called (tenancy's tests)");
        assert_eq!(a.key_of(DEFAULT_TENANT).map(|k| k.expose().to_owned()).as_deref(), Some("key-1"));
    }

    #[test]
    fn during_a_rotation_both_secrets_tokens_are_taken_and_new_ones_use_the_current() {
        let old = directory("old-secret-old-secret-old-secret-00");
        let old_token = old.token(DEFAULT_TENANT);
        let live = Live::new(ApiKey::new("new-secret-new-secret-new-secret-00"));
        let revisions = tokio::sync::watch::channel(0).1;
        let tenancy = Arc::new(Tenancy::new(Callers::Open, ConfiguredKey::Fixed(ApiKey::new("k")), true, revisions));
        let previous = Some(ApiKey::new("old-secret-old-secret-old-secret-00"));
        let rotating = Directory::new(ConfiguredKey::File(live.clone()), previous, tenancy.clone());
        let new_token = rotating.token(DEFAULT_TENANT);
        assert_ne!(new_token, old_token);
        assert_eq!(rotating.verify(&old_token).as_deref(), Some(DEFAULT_TENANT), "the previous secret's");
        assert_eq!(rotating.verify(&new_token).as_deref(), Some(DEFAULT_TENANT), "the current one's");
        assert_eq!(directory("a-third-secret-a-third-secret-000").verify(&new_token), None);
        // The file changes: new tokens follow it; without a previous secret, old tokens are refused.
        live.replace(ApiKey::new("newer-secret-newer-secret-newer-0"));
        assert_ne!(rotating.token(DEFAULT_TENANT), new_token);
        let done = Directory::new(ConfiguredKey::File(live), None, tenancy);
        assert_eq!(done.verify(&old_token), None);
        assert_eq!(done.verify(&done.token(DEFAULT_TENANT)).as_deref(), Some(DEFAULT_TENANT));
    }
}
