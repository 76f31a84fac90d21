//! Counts and added do-not-call numbers on the embedded store (fjall), for one replica: they
//! survive a restart. The keyspace is injected (the application owns the data directory); this
//! file opens its own two partitions in it, `policy_counts` and `policy_dnc`.
//!
//! A check reads, decides ([`admit`]) and writes back under one lock, on the blocking pool; the
//! batch is committed and the keyspace persisted (`SyncAll`) before the answer, so an admitted
//! call is on disk before it is sent upstream.

use std::sync::{Arc, Mutex};

use ::fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use futures::future::BoxFuture;

use super::counts::{Admission, CapCheck, Counts, CountsError, DncMirror, Reservation, admit, release_from};
use crate::domain::Purpose;

/// Counts on fjall.
#[derive(Clone)]
pub struct FjallCounts(Arc<Inner>);

struct Inner {
    keyspace: Keyspace,
    counts: PartitionHandle,
    dnc: PartitionHandle,
    /// Read-modify-write of counts is one at a time (one replica owns its data directory).
    write: Mutex<()>,
    mirror: DncMirror,
}

fn store_err(e: impl std::fmt::Display) -> CountsError {
    CountsError(e.to_string())
}

fn count_key(tenant: &str, purpose: Purpose, number: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 20);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(purpose.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

fn dnc_key(tenant: &str, number: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 9);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

impl FjallCounts {
    /// Opens the partitions in `keyspace` and loads the added numbers into memory.
    pub fn open(keyspace: Keyspace) -> Result<Self, CountsError> {
        let counts = keyspace.open_partition("policy_counts", PartitionCreateOptions::default()).map_err(store_err)?;
        let dnc = keyspace.open_partition("policy_dnc", PartitionCreateOptions::default()).map_err(store_err)?;
        let mirror = DncMirror::default();
        for kv in dnc.iter() {
            let (k, _) = kv.map_err(store_err)?;
            if let Some((tenant, number)) = split_dnc_key(&k) {
                mirror.set(tenant, number, true);
            }
        }
        Ok(FjallCounts(Arc::new(Inner { keyspace, counts, dnc, write: Mutex::new(()), mirror })))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, CountsError> + Send + 'static,
    ) -> Result<T, CountsError> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(store_err)?
    }
}

fn split_dnc_key(k: &[u8]) -> Option<(&str, u64)> {
    let (tenant, rest) = k.split_at_checked(k.len().checked_sub(9)?)?;
    let number = u64::from_be_bytes(rest.get(1..)?.try_into().ok()?);
    Some((std::str::from_utf8(tenant).ok()?, number))
}

impl Inner {
    fn list(&self, key: &[u8]) -> Result<Vec<Reservation>, CountsError> {
        match self.counts.get(key).map_err(store_err)? {
            Some(v) => serde_json::from_slice(&v).map_err(store_err),
            None => Ok(Vec::new()),
        }
    }

    fn persist(&self) -> Result<(), CountsError> {
        self.keyspace.persist(PersistMode::SyncAll).map_err(store_err)
    }
}

impl Counts for FjallCounts {
    fn check<'a>(&'a self, c: CapCheck<'a>, reserve: bool) -> BoxFuture<'a, Result<Vec<Admission>, CountsError>> {
        let (tenant, holder, numbers) = (c.tenant.to_owned(), c.holder.to_owned(), c.numbers.to_vec());
        let (purpose, at, now, planned, cap) = (c.purpose, c.at, c.now, c.planned, c.cap);
        Box::pin(self.blocking(move |inner| {
            let _one = inner.write.lock().unwrap_or_else(|p| p.into_inner());
            let c = CapCheck { tenant: &tenant, purpose, numbers: &numbers, at, now, planned, cap, holder: &holder };
            let mut batch = inner.keyspace.batch();
            let mut writes = 0;
            let mut out = Vec::with_capacity(numbers.len());
            for n in &numbers {
                let key = count_key(&tenant, purpose, *n);
                let mut list = inner.list(&key)?;
                let (admission, changed) = admit(&mut list, &c, reserve);
                if changed && reserve {
                    writes += 1;
                    match list.is_empty() {
                        true => batch.remove(&inner.counts, key),
                        false => batch.insert(&inner.counts, key, serde_json::to_vec(&list).map_err(store_err)?),
                    }
                }
                out.push(admission);
            }
            if writes > 0 {
                batch.commit().map_err(store_err)?;
                inner.persist()?;
            }
            Ok(out)
        }))
    }

