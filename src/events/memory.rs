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
//! - Calls: which session and attempt each call id belongs to, once known (from a record, or
//!   from the attribution above), so the call's later facts inherit it.
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
    Appended, CallEvent, CallOutcome, Cursor, EventStore, Fact, Filter, NewEvent, SessionFacts, SessionRecord, Start,
    StoreError, Subscription, TenantId, store::StoreStats,
};
use crate::domain::national;

/// Fact ids remembered per event slot: repeats are recognized after their event left the ring.
pub(crate) const IDS_PER_EVENT: usize = 2;
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

/// One event as the ring keeps it (88 bytes plus the call id's and the phone's allocations): the
/// tenant and the two provider words are indices into small tables, the time a u32 of seconds.
struct Stored {
    call_id: Arc<str>,
    session_id: Arc<str>,
    phone: Arc<str>,
    occurred_at_ms: u64,
    tenant: u32,
    /// Seconds since the store was made.
    stored_at_s: u32,
    ring_s: u32,
    talk_s: u32,
    attempt: u32,
    hangup_cause: u16,
    disposition: u16,
    fact: Fact,
    outcome: CallOutcome,
    has_recording: bool,
}

impl Stored {
    fn to_event(&self, g: &Inner, store: u64, seq: u64) -> CallEvent {
        CallEvent {
            cursor: Cursor { store, seq },
            fact: self.fact,
            call_id: self.call_id.clone(),
            session_id: self.session_id.clone(),
            phone: self.phone.clone(),
            outcome: self.outcome,
            occurred_at_ms: self.occurred_at_ms,
            ring_s: self.ring_s,
            talk_s: self.talk_s,
            hangup_cause: g.words.get(self.hangup_cause),
            disposition: g.words.get(self.disposition),
            has_recording: self.has_recording,
            attempt: self.attempt,
        }
    }
}

/// Small interning tables: index -> value and value -> index.
struct Table {
    values: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
    cap: usize,
}

impl Table {
    fn new(cap: usize, first: &str) -> Self {
        let first: Arc<str> = Arc::from(first);
        Table { values: vec![first.clone()], index: HashMap::from([(first, 0)]), cap }
    }

    /// The index of `value`, added when new; index 0 (the first value) once the table is full.
    fn intern(&mut self, value: &str) -> u32 {
        if let Some(&i) = self.index.get(value) {
            return i;
        }
        if self.values.len() >= self.cap {
            return 0;
        }
        let i = self.values.len() as u32;
        let value: Arc<str> = Arc::from(value);
        self.values.push(value.clone());
        self.index.insert(value, i);
        i
    }

    fn find(&self, value: &str) -> Option<u32> {
        self.index.get(value).copied()
    }

    fn get(&self, i: impl Into<u32>) -> Arc<str> {
        self.values.get(i.into() as usize).unwrap_or(&self.values[0]).clone()
    }
}

struct Contact {
    national: Box<str>,
    /// Distinct calls seen to it.
    dialled: u32,
    finished: bool,
}

struct SessionEntry {
    record: SessionRecord,
    session: Arc<str>,
    contacts: Vec<Contact>,
    by_number: HashMap<Box<str>, usize>,
}

struct CallInfo {
    session: Arc<str>,
    attempt: u32,
}

/// What a watcher waits on: (tenant, session; "" = every event of the tenant).
type WaitKey = (TenantId, Arc<str>);

struct Inner {
    events: VecDeque<Stored>,
    /// Sequence number of `events[0]` (of the next event when empty).
    first_seq: u64,
    seen: HashSet<u64>,
    seen_order: VecDeque<(u64, u64)>,
    calls: HashMap<u64, CallInfo>,
    calls_order: VecDeque<(u64, u64)>,
    sessions: HashMap<(TenantId, Arc<str>), SessionEntry>,
    sessions_order: VecDeque<((TenantId, Arc<str>), u64)>,
    contacts_recorded: usize,
    /// Open sessions holding a number: (tenant, national number) -> sessions.
    open: HashMap<(TenantId, Box<str>), Vec<Arc<str>>>,
    /// Provider words (index 0 is "", index 1 is the overflow marker `~`).
    words: Table,
    tenants: Table,
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
            calls: HashMap::new(),
            calls_order: VecDeque::new(),
            sessions: HashMap::new(),
            sessions_order: VecDeque::new(),
            contacts_recorded: 0,
            open: HashMap::new(),
            words: {
                let mut t = Table::new(MAX_WORDS, "");
                t.intern("~");
                t
            },
            tenants: Table::new(MAX_TENANTS, ""),
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

