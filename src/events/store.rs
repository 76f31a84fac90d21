//! The event store's contract: what the webhook receiver, `CreateSession`/`CreateCampaign`,
//! `WatchCallEvents` and `GetSessionReport` need from wherever events are kept. The embedded
//! store (`memory/`) is the first implementation; a store shared by many replicas implements
//! the same methods.
//!
//! Every implementation promises:
//! - `append` stores a fact at most once for the whole retention window (keyed by tenant and the
//!   fact's id), and answers only once the event is kept (the receiver acknowledges after it);
//! - events are read back in the order they were stored, each with a cursor that only this store
//!   accepts; a subscription never skips an event silently (it ends with
//!   [`StoreError::CursorExpired`] instead) and never repeats one;
//! - a slow reader costs the store nothing: subscriptions read at their own pace.

use futures::{future::BoxFuture, stream::BoxStream};

use super::{CallEvent, Cursor, SessionRecord, TenantId};

/// A stored event: the event and its place in the store (what watchers and reports read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEvent {
    /// Its place in the store.
    pub(crate) cursor: Cursor,
    /// The event, with the session and attempt the store attributed.
    pub(crate) event: CallEvent,
}

/// Which events a watcher wants: always one tenant's; optionally one session's, one number's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Only this tenant's.
    pub(crate) tenant: TenantId,
    /// Only this session's (empty = all).
    pub(crate) session_id: String,
    /// Only calls to this number, in national form (empty = all).
    pub(crate) phone_national: String,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Only events stored from now on.
    Live,
    /// Every retained event first.
    Replay,
    /// Right after this cursor.
    After(Cursor),
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Kept, as this event.
    Stored(StoredEvent),
    /// This fact was stored before (a redelivery): nothing changed.
    Duplicate,
}

/// What a report is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionFacts {
    /// The creation record, when the session was created through this deployment and is
    /// still retained.
    pub(crate) record: Option<SessionRecord>,
    /// The session's retained events, in store order.
    pub(crate) events: Vec<StoredEvent>,
}

/// Which recorded sessions of a tenant a listing wants (`ListSessions`, the console): newest
/// first, by (creation time, session id) descending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionQuery {
    /// Only sessions whose external id starts with this (empty = all): a campaign's chunks.
    pub(crate) external_prefix: String,
    /// Only sessions created strictly after this (Unix milliseconds).
    pub(crate) created_after_ms: Option<u64>,
    /// Only sessions strictly older than this place (the previous page's last session).
    pub(crate) before: Option<(u64, String)>,
    /// At most this many.
    pub(crate) limit: usize,
}

impl SessionQuery {
    /// Whether the record of this external id, creation time and session id is one the listing
    /// wants (the page's bound apart).
    pub(crate) fn matches(&self, external_id: &str, created_at_ms: u64, session_id: &str) -> bool {
        external_id.starts_with(&self.external_prefix)
            && self.created_after_ms.is_none_or(|after| created_at_ms > after)
            && self.before.as_ref().is_none_or(|(ms, id)| (created_at_ms, session_id) < (*ms, id.as_str()))
    }
}

/// Each record's facts: its events are those attributed to it, and the other events of its calls
/// (`session`'s rule), from `events` (one tenant's, in store order).
pub(crate) fn facts_of(records: Vec<SessionRecord>, events: Vec<StoredEvent>) -> Vec<SessionFacts> {
    use std::collections::HashMap;
    let index: HashMap<&str, usize> = records.iter().enumerate().map(|(i, r)| (r.session_id.as_str(), i)).collect();
    let mut calls: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        if let Some(&i) = index.get(&*e.event.session_id) {
            calls.entry(&*e.event.call_id).or_insert(i);
        }
    }
    let mut grouped: Vec<Vec<StoredEvent>> = vec![Vec::new(); records.len()];
    let mut place = Vec::with_capacity(events.len());
    for e in &events {
        place.push(index.get(&*e.event.session_id).or_else(|| calls.get(&*e.event.call_id)).copied());
    }
    drop(calls);
    drop(index);
    for (e, at) in events.into_iter().zip(place) {
        if let Some(i) = at {
            grouped[i].push(e);
        }
    }
    records.into_iter().zip(grouped).map(|(record, events)| SessionFacts { record: Some(record), events }).collect()
}

