//! Reconciliation: what the webhooks did not bring is fetched from the provider's call history,
//! and what never ends is ended (README, "Call outcomes"; docs/events.md, "Reconciliation").
//!
//! Driven by what the store holds, not by timers: every [`Reconciler::every`] a scan asks the
//! store for the sessions recorded here that have a contact not final yet
//! ([`EventStore::unfinished_sessions`]), so a restart (or another replica) picks up where the
//! last one left. For each such session:
//!
//! 1. its report (`report.rs`) says which of its contacts are not final, and when each last had
//!    an event (or the session's start, when none);
//! 2. the contacts with nothing for `--reconcile-after` are looked up with the v3 search
//!    (`POST /api/v3/call-transaction/search`): by their numbers, from the session's start
//!    (a minute earlier: the clocks differ), [`SEARCH_PAGE_SIZE`] per page, paged, oldest
//!    first, with the tenant's own key, each page taken from the tenant's `--history-budget`
//!    (`budget.rs`, shared with the attribution look-ups); a `429` pauses the tenant for its
//!    `Retry-After`;
//! 3. only items whose `autocall_id` is the session count: each becomes the event its end-of-call
//!    record would have given as a webhook, with the same id (`<call_id>/cdr`: a late webhook is
//!    then a repeat, and a call found twice is stored once) and `source = HISTORY`;
//! 4. `--call-give-up-after` after the session's start, its contacts still not final get a final
//!    ENDED event, outcome UNKNOWN, disposition [`GAVE_UP_DISPOSITION`], `source = FACADE`, with a
//!    stable id (`<session>/<national number>/unknown`), so every replica stores it once; a real
//!    outcome arriving later still wins (`report.rs`).
//!
//! With many replicas, a session is reconciled by the replica that claims it
//! ([`EventStore::claim`]: a lease of `--reconcile-after`, at most [`MAX_LEASE`]); the others
//! leave it for the lease. Within one process, a session looked at is not looked at again
//! before it can be due (kept in memory only to save work: after a restart each unfinished
//! session is looked at once more).

pub(crate) mod budget;

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Appended, CallEvent, CallOutcome, EventSource, EventStore, Fact, SessionFacts, SessionRecord, StoreError, TenantId,
    memory::Clock, normalize, report,
};
use crate::{
    domain::{mask_phone, national, no_text},
    metrics::Metrics,
    upstream::{ApiKey, CallContext, HistoryQuery, SEARCH_PAGE_SIZE, UpstreamClient, UpstreamError},
};
pub(crate) use budget::HistoryBudget;

/// The disposition of a contact given up.
pub(crate) const GAVE_UP_DISPOSITION: &str = "no outcome from the provider";
/// The longest lease on a session (a replica that died holding one frees it by then).
pub(crate) const MAX_LEASE: Duration = Duration::from_secs(15 * 60);
/// The longest a search waits for its tenant's budget; longer, the session waits for a later scan.
const BUDGET_WAIT: Duration = Duration::from_secs(2);
/// Bound of one search exchange.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Pages read per search at most (50 items each): a session's contacts have few calls.
const MAX_PAGES: u32 = 100;
/// Searches start this much before the session's start (the provider's clock is not ours).
const CLOCK_SLACK_MS: u64 = 60_000;
/// A session whose search must wait (budget, 429) is looked at again this soon.
const RETRY_SOON: Duration = Duration::from_secs(1);

/// The tenant's own upstream key, by tenant.
pub(crate) type KeyOf = Arc<dyn Fn(&str) -> Option<ApiKey> + Send + Sync>;

/// `--reconcile-after` and `--call-give-up-after`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Look a contact up this long after its last event (or its session's start).
    pub(crate) after: Duration,
    /// Give a contact up this long after its session's start.
    pub(crate) give_up_after: Duration,
}

/// What one scan did (for tests and the log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Sessions searched.
    pub(crate) searched: u32,
    /// Events stored from the history.
    pub(crate) stored: u32,
    /// Contacts given up.
    pub(crate) given_up: u32,
}

/// How a session's search went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Searched {
    /// Every page read.
    Done,
    /// The budget or a 429 says later.
    Later,
    /// The provider or the store failed (logged): looked at again after `--reconcile-after`.
    Failed,
}

