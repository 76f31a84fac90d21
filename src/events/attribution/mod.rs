//! Attribution: which session, and which attempt at its contact, a call fact belongs to. One
//! index, used by both stores (the embedded one under its lock; the JetStream one on every
//! replica, fed in stream order).
//!
//! The rules, in order:
//! 1. the session id the delivery carries;
//! 2. else the session of the call, once known (from an earlier fact of it);
//! 3. else, for a live state (never an end-of-call record, which the call history attributes),
//!    the one open session of the tenant holding the number (a contact not final yet); with two
//!    or more open sessions holding it the fact stays unattributed rather than guessed.
//!
//! The attempt is the call's, once known; else, for a contact of a recorded session, one more
//! than the highest attempt seen to it. A contact is final (its session no longer "open" for it)
//! after an end-of-call record that answered, was rejected or failed, or used the last redial, or
//! once given up (`reconcile/`: a give-up is no call and takes no attempt number). The index also
//! gives each contact's number as the caller wrote it (`CallEvent::contact_phone`), and the
//! sessions with a contact not final (what reconciliation scans).
//!
//! Layout: per tenant, its sessions in one ring in recording order (a session is its place
//! there, its ordinal: sessions of a tenant always leave oldest first, by age as by bound), its
//! sessions' ids and its callers' ids for them as hashes to ordinals, and its open numbers; a
//! contact's number is its national form packed in a `u64` (`domain::national_key`), a session's
//! contacts one sorted array. A session's texts and contacts are appended to its tenant's two
//! arenas (chunks in recording order, let go from the front as sessions leave): recording a
//! session allocates nothing of its own and leaving frees nothing. An open number is a count and the sum of the ordinals holding it:
//! when one holds it, the sum is that one, and whatever the count it takes 16 bytes and no
//! allocation. A record is made ready ([`Prepared`]) before the store's lock is taken, and the
//! sessions the bounds let go are handed back ([`Released`]) to be freed after it.
//!
//! Bounds: sessions and calls are kept for the retention window, at most `max_contacts` session
//! contacts and `max_calls` calls; the oldest go first. Over the contacts' bound, the session that
//! goes is the oldest of the tenant that recorded last when it holds its share (`max_contacts` /
//! tenants holding any) or more, else of the tenant holding the most: one tenant's sessions never
//! push out another's while that one holds no more than its share.

mod arena;
mod session;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    hash::BuildHasher,
    sync::Arc,
};

use session::{Entry, Open, TenantIndex, close_open};
pub(crate) use session::{Prepared, Released};

/// The index's maps: keyed by hashes, tenants and numbers, hashed with foldhash (seeded at
/// random per process, like std's), not SipHash: recording a 15-contact session looks up and
/// inserts about 20 keys, and SipHash made that 11 k of a CreateSession's instructions
/// (BENCHMARKS.md, "CreateSession vs the stack floor").
type Map<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

use super::{CallOutcome, Fact, SessionQuery, SessionRecord, TenantId};
use crate::domain::national_key;

struct Call {
    session: Arc<str>,
    attempt: u32,
}

/// Keys of sessions gone that a tenant's id maps may hold beyond as many as its sessions held
/// (`TenantIndex::rebuild_keys`).
const KEYS_SLACK: usize = 64;

/// (tenant, session id).
pub(crate) type SessionKey = (TenantId, Arc<str>);

/// A fact as attribution sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FactRef<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) call_id: &'a str,
    /// The number, its national form packed (`domain::national_key` of the event's `phone`).
    pub(crate) number: Option<u64>,
    pub(crate) fact: Fact,
    pub(crate) outcome: CallOutcome,
}

