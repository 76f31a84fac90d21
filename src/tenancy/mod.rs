//! Tenancy: who a `CallBotService` call runs as, settled once per call, in the middleware, for
//! every mode, and what the rest of the facade asks about tenants.
//!
//! A caller becomes a [`Tenant`] (a name for metrics, logs and the event store; an upstream key
//! for the upstream only) in one of three ways, one per configuration:
//! - **tenants file** (`--tenants-file`): the caller's identity (a bearer token's digest, an mTLS
//!   client certificate's SPIFFE ID or DNS names) names its tenant, whose key the file gives;
//! - **caller key** (`--allow-caller-api-key`): a caller's own `x-api-key` is its tenant,
//!   `k-<20 hex of SHA-256(key)>` (stable across restarts and replicas, never the key);
//! - **single key** (otherwise): every caller is the `default` tenant of `--api-key` /
//!   `--api-key-file`; with `--caller-tokens-file`, only the holders of a listed token may call.
//!
//! Handlers read the tenant from the request (the middleware puts it there) and never parse
//! metadata: the metadata keys of caller identity are read in `callers.rs` only. The webhook
//! directory asks this module which tenants are served and with which key. A caller-key tenant's
//! first call is a reaction of this module ([`Tenancy::on_new_tenant`]: the application hooks the
//! webhook registration there), not of a handler.
//!
//! - `callers.rs`: caller tokens, certificate identities, the caller's own key;
//! - `file.rs`: the tenants file, read and checked whole;
//! - `secrets.rs`: the secret files (key file, caller tokens, tenants file) read at start and kept
//!   live (`reload.rs`).

mod callers;
mod file;
mod secrets;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
};

use http::Request;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

pub use callers::{CallerTokens, CallerTokensError};
pub(crate) use secrets::SecretSources;

use crate::{domain::ApiKey, reload::Live, status::FacadeError};
use file::TenantTable;

/// The name of the configured key's tenant.
pub(crate) const DEFAULT_TENANT: &str = "default";

/// The methods that run as a tenant; health and reflection stay open (and tenantless) in every
/// mode, so probes and tooling work.
const SERVICE_PREFIX: &str = "/callbot.v1.CallBotService/";

/// Caller-key tenants remembered (their keys, for history lookups and registration); past it the
/// least recently accepted leaves.
const MAX_CALLER_TENANTS: usize = 10_000;

/// The metadata a revocation check replays (every other key is irrelevant to who the caller is).
const IDENTITY_HEADERS: [&str; 3] = ["authorization", "x-callbot-tenant", "x-api-key"];

/// The configured tenant key: fixed (`--api-key`, or the simulator's), or the live content of
/// `--api-key-file`. Fixed is kept apart so that the common case takes no lock per call.
#[derive(Debug, Clone)]
pub enum ConfiguredKey {
    /// Given once.
    Fixed(ApiKey),
    /// Re-read when the file changes.
    File(Live<ApiKey>),
}

impl ConfiguredKey {
    pub(crate) fn current(&self) -> ApiKey {
        match self {
            ConfiguredKey::Fixed(key) => key.clone(),
            ConfiguredKey::File(live) => (*live.get()).clone(),
        }
    }
}

/// A tenant a call runs as: its name (for metrics, logs and the event store) and its upstream key
/// (for the upstream only). The hooks the calling policy and the console will need hang here.
#[derive(Clone)]
pub(crate) struct Tenant {
    /// `default`, a tenants file's name (`[a-z0-9-]+`), or `k-<hash>` for a caller's own key.
    pub(crate) name: Arc<str>,
    /// The key the upstream requests of the tenant's calls carry.
    pub(crate) key: ApiKey,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenant({})", self.name)
    }
}

/// Who may call `CallBotService`, as configured; the files behind it may be reloaded.
#[derive(Clone, Debug)]
pub(crate) enum Callers {
    /// Anyone who can connect (no caller authentication).
    Open,
    /// The holders of a token of `--caller-tokens-file`.
    Tokens(Live<CallerTokens>),
    /// The identities of `--tenants-file`, each acting for its tenant.
    Tenants(Live<TenantTable>),
}