    fn release<'a>(
        &'a self,
        tenant: &'a str,
        purpose: Purpose,
        numbers: &'a [u64],
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), CountsError>> {
        let (tenant, holder, numbers) = (tenant.to_owned(), holder.to_owned(), numbers.to_vec());
        Box::pin(self.blocking(move |inner| {
            let _one = inner.write.lock().unwrap_or_else(|p| p.into_inner());
            let mut batch = inner.keyspace.batch();
            for n in &numbers {
                let key = count_key(&tenant, purpose, *n);
                let mut list = inner.list(&key)?;
                if release_from(&mut list, &holder) {
                    match list.is_empty() {
                        true => batch.remove(&inner.counts, key),
                        false => batch.insert(&inner.counts, key, serde_json::to_vec(&list).map_err(store_err)?),
                    }
                }
            }
            batch.commit().map_err(store_err)?;
            inner.persist()
        }))
    }

    fn add_dnc<'a>(&'a self, tenant: &'a str, numbers: &'a [u64]) -> BoxFuture<'a, Result<u64, CountsError>> {
        let (tenant, numbers) = (tenant.to_owned(), numbers.to_vec());
        Box::pin(self.blocking(move |inner| {
            let mut batch = inner.keyspace.batch();
            for n in &numbers {
                batch.insert(&inner.dnc, dnc_key(&tenant, *n), []);
            }
            batch.commit().map_err(store_err)?;
            inner.persist()?;
            Ok(numbers.iter().filter(|n| inner.mirror.set(&tenant, **n, true)).count() as u64)
        }))
    }

    fn remove_dnc<'a>(&'a self, tenant: &'a str, numbers: &'a [u64]) -> BoxFuture<'a, Result<u64, CountsError>> {
        let (tenant, numbers) = (tenant.to_owned(), numbers.to_vec());
        Box::pin(self.blocking(move |inner| {
            let mut batch = inner.keyspace.batch();
            for n in &numbers {
                batch.remove(&inner.dnc, dnc_key(&tenant, *n));
            }
            batch.commit().map_err(store_err)?;
            inner.persist()?;
            Ok(numbers.iter().filter(|n| inner.mirror.set(&tenant, **n, false)).count() as u64)
        }))
    }

    fn dnc_added(&self, tenant: &str, numbers: &[Option<u64>]) -> Vec<bool> {
        self.0.mirror.listed(tenant, numbers)
    }
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};

    use super::*;
    use crate::policy::file::Cap;

    fn open(dir: &std::path::Path) -> FjallCounts {
        FjallCounts::open(::fjall::Config::new(dir).open().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn counts_and_added_numbers_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let at: Timestamp = "2027-01-04T01:00:00Z".parse().unwrap();
        let check = |holder: &'static str| CapCheck {
            tenant: "school",
            purpose: Purpose::Advertising,
            numbers: &[42],
            at,
            now: at,
            planned: 1,
            cap: Cap { max: 1, per: SignedDuration::from_hours(24) },
            holder,
        };
        {
            let counts = open(dir.path());
            assert_eq!(counts.check(check("a"), true).await.unwrap(), [Admission::Admitted]);
            assert_eq!(counts.add_dnc("school", &[7, 8]).await.unwrap(), 2);
            assert_eq!(counts.add_dnc("school", &[7]).await.unwrap(), 0);
        }
        let counts = open(dir.path());
        let after = at.checked_add(SignedDuration::from_hours(24)).unwrap();
        assert_eq!(counts.check(check("b"), true).await.unwrap(), [Admission::Refused(Some(after))]);
        assert_eq!(counts.dnc_added("school", &[Some(7), None, Some(8), Some(9)]), [true, false, true, false]);
        assert_eq!(counts.dnc_added("other", &[Some(7)]), [false; 0], "nothing added for other");
        assert_eq!(counts.remove_dnc("school", &[7, 9]).await.unwrap(), 1);
        counts.release("school", Purpose::Advertising, &[42], "a").await.unwrap();
        drop(counts);
        let counts = open(dir.path());
        assert_eq!(counts.dnc_added("school", &[Some(7), Some(8)]), [false, true]);
        assert_eq!(counts.check(check("b"), false).await.unwrap(), [Admission::Admitted], "released for good");
    }
}
