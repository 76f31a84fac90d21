//! The counts behind the frequency cap, and the numbers added by `AddDoNotCall`: one trait, three
//! homes (this file's in-process one; `fjall.rs` on the embedded store for one replica across
//! restarts; `jetstream.rs` on a key-value bucket with compare-and-set for many replicas).
//!
//! A number's count is a short list of reservations, each `(when the dialling starts, planned
//! calls, holder)`; the holder is the session key (`external_session_id`), so a retry of the same
//! session (or a re-run campaign chunk) finds its own reservation instead of counting twice, and
//! a refusal releases exactly what that session reserved. The admission rule itself is
//! [`admit`], shared by every home: only how the list is read and written differs.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use futures::future::BoxFuture;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::file::Cap;
use crate::domain::Purpose;

/// One reservation of calls to one number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// When the session's dialling starts, Unix ms.
    pub at_ms: i64,
    /// Planned calls (1 + retry_count).
    pub calls: u32,
    /// The session key that holds it.
    pub holder: String,
}

/// What a cap check asks, for every number of one session.
#[derive(Debug, Clone, Copy)]
pub struct CapCheck<'a> {
    /// Tenant name.
    pub tenant: &'a str,
    /// The purpose the cap belongs to.
    pub purpose: Purpose,
    /// The numbers' keys (`dnc::key`).
    pub numbers: &'a [u64],
    /// When the dialling starts.
    pub at: Timestamp,
    /// "Now", for pruning reservations that can no longer matter.
    pub now: Timestamp,
    /// Calls planned per number.
    pub planned: u32,
    /// The cap.
    pub cap: Cap,
    /// The session key.
    pub holder: &'a str,
}

/// The answer for one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the cap (and reserved, when reserving).
    Admitted,
    /// Over it; callable again after this (`None`: the planned calls alone exceed the cap).
    Refused(Option<Timestamp>),
}

/// The store failed: the call fails `UNAVAILABLE` rather than skip the policy.
#[derive(Debug, thiserror::Error)]
#[error("the calling-policy store is unavailable: {0}")]
pub struct CountsError(pub String);

/// Where counts and added do-not-call numbers are kept.
pub trait Counts: Send + Sync {
    /// Checks every number against the cap, reserving those admitted when `reserve`.
    fn check<'a>(&'a self, c: CapCheck<'a>, reserve: bool) -> BoxFuture<'a, Result<Vec<Admission>, CountsError>>;
    /// Drops `holder`'s reservations of these numbers (the upstream refused them).
    fn release<'a>(
        &'a self,
        tenant: &'a str,
        purpose: Purpose,
        numbers: &'a [u64],
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), CountsError>>;
    /// Adds numbers to the tenant's list; how many were new.
    fn add_dnc<'a>(&'a self, tenant: &'a str, numbers: &'a [u64]) -> BoxFuture<'a, Result<u64, CountsError>>;
    /// Removes numbers from the tenant's list; how many were on it.
    fn remove_dnc<'a>(&'a self, tenant: &'a str, numbers: &'a [u64]) -> BoxFuture<'a, Result<u64, CountsError>>;
    /// Which of `numbers` were added to the tenant's list, in order (from memory: every home mirrors
    /// its list); empty when the tenant has added none (the usual case, answered with one look-up).
    fn dnc_added(&self, tenant: &str, numbers: &[Option<u64>]) -> Vec<bool>;
    /// Whether the tenant has added any number (its list is not empty).
    fn dnc_any(&self, tenant: &str) -> bool {
        !self.dnc_added(tenant, &[None]).is_empty()
    }
}

/// The admission rule on one number's reservations: prunes those that can no longer matter,
/// honours the holder's own reservation, and admits when the calls within `cap.per` of `at`
/// (either side: a scheduled session counts against those before and after it) plus the planned
/// ones stay within `cap.max`. Returns the admission and whether `list` changed.
pub fn admit(list: &mut Vec<Reservation>, c: &CapCheck<'_>, reserve: bool) -> (Admission, bool) {
    let per_ms = c.cap.per.as_millis() as i64;
    let before = list.len();
    let horizon = c.now.as_millisecond().min(c.at.as_millisecond()) - per_ms;
    list.retain(|r| r.at_ms > horizon);
    let mut changed = list.len() != before;
    if list.iter().any(|r| r.holder == c.holder) {
        return (Admission::Admitted, changed);
    }
    let at = c.at.as_millisecond();
    let load = |t: i64| list.iter().filter(|r| (r.at_ms - t).abs() < per_ms).map(|r| u64::from(r.calls)).sum::<u64>();
    let room = |t: i64| load(t) + u64::from(c.planned) <= u64::from(c.cap.max);
    if c.planned > c.cap.max {
        return (Admission::Refused(None), changed);
    }
    if room(at) {
        if reserve {
            list.push(Reservation { at_ms: at, calls: c.planned, holder: c.holder.to_owned() });
            changed = true;
        }
        return (Admission::Admitted, changed);
    }
    let mut candidates: Vec<i64> = list.iter().map(|r| r.at_ms + per_ms).filter(|t| *t > at).collect();
    candidates.sort_unstable();
    let after = candidates.into_iter().find(|t| room(*t)).and_then(|t| Timestamp::from_millisecond(t).ok());
    (Admission::Refused(after), changed)
}

/// Releases `holder`'s reservation; whether `list` changed.
pub fn release_from(list: &mut Vec<Reservation>, holder: &str) -> bool {
    let before = list.len();
    list.retain(|r| r.holder != holder);
    list.len() != before
}

