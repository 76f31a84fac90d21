//! The durable embedded event store (`--events-store disk`, the default): the embedded store
//! (`memory/`) as its index and read side, every change kept in the data dir (`storage/`), and
//! rebuilt from it at start.
//!
//! - An append returns once its event is fsynced (group commit: appends arriving together share
//!   one fsync); a repeat returns once the fact it repeats is. The receiver answers `204` after.
//! - Watchers and reports see an event only once it is durable (`MemoryStore::made_durable`,
//!   driven by the writer's progress), so nothing they see can be taken back by a crash.
//! - At start the store's identity (its cursors' id, its fact keys' seed), the events with their
//!   sequence numbers, the fact keys remembered for repeats, the session records and each
//!   tenant's evicted mark are read back (`restore.rs`): cursors handed out before resume with no
//!   gap and no repeat, and a repeat is still a repeat.
//! - What leaves the memory store by age or by `--events-max` is deleted from disk in the same
//!   group commits: retention and the bound bound the disk (fjall's compaction reclaims it).
//! - A write that fails stops the store for good: appends answer `Unavailable` (503), health
//!   turns false; a restart replays what was acknowledged.
//!
//! `codec.rs` is the layout of the partitions; `restore.rs` opens and replays.

mod codec;
mod restore;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use fjall::PartitionHandle;
use futures::{FutureExt as _, future::BoxFuture};
use tokio::sync::watch;

use super::{
    Appended, CallEvent, EventStore, Filter, SessionFacts, SessionQuery, SessionRecord, Start, StoreError,
    Subscription, TenantId,
    memory::{Change, Journal, MemoryStore},
    store::StoreStats,
};
use crate::storage::{Batch, DataDir, DurableHook, StorageError, Ticket};

/// The store's partitions of the data dir.
#[derive(Clone)]
struct Partitions {
    events: PartitionHandle,
    keys: PartitionHandle,
    sessions: PartitionHandle,
    meta: PartitionHandle,
}

impl Partitions {
    fn open(dir: &DataDir) -> Result<Partitions, StorageError> {
        Ok(Partitions {
            events: dir.partition(codec::EVENTS)?,
            keys: dir.partition(codec::KEYS)?,
            sessions: dir.partition(codec::SESSIONS)?,
            meta: dir.partition(codec::META)?,
        })
    }
}

/// The memory store's journal: its changes, encoded, queued for the data dir's writer.
struct DiskJournal {
    dir: Arc<DataDir>,
    parts: Partitions,
    /// (ticket, the newest event in it), in ticket order: which events a durable ticket makes
    /// visible.
    pending: Mutex<VecDeque<(Ticket, u64)>>,
    /// Deletions written to the events, fact keys and sessions partitions since each was last
    /// compacted whole; one that reaches `compact_after` is compacted (`DataDir::compact`): each
    /// deletion leaves a tombstone that fjall would otherwise keep for good, and every start
    /// reads through them.
    removed: [AtomicU64; 3],
    compact_after: u64,
}

/// A partition compacted whole once it has had this many times `--events-max` deletions: its
/// tombstones stay below twice the bound (a few MB at the default), and at full speed (about
/// 36,000 deliveries a second here) the events' partition is compacted every five or six seconds.
const COMPACT_AFTER_BOUNDS: u64 = 2;

/// The partitions whose deletions are counted, in `DiskJournal::removed`'s order.
const EVENTS_AT: usize = 0;
const KEYS_AT: usize = 1;
const SESSIONS_AT: usize = 2;

impl DiskJournal {
    fn new(dir: Arc<DataDir>, parts: Partitions, max_events: usize) -> Self {
        DiskJournal {
            dir,
            parts,
            pending: Mutex::new(VecDeque::new()),
            removed: Default::default(),
            compact_after: (max_events as u64).saturating_mul(COMPACT_AFTER_BOUNDS).max(1),
        }
    }

    fn partition(&self, at: usize) -> &PartitionHandle {
        match at {
            EVENTS_AT => &self.parts.events,
            KEYS_AT => &self.parts.keys,
            _ => &self.parts.sessions,
        }
    }

    /// Counts `n` deletions in the partition at `at`; past the bound, asks for its compaction.
    fn removed(&self, at: usize, n: u64) {
        if n == 0 {
            return;
        }
        let before = self.removed[at].fetch_add(n, Ordering::Relaxed);
        if before + n >= self.compact_after {
            self.removed[at].store(0, Ordering::Relaxed);
            self.dir.compact(self.partition(at));
        }
    }

    /// After a start: a partition holding more entries (tombstones counted) than were read from
    /// it by twice what a run leaves at most (a store of an earlier version, or of runs that
    /// never lasted long enough) is compacted now; less is left to the count above, so that a
    /// start does not compact as a rule (the start's peak memory).
    fn compact_if_littered(&self, at: usize, read: usize) {
        let held = self.partition(at).approximate_len() as u64;
        if held.saturating_sub(read as u64) >= self.compact_after.saturating_mul(2) {
            self.dir.compact(self.partition(at));
        }
    }

    /// The newest event made durable by `through`, if any new.
    fn durable_through(&self, through: Ticket) -> Option<u64> {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut newest = None;
        while pending.front().is_some_and(|(t, _)| *t <= through) {
            newest = pending.pop_front().map(|(_, seq)| seq);
        }
        newest
    }
}

