//! Call events: what the provider reports about the calls of a session, normalized, kept for a
//! retention window, and served live and replayable (README, "Call outcomes").
//!
//! - `normalize.rs`: THE table from the provider's live states, `disposition` and `hangup_cause`
//!   to a [`CallState`] and a [`CallOutcome`], and the stable id of each upstream fact;
//! - `cursor.rs`: the opaque cursor (the store's identity and a sequence number);
//! - `log.rs`: the session records `CreateSession` and `CreateCampaign` leave for reports;
//! - `store.rs`: the [`EventStore`] trait every store implements, and what it takes and gives;
//! - `memory/`: the embedded store (one process; the default): the store, its ring slot, its
//!   readers;
//! - `jetstream/`: the NATS JetStream store, shared by many replicas (`--events-nats-url`): the
//!   store, the attribution index every replica builds, the watchers;
//! - `attribution.rs`: which session and attempt a fact belongs to, for both stores;
//! - `report.rs`: a session's report from its record and its events, by precedence, so that
//!   reordering and repeats change nothing.
//!
//! No tonic here: the service converts (`convert.rs`) and classifies errors (`status.rs`).

pub(crate) mod attribution;
pub(crate) mod cursor;
pub(crate) mod jetstream;
pub(crate) mod log;
pub(crate) mod memory;
pub(crate) mod normalize;
pub(crate) mod report;
pub(crate) mod store;

use std::sync::Arc;

pub(crate) use cursor::Cursor;
pub use log::SessionLog;
pub(crate) use store::{Appended, EventStore, Filter, SessionFacts, SessionRecord, Start, StoreError, Subscription};

/// A tenant as the event store knows it: a short stable name (`default` for the configured key,
/// the tenant's name from the tenants file, `k-<hash>` for a caller's own key). Never a key.
pub(crate) type TenantId = Arc<str>;

/// Where a call stands (the proto's `CallState`, same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub(crate) enum CallState {
    /// Dialled, ringing.
    Ringing = 1,
    /// Picked up.
    Answered = 2,
    /// Over.
    Ended = 3,
}

/// How a call ended (the proto's `CallOutcome`, same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub(crate) enum CallOutcome {
    /// Not known (yet).
    #[default]
    Unspecified = 0,
    /// The contact answered.
    Answered = 1,
    /// Rang out or cancelled.
    NoAnswer = 2,
    /// Busy.
    Busy = 3,
    /// Refused.
    Rejected = 4,
    /// Could not be placed.
    Failed = 5,
}

impl CallOutcome {
    /// The outcome's name in lower case, for logs, metrics and the CLI's JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Unspecified => "unspecified",
            CallOutcome::Answered => "answered",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Busy => "busy",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Failed => "failed",
        }
    }
}

/// Which upstream fact an event is: one per live state word group and one for the end-of-call
/// record, so each call has at most four facts and each fact one id (`<call_id>/<fact>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Fact {
    /// Live `create`, `early`, `ringing` (one fact: the first delivery of any of them).
    Ringing = 0,
    /// Live `answered`.
    Answered = 1,
    /// Live `hangup`.
    Hangup = 2,
    /// The end-of-call record.
    Record = 3,
}

impl Fact {
    /// The id suffix.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Fact::Ringing => "ringing",
            Fact::Answered => "answered",
            Fact::Hangup => "hangup",
            Fact::Record => "cdr",
        }
    }

    /// The state an event of this fact reports.
    pub(crate) fn state(self) -> CallState {
        match self {
            Fact::Ringing => CallState::Ringing,
            Fact::Answered => CallState::Answered,
            Fact::Hangup | Fact::Record => CallState::Ended,
        }
    }
}

/// One normalized upstream fact, before the store gives it a place (and, when it can, a session
/// and an attempt number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewEvent {
    /// Whose.
    pub(crate) tenant: TenantId,
    /// Which fact of the call.
    pub(crate) fact: Fact,
    /// The call (`call_uuid` / `transaction_id`).
    pub(crate) call_id: String,
    /// The session (`autocall_id`), empty when the delivery did not say.
    pub(crate) session_id: String,
    /// The contact's number as the provider wrote it.
    pub(crate) phone: String,
    /// Set for an end-of-call record.
    pub(crate) outcome: CallOutcome,
    /// Unix milliseconds, by the provider's clock (the receiver's when the provider gave none).
    pub(crate) occurred_at_ms: u64,
    /// Seconds ringing (records only).
    pub(crate) ring_s: u32,
    /// Seconds talking (records only).
    pub(crate) talk_s: u32,
    /// The provider's hangup cause.
    pub(crate) hangup_cause: String,
    /// The provider's disposition word.
    pub(crate) disposition: String,
    /// Whether a recording exists.
    pub(crate) has_recording: bool,
}

impl NewEvent {
    /// The fact's stable id: `<call_id>/<fact>`.
    #[cfg(test)]
    pub(crate) fn id(&self) -> String {
        format!("{}/{}", self.call_id, self.fact.as_str())
    }

    /// For tests: a live-state fact of `tenant`'s call to `phone`, with no session id.
    #[cfg(test)]
    pub(crate) fn live(tenant: &str, call: &str, fact: Fact, phone: &str) -> NewEvent {
        NewEvent {
            tenant: std::sync::Arc::from(tenant),
            fact,
            call_id: call.into(),
            session_id: String::new(),
            phone: phone.into(),
            outcome: CallOutcome::Unspecified,
            occurred_at_ms: 1,
            ring_s: 0,
            talk_s: 0,
            hangup_cause: String::new(),
            disposition: String::new(),
            has_recording: false,
        }
    }
}

/// A stored event, as watchers and reports read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallEvent {
    /// Its place in the store.
    pub(crate) cursor: Cursor,
    /// The fact.
    pub(crate) fact: Fact,
    /// The call.
    pub(crate) call_id: Arc<str>,
    /// The session; empty when unattributed.
    pub(crate) session_id: Arc<str>,
    /// As the provider wrote it.
    pub(crate) phone: Arc<str>,
    /// Set for an end-of-call record.
    pub(crate) outcome: CallOutcome,
    /// Unix milliseconds.
    pub(crate) occurred_at_ms: u64,
    /// Seconds ringing.
    pub(crate) ring_s: u32,
    /// Seconds talking.
    pub(crate) talk_s: u32,
    /// The provider's hangup cause.
    pub(crate) hangup_cause: Arc<str>,
    /// The provider's disposition word.
    pub(crate) disposition: Arc<str>,
    /// Whether a recording exists.
    pub(crate) has_recording: bool,
    /// 1 = the first call to this contact in the session; 0 = unknown.
    pub(crate) attempt: u32,
}

impl CallEvent {
    /// The fact's stable id.
    pub(crate) fn id(&self) -> String {
        format!("{}/{}", self.call_id, self.fact.as_str())
    }

    /// Where the call stands after this fact.
    pub(crate) fn state(&self) -> CallState {
        self.fact.state()
    }
}
