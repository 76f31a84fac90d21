//! The embedded event store: one process's memory, bounded whatever the load.
//!
//! - Events: a ring in store order, at most `--events-max`, none older than
//!   `--events-retention` (by the store's clock: when it was stored). The oldest go first.
//! - Repeats: the ids of stored facts are remembered (as 64-bit keyed hashes) for the retention
//!   window and at most [`IDS_PER_EVENT`] × `--events-max` of them, so a fact redelivered hours
//!   later, after its event left the ring, is still recognized.
//! - Sessions recorded by `CreateSession`/`CreateCampaign`: kept for the retention window, at
//!   most [`CONTACTS_PER_EVENT`] × `--events-max` contacts in all. They give reports their
//!   contacts, and live states (which carry no session id) their session: a number held by
//!   exactly one open session of the tenant (a contact not final yet) is attributed to it.
//! - Calls: which session and attempt each call id belongs to (at most `--events-max` / 2 calls), once known (from a record, or
//!   from the attribution above), so the call's later facts inherit it.
//!
//! Sessions and calls are the attribution index (`attribution.rs`), shared with the JetStream store.
//!
//! One lock; an append holds it for a few hash lookups. Watchers read from the ring at their
//! own pace (a watch channel says "something new"), so a slow watcher delays nobody: if it
//! falls out of the window its subscription ends with `CursorExpired`.

use std::{
    collections::{HashMap, HashSet, VecDeque, hash_map::RandomState},
    hash::BuildHasher,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{FutureExt as _, future::BoxFuture};
use tokio::sync::Notify;

use super::{
    Appended, CallEvent, Cursor, EventStore, Fact, Filter, SessionFacts, SessionRecord, Start, StoreError, StoredEvent,
    Subscription, TenantId,
    attribution::{Attribution, FactRef, reserve_gently},
    store::StoreStats,
};
use crate::domain::national;

/// Fact ids remembered per event slot: repeats are recognized after their event left the ring.
pub(crate) const IDS_PER_EVENT: usize = 2;
/// Calls whose session and attempt are remembered: one per this many event slots (a call has up
/// to four facts, so half the slots leave room for calls of one or two facts).
pub(crate) const CALLS_PER_EVENT_DIVISOR: usize = 2;
/// Session contacts recorded per event slot.
pub(crate) const CONTACTS_PER_EVENT: usize = 2;
/// Events a watcher copies per turn of the lock (bounds the lock hold and the watcher's buffer).
const READ_BATCH: usize = 256;
/// Events a watcher scans per turn of the lock.
const SCAN_BATCH: usize = 4096;
/// Distinct disposition and hangup-cause words kept (a provider uses a few dozen; beyond the
/// bound a new word is stored as `~`, counted in no metric: it would take a misbehaving sender).
const MAX_WORDS: usize = u16::MAX as usize;
/// Distinct tenants stored (only the receiver's, whose tokens are verified: the tenants file's,
/// the configured key's, caller keys the facade gave a token for).
const MAX_TENANTS: usize = u32::MAX as usize;

/// Unix milliseconds now (the store's clock; a test passes its own).
pub(crate) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub(crate) fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// The embedded store's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// `--events-retention`.
    pub(crate) retention: Duration,
    /// `--events-max`.
    pub(crate) max_events: usize,
}

/// What a watcher waits on: (tenant, session; "" = every event of the tenant).
type WaitKey = (TenantId, Arc<str>);

struct Inner {
    events: VecDeque<Slot>,
    /// Sequence number of `events[0]` (of the next event when empty).
    first_seq: u64,
    seen: HashSet<u64>,
    seen_order: VecDeque<(u64, u64)>,
    /// Sessions recorded and calls known.
    attribution: Attribution,
    /// Provider words (index 0 is "", index 1 is the overflow marker `~`).
    words: Table,
    tenants: Table,
    /// Ids of sessions not created here, shared by their events (cleared when it reaches
    /// `--events-max` names: only sharing is lost).
    session_names: HashSet<Arc<str>>,
    empty: Arc<str>,
    /// The watchers waiting for events of (tenant, session; "" = all of the tenant's).
    waiters: HashMap<WaitKey, Vec<(u64, Arc<Notify>)>>,
    next_waiter: u64,
    stats: StoreStats,
}

