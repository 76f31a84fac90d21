//! Webhook delivery: POSTing a call's facts (live states, then the CDR) to the API key's `call` hook.
//!
//! Each fact is resolved when it happens: the key's `call` hook at that moment (none registered = nothing is
//! delivered, the call is still placed and recorded) and its `events` filter (live states only; the CDR is
//! always sent). The facts of one call are delivered in order by one task, each after the previous one was
//! delivered or given up (unless a `reorder` fault reverses them); different calls deliver concurrently, at
//! most [`MAX_CONCURRENT_POSTS`] POSTs at once through one shared client.
//!
//! A delivery whose attempt fails (connection error, timeout of [`POST_TIMEOUT`], a non-2xx answer) is retried
//! after 100 ms, doubling up to 5 s, at most [`MAX_ATTEMPTS`] attempts in all (real time, not scaled), then
//! given up. `/_sim/stats` counts `webhook_deliveries` (attempts), `webhook_delivered` (2xx answers),
//! `webhook_failed_attempts`, `webhook_given_up` and `webhook_lost` (deliveries a `lose` fault
//! took). Webhook faults (`webhook_faults.rs`) apply here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};

use super::calls::CallRecord;
use super::state::Sim;
use super::webhook_faults::Kind;

/// Most webhook POSTs in flight at once.
pub(crate) const MAX_CONCURRENT_POSTS: usize = 256;
/// Timeout of one POST attempt.
pub(crate) const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of one delivery before it is given up.
pub(crate) const MAX_ATTEMPTS: u32 = 10;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The shared HTTP client and the bound on concurrent POSTs.
pub(crate) struct Deliverer {
    client: reqwest::Client,
    permits: Semaphore,
}

impl Deliverer {
    pub(crate) fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent("callbot-sim-webhooks/1")
            .build()
            .unwrap_or_default();
        Self { client, permits: Semaphore::new(MAX_CONCURRENT_POSTS) }
    }

    /// One POST; true on a 2xx answer (whose body is read, so the connection is reused).
    async fn post(&self, url: &str, body: &Bytes) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let sent = self
            .client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let ok = resp.status().is_success();
                if !ok {
                    tracing::debug!(status = %resp.status(), "simulator: webhook answered non-2xx");
                }
                ok && resp.bytes().await.is_ok()
            }
            Err(e) => {
                tracing::debug!(error = %e, "simulator: webhook POST failed");
                false
            }
        }
    }
}

/// One fact of a call, ready to POST.
struct Fact {
    url: String,
    body: Bytes,
}

/// Where one call's facts go, as they happen. Dropping it lets the call's delivery task finish.
pub(crate) struct CallSink {
    sim: Arc<Sim>,
    epoch: u64,
    tx: Option<mpsc::UnboundedSender<Fact>>,
}

impl CallSink {
    pub(crate) fn new(sim: Arc<Sim>, epoch: u64) -> Self {
        Self { sim, epoch, tx: None }
    }

    fn send(&mut self, url: String, body: Bytes) {
        let tx = self.tx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_call(Arc::clone(&self.sim), rx, self.epoch));
            tx
        });
        let _ = tx.send(Fact { url, body });
    }

    /// The live state `state` of `call`, which happened at `at_ms`, if the hook wants it.
    pub(crate) fn live(&mut self, call: &CallRecord, state: &str, at_ms: u64) {
        let Some(hook) = self.sim.hooks.get(&call.api_key_id, "call") else {
            return;
        };
        if hook.events.as_ref().is_some_and(|ev| !ev.iter().any(|e| e == state)) {
            return;
        }
        let body = serde_json::to_vec(&call.live_json(state, at_ms)).unwrap_or_default();
        self.send(hook.url, Bytes::from(body));
    }

    /// The CDR of the ended `call`, if a hook is registered.
    pub(crate) fn cdr(&mut self, call: &CallRecord) {
        let Some(hook) = self.sim.hooks.get(&call.api_key_id, "call") else {
            return;
        };
        let with_autocall = self.sim.wh_faults.take(Kind::NoAutocallId).is_none();
        let body = serde_json::to_vec(&call.cdr_json(with_autocall)).unwrap_or_default();
        self.send(hook.url, Bytes::from(body));
    }
}

/// Deliver one call's facts in order (or, under a `reorder` fault, all of them reversed once the last is in).
async fn run_call(sim: Arc<Sim>, mut rx: mpsc::UnboundedReceiver<Fact>, epoch: u64) {
    let Some(first) = rx.recv().await else {
        return;
    };
    if sim.wh_faults.take(Kind::Reorder).is_some() {
        let mut all = vec![first];
        while let Some(f) = rx.recv().await {
            all.push(f);
        }
        for f in all.iter().rev() {
            deliver(&sim, f, epoch).await;
        }
        return;
    }
    deliver(&sim, &first, epoch).await;
    while let Some(f) = rx.recv().await {
        deliver(&sim, &f, epoch).await;
    }
}

/// One delivery, with the `lose`, `delay`, `duplicate` and `drop_first` faults that apply to it.
async fn deliver(sim: &Sim, fact: &Fact, epoch: u64) {
    if sim.wh_faults.take(Kind::Lose).is_some() {
        sim.stats.webhook_lost.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if let Some(ms) = sim.wh_faults.take(Kind::Delay).and_then(|f| f.delay_ms) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let duplicate = sim.wh_faults.take(Kind::Duplicate).is_some();
    let drop_first = sim.wh_faults.take(Kind::DropFirst).is_some();
    post_with_retries(sim, fact, drop_first, epoch).await;
    if duplicate {
        post_with_retries(sim, fact, false, epoch).await;
    }
}

async fn post_with_retries(sim: &Sim, fact: &Fact, drop_first: bool, epoch: u64) {
    let stats = &sim.stats;
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=MAX_ATTEMPTS {
        if sim.clock.epoch() != epoch {
            return;
        }
        stats.webhook_deliveries.fetch_add(1, Ordering::Relaxed);
        let answered = sim.delivery.post(&fact.url, &fact.body).await;
        if answered && !(drop_first && attempt == 1) {
            stats.webhook_delivered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        stats.webhook_failed_attempts.fetch_add(1, Ordering::Relaxed);
        if attempt == MAX_ATTEMPTS {
            stats.webhook_given_up.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(attempts = MAX_ATTEMPTS, "simulator: webhook delivery given up");
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
