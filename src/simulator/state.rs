//! The simulator's shared state: catalogue, issued tokens, recorded sessions, counters and queued faults.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;

use super::SimConfig;
use super::calls::Calls;
use super::catalogue;
use super::clock::Clock;
use super::delivery::Deliverer;
use super::faults::Fault;
use super::webhook_faults;
use super::webhooks::Hooks;

/// Most sessions kept for `GET /_sim/sessions`; older ones are dropped (counters keep counting),
/// and with them their `ext_session_id`, so duplicates are refused among the sessions kept.
pub(crate) const MAX_SESSIONS: usize = 100_000;

/// Tokens kept before expired ones are pruned.
const TOKEN_PRUNE_THRESHOLD: usize = 10_000;

/// One issued access token.
struct TokenInfo {
    api_key: String,
    expires_at: Instant,
}

/// One accepted callBot session, as recorded for tests.
pub(crate) struct Session {
    pub autocall_id: String,
    pub ext_session_id: Option<String>,
    pub api_key_id: String,
    pub cid: String,
    /// Correlation headers received (`x-request-id`, `traceparent`, `tracestate`), so tests can
    /// check what the facade forwards.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The exact request body bytes (valid JSON: it was parsed before being accepted).
    pub body: Bytes,
    pub received_at_ms: u64,
    /// The HTTP version the request came over (`HTTP/1.1`, `HTTP/2.0`).
    pub http_version: &'static str,
}

/// Request counters, reported by `GET /_sim/stats`.
#[derive(Default)]
pub(crate) struct Stats {
    pub auth_calls: AtomicU64,
    pub script_list_calls: AtomicU64,
    pub execute_calls: AtomicU64,
    pub sessions_total: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Bytes of `body_size` padding handed to connections (a reader that stops early stops it).
    pub padding_bytes_sent: AtomicU64,
    pub webhook_register_calls: AtomicU64,
    pub webhook_list_calls: AtomicU64,
    pub webhook_destroy_calls: AtomicU64,
    pub history_search_calls: AtomicU64,
    /// Calls dialled (each attempt).
    pub calls_placed: AtomicU64,
    /// Webhook POST attempts, those answered 2xx, those that failed, deliveries given up.
    pub webhook_deliveries: AtomicU64,
    pub webhook_delivered: AtomicU64,
    pub webhook_failed_attempts: AtomicU64,
    pub webhook_given_up: AtomicU64,
    /// Deliveries a `lose` fault took (never attempted).
    pub webhook_lost: AtomicU64,
    /// Calls a `never_ends` fault held open.
    pub calls_never_ended: AtomicU64,
}

