//! A keyed cache whose refresh is single-flight: however many callers find an entry missing or
//! stale at once, one fetch runs and the others wait for its result (value or error). Used for
//! access tokens (one per API key) and the script list (one per API key).

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::time::Instant;

/// Most keys kept; beyond it expired entries are dropped first, then the whole map is cleared
/// (a crude bound: more tenants than this in one replica is far outside the design).
const MAX_KEYS: usize = 4096;

/// The cache. `K` is the API key, `V` a cheap-to-clone value (an `Arc` or small struct), `E` the
/// fetch error, cloned to every caller that waited on the failed fetch.
pub struct SingleFlightCache<K, V, E> {
    slots: Mutex<HashMap<K, Arc<Slot<V, E>>>>,
}

struct Slot<V, E> {
    /// The current value and when it stops being served.
    current: RwLock<Option<(V, Instant)>>,
    /// Held while a fetch runs: the single flight.
    flight: tokio::sync::Mutex<()>,
    /// Count of fetches finished, so a waiter can tell that one ended while it queued.
    flights_done: AtomicU64,
    /// The error of the last fetch, with its flight number, for the callers that waited on it.
    last_error: Mutex<Option<(u64, E)>>,
}

impl<K, V, E> Default for SingleFlightCache<K, V, E> {
    fn default() -> Self {
        Self { slots: Mutex::new(HashMap::new()) }
    }
}

impl<K, V, E> SingleFlightCache<K, V, E>
where
    K: Hash + Eq + Clone,
    V: Clone,
    E: Clone,
{
    /// Creates an empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, key: &K) -> Arc<Slot<V, E>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= MAX_KEYS {
            let now = Instant::now();
            slots.retain(|_, s| {
                s.current.read().map(|c| c.as_ref().is_some_and(|(_, exp)| *exp > now)).unwrap_or(false)
            });
            if slots.len() >= MAX_KEYS {
                slots.clear();
            }
        }
        let slot = Arc::new(Slot {
            current: RwLock::new(None),
            flight: tokio::sync::Mutex::new(()),
            flights_done: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        slots.insert(key.clone(), slot.clone());
        slot
    }

    fn fresh(slot: &Slot<V, E>) -> Option<V> {
        let now = Instant::now();
        let current = slot.current.read().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some((v, exp)) if *exp > now => Some(v.clone()),
            _ => None,
        }
    }

    /// Returns the cached value for `key`, or runs `fetch` (once for all concurrent callers) to
    /// get a value and the instant it expires.
    pub async fn get_or_fetch<F, Fut>(&self, key: &K, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Instant), E>>,
    {
        let slot = self.slot(key);
        if let Some(v) = Self::fresh(&slot) {
            return Ok(v);
        }
        let seen = slot.flights_done.load(Ordering::Acquire);
        let _flight = slot.flight.lock().await;
        if let Some(v) = Self::fresh(&slot) {
            return Ok(v);
        }
        if slot.flights_done.load(Ordering::Acquire) != seen {
            // A fetch ended while we queued and left no fresh value: it failed. Share its
            // error instead of hammering a failing upstream once per waiter.
            let last = slot.last_error.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((flight, err)) = &*last {
                if *flight > seen {
                    return Err(err.clone());
                }
            }
        }
        let result = fetch().await;
        let flight_no = slot.flights_done.load(Ordering::Acquire) + 1;
        match result {
            Ok((v, expires_at)) => {
                *slot.current.write().unwrap_or_else(|p| p.into_inner()) = Some((v.clone(), expires_at));
                slot.flights_done.store(flight_no, Ordering::Release);
                Ok(v)
            }
            Err(e) => {
                *slot.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((flight_no, e.clone()));
                slot.flights_done.store(flight_no, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Drops the value for `key` when `is_stale` says so (e.g. the token a 401 answered to), so
    /// the next caller fetches a new one; a value already replaced by another caller is kept.
    pub fn invalidate_if(&self, key: &K, is_stale: impl FnOnce(&V) -> bool) {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get(key) {
                Some(s) => s.clone(),
                None => return,
            }
        };
        let mut current = slot.current.write().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|(v, _)| is_stale(v)) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicUsize, time::Duration};

    use super::*;

    #[tokio::test]
    async fn a_burst_of_misses_runs_one_fetch() {
        let cache: Arc<SingleFlightCache<String, u32, String>> = Arc::new(SingleFlightCache::new());
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let cache = cache.clone();
            let fetches = fetches.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(&"k".to_string(), || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok((7, Instant::now() + Duration::from_secs(60)))
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(7));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn waiters_share_a_failed_fetch() {
        let cache: Arc<SingleFlightCache<&'static str, u32, String>> = Arc::new(SingleFlightCache::new());
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let cache = cache.clone();
            let fetches = fetches.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(&"k", || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Err::<(u32, Instant), _>("down".to_string())
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Err("down".to_string()));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A later caller tries again.
        let v = cache.get_or_fetch(&"k", || async { Ok((1, Instant::now() + Duration::from_secs(1))) }).await;
        assert_eq!(v, Ok(1));
    }

    #[tokio::test]
    async fn expiry_and_invalidation_trigger_a_new_fetch() {
        let cache: SingleFlightCache<u8, u32, ()> = SingleFlightCache::new();
        let past = Instant::now();
        assert_eq!(cache.get_or_fetch(&1, || async move { Ok((1, past)) }).await, Ok(1));
        // Expired at once: fetched again.
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(cache.get_or_fetch(&1, || async move { Ok((2, later)) }).await, Ok(2));
        assert_eq!(cache.get_or_fetch(&1, || async move { Ok((3, later)) }).await, Ok(2));
        cache.invalidate_if(&1, |v| *v == 99);
        assert_eq!(cache.get_or_fetch(&1, || async move { Ok((3, later)) }).await, Ok(2));
        cache.invalidate_if(&1, |v| *v == 2);
        assert_eq!(cache.get_or_fetch(&1, || async move { Ok((4, later)) }).await, Ok(4));
        // Keys are separate.
        assert_eq!(cache.get_or_fetch(&2, || async move { Ok((5, later)) }).await, Ok(5));
    }
}
