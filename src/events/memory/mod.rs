//! The embedded event store: one process's memory, bounded whatever the load.
//!
//! - Events: one ring per tenant in store order (sequence numbers are the store's, so cursors
//!   order every tenant's events), at most `--events-max` in all, none older than
//!   `--events-retention` (by the store's clock: when it was stored). Over the bound, the tenant
//!   appending loses its own oldest event when it holds its share (`--events-max` / tenants with
//!   events) or more, else the tenant holding the most does: one tenant's deliveries can evict only
//!   its own events while others hold no more than their share.
//! - Repeats: the ids of stored facts are remembered (as 64-bit keyed hashes) for the retention
//!   window and at most [`IDS_PER_EVENT`] × `--events-max` of them, shared among tenants the same
//!   way, so a fact redelivered hours later, after its event left the ring, is still recognized.
//! - Sessions recorded by `CreateSession`/`CreateCampaign`: kept for the retention window, at
//!   most [`CONTACTS_PER_EVENT`] × `--events-max` contacts in all. They give reports their
//!   contacts, and live states (which carry no session id) their session: a number held by
//!   exactly one open session of the tenant (a contact not final yet) is attributed to it.
//! - Calls: which session and attempt each call id belongs to (at most `--events-max` / 2 calls), once known (from a record, or
//!   from the attribution above), so the call's later facts inherit it.
//!
//! Sessions and calls are the attribution index (`attribution/`), shared with the JetStream store.
//!
//! The durable store (`events/disk/`) is this store with a [`Journal`]: each change is handed to
//! it under the lock, in order (`journal.rs`), and a watcher or a report sees an event only once
//! the journal says it is durable ([`MemoryStore::made_durable`]). At start it is rebuilt from
//! what the journal kept (`MemoryStore::restore_*`).
//!
//! One lock; an append holds it for a few hash lookups. Watchers read from the ring at their
//! own pace (a watch channel says "something new"), so a slow watcher delays nobody: if it
//! falls out of the window its subscription ends with `CursorExpired`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{FutureExt as _, future::BoxFuture};
use tokio::sync::Notify;

use super::{
    Appended, CallEvent, Cursor, EventStore, Fact, Filter, SessionFacts, SessionQuery, SessionRecord, Start,
    StoreError, StoredEvent, Subscription, TenantId,
    attribution::{Attribution, FactRef, Prepared, Released, reserve_gently},
    store::{StoreStats, facts_of},
};
use crate::domain::national_key;

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
    Arc::new(unix_ms)
}

/// Unix milliseconds now, by the system clock.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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

/// Appends between two sweeps of every tenant's ring for age (the appending tenant's ring is
/// swept at each append, a watched one at each read).
const SWEEP_EVERY: u32 = 1024;

/// One tenant's events, in store order.
#[derive(Default)]
struct Ring {
    /// (sequence number, slot).
    events: VecDeque<(u64, Slot)>,
    /// The sequence number of the last event of the tenant that left (0: none yet): a watcher
    /// whose next event is at or below it missed some.
    evicted_through: u64,
    /// The tenant's remembered fact ids, oldest first: (key, when stored).
    seen_order: VecDeque<(u64, u64)>,
}

struct Inner {
    /// Each tenant's events, by the tenant's index in `tenants`.
    rings: HashMap<u32, Ring>,
    /// Events in all rings.
    total: usize,
    /// Fact ids in all rings' `seen_order`.
    total_ids: usize,
    /// The next event's sequence number.
    next_seq: u64,
    /// Appends since every ring was swept for age.
    since_sweep: u32,
    seen: HashSet<u64>,
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
    /// With a journal: events up to this sequence number are durable (watchers and reports see
    /// no further).
    visible: u64,
    /// With a journal: the events not yet durable, whose watchers are woken once they are:
    /// (sequence number, tenant, session).
    wakes: VecDeque<(u64, TenantId, Arc<str>)>,
    /// With a journal: the changes not yet handed to it.
    changes: Vec<Change>,
    next_waiter: u64,
    stats: StoreStats,
}

