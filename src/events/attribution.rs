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

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::BuildHasher,
    sync::{Arc, OnceLock},
};

/// The index's maps: keyed by hashes, tenants and numbers, hashed with foldhash (seeded at
/// random per process, like std's), not SipHash: recording a 15-contact session looks up and
/// inserts about 20 keys, and SipHash made that 11 k of a CreateSession's instructions
/// (BENCHMARKS.md, "CreateSession vs the stack floor").
type Map<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

use super::{CallOutcome, Fact, SessionQuery, SessionRecord, TenantId};
use crate::domain::{Purpose, national_key};

/// One contact of a recorded session, in 24 bytes: its number packed, where the caller's form of
/// it is in the session's text, its attempts and whether it is final.
#[derive(Clone, Copy)]
struct Contact {
    /// Its national form packed (`domain::national_key`); a number without one (more than 18
    /// digits: no valid phone) gets `u64::MAX - its place` and `keyed` false: kept for the
    /// record, never matched, never open.
    number: u64,
    /// The number as the caller gave it: `len` bytes at `start` in the session's text.
    start: u32,
    len: u32,
    /// The highest attempt number seen to it.
    dialled: u32,
    finished: bool,
    /// The same number given again in the record (kept for the record, not a contact of its own).
    repeat: bool,
    keyed: bool,
}

impl Contact {
    /// A contact of its own with a number: open until final.
    fn opens(&self) -> bool {
        self.keyed && !self.repeat
    }
}

/// Where a session's texts or contacts are in its tenant's arena.
#[derive(Clone, Copy)]
struct Place {
    chunk: u64,
    start: u32,
    len: u32,
}

/// The texts or the contacts of a tenant's sessions, in recording order, in chunks: a session's
/// are in one chunk, and a chunk goes once the sessions in it have left (oldest first). No
/// allocation per session: recording appends, leaving moves the front; a chunk let go is kept
/// for the next one needed.
struct Arena<T> {
    chunks: VecDeque<Vec<T>>,
    /// The number of `chunks[0]`.
    base: u64,
    chunk_len: usize,
    spare: Option<Vec<T>>,
}

impl<T: Copy> Arena<T> {
    fn new(chunk_len: usize) -> Self {
        Arena { chunks: VecDeque::new(), base: 0, chunk_len, spare: None }
    }

    /// The chunk `n` items go into (made when the last has no room), and its number.
    fn room(&mut self, n: usize) -> (&mut Vec<T>, u64) {
        if self.chunks.back().is_none_or(|c| c.capacity() - c.len() < n) {
            let chunk = match self.spare.take() {
                Some(spare) if spare.capacity() >= n => spare,
                _ => Vec::with_capacity(self.chunk_len.max(n)),
            };
            self.chunks.push_back(chunk);
        }
        let number = self.base + self.chunks.len() as u64 - 1;
        let len = self.chunks.len();
        (&mut self.chunks[len - 1], number)
    }

    fn push(&mut self, items: &[T]) -> Place {
        let (chunk, number) = self.room(items.len());
        let start = offset(chunk.len());
        chunk.extend_from_slice(items);
        Place { chunk: number, start, len: offset(items.len()) }
    }

    fn index(&self, p: Place) -> Option<(usize, std::ops::Range<usize>)> {
        let chunk = usize::try_from(p.chunk.checked_sub(self.base)?).ok()?;
        let start = p.start as usize;
        Some((chunk, start..start + p.len as usize))
    }

    fn get(&self, p: Place) -> &[T] {
        self.index(p).and_then(|(c, range)| self.chunks.get(c)?.get(range)).unwrap_or_default()
    }

    fn get_mut(&mut self, p: Place) -> &mut [T] {
        match self.index(p) {
            Some((c, range)) => self.chunks.get_mut(c).and_then(|c| c.get_mut(range)).unwrap_or_default(),
            None => &mut [],
        }
    }

    /// Lets go of the chunks before `chunk`: no session in them is left.
    fn release_before(&mut self, chunk: u64) {
        while self.base < chunk {
            let Some(mut gone) = self.chunks.pop_front() else { break };
            self.base += 1;
            if gone.capacity() == self.chunk_len {
                gone.clear();
                self.spare = Some(gone);
            }
        }
    }
}

/// Texts a session's contacts go in per chunk (bytes), and contacts.
const TEXT_CHUNK: usize = 64 * 1024;
const CONTACT_CHUNK: usize = 2 * 1024;

