//! The embedded store's slot (one event as the ring keeps it) and its small interning tables.

use std::{collections::HashMap, sync::Arc};

use super::Inner;
use crate::events::{CallEvent, CallOutcome, Cursor, Fact};

/// One event as the ring keeps it (88 bytes plus the call id's and the phone's allocations): the
/// tenant and the two provider words are indices into small tables, the time a u32 of seconds.
pub(super) struct Stored {
    pub(super) call_id: Arc<str>,
    pub(super) session_id: Arc<str>,
    pub(super) phone: Arc<str>,
    pub(super) occurred_at_ms: u64,
    pub(super) tenant: u32,
    /// Seconds since the store was made.
    pub(super) stored_at_s: u32,
    pub(super) ring_s: u32,
    pub(super) talk_s: u32,
    pub(super) attempt: u32,
    pub(super) hangup_cause: u16,
    pub(super) disposition: u16,
    pub(super) fact: Fact,
    pub(super) outcome: CallOutcome,
    pub(super) has_recording: bool,
}

impl Stored {
    pub(super) fn to_event(&self, g: &Inner, store: u64, seq: u64) -> CallEvent {
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

    pub(super) fn find(&self, value: &str) -> Option<u32> {
        self.index.get(value).copied()
    }

    pub(super) fn get(&self, i: impl Into<u32>) -> Arc<str> {
        self.values.get(i.into() as usize).unwrap_or(&self.values[0]).clone()
    }
}