impl Stats {
    fn reset(&self) {
        for c in [
            &self.auth_calls,
            &self.script_list_calls,
            &self.execute_calls,
            &self.sessions_total,
            &self.unauthorized,
            &self.padding_bytes_sent,
            &self.webhook_register_calls,
            &self.webhook_list_calls,
            &self.webhook_destroy_calls,
            &self.history_search_calls,
            &self.calls_placed,
            &self.webhook_deliveries,
            &self.webhook_delivered,
            &self.webhook_failed_attempts,
            &self.webhook_given_up,
            &self.webhook_lost,
            &self.calls_never_ended,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The catalogue as served: the exact JSON array bytes plus the set of script ids for validation.
struct Catalogue {
    raw: Bytes,
    ids: HashSet<String>,
}

impl Catalogue {
    fn from_values(scripts: &[Value], raw: Option<Bytes>) -> Self {
        let raw = raw.unwrap_or_else(|| Bytes::from(serde_json::to_vec(scripts).unwrap_or_else(|_| b"[]".to_vec())));
        let ids = scripts
            .iter()
            .filter_map(|s| match s.get("id") {
                Some(Value::String(id)) => Some(id.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .collect();
        Self { raw, ids }
    }

    fn builtin() -> Self {
        Self::from_values(&catalogue::builtin(), None)
    }
}

struct Inner {
    catalogue: Catalogue,
    /// Catalogues of single tenants (`PUT /_sim/scripts?api_key=K`), by API key; a key without
    /// one sees `catalogue`. Lets tests tell tenants apart.
    tenant_catalogues: HashMap<String, Catalogue>,
    tokens: HashMap<String, TokenInfo>,
    sessions: VecDeque<Session>,
    /// (api key id, ext_session_id) → autocall_id of the session that used it.
    ext_ids: HashMap<(String, String), String>,
    faults: VecDeque<Fault>,
}

/// Outcome of trying to record a session.
pub(crate) enum Accept {
    /// Recorded (or, for a faulted request, would have been) under this autocall id.
    Accepted(String),
    /// The ext_session_id was already used by the session with this autocall id.
    Duplicate(String),
}

/// Everything the simulator knows, shared by all connections.
pub(crate) struct Sim {
    pub config: SimConfig,
    pub stats: Stats,
    inner: Mutex<Inner>,
    id_counter: AtomicU64,
    /// Middle 5 bytes of generated ObjectIds (random per simulator, like a Mongo process id).
    id_salt: u64,
    /// Most sessions kept (normally [`MAX_SESSIONS`]).
    max_sessions: usize,
    /// Registered webhooks, per API key.
    pub hooks: Hooks,
    /// Every call placed.
    pub calls: Calls,
    /// Pending webhook faults.
    pub wh_faults: webhook_faults::Queue,
    /// The webhook client.
    pub delivery: Deliverer,
    /// The time scale and the epoch of the calls.
    pub clock: Clock,
}

impl Sim {
    pub(crate) fn new(config: SimConfig) -> Self {
        Self::with_session_cap(config, MAX_SESSIONS)
    }

    /// A simulator keeping at most `max_sessions` recorded sessions.
    pub(crate) fn with_session_cap(config: SimConfig, max_sessions: usize) -> Self {
        let config_scale = config.time_scale;
        Self {
            max_sessions: max_sessions.max(1),
            config,
            stats: Stats::default(),
            inner: Mutex::new(Inner {
                catalogue: Catalogue::builtin(),
                tenant_catalogues: HashMap::new(),
                tokens: HashMap::new(),
                sessions: VecDeque::new(),
                ext_ids: HashMap::new(),
                faults: VecDeque::new(),
            }),
            id_counter: AtomicU64::new(rand::random::<u32>() as u64 & 0xff_ffff),
            id_salt: rand::random::<u64>() & 0xff_ffff_ffff,
            hooks: Hooks::default(),
            calls: Calls::default(),
            wh_faults: webhook_faults::Queue::default(),
            delivery: Deliverer::new(),
            clock: Clock::new(config_scale),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` is an acceptable API key under the configuration.
    pub(crate) fn key_valid(&self, key: &str) -> bool {
        !key.is_empty() && self.config.api_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k == key))
    }

    /// A fresh 24-hex ObjectId-style id: 4 bytes of time, 5 of per-instance salt, 3 of counter.
    pub(crate) fn new_object_id(&self) -> String {
        let secs = unix_ms() / 1000;
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
        format!("{:08x}{:010x}{:06x}", secs & 0xffff_ffff, self.id_salt, n)
    }

    /// Remember a token issued for `api_key`, valid for the configured TTL.
    pub(crate) fn remember_token(&self, token: String, api_key: &str) {
        let now = Instant::now();
        let expires_at = now
            .checked_add(self.config.token_ttl)
            .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365 * 10)))
            .unwrap_or(now);
        let mut inner = self.lock();
        if inner.tokens.len() >= TOKEN_PRUNE_THRESHOLD {
            inner.tokens.retain(|_, t| t.expires_at > now);
        }
        inner.tokens.insert(token, TokenInfo { api_key: api_key.to_owned(), expires_at });
    }

    /// Whether `token` is known, unexpired and was issued for `api_key`.
    pub(crate) fn token_valid(&self, token: &str, api_key: &str) -> bool {
        let inner = self.lock();
        inner.tokens.get(token).is_some_and(|t| t.api_key == api_key && Instant::now() < t.expires_at)
    }

    /// Invalidate every token issued so far.
    pub(crate) fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// The exact JSON array bytes of the catalogue `api_key` sees.
    pub(crate) fn catalogue_raw(&self, api_key: &str) -> Bytes {
        let inner = self.lock();
        inner.tenant_catalogues.get(api_key).unwrap_or(&inner.catalogue).raw.clone()
    }

    /// Whether a script with this id is in the catalogue `api_key` sees.
    pub(crate) fn script_exists(&self, api_key: &str, id: &str) -> bool {
        let inner = self.lock();
        inner.tenant_catalogues.get(api_key).unwrap_or(&inner.catalogue).ids.contains(id)
    }

    /// Replace the catalogue of every tenant (`api_key` = `None`) or of one; `raw` (when given)
    /// is served verbatim.
    pub(crate) fn set_catalogue(&self, api_key: Option<&str>, scripts: &[Value], raw: Option<Bytes>) {
        let cat = Catalogue::from_values(scripts, raw);
        let mut inner = self.lock();
        match api_key {
            None => inner.catalogue = cat,
            Some(key) => {
                inner.tenant_catalogues.insert(key.to_owned(), cat);
            }
        }
    }

    /// Check the ext_session_id and, unless `dry_run`, record the session.
    pub(crate) fn accept_session(&self, mut session: Session, dry_run: bool) -> Accept {
        let mut inner = self.lock();
        if let Some(ext) = &session.ext_session_id {
            let k = (session.api_key_id.clone(), ext.clone());
            if let Some(existing) = inner.ext_ids.get(&k) {
                return Accept::Duplicate(existing.clone());
            }
            if !dry_run {
                inner.ext_ids.insert(k, session.autocall_id.clone());
            }
        }
        let id = session.autocall_id.clone();
        if !dry_run {
            session.received_at_ms = unix_ms();
            if inner.sessions.len() >= self.max_sessions {
                // Forget the dropped session's key too, so that the duplicate check (and the
                // simulator's memory) covers the sessions kept and does not grow without bound.
                if let Some(old) = inner.sessions.pop_front() {
                    if let Some(ext) = old.ext_session_id {
                        let k = (old.api_key_id, ext);
                        if inner.ext_ids.get(&k) == Some(&old.autocall_id) {
                            inner.ext_ids.remove(&k);
                        }
                    }
                }
            }
            inner.sessions.push_back(session);
            self.stats.sessions_total.fetch_add(1, Ordering::Relaxed);
        }
        Accept::Accepted(id)
    }

    /// The recorded sessions as a JSON array, in arrival order (bodies spliced verbatim).
    pub(crate) fn sessions_json(&self) -> Vec<u8> {
        let inner = self.lock();
        let mut out = Vec::with_capacity(inner.sessions.len() * 256 + 2);
        out.push(b'[');
        for (i, s) in inner.sessions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let head = serde_json::json!({
                "autocall_id": s.autocall_id,
                "ext_session_id": s.ext_session_id,
                "api_key_id": s.api_key_id,
                "cid": s.cid,
                "headers": s.headers,
                "received_at_ms": s.received_at_ms,
                "http_version": s.http_version,
            });
            let head = serde_json::to_vec(&head).unwrap_or_else(|_| b"{}".to_vec());
            // Drop the closing brace and append the raw body.
            out.extend_from_slice(&head[..head.len().saturating_sub(1)]);
            out.extend_from_slice(b",\"body\":");
            out.extend_from_slice(&s.body);
            out.push(b'}');
        }
        out.push(b']');
        out
    }

    /// Queue faults at the back.
    pub(crate) fn push_faults(&self, faults: Vec<Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Pending faults.
    pub(crate) fn faults(&self) -> Vec<Fault> {
        self.lock().faults.iter().cloned().collect()
    }

    /// Clear pending faults.
    pub(crate) fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Take one count of the first queued fault matching `path` (FIFO).
    pub(crate) fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut inner = self.lock();
        let idx = inner.faults.iter().position(|f| f.matches(path))?;
        let fault = inner.faults.get_mut(idx)?;
        fault.count = fault.count.saturating_sub(1);
        let taken = fault.clone();
        if fault.count == 0 {
            inner.faults.remove(idx);
        }
        Some(taken)
    }

    /// Clear faults, sessions, counters, tokens, webhooks, calls and webhook faults (stopping the calls in
    /// progress); restore the built-in catalogue.
    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        inner.catalogue = Catalogue::builtin();
        inner.tenant_catalogues.clear();
        inner.tokens.clear();
        inner.sessions.clear();
        inner.ext_ids.clear();
        inner.faults.clear();
        drop(inner);
        self.clock.stop_calls();
        self.hooks.clear();
        self.calls.clear();
        self.wh_faults.clear();
        self.stats.reset();
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A short, stable, non-reversible id for an API key (FNV-1a 64, hex).
pub(crate) fn key_id(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("k_{h:016x}")
}
