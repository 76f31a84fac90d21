//! Counts and added do-not-call numbers on a JetStream key-value bucket (`CALLBOT_POLICY`), shared
//! by every replica of one NATS (`--events-nats-url`).
//!
//! A number's reservations are one key, `c.<tenant>.<purpose>.<number key>`, written by
//! compare-and-set: read the entry and its revision, decide ([`admit`]), write back only if the
//! revision is still the one read (`create` when there was none). A replica that loses the race
//! reads again and decides again, so two replicas can never both admit the same number past the
//! cap. An added number is a key `d.<tenant>.<number key>`; every replica follows the bucket
//! (`watch`), so an `AddDoNotCall` on one is refused by all within the watch's delivery time.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    kv::{self, Operation, Store},
};
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _, future::BoxFuture};

use super::counts::{Admission, CapCheck, Counts, CountsError, DncMirror, Reservation, admit, release_from};
use crate::domain::Purpose;

/// The bucket's name.
pub const BUCKET: &str = "CALLBOT_POLICY";
/// Attempts of one compare-and-set before giving up (each loss means another replica wrote).
const CAS_ATTEMPTS: usize = 256;
/// Bound of one key-value exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Numbers of one session checked at once.
const PARALLEL: usize = 32;

/// Counts on JetStream.
#[derive(Clone)]
pub struct JetStreamCounts {
    store: Store,
    mirror: Arc<DncMirror>,
}

fn store_err(e: impl std::fmt::Display) -> CountsError {
    CountsError(e.to_string())
}

fn count_key(tenant: &str, purpose: Purpose, number: u64) -> String {
    format!("c.{tenant}.{}.{number}", purpose.as_str())
}

fn dnc_key(tenant: &str, number: u64) -> String {
    format!("d.{tenant}.{number}")
}

async fn bounded<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Result<T, CountsError> {
    match tokio::time::timeout(EXCHANGE_TIMEOUT, f).await {
        Ok(r) => r.map_err(store_err),
        Err(_) => Err(CountsError("NATS did not answer in time".to_owned())),
    }
}

impl JetStreamCounts {
    /// Opens (or creates) the bucket on `client`'s JetStream, loads the added numbers and
    /// follows them; the follower ends with `stop`.
    pub async fn open(
        client: async_nats::Client,
        replicas: usize,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Self, String> {
        let js = jetstream::new(client);
        let config = kv::Config { bucket: BUCKET.to_owned(), history: 1, num_replicas: replicas, ..Default::default() };
        let store = match js.get_key_value(BUCKET).await {
            Ok(store) => store,
            Err(_) => match js.create_key_value(config).await {
                Ok(store) => store,
                // Another replica created it first.
                Err(_) => js.get_key_value(BUCKET).await.map_err(|e| format!("key-value bucket {BUCKET}: {e}"))?,
            },
        };
        let mirror = Arc::new(DncMirror::default());
        // Watch first, list second: no change can fall between the two.
        let watch = store.watch("d.>").await.map_err(|e| format!("key-value bucket {BUCKET}: {e}"))?;
        let keys: Vec<String> = store
            .keys()
            .await
            .map_err(|e| format!("key-value bucket {BUCKET}: {e}"))?
            .try_collect()
            .await
            .map_err(|e| format!("key-value bucket {BUCKET}: {e}"))?;
        for key in keys {
            if let Some((tenant, number)) = split_dnc_key(&key) {
                mirror.set(tenant, number, true);
            }
        }
        tokio::spawn(follow(store.clone(), watch, mirror.clone(), stop));
        Ok(JetStreamCounts { store, mirror })
    }

    /// One number's compare-and-set loop.
    async fn one(
        &self,
        key: String,
        decide: impl Fn(&mut Vec<Reservation>) -> (Admission, bool) + Send,
    ) -> Result<Admission, CountsError> {
        for _ in 0..CAS_ATTEMPTS {
            let entry = bounded(self.store.entry(key.clone())).await?;
            let (mut list, revision) = match &entry {
                Some(e) if e.operation == Operation::Put => {
                    (serde_json::from_slice::<Vec<Reservation>>(&e.value).map_err(store_err)?, Some(e.revision))
                }
                Some(e) => (Vec::new(), Some(e.revision)),
                None => (Vec::new(), None),
            };
            let (admission, changed) = decide(&mut list);
            if !changed {
                return Ok(admission);
            }
            let value = Bytes::from(serde_json::to_vec(&list).map_err(store_err)?);
            let written = match revision {
                Some(revision) => bounded(self.store.update(&key, value, revision)).await.is_ok(),
                None => bounded(self.store.create(&key, value)).await.is_ok(),
            };
            if written {
                return Ok(admission);
            }
        }
        Err(CountsError("the count of a number kept changing (too many replicas racing)".to_owned()))
    }
}

/// Keeps the mirror of added numbers current. When the watch ends (NATS went away), it is
/// opened again with the last value of every key, deletions included, so nothing missed stays
/// missed.
async fn follow(store: Store, mut watch: kv::Watch, mirror: Arc<DncMirror>, stop: tokio_util::sync::CancellationToken) {
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = watch.next() => next,
        };
        match next {
            Some(Ok(entry)) => {
                if let Some((tenant, number)) = split_dnc_key(&entry.key) {
                    mirror.set(tenant, number, entry.operation == Operation::Put);
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "do-not-call watch: an update could not be read"),
            None => loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                match store.watch_with_history("d.>").await {
                    Ok(w) => {
                        watch = w;
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "do-not-call watch: cannot watch again yet"),
                }
            },
        }
    }
}

