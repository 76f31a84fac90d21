//! Load shedding, by who is calling: a call gets a permit at once or is refused at once, since a
//! queued call would only spend its deadline waiting.
//! - `callbot.v1.CallBotService` calls share `--max-concurrency` (beyond it: UNAVAILABLE +
//!   RetryInfo, by the caller of [`Limiter::admit`]);
//! - the methods open without credentials never take a caller's place: health `Watch` streams
//!   and reflection (and any other path, answered UNIMPLEMENTED) have small pools of their own
//!   (beyond them: RESOURCE_EXHAUSTED), so idle streams of nobody in particular cannot starve
//!   the callers; health `Check` is exempt so that probes do not fail a busy replica.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const SERVICE_PREFIX: &str = "/callbot.v1.CallBotService/";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

/// Open health `Watch` streams at most, over every connection (a kubelet or mesh watches with a
/// few; each costs a task and a subscription).
pub(super) const HEALTH_WATCH_MAX: usize = 64;
/// Reflection streams (and calls to unknown paths) in flight at most: tooling, a few at a time.
pub(super) const TOOLING_MAX: usize = 16;

/// Why a call was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// `--max-concurrency` callers' calls in flight.
    Callers,
    /// The pool of the open methods (health watches, or reflection and other paths) is full.
    Open,
}

/// The three pools.
#[derive(Debug)]
pub(super) struct Limiter {
    callers: Arc<Semaphore>,
    health_watch: Arc<Semaphore>,
    tooling: Arc<Semaphore>,
}

/// A call's place under its limit, given back when dropped. It lives in the response body, so a
/// stream counts until it ends.
pub(super) struct Permit {
    _held: Option<OwnedSemaphorePermit>,
}

impl Limiter {
    pub(super) fn new(max_concurrency: usize) -> Self {
        Limiter {
            callers: Arc::new(Semaphore::new(max_concurrency)),
            health_watch: Arc::new(Semaphore::new(HEALTH_WATCH_MAX)),
            tooling: Arc::new(Semaphore::new(TOOLING_MAX)),
        }
    }

    /// A permit for the call to `path`, or why it is refused: shed it.
    pub(super) fn admit(&self, path: &str) -> Result<Permit, Refused> {
        let (pool, refused) = if path.starts_with(SERVICE_PREFIX) {
            (&self.callers, Refused::Callers)
        } else if path == HEALTH_CHECK {
            return Ok(Permit { _held: None });
        } else if path == HEALTH_WATCH {
            (&self.health_watch, Refused::Open)
        } else {
            (&self.tooling, Refused::Open)
        };
        pool.clone().try_acquire_owned().map(|p| Permit { _held: Some(p) }).map_err(|_| refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_limit_are_shed_until_a_permit_comes_back_but_health_checks_never_are() {
        let limiter = Limiter::new(1);
        let rpc = "/callbot.v1.CallBotService/GetScript";
        let first = limiter.admit(rpc).expect("under the limit");
        assert_eq!(limiter.admit(rpc).err(), Some(Refused::Callers), "over the limit");
        assert!(limiter.admit(HEALTH_CHECK).is_ok(), "health checks are exempt");
        drop(first);
        assert!(limiter.admit(rpc).is_ok(), "the permit came back");
    }

    #[test]
    fn open_methods_have_pools_of_their_own_and_never_take_a_callers_place() {
        let limiter = Limiter::new(1);
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        let held: Vec<Permit> = (0..TOOLING_MAX).map(|_| limiter.admit(reflection).unwrap()).collect();
        assert_eq!(limiter.admit(reflection).err(), Some(Refused::Open));
        assert_eq!(limiter.admit("/no.such.Service/Method").err(), Some(Refused::Open), "unknown paths too");
        let watches: Vec<Permit> = (0..HEALTH_WATCH_MAX).map(|_| limiter.admit(HEALTH_WATCH).unwrap()).collect();
        assert_eq!(limiter.admit(HEALTH_WATCH).err(), Some(Refused::Open));
        // The callers' place is untouched.
        assert!(limiter.admit("/callbot.v1.CallBotService/GetScript").is_ok());
        drop((held, watches));
        assert!(limiter.admit(reflection).is_ok() && limiter.admit(HEALTH_WATCH).is_ok());
    }
}