impl Journal for DiskJournal {
    fn submit(&self, changes: Vec<Change>) -> u64 {
        let p = &self.parts;
        let mut batch = Batch::new();
        let mut newest = None;
        // One write per tenant for its evicted mark (a batch may evict many).
        let mut through: HashMap<TenantId, u64> = HashMap::new();
        let mut removed = [0u64; 3];
        for change in changes {
            match change {
                Change::Stored { seq, tenant, at_ms, key, event } => {
                    batch.put(&p.events, codec::u64_key(seq).to_vec(), codec::event_value(&tenant, at_ms, &event));
                    batch.put(&p.keys, codec::fact_key(at_ms, key).to_vec(), tenant.as_bytes().to_vec());
                    newest = Some(seq);
                }
                Change::Evicted { seq } => {
                    removed[EVENTS_AT] += 1;
                    batch.remove(&p.events, codec::u64_key(seq).to_vec());
                }
                Change::EvictedThrough { tenant, seq } => {
                    through.insert(tenant, seq);
                }
                Change::Forgot { key, at_ms } => {
                    removed[KEYS_AT] += 1;
                    batch.remove(&p.keys, codec::fact_key(at_ms, key).to_vec());
                }
                Change::Recorded { tenant, at_ms, before_seq, record } => batch.put(
                    &p.sessions,
                    codec::session_key(&tenant, &record.session_id),
                    codec::record_value(at_ms, before_seq, &record),
                ),
                Change::ForgotSession { tenant, session } => {
                    removed[SESSIONS_AT] += 1;
                    batch.remove(&p.sessions, codec::session_key(&tenant, &session));
                }
            }
        }
        for (tenant, seq) in through {
            batch.put(&p.meta, codec::evicted_key(&tenant), codec::u64_key(seq).to_vec());
        }
        // Under the memory store's lock: tickets follow the order of the changes. The pending
        // list is held across the enqueue, so `follow` cannot take the ticket's progress before
        // the ticket is listed (its event would wait for the next write to become visible).
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ticket = self.dir.enqueue(batch);
        if let Some(seq) = newest {
            pending.push_back((ticket, seq));
        }
        drop(pending);
        for (at, n) in removed.into_iter().enumerate() {
            self.removed(at, n);
        }
        ticket
    }
}

struct Inner {
    memory: MemoryStore,
    journal: Arc<DiskJournal>,
    dir: Arc<DataDir>,
    up: watch::Receiver<bool>,
}

/// The durable embedded store. Cheap to clone.
#[derive(Clone)]
pub(crate) struct DiskStore {
    inner: Arc<Inner>,
}

fn unavailable(e: StorageError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl DiskStore {
    /// Waits for `ticket` (when there is one) to be durable.
    async fn durable(&self, ticket: Option<Ticket>) -> Result<(), StoreError> {
        match ticket {
            Some(t) => self.inner.dir.durable(t).await.map_err(unavailable),
            None => Ok(()),
        }
    }
}

/// Makes events visible as the writer makes them durable, on the writer's thread right after
/// the fsync (before the committers are told, so a `204` is never ahead of what watchers may
/// see); says when it stops for good. Holds the store weakly: the writer outlives it.
fn follow(inner: Weak<Inner>, up: watch::Sender<bool>) -> DurableHook {
    Box::new(move |progress| match progress {
        Ok(through) => {
            let Some(inner) = inner.upgrade() else { return };
            if let Some(seq) = inner.journal.durable_through(through) {
                inner.memory.made_durable(seq);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "the event store cannot write: deliveries are refused (503) until a restart");
            let _ = up.send(false);
        }
    })
}

impl EventStore for DiskStore {
    fn append(&self, tenant: TenantId, event: CallEvent) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let (appended, ticket) = self.inner.memory.append_journaled(tenant, event);
        // A repeat is acknowledged once what it repeats is durable: everything queued so far.
        let ticket = match appended {
            Appended::Stored(_) => ticket,
            Appended::Duplicate => Some(self.inner.dir.last_ticket()),
        };
        async move {
            self.durable(ticket).await?;
            Ok(appended)
        }
        .boxed()
    }

    fn record_session(&self, tenant: TenantId, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        let ticket = self.inner.memory.record_journaled(&tenant, record);
        self.durable(ticket).boxed()
    }

    fn subscribe(&self, filter: Filter, start: Start) -> BoxFuture<'_, Result<Subscription, StoreError>> {
        self.inner.memory.subscribe(filter, start)
    }

    fn session(&self, tenant: TenantId, session_id: String) -> BoxFuture<'_, Result<Option<SessionFacts>, StoreError>> {
        self.inner.memory.session(tenant, session_id)
    }

    fn session_id_of(&self, tenant: TenantId, id: String) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        self.inner.memory.session_id_of(tenant, id)
    }

    fn list_sessions(
        &self,
        tenant: TenantId,
        query: SessionQuery,
    ) -> BoxFuture<'_, Result<Vec<SessionFacts>, StoreError>> {
        self.inner.memory.list_sessions(tenant, query)
    }

    fn unfinished_sessions(
        &self,
        created_before_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<(TenantId, SessionRecord)>, StoreError>> {
        self.inner.memory.unfinished_sessions(created_before_ms)
    }

    fn stats(&self) -> StoreStats {
        let dir = &self.inner.dir;
        StoreStats { fsyncs_total: dir.fsyncs(), compactions_total: dir.compactions(), ..self.inner.memory.stats() }
    }

    fn health(&self) -> Option<watch::Receiver<bool>> {
        Some(self.inner.up.clone())
    }
}
