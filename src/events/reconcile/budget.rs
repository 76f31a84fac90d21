//! The call-history budget (`--history-budget`): searches per second per tenant, with bursts of
//! twice as many, shared by reconciliation (`reconcile/mod.rs`) and the attribution look-ups of
//! records that came without a session (`webhook/resolver.rs`), and the pause a `429` asks for
//! (its `Retry-After`, else [`PAUSE_WITHOUT_RETRY_AFTER`]). One tenant never spends another's.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

use crate::events::TenantId;

/// Tenants whose budget is tracked at once; past it, the full (idle) buckets are forgotten.
const TRACKED_TENANTS: usize = 10_000;
/// The pause after a `429` that gave no `Retry-After`.
pub(crate) const PAUSE_WITHOUT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest pause a `Retry-After` can impose (a bogus hour-long one must not stop reconciliation).
const MAX_PAUSE: Duration = Duration::from_secs(300);

struct Bucket {
    tokens: f64,
    at: Instant,
    /// No search before this (a `429`'s `Retry-After`).
    paused_until: Option<Instant>,
}

/// Every tenant's bucket. Cheap to share (`Arc`).
pub(crate) struct HistoryBudget {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

impl HistoryBudget {
    /// A budget of `per_second` searches per tenant, bursts of twice as many (at least one).
    pub(crate) fn new(per_second: f64) -> Arc<Self> {
        let per_second = if per_second.is_finite() && per_second > 0.0 { per_second } else { 1.0 };
        Arc::new(HistoryBudget { per_second, burst: (2.0 * per_second).max(1.0), buckets: Mutex::new(HashMap::new()) })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, Bucket>> {
        self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one search of `tenant`'s now, or says how long until one is there.
    fn take_or_wait(&self, tenant: &TenantId) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.lock();
        if buckets.len() >= TRACKED_TENANTS && !buckets.contains_key(tenant) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.paused_until.is_some_and(|p| p > now)
                    || b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let b =
            buckets.entry(tenant.clone()).or_insert_with(|| Bucket { tokens: self.burst, at: now, paused_until: None });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_second).min(self.burst);
        b.at = now;
        if let Some(until) = b.paused_until {
            if until > now {
                return Err(until - now);
            }
            b.paused_until = None;
        }
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }

    /// Takes one search of `tenant`'s if there is one now (a webhook delivery cannot wait).
    pub(crate) fn try_take(&self, tenant: &TenantId) -> bool {
        self.take_or_wait(tenant).is_ok()
    }

    /// Takes one search of `tenant`'s, waiting for it at most `max_wait`; `false` when it would
    /// take longer (then nothing is taken).
    pub(crate) async fn take(&self, tenant: &TenantId, max_wait: Duration) -> bool {
        let deadline = Instant::now() + max_wait;
        loop {
            match self.take_or_wait(tenant) {
                Ok(()) => return true,
                Err(wait) if Instant::now() + wait > deadline => return false,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// The provider answered `429`: no search of `tenant`'s for `retry_after` (or a default).
    pub(crate) fn pause(&self, tenant: &TenantId, retry_after: Option<Duration>) {
        let pause = retry_after.unwrap_or(PAUSE_WITHOUT_RETRY_AFTER).min(MAX_PAUSE);
        let now = Instant::now();
        let mut buckets = self.lock();
        let b = buckets.entry(tenant.clone()).or_insert_with(|| Bucket { tokens: 0.0, at: now, paused_until: None });
        b.paused_until = Some(b.paused_until.map_or(now + pause, |p| p.max(now + pause)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_tenant_has_its_own_budget_refilled_at_the_rate() {
        let budget = HistoryBudget::new(5.0);
        let (a, b): (TenantId, TenantId) = (Arc::from("a"), Arc::from("b"));
        for _ in 0..10 {
            assert!(budget.try_take(&a));
        }
        assert!(!budget.try_take(&a), "a spent its burst of 10");
        for _ in 0..10 {
            assert!(budget.try_take(&b), "b's budget is its own");
        }
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(budget.try_take(&a), "refilled at 5/s");
        assert!(!budget.try_take(&a));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_takes_the_next_search_or_gives_up_at_its_bound() {
        let budget = HistoryBudget::new(5.0);
        let a: TenantId = Arc::from("a");
        for _ in 0..10 {
            assert!(budget.take(&a, Duration::ZERO).await);
        }
        let t0 = Instant::now();
        assert!(!budget.take(&a, Duration::from_millis(100)).await, "the next one is 200 ms away");
        assert_eq!(Instant::now(), t0, "a refusal waits for nothing");
        assert!(budget.take(&a, Duration::from_secs(1)).await);
        assert_eq!(Instant::now() - t0, Duration::from_millis(200), "waited exactly for the refill");
        // Sustained: 10 more searches take 2 s at 5/s.
        for _ in 0..10 {
            assert!(budget.take(&a, Duration::from_secs(1)).await);
        }
        assert_eq!(Instant::now() - t0, Duration::from_millis(2200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_the_tenant_for_its_retry_after() {
        let budget = HistoryBudget::new(5.0);
        let (a, b): (TenantId, TenantId) = (Arc::from("a"), Arc::from("b"));
        assert!(budget.try_take(&a));
        budget.pause(&a, Some(Duration::from_secs(3)));
        assert!(!budget.try_take(&a), "paused");
        assert!(budget.try_take(&b), "only a is paused");
        let t0 = Instant::now();
        assert!(!budget.take(&a, Duration::from_secs(2)).await, "3 s away");
        assert!(budget.take(&a, Duration::from_secs(5)).await);
        assert_eq!(Instant::now() - t0, Duration::from_secs(3), "resumed when Retry-After ran out");
        budget.pause(&a, None);
        assert!(!budget.take(&a, PAUSE_WITHOUT_RETRY_AFTER - Duration::from_millis(1)).await);
        budget.pause(&a, Some(Duration::from_secs(86_400)));
        assert!(budget.take(&a, Duration::from_secs(301)).await, "a bogus Retry-After is capped at 5 min");
    }
}
