//! What the JetStream store keeps in memory on every replica: the attribution index (session
//! records and calls) built by consuming the stream, and the events' chains (for watchers).
//!
//! The attribution rules and index are the embedded store's (`attribution/`): a fact without a
//! session id gets the session of its call when known, else (live states only) the one open
//! session of the tenant holding the number. The appending replica decides with its index and writes the result into
//! the message (session and attempt); every replica applies the stored messages in stream order,
//! so their indexes converge. Two replicas attributing two new calls of one contact at the same
//! instant may give both the same attempt number (the index is eventually consistent).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use super::wire::EVENTS_PREFIX;
use crate::domain::national_key;
use crate::events::{
    CallEvent, SessionQuery, SessionRecord, TenantId,
    attribution::{Attribution, FactRef},
};

/// Where an event's predecessors are: the stream sequence of the previous event on its subject
/// (its session's) and on its tenant's events; 0 when there is none since `floor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) seq: u64,
    pub(crate) prev_subject: u64,
    pub(crate) prev_tenant: u64,
    pub(crate) floor: u64,
}

impl Link {
    /// Whether this event shows that a watcher missed one: an earlier event of its filter (the
    /// session's subject, or the whole tenant's) after `mark` (the last stream sequence the
    /// watcher's consumer delivered, or its start − 1) that never came, because it left the
    /// stream before it was read. `None`: the chain does not reach back to `mark`.
    pub(crate) fn reveals_gap(&self, tenant_wide: bool, mark: u64) -> Option<bool> {
        let prev = if tenant_wide { self.prev_tenant } else { self.prev_subject };
        if prev != 0 {
            Some(prev > mark)
        } else if self.floor <= mark.saturating_add(1) {
            Some(false)
        } else {
            None
        }
    }
}

/// The chains of events by subject and by tenant, as the index's consumer reads the stream
/// (every subject, in order), for the last `max` events: what makes a watcher's gap check exact
/// (a sequence jump alone may be other sessions' events).
pub(crate) struct Chains {
    max: usize,
    links: VecDeque<Link>,
    last_subject: HashMap<Box<str>, u64>,
    last_tenant: HashMap<Box<str>, u64>,
    /// The chains hold every event from this sequence on.
    floor: u64,
    /// The last stream sequence noted.
    seen: u64,
}

impl Chains {
    pub(crate) fn new(max: usize) -> Self {
        Chains {
            max: max.max(1),
            links: VecDeque::new(),
            last_subject: HashMap::new(),
            last_tenant: HashMap::new(),
            floor: 0,
            seen: 0,
        }
    }

    /// Notes a stream message (any subject; in stream order).
    pub(crate) fn note(&mut self, seq: u64, subject: &str) {
        if seq <= self.seen {
            return;
        }
        if seq != self.seen + 1 {
            // What came between is unknown (gone before it was read): the chains restart here.
            self.floor = seq;
            self.last_subject.clear();
            self.last_tenant.clear();
        }
        self.seen = seq;
        let Some(rest) = subject.strip_prefix(EVENTS_PREFIX) else { return };
        let tenant = rest.split('.').next().unwrap_or_default();
        let prev_subject = swap_last(&mut self.last_subject, rest, seq);
        let prev_tenant = swap_last(&mut self.last_tenant, tenant, seq);
        self.links.push_back(Link { seq, prev_subject, prev_tenant, floor: self.floor });
        while self.links.len() > self.max {
            self.links.pop_front();
        }
        if self.last_subject.len() > self.max.saturating_mul(2).max(1024) {
            // Subjects whose last event is older than every link: no event of theirs since then.
            let front = self.links.front().map_or(seq, |l| l.seq);
            self.last_subject.retain(|_, last| *last >= front);
            self.last_tenant.retain(|_, last| *last >= front);
            self.floor = self.floor.max(front);
        }
    }

    /// The last stream sequence noted (every message the index's consumer read, in order).
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// The links of the event at `seq`, when still held.
    pub(crate) fn link(&self, seq: u64) -> Option<Link> {
        self.links.binary_search_by_key(&seq, |l| l.seq).ok().map(|i| self.links[i])
    }
}

/// Sets `key`'s last sequence to `seq`; the one before (0: none). Allocates only for a new key.
fn swap_last(map: &mut HashMap<Box<str>, u64>, key: &str, seq: u64) -> u64 {
    match map.get_mut(key) {
        Some(last) => std::mem::replace(last, seq),
        None => {
            map.insert(Box::from(key), seq);
            0
        }
    }
}

/// The attribution index (`attribution/`, as the embedded store's), fed in stream order:
/// bounded by the retention window, `--events-max` calls and twice as many session contacts.
pub(crate) struct Index {
    attribution: Attribution,
    /// The events' chains (for watchers' gap checks).
    pub(crate) chains: Chains,
}

fn fact_ref<'a>(tenant: &'a TenantId, e: &'a CallEvent) -> FactRef<'a> {
    FactRef { tenant, call_id: &e.call_id, number: national_key(&e.phone), fact: e.fact, outcome: e.outcome }
}

impl Index {
    pub(crate) fn new(retention_ms: u64, max: usize) -> Self {
        Index { attribution: Attribution::new(retention_ms, max, max.saturating_mul(2)), chains: Chains::new(max) }
    }

    pub(crate) fn sessions(&self) -> usize {
        self.attribution.sessions()
    }

    pub(crate) fn record(&self, tenant: &TenantId, session: &str) -> Option<SessionRecord> {
        self.attribution.record_of(tenant, session)
    }

