//! The embedded store with a journal: what it tells a store that keeps a durable copy of it (the
//! disk store, `events/disk/`), and how it is rebuilt from that copy at start.
//!
//! Every change is handed to the [`Journal`] under the store's lock, in the order it was made,
//! so the copy replays to the same store: the events with their sequence numbers and the time
//! they were stored, the fact keys remembered for repeats, the session records (each with the
//! place among the events where it was recorded), each tenant's evicted mark (where a cursor
//! expires), and what left by age or bound.

use std::sync::Arc;

use super::{CallEvent, IDS_PER_EVENT, MemoryStore, Slot};
use crate::{
    domain::national_key,
    events::{Appended, SessionRecord, TenantId, attribution::FactRef},
};

/// What makes a store's cursors and fact keys its own; kept with its durable copy, so both stay
/// valid across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The store's id in its cursors.
    pub(crate) id: u64,
    /// Unix milliseconds when the store was made (events keep their time as seconds from it).
    pub(crate) epoch_ms: u64,
    /// The fact keys' hash seed.
    pub(crate) seed: u64,
}

impl Identity {
    /// A new store's identity, made at `now_ms`.
    pub(crate) fn random(now_ms: u64) -> Identity {
        Identity { id: rand::random(), epoch_ms: now_ms, seed: rand::random() }
    }
}

/// One change of the store, as its journal receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// An event stored at `seq` (attributed), its fact remembered under `key` since `at_ms`.
    Stored {
        /// Its sequence number.
        seq: u64,
        /// Whose.
        tenant: TenantId,
        /// When stored (Unix ms): its age, and its fact key's.
        at_ms: u64,
        /// Its fact key.
        key: u64,
        /// The event.
        event: CallEvent,
    },
    /// The event at `seq` left (by age or bound).
    Evicted {
        /// Its sequence number.
        seq: u64,
    },
    /// The tenant's events up to `seq` have left: a cursor before it has expired.
    EvictedThrough {
        /// Whose.
        tenant: TenantId,
        /// The last that left.
        seq: u64,
    },
    /// A fact key, remembered since `at_ms`, is no longer.
    Forgot {
        /// The key.
        key: u64,
        /// Since when it was remembered.
        at_ms: u64,
    },
    /// A session recorded at `at_ms`, before the event `before_seq` was stored.
    Recorded {
        /// Whose.
        tenant: TenantId,
        /// When.
        at_ms: u64,
        /// The next event's sequence number then (replayed before it).
        before_seq: u64,
        /// The record.
        record: SessionRecord,
    },
    /// A session's record is no longer kept (by age or bound).
    ForgotSession {
        /// Whose.
        tenant: TenantId,
        /// Its id.
        session: Arc<str>,
    },
}

/// Where the changes go. Called under the store's lock: it must only queue them.
pub(crate) trait Journal: Send + Sync + 'static {
    /// Takes the changes made under one hold of the lock, in order; returns the ticket that
    /// says when they are durable. Tickets grow with each call.
    fn submit(&self, changes: Vec<Change>) -> u64;
}

impl MemoryStore {
    /// Appends; with a journal, also the ticket of the changes that keep it (a repeat's ticket,
    /// when it has one, covers what was queued before: the first delivery included).
    pub(crate) fn append_journaled(&self, tenant: TenantId, event: CallEvent) -> (Appended, Option<u64>) {
        self.shared.append_now(tenant, event)
    }

    /// Records a session; with a journal, the ticket of the changes that keep it.
    pub(crate) fn record_journaled(&self, tenant: &TenantId, record: SessionRecord) -> Option<u64> {
        self.shared.record_now(tenant, record)
    }

    /// The events through `seq` are durable: watchers and reports see them from now on.
    pub(crate) fn made_durable(&self, seq: u64) {
        self.shared.made_durable(seq);
    }

    /// Restores a session recorded at `at_ms` (before the events stored after it).
    pub(crate) fn restore_record(&self, tenant: &TenantId, record: SessionRecord, at_ms: u64) {
        let mut g = self.shared.lock();
        if g.attribution.record(tenant, record, at_ms) {
            g.attribution.expire(at_ms);
        }
    }