    fn key(&self, tenant: &str, call_id: &str, fact: Option<Fact>) -> u64 {
        self.hasher.hash_one((tenant, call_id, fact.map(|f| f as u8)))
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
        while let Some(&(key, at)) = g.calls_order.front() {
            if at >= horizon && g.calls_order.len() <= max {
                break;
            }
            g.calls_order.pop_front();
            g.calls.remove(&key);
        }
        let max_contacts = max.saturating_mul(CONTACTS_PER_EVENT);
        while let Some((key, at)) = g.sessions_order.front() {
            if *at >= horizon && g.contacts_recorded <= max_contacts {
                break;
            }
            let key = key.clone();
            g.sessions_order.pop_front();
            if let Some(entry) = g.sessions.remove(&key) {
                g.contacts_recorded -= entry.contacts.len();
                for c in &entry.contacts {
                    close(&mut g.open, &key.0, &c.national, &entry.session);
                }
            }
        }
    }

    fn append_now(&self, e: NewEvent) -> Appended {
        let now = (self.clock)();
        let mut guard = self.lock();
        let g = &mut *guard;
        self.expire(g, now);
        let fact_key = self.key(&e.tenant, &e.call_id, Some(e.fact));
        if g.seen.contains(&fact_key) {
            g.stats.duplicates_total += 1;
            return Appended::Duplicate;
        }
        let call_key = self.key(&e.tenant, &e.call_id, None);
        let phone_national = national(&e.phone);
        // Which session: the delivery's; else the call's, once known; else, for a live state,
        // the one open session of the tenant holding the number.
        let known = g.calls.get(&call_key).map(|c| (c.session.clone(), c.attempt));
        let session: Option<Arc<str>> = if !e.session_id.is_empty() {
            match g.sessions.get_key_value(&(e.tenant.clone(), Arc::from(e.session_id.as_str()))) {
                Some((key, _)) => Some(key.1.clone()),
                None => Some(Arc::from(e.session_id.as_str())),
            }
        } else if let Some((s, _)) = &known {
            Some(s.clone())
        } else if e.fact != Fact::Record {
            match g.open.get(&(e.tenant.clone(), phone_national.clone().into_boxed_str())) {
                Some(sessions) if sessions.len() == 1 => Some(sessions[0].clone()),
                _ => None,
            }
        } else {
            None
        };
        let mut attempt = known.as_ref().filter(|(s, _)| Some(s) == session.as_ref()).map_or(0, |(_, a)| *a);
        if let Some(s) = &session {
            if let Some(entry) = g.sessions.get_mut(&(e.tenant.clone(), s.clone())) {
                if let Some(&i) = entry.by_number.get(phone_national.as_str()) {
                    let contact = &mut entry.contacts[i];
                    if attempt == 0 {
                        contact.dialled += 1;
                        attempt = contact.dialled;
                    }
                    let final_outcome =
                        matches!(e.outcome, CallOutcome::Answered | CallOutcome::Rejected | CallOutcome::Failed)
                            || (e.fact == Fact::Record && attempt > entry.record.redials);
                    if e.fact == Fact::Record && final_outcome && !contact.finished {
                        contact.finished = true;
                        let national = contact.national.clone();
                        let session = entry.session.clone();
                        close(&mut g.open, &e.tenant, &national, &session);
                    }
                }
            }
            if (known.is_none() || attempt != 0)
                && g.calls.insert(call_key, CallInfo { session: s.clone(), attempt }).is_none()
            {
                g.calls_order.push_back((call_key, now));
            }
        }
        let word = |g: &mut Inner, w: &str| -> u16 {
            u16::try_from(g.words.intern(w)).unwrap_or(1).max(u16::from(!w.is_empty()))
        };
        let hangup_cause = word(g, &e.hangup_cause);
        let disposition = word(g, &e.disposition);
        let tenant = g.tenants.intern(&e.tenant);
        let tenant_id = e.tenant.clone();
        let session_id = session.unwrap_or_else(|| g.empty.clone());
        let stored = Stored {
            call_id: Arc::from(e.call_id),
            session_id: session_id.clone(),
            phone: Arc::from(e.phone),
            occurred_at_ms: e.occurred_at_ms,
            tenant,
            stored_at_s: self.seconds(now),
            ring_s: e.ring_s,
            talk_s: e.talk_s,
            attempt,
            hangup_cause,
            disposition,
            fact: e.fact,
            outcome: e.outcome,
            has_recording: e.has_recording,
        };
        let seq = g.first_seq + g.events.len() as u64;
        let event = stored.to_event(g, self.id, seq);
        reserve_gently(&mut g.events, self.bounds.max_events);
        g.events.push_back(stored);
        g.seen.insert(fact_key);
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

    fn record_now(&self, record: SessionRecord) {
        let now = (self.clock)();
        let mut guard = self.lock();
        let g = &mut *guard;
        let session: Arc<str> = Arc::from(record.session_id.as_str());
        let key = (record.tenant.clone(), session.clone());
        if g.sessions.contains_key(&key) {
            return;
        }
        let mut contacts = Vec::with_capacity(record.contacts.len());
        let mut by_number = HashMap::with_capacity(record.contacts.len());
        for phone in &record.contacts {
            let n: Box<str> = national(phone).into_boxed_str();
            if by_number.contains_key(&n) {
                continue;
            }
            by_number.insert(n.clone(), contacts.len());
            g.open.entry((record.tenant.clone(), n.clone())).or_default().push(session.clone());
            contacts.push(Contact { national: n, dialled: 0, finished: false });
        }
        g.contacts_recorded += contacts.len();
        g.sessions.insert(key.clone(), SessionEntry { record, session, contacts, by_number });
        g.sessions_order.push_back((key, now));
        self.expire(g, now);
    }

    /// The session's record and events (two passes: which calls are the session's, then every
    /// event of them in store order).
    fn session_now(&self, tenant: &TenantId, session_id: &str) -> Option<SessionFacts> {
        let now = (self.clock)();
        let mut guard = self.lock();
        let g = &mut *guard;
        self.expire(g, now);
        let record = g.sessions.get(&(tenant.clone(), Arc::from(session_id))).map(|s| s.record.clone());
        let t = g.tenants.find(tenant);
        let calls: HashSet<&str> = g
            .events
            .iter()
            .filter(|e| Some(e.tenant) == t && *e.session_id == *session_id)
            .map(|e| &*e.call_id)
            .collect();
        let events: Vec<CallEvent> = g
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| Some(e.tenant) == t && (*e.session_id == *session_id || calls.contains(&*e.call_id)))
            .map(|(i, e)| e.to_event(g, self.id, g.first_seq + i as u64))
            .collect();
        (record.is_some() || !events.is_empty()).then_some(SessionFacts { record, events })
    }