/// What is called when a caller-key tenant makes its first call in this process.
type NewTenantHook = Box<dyn Fn(Arc<str>) + Send + Sync>;

/// Turns callers into tenants, and answers what the rest of the facade asks about tenants.
pub(crate) struct Tenancy {
    callers: Callers,
    /// The `default` tenant's key (unused with a tenants file).
    configured: ConfiguredKey,
    /// Whether a caller's own `x-api-key` may choose its tenant.
    allow_caller_api_key: bool,
    /// `default`, allocated once.
    default_name: Arc<str>,
    /// The caller-key tenants whose key the provider accepted, with their keys and when last
    /// accepted (bounded: the least recently accepted leaves).
    caller_keys: Mutex<CallerKeys>,
    /// Bumped by every reload of the tokens or tenants file: open streams re-check their caller.
    revisions: watch::Receiver<u64>,
    /// The reaction to a caller-key tenant's first call (the webhook registration).
    on_new_tenant: OnceLock<NewTenantHook>,
}

/// The remembered caller keys.
#[derive(Default)]
struct CallerKeys {
    keys: HashMap<Arc<str>, (ApiKey, u64)>,
    /// Counts acceptances, to tell the least recent.
    tick: u64,
}

impl fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenancy({:?}, caller keys {})", self.callers, self.allow_caller_api_key)
    }
}