    /// The tenant's recorded sessions a listing wants, newest first.
    pub(crate) fn records(&self, tenant: &TenantId, query: &SessionQuery) -> Vec<SessionRecord> {
        self.attribution.records(tenant, query)
    }

    /// The session id `id` names (its own, or the caller's external id for it), when recorded.
    pub(crate) fn session_id_of(&self, tenant: &TenantId, id: &str) -> Option<Arc<str>> {
        self.attribution.session_id_of(tenant, id)
    }

    /// The session and attempt of `tenant`'s new fact (nothing changes until it is stored and
    /// applied).
    pub(crate) fn attribute(&self, tenant: &TenantId, e: &CallEvent) -> (Option<Arc<str>>, u32) {
        let given = (!e.session_id.is_empty()).then(|| e.session_id.clone());
        self.attribution.attribute(fact_ref(tenant, e), given)
    }

    /// The number as the caller gave it, of the contact `phone` of the recorded `session`.
    pub(crate) fn contact_phone(&self, tenant: &TenantId, session: &Arc<str>, phone: &str) -> Option<Arc<str>> {
        self.attribution.contact_phone(tenant, session, phone)
    }

    /// The sessions recorded before `created_before_ms` with a contact not final yet.
    pub(crate) fn unfinished(&mut self, now: u64, created_before_ms: u64) -> Vec<(TenantId, SessionRecord)> {
        self.attribution.expire(now);
        self.attribution.unfinished(created_before_ms)
    }

    /// Applies a stored event (idempotent: the appending replica applies it at once, and again
    /// when the consumer reads it).
    pub(crate) fn apply_event(&mut self, tenant: &TenantId, e: &CallEvent, now: u64) {
        if e.session_id.is_empty() {
            return;
        }
        self.attribution.apply(fact_ref(tenant, e), &e.session_id, e.attempt, now);
        self.attribution.expire(now);
    }

    /// Applies a session record (the first one of a session counts).
    pub(crate) fn apply_session(&mut self, tenant: &TenantId, record: SessionRecord, now: u64) {
        if self.attribution.record(tenant, record, now) {
            self.attribution.expire(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Fact;
    use crate::events::jetstream::wire::{SESSIONS_PREFIX, hash16};

    #[test]
    fn a_live_state_without_session_goes_to_the_one_open_session_and_attempts_count_up() {
        let mut index = Index::new(60_000, 100);
        let tenant: TenantId = Arc::from("t");
        let record = SessionRecord {
            session_id: "s1".into(),
            external_id: String::new(),
            contacts: vec!["0912345670".into()],
            redials: 1,
            created_at_ms: 1,
            script_id: String::new(),
            name: String::new(),
            ..SessionRecord::default()
        };
        index.apply_session(&tenant, record.clone(), 1);
        let live = |call: &str, fact| CallEvent::live(call, fact, "84912345670");
        let first = live("c1", Fact::Ringing);
        let (session, attempt) = index.attribute(&tenant, &first);
        assert_eq!((session.as_deref(), attempt), (Some("s1"), 1));
        let stored = CallEvent { session_id: session.clone().unwrap_or_default(), attempt, ..first };
        index.apply_event(&tenant, &stored, 2);
        // The call's later facts inherit; a second call is attempt 2.
        assert_eq!(index.attribute(&tenant, &live("c1", Fact::Hangup)), (session.clone(), 1));
        assert_eq!(index.attribute(&tenant, &live("c2", Fact::Ringing)), (session, 2));
        assert_eq!(index.record(&tenant, "s1"), Some(record));
    }

    #[test]
    fn chains_tell_a_missed_event_from_other_sessions_events() {
        let t = hash16("t");
        let (a, b) = (format!("{EVENTS_PREFIX}{t}.a"), format!("{EVENTS_PREFIX}{t}.b"));
        let other = format!("{EVENTS_PREFIX}{}.a", hash16("u"));
        let mut chains = Chains::new(100);
        chains.note(1, &a);
        for seq in 2..=50 {
            chains.note(seq, &b);
        }
        chains.note(51, &format!("{SESSIONS_PREFIX}{t}.c"));
        chains.note(52, &other);
        chains.note(53, &a);
        let link = chains.link(53).unwrap();
        assert_eq!((link.prev_subject, link.prev_tenant), (1, 50));
        // A watcher of session a that read 1 missed nothing, whatever b did in between; one that
        // started after 1 missed nothing either; one of the whole tenant that read up to 40 did.
        assert_eq!(link.reveals_gap(false, 1), Some(false));
        assert_eq!(link.reveals_gap(false, 10), Some(false));
        assert_eq!(link.reveals_gap(false, 0), Some(true), "event 1 was after the start and never came");
        assert_eq!(link.reveals_gap(true, 40), Some(true));
        assert_eq!(link.reveals_gap(true, 50), Some(false));
        assert_eq!(chains.link(51), None, "session records are not events");
        // Repeats change nothing; a jump restarts the chains (what came between is unknown).
        chains.note(53, &b);
        chains.note(60, &a);
        let link = chains.link(60).unwrap();
        assert_eq!((link.prev_subject, link.floor), (0, 60));
        assert_eq!(link.reveals_gap(false, 59), Some(false));
        assert_eq!(link.reveals_gap(false, 53), None, "54..59 are unknown");
        // Only the last `max` events are held.
        let mut small = Chains::new(3);
        for seq in 1..=5 {
            small.note(seq, &a);
        }
        assert_eq!(small.link(2), None);
        assert_eq!(small.link(5).map(|l| l.prev_subject), Some(4));
    }
}