    /// Where a subscription starting at `start` begins, or why it cannot.
    fn start_seq(&self, start: Start) -> Result<u64, StoreError> {
        let now = (self.clock)();
        let mut g = self.lock();
        self.expire(&mut g, now);
        let next = g.first_seq + g.events.len() as u64;
        let earliest = self.cursor(g.first_seq - 1);
        match start {
            Start::Live => Ok(next),
            Start::Replay => Ok(g.first_seq),
            Start::After(c) if c.store != self.id => Err(StoreError::CursorExpired { earliest }),
            Start::After(c) if c.seq.saturating_add(1) < g.first_seq => Err(StoreError::CursorExpired { earliest }),
            Start::After(c) => Ok(c.seq.saturating_add(1).min(next)),
        }
    }

    /// Copies the next matching events from `*next` on into `out`; `Err` when `*next` has
    /// left the window.
    /// `Ok(true)` when `*next` reached the end of the ring.
    fn read(&self, filter: &Filter, next: &mut u64, out: &mut VecDeque<CallEvent>) -> Result<bool, StoreError> {
        let now = (self.clock)();
        let mut g = self.lock();
        self.expire(&mut g, now);
        if *next < g.first_seq {
            return Err(StoreError::CursorExpired { earliest: self.cursor(g.first_seq - 1) });
        }
        let from = usize::try_from(*next - g.first_seq).unwrap_or(usize::MAX);
        let tenant = g.tenants.find(&filter.tenant);
        for (i, e) in g.events.iter().enumerate().skip(from).take(SCAN_BATCH) {
            *next = g.first_seq + i as u64 + 1;
            if Some(e.tenant) != tenant
                || (!filter.session_id.is_empty() && *e.session_id != *filter.session_id)
                || (!filter.phone_national.is_empty() && national(&e.phone) != filter.phone_national)
            {
                continue;
            }
            out.push_back(e.to_event(&g, self.id, *next - 1));
            if out.len() >= READ_BATCH {
                break;
            }
        }
        Ok(*next >= g.first_seq + g.events.len() as u64)
    }
}