/// A recorded session, compact: its texts and its contacts in its tenant's arenas, the rest
/// inline. The record is rebuilt when asked for (reports, listings, reconciliation), not kept as
/// it came (with an allocation per contact).
struct Entry {
    /// The session id, the external id, the script id, the name, then each contact as given.
    text: Place,
    /// Where the first four texts end in the text.
    heads: [u32; 4],
    /// Sorted by (number, place given); of a number given twice, the later ones are repeats.
    contacts: Place,
    /// Keyed hashes of its id and of its external id (0 without one).
    id_key: u64,
    external_key: u64,
    /// Its id as its events share it, made when first asked for.
    shared: OnceLock<Arc<str>>,
    redials: u32,
    created_at_ms: u64,
    purpose: Option<Purpose>,
    start_ms: Option<u64>,
    refused: BTreeMap<String, u64>,
}

/// A place in a session's text (records are far below 4 GiB).
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A record made ready for the index (its contacts packed and sorted), before the lock that
/// guards the index is taken; dropped after it.
pub(crate) struct Prepared {
    record: SessionRecord,
    contacts: Vec<Contact>,
    text_len: usize,
}

impl Prepared {
    pub(crate) fn new(record: SessionRecord) -> Self {
        let heads = [&record.session_id, &record.external_id, &record.script_id, &record.name];
        let mut at = heads.iter().map(|h| h.len()).sum::<usize>();
        let mut contacts: Vec<Contact> = record
            .contacts
            .iter()
            .enumerate()
            .map(|(i, phone)| {
                let start = offset(at);
                at += phone.len();
                let key = national_key(phone);
                Contact {
                    number: key.unwrap_or_else(|| u64::MAX - u64::try_from(i).unwrap_or(0)),
                    start,
                    len: offset(phone.len()),
                    dialled: 0,
                    finished: false,
                    repeat: false,
                    keyed: key.is_some(),
                }
            })
            .collect();
        // Stable: of a number given twice, the first stays the contact.
        contacts.sort_by_key(|c| c.number);
        for i in 1..contacts.len() {
            contacts[i].repeat = contacts[i].number == contacts[i - 1].number;
        }
        Prepared { record, contacts, text_len: at }
    }

    /// The record it was made from.
    pub(crate) fn into_record(self) -> SessionRecord {
        self.record
    }
}

/// What the index let go, and the records it took: freed when this is dropped, which the
/// embedded store does after its lock (the other worker need not wait for their freeing).
#[derive(Default)]
pub(crate) struct Released {
    entries: Vec<Entry>,
    records: Vec<Prepared>,
}

impl Released {
    /// Keeps a record put in the index, to be freed with the rest.
    pub(crate) fn keep(&mut self, prepared: Prepared) {
        self.records.push(prepared);
    }
}

/// The open sessions of a tenant holding a number: how many, and the sum of their ordinals
/// (wrapping). A session adds its ordinal once per number it holds and takes it off once (when
/// final for it, or when it leaves), so with one left the sum is that one.
struct Open {
    count: u32,
    sum: u64,
}

/// One tenant's part of the index.
struct TenantIndex {
    /// Its sessions in recording order: `ring[i]` is ordinal `base + i`.
    ring: VecDeque<Entry>,
    base: u64,
    texts: Arena<u8>,
    contact_lists: Arena<Contact>,
    /// A keyed hash of each session's id -> its ordinal (the entry's own id is compared on
    /// look-up).
    ids: Map<u64, u64>,
    /// The caller's names of its sessions, the same way.
    externals: Map<u64, u64>,
    contacts: usize,
    /// Its open numbers.
    open: Map<u64, Open>,
}

impl TenantIndex {
    fn new(base: u64) -> Self {
        TenantIndex {
            ring: VecDeque::new(),
            base,
            texts: Arena::new(TEXT_CHUNK),
            contact_lists: Arena::new(CONTACT_CHUNK),
            ids: Map::default(),
            externals: Map::default(),
            contacts: 0,
            open: Map::default(),
        }
    }

    fn place(&self, ordinal: u64) -> Option<usize> {
        usize::try_from(ordinal.checked_sub(self.base)?).ok().filter(|i| *i < self.ring.len())
    }

    fn at(&self, ordinal: u64) -> Option<&Entry> {
        self.ring.get(self.place(ordinal)?)
    }

