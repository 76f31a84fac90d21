//! The embedded store's slot (one event as the ring keeps it) and its small interning tables.
//! The slot is the domain's [`CallEvent`] itself, with its provider words as indices into the
//! store's word table: a new event field is kept with no change here.

use std::{collections::HashMap, sync::Arc};

use crate::events::{CallEvent, Cursor, StoredEvent};

/// One event as its tenant's ring keeps it (104 bytes, 112 with its sequence number, plus the call
/// id's and the phone's allocations): the two provider words are indices into a small table, the time a
/// u32 of seconds.
pub(super) struct Slot {
    /// The event, its words interned.
    pub(super) event: CallEvent<u16>,
    /// Seconds since the store was made.
    pub(super) stored_at_s: u32,
}

impl Slot {
    /// `event` as the ring keeps it, its words interned in `words`.
    pub(super) fn new(event: CallEvent, stored_at_s: u32, words: &mut Table) -> Slot {
        Slot { event: event.map_words(|w| words.word(&w)), stored_at_s }
    }

    /// The event back, at `cursor`.
    pub(super) fn stored(&self, words: &Table, cursor: Cursor) -> StoredEvent {
        StoredEvent { cursor, event: self.event.clone().map_words(|i| words.get(i)) }
    }
}

/// Small interning tables: index -> value and value -> index.
pub(super) struct Table {
    pub(super) values: Vec<Arc<str>>,
    pub(super) index: HashMap<Arc<str>, u32>,
    pub(super) cap: usize,
}

impl Table {
    pub(super) fn new(cap: usize, first: &str) -> Self {
        let first: Arc<str> = Arc::from(first);
        Table { values: vec![first.clone()], index: HashMap::from([(first, 0)]), cap }
    }

    /// The index of `value`, added when new; index 0 (the first value) once the table is full.
    pub(super) fn intern(&mut self, value: &str) -> u32 {
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

    /// A provider word's index in the word table (index 0 is "", 1 the overflow marker `~`: a
    /// word that finds the table full is kept as `~`).
    pub(super) fn word(&mut self, w: &str) -> u16 {
        u16::try_from(self.intern(w)).unwrap_or(1).max(u16::from(!w.is_empty()))
    }

    pub(super) fn find(&self, value: &str) -> Option<u32> {
        self.index.get(value).copied()
    }

    pub(super) fn get(&self, i: impl Into<u32>) -> Arc<str> {
        self.values.get(i.into() as usize).unwrap_or(&self.values[0]).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CallOutcome, Fact};

    fn words(cap: usize) -> Table {
        let mut t = Table::new(cap, "");
        t.intern("~");
        t
    }

    #[test]
    fn an_event_comes_back_from_its_slot_as_it_went_in() {
        let mut table = words(16);
        let record = CallEvent {
            session_id: Arc::from("s1"),
            outcome: CallOutcome::NoAnswer,
            occurred_at_ms: 1_700_000_047_000,
            ring_s: 30,
            talk_s: 0,
            hangup_cause: Arc::from("NO_ANSWER"),
            disposition: Arc::from("no answer"),
            has_recording: true,
            attempt: 2,
            ..CallEvent::live("c1", Fact::Record, "84912345670")
        };
        for event in [record, CallEvent::live("c2", Fact::Ringing, "0912")] {
            let slot = Slot::new(event.clone(), 42, &mut table);
            let cursor = Cursor { store: 3, seq: 9 };
            assert_eq!(slot.stored(&table, cursor), StoredEvent { cursor, event });
            assert_eq!(slot.stored_at_s, 42);
        }
        // A word that finds the table full is kept as the overflow marker; "" stays "".
        let mut full = words(3);
        let e = CallEvent {
            hangup_cause: Arc::from("A"),
            disposition: Arc::from("B"),
            ..CallEvent::live("c", Fact::Record, "1")
        };
        let slot = Slot::new(e, 0, &mut full);
        let back = slot.stored(&full, Cursor { store: 0, seq: 0 }).event;
        assert_eq!((&*back.hangup_cause, &*back.disposition), ("A", "~"));
    }

    #[test]
    fn the_slot_stays_within_112_bytes() {
        // BENCHMARKS.md ("Call events") counts the ring's memory per event from this size (the
        // slot, 104 bytes, beside its sequence number in its tenant's ring): a new event field that
        // does not fit the padding grows every slot, and should say so there (the caller's own
        // number, `contact_phone`, took it from 96 to 112).
        let size = std::mem::size_of::<(u64, Slot)>();
        assert!(size <= 112, "the slot grew to {size} bytes");
    }
}