/// Takes `session` off the open sessions holding `number`.
fn close(open: &mut HashMap<(TenantId, Box<str>), Vec<Arc<str>>>, tenant: &TenantId, number: &str, session: &Arc<str>) {
    let key = (tenant.clone(), Box::<str>::from(number));
    if let Some(list) = open.get_mut(&key) {
        list.retain(|s| s != session);
        if list.is_empty() {
            open.remove(&key);
        }
    }
}

/// Grows the ring by a quarter at a time (never past `max`), rather than doubling: at the bound
/// the ring holds at most a quarter of slack, not a half.
fn reserve_gently<T>(ring: &mut VecDeque<T>, max: usize) {
    if ring.len() == ring.capacity() {
        let grow = (ring.len() / 4).max(256).min(max.saturating_sub(ring.len()).max(1));
        ring.reserve_exact(grow);
    }
}

struct Reader {
    shared: Arc<Shared>,
    filter: Filter,
    next: u64,
    buffer: VecDeque<CallEvent>,
    /// Woken by appends of events this reader's filter may take.
    notify: Arc<Notify>,
    waiter: (WaitKey, u64),
    done: bool,
}

impl Reader {
    async fn next_event(&mut self) -> Option<Result<CallEvent, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(e) = self.buffer.pop_front() {
                return Some(Ok(e));
            }
            let caught_up = match self.shared.read(&self.filter, &mut self.next, &mut self.buffer) {
                Ok(caught_up) => caught_up,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            // An append after the read left a permit: the wait returns at once.
            if self.buffer.is_empty() && caught_up {
                self.notify.notified().await;
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        let (key, id) = &self.waiter;
        if let Some(list) = g.waiters.get_mut(key) {
            list.retain(|(i, _)| i != id);
            if list.is_empty() {
                g.waiters.remove(key);
            }
        }
    }
}

impl EventStore for MemoryStore {
    fn append(&self, event: NewEvent) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let appended = self.shared.append_now(event);
        async move { Ok(appended) }.boxed()
    }

    fn record_session(&self, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        self.shared.record_now(record);
        async { Ok(()) }.boxed()
    }

    fn subscribe(&self, filter: Filter, start: Start) -> BoxFuture<'_, Result<Subscription, StoreError>> {
        let result = self.shared.start_seq(start).map(|next| {
            let notify = Arc::new(Notify::new());
            let waiter = {
                let mut g = self.shared.lock();
                // Not interned here: only the receiver's (verified) tenants enter the table.
                let tenant = filter.tenant.clone();
                let session: Arc<str> = Arc::from(filter.session_id.as_str());
                let id = g.next_waiter;
                g.next_waiter += 1;
                g.waiters.entry((tenant.clone(), session.clone())).or_default().push((id, notify.clone()));
                ((tenant, session), id)
            };
            let reader = Reader {
                shared: self.shared.clone(),
                filter,
                next,
                buffer: VecDeque::new(),
                notify,
                waiter,
                done: false,
            };
            let stream = futures::stream::unfold(reader, |mut r| async move { r.next_event().await.map(|e| (e, r)) });
            Box::pin(stream) as Subscription
        });
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
            sessions: g.sessions.len() as u64,
            ..g.stats
        }
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