/// The attribution index.
pub(crate) struct Attribution {
    retention_ms: u64,
    max_calls: usize,
    max_contacts: usize,
    /// Keys the ids, external ids and calls (seeded at random per process).
    hasher: foldhash::quality::RandomState,
    tenants: Map<TenantId, TenantIndex>,
    /// Sessions recorded, in all tenants.
    sessions: usize,
    /// Sessions ever recorded: a tenant's index made anew starts its ordinals here, past every
    /// ordinal an earlier one of it had (so a place left in `sessions_order` is never taken for
    /// a new session).
    recorded: u64,
    /// Every session in recording order: (tenant, ordinal, when); places of sessions gone by
    /// bound are skipped.
    sessions_order: VecDeque<(TenantId, u64, u64)>,
    contacts: usize,
    /// The tenant that recorded last (the first candidate to give a session back).
    last_recorder: Option<TenantId>,
    /// Calls by a keyed 64-bit hash of (tenant, call id).
    calls: Map<u64, Call>,
    calls_order: VecDeque<(u64, u64)>,
    /// The sessions forgotten since the last [`Attribution::take_forgotten`], when a durable
    /// store keeps the records (`None`: not tracked).
    forgotten: Option<Vec<SessionKey>>,
}

impl Attribution {
    pub(crate) fn new(retention_ms: u64, max_calls: usize, max_contacts: usize) -> Self {
        Attribution {
            retention_ms,
            max_calls: max_calls.max(1),
            max_contacts: max_contacts.max(1),
            hasher: foldhash::quality::RandomState::default(),
            tenants: Map::default(),
            sessions: 0,
            recorded: 0,
            sessions_order: VecDeque::new(),
            contacts: 0,
            last_recorder: None,
            calls: Map::default(),
            calls_order: VecDeque::new(),
            forgotten: None,
        }
    }

    /// From now on, the sessions forgotten (by age or bound) are kept for
    /// [`Attribution::take_forgotten`] (the durable store deletes their records).
    pub(crate) fn track_forgotten(&mut self) {
        self.forgotten.get_or_insert_with(Vec::new);
    }