/// Why the store could not do it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StoreError {
    /// The cursor points before the retention window, or into another store: `earliest` is a
    /// cursor after which the earliest retained event comes.
    #[error("the cursor is past the retention window or from another event store")]
    CursorExpired {
        /// Resume from here to lose nothing more than what has expired.
        earliest: Cursor,
    },
    /// The store cannot take or give events now (a retry later can help). The receiver answers
    /// 503 and the RPCs UNAVAILABLE; the embedded store never fails so, a networked one does.
    #[allow(dead_code, reason = "the embedded store never fails; a networked store does")]
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
}

/// A watcher's events, in store order; ends with an error when it cannot go on without a gap.
pub(crate) type Subscription = BoxStream<'static, Result<StoredEvent, StoreError>>;

/// Where events are kept. Object-safe (boxed futures), so the application picks one at start.
pub(crate) trait EventStore: Send + Sync + 'static {
    /// Stores one fact of `tenant` (once), attributing it to a session and an attempt when it
    /// can (the event's own `session_id` when it has one; its `attempt` is the store's to set).
    fn append(&self, tenant: TenantId, event: CallEvent) -> BoxFuture<'_, Result<Appended, StoreError>>;

    /// Records a session of `tenant` created through this deployment.
    fn record_session(&self, tenant: TenantId, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The events matching `filter` from `start`, then live ones as they are stored.
    fn subscribe(&self, filter: Filter, start: Start) -> BoxFuture<'_, Result<Subscription, StoreError>>;

    /// A session's record and events, by its id or the caller's (external) id for it; `None` when
    /// the store knows nothing of it.
    fn session(&self, tenant: TenantId, session_id: String) -> BoxFuture<'_, Result<Option<SessionFacts>, StoreError>>;

    /// The id of the session `id` names, when it is the caller's (external) id of a recorded
    /// session; `None` otherwise (then `id` is taken as a session id).
    fn session_id_of(&self, tenant: TenantId, id: String) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// The sessions recorded here (and retained) before `created_before_ms` (Unix ms) with a
    /// contact not final yet, each with its tenant and record: what reconciliation
    /// (`events/reconcile/`) scans, so that it is driven by what the store holds and survives a
    /// restart. Younger sessions are left out before anything is copied: a scan costs what is
    /// due, not what is held.
    fn unfinished_sessions(
        &self,
        created_before_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<(TenantId, SessionRecord)>, StoreError>>;

    /// Takes the right to reconcile `session_id` of `tenant` for `lease` (until then no other
    /// holder of the same store gets it); `false` when another has it. A store of one process
    /// has no one to share with.
    fn claim(
        &self,
        tenant: TenantId,
        session_id: String,
        lease: std::time::Duration,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let _ = (tenant, session_id, lease);
        Box::pin(async { Ok(true) })
    }

    /// The tenant's recorded (and retained) sessions `query` wants, newest first, each with its
    /// facts (as [`EventStore::session`] gives them).
    fn list_sessions(
        &self,
        tenant: TenantId,
        query: SessionQuery,
    ) -> BoxFuture<'_, Result<Vec<SessionFacts>, StoreError>>;

    /// Figures for `/metrics`.
    fn stats(&self) -> StoreStats;

    /// Whether the store can serve now, as it changes; `None` for a store that is always up
    /// (the embedded one). Health and `callbot_event_store_up` follow it.
    fn health(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
}

/// The store's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StoreStats {
    /// Events retained.
    pub(crate) events: u64,
    /// Fact ids remembered for recognizing repeats.
    pub(crate) ids_remembered: u64,
    /// Sessions recorded and retained.
    pub(crate) sessions: u64,
    /// Events stored since start.
    pub(crate) stored_total: u64,
    /// Repeats recognized since start.
    pub(crate) duplicates_total: u64,
    /// Events dropped by `--events-max` or the retention since start.
    pub(crate) evicted_total: u64,
    /// Group commits (fsyncs) of the data dir since start (the disk store; 0 for the others).
    pub(crate) fsyncs_total: u64,
    /// Whole compactions of the data dir's partitions since start (the disk store; 0 for the
    /// others).
    pub(crate) compactions_total: u64,
}
