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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_limit_are_shed_until_a_permit_comes_back_but_health_never_is() {
        let limiter = Limiter::new(1);
        let rpc = "/callbot.v1.CallBotService/GetScript";
        let first = limiter.admit(rpc).expect("under the limit");
        assert!(limiter.admit(rpc).is_none(), "over the limit");
        assert!(limiter.admit("/grpc.health.v1.Health/Check").is_some(), "health is exempt");
        assert!(limiter.admit("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").is_none());
        drop(first);
        assert!(limiter.admit(rpc).is_some(), "the permit came back");
    }
}