/// The reconciler of one process (module docs).
pub(crate) struct Reconciler {
    store: Arc<dyn EventStore>,
    upstream: Arc<UpstreamClient>,
    keys: KeyOf,
    budget: Arc<HistoryBudget>,
    metrics: Arc<Metrics>,
    timing: Timing,
    clock: Clock,
    /// (tenant, session) -> not looked at before this (Unix ms).
    next: std::sync::Mutex<HashMap<(TenantId, String), u64>>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Reconciler {
    pub(crate) fn new(
        store: Arc<dyn EventStore>,
        upstream: Arc<UpstreamClient>,
        keys: KeyOf,
        budget: Arc<HistoryBudget>,
        metrics: Arc<Metrics>,
        timing: Timing,
        clock: Clock,
    ) -> Self {
        Reconciler { store, upstream, keys, budget, metrics, timing, clock, next: Default::default() }
    }

    fn next(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, String), u64>> {
        self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn look_again_at(&self, tenant: &TenantId, session: &str, at: u64) {
        self.next().insert((tenant.clone(), session.to_owned()), at);
    }

    /// How often the store is scanned: a quarter of `--reconcile-after`, between 50 ms and 5 s.
    pub(crate) fn every(&self) -> Duration {
        (self.timing.after / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
    }

    fn lease(&self) -> Duration {
        self.timing.after.clamp(Duration::from_secs(1), MAX_LEASE)
    }

    /// Scans until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pass = tokio::select! {
                () = shutdown.cancelled() => return,
                pass = self.scan() => pass,
            };
            if pass != Pass::default() {
                tracing::info!(
                    sessions_searched = pass.searched,
                    events_stored = pass.stored,
                    contacts_given_up = pass.given_up,
                    "reconciliation pass"
                );
            }
        }
    }

    /// One scan of the store (module docs). Each tenant's due sessions one after another (they
    /// share its budget), the tenants side by side (one tenant's waits never hold another's).
    pub(crate) async fn scan(&self) -> Pass {
        let now = (self.clock)();
        let (after, give_up_after) = (ms(self.timing.after), ms(self.timing.give_up_after));
        // A session younger than both delays has nothing due yet (`early` below): not listed.
        let created_before = now.saturating_sub(after.min(give_up_after)).saturating_add(1);
        let sessions = match self.store.unfinished_sessions(created_before).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reconciliation: the event store cannot list sessions now");
                return Pass::default();
            }
        };
        let listed: std::collections::HashSet<(TenantId, String)> =
            sessions.iter().map(|(t, r)| (t.clone(), r.session_id.clone())).collect();
        let mut due: HashMap<TenantId, Vec<SessionRecord>> = HashMap::new();
        {
            let mut next = self.next();
            next.retain(|k, _| listed.contains(k));
            for (tenant, record) in sessions {
                let early = now < record.created_at_ms.saturating_add(after.min(give_up_after));
                let key = (tenant, record.session_id.clone());
                if early || next.get(&key).is_some_and(|&at| at > now) {
                    continue;
                }
                due.entry(key.0).or_default().push(record);
            }
        }
        let tenants = due.into_iter().map(|(tenant, records)| async move {
            let mut pass = Pass::default();
            for record in records {
                if let Err(e) = self.visit(&tenant, &record, now, &mut pass).await {
                    tracing::warn!(%tenant, session_id = %record.session_id, error = %e, "reconciliation: store unavailable");
                    self.look_again_at(&tenant, &record.session_id, now.saturating_add(ms(RETRY_SOON)));
                }
            }
            pass
        });
        futures::future::join_all(tenants).await.into_iter().fold(Pass::default(), |a, b| Pass {
            searched: a.searched + b.searched,
            stored: a.stored + b.stored,
            given_up: a.given_up + b.given_up,
        })
    }

    /// One session (module docs, steps 1–4).
    async fn visit(
        &self,
        tenant: &TenantId,
        record: &SessionRecord,
        now: u64,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        let session = record.session_id.as_str();
        let (after, created) = (ms(self.timing.after), record.created_at_ms);
        let give_up_at = created.saturating_add(ms(self.timing.give_up_after));
        let Some(facts) = self.store.session(tenant.clone(), record.session_id.clone()).await? else {
            return Ok(());
        };
        let open = open_contacts(record, &facts);
        if open.is_empty() {
            self.look_again_at(tenant, session, now.saturating_add(after));
            return Ok(());
        }
        let due_at = |last: u64| last.max(created).saturating_add(after);
        let due: Vec<String> = open.iter().filter(|(_, last)| due_at(*last) <= now).map(|(p, _)| p.clone()).collect();
        let giving_up = now >= give_up_at;
        if due.is_empty() && !giving_up {
            let soonest = open.iter().map(|(_, last)| due_at(*last)).min().unwrap_or(give_up_at);
            self.look_again_at(tenant, session, soonest.min(give_up_at));
            return Ok(());
        }
        let lease = self.lease();
        if !self.store.claim(tenant.clone(), record.session_id.clone(), lease).await? {
            // Another replica has it.
            self.look_again_at(tenant, session, now.saturating_add(ms(lease)));
            return Ok(());
        }
        let searched = if due.is_empty() { Searched::Done } else { self.search(tenant, record, &due, now, pass).await };
        if searched == Searched::Later {
            self.look_again_at(tenant, session, now.saturating_add(ms(RETRY_SOON)));
            return Ok(());
        }
        pass.searched += u32::from(!due.is_empty());
        self.look_again_at(tenant, session, now.saturating_add(after));
        if giving_up {
            // What the search found may have closed some.
            let facts = self.store.session(tenant.clone(), record.session_id.clone()).await?.unwrap_or_default();
            for (phone, _) in open_contacts(record, &facts) {
                let event = gave_up(&record.session_id, &phone, now);
                if let Appended::Stored(_) = self.store.append(tenant.clone(), event).await? {
                    self.metrics.events().given_up();
                    pass.given_up += 1;
                    tracing::info!(
                        %tenant, session_id = %record.session_id, phone = %mask_phone(&phone),
                        "contact given up: no outcome from the provider (outcome UNKNOWN)"
                    );
                }
            }
        }
        Ok(())
    }

    /// Searches the history for the calls of `record` to `phones` and stores what it finds.
    async fn search(
        &self,
        tenant: &TenantId,
        record: &SessionRecord,
        phones: &[String],
        now: u64,
        pass: &mut Pass,
    ) -> Searched {
        let Some(api_key) = (self.keys)(tenant) else {
            tracing::warn!(%tenant, "reconciliation: no upstream key known for the tenant");
            return Searched::Failed;
        };
        let events = self.metrics.events();
        for chunk in phones.chunks(SEARCH_PAGE_SIZE) {
            let query = HistoryQuery {
                transaction_ids: Vec::new(),
                phone_numbers: chunk.to_vec(),
                from_ms: record.created_at_ms.saturating_sub(CLOCK_SLACK_MS),
                to_ms: now.saturating_add(CLOCK_SLACK_MS),
                ascending: true,
            };
            for page in 1..=MAX_PAGES {
                if !self.budget.take(tenant, BUDGET_WAIT).await {
                    return Searched::Later;
                }
                let ctx = CallContext {
                    api_key: api_key.clone(),
                    deadline: Instant::now() + SEARCH_TIMEOUT,
                    request_id: format!("reconcile-{}", uuid::Uuid::new_v4()),
                    traceparent: None,
                    tracestate: None,
                };
                let found = match self.upstream.search_history(&ctx, &query, page).await {
                    Ok(found) => found,
                    Err(UpstreamError::Http { status: 429, retry_after, .. }) => {
                        events.reconcile_lookup("throttled");
                        self.budget.pause(tenant, retry_after);
                        tracing::info!(%tenant, retry_after_ms = retry_after.map(|d| d.as_millis() as u64), "call history: 429; pausing the tenant's searches");
                        return Searched::Later;
                    }
                    Err(e) => {
                        events.reconcile_lookup("failed");
                        tracing::warn!(%tenant, session_id = %record.session_id, error = %e, "call-history search failed");
                        return Searched::Failed;
                    }
                };
                let mine: Vec<_> =
                    found.items.into_iter().filter(|i| i.autocall_id.trim() == record.session_id).collect();
                events.reconcile_lookup(if mine.is_empty() { "not_found" } else { "found" });
                for item in mine {
                    match self.store.append(tenant.clone(), normalize::history_record(item, now)).await {
                        Ok(Appended::Stored(_)) => {
                            events.reconcile_event();
                            pass.stored += 1;
                        }
                        Ok(Appended::Duplicate) => {}
                        Err(e) => {
                            tracing::warn!(%tenant, error = %e, "reconciliation: event not stored");
                            return Searched::Failed;
                        }
                    }
                }
                if !found.has_next {
                    break;
                }
            }
        }
        Searched::Done
    }
}