    /// The sessions forgotten since the last call (none unless tracked).
    pub(crate) fn take_forgotten(&mut self) -> Vec<SessionKey> {
        self.forgotten.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Sessions recorded (and not expired).
    pub(crate) fn sessions(&self) -> usize {
        self.sessions
    }

    fn key(&self, text: &str) -> u64 {
        self.hasher.hash_one(text)
    }

    /// The session with id `session` in `t`.
    fn entry<'a>(&self, t: &'a TenantIndex, session: &str) -> Option<&'a Entry> {
        t.at(t.find(self.key(session), session)?)
    }

    /// The session `id` names in `t`: its own id, or the caller's for it.
    fn named<'a>(&self, t: &'a TenantIndex, id: &str) -> Option<&'a Entry> {
        let key = self.key(id);
        t.at(t.find(key, id).or_else(|| t.find_external(key, id))?)
    }

    /// A recorded session's record, by its id or the caller's (external) id for it.
    pub(crate) fn record_of(&self, tenant: &TenantId, session: &str) -> Option<SessionRecord> {
        let t = self.tenants.get(&**tenant)?;
        self.named(t, session).map(|e| t.record(e))
    }

    /// The id of the session `id` names: a recorded session's own id, or the session the caller
    /// named so (its external id); `None` when neither is recorded.
    pub(crate) fn session_id_of(&self, tenant: &TenantId, id: &str) -> Option<Arc<str>> {
        let t = self.tenants.get(&**tenant)?;
        self.named(t, id).map(|e| t.shared(e))
    }

    /// `tenant`'s recorded sessions `query` wants, newest first (creation time, then id, both
    /// descending), at most `query.limit`.
    pub(crate) fn records(&self, tenant: &TenantId, query: &SessionQuery) -> Vec<SessionRecord> {
        let Some(t) = self.tenants.get(&**tenant) else { return Vec::new() };
        let mut found: Vec<(u64, &str, &Entry)> = t
            .ring
            .iter()
            .map(|e| (e.created_at_ms, t.head(e, 0), e))
            .filter(|(created, s, e)| query.matches(t.external_id(e), *created, s))
            .collect();
        found.sort_unstable_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
        found.into_iter().take(query.limit).map(|(_, _, e)| t.record(e)).collect()
    }

    /// The shared copy of a recorded session's id (so its events share one allocation).
    pub(crate) fn session_name(&self, tenant: &TenantId, session: &str) -> Option<Arc<str>> {
        let t = self.tenants.get(&**tenant)?;
        self.entry(t, session).map(|e| t.shared(e))
    }

    /// The number as the caller gave it, of the contact with number `phone` (any form) of the
    /// recorded `session`.
    pub(crate) fn contact_phone(&self, tenant: &TenantId, session: &str, phone: &str) -> Option<Arc<str>> {
        let t = self.tenants.get(&**tenant)?;
        let entry = self.entry(t, session)?;
        let contact = t.contact(entry, national_key(phone))?;
        Some(Arc::from(t.given(entry, &contact)))
    }

    /// The recorded sessions with a contact not final yet (reconciliation's candidates,
    /// `events/reconcile/`), each with its record.
    pub(crate) fn unfinished(&self, created_before_ms: u64) -> Vec<(TenantId, SessionRecord)> {
        self.tenants
            .iter()
            .flat_map(|(tenant, t)| {
                t.ring
                    .iter()
                    .filter(|e| e.created_at_ms < created_before_ms && t.unfinished(e))
                    .map(|e| (tenant.clone(), t.record(e)))
            })
            .collect()
    }

    fn call_key(&self, tenant: &str, call_id: &str) -> u64 {
        self.hasher.hash_one((tenant, call_id))
    }

    /// The session and attempt of a new fact; `given` is the session id its delivery carries.
    /// Nothing changes until [`Attribution::apply`].
    pub(crate) fn attribute(&self, f: FactRef<'_>, given: Option<Arc<str>>) -> (Option<Arc<str>>, u32) {
        let known = self.calls.get(&self.call_key(f.tenant, f.call_id));
        let mine = self.tenants.get(&**f.tenant);
        let session = given.or_else(|| known.map(|c| c.session.clone())).or_else(|| {
            if f.fact == Fact::Record {
                return None;
            }
            let t = mine?;
            let open = t.open.get(&f.number?)?;
            (open.count == 1).then(|| t.at(open.sum)).flatten().map(|e| t.shared(e))
        });
        let Some(s) = session else { return (None, 0) };
        if f.fact == Fact::GaveUp {
            // A give-up is no call: it takes no attempt number.
            return (Some(s), 0);
        }
        let mut attempt = known.filter(|c| c.session == s).map_or(0, |c| c.attempt);
        if attempt == 0 {
            if let Some((t, entry)) = mine.and_then(|t| Some((t, self.entry(t, &s)?))) {
                if let Some(contact) = t.contact(entry, f.number) {
                    attempt = contact.dialled.saturating_add(1);
                }
            }
        }
        (Some(s), attempt)
    }

    /// Learns from a stored fact attributed to `session` with `attempt` (idempotent: applying a
    /// fact twice changes nothing the second time).
    pub(crate) fn apply(&mut self, f: FactRef<'_>, session: &Arc<str>, attempt: u32, now: u64) {
        let key = self.key(session);
        if let Some(t) = self.tenants.get_mut(&**f.tenant) {
            if let Some((ordinal, entry)) = t.find(key, session).and_then(|o| Some((o, t.at(o)?))) {
                let (redials, list) = (entry.redials, entry.contacts);
                let number = f.number.unwrap_or(u64::MAX);
                let contacts = t.contact_lists.get_mut(list);
                let at = contacts.partition_point(|c| c.number < number);
                let mut close = None;
                if let Some(contact) =
                    contacts.get_mut(at).filter(|c| f.number.is_some() && c.number == number && c.keyed)
                {
                    if f.fact == Fact::GaveUp {
                        // The contact is final (its session no longer open for it); no call.
                        if !std::mem::replace(&mut contact.finished, true) {
                            close = Some(contact.number);
                        }
                    } else {
                        contact.dialled = contact.dialled.max(attempt);
                        let final_outcome =
                            matches!(f.outcome, CallOutcome::Answered | CallOutcome::Rejected | CallOutcome::Failed)
                                || attempt > redials;
                        if f.fact == Fact::Record && final_outcome && !contact.finished {
                            contact.finished = true;
                            close = Some(contact.number);
                        }
                    }
                }
                if let Some(number) = close {
                    close_open(&mut t.open, number, ordinal);
                }
            }
        }
        if f.fact == Fact::GaveUp {
            // No call to remember.
            return;
        }
        let key = self.call_key(f.tenant, f.call_id);
        let known = self.calls.contains_key(&key);
        if (!known || attempt != 0) && self.calls.insert(key, Call { session: session.clone(), attempt }).is_none() {
            reserve_gently(&mut self.calls_order, self.max_calls + 1);
            self.calls_order.push_back((key, now));
        }
    }

    /// Records a session of `tenant` (its contacts open); the first record of a session counts.
    /// Whether it was new.
    pub(crate) fn record(&mut self, tenant: &TenantId, record: SessionRecord, now: u64) -> bool {
        self.insert(tenant, &Prepared::new(record), now)
    }

    /// [`Attribution::record`] of a record made ready before (the caller frees it, after the
    /// lock).
    pub(crate) fn insert(&mut self, tenant: &TenantId, prepared: &Prepared, now: u64) -> bool {
        let record = &prepared.record;
        let key = self.key(&record.session_id);
        let external_key = if record.external_id.is_empty() { 0 } else { self.key(&record.external_id) };
        if !self.tenants.contains_key(&**tenant) {
            self.tenants.insert(tenant.clone(), TenantIndex::new(self.recorded));
        }
        let Some(t) = self.tenants.get_mut(&**tenant) else { return false };
        let ordinal = t.next();
        // One look-up for a new session (the usual case); a session recorded before is put back.
        if let Some(before) = t.ids.insert(key, ordinal) {
            if t.at(before).is_some_and(|e| t.head(e, 0) == record.session_id) {
                t.ids.insert(key, before);
                return false;
            }
        }
        let mut count = 0;
        for c in &prepared.contacts {
            count += usize::from(!c.repeat);
            if c.opens() {
                let open = t.open.entry(c.number).or_insert(Open { count: 0, sum: 0 });
                open.count += 1;
                open.sum = open.sum.wrapping_add(ordinal);
            }
        }
        self.contacts += count;
        t.contacts += count;
        if !record.external_id.is_empty() {
            t.externals.insert(external_key, ordinal);
        }
        let entry = t.entry(prepared, key, external_key);
        reserve_gently(&mut t.ring, self.max_contacts);
        t.ring.push_back(entry);
        self.sessions += 1;
        self.recorded += 1;
        reserve_gently(&mut self.sessions_order, self.max_contacts);
        self.sessions_order.push_back((tenant.clone(), ordinal, now));
        if self.last_recorder.as_ref() != Some(tenant) {
            self.last_recorder = Some(tenant.clone());
        }
        true
    }

    /// Forgets `tenant`'s oldest session; its entry goes to `released`.
    fn forget_oldest(&mut self, tenant: &TenantId, released: &mut Released) {
        let Some(t) = self.tenants.get_mut(&**tenant) else { return };
        let Some(entry) = t.ring.pop_front() else { return };
        let ordinal = t.base;
        t.base += 1;
        self.sessions -= 1;
        if let Some(forgotten) = &mut self.forgotten {
            forgotten.push((tenant.clone(), t.shared(&entry)));
        }
        let mut count = 0;
        for c in t.contact_lists.get(entry.contacts) {
            count += usize::from(!c.repeat);
            // A contact final for it took the session off its number then.
            if c.opens() && !c.finished {
                close_open(&mut t.open, c.number, ordinal);
            }
        }
        self.contacts -= count;
        t.contacts -= count;
        // Its id and external id stay in the maps, naming an ordinal no longer held (a look-up
        // finds no session there): taking them out one by one was two cache misses per session
        // on CreateSession's path. They are dropped in one pass once they are as many as the keys
        // of sessions held.
        if t.ids.len() > 2 * t.ring.len() + KEYS_SLACK {
            t.rebuild_keys();
        }
        if let Some(next) = t.ring.front() {
            let (texts, contacts) = (next.text.chunk, next.contacts.chunk);
            t.texts.release_before(texts);
            t.contact_lists.release_before(contacts);
        } else {
            self.tenants.remove(&**tenant);
        }
        if entry.shared.get().is_some() || !entry.refused.is_empty() {
            released.entries.push(entry);
        }
    }

    /// The tenant whose oldest session goes when the contacts are over their bound.
    fn session_victim(&self) -> Option<TenantId> {
        let holders = self.tenants.values().filter(|t| t.contacts > 0).count().max(1);
        let share = (self.max_contacts / holders).max(1);
        if let Some(last) = &self.last_recorder {
            if self.tenants.get(&**last).is_some_and(|t| t.contacts >= share) {
                return Some(last.clone());
            }
        }
        self.tenants.iter().filter(|(_, t)| t.contacts > 0).max_by_key(|(_, t)| t.contacts).map(|(n, _)| n.clone())
    }

    /// Drops what is past the retention window or over the bounds.
    pub(crate) fn expire(&mut self, now: u64) {
        self.expire_releasing(now, &mut Released::default());
    }

    /// [`Attribution::expire`], the sessions let go handed to `released` (to be freed later).
    pub(crate) fn expire_releasing(&mut self, now: u64, released: &mut Released) {
        let horizon = now.saturating_sub(self.retention_ms);
        while let Some(&(key, at)) = self.calls_order.front() {
            if at >= horizon && self.calls_order.len() <= self.max_calls {
                break;
            }
            self.calls_order.pop_front();
            self.calls.remove(&key);
        }
        // By age: in recording order. A tenant's sessions before this one left already (by age
        // just before, or by bound): when it is still there, it is its tenant's oldest.
        while self.sessions_order.front().is_some_and(|(_, _, at)| *at < horizon) {
            if let Some((tenant, ordinal, _)) = self.sessions_order.pop_front() {
                while self.tenants.get(&*tenant).is_some_and(|t| t.base <= ordinal) {
                    self.forget_oldest(&tenant, released);
                }
            }
        }
        // By bound: fairly among tenants.
        while self.contacts > self.max_contacts {
            let Some(victim) = self.session_victim() else { break };
            self.forget_oldest(&victim, released);
        }
        // The order keeps places of sessions gone by bound: compact it when it outgrows the
        // sessions (amortized: at most once per as many records).
        if self.sessions_order.len() > 2 * self.sessions + 1024 {
            let tenants = &self.tenants;
            self.sessions_order
                .retain(|(tenant, ordinal, _)| tenants.get(&**tenant).is_some_and(|t| t.place(*ordinal).is_some()));
        }
    }
}

