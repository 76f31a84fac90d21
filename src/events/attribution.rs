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
//! Bounds: sessions and calls are kept for the retention window, at most `max_contacts` session
//! contacts and `max_calls` calls; the oldest go first. Over the contacts' bound, the session that
//! goes is the oldest of the tenant that recorded last when it holds its share (`max_contacts` /
//! tenants holding any) or more, else of the tenant holding the most: one tenant's sessions never
//! push out another's while that one holds no more than its share.

use std::{
    collections::{HashMap, VecDeque, hash_map::RandomState},
    hash::BuildHasher,
    sync::Arc,
};

/// The index's maps: keyed by session ids, tenants and numbers, hashed with foldhash (seeded at
/// random per process, like std's), not SipHash: recording a 15-contact session looks up and
/// inserts about 50 keys, and SipHash made that 11 k of a CreateSession's instructions
/// (BENCHMARKS.md, "CreateSession vs the stack floor").
type Map<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

use super::{CallOutcome, Fact, SessionQuery, SessionRecord, TenantId};
use crate::domain::{is_national, national};

struct Contact {
    /// Shared with `by_number`'s key and the `open` key (one allocation per number).
    national: Arc<str>,
    /// The number as the caller gave it (events attributed to the contact carry it).
    given: Arc<str>,
    /// The highest attempt number seen to it.
    dialled: u32,
    finished: bool,
}

struct Entry {
    record: SessionRecord,
    contacts: Vec<Contact>,
    by_number: Map<Arc<str>, usize>,
    /// When recorded (tells an entry from a stale place in the orders after a re-record).
    at: u64,
}

/// One tenant's recorded sessions, oldest first, and their contacts.
#[derive(Default)]
struct TenantSessions {
    order: VecDeque<(Arc<str>, u64)>,
    contacts: usize,
}

struct Call {
    session: Arc<str>,
    attempt: u32,
}

/// (tenant, session id).
pub(crate) type SessionKey = (TenantId, Arc<str>);

/// A fact as attribution sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FactRef<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) call_id: &'a str,
    /// The number in national form (`domain::national`).
    pub(crate) phone_national: &'a str,
    pub(crate) fact: Fact,
    pub(crate) outcome: CallOutcome,
}