struct Shared {
    id: u64,
    bounds: Bounds,
    clock: Clock,
    hasher: RandomState,
    inner: Mutex<Inner>,
    /// When the store was made (`stored_at_s` counts from it).
    epoch_ms: u64,
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub(crate) struct MemoryStore {
    shared: Arc<Shared>,
}

impl MemoryStore {
    /// An empty store with a random identity (cursors of another process are recognized).
    pub(crate) fn new(bounds: Bounds, clock: Clock) -> Self {
        let empty: Arc<str> = Arc::from("");
        let inner = Inner {
            events: VecDeque::new(),
            first_seq: 1,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            attribution: Attribution::new(
                u64::try_from(bounds.retention.as_millis()).unwrap_or(u64::MAX),
                bounds.max_events / CALLS_PER_EVENT_DIVISOR,
                bounds.max_events.saturating_mul(CONTACTS_PER_EVENT),
            ),
            words: {
                let mut t = Table::new(MAX_WORDS, "");
                t.intern("~");
                t
            },
            tenants: Table::new(MAX_TENANTS, ""),
            session_names: HashSet::new(),
            empty,
            waiters: HashMap::new(),
            next_waiter: 0,
            stats: StoreStats::default(),
        };
        let bounds = Bounds { max_events: bounds.max_events.max(1), ..bounds };
        let epoch_ms = clock();
        let shared = Shared {
            id: rand::random(),
            bounds,
            clock,
            hasher: RandomState::new(),
            inner: Mutex::new(inner),
            epoch_ms,
        };
        MemoryStore { shared: Arc::new(shared) }
    }

    /// The store's identity, as cursors carry it.
    #[cfg(test)]
    pub(crate) fn id(&self) -> u64 {
        self.shared.id
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every step is a plain insert).
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(&self, tenant: &str, call_id: &str, fact: Fact) -> u64 {
        self.hasher.hash_one((tenant, call_id, fact as u8))
    }