impl Inner {
    /// The watchers an event of `tenant` and `session` can interest: the session's, the tenant's.
    fn waiting(&self, tenant: &TenantId, session: Arc<str>) -> Vec<Arc<Notify>> {
        let mut wake = Vec::new();
        for key in [(tenant.clone(), session), (tenant.clone(), self.empty.clone())] {
            if let Some(list) = self.waiters.get(&key) {
                wake.extend(list.iter().map(|(_, n)| n.clone()));
            }
        }
        wake
    }
}

struct Shared {
    id: u64,
    bounds: Bounds,
    clock: Clock,
    /// The fact keys' hash seed (a store's own: kept with it, so its keys stay valid).
    seed: u64,
    inner: Mutex<Inner>,
    /// Without a journal: sessions recorded and not yet in the attribution index, with the time
    /// they were recorded, in order. Whoever takes `inner` puts them in first ([`Shared::lock`]),
    /// so nobody sees the index without them; `CreateSession` only queues here, and the one that
    /// fills a batch puts the batch in: one hold of `inner` per [`RECORD_BATCH`] sessions, and
    /// the index's memory stays with one core for a batch instead of moving between the workers
    /// at every session.
    pending: Mutex<Vec<(TenantId, Prepared, u64)>>,
    /// Where the changes go (the durable store); `None`: memory only.
    journal: Option<Arc<dyn Journal>>,
    /// When the store was made (`stored_at_s` counts from it).
    epoch_ms: u64,
}

/// Sessions recorded (without a journal) before they are put in the index together.
const RECORD_BATCH: usize = 32;

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub(crate) struct MemoryStore {
    shared: Arc<Shared>,
}

impl MemoryStore {
    /// An empty store with a random identity (cursors of another process are recognized).
    pub(crate) fn new(bounds: Bounds, clock: Clock) -> Self {
        let identity = Identity::random(clock());
        MemoryStore::with_journal(bounds, clock, identity, None)
    }

    /// An empty store of this identity whose changes go to `journal` (the durable store; then
    /// rebuilt with the `restore_*` methods before use).
    pub(crate) fn with_journal(
        bounds: Bounds,
        clock: Clock,
        identity: Identity,
        journal: Option<Arc<dyn Journal>>,
    ) -> Self {
        let empty: Arc<str> = Arc::from("");
        let mut inner = Inner {
            rings: HashMap::new(),
            total: 0,
            total_ids: 0,
            next_seq: 1,
            since_sweep: 0,
            seen: HashSet::new(),
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
            visible: 0,
            wakes: VecDeque::new(),
            changes: Vec::new(),
            stats: StoreStats::default(),
        };
        if journal.is_some() {
            inner.attribution.track_forgotten();
        }
        let bounds = Bounds { max_events: bounds.max_events.max(1), ..bounds };
        let shared = Shared {
            id: identity.id,
            bounds,
            clock,
            seed: identity.seed,
            inner: Mutex::new(inner),
            pending: Mutex::new(Vec::new()),
            journal,
            epoch_ms: identity.epoch_ms,
        };
        MemoryStore { shared: Arc::new(shared) }
    }

    /// The capacities of `tenant`'s rings: (events, fact ids).
    #[cfg(test)]
    pub(crate) fn ring_capacities(&self, tenant: &TenantId) -> (usize, usize) {
        let g = self.shared.lock_only();
        let ring = g.tenants.find(tenant).and_then(|t| g.rings.get(&t));
        ring.map_or((0, 0), |r| (r.events.capacity(), r.seen_order.capacity()))
    }

    /// The store's identity, as cursors carry it.
    #[cfg(test)]
    pub(crate) fn id(&self) -> u64 {
        self.shared.id
    }
}