/// The attribution index.
pub(crate) struct Attribution {
    retention_ms: u64,
    max_calls: usize,
    max_contacts: usize,
    hasher: RandomState,
    sessions: Map<SessionKey, Entry>,
    sessions_order: VecDeque<(SessionKey, u64)>,
    contacts: usize,
    /// The caller's names of recorded sessions: (tenant, external id) -> session id.
    externals: Map<SessionKey, Arc<str>>,
    /// Each tenant's sessions, for the fair bound.
    by_tenant: Map<TenantId, TenantSessions>,
    /// The tenant that recorded last (the first candidate to give a session back).
    last_recorder: Option<TenantId>,
    /// Calls by a keyed 64-bit hash of (tenant, call id).
    calls: Map<u64, Call>,
    calls_order: VecDeque<(u64, u64)>,
    /// Open sessions holding a number: (tenant, national number) -> sessions, oldest first (a
    /// queue: sessions mostly leave it by expiry, oldest first, so taking one off is O(1) even
    /// when many open sessions share a number).
    open: Map<(TenantId, Arc<str>), VecDeque<Arc<str>>>,
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
            hasher: RandomState::new(),
            sessions: Map::default(),
            sessions_order: VecDeque::new(),
            contacts: 0,
            externals: Map::default(),
            by_tenant: Map::default(),
            last_recorder: None,
            calls: Map::default(),
            calls_order: VecDeque::new(),
            open: Map::default(),
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
        self.sessions.len()
    }

    /// A recorded session's record, by its id or the caller's (external) id for it.
    pub(crate) fn record_of(&self, tenant: &TenantId, session: &str) -> Option<&SessionRecord> {
        let id = self.session_id_of(tenant, session)?;
        self.sessions.get(&(tenant.clone(), id)).map(|e| &e.record)
    }

    /// The id of the session `id` names: a recorded session's own id, or the session the caller
    /// named so (its external id); `None` when neither is recorded.
    pub(crate) fn session_id_of(&self, tenant: &TenantId, id: &str) -> Option<Arc<str>> {
        let key = (tenant.clone(), Arc::from(id));
        if self.sessions.contains_key(&key) {
            return Some(key.1);
        }
        self.externals.get(&key).cloned()
    }

    /// `tenant`'s recorded sessions `query` wants, newest first (creation time, then id, both
    /// descending), at most `query.limit`.
    pub(crate) fn records(&self, tenant: &TenantId, query: &SessionQuery) -> Vec<SessionRecord> {
        let Some(mine) = self.by_tenant.get(tenant) else { return Vec::new() };
        let mut found: Vec<&SessionRecord> = mine
            .order
            .iter()
            .filter_map(|(s, at)| self.sessions.get(&(tenant.clone(), s.clone())).filter(|e| e.at == *at))
            .map(|e| &e.record)
            .filter(|r| query.matches(r))
            .collect();
        found.sort_unstable_by(|a, b| {
            (b.created_at_ms, b.session_id.as_str()).cmp(&(a.created_at_ms, a.session_id.as_str()))
        });
        found.into_iter().take(query.limit).cloned().collect()
    }

    /// The shared copy of a recorded session's id (so its events share one allocation).
    pub(crate) fn session_name(&self, tenant: &TenantId, session: &str) -> Option<Arc<str>> {
        self.sessions.get_key_value(&(tenant.clone(), Arc::from(session))).map(|(k, _)| k.1.clone())
    }

    /// The number as the caller gave it, of the contact `national` of the recorded `session`.
    pub(crate) fn contact_phone(&self, tenant: &TenantId, session: &Arc<str>, national: &str) -> Option<Arc<str>> {
        let entry = self.sessions.get(&(tenant.clone(), session.clone()))?;
        entry.by_number.get(national).map(|&i| entry.contacts[i].given.clone())
    }

    /// The recorded sessions with a contact not final yet (reconciliation's candidates,
    /// `events/reconcile/`), each with its record.
    pub(crate) fn unfinished(&self, created_before_ms: u64) -> Vec<(TenantId, SessionRecord)> {
        self.sessions
            .iter()
            .filter(|(_, e)| e.record.created_at_ms < created_before_ms && e.contacts.iter().any(|c| !c.finished))
            .map(|((tenant, _), e)| (tenant.clone(), e.record.clone()))
            .collect()
    }

    fn call_key(&self, tenant: &str, call_id: &str) -> u64 {
        self.hasher.hash_one((tenant, call_id))
    }

    /// The session and attempt of a new fact; `given` is the session id its delivery carries.
    /// Nothing changes until [`Attribution::apply`].
    pub(crate) fn attribute(&self, f: FactRef<'_>, given: Option<Arc<str>>) -> (Option<Arc<str>>, u32) {
        let known = self.calls.get(&self.call_key(f.tenant, f.call_id));
        let session = given.or_else(|| known.map(|c| c.session.clone())).or_else(|| {
            if f.fact == Fact::Record {
                return None;
            }
            match self.open.get(&(f.tenant.clone(), Arc::from(f.phone_national))) {
                Some(list) if list.len() == 1 => Some(list[0].clone()),
                _ => None,
            }
        });
        let Some(s) = session else { return (None, 0) };
        if f.fact == Fact::GaveUp {
            // A give-up is no call: it takes no attempt number.
            return (Some(s), 0);
        }
        let mut attempt = known.filter(|c| c.session == s).map_or(0, |c| c.attempt);
        if attempt == 0 {
            if let Some(entry) = self.sessions.get(&(f.tenant.clone(), s.clone())) {
                if let Some(&i) = entry.by_number.get(f.phone_national) {
                    attempt = entry.contacts[i].dialled.saturating_add(1);
                }
            }
        }
        (Some(s), attempt)
    }

    /// Learns from a stored fact attributed to `session` with `attempt` (idempotent: applying a
    /// fact twice changes nothing the second time).
    pub(crate) fn apply(&mut self, f: FactRef<'_>, session: &Arc<str>, attempt: u32, now: u64) {
        if f.fact == Fact::GaveUp {
            // The contact is final (its session no longer open for it); no call to remember.
            let number = self.sessions.get_mut(&(f.tenant.clone(), session.clone())).and_then(|entry| {
                let contact = &mut entry.contacts[*entry.by_number.get(f.phone_national)?];
                (!std::mem::replace(&mut contact.finished, true)).then(|| contact.national.clone())
            });
            if let Some(number) = number {
                close_open(&mut self.open, f.tenant, &number, session);
            }
            return;
        }
        let mut close = None;
        if let Some(entry) = self.sessions.get_mut(&(f.tenant.clone(), session.clone())) {
            if let Some(&i) = entry.by_number.get(f.phone_national) {
                let contact = &mut entry.contacts[i];
                contact.dialled = contact.dialled.max(attempt);
                let final_outcome =
                    matches!(f.outcome, CallOutcome::Answered | CallOutcome::Rejected | CallOutcome::Failed)
                        || attempt > entry.record.redials;
                if f.fact == Fact::Record && final_outcome && !contact.finished {
                    contact.finished = true;
                    close = Some(contact.national.clone());
                }
            }
        }
        if let Some(number) = close {
            close_open(&mut self.open, f.tenant, &number, session);
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
        let session: Arc<str> = Arc::from(record.session_id.as_str());
        let key = (tenant.clone(), session.clone());
        if self.sessions.contains_key(&key) {
            return false;
        }
        let mut contacts = Vec::with_capacity(record.contacts.len());
        let mut by_number = Map::with_capacity_and_hasher(record.contacts.len(), Default::default());
        for phone in &record.contacts {
            // A number given in its national form (the usual case) is one allocation for both.
            let given: Arc<str> = Arc::from(phone.as_str());
            let n = if is_national(phone) { given.clone() } else { Arc::from(national(phone)) };
            if by_number.contains_key(&n) {
                continue;
            }
            by_number.insert(n.clone(), contacts.len());
            self.open.entry((tenant.clone(), n.clone())).or_default().push_back(session.clone());
            contacts.push(Contact { national: n, given, dialled: 0, finished: false });
        }
        self.contacts += contacts.len();
        let mine = self.by_tenant.entry(tenant.clone()).or_default();
        mine.contacts += contacts.len();
        mine.order.push_back((session.clone(), now));
        if !record.external_id.is_empty() {
            self.externals.insert((tenant.clone(), Arc::from(record.external_id.as_str())), session.clone());
        }
        self.sessions.insert(key.clone(), Entry { record, contacts, by_number, at: now });
        self.sessions_order.push_back((key, now));
        self.last_recorder = Some(tenant.clone());
        true
    }

    /// Forgets the session at `key` if it is the one recorded at `at`.
    fn forget_session(&mut self, key: &SessionKey, at: u64) {
        if self.sessions.get(key).is_none_or(|e| e.at != at) {
            return;
        }
        let Some(entry) = self.sessions.remove(key) else { return };
        if let Some(forgotten) = &mut self.forgotten {
            forgotten.push(key.clone());
        }
        self.contacts -= entry.contacts.len();
        if !entry.record.external_id.is_empty() {
            let external = (key.0.clone(), Arc::from(entry.record.external_id.as_str()));
            if self.externals.get(&external).is_some_and(|s| *s == key.1) {
                self.externals.remove(&external);
            }
        }
        if let Some(mine) = self.by_tenant.get_mut(&key.0) {
            mine.contacts -= entry.contacts.len();
            if mine.contacts == 0
                && mine
                    .order
                    .iter()
                    .all(|(s, a)| self.sessions.get(&(key.0.clone(), s.clone())).is_none_or(|e| e.at != *a))
            {
                self.by_tenant.remove(&key.0);
            }
        }
        for c in &entry.contacts {
            close_open(&mut self.open, &key.0, &c.national, &key.1);
        }
    }

    /// The tenant whose oldest session goes when the contacts are over their bound.
    fn session_victim(&self) -> Option<TenantId> {
        let holders = self.by_tenant.values().filter(|t| t.contacts > 0).count().max(1);
        let share = (self.max_contacts / holders).max(1);
        if let Some(last) = &self.last_recorder {
            if self.by_tenant.get(last).is_some_and(|t| t.contacts >= share) {
                return Some(last.clone());
            }
        }
        self.by_tenant.iter().filter(|(_, t)| t.contacts > 0).max_by_key(|(_, t)| t.contacts).map(|(n, _)| n.clone())
    }

    /// Drops what is past the retention window or over the bounds.
    pub(crate) fn expire(&mut self, now: u64) {
        let horizon = now.saturating_sub(self.retention_ms);
        while let Some(&(key, at)) = self.calls_order.front() {
            if at >= horizon && self.calls_order.len() <= self.max_calls {
                break;
            }
            self.calls_order.pop_front();
            self.calls.remove(&key);
        }
        // By age: in recording order (a place whose session left already is skipped).
        while let Some((key, at)) = self.sessions_order.front() {
            if *at >= horizon {
                break;
            }
            let (key, at) = (key.clone(), *at);
            self.sessions_order.pop_front();
            self.forget_session(&key, at);
        }
        // By bound: fairly among tenants.
        while self.contacts > self.max_contacts {
            let Some(victim) = self.session_victim() else { break };
            let Some(mine) = self.by_tenant.get_mut(&victim) else { break };
            let Some((session, at)) = mine.order.pop_front() else {
                self.by_tenant.remove(&victim);
                continue;
            };
            self.forget_session(&(victim, session), at);
        }
        // The orders keep places of sessions gone by bound: compact them when they outgrow the
        // sessions (amortized: at most once per as many records).
        if self.sessions_order.len() > 2 * self.sessions.len() + 1024 {
            let sessions = &self.sessions;
            let live = |key: &SessionKey, at: u64| sessions.get(key).is_some_and(|e| e.at == at);
            self.sessions_order.retain(|(key, at)| live(key, *at));
            for (tenant, mine) in &mut self.by_tenant {
                mine.order.retain(|(s, at)| live(&(tenant.clone(), s.clone()), *at));
            }
        }
    }
}