/// Counts in this process only (`--events-store memory`, and tests): lost at exit.
#[derive(Debug, Default)]
pub struct MemoryCounts {
    counts: Mutex<HashMap<(String, Purpose, u64), Vec<Reservation>>>,
    /// Read by every CreateSession (a read lock), written by the do-not-call RPCs.
    dnc: DncMirror,
}

impl Counts for MemoryCounts {
    fn check<'a>(&'a self, c: CapCheck<'a>, reserve: bool) -> BoxFuture<'a, Result<Vec<Admission>, CountsError>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let out = c
            .numbers
            .iter()
            .map(|n| {
                let key = (c.tenant.to_owned(), c.purpose, *n);
                let list = counts.entry(key.clone()).or_default();
                let (admission, _) = admit(list, &c, reserve);
                if list.is_empty() {
                    counts.remove(&key);
                }
                admission
            })
            .collect();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn release<'a>(
        &'a self,
        tenant: &'a str,
        purpose: Purpose,
        numbers: &'a [u64],
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), CountsError>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for n in numbers {
            if let Some(list) = counts.get_mut(&(tenant.to_owned(), purpose, *n)) {
                release_from(list, holder);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn add_dnc<'a>(&'a self, tenant: &'a str, numbers: &'a [u64]) -> BoxFuture<'a, Result<u64, CountsError>> {
        let added = numbers.iter().filter(|n| self.dnc.set(tenant, **n, true)).count() as u64;
        Box::pin(std::future::ready(Ok(added)))
    }

    fn remove_dnc<'a>(&'a self, tenant: &'a str, numbers: &'a [u64]) -> BoxFuture<'a, Result<u64, CountsError>> {
        let removed = numbers.iter().filter(|n| self.dnc.set(tenant, **n, false)).count() as u64;
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn dnc_added(&self, tenant: &str, numbers: &[Option<u64>]) -> Vec<bool> {
        self.dnc.listed(tenant, numbers)
    }
}

/// A do-not-call mirror the durable homes keep in memory, so a look-up never waits on a store.
#[derive(Debug, Default)]
pub struct DncMirror(std::sync::RwLock<HashMap<String, HashSet<u64>>>);

impl DncMirror {
    /// Sets or clears one number.
    pub fn set(&self, tenant: &str, number: u64, on: bool) -> bool {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        match on {
            true => map.entry(tenant.to_owned()).or_default().insert(number),
            false => map.get_mut(tenant).is_some_and(|s| s.remove(&number)),
        }
    }

    /// Which of `numbers` are on the tenant's list, in order; empty when its list is: one lock
    /// and one look-up of the tenant for a whole request.
    pub fn listed(&self, tenant: &str, numbers: &[Option<u64>]) -> Vec<bool> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        match map.get(tenant) {
            Some(set) if !set.is_empty() => numbers.iter().map(|n| n.is_some_and(|n| set.contains(&n))).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;

    fn check<'a>(numbers: &'a [u64], at: &str, holder: &'a str, planned: u32) -> CapCheck<'a> {
        let at: Timestamp = at.parse().unwrap();
        CapCheck {
            tenant: "t",
            purpose: Purpose::Advertising,
            numbers,
            at,
            now: at,
            planned,
            cap: Cap { max: 1, per: SignedDuration::from_hours(24) },
            holder,
        }
    }

    #[tokio::test]
    async fn one_per_day_then_callable_after_and_release() {
        let counts = MemoryCounts::default();
        let n = [7];
        let first = counts.check(check(&n, "2027-01-04T01:00:00Z", "s1", 1), true).await.unwrap();
        assert_eq!(first, [Admission::Admitted]);
        let again = counts.check(check(&n, "2027-01-04T01:00:00Z", "s1", 1), true).await.unwrap();
        assert_eq!(again, [Admission::Admitted], "the same session's retry is not a second call");
        let second = counts.check(check(&n, "2027-01-04T09:00:00Z", "s2", 1), true).await.unwrap();
        assert_eq!(second, [Admission::Refused(Some("2027-01-05T01:00:00Z".parse().unwrap()))]);
        let next_day = counts.check(check(&n, "2027-01-05T01:00:00Z", "s2", 1), false).await.unwrap();
        assert_eq!(next_day, [Admission::Admitted], "24 h later");
        let too_many = counts.check(check(&n, "2027-01-09T01:00:00Z", "s3", 2), false).await.unwrap();
        assert_eq!(too_many, [Admission::Refused(None)], "two planned calls never fit a cap of one");
        counts.release("t", Purpose::Advertising, &n, "s1").await.unwrap();
        let released = counts.check(check(&n, "2027-01-04T09:00:00Z", "s2", 1), false).await.unwrap();
        assert_eq!(released, [Admission::Admitted]);
    }

    #[test]
    fn a_scheduled_session_counts_against_earlier_ones_too() {
        let mut list = vec![Reservation { at_ms: 2 * 86_400_000, calls: 1, holder: "later".into() }];
        let n = [1];
        let mut c = check(&n, "1970-01-02T12:00:00Z", "now", 1);
        c.now = "1970-01-01T00:00:00Z".parse().unwrap();
        let (admission, _) = admit(&mut list, &c, false);
        assert_eq!(admission, Admission::Refused(Some("1970-01-04T00:00:00Z".parse().unwrap())));
    }
}