/// The tenant name of a caller's own key: `k-` and the first 20 hex digits of its SHA-256.
pub(crate) fn caller_key_tenant(key: &ApiKey) -> Arc<str> {
    let digest = Sha256::digest(key.expose().as_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    Arc::from(format!("k-{hex}"))
}

impl Tenancy {
    /// Tenancy over `callers`, the `default` tenant's `configured` key, and the caller-key rule;
    /// `revisions` changes when a reload replaced the callers (`SecretSources::watch`).
    pub(crate) fn new(
        callers: Callers,
        configured: ConfiguredKey,
        allow_caller_api_key: bool,
        revisions: watch::Receiver<u64>,
    ) -> Self {
        Tenancy {
            callers,
            configured,
            allow_caller_api_key,
            default_name: Arc::from(DEFAULT_TENANT),
            caller_keys: Mutex::new(CallerKeys::default()),
            revisions,
            on_new_tenant: OnceLock::new(),
        }
    }

    /// Tenancy whose callers never change (tests).
    #[cfg(test)]
    fn fixed(callers: Callers, configured: ConfiguredKey, allow_caller_api_key: bool) -> Self {
        Tenancy::new(callers, configured, allow_caller_api_key, watch::channel(0).1)
    }

    /// Sets the reaction to a caller-key tenant's first call (once; later calls are ignored).
    pub(crate) fn on_new_tenant(&self, hook: impl Fn(Arc<str>) + Send + Sync + 'static) {
        let _ = self.on_new_tenant.set(Box::new(hook));
    }

    /// Whether tenants are named by a tenants file (their names then go into spans and access
    /// lines; the single and caller-key tenants stay out of them, as before).
    pub(crate) fn names_callers(&self) -> bool {
        matches!(self.callers, Callers::Tenants(_))
    }

    /// Whether callers prove who they are (caller tokens or a tenants file): the console then asks
    /// for a bearer token, as the gRPC API does.
    pub(crate) fn authenticates_callers(&self) -> bool {
        !matches!(self.callers, Callers::Open)
    }

    /// The tenant `req` runs as: `None` for the methods outside `CallBotService` (health,
    /// reflection), which run as themselves; an error when the caller may not call, or not so.
    pub(crate) fn resolve<B>(&self, req: &Request<B>) -> Result<Option<Tenant>, FacadeError> {
        if !req.uri().path().starts_with(SERVICE_PREFIX) {
            return Ok(None);
        }
        match &self.callers {
            Callers::Tenants(table) => return callers::tenant_of(&table.get(), req).map(Some),
            Callers::Tokens(tokens) if !callers::presents_token(&tokens.get(), req) => {
                return Err(FacadeError::CallerUnauthenticated);
            }
            Callers::Tokens(_) | Callers::Open => {}
        }
        match callers::caller_api_key(req) {
            None => Ok(Some(Tenant { name: self.default_name.clone(), key: self.configured.current() })),
            Some(_) if !self.allow_caller_api_key => Err(FacadeError::CallerApiKeyNotAllowed),
            Some(key) => {
                let key = ApiKey::new(key);
                Ok(Some(Tenant { name: caller_key_tenant(&key), key }))
            }
        }
    }

    /// The provider accepted `key` (it issued a token for it): a caller's own key is remembered
    /// from now on (the receiver then knows its tenant's key) and, the first time, reacted to
    /// (its webhook registered). Until then a caller key is nobody: bogus keys leave no trace.
    pub(crate) fn accepted(&self, key: &ApiKey) {
        if !self.allow_caller_api_key || !matches!(self.callers, Callers::Open | Callers::Tokens(_)) {
            return;
        }
        if *key == self.configured.current() {
            return;
        }
        let name = caller_key_tenant(key);
        if self.note_caller_key(&name, key) {
            if let Some(hook) = self.on_new_tenant.get() {
                hook(name);
            }
        }
    }

    /// Notes a caller-key tenant as accepted now; true the first time it is seen.
    fn note_caller_key(&self, tenant: &Arc<str>, key: &ApiKey) -> bool {
        let Ok(mut known) = self.caller_keys.lock() else { return false };
        known.tick += 1;
        let tick = known.tick;
        if let Some(entry) = known.keys.get_mut(tenant) {
            *entry = (key.clone(), tick);
            return false;
        }
        if known.keys.len() >= MAX_CALLER_TENANTS {
            let oldest = known.keys.iter().min_by_key(|(_, (_, at))| *at).map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                known.keys.remove(&oldest);
            }
        }
        known.keys.insert(tenant.clone(), (key.clone(), tick));
        true
    }

    /// What an open stream of `req`'s caller, running as `tenant`, needs to learn that a reload
    /// withdrew the caller; `None` when nothing can withdraw it (no tokens or tenants file).
    pub(crate) fn revocable<B>(self: &Arc<Self>, req: &Request<B>, tenant: &Arc<str>) -> Option<Revocable> {
        if matches!(self.callers, Callers::Open) {
            return None;
        }
        let mut probe = Request::builder().uri(req.uri().clone());
        for name in IDENTITY_HEADERS {
            if let Some(value) = req.headers().get(name) {
                probe = probe.header(name, value.clone());
            }
        }
        let mut probe = probe.body(()).ok()?;
        if let Some(tls) = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>() {
            probe.extensions_mut().insert(tls.clone());
        }
        Some(Revocable { tenancy: self.clone(), probe: Arc::new(probe), tenant: tenant.clone() })
    }

    /// Whether `tenant` is served here: a tenant of the file, or (without one) `default` and any
    /// caller-key tenant, seen here or not (another replica may have seen it).
    pub(crate) fn serves(&self, tenant: &str) -> bool {
        match &self.callers {
            Callers::Tenants(table) => table.get().by_name(tenant).is_some(),
            Callers::Open | Callers::Tokens(_) => tenant == DEFAULT_TENANT || tenant.starts_with("k-"),
        }
    }

    /// The key of `tenant`, when known.
    pub(crate) fn key_of(&self, tenant: &str) -> Option<ApiKey> {
        match &self.callers {
            Callers::Tenants(table) => {
                let table = table.get();
                table.by_name(tenant).map(|i| table.tenant(i).key.clone())
            }
            Callers::Open | Callers::Tokens(_) if tenant == DEFAULT_TENANT => Some(self.configured.current()),
            Callers::Open | Callers::Tokens(_) => {
                self.caller_keys.lock().ok()?.keys.get(tenant).map(|(k, _)| k.clone())
            }
        }
    }

    /// The tenants known now: those of [`Tenancy::initial_tenants`] and the caller-key tenants
    /// remembered.
    pub(crate) fn known_tenants(&self) -> Vec<Arc<str>> {
        let mut known = self.initial_tenants();
        if let Ok(callers) = self.caller_keys.lock() {
            known.extend(callers.keys.keys().cloned());
        }
        known
    }

    /// The tenants known from the start (the configured key's, or every tenant of the file).
    pub(crate) fn initial_tenants(&self) -> Vec<Arc<str>> {
        match &self.callers {
            Callers::Tenants(table) => table.get().names().map(Arc::from).collect(),
            Callers::Open | Callers::Tokens(_) => vec![self.default_name.clone()],
        }
    }
}