impl Shared {
    /// The store, with every session recorded so far in its index.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut guard = self.lock_only();
        if self.journal.is_none() {
            let released = self.put_pending(&mut guard);
            drop(released);
        }
        guard
    }

    fn lock_only(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every step is a plain insert).
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts the sessions recorded (without a journal) into the index, in order, then brings it
    /// back under its bounds; the sessions let go, to be freed (after the lock, when the caller
    /// can).
    fn put_pending(&self, g: &mut Inner) -> Released {
        let mut released = Released::default();
        let batch = {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if pending.is_empty() {
                return released;
            }
            std::mem::replace(&mut *pending, Vec::with_capacity(RECORD_BATCH))
        };
        let mut last = 0;
        for (tenant, prepared, at) in batch {
            g.attribution.insert(&tenant, &prepared, at);
            released.keep(prepared);
            last = at;
        }
        g.attribution.expire_releasing(last, &mut released);
        released
    }

    /// A fact's key: a keyed 64-bit hash of (tenant, call id, fact), the same across restarts
    /// (the seed is the store's). 0xff never occurs in UTF-8: the parts cannot run together.
    fn key(&self, tenant: &str, call_id: &str, fact: Fact) -> u64 {
        let mut bytes = Vec::with_capacity(tenant.len() + call_id.len() + 3);
        bytes.extend_from_slice(tenant.as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(call_id.as_bytes());
        bytes.extend_from_slice(&[0xff, fact as u8]);
        xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, self.seed)
    }

    /// The last sequence number watchers and reports may see: with a journal, the last durable
    /// one; else the last stored.
    fn visible(&self, g: &Inner) -> u64 {
        if self.journal.is_some() { g.visible } else { g.next_seq - 1 }
    }

    /// Hands the changes made under this lock to the journal, in order (with the sessions the
    /// attribution index forgot); its ticket, when there were any.
    fn submit(&self, g: &mut Inner) -> Option<u64> {
        let journal = self.journal.as_ref()?;
        for (tenant, session) in g.attribution.take_forgotten() {
            g.changes.push(Change::ForgotSession { tenant, session });
        }
        if g.changes.is_empty() {
            return None;
        }
        Some(journal.submit(std::mem::take(&mut g.changes)))
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

    /// Drops what is past the retention window: `tenant`'s (`None`: every tenant's), and the
    /// attribution index's.
    fn expire(&self, g: &mut Inner, now: u64, tenant: Option<u32>) {
        let horizon = now.saturating_sub(self.retention_ms());
        let horizon_s = self.seconds(horizon);
        let journaled = self.journal.is_some();
        let Inner { rings, total, total_ids, seen, stats, changes, tenants, .. } = g;
        let mut sweep = |t: u32, ring: &mut Ring| {
            let before = ring.evicted_through;
            while ring.events.front().is_some_and(|(_, e)| e.stored_at_s < horizon_s) {
                if let Some((seq, _)) = ring.events.pop_front() {
                    ring.evicted_through = seq;
                    *total -= 1;
                    stats.evicted_total += 1;
                    if journaled {
                        changes.push(Change::Evicted { seq });
                    }
                }
            }
            if journaled && ring.evicted_through != before {
                changes.push(Change::EvictedThrough { tenant: tenants.get(t), seq: ring.evicted_through });
            }
            while ring.seen_order.front().is_some_and(|&(_, at)| at < horizon) {
                if let Some((key, at)) = ring.seen_order.pop_front() {
                    seen.remove(&key);
                    *total_ids -= 1;
                    if journaled {
                        changes.push(Change::Forgot { key, at_ms: at });
                    }
                }
            }
        };
        match tenant {
            Some(t) => {
                if let Some(ring) = rings.get_mut(&t) {
                    sweep(t, ring);
                }
            }
            None => rings.iter_mut().for_each(|(t, ring)| sweep(*t, ring)),
        }
        g.attribution.expire(now);
    }

    /// Brings the events and the fact ids back under their bounds after `tenant` appended: each
    /// leaves from the tenant that holds its share or more (itself first).
    fn bound(&self, g: &mut Inner, tenant: u32) {
        let max = self.bounds.max_events;
        let journaled = self.journal.is_some();
        while g.total > max {
            let victim = fair_victim(&g.rings, tenant, max, |r| r.events.len());
            let Some(ring) = g.rings.get_mut(&victim) else { break };
            let Some((seq, _)) = ring.events.pop_front() else { break };
            ring.evicted_through = seq;
            g.total -= 1;
            g.stats.evicted_total += 1;
            if journaled {
                g.changes.push(Change::Evicted { seq });
                g.changes.push(Change::EvictedThrough { tenant: g.tenants.get(victim), seq });
            }
        }
        let max_ids = max.saturating_mul(IDS_PER_EVENT);
        while g.total_ids > max_ids {
            let victim = fair_victim(&g.rings, tenant, max_ids, |r| r.seen_order.len());
            let Some(ring) = g.rings.get_mut(&victim) else { break };
            let Some((key, at)) = ring.seen_order.pop_front() else { break };
            g.seen.remove(&key);
            g.total_ids -= 1;
            if journaled {
                g.changes.push(Change::Forgot { key, at_ms: at });
            }
        }
    }

    /// Appends; with a journal, the ticket of the changes handed to it (the event durable once
    /// it is).
    fn append_now(&self, tenant_id: TenantId, mut e: CallEvent) -> (Appended, Option<u64>) {
        let now = (self.clock)();
        let mut guard = self.lock();
        let g = &mut *guard;
        // Only the receiver's (verified) tenants are appended: their number is bounded.
        let tenant = g.tenants.intern(&tenant_id);
        g.since_sweep += 1;
        if g.since_sweep >= SWEEP_EVERY {
            g.since_sweep = 0;
            self.expire(g, now, None);
        } else {
            self.expire(g, now, Some(tenant));
        }
        let fact_key = self.key(&tenant_id, &e.call_id, e.fact);
        if g.seen.contains(&fact_key) {
            g.stats.duplicates_total += 1;
            let ticket = self.submit(g);
            return (Appended::Duplicate, ticket);
        }
        let given = (!e.session_id.is_empty()).then(|| self.session_name(g, &tenant_id, &e.session_id));
        let fact = FactRef {
            tenant: &tenant_id,
            call_id: &e.call_id,
            number: national_key(&e.phone),
            fact: e.fact,
            outcome: e.outcome,
        };
        let (session, attempt) = g.attribution.attribute(fact, given);
        if let Some(s) = &session {
            g.attribution.apply(fact, s, attempt, now);
        }
        e.contact_phone = session
            .as_ref()
            .and_then(|s| g.attribution.contact_phone(&tenant_id, s, &e.phone))
            .unwrap_or_else(|| g.empty.clone());
        let session_id = session.unwrap_or_else(|| g.empty.clone());
        e.session_id = session_id.clone();
        e.attempt = attempt;
        let seq = g.next_seq;
        g.next_seq += 1;
        if self.journal.is_some() {
            g.changes.push(Change::Stored {
                seq,
                tenant: tenant_id.clone(),
                at_ms: now,
                key: fact_key,
                event: e.clone(),
            });
        }
        let slot = Slot::new(e, self.seconds(now), &mut g.words);
        let event = slot.stored(&g.words, self.cursor(seq));
        let ring = g.rings.entry(tenant).or_default();
        reserve_gently(&mut ring.events, self.bounds.max_events);
        ring.events.push_back((seq, slot));
        reserve_gently(&mut ring.seen_order, self.bounds.max_events.saturating_mul(IDS_PER_EVENT));
        ring.seen_order.push_back((fact_key, now));
        g.seen.insert(fact_key);
        g.total += 1;
        g.total_ids += 1;
        g.stats.stored_total += 1;
        self.bound(g, tenant);
        let ticket = self.submit(g);
        if self.journal.is_some() {
            // Its watchers are woken once it is durable (`made_durable`), whoever watches then.
            g.wakes.push_back((seq, tenant_id, session_id));
            return (Appended::Stored(event), ticket);
        }
        // Wake only the watchers this event can interest: its session's, and the tenant's.
        let wake = g.waiting(&tenant_id, session_id);
        drop(guard);
        for notify in wake {
            notify.notify_one();
        }
        (Appended::Stored(event), ticket)
    }

    /// The delivery's session, as one shared copy of its id: the record's when recorded here,
    /// else the store's copy for sessions not created here.
    fn session_name(&self, g: &mut Inner, tenant: &TenantId, session_id: &Arc<str>) -> Arc<str> {
        g.attribution.session_name(tenant, session_id).unwrap_or_else(|| match g.session_names.get(&**session_id) {
            Some(name) => name.clone(),
            None => {
                if g.session_names.len() >= self.bounds.max_events {
                    g.session_names.clear();
                }
                g.session_names.insert(session_id.clone());
                session_id.clone()
            }
        })
    }

    /// Records; with a journal, the ticket of the changes handed to it.
    /// The record is made ready before the lock and the sessions it pushes out are freed after
    /// it. Without a journal it is only queued (`pending`): seen by the next holder of the lock.
    fn record_now(&self, tenant: &TenantId, record: SessionRecord) -> Option<u64> {
        let now = (self.clock)();
        let prepared = Prepared::new(record);
        if self.journal.is_none() {
            let full = {
                let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                pending.push((tenant.clone(), prepared, now));
                pending.len() >= RECORD_BATCH
            };
            if full {
                let mut guard = self.lock_only();
                let released = self.put_pending(&mut guard);
                drop(guard);
                drop(released);
            }
            return None;
        }
        let mut released = Released::default();
        let mut guard = self.lock();
        let g = &mut *guard;
        if g.attribution.insert(tenant, &prepared, now) {
            // The journal takes the record itself (its copy in the index is the arenas').
            let record = prepared.into_record();
            g.changes.push(Change::Recorded { tenant: tenant.clone(), at_ms: now, before_seq: g.next_seq, record });
            g.attribution.expire_releasing(now, &mut released);
        } else {
            released.keep(prepared);
        }
        let ticket = self.submit(g);
        drop(guard);
        drop(released);
        ticket
    }

    /// With a journal: the events through `seq` are durable. Watchers and reports see them
    /// from now on, and the watchers they interest are woken.
    fn made_durable(&self, seq: u64) {
        let mut guard = self.lock();
        let g = &mut *guard;
        g.visible = g.visible.max(seq.min(g.next_seq - 1));
        let mut keys: HashSet<WaitKey> = HashSet::new();
        while g.wakes.front().is_some_and(|(s, _, _)| *s <= g.visible) {
            if let Some((_, tenant, session)) = g.wakes.pop_front() {
                keys.insert((tenant.clone(), session));
                keys.insert((tenant, g.empty.clone()));
            }
        }
        let mut wake = Vec::new();
        for key in &keys {
            if let Some(list) = g.waiters.get(key) {
                wake.extend(list.iter().map(|(_, n)| n.clone()));
            }
        }
        drop(guard);
        for notify in wake {
            notify.notify_one();
        }
    }

    /// The session's record and events (two passes: which calls are the session's, then every
    /// event of them in store order).
    fn session_now(&self, tenant: &TenantId, session_id: &str) -> Option<SessionFacts> {
        let now = (self.clock)();
        let mut guard = self.lock();
        let g = &mut *guard;
        let t = g.tenants.find(tenant);
        self.expire(g, now, t);
        self.submit(g);
        // Only durable events (with a journal): a report never shows what a crash could take back.
        let visible = self.visible(g);
        let resolved = g.attribution.session_id_of(tenant, session_id);
        let session_id = resolved.as_deref().unwrap_or(session_id);
        let record = g.attribution.record_of(tenant, session_id);
        let ring = t.and_then(|t| g.rings.get(&t));
        let slots = || ring.into_iter().flat_map(|r| r.events.iter()).take_while(|(seq, _)| *seq <= visible);
        let calls: HashSet<&str> =
            slots().filter(|(_, s)| *s.event.session_id == *session_id).map(|(_, s)| &*s.event.call_id).collect();
        let events: Vec<StoredEvent> = slots()
            .filter(|(_, s)| *s.event.session_id == *session_id || calls.contains(&*s.event.call_id))
            .map(|(seq, s)| s.stored(&g.words, self.cursor(*seq)))
            .collect();
        (record.is_some() || !events.is_empty()).then_some(SessionFacts { record, events })
    }

    /// The tenant's recorded sessions `query` wants, with their facts (one pass over the ring
    /// for the calls of the page's sessions, one to copy their events).
    fn list_now(&self, tenant: &TenantId, query: &SessionQuery) -> Vec<SessionFacts> {
        let now = (self.clock)();
        let mut guard = self.lock();
        let g = &mut *guard;
        let t = g.tenants.find(tenant);
        self.expire(g, now, t);
        let records = g.attribution.records(tenant, query);
        let ring = t.and_then(|t| g.rings.get(&t));
        let slots = || ring.into_iter().flat_map(|r| r.events.iter());
        let ids: HashSet<&str> = records.iter().map(|r| r.session_id.as_str()).collect();
        let calls: HashSet<&str> =
            slots().filter(|(_, s)| ids.contains(&*s.event.session_id)).map(|(_, s)| &*s.event.call_id).collect();
        let events: Vec<StoredEvent> = slots()
            .filter(|(_, s)| ids.contains(&*s.event.session_id) || calls.contains(&*s.event.call_id))
            .map(|(seq, s)| s.stored(&g.words, self.cursor(*seq)))
            .collect();
        drop(calls);
        drop(ids);
        facts_of(records, events)
    }
}

