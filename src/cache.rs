//! A keyed cache whose refresh is single-flight: however many callers find an entry missing or
//! stale at once, one fetch runs and the others wait for its result (value or error). Used for
//! access tokens (one per API key) and the script list (one per API key). Bounded: the least
//! recently used key goes first (see [`SingleFlightCache`]).

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    hash::Hash,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::time::Instant;

/// Keys kept by default: one per tenant (API key). More tenants than this in one replica is far
/// outside the design; beyond it the least recently used tenant's entry goes first.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The cache. `K` is the API key, `V` a cheap-to-clone value (an `Arc` or small struct), `E` the
/// fetch error, cloned to every caller that waited on the failed fetch.
///
/// Bounded by a least-recently-used rule: when a new key would exceed the capacity, the key used
/// longest ago is dropped, skipping keys that a caller is using right now (a fetch in flight, a
/// caller queued on it, a value being read): dropping those would let the next caller start a
/// second fetch beside the running one. So the map may exceed the capacity by the keys in use at
/// that instant (bounded by the calls in flight), and shrinks back on the next insertions.
pub struct SingleFlightCache<K, V, E> {
    slots: Mutex<Lru<K, Arc<Slot<V, E>>>>,
}

/// A map with a recency order: each use stamps the entry with the next tick, and `order` maps
/// ticks back to keys, so the least recently used key is the first of `order` (O(log n) per use).
/// Hand-written rather than the `lru` crate because eviction must skip entries in use, which the
/// crate's `pop_lru` cannot do, and it keeps the crate free of another dependency with `unsafe`.
struct Lru<K, S> {
    map: HashMap<K, (S, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    capacity: usize,
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
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl<K, V, E> SingleFlightCache<K, V, E> {
    /// An empty cache keeping about `capacity` keys (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            slots: Mutex::new(Lru { map: HashMap::new(), order: BTreeMap::new(), tick: 0, capacity: capacity.max(1) }),
        }
    }
}

impl<K, V, E> SingleFlightCache<K, V, E>
where
    K: Hash + Eq + Clone,
    V: Clone,
    E: Clone,
{
    /// Creates an empty cache of [`DEFAULT_CAPACITY`] keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).map.len()
    }

    /// The slot of `key`, created when absent, marked most recently used.
    fn slot(&self, key: &K) -> Arc<Slot<V, E>> {
        let mut lru = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let lru = &mut *lru;
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((slot, used)) = lru.map.get_mut(key) {
            if let Some(k) = lru.order.remove(&*used) {
                lru.order.insert(tick, k);
            }
            *used = tick;
            return slot.clone();
        }
        while lru.map.len() >= lru.capacity {
            // The map's own reference is the only one of an idle slot; any other is a caller's.
            let idle = lru
                .order
                .iter()
                .find(|(_, k)| lru.map.get(*k).is_some_and(|(s, _)| Arc::strong_count(s) == 1))
                .map(|(t, _)| *t);
            let Some(oldest) = idle else { break };
            if let Some(k) = lru.order.remove(&oldest) {
                lru.map.remove(&k);
            }
        }
        let slot = Arc::new(Slot {
            current: RwLock::new(None),
            flight: tokio::sync::Mutex::new(()),
            flights_done: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        lru.map.insert(key.clone(), (slot.clone(), tick));
        lru.order.insert(tick, key.clone());
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

    /// Forgets `key` altogether (a key a reload retired), now rather than when it becomes the
    /// least recently used; a fetch in flight for it finishes for its own callers.
    pub fn remove(&self, key: &K) {
        let mut lru = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, tick)) = lru.map.remove(key) {
            lru.order.remove(&tick);
        }
    }

    /// Drops the value for `key` when `is_stale` says so (e.g. the token a 401 answered to), so
    /// the next caller fetches a new one; a value already replaced by another caller is kept.
    pub fn invalidate_if(&self, key: &K, is_stale: impl FnOnce(&V) -> bool) {
        let slot = {
            let lru = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match lru.map.get(key) {
                Some((s, _)) => s.clone(),
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

    /// Gets `key` from `cache`, counting a fetch in `fetches` when one runs.
    async fn get(cache: &SingleFlightCache<u8, u32, ()>, key: u8, fetches: &AtomicUsize) -> u32 {
        let later = Instant::now() + Duration::from_secs(60);
        cache
            .get_or_fetch(&key, || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                Ok((u32::from(key) * 10, later))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_least_recently_used_key_goes_first() {
        let cache: SingleFlightCache<u8, u32, ()> = SingleFlightCache::with_capacity(2);
        let fetches = AtomicUsize::new(0);
        assert_eq!(get(&cache, 1, &fetches).await, 10);
        assert_eq!(get(&cache, 2, &fetches).await, 20);
        // 1 used again: now 2 is the least recently used.
        assert_eq!(get(&cache, 1, &fetches).await, 10);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // A third key evicts 2, not 1.
        assert_eq!(get(&cache, 3, &fetches).await, 30);
        assert_eq!(cache.len(), 2);
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        assert_eq!(get(&cache, 1, &fetches).await, 10);
        assert_eq!(fetches.load(Ordering::SeqCst), 3, "1 was used recently: still cached");
        assert_eq!(get(&cache, 2, &fetches).await, 20);
        assert_eq!(fetches.load(Ordering::SeqCst), 4, "2 was the least recently used: evicted, fetched again");
        // ...and fetching 2 again evicted 3 (1 was used after 3).
        assert_eq!(get(&cache, 1, &fetches).await, 10);
        assert_eq!(get(&cache, 3, &fetches).await, 30);
        assert_eq!(fetches.load(Ordering::SeqCst), 5);
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn eviction_never_breaks_a_fetch_in_flight() {
        let cache: Arc<SingleFlightCache<u8, u32, ()>> = Arc::new(SingleFlightCache::with_capacity(1));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
        let later = Instant::now() + Duration::from_secs(60);
        // Key 1: a slow fetch and a second caller queued on it.
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let (cache, fetches, released) = (cache.clone(), fetches.clone(), released.clone());
            waiters.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(&1, || async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        if let Some(rx) = released.lock().await.take() {
                            let _ = rx.await;
                        }
                        Ok((100, later))
                    })
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Keys 2 and 3 arrive while 1 is in flight: the cache is full, but 1 is in use, so it
        // stays (the map grows past the capacity for as long as it is in use).
        let other = AtomicUsize::new(0);
        assert_eq!(get(&cache, 2, &other).await, 20);
        assert_eq!(get(&cache, 3, &other).await, 30);
        assert_eq!(cache.len(), 2, "1 (in flight) and 3; 2 was idle and evicted by 3");
        // A third caller of 1 joins the same flight instead of starting a second fetch.
        let late = {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tokio::spawn(async move {
                cache
                    .get_or_fetch(&1, || async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        Ok((999, later))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.send(()).unwrap();
        for w in waiters {
            assert_eq!(w.await.unwrap(), Ok(100));
        }
        assert_eq!(late.await.unwrap(), Ok(100));
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "one fetch for key 1, whatever was evicted meanwhile");
        // Once idle, the bound applies again: the next new key brings the map back to capacity.
        assert_eq!(get(&cache, 4, &other).await, 40);
        assert_eq!(cache.len(), 1);
    }
}