/// An open stream's caller, as it was when the stream opened, to check again after each reload.
#[derive(Clone)]
pub(crate) struct Revocable {
    tenancy: Arc<Tenancy>,
    /// The identity the caller presented: the path, its identity metadata, its certificate.
    probe: Arc<Request<()>>,
    tenant: Arc<str>,
}

impl fmt::Debug for Revocable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Revocable({})", self.tenant)
    }
}

impl Revocable {
    /// Resolves once a reload no longer lets the caller act as its tenant (never, otherwise).
    pub(crate) fn revoked(self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut revisions = self.tenancy.revisions.clone();
            revisions.mark_unchanged();
            loop {
                if revisions.changed().await.is_err() {
                    return std::future::pending().await;
                }
                match self.tenancy.resolve(&self.probe) {
                    Ok(Some(now)) if now.name == self.tenant => {}
                    _ => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn table(yaml: &str) -> TenantTable {
        let env = |_: &str| Some("key".to_owned());
        file::parse(yaml).unwrap().resolve(std::path::Path::new("."), &mut Default::default(), &env).unwrap()
    }

    fn digest(token: &str) -> String {
        Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    const GET: &str = "/callbot.v1.CallBotService/GetScript";
    const AUTH: &str = "authorization";

    fn fixed(key: &str) -> ConfiguredKey {
        ConfiguredKey::Fixed(ApiKey::new(key))
    }

    #[test]
    fn the_tenant_of_a_call_follows_its_identity_and_its_metadata() {
        let table = Live::new(table(&format!(
            "tenants:\n- name: a\n  api_key_env: A\n  callers:\n  - bearer_sha256: {}\n\
             - name: b\n  api_key_env: B\n  callers:\n  - bearer_sha256: {}\n",
            digest("token-a"),
            digest("token-b")
        )));
        let tenancy = Tenancy::fixed(Callers::Tenants(table), fixed("unused"), false);
        let call = |path: &str, headers: &[(&str, &str)]| {
            tenancy.resolve(&request(path, headers)).map(|t| t.map(|t| t.name.to_string()))
        };
        assert_eq!(call(GET, &[(AUTH, "Bearer token-a")]).unwrap().as_deref(), Some("a"));
        assert_eq!(call(GET, &[(AUTH, "Bearer token-b"), ("x-callbot-tenant", "b")]).unwrap().as_deref(), Some("b"));
        assert_eq!(call(GET, &[(AUTH, "Bearer token-a"), ("x-api-key", "")]).unwrap().as_deref(), Some("a"));
        let refused = |headers: &[(&str, &str)]| call(GET, headers).unwrap_err().to_string();
        assert_eq!(refused(&[]), FacadeError::CallerNotListed.to_string());
        assert_eq!(refused(&[(AUTH, "Bearer token-c")]), FacadeError::CallerNotListed.to_string());
        assert_eq!(refused(&[(AUTH, "token-a")]), FacadeError::CallerNotListed.to_string());
        assert_eq!(refused(&[("x-callbot-tenant", "a")]), FacadeError::CallerNotListed.to_string());
        assert_eq!(
            refused(&[(AUTH, "Bearer token-a"), ("x-callbot-tenant", "b")]),
            FacadeError::TenantNotAllowed.to_string()
        );
        assert_eq!(
            refused(&[(AUTH, "Bearer token-a"), ("x-callbot-tenant", "zzz")]),
            FacadeError::TenantNotAllowed.to_string()
        );
        assert_eq!(
            refused(&[(AUTH, "Bearer token-a"), ("x-api-key", "k")]),
            FacadeError::CallerApiKeyWithTenants.to_string()
        );
        // Health and reflection stay open, as themselves.
        assert_eq!(call("/grpc.health.v1.Health/Check", &[]).unwrap(), None);
        assert!(tenancy.serves("a") && !tenancy.serves("default") && !tenancy.serves("k-0123"));
        assert_eq!(tenancy.initial_tenants(), [Arc::from("a"), Arc::from("b")]);
        assert_eq!(tenancy.key_of("b").map(|k| k.expose().to_owned()).as_deref(), Some("key"));
        assert!(tenancy.names_callers());
    }

    #[test]
    fn only_the_service_methods_need_a_token() {
        let tokens = Live::new(CallerTokens::from_text("alpha\n").unwrap());
        let tenancy = Tenancy::fixed(Callers::Tokens(tokens), fixed("key-1"), false);
        let name = |path: &str, headers: &[(&str, &str)]| {
            tenancy
                .resolve(&request(path, headers))
                .map(|t| t.map(|t| (t.name.to_string(), t.key.expose().to_owned())))
                .map_err(|e| e.to_string())
        };
        assert_eq!(name(GET, &[]), Err(FacadeError::CallerUnauthenticated.to_string()));
        assert_eq!(name(GET, &[(AUTH, "Bearer beta")]), Err(FacadeError::CallerUnauthenticated.to_string()));
        assert_eq!(name(GET, &[(AUTH, "Bearer alpha")]), Ok(Some(("default".into(), "key-1".into()))));
        assert_eq!(name("/grpc.health.v1.Health/Check", &[]), Ok(None));
        assert_eq!(name("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", &[]), Ok(None));
        // A token first, then the key rule.
        assert_eq!(
            name(GET, &[(AUTH, "Bearer alpha"), ("x-api-key", "k")]),
            Err(FacadeError::CallerApiKeyNotAllowed.to_string())
        );
        assert_eq!(name(GET, &[("x-api-key", "k")]), Err(FacadeError::CallerUnauthenticated.to_string()));
        assert!(!tenancy.names_callers());
    }

    #[test]
    fn a_callers_own_key_is_remembered_only_once_the_provider_accepted_it() {
        let tenancy = Tenancy::fixed(Callers::Open, fixed("key-1"), true);
        let reactions = Arc::new(Mutex::new(Vec::new()));
        let seen = reactions.clone();
        tenancy.on_new_tenant(move |name| seen.lock().unwrap().push(name));
        let tenant = |headers: &[(&str, &str)]| tenancy.resolve(&request(GET, headers)).unwrap().unwrap();
        let default = tenant(&[("x-api-key", "  ")]);
        assert_eq!((&*default.name, default.key.expose()), (DEFAULT_TENANT, "key-1"));
        let theirs = tenant(&[("x-api-key", " their-key ")]);
        assert_eq!(theirs.key.expose(), "their-key");
        assert_eq!(theirs.name, caller_key_tenant(&ApiKey::new("their-key")));
        assert!(theirs.name.starts_with("k-") && theirs.name.len() == 22 && !theirs.name.contains("their"));
        // Calls alone (bogus keys among them) leave no trace and start nothing.
        for i in 0..1000 {
            tenant(&[("x-api-key", &format!("bogus-{i}"))]);
        }
        assert!(reactions.lock().unwrap().is_empty());
        assert_eq!(tenancy.key_of(&theirs.name), None, "not accepted yet");
        // The provider accepts it: remembered, reacted to once.
        tenancy.accepted(&theirs.key);
        tenancy.accepted(&theirs.key);
        tenancy.accepted(&ApiKey::new("key-1"));
        assert_eq!(*reactions.lock().unwrap(), std::slice::from_ref(&theirs.name), "one, none for the configured key");
        assert_eq!(tenancy.key_of(&theirs.name).map(|k| k.expose().to_owned()).as_deref(), Some("their-key"));
        assert_eq!(tenancy.key_of(DEFAULT_TENANT).map(|k| k.expose().to_owned()).as_deref(), Some("key-1"));
        assert_eq!(tenancy.key_of("k-00000000000000000000"), None);
        assert!(tenancy.serves("k-00000000000000000000") && tenancy.serves(DEFAULT_TENANT) && !tenancy.serves("a"));
        // Without --allow-caller-api-key, a caller's key is refused, and an accepted key is nobody's.
        let strict = Tenancy::fixed(Callers::Open, fixed("key-1"), false);
        let refused = strict.resolve(&request(GET, &[("x-api-key", "k")])).unwrap_err();
        assert_eq!(refused.to_string(), FacadeError::CallerApiKeyNotAllowed.to_string());
        strict.accepted(&ApiKey::new("k"));
        assert_eq!(strict.key_of(&caller_key_tenant(&ApiKey::new("k"))), None);
    }

    #[test]
    fn remembered_caller_keys_are_bounded_the_least_recently_accepted_leaving() {
        let tenancy = Tenancy::fixed(Callers::Open, fixed("key-1"), true);
        let key = |i: usize| ApiKey::new(format!("key-{i:05}-x"));
        for i in 0..MAX_CALLER_TENANTS {
            tenancy.accepted(&key(i));
        }
        tenancy.accepted(&key(0)); // accepted again: the most recent now
        tenancy.accepted(&key(MAX_CALLER_TENANTS));
        let known = |i: usize| tenancy.key_of(&caller_key_tenant(&key(i))).is_some();
        assert!(known(0) && known(MAX_CALLER_TENANTS) && known(2));
        assert!(!known(1), "the least recently accepted left");
        assert_eq!(tenancy.caller_keys.lock().unwrap().keys.len(), MAX_CALLER_TENANTS);
    }

    #[tokio::test]
    async fn a_reload_that_withdraws_the_caller_ends_what_it_left_open() {
        let make = |holder: &str| {
            table(&format!(
                "tenants:\n- name: a\n  api_key_env: A\n  callers:\n  - bearer_sha256: {}\n\
                 - name: b\n  api_key_env: B\n  callers:\n  - bearer_sha256: {}\n",
                digest(holder),
                digest("token-b")
            ))
        };
        let live = Live::new(make("token-a"));
        let (bump, revisions) = watch::channel(0u64);
        let tenancy = Arc::new(Tenancy::new(Callers::Tenants(live.clone()), fixed("unused"), false, revisions));
        let req = request("/callbot.v1.CallBotService/WatchCallEvents", &[(AUTH, "Bearer token-a")]);
        let name = tenancy.resolve(&req).unwrap().unwrap().name;
        let revoked = tokio::spawn(tenancy.revocable(&req, &name).unwrap().revoked());
        // A reload that keeps the caller changes nothing.
        live.replace(make("token-a"));
        bump.send_modify(|r| *r += 1);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!revoked.is_finished());
        // One that gives tenant a another token ends it.
        live.replace(make("token-a2"));
        bump.send_modify(|r| *r += 1);
        tokio::time::timeout(std::time::Duration::from_secs(2), revoked).await.unwrap().unwrap();
        // Without a tokens or tenants file nothing can withdraw a caller.
        let open = Arc::new(Tenancy::fixed(Callers::Open, fixed("k"), false));
        assert!(open.revocable(&req, &name).is_none());
    }
}
