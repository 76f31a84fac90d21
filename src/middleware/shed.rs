//! Load shedding at `--max-concurrency`: a call gets a permit at once or is refused at once
//! (UNAVAILABLE + RetryInfo, by the caller of [`Limiter::admit`]) instead of queueing, since a
//! queued call would only spend its deadline waiting. Health is exempt so that probes do not
//! fail a busy replica.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// At most `max_concurrency` calls (health aside) in flight.
#[derive(Debug)]
pub(super) struct Limiter(Arc<Semaphore>);

/// A call's place under the limit, given back when dropped. It lives in the response body, so a
/// stream counts until it ends.
pub(super) struct Permit {
    _held: Option<OwnedSemaphorePermit>,
}

impl Limiter {
    pub(super) fn new(max_concurrency: usize) -> Self {
        Limiter(Arc::new(Semaphore::new(max_concurrency)))
    }

    /// A permit for the call to `path`, or `None` when the limit is reached: shed it.
    pub(super) fn admit(&self, path: &str) -> Option<Permit> {
        if path.starts_with(HEALTH_PREFIX) {
            return Some(Permit { _held: None });
        }
        self.0.clone().try_acquire_owned().ok().map(|p| Permit { _held: Some(p) })
    }
}
