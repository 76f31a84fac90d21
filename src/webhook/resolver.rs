//! The session of an end-of-call record that came without `autocall_id`, from the call history
//! (`POST /api/v3/call-transaction/search`, docs/upstream.md §11.3): looked up sparingly.
//!
//! - Batched: the lookups of one tenant waiting within [`BATCH_WINDOW`] go in one search (at
//!   most a page, 50 ids).
//! - Budgeted per tenant: `--history-budget` searches a second of each tenant (bursts of twice
//!   as many), shared with reconciliation (`events/reconcile/budget.rs`); over it, or while a
//!   `429` pauses the tenant, the answer is "unknown" at once. One tenant's deliveries never
//!   spend another's budget.
//! - Bounded in time: a delivery waits at most [`WAIT`] for its answer.
//! - Remembered: found sessions are kept ([`REMEMBERED`] calls), so a redelivery costs nothing.
//!
//! "Unknown" is not a failure: the record is stored with an empty session id (never dropped).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::{
    events::{TenantId, reconcile::HistoryBudget},
    metrics::Metrics,
    upstream::{ApiKey, CallContext, SEARCH_PAGE_SIZE, UpstreamClient, UpstreamError},
};

/// How long lookups gather before a search goes out.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Longest a delivery waits for its lookup.
pub(crate) const WAIT: Duration = Duration::from_secs(3);
/// Bound of one search exchange.
const SEARCH_TIMEOUT: Duration = Duration::from_millis(2500);
/// Found sessions remembered.
const REMEMBERED: usize = 10_000;
/// Lookups queued at most (beyond: "unknown" at once).
const QUEUE: usize = 4096;
/// How far back a search looks (the provider allows 30 days).
const SEARCH_SPAN_MS: u64 = 30 * 24 * 3600 * 1000;

struct Lookup {
    tenant: TenantId,
    key: ApiKey,
    call_id: String,
    reply: oneshot::Sender<Option<String>>,
}

/// Looks sessions up; cheap to clone.
#[derive(Clone)]
pub(crate) struct Resolver {
    tx: mpsc::Sender<Lookup>,
    found: Arc<Mutex<HashMap<(TenantId, String), String>>>,
}

impl Resolver {
    /// Starts the lookup task (it ends when every `Resolver` clone is dropped), spending
    /// `budget`. It runs among the application's background `tasks`.
    pub(crate) fn start(
        upstream: Arc<UpstreamClient>,
        metrics: Arc<Metrics>,
        budget: Arc<HistoryBudget>,
        tasks: &TaskTracker,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let found = Arc::new(Mutex::new(HashMap::new()));
        tasks.spawn(run(rx, upstream, metrics, budget, found.clone()));
        Resolver { tx, found }
    }

    /// The session of `call_id`, or `None` when the history cannot say (in time, within budget).
    pub(crate) async fn session_of(&self, tenant: &TenantId, key: ApiKey, call_id: &str) -> Option<String> {
        if let Some(s) = self.found.lock().ok().and_then(|f| f.get(&(tenant.clone(), call_id.to_owned())).cloned()) {
            return Some(s);
        }
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup { tenant: tenant.clone(), key, call_id: call_id.to_owned(), reply };
        self.tx.try_send(lookup).ok()?;
        tokio::time::timeout(WAIT, answer).await.ok()?.ok()?
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn run(
    mut rx: mpsc::Receiver<Lookup>,
    upstream: Arc<UpstreamClient>,
    metrics: Arc<Metrics>,
    budget: Arc<HistoryBudget>,
    found: Arc<Mutex<HashMap<(TenantId, String), String>>>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = Instant::now() + BATCH_WINDOW;
        while batch.len() < SEARCH_PAGE_SIZE {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(l)) => batch.push(l),
                _ => break,
            }
        }
        // One search per tenant in the batch.
        let mut by_tenant: HashMap<TenantId, Vec<Lookup>> = HashMap::new();
        for l in batch {
            by_tenant.entry(l.tenant.clone()).or_default().push(l);
        }
        for (tenant, lookups) in by_tenant {
            if !budget.try_take(&tenant) {
                for l in lookups {
                    metrics.events().lookup("over_budget");
                    let _ = l.reply.send(None);
                }
                continue;
            }
            let ids: Vec<String> = lookups.iter().map(|l| l.call_id.clone()).collect();
            let ctx = CallContext {
                api_key: lookups[0].key.clone(),
                deadline: Instant::now() + SEARCH_TIMEOUT,
                request_id: format!("history-{}", uuid::Uuid::new_v4()),
                traceparent: None,
                tracestate: None,
            };
            let now = now_ms();
            let result = upstream.search_calls(&ctx, &ids, now.saturating_sub(SEARCH_SPAN_MS), now + 3_600_000).await;
            let sessions: HashMap<String, String> = match result {
                Ok(items) => items
                    .into_iter()
                    .filter(|r| !r.autocall_id.trim().is_empty())
                    .map(|r| (r.transaction_id.trim().to_owned(), r.autocall_id.trim().to_owned()))
                    .collect(),
                Err(e) => {
                    if let UpstreamError::Http { status: 429, retry_after, .. } = &e {
                        budget.pause(&tenant, *retry_after);
                    }
                    tracing::warn!(%tenant, error = %e, calls = ids.len(), "call-history lookup failed");
                    for l in lookups {
                        metrics.events().lookup("failed");
                        let _ = l.reply.send(None);
                    }
                    continue;
                }
            };
            for l in lookups {
                let session = sessions.get(&l.call_id).cloned();
                metrics.events().lookup(if session.is_some() { "found" } else { "not_found" });
                if let (Some(s), Ok(mut f)) = (&session, found.lock()) {
                    if f.len() >= REMEMBERED {
                        f.clear();
                    }
                    f.insert((tenant.clone(), l.call_id.clone()), s.clone());
                }
                let _ = l.reply.send(session);
            }
        }
    }
}