    fn retention_ms(&self) -> u64 {
        u64::try_from(self.bounds.retention.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whole seconds from the store's making to `ms` (0 before it).
    fn seconds(&self, ms: u64) -> u32 {
        u32::try_from(ms.saturating_sub(self.epoch_ms) / 1000).unwrap_or(u32::MAX)
    }

    fn cursor(&self, seq: u64) -> Cursor {
        Cursor { store: self.id, seq }
    }

    /// Drops what is past the retention window or over the bounds.
    fn expire(&self, g: &mut Inner, now: u64) {
        let horizon = now.saturating_sub(self.retention_ms());
        let horizon_s = self.seconds(horizon);
        let max = self.bounds.max_events;
        while g.events.front().is_some_and(|e| e.stored_at_s < horizon_s) || g.events.len() > max {
            g.events.pop_front();
            g.first_seq += 1;
            g.stats.evicted_total += 1;
        }
        let max_ids = max.saturating_mul(IDS_PER_EVENT);
        while let Some(&(key, at)) = g.seen_order.front() {
            if at >= horizon && g.seen_order.len() <= max_ids {
                break;
            }
            g.seen_order.pop_front();
            g.seen.remove(&key);
        }
        g.attribution.expire(now);
    }

    fn append_now(&self, tenant_id: TenantId, mut e: CallEvent) -> Appended {
        let now = (self.clock)();
        let mut guard = self.lock();
        let g = &mut *guard;
        self.expire(g, now);
        let fact_key = self.key(&tenant_id, &e.call_id, e.fact);
        if g.seen.contains(&fact_key) {
            g.stats.duplicates_total += 1;
            return Appended::Duplicate;
        }
        let phone_national = national(&e.phone);
        // The delivery's session, as one shared copy of its id: the record's when recorded here,
        // else the store's copy for sessions not created here.
        let given = (!e.session_id.is_empty()).then(|| {
            g.attribution.session_name(&tenant_id, &e.session_id).unwrap_or_else(|| {
                match g.session_names.get(&*e.session_id) {
                    Some(name) => name.clone(),
                    None => {
                        if g.session_names.len() >= self.bounds.max_events {
                            g.session_names.clear();
                        }
                        let name = e.session_id.clone();
                        g.session_names.insert(name.clone());
                        name
                    }
                }
            })
        });
        let fact = FactRef {
            tenant: &tenant_id,
            call_id: &e.call_id,
            phone_national: &phone_national,
            fact: e.fact,
            outcome: e.outcome,
        };
        let (session, attempt) = g.attribution.attribute(fact, given);
        if let Some(s) = &session {
            g.attribution.apply(fact, s, attempt, now);
        }
        let tenant = g.tenants.intern(&tenant_id);
        let session_id = session.unwrap_or_else(|| g.empty.clone());
        e.session_id = session_id.clone();
        e.attempt = attempt;
        let slot = Slot::new(e, tenant, self.seconds(now), &mut g.words);
        let seq = g.first_seq + g.events.len() as u64;
        let event = slot.stored(&g.words, self.cursor(seq));
        reserve_gently(&mut g.events, self.bounds.max_events);
        g.events.push_back(slot);
        g.seen.insert(fact_key);
        reserve_gently(&mut g.seen_order, self.bounds.max_events.saturating_mul(IDS_PER_EVENT));
        g.seen_order.push_back((fact_key, now));
        g.stats.stored_total += 1;
        self.expire(g, now);
        // Wake only the watchers this event can interest: its session's, and the tenant's.
        let mut wake: Vec<Arc<Notify>> = Vec::new();
        for key in [(tenant_id.clone(), session_id), (tenant_id, g.empty.clone())] {
            if let Some(list) = g.waiters.get(&key) {
                wake.extend(list.iter().map(|(_, n)| n.clone()));
            }
        }
        drop(guard);
        for notify in wake {
            notify.notify_one();
        }
        Appended::Stored(event)
    }

    fn record_now(&self, tenant: &TenantId, record: SessionRecord) {
        let now = (self.clock)();
        let mut guard = self.lock();
        let g = &mut *guard;
        if g.attribution.record(tenant, record, now) {
            self.expire(g, now);
        }
    }

    /// The session's record and events (two passes: which calls are the session's, then every
    /// event of them in store order).
    fn session_now(&self, tenant: &TenantId, session_id: &str) -> Option<SessionFacts> {
        let now = (self.clock)();
        let mut guard = self.lock();
        let g = &mut *guard;
        self.expire(g, now);
        let record = g.attribution.record_of(tenant, session_id).cloned();
        let t = g.tenants.find(tenant);
        let calls: HashSet<&str> = g
            .events
            .iter()
            .filter(|s| Some(s.tenant) == t && *s.event.session_id == *session_id)
            .map(|s| &*s.event.call_id)
            .collect();
        let events: Vec<StoredEvent> = g
            .events
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                Some(s.tenant) == t && (*s.event.session_id == *session_id || calls.contains(&*s.event.call_id))
            })
            .map(|(i, s)| s.stored(&g.words, self.cursor(g.first_seq + i as u64)))
            .collect();
        (record.is_some() || !events.is_empty()).then_some(SessionFacts { record, events })
    }
}

impl EventStore for MemoryStore {
    fn append(&self, tenant: TenantId, event: CallEvent) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let appended = self.shared.append_now(tenant, event);
        async move { Ok(appended) }.boxed()
    }

    fn record_session(&self, tenant: TenantId, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        self.shared.record_now(&tenant, record);
        async { Ok(()) }.boxed()
    }

    fn subscribe(&self, filter: Filter, start: Start) -> BoxFuture<'_, Result<Subscription, StoreError>> {
        let result = read::subscribe(&self.shared, filter, start);
        async move { result }.boxed()
    }

    fn session(&self, tenant: TenantId, session_id: String) -> BoxFuture<'_, Result<Option<SessionFacts>, StoreError>> {
        let facts = self.shared.session_now(&tenant, &session_id);
        async move { Ok(facts) }.boxed()
    }

    fn stats(&self) -> StoreStats {
        let g = self.shared.lock();
        StoreStats {
            events: g.events.len() as u64,
            ids_remembered: g.seen.len() as u64,
            sessions: g.attribution.sessions() as u64,
            ..g.stats
        }
    }
}

mod read;
mod slot;

use slot::{Slot, Table};

#[cfg(test)]
mod tests;