    /// The `i`th of a session's first four texts (its id, external id, script id, name).
    fn head(&self, e: &Entry, i: usize) -> &str {
        let start = if i == 0 { 0 } else { e.heads[i - 1] as usize };
        self.text(e, start, e.heads[i] as usize)
    }

    fn text(&self, e: &Entry, start: usize, end: usize) -> &str {
        let bytes = self.texts.get(e.text).get(start..end).unwrap_or_default();
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    fn external_id(&self, e: &Entry) -> &str {
        self.head(e, 1)
    }

    /// The number as the caller gave it.
    fn given(&self, e: &Entry, c: &Contact) -> &str {
        self.text(e, c.start as usize, c.start as usize + c.len as usize)
    }

    fn contacts_of(&self, e: &Entry) -> &[Contact] {
        self.contact_lists.get(e.contacts)
    }

    /// The session's contact with this number.
    fn contact(&self, e: &Entry, number: Option<u64>) -> Option<Contact> {
        let number = number?;
        let contacts = self.contacts_of(e);
        let at = contacts.partition_point(|c| c.number < number);
        contacts.get(at).filter(|c| c.number == number && c.keyed).copied()
    }

    fn unfinished(&self, e: &Entry) -> bool {
        self.contacts_of(e).iter().any(|c| !c.repeat && !c.finished)
    }

    /// The session's id, as its events share it.
    fn shared(&self, e: &Entry) -> Arc<str> {
        e.shared.get_or_init(|| Arc::from(self.head(e, 0))).clone()
    }

    /// The session's record as it was recorded.
    fn record(&self, e: &Entry) -> SessionRecord {
        let mut given: Vec<&Contact> = self.contacts_of(e).iter().collect();
        // An empty number starts where the next one does: it came first.
        given.sort_unstable_by_key(|c| (c.start, c.len));
        SessionRecord {
            session_id: self.head(e, 0).to_owned(),
            external_id: self.head(e, 1).to_owned(),
            contacts: given.into_iter().map(|c| self.given(e, c).to_owned()).collect(),
            redials: e.redials,
            created_at_ms: e.created_at_ms,
            script_id: self.head(e, 2).to_owned(),
            name: self.head(e, 3).to_owned(),
            purpose: e.purpose,
            start_ms: e.start_ms,
            refused: e.refused.clone(),
        }
    }

    /// The ordinal of the session with id `session` (`key` its hash).
    fn find(&self, key: u64, session: &str) -> Option<u64> {
        let ordinal = *self.ids.get(&key)?;
        self.at(ordinal).is_some_and(|e| self.head(e, 0) == session).then_some(ordinal)
    }

    /// The ordinal of the session named `external` by the caller (`key` its hash).
    fn find_external(&self, key: u64, external: &str) -> Option<u64> {
        let ordinal = *self.externals.get(&key)?;
        self.at(ordinal).is_some_and(|e| self.external_id(e) == external).then_some(ordinal)
    }

    fn next(&self) -> u64 {
        self.base + self.ring.len() as u64
    }

    /// Puts the record's texts and contacts in the arenas: its entry.
    fn entry(&mut self, p: &Prepared, id_key: u64, external_key: u64) -> Entry {
        let r = &p.record;
        let (chunk, number) = self.texts.room(p.text_len);
        let start = chunk.len();
        let mut heads = [0u32; 4];
        for (end, head) in heads.iter_mut().zip([&r.session_id, &r.external_id, &r.script_id, &r.name]) {
            chunk.extend_from_slice(head.as_bytes());
            *end = offset(chunk.len() - start);
        }
        for phone in &r.contacts {
            chunk.extend_from_slice(phone.as_bytes());
        }
        let text = Place { chunk: number, start: offset(start), len: offset(chunk.len() - start) };
        Entry {
            text,
            heads,
            contacts: self.contact_lists.push(&p.contacts),
            id_key,
            external_key,
            shared: OnceLock::new(),
            redials: r.redials,
            created_at_ms: r.created_at_ms,
            purpose: r.purpose,
            start_ms: r.start_ms,
            refused: r.refused.clone(),
        }
    }
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
        // One look-up each (a key taken over by a later session is put back).
        if let Some(holder) = t.ids.remove(&entry.id_key).filter(|o| *o != ordinal) {
            t.ids.insert(entry.id_key, holder);
        }
        if entry.heads[1] > entry.heads[0] {
            if let Some(holder) = t.externals.remove(&entry.external_key).filter(|o| *o != ordinal) {
                t.externals.insert(entry.external_key, holder);
            }
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

/// Takes the session at `ordinal` off the open sessions holding `number` (it holds it).
fn close_open(open: &mut Map<u64, Open>, number: u64, ordinal: u64) {
    if let std::collections::hash_map::Entry::Occupied(mut o) = open.entry(number) {
        let held = o.get_mut();
        held.count = held.count.saturating_sub(1);
        held.sum = held.sum.wrapping_sub(ordinal);
        if held.count == 0 {
            o.remove();
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
        FactRef { tenant, call_id: call, number: national_key(phone), fact, outcome }
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
        assert!(a.sessions_order.len() <= 2 * a.sessions + 1024);
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
            number: national_key(phone),
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
        assert_eq!(a.record_of(&t, "order-42").map(|r| r.session_id), Some("s1".to_owned()));
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

    #[test]
    fn a_number_given_twice_counts_once_its_events_get_the_first_form_and_the_record_comes_back_whole() {
        let t = tenant();
        let mut a = Attribution::new(60_000, 100, 200);
        let long = "1".repeat(20);
        let mut given = record("s1", &["0912345671", "", "+84912345670", &long, "", "0912345670", "ồ"], 2);
        (given.external_id, given.script_id, given.name) = ("order-1".into(), "sc".into(), "tên".into());
        (given.purpose, given.start_ms) = (Some(crate::domain::Purpose::Service), Some(9));
        given.refused.insert("DO_NOT_CALL".into(), 3);
        a.record(&t, given.clone(), 1);
        assert_eq!(a.record_of(&t, "s1"), Some(given.clone()), "every field, contacts in order, repeats too");
        assert_eq!(a.record_of(&t, "order-1"), Some(given.clone()));
        assert_eq!(a.records(&t, &SessionQuery { limit: 10, ..SessionQuery::default() }), [given]);
        assert_eq!(a.contacts, 4, "the number given twice is one contact; the 20-digit one is kept");
        let first = a.contact_phone(&t, "s1", "84 912 345 670").unwrap();
        assert_eq!(&*first, "+84912345670", "the first form given");
        assert_eq!(a.contact_phone(&t, "s1", "0912345670"), Some(first));
        assert_eq!(a.contact_phone(&t, "s1", "0912345671").as_deref(), Some("0912345671"));
        assert_eq!(a.contact_phone(&t, "s1", &long), None, "a number without a key is never matched");
        assert_eq!(a.contact_phone(&t, "s1", "0912345672"), None);
        assert_eq!(a.contact_phone(&Arc::from("u"), "s1", "0912345670"), None, "per tenant");
        // Still contacts: the session is unfinished until they are given up too.
        let s1: Arc<str> = Arc::from("s1");
        for n in ["0912345670", "0912345671"] {
            a.apply(fact(&t, "c", n, Fact::Record, CallOutcome::Answered), &s1, 1, 2);
        }
        assert_eq!(a.unfinished(10).len(), 1);
    }

    proptest::proptest! {
        /// The open numbers (a count and a sum of ordinals) against a plain list of who holds
        /// what: after any mix of records, finals and the bound pushing sessions out, a live
        /// state is attributed exactly when one live session still holds its number open.
        #[test]
        fn an_open_number_names_its_one_holder_as_a_plain_list_would(
            ops in proptest::collection::vec((0u8..3, 0u8..16, 0usize..4), 1..120),
            bound in 1usize..12,
        ) {
            let pool = ["0900000001", "0900000002", "0900000003", "0900000004"];
            let t = tenant();
            let mut a = Attribution::new(u64::MAX, 1_000, bound);
            // (session, its numbers still open), oldest first.
            let mut model: Vec<(String, Vec<usize>)> = Vec::new();
            let mut next = 0;
            for (i, (op, mask, pick)) in ops.into_iter().enumerate() {
                let now = i as u64;
                if op < 2 {
                    let numbers: Vec<usize> = (0..4).filter(|b| mask & (1 << b) != 0).collect();
                    let name = format!("s{next}");
                    next += 1;
                    let given: Vec<&str> = numbers.iter().map(|n| pool[*n]).collect();
                    proptest::prop_assert!(a.record(&t, record(&name, &given, 0), now));
                    a.expire(now);
                    model.push((name, numbers));
                } else if let Some((name, numbers)) = {
                    let at = pick % model.len().max(1);
                    model.get_mut(at)
                } {
                    if let Some(n) = numbers.pop() {
                        let s: Arc<str> = Arc::from(name.as_str());
                        a.apply(fact(&t, "c", pool[n], Fact::Record, CallOutcome::Answered), &s, 1, now);
                    }
                }
                // The model keeps what the index kept.
                model.retain(|(name, _)| a.record_of(&t, name).is_some());
                for (n, phone) in pool.iter().enumerate() {
                    let holders: Vec<&String> =
                        model.iter().filter(|(_, open)| open.contains(&n)).map(|(s, _)| s).collect();
                    let want = if holders.len() == 1 { Some(holders[0].as_str()) } else { None };
                    let got = a.attribute(fact(&t, "live", phone, Fact::Ringing, CallOutcome::Unspecified), None).0;
                    proptest::prop_assert_eq!(got.as_deref(), want, "number {}", n);
                }
                proptest::prop_assert!(a.contacts <= bound);
            }
        }
    }

    #[test]
    fn the_arenas_keep_only_the_chunks_of_sessions_held_and_records_come_back_whole_across_them() {
        let t = tenant();
        // A bound of 300 contacts: twenty 15-contact sessions held at a time.
        let mut a = Attribution::new(u64::MAX, 100, 300);
        let numbers: Vec<String> = (0..15).map(|i| format!("09120000{i:02}")).collect();
        let given: Vec<&str> = numbers.iter().map(String::as_str).collect();
        for i in 0..20_000u64 {
            let mut r = record(&format!("session-{i:08}"), &given, 0);
            r.external_id = format!("order-{i}");
            a.record(&t, r, i);
            a.expire(i);
        }
        let mine = a.tenants.get("t").unwrap();
        assert_eq!(a.sessions(), 20);
        // About 6 MB of texts and contacts went through; what is held fits a chunk or two.
        assert!(mine.texts.chunks.len() <= 2 && mine.contact_lists.chunks.len() <= 2);
        let last = a.record_of(&t, "order-19999").unwrap();
        assert_eq!((last.session_id.as_str(), last.contacts.len()), ("session-00019999", 15));
        assert_eq!(last.contacts, numbers);
        assert!(a.record_of(&t, "session-00019979").is_none() && a.record_of(&t, "session-00019980").is_some());
        // A session larger than a chunk gets one of its own, and comes back whole.
        let many: Vec<String> = (0..9_000).map(|i| format!("0913{i:06}")).collect();
        let mut big = Attribution::new(u64::MAX, 100, 100_000);
        let r = SessionRecord { contacts: many.clone(), ..record("big", &[], 0) };
        big.record(&t, r.clone(), 1);
        big.record(&t, record("small", &["0900000001"], 0), 2);
        assert_eq!(big.record_of(&t, "big"), Some(r));
        assert_eq!(big.record_of(&t, "small").map(|r| r.contacts), Some(vec!["0900000001".to_owned()]));
        let f = fact(&t, "c", "0913008999", Fact::Ringing, CallOutcome::Unspecified);
        assert_eq!(big.attribute(f, None).0.as_deref(), Some("big"));
    }

    #[test]
    fn a_contact_takes_24_bytes_and_an_open_number_16() {
        // BENCHMARKS.md ("Fourth session") counts the index's memory from these: a full index holds
        // 200,000 contacts and as many open numbers when they are distinct.
        assert!(std::mem::size_of::<Contact>() <= 24, "{}", std::mem::size_of::<Contact>());
        assert!(std::mem::size_of::<Open>() <= 16, "{}", std::mem::size_of::<Open>());
    }

    #[test]
    fn a_tenants_order_keeps_no_session_gone_by_age() {
        let t = tenant();
        let mut a = Attribution::new(100, 1_000, 10_000);
        for i in 0..1_000u64 {
            a.record(&t, record(&format!("s{i}"), &["0900000001"], 0), i * 10);
            a.expire(i * 10);
        }
        // 100 ms of retention at one session per 10 ms: about ten live, and no more places.
        let mine = a.tenants.get("t").unwrap();
        assert!(a.sessions() <= 11 && mine.ring.len() == a.sessions(), "{} {}", a.sessions(), mine.ring.len());
        assert!(a.sessions_order.len() <= 2 * a.sessions + 1024);
        // The number is held by every live session: no guess.
        assert_eq!(a.attribute(fact(&t, "c", "0900000001", Fact::Ringing, CallOutcome::Unspecified), None), (None, 0));
        a.expire(1_000_000);
        assert!(a.tenants.is_empty() && a.sessions() == 0 && a.contacts == 0, "a tenant without sessions goes");
    }
}
