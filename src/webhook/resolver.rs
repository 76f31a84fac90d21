//! The session of an end-of-call record that came without `autocall_id`, from the call history
//! (`POST /api/v3/call-transaction/search`, docs/upstream.md §11.3): looked up sparingly.
//!
//! - Batched: the lookups of one tenant waiting within [`BATCH_WINDOW`] go in one search (at
//!   most a page, 50 ids).
//! - Budgeted per tenant: at most [`SEARCHES_PER_SECOND`] searches a second of each tenant (a
//!   burst of [`BURST`]); over it, the answer is "unknown" at once. One tenant's deliveries never
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
    events::TenantId,
    metrics::Metrics,
    upstream::{ApiKey, CallContext, SEARCH_PAGE_SIZE, UpstreamClient},
};

/// How long lookups gather before a search goes out.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Searches per second at most.
const SEARCHES_PER_SECOND: f64 = 5.0;
/// Searches allowed back to back.
const BURST: f64 = 10.0;
/// Tenants whose budget is tracked at once; past it, the full (idle) buckets are forgotten.
const TRACKED_TENANTS: usize = 10_000;
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
    /// Starts the lookup task (it ends when every `Resolver` clone is dropped).
    /// It runs among the application's background `tasks`.
    pub(crate) fn start(upstream: Arc<UpstreamClient>, metrics: Arc<Metrics>, tasks: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let found = Arc::new(Mutex::new(HashMap::new()));
        tasks.spawn(run(rx, upstream, metrics, found.clone()));
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

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Each tenant's bucket.
#[derive(Default)]
struct Budgets(HashMap<TenantId, Bucket>);

impl Budgets {
    /// Takes one search from `tenant`'s budget, if it has one left.
    fn take(&mut self, tenant: &TenantId) -> bool {
        if self.0.len() >= TRACKED_TENANTS && !self.0.contains_key(tenant) {
            let now = Instant::now();
            self.0.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * SEARCHES_PER_SECOND < BURST);
        }
        self.0.entry(tenant.clone()).or_insert_with(|| Bucket { tokens: BURST, at: Instant::now() }).take()
    }
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * SEARCHES_PER_SECOND).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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
    found: Arc<Mutex<HashMap<(TenantId, String), String>>>,
) {
    let mut budgets = Budgets::default();
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
            if !budgets.take(&tenant) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_tenant_has_its_own_budget() {
        let mut budgets = Budgets::default();
        let (a, b): (TenantId, TenantId) = (Arc::from("a"), Arc::from("b"));
        for _ in 0..BURST as usize {
            assert!(budgets.take(&a));
        }
        assert!(!budgets.take(&a), "a spent its burst");
        for _ in 0..BURST as usize {
            assert!(budgets.take(&b), "b's budget is its own");
        }
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(budgets.take(&a), "refilled at SEARCHES_PER_SECOND");
        assert!(!budgets.take(&a));
    }
}