/// The tenant an event (or id) leaves from when `count` over every ring exceeds `max` after
/// `appending` added one: `appending` itself when it holds its share (`max` / tenants holding
/// any) or more, else the tenant holding the most.
fn fair_victim(rings: &HashMap<u32, Ring>, appending: u32, max: usize, count: impl Fn(&Ring) -> usize) -> u32 {
    let holders = rings.values().filter(|r| count(r) > 0).count().max(1);
    let share = (max / holders).max(1);
    if rings.get(&appending).is_some_and(|r| count(r) >= share) {
        return appending;
    }
    rings.iter().max_by_key(|(_, r)| count(r)).map_or(appending, |(t, _)| *t)
}

impl EventStore for MemoryStore {
    fn append(&self, tenant: TenantId, event: CallEvent) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let (appended, _) = self.shared.append_now(tenant, event);
        async move { Ok(appended) }.boxed()
    }

    fn record_session(&self, tenant: TenantId, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = self.shared.record_now(&tenant, record);
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

    fn session_id_of(&self, tenant: TenantId, id: String) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let found = self.shared.lock().attribution.session_id_of(&tenant, &id).map(|s| s.to_string());
        async move { Ok(found.filter(|s| *s != id)) }.boxed()
    }

    fn unfinished_sessions(
        &self,
        created_before_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<(TenantId, SessionRecord)>, StoreError>> {
        let now = (self.shared.clock)();
        let unfinished = {
            let mut g = self.shared.lock();
            g.attribution.expire(now);
            g.attribution.unfinished(created_before_ms)
        };
        async move { Ok(unfinished) }.boxed()
    }

    fn list_sessions(
        &self,
        tenant: TenantId,
        query: SessionQuery,
    ) -> BoxFuture<'_, Result<Vec<SessionFacts>, StoreError>> {
        let page = self.shared.list_now(&tenant, &query);
        async move { Ok(page) }.boxed()
    }

    fn stats(&self) -> StoreStats {
        let g = self.shared.lock();
        StoreStats {
            events: g.total as u64,
            ids_remembered: g.seen.len() as u64,
            sessions: g.attribution.sessions() as u64,
            ..g.stats
        }
    }
}

mod journal;
mod read;
mod slot;

pub(crate) use journal::{Change, Identity, Journal};
use slot::{Slot, Table};

#[cfg(test)]
mod tests;
