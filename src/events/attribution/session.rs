//! One tenant's part of the index: its sessions (a ring in recording order, their texts and
//! contacts in arenas), their ids, and its open numbers; and a record made ready for it.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, OnceLock},
};

use super::{
    Map,
    arena::{Arena, CONTACT_CHUNK, Place, TEXT_CHUNK, offset},
};
use crate::{
    domain::{Purpose, national_key},
    events::SessionRecord,
};

/// One contact of a recorded session, in 24 bytes: its number packed, where the caller's form of
/// it is in the session's text, its attempts and whether it is final.
#[derive(Clone, Copy)]
pub(super) struct Contact {
    /// Its national form packed (`domain::national_key`); a number without one (more than 18
    /// digits: no valid phone) gets `u64::MAX - its place` and `keyed` false: kept for the
    /// record, never matched, never open.
    pub(super) number: u64,
    /// The number as the caller gave it: `len` bytes at `start` in the session's text.
    pub(super) start: u32,
    pub(super) len: u32,
    /// The highest attempt number seen to it.
    pub(super) dialled: u32,
    pub(super) finished: bool,
    /// The same number given again in the record (kept for the record, not a contact of its own).
    pub(super) repeat: bool,
    pub(super) keyed: bool,
}

impl Contact {
    /// A contact of its own with a number: open until final.
    pub(super) fn opens(&self) -> bool {
        self.keyed && !self.repeat
    }
}

/// A recorded session, compact: its texts and its contacts in its tenant's arenas, the rest
/// inline. The record is rebuilt when asked for (reports, listings, reconciliation), not kept as
/// it came (with an allocation per contact).
pub(super) struct Entry {
    /// The session id, the external id, the script id, the name, then each contact as given.
    pub(super) text: Place,
    /// Where the first four texts end in the text.
    pub(super) heads: [u32; 4],
    /// Sorted by (number, place given); of a number given twice, the later ones are repeats.
    pub(super) contacts: Place,
    /// Keyed hashes of its id and of its external id (0 without one).
    pub(super) id_key: u64,
    pub(super) external_key: u64,
    /// Its id as its events share it, made when first asked for.
    pub(super) shared: OnceLock<Arc<str>>,
    pub(super) redials: u32,
    pub(super) created_at_ms: u64,
    pub(super) purpose: Option<Purpose>,
    pub(super) start_ms: Option<u64>,
    pub(super) refused: BTreeMap<String, u64>,
}

