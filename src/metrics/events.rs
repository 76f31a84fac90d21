//! The call-event metrics: webhook deliveries by kind and answer, repeats, events stored, the
//! store's size, watchers connected, call-history lookups, webhook registrations, and
//! reconciliation (history searches, the events they gave, contacts given up). Labels are
//! fixed words (never a tenant, session or number), so the series are bounded.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// `kind` of a webhook delivery.
pub const DELIVERY_KINDS: [&str; 3] = ["live", "record", "unknown"];
/// `answer` to a webhook delivery.
pub const DELIVERY_ANSWERS: [&str; 7] =
    ["stored", "duplicate", "ignored", "bad_request", "unknown_token", "too_large", "unavailable"];
/// `result` of a call-history lookup.
pub const LOOKUP_RESULTS: [&str; 4] = ["found", "not_found", "failed", "over_budget"];
/// `result` of a reconciliation search of the call history (one per page asked for).
pub const RECONCILE_RESULTS: [&str; 4] = ["found", "not_found", "failed", "throttled"];
/// `result` of a webhook registration check.
pub const REGISTRATION_RESULTS: [&str; 3] = ["present", "registered", "failed"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeliveryLabels {
    kind: &'static str,
    answer: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The call-event metrics (part of [`super::Metrics`]).
#[derive(Debug, Clone, Default)]
pub struct EventMetrics {
    deliveries: Family<DeliveryLabels, Counter>,
    duplicates: Counter,
    stored: Counter,
    watchers: Gauge,
    store_events: Gauge,
    store_ids: Gauge,
    store_sessions: Gauge,
    store_up: Gauge,
    store_fsyncs: Counter,
    store_compactions: Counter,
    lookups: Family<ResultLabels, Counter>,
    registrations: Family<ResultLabels, Counter>,
    reconcile_lookups: Family<ResultLabels, Counter>,
    reconcile_events: Counter,
    given_up: Counter,
}

impl EventMetrics {
    /// Registers every series in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = EventMetrics::default();
        super::register(
            registry,
            "callbot_webhook_deliveries",
            "Webhook deliveries, by kind (live, record, unknown) and answer (stored, duplicate, ignored, bad_request, unknown_token, too_large, unavailable).",
            m.deliveries.clone(),
        );
        super::register(
            registry,
            "callbot_webhook_duplicates",
            "Webhook deliveries recognized as repeats of a stored fact.",
            m.duplicates.clone(),
        );
        super::register(registry, "callbot_events_stored", "Call events stored.", m.stored.clone());
        super::register(registry, "callbot_event_watchers", "WatchCallEvents streams open now.", m.watchers.clone());
        super::register(
            registry,
            "callbot_event_store_events",
            "Call events the store retains now.",
            m.store_events.clone(),
        );
        super::register(
            registry,
            "callbot_event_store_ids",
            "Fact ids the store remembers to recognize repeats.",
            m.store_ids.clone(),
        );
        super::register(
            registry,
            "callbot_event_store_sessions",
            "Session records the store retains now.",
            m.store_sessions.clone(),
        );
        super::register(
            registry,
            "callbot_event_store_up",
            "1 while the call-event store can take and give events (always, for the embedded store; the NATS connection and stream for JetStream).",
            m.store_up.clone(),
        );
        super::register(
            registry,
            "callbot_event_store_fsyncs",
            "Group commits (each one fsync) of the disk event store's data dir.",
            m.store_fsyncs.clone(),
        );
        super::register(
            registry,
            "callbot_event_store_compactions",
            "Whole compactions of the disk event store's partitions (each after about twice --events-max deletions), which drop the deletions' tombstones.",
            m.store_compactions.clone(),
        );
        super::register(
            registry,
            "callbot_call_history_lookups",
            "Sessions looked up in the call history for a record without autocall_id, by result (found, not_found, failed, over_budget).",
            m.lookups.clone(),
        );
        super::register(
            registry,
            "callbot_webhook_registrations",
            "Webhook registration checks with the upstream, by result (present, registered, failed).",
            m.registrations.clone(),
        );
        super::register(
            registry,
            "callbot_reconcile_lookups",
            "Call-history searches for contacts left without an outcome, one per page, by result (found: items of the session, not_found, failed, throttled: 429).",
            m.reconcile_lookups.clone(),
        );
        super::register(
            registry,
            "callbot_reconcile_events",
            "Call events stored from the call history (end-of-call records no webhook brought).",
            m.reconcile_events.clone(),
        );
        super::register(
            registry,
            "callbot_calls_given_up",
            "Contacts given up after --call-give-up-after with no outcome from the provider (outcome UNKNOWN).",
            m.given_up.clone(),
        );
        for result in RECONCILE_RESULTS {
            let _ = m.reconcile_lookups.get_or_create(&ResultLabels { result });
        }
        // Zero series for every known label value.
        for kind in DELIVERY_KINDS {
            for answer in DELIVERY_ANSWERS {
                let _ = m.deliveries.get_or_create(&DeliveryLabels { kind, answer });
            }
        }
        for result in LOOKUP_RESULTS {
            let _ = m.lookups.get_or_create(&ResultLabels { result });
        }
        for result in REGISTRATION_RESULTS {
            let _ = m.registrations.get_or_create(&ResultLabels { result });
        }
        m
    }

    /// One delivery answered.
    pub fn delivery(&self, kind: &'static str, answer: &'static str) {
        self.deliveries.get_or_create(&DeliveryLabels { kind, answer }).inc();
        match answer {
            "duplicate" => {
                self.duplicates.inc();
            }
            "stored" => {
                self.stored.inc();
            }
            _ => {}
        }
    }

    /// The store's size after a change.
    pub fn store_size(&self, events: u64, ids: u64, sessions: u64) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.store_events.set(g(events));
        self.store_ids.set(g(ids));
        self.store_sessions.set(g(sessions));
    }

    /// The data dir's fsyncs so far (the counter follows the store's own count).
    pub fn store_fsyncs(&self, total: u64) {
        follow(&self.store_fsyncs, total);
    }

    /// The data dir's whole compactions so far (the counter follows the store's own count).
    pub fn store_compactions(&self, total: u64) {
        follow(&self.store_compactions, total);
    }

    /// Whether the event store can serve now.
    pub fn store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// The watchers gauge (a watch stream holds it up while open).
    pub fn watchers(&self) -> &Gauge {
        &self.watchers
    }

    /// A call-history lookup ended.
    pub fn lookup(&self, result: &'static str) {
        self.lookups.get_or_create(&ResultLabels { result }).inc();
    }

    /// A reconciliation search (one page) ended.
    pub fn reconcile_lookup(&self, result: &'static str) {
        self.reconcile_lookups.get_or_create(&ResultLabels { result }).inc();
    }

    /// An event from the call history was stored (not a repeat).
    pub fn reconcile_event(&self) {
        self.reconcile_events.inc();
    }

    /// A contact was given up (its UNKNOWN event stored, not a repeat).
    pub fn given_up(&self) {
        self.given_up.inc();
    }

    /// A webhook registration check ended.
    pub fn registration(&self, result: &'static str) {
        self.registrations.get_or_create(&ResultLabels { result }).inc();
    }
}

/// Brings `counter` up to `total`, a count kept elsewhere that only grows.
fn follow(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}