    /// Restores an event stored at `seq` at `at_ms`, as it was attributed (in sequence order,
    /// after the records made before it).
    pub(crate) fn restore_event(&self, seq: u64, tenant_id: &TenantId, at_ms: u64, mut e: CallEvent) {
        let shared = &self.shared;
        let mut guard = shared.lock();
        let g = &mut *guard;
        let tenant = g.tenants.intern(tenant_id);
        if !e.session_id.is_empty() {
            let session = shared.session_name(g, tenant_id, &e.session_id);
            let fact = FactRef {
                tenant: tenant_id,
                call_id: &e.call_id,
                number: national_key(&e.phone),
                fact: e.fact,
                outcome: e.outcome,
            };
            g.attribution.apply(fact, &session, e.attempt, at_ms);
            g.attribution.expire(at_ms);
            e.session_id = session;
        } else {
            e.session_id = g.empty.clone();
        }
        let slot = Slot::new(e, shared.seconds(at_ms), &mut g.words);
        let ring = g.rings.entry(tenant).or_default();
        ring.events.push_back((seq, slot));
        g.total += 1;
        g.next_seq = g.next_seq.max(seq + 1);
    }

    /// Makes room for `events` events and `keys` fact keys of `tenant` before they are restored
    /// (within the bounds, and one more: at the bound an append stores before the oldest leaves),
    /// so that its rings are allocated once, at their size.
    pub(crate) fn restore_reserve(&self, tenant_id: &TenantId, events: usize, keys: usize) {
        let shared = &self.shared;
        let max_events = shared.bounds.max_events;
        let max_ids = max_events.saturating_mul(IDS_PER_EVENT);
        let mut guard = shared.lock();
        let g = &mut *guard;
        let tenant = g.tenants.intern(tenant_id);
        let ring = g.rings.entry(tenant).or_default();
        ring.events.reserve_exact(events.min(max_events).saturating_add(1));
        ring.seen_order.reserve_exact(keys.min(max_ids).saturating_add(1));
        g.seen.reserve(keys.min(max_ids));
    }

    /// Restores a remembered fact key of `tenant` (in the order they were remembered).
    pub(crate) fn restore_key(&self, tenant_id: &TenantId, key: u64, at_ms: u64) {
        let mut guard = self.shared.lock();
        let g = &mut *guard;
        let tenant = g.tenants.intern(tenant_id);
        if g.seen.insert(key) {
            g.rings.entry(tenant).or_default().seen_order.push_back((key, at_ms));
            g.total_ids += 1;
        }
    }

    /// Restores where `tenant`'s events have left through.
    pub(crate) fn restore_evicted_through(&self, tenant_id: &TenantId, seq: u64) {
        let mut guard = self.shared.lock();
        let g = &mut *guard;
        let tenant = g.tenants.intern(tenant_id);
        let ring = g.rings.entry(tenant).or_default();
        ring.evicted_through = ring.evicted_through.max(seq);
    }

    /// Ends a restore: sequence numbers go on from `next_seq` (at least), everything restored
    /// is durable, and what is past the retention or the bounds now leaves (journaled).
    /// Returns the ticket of those removals, when there are any.
    pub(crate) fn restored(&self, next_seq: u64) -> Option<u64> {
        let shared = &self.shared;
        let now = (shared.clock)();
        let mut guard = shared.lock();
        let g = &mut *guard;
        g.next_seq = g.next_seq.max(next_seq).max(1);
        g.visible = g.next_seq - 1;
        // A ring restored from an event it no longer holds starts after its evicted mark.
        for ring in g.rings.values_mut() {
            if let Some(&(first, _)) = ring.events.front() {
                ring.evicted_through = ring.evicted_through.min(first - 1);
            }
        }
        shared.expire(g, now, None);
        let tenants: Vec<u32> = g.rings.keys().copied().collect();
        for t in tenants {
            shared.bound(g, t);
        }
        g.attribution.expire(now);
        shared.submit(g)
    }
}