/// A record made ready for the index (its contacts packed and sorted), before the lock that
/// guards the index is taken; dropped after it.
pub(crate) struct Prepared {
    pub(super) record: SessionRecord,
    pub(super) contacts: Vec<Contact>,
    pub(super) text_len: usize,
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
    pub(super) entries: Vec<Entry>,
    pub(super) records: Vec<Prepared>,
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
pub(super) struct Open {
    pub(super) count: u32,
    pub(super) sum: u64,
}

/// One tenant's part of the index.
pub(super) struct TenantIndex {
    /// Its sessions in recording order: `ring[i]` is ordinal `base + i`.
    pub(super) ring: VecDeque<Entry>,
    pub(super) base: u64,
    pub(super) texts: Arena<u8>,
    pub(super) contact_lists: Arena<Contact>,
    /// A keyed hash of each session's id -> its ordinal (the entry's own id is compared on
    /// look-up). Keys of sessions gone stay until `rebuild_keys`: their ordinals name nothing.
    pub(super) ids: Map<u64, u64>,
    /// The caller's names of its sessions, the same way.
    pub(super) externals: Map<u64, u64>,
    pub(super) contacts: usize,
    /// Its open numbers.
    pub(super) open: Map<u64, Open>,
}

impl TenantIndex {
    pub(super) fn new(base: u64) -> Self {
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

    pub(super) fn place(&self, ordinal: u64) -> Option<usize> {
        usize::try_from(ordinal.checked_sub(self.base)?).ok().filter(|i| *i < self.ring.len())
    }

    pub(super) fn at(&self, ordinal: u64) -> Option<&Entry> {
        self.ring.get(self.place(ordinal)?)
    }

    /// The `i`th of a session's first four texts (its id, external id, script id, name).
    pub(super) fn head(&self, e: &Entry, i: usize) -> &str {
        let start = if i == 0 { 0 } else { e.heads[i - 1] as usize };
        self.text(e, start, e.heads[i] as usize)
    }

    pub(super) fn text(&self, e: &Entry, start: usize, end: usize) -> &str {
        let bytes = self.texts.get(e.text).get(start..end).unwrap_or_default();
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    pub(super) fn external_id(&self, e: &Entry) -> &str {
        self.head(e, 1)
    }

    /// The number as the caller gave it.
    pub(super) fn given(&self, e: &Entry, c: &Contact) -> &str {
        self.text(e, c.start as usize, c.start as usize + c.len as usize)
    }

    pub(super) fn contacts_of(&self, e: &Entry) -> &[Contact] {
        self.contact_lists.get(e.contacts)
    }

    /// The session's contact with this number.
    pub(super) fn contact(&self, e: &Entry, number: Option<u64>) -> Option<Contact> {
        let number = number?;
        let contacts = self.contacts_of(e);
        let at = contacts.partition_point(|c| c.number < number);
        contacts.get(at).filter(|c| c.number == number && c.keyed).copied()
    }

    pub(super) fn unfinished(&self, e: &Entry) -> bool {
        self.contacts_of(e).iter().any(|c| !c.repeat && !c.finished)
    }

    /// The session's id, as its events share it.
    pub(super) fn shared(&self, e: &Entry) -> Arc<str> {
        e.shared.get_or_init(|| Arc::from(self.head(e, 0))).clone()
    }

    /// The session's record as it was recorded.
    pub(super) fn record(&self, e: &Entry) -> SessionRecord {
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
    pub(super) fn find(&self, key: u64, session: &str) -> Option<u64> {
        let ordinal = *self.ids.get(&key)?;
        self.at(ordinal).is_some_and(|e| self.head(e, 0) == session).then_some(ordinal)
    }

    /// The ordinal of the session named `external` by the caller (`key` its hash).
    pub(super) fn find_external(&self, key: u64, external: &str) -> Option<u64> {
        let ordinal = *self.externals.get(&key)?;
        self.at(ordinal).is_some_and(|e| self.external_id(e) == external).then_some(ordinal)
    }

    /// The id maps made anew from the sessions held, in recording order (of two sessions with the
    /// same key, the later holds it, as when it was recorded): the keys of sessions gone are
    /// dropped, and the maps sized for as many again before the next time.
    pub(super) fn rebuild_keys(&mut self) {
        let room = 2 * self.ring.len() + super::KEYS_SLACK;
        let mut ids = Map::with_capacity_and_hasher(room, Default::default());
        let mut externals = Map::with_capacity_and_hasher(room, Default::default());
        for (ordinal, e) in (self.base..).zip(&self.ring) {
            ids.insert(e.id_key, ordinal);
            if e.heads[1] > e.heads[0] {
                externals.insert(e.external_key, ordinal);
            }
        }
        self.ids = ids;
        self.externals = externals;
    }

    pub(super) fn next(&self) -> u64 {
        self.base + self.ring.len() as u64
    }

    /// Puts the record's texts and contacts in the arenas: its entry.
    pub(super) fn entry(&mut self, p: &Prepared, id_key: u64, external_key: u64) -> Entry {
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

/// Takes the session at `ordinal` off the open sessions holding `number` (it holds it).
pub(super) fn close_open(open: &mut Map<u64, Open>, number: u64, ordinal: u64) {
    if let std::collections::hash_map::Entry::Occupied(mut o) = open.entry(number) {
        let held = o.get_mut();
        held.count = held.count.saturating_sub(1);
        held.sum = held.sum.wrapping_sub(ordinal);
        if held.count == 0 {
            o.remove();
        }
    }
}