/// The contacts of `record` not final in its report, as given, with their last event's time
/// (0 when none).
fn open_contacts(record: &SessionRecord, facts: &SessionFacts) -> Vec<(String, u64)> {
    let recorded: std::collections::HashSet<String> = record.contacts.iter().map(|p| national(p)).collect();
    let facts = SessionFacts { record: Some(record.clone()), events: facts.events.clone() };
    report::build(&facts)
        .contacts
        .into_iter()
        .filter(|c| !c.is_final && recorded.contains(&national(&c.phone)))
        .map(|c| (c.phone, c.last_event_ms.unwrap_or(0)))
        .collect()
}

/// The give-up event of the contact `phone` (as given) of `session`: one per contact, so its id
/// is the same on every replica.
pub(crate) fn gave_up(session: &str, phone: &str, now: u64) -> CallEvent {
    CallEvent {
        fact: Fact::GaveUp,
        call_id: Arc::from(format!("{session}/{}", national(phone))),
        session_id: Arc::from(session),
        phone: Arc::from(phone),
        outcome: CallOutcome::Unknown,
        occurred_at_ms: now,
        ring_s: 0,
        talk_s: 0,
        hangup_cause: no_text(),
        disposition: Arc::from(GAVE_UP_DISPOSITION),
        has_recording: false,
        attempt: 0,
        source: EventSource::Facade,
        contact_phone: no_text(),
    }
}

#[cfg(test)]
mod tests;