/// Benches (`benches/hot_paths.rs`): the index of one tenant with a contacts bound, recording
/// sessions one after another as the embedded store does (made ready, put in, bounds applied).
#[doc(hidden)]
pub struct IndexBench {
    index: Attribution,
    tenant: TenantId,
    now: u64,
}

impl IndexBench {
    /// An empty index holding at most `max_contacts` contacts (the store's is 2 x `--events-max`).
    pub fn new(max_contacts: usize) -> Self {
        IndexBench { index: Attribution::new(u64::MAX, max_contacts, max_contacts), tenant: Arc::from("t"), now: 0 }
    }

    /// Records a session of these contacts; past the bound the oldest sessions leave.
    pub fn record(&mut self, session_id: &str, contacts: Vec<String>) {
        self.now += 1;
        let record = SessionRecord {
            session_id: session_id.to_owned(),
            external_id: format!("ext-{session_id}"),
            contacts,
            created_at_ms: self.now,
            ..SessionRecord::default()
        };
        let prepared = Prepared::new(record);
        let mut released = Released::default();
        self.index.insert(&self.tenant, &prepared, self.now);
        released.keep(prepared);
        self.index.expire_releasing(self.now, &mut released);
    }

    /// Sessions held.
    pub fn sessions(&self) -> usize {
        self.index.sessions()
    }
}

/// Grows a ring by a quarter at a time (never past `max`), rather than doubling: at the bound
/// the ring holds at most a quarter of slack, not a half.
pub(crate) fn reserve_gently<T>(ring: &mut VecDeque<T>, max: usize) {
    if ring.len() == ring.capacity() {
        let grow = (ring.len() / 4).max(256).min(max.saturating_sub(ring.len()).max(1));
        ring.reserve_exact(grow);
    }
}