/// Takes `session` off the open sessions holding `number` (it is there at most once: a session
/// holds each number once, and is recorded once). Searched from the oldest: expiry closes the
/// oldest session, so it is found first and taken off the front without moving the others.
fn close_open(
    open: &mut Map<(TenantId, Arc<str>), VecDeque<Arc<str>>>,
    tenant: &TenantId,
    number: &Arc<str>,
    session: &Arc<str>,
) {
    let key = (tenant.clone(), number.clone());
    if let Some(list) = open.get_mut(&key) {
        if let Some(at) = list.iter().position(|s| s == session) {
            list.remove(at);
        }
        if list.is_empty() {
            open.remove(&key);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        Arc::from("t")
    }

    fn record(session: &str, contacts: &[&str], redials: u32) -> SessionRecord {
        SessionRecord {
            session_id: session.into(),
            external_id: String::new(),
            contacts: contacts.iter().map(|c| (*c).to_owned()).collect(),
            redials,
            created_at_ms: 1,
            script_id: String::new(),
            name: String::new(),
            ..SessionRecord::default()
        }
    }

    fn fact<'a>(tenant: &'a TenantId, call: &'a str, phone: &'a str, fact: Fact, outcome: CallOutcome) -> FactRef<'a> {
        FactRef { tenant, call_id: call, phone_national: phone, fact, outcome }
    }

    #[test]
    fn unfinished_lists_only_sessions_created_before_the_cutoff_with_an_open_contact() {
        let t = tenant();
        let mut a = Attribution::new(60_000, 100, 200);
        let at = |mut r: SessionRecord, ms| {
            r.created_at_ms = ms;
            r
        };
        a.record(&t, at(record("old", &["0912000001"], 0), 100), 100);
        a.record(&t, at(record("done", &["0912000002"], 0), 100), 100);
        a.record(&t, at(record("young", &["0912000003"], 0), 500), 500);
        let done: Arc<str> = Arc::from("done");
        a.apply(fact(&t, "c2", "0912000002", Fact::Record, CallOutcome::Answered), &done, 1, 600);
        let ids = |v: Vec<(TenantId, SessionRecord)>| {
            let mut ids: Vec<String> = v.into_iter().map(|(_, r)| r.session_id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(a.unfinished(500)), ["old"], "young is not due, done is final");
        assert_eq!(ids(a.unfinished(501)), ["old", "young"]);
    }

    #[test]
    fn a_live_state_goes_to_the_one_open_session_holding_the_number_and_attempts_count_up() {
        let t = tenant();
        let mut a = Attribution::new(60_000, 100, 200);
        assert!(a.record(&t, record("s1", &["84912345670"], 1), 1));
        assert!(!a.record(&t, record("s1", &["0999999999"], 0), 1), "the first record counts");
        let n = "0912345670";
        let ringing = fact(&t, "c1", n, Fact::Ringing, CallOutcome::Unspecified);
        let (s, attempt) = a.attribute(ringing, None);
        assert_eq!((s.as_deref(), attempt), (Some("s1"), 1));
        let s = s.unwrap();
        a.apply(ringing, &s, attempt, 2);
        a.apply(ringing, &s, attempt, 2);
        // The call's later facts inherit its attempt; the contact's next call is attempt 2.
        assert_eq!(a.attribute(fact(&t, "c1", n, Fact::Hangup, CallOutcome::NoAnswer), None), (Some(s.clone()), 1));
        assert_eq!(a.attribute(fact(&t, "c2", n, Fact::Ringing, CallOutcome::Unspecified), None), (Some(s.clone()), 2));
        // A record is never guessed from the number (the call history attributes it)...
        assert_eq!(a.attribute(fact(&t, "c9", n, Fact::Record, CallOutcome::NoAnswer), None), (None, 0));
        // ...but inherits its call's session.
        assert_eq!(a.attribute(fact(&t, "c1", n, Fact::Record, CallOutcome::NoAnswer), None), (Some(s.clone()), 1));
        assert_eq!(a.record_of(&t, "s1").map(|r| r.redials), Some(1));
        assert!(Arc::ptr_eq(&a.session_name(&t, "s1").unwrap(), &s));
        // Another tenant's number is not this session's.
        let other: TenantId = Arc::from("u");
        assert_eq!(a.attribute(fact(&other, "c3", n, Fact::Ringing, CallOutcome::Unspecified), None), (None, 0));
    }

    #[test]
    fn a_number_in_two_open_sessions_stays_unattributed_until_one_of_them_is_final() {
        let t = tenant();
        let mut a = Attribution::new(60_000, 100, 200);
        a.record(&t, record("s1", &["0912345675"], 1), 1);
        a.record(&t, record("s2", &["0912345675"], 0), 1);
        let n = "0912345675";
        assert_eq!(a.attribute(fact(&t, "c1", n, Fact::Ringing, CallOutcome::Unspecified), None), (None, 0));
        // s2's call, attributed by its delivery, ends: no redials left, so s2 is final for it.
        let s2: Arc<str> = Arc::from("s2");
        let end = fact(&t, "c2", n, Fact::Record, CallOutcome::Busy);
        let (s, attempt) = a.attribute(end, Some(s2.clone()));
        assert_eq!((s.as_deref(), attempt), (Some("s2"), 1));
        a.apply(end, &s2, attempt, 2);
        assert_eq!(
            a.attribute(fact(&t, "c3", n, Fact::Ringing, CallOutcome::Unspecified), None).0.as_deref(),
            Some("s1")
        );
        // s1 has a redial: a busy first attempt leaves it open, an answered one closes it.
        let s1: Arc<str> = Arc::from("s1");
        a.apply(fact(&t, "c3", n, Fact::Record, CallOutcome::Busy), &s1, 1, 3);
        assert_eq!(
            a.attribute(fact(&t, "c4", n, Fact::Ringing, CallOutcome::Unspecified), None),
            (Some(s1.clone()), 2)
        );
        a.apply(fact(&t, "c4", n, Fact::Record, CallOutcome::Answered), &s1, 2, 4);
        assert_eq!(a.attribute(fact(&t, "c5", n, Fact::Ringing, CallOutcome::Unspecified), None), (None, 0));
    }

    #[test]
    fn one_tenants_sessions_push_out_only_its_own_while_others_hold_their_share() {
        let (quiet, loud): (TenantId, TenantId) = (Arc::from("quiet"), Arc::from("loud"));
        let mut a = Attribution::new(1_000_000, 100, 100);
        a.record(&quiet, record("q1", &["0900000001", "0900000002"], 0), 0);
        for i in 0..500 {
            a.record(&loud, record(&format!("l{i}"), &["0911111111", "0922222222"], 0), 1 + i);
            a.expire(1 + i);
        }
        assert!(a.record_of(&quiet, "q1").is_some(), "the quiet tenant's session stays");
        assert!(a.contacts <= 100);
        assert!(a.record_of(&loud, "l0").is_none() && a.record_of(&loud, "l499").is_some());
        // Its numbers are still attributed to it.
        let f = fact(&quiet, "c", "0900000001", Fact::Ringing, CallOutcome::Unspecified);
        assert_eq!(a.attribute(f, None).0.as_deref(), Some("q1"));
        // The orders do not keep what left.
        assert!(a.sessions_order.len() <= 2 * a.sessions.len() + 1024);
        // A tenant over its share loses its own oldest when another records.
        let mut b = Attribution::new(1_000_000, 100, 10);
        for i in 0..5 {
            b.record(&loud, record(&format!("l{i}"), &["0911111111", "0922222222"], 0), i);
        }
        b.record(&quiet, record("q1", &["0900000001", "0900000002"], 0), 10);
        b.expire(10);
        assert!(b.record_of(&quiet, "q1").is_some() && b.record_of(&loud, "l0").is_none());
    }

    #[test]
    fn sessions_sharing_numbers_leave_the_open_lists_by_expiry_and_by_finality() {
        // A campaign re-sending the same numbers: every session holds both, the bound keeps three.
        let t = tenant();
        let numbers = ["0900000001", "0900000002"];
        let mut a = Attribution::new(60_000, 100, 6);
        for i in 0..10 {
            a.record(&t, record(&format!("s{i}"), &numbers, 0), i);
            a.expire(i);
        }
        assert_eq!(a.sessions(), 3);
        let ringing = |call: &'static str, n: &'static str| fact_static(call, n, Fact::Ringing);
        // s7, s8 and s9 are open for both numbers: no guess.
        assert_eq!(a.attribute(ringing("c1", numbers[0]), None), (None, 0));
        // s8 becomes final for the first number (attributed by its delivery); a new session pushes
        // the oldest, s7, out.
        let s8: Arc<str> = Arc::from("s8");
        let end = fact(&t, "c2", numbers[0], Fact::Record, CallOutcome::Answered);
        a.apply(end, &s8, 1, 10);
        a.record(&t, record("s10", &["0900000003", "0900000004"], 0), 11);
        a.expire(11);
        assert!(a.record_of(&t, "s7").is_none() && a.record_of(&t, "s8").is_some());
        // s8 was closed for the first number, s7 expired: s9 is the one open session holding it.
        assert_eq!(a.attribute(ringing("c3", numbers[0]), None).0.as_deref(), Some("s9"));
        // The second number is still held by s8 and s9.
        assert_eq!(a.attribute(ringing("c4", numbers[1]), None), (None, 0));
    }

    fn fact_static(call: &'static str, phone: &'static str, what: Fact) -> FactRef<'static> {
        static TENANT: std::sync::OnceLock<TenantId> = std::sync::OnceLock::new();
        FactRef {
            tenant: TENANT.get_or_init(tenant),
            call_id: call,
            phone_national: phone,
            fact: what,
            outcome: CallOutcome::Unspecified,
        }
    }

    #[test]
    fn a_session_is_found_by_the_callers_own_id_while_it_is_recorded() {
        let t = tenant();
        let mut a = Attribution::new(1_000, 100, 100);
        let mut named = record("s1", &["0900000001"], 0);
        named.external_id = "order-42".into();
        a.record(&t, named, 0);
        assert_eq!(a.session_id_of(&t, "order-42").as_deref(), Some("s1"));
        assert_eq!(a.session_id_of(&t, "s1").as_deref(), Some("s1"));
        assert_eq!(a.record_of(&t, "order-42").map(|r| r.session_id.as_str()), Some("s1"));
        assert_eq!(a.session_id_of(&Arc::from("other"), "order-42"), None, "per tenant");
        a.expire(2_000);
        assert_eq!(a.session_id_of(&t, "order-42"), None, "gone with its session");
    }

    #[test]
    fn sessions_and_calls_leave_by_age_and_by_bound() {
        let t = tenant();
        let mut a = Attribution::new(1_000, 2, 3);
        a.record(&t, record("s1", &["0900000001", "0900000002"], 0), 0);
        a.record(&t, record("s2", &["0900000003", "0900000004"], 0), 10);
        a.expire(10);
        // Four contacts over a bound of three: the oldest session went, its numbers with it.
        assert!(a.record_of(&t, "s1").is_none() && a.record_of(&t, "s2").is_some());
        assert_eq!(a.attribute(fact(&t, "c", "0900000001", Fact::Ringing, CallOutcome::Unspecified), None), (None, 0));
        let s2: Arc<str> = Arc::from("s2");
        for (i, call) in ["c1", "c2", "c3"].into_iter().enumerate() {
            a.apply(fact(&t, call, "0900000003", Fact::Ringing, CallOutcome::Unspecified), &s2, i as u32 + 1, 20);
        }
        a.expire(20);
        // Three calls over a bound of two: the first is forgotten.
        let first = fact(&t, "c1", "0999999999", Fact::Hangup, CallOutcome::NoAnswer);
        assert_eq!(a.attribute(first, None), (None, 0));
        assert_eq!(a.attribute(fact(&t, "c3", "0999999999", Fact::Hangup, CallOutcome::NoAnswer), None).1, 3);
        // Past the retention window everything goes.
        a.expire(2_000);
        assert_eq!(a.sessions(), 0);
        assert_eq!(a.attribute(fact(&t, "c3", "0999999999", Fact::Hangup, CallOutcome::NoAnswer), None), (None, 0));
    }
}
