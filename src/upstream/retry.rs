//! When to try an upstream call again: which failures are safe to retry for reads and for the
//! session-creating write, the backoff (exponential, full jitter), and a retry budget that caps
//! retries to a share of recent requests so an outage is not amplified.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

use super::UpstreamError;

/// At most this many attempts per call (the first included).
pub const MAX_ATTEMPTS: u32 = 3;
const BASE_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How a call may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads: repeating them changes nothing upstream.
    Read,
    /// Starting a session: repeat only when the request provably never reached the application.
    Write,
}

/// Whether `err` may be retried for a call of this kind.
pub fn is_retryable(kind: Idempotency, err: &UpstreamError) -> bool {
    matches!(
        (kind, err),
        (_, UpstreamError::Connect { .. } | UpstreamError::Http { status: 503, .. })
            | (
                Idempotency::Read,
                UpstreamError::ConnectionLost { .. }
                    | UpstreamError::AttemptTimeout
                    | UpstreamError::Http { status: 502 | 504, .. }
            )
    )
}

/// The wait before attempt `attempt + 1` (attempt counts from 1): uniform in
/// `[0, min(cap, base * 2^attempt))` ("full jitter"), never below a `Retry-After` the upstream gave.
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let ceiling = BASE_BACKOFF.saturating_mul(1u32 << attempt.min(16)).min(MAX_BACKOFF);
    let jittered = ceiling.mul_f64(rand::random::<f64>());
    match retry_after {
        Some(ra) => jittered.max(ra.min(MAX_BACKOFF)),
        None => jittered,
    }
}

const BUCKETS: usize = 10;

/// Retries allowed = `min_per_window` + `percent`% of the requests of the last window
/// (ten one-second buckets). Shared by every call of a client.
pub struct RetryBudget {
    percent: u32,
    min_per_window: u32,
    bucket_len: Duration,
    state: Mutex<BudgetState>,
}

struct BudgetState {
    /// Start of the newest bucket.
    head_start: Instant,
    head: usize,
    requests: [u32; BUCKETS],
    retries: [u32; BUCKETS],
}

impl RetryBudget {
    /// A budget over a 10-second window.
    pub fn new(percent: u32, min_per_window: u32) -> Self {
        Self::with_window(percent, min_per_window, Duration::from_secs(10))
    }

    /// A budget over `window` (for tests).
    pub fn with_window(percent: u32, min_per_window: u32, window: Duration) -> Self {
        RetryBudget {
            percent,
            min_per_window,
            bucket_len: window / BUCKETS as u32,
            state: Mutex::new(BudgetState {
                head_start: Instant::now(),
                head: 0,
                requests: [0; BUCKETS],
                retries: [0; BUCKETS],
            }),
        }
    }

    fn advance(&self, s: &mut BudgetState) {
        let now = Instant::now();
        let mut steps = 0;
        while now.duration_since(s.head_start) >= self.bucket_len && steps <= BUCKETS {
            s.head = (s.head + 1) % BUCKETS;
            s.requests[s.head] = 0;
            s.retries[s.head] = 0;
            s.head_start += self.bucket_len;
            steps += 1;
        }
        if steps > BUCKETS {
            s.head_start = now;
        }
    }

    /// Counts one original request.
    pub fn record_request(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.advance(&mut s);
        let head = s.head;
        s.requests[head] = s.requests[head].saturating_add(1);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_retry(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.advance(&mut s);
        let requests: u64 = s.requests.iter().map(|&r| u64::from(r)).sum();
        let retries: u64 = s.retries.iter().map(|&r| u64::from(r)).sum();
        let allowed = u64::from(self.min_per_window) + requests * u64::from(self.percent) / 100;
        if retries < allowed {
            let head = s.head;
            s.retries[head] = s.retries[head].saturating_add(1);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> UpstreamError {
        UpstreamError::Http { status, retry_after: None, upstream_code: None }
    }

    #[test]
    fn retryable_table() {
        use Idempotency::*;
        let connect = UpstreamError::Connect { detail: String::new() };
        let lost = UpstreamError::ConnectionLost { detail: String::new() };
        let rows = [
            (Read, connect.clone(), true),
            (Write, connect, true),
            (Read, http(503), true),
            (Write, http(503), true),
            (Read, http(502), true),
            (Write, http(502), false),
            (Read, http(504), true),
            (Write, http(504), false),
            (Read, lost.clone(), true),
            (Write, lost, false),
            (Read, UpstreamError::AttemptTimeout, true),
            (Write, UpstreamError::AttemptTimeout, false),
            (Read, http(500), false),
            (Read, http(429), false),
            (Read, http(401), false),
            (Read, UpstreamError::DeadlineExceeded, false),
            (Read, UpstreamError::Rejected { code: "x".into(), http_status: 200 }, false),
            (Read, UpstreamError::Malformed { detail: String::new(), http_status: 200 }, false),
        ];
        for (kind, err, want) in rows {
            assert_eq!(is_retryable(kind, &err), want, "{kind:?} {err:?}");
        }
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        for attempt in 1..40 {
            let b = backoff(attempt, None);
            assert!(b < BASE_BACKOFF.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF) + Duration::from_nanos(1));
        }
        assert!(backoff(1, Some(Duration::from_millis(300))) >= Duration::from_millis(300));
        assert_eq!(backoff(1, Some(Duration::from_secs(60))), MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_allows_floor_plus_percent_then_recovers() {
        let budget = RetryBudget::new(20, 2);
        // No traffic: only the floor.
        assert!(budget.try_retry());
        assert!(budget.try_retry());
        assert!(!budget.try_retry());
        // 20 requests buy 4 more retries.
        for _ in 0..20 {
            budget.record_request();
        }
        for _ in 0..4 {
            assert!(budget.try_retry());
        }
        assert!(!budget.try_retry());
        // After the window the spent retries are forgotten.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(budget.try_retry());
    }
}