fn split_dnc_key(key: &str) -> Option<(&str, u64)> {
    let rest = key.strip_prefix("d.")?;
    let (tenant, number) = rest.rsplit_once('.')?;
    Some((tenant, number.parse().ok()?))
}

impl Counts for JetStreamCounts {
    fn check<'a>(&'a self, c: CapCheck<'a>, reserve: bool) -> BoxFuture<'a, Result<Vec<Admission>, CountsError>> {
        let mut each: Vec<BoxFuture<'a, Result<Admission, CountsError>>> = Vec::with_capacity(c.numbers.len());
        for n in c.numbers {
            let key = count_key(c.tenant, c.purpose, *n);
            each.push(Box::pin(self.one(key, move |list: &mut Vec<Reservation>| {
                let (admission, changed) = admit(list, &c, reserve);
                (admission, changed && reserve)
            })));
        }
        Box::pin(futures::stream::iter(each).buffered(PARALLEL).try_collect())
    }

    fn release<'a>(
        &'a self,
        tenant: &'a str,
        purpose: Purpose,
        numbers: &'a [u64],
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), CountsError>> {
        let mut each: Vec<BoxFuture<'a, Result<Admission, CountsError>>> = Vec::with_capacity(numbers.len());
        for n in numbers {
            let key = count_key(tenant, purpose, *n);
            each.push(Box::pin(
                self.one(key, move |list: &mut Vec<Reservation>| (Admission::Admitted, release_from(list, holder))),
            ));
        }
        Box::pin(async move {
            let _: Vec<Admission> = futures::stream::iter(each).buffered(PARALLEL).try_collect().await?;
            Ok(())
        })
    }

    fn add_dnc<'a>(&'a self, tenant: &'a str, numbers: &'a [u64]) -> BoxFuture<'a, Result<u64, CountsError>> {
        Box::pin(async move {
            for n in numbers {
                bounded(self.store.put(dnc_key(tenant, *n), Bytes::new())).await?;
            }
            Ok(numbers.iter().filter(|n| self.mirror.set(tenant, **n, true)).count() as u64)
        })
    }

    fn remove_dnc<'a>(&'a self, tenant: &'a str, numbers: &'a [u64]) -> BoxFuture<'a, Result<u64, CountsError>> {
        Box::pin(async move {
            for n in numbers {
                bounded(self.store.delete(dnc_key(tenant, *n))).await?;
            }
            Ok(numbers.iter().filter(|n| self.mirror.set(tenant, **n, false)).count() as u64)
        })
    }

    fn dnc_added(&self, tenant: &str, numbers: &[Option<u64>]) -> Vec<bool> {
        self.mirror.listed(tenant, numbers)
    }
}
