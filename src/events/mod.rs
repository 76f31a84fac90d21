//! Call events: what the provider reports about the calls of a session, normalized, kept for a
//! retention window, and served live and replayable (README, "Call outcomes").
//!
//! - `normalize.rs`: THE table from the provider's live states, `disposition` and `hangup_cause`
//!   to a [`CallState`] and a [`CallOutcome`]: a delivery becomes a [`CallEvent`] (`domain/event.rs`,
//!   the one shape every store keeps);
//! - `cursor.rs`: the opaque cursor (the store's identity and a sequence number);
//! - `log.rs`: the session records `CreateSession` and `CreateCampaign` leave for reports;
//! - `store.rs`: the [`EventStore`] trait every store implements, and what it takes and gives;
//! - `memory/`: the embedded store in memory (one process): the store, its ring slot, its
//!   readers, its journal;
//! - `disk/`: the durable embedded store (the default): `memory/` with every change kept in the
//!   data dir (`storage/`), replayed at start;
//! - `jetstream/`: the NATS JetStream store, shared by many replicas (`--events-nats-url`): the
//!   store, the attribution index every replica builds, the watchers;
//! - `attribution/`: which session and attempt a fact belongs to, for both stores;
//! - `report.rs`: a session's report from its record and its events, by precedence, so that
//!   reordering and repeats change nothing;
//! - `reconcile/`: what the webhooks missed, fetched from the provider's call history, and the
//!   contacts the provider never told of, given up (outcome UNKNOWN); the call-history budget
//!   shared with the attribution look-ups.
//!
//! No tonic here: the service converts (`convert.rs`) and classifies errors (`status.rs`).

pub(crate) mod attribution;
pub(crate) mod cursor;
pub(crate) mod disk;
pub(crate) mod jetstream;
pub(crate) mod log;
pub(crate) mod memory;
pub(crate) mod normalize;
pub(crate) mod reconcile;
pub(crate) mod report;
pub(crate) mod store;

use std::sync::Arc;

/// The event and the session record are the domain's (`domain/event.rs`, one shape for every
/// store); named here too as the stores' vocabulary.
pub(crate) use crate::domain::{CallEvent, CallOutcome, CallState, EventSource, Fact, SessionRecord};
pub(crate) use cursor::Cursor;
pub use log::SessionLog;
pub(crate) use store::{
    Appended, EventStore, Filter, SessionFacts, SessionQuery, Start, StoreError, StoredEvent, Subscription,
};

/// A tenant as the event store knows it: a short stable name (`default` for the configured key,
/// the tenant's name from the tenants file, `k-<hash>` for a caller's own key). Never a key.
pub(crate) type TenantId = Arc<str>;
