//! The calling policy: calling hours, frequency caps and do-not-call lists, enforced before
//! anything is sent upstream (API.md §10 is the contract; docs/policy.md the operator's view).
//!
//! Pure rules over a clock and counts: [`Policy::decide`] takes one session (its tenant, purpose,
//! numbers, pacing and wished start) and answers which contacts go, when dialling starts, or why
//! nothing can go, in the contract's order: purpose, do-not-call, frequency cap, calling hours.
//! The clock is injected ([`Clock`]), so tests run at 07:59 or 16:59 whatever the wall says.
//!
//! - `file.rs`: the policy file and the `vn-decree-91` preset;
//! - `hours.rs`: windows of local time, next opening, earliest fit;
//! - `dnc.rs`: do-not-call lists as sorted integers;
//! - `counts.rs`: the [`Counts`] trait, the admission rule, the in-process home;
//! - `fjall.rs`: counts and added numbers on the embedded store (one replica, survives restarts);
//! - `jetstream.rs`: the same on JetStream key-value buckets (many replicas, compare-and-set).

pub mod counts;
pub mod dnc;
pub mod file;
pub mod fjall;
pub mod hours;
pub mod jetstream;
pub mod session;

use std::{sync::Arc, time::Instant};

use jiff::{SignedDuration, Timestamp};

pub use counts::{Admission, CapCheck, Counts, CountsError, MemoryCounts};
pub use file::PolicySet;

use crate::{domain::Purpose, reload::Live};

/// "Now", injectable.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that starts at a given instant and runs at the speed of the real one (tests, and the
/// hidden `--policy-clock-start`): a test places "now" at 07:59 local and still sees time pass.
#[derive(Debug, Clone, Copy)]
pub struct StartedClock {
    start: Timestamp,
    origin: Instant,
}

impl StartedClock {
    /// A clock reading `start` now.
    pub fn new(start: Timestamp) -> Self {
        StartedClock { start, origin: Instant::now() }
    }
}

impl Clock for StartedClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.origin.elapsed()).unwrap_or(SignedDuration::MAX);
        self.start.checked_add(elapsed).unwrap_or(self.start)
    }
}

/// An instant as the standard library's time (for the validation's `now`).
pub fn system_time(t: Timestamp) -> std::time::SystemTime {
    let ms = t.as_millisecond();
    let d = std::time::Duration::from_millis(ms.unsigned_abs());
    match ms >= 0 {
        true => std::time::UNIX_EPOCH + d,
        false => std::time::UNIX_EPOCH - d,
    }
}

/// How a session dials, for its projected length (the proto's defaults where unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// `calls_per_round`, default 15.
    pub calls_per_round: u32,
    /// `round_interval`, default 30 s.
    pub round_interval_secs: u64,
    /// `retry_count`, default 0.
    pub retry_count: u32,
    /// `retry_interval`, default 0.
    pub retry_interval_secs: u64,
}

impl Pacing {
    /// The upstream's defaults where unset.
    pub fn new(calls_per_round: Option<i32>, round: Option<u64>, retry_count: Option<i32>, retry: Option<u64>) -> Self {
        Pacing {
            calls_per_round: calls_per_round.and_then(|c| u32::try_from(c).ok()).filter(|c| *c > 0).unwrap_or(15),
            round_interval_secs: round.unwrap_or(30),
            retry_count: retry_count.and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
            retry_interval_secs: retry.unwrap_or(0),
        }
    }

    /// Calls planned per contact: the first and every redial.
    pub fn planned_calls(&self) -> u32 {
        1 + self.retry_count
    }

    /// How long dialling `contacts` lasts: a round of `calls_per_round` calls every
    /// `round_interval` (the last round given its interval to ring), one pass per planned call,
    /// `retry_interval` between passes.
    pub fn length(&self, contacts: usize) -> SignedDuration {
        let rounds = (contacts as u64).div_ceil(u64::from(self.calls_per_round));
        let passes = u64::from(self.planned_calls());
        let secs = passes * rounds * self.round_interval_secs + u64::from(self.retry_count) * self.retry_interval_secs;
        SignedDuration::from_secs(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// The most contacts whose dialling lasts at most `room`.
    pub fn max_contacts(&self, room: SignedDuration) -> usize {
        let secs = u64::try_from(room.as_secs()).unwrap_or(0);
        let fixed = u64::from(self.retry_count) * self.retry_interval_secs;
        let Some(left) = secs.checked_sub(fixed) else { return 0 };
        let per_round = u64::from(self.planned_calls()) * self.round_interval_secs;
        if per_round == 0 {
            return usize::MAX;
        }
        usize::try_from(left / per_round * u64::from(self.calls_per_round)).unwrap_or(usize::MAX)
    }
}

/// One session, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Tenant name.
    pub tenant: &'a str,
    /// What the calls are for.
    pub purpose: Option<Purpose>,
    /// Each contact's number key (`dnc::key`), in request order.
    pub numbers: &'a [Option<u64>],
    /// How it dials.
    pub pacing: Pacing,
    /// The caller's start; `None` = now.
    pub start: Option<Timestamp>,
    /// Start at the earliest fit rather than fail when outside the hours.
    pub defer: bool,
    /// A campaign chunk scheduled within the hours: the earliest fit at or after this.
    pub schedule_after: Option<Timestamp>,
    /// The session key (the holder of its reservations).
    pub holder: &'a str,
}

/// Why one contact is not called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// On a do-not-call list.
    DoNotCall,
    /// Over the frequency cap; callable again after this (`None`: never with this retry count).
    FrequencyCap(Option<Timestamp>),
}

impl Refusal {
    /// The reason callers see (`ContactRejection.reason`) and the metric's label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::DoNotCall => "DO_NOT_CALL",
            Refusal::FrequencyCap(_) => "FREQUENCY_CAP",
        }
    }
}

/// What the policy says a session may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Indices of the contacts that go.
    pub admitted: Vec<usize>,
    /// Indices of the contacts that do not, and why.
    pub refused: Vec<(usize, Refusal)>,
    /// When dialling starts: the caller's start, now, or the one chosen.
    pub start: Timestamp,
    /// Whether the facade moved the start (deferral or campaign scheduling).
    pub moved: bool,
    /// Whether the caller gave a start.
    pub given: bool,
    /// When dialling is projected to end.
    pub end: Timestamp,
    /// What was reserved, to release on an upstream refusal.
    pub reserved: Option<(Purpose, Vec<u64>)>,
}

impl Verdict {
    /// The start callers are told (`Session.start_time`): the caller's or the chosen one; `None`
    /// when the session starts now as asked.
    pub fn shown_start(&self) -> Option<Timestamp> {
        (self.moved || self.given).then_some(self.start)
    }
}

/// Why a session cannot go at all.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The tenant's policy requires a purpose and none was given.
    #[error("the calling policy requires a purpose")]
    PurposeRequired,
    /// The start is outside the calling hours and deferral was not asked.
    #[error("the start is outside the calling hours")]
    OutsideHours {
        /// The next opening, when there is one within a year.
        next_opening: Option<Timestamp>,
    },
    /// The dialling does not fit in its window.
    #[error("the session's dialling does not fit in the calling window")]
    WindowTooShort {
        /// How many contacts would fit.
        max_contacts: usize,
    },
    /// Every contact was refused.
    #[error("no contact may be called")]
    NoCallableContacts {
        /// Why each was refused.
        refused: Vec<(usize, Refusal)>,
    },
    /// The counts could not be read or written.
    #[error(transparent)]
    Store(#[from] CountsError),
}

/// The policy of every tenant, the counts, and the clock.
#[derive(Clone)]
pub struct Policy {
    /// The file's rules (`None`: no `--calling-policy`; only added do-not-call numbers apply).
    set: Option<Live<PolicySet>>,
    counts: Arc<dyn Counts>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Policy(file: {})", self.set.is_some())
    }
}

impl Policy {
    /// The policy of `set` over `counts` and `clock`.
    pub(crate) fn new(set: Option<Live<PolicySet>>, counts: Arc<dyn Counts>, clock: Arc<dyn Clock>) -> Self {
        Policy { set, counts, clock }
    }

    /// No policy file, counts in memory, the wall clock: only added do-not-call numbers apply.
    pub fn unrestricted() -> Self {
        Policy::new(None, Arc::new(MemoryCounts::default()), Arc::new(SystemClock))
    }

    /// "Now" by the policy's clock (the service checks `start_time` against it too).
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The counts (the do-not-call RPCs write there).
    pub fn counts(&self) -> &Arc<dyn Counts> {
        &self.counts
    }

    /// Whether the numbers of a tenant's request matter to [`Policy::decide`]: the tenant has rules
    /// in the file (a do-not-call list, a cap) or added numbers. When not, each contact's key may
    /// be `None` (nothing is listed or counted): no key is computed.
    pub fn numbers_matter(&self, tenant: &str) -> bool {
        self.set.as_ref().is_some_and(|s| s.get().tenants.contains_key(tenant)) || self.counts.dnc_any(tenant)
    }

    /// Decides `ask`; reserves the admitted contacts' calls when `reserve` (not for
    /// `validate_only`). A refusal after reserving releases what it reserved.
    pub async fn decide(&self, ask: Ask<'_>, reserve: bool) -> Result<Verdict, PolicyError> {
        let now = self.clock.now();
        let set = self.set.as_ref().map(|s| s.get());
        let tenant = set.as_ref().and_then(|s| s.tenants.get(ask.tenant));
        if tenant.is_some_and(|t| t.require_purpose) && ask.purpose.is_none() {
            return Err(PolicyError::PurposeRequired);
        }
        let rules = tenant.and_then(|t| ask.purpose.and_then(|p| t.purposes.get(&p)));
        let mut refused = Vec::new();
        let mut remaining = Vec::with_capacity(ask.numbers.len());
        let added = self.counts.dnc_added(ask.tenant, ask.numbers);
        for (i, key) in ask.numbers.iter().enumerate() {
            let listed = key.is_some_and(|k| tenant.is_some_and(|t| t.dnc.contains(k)))
                || added.get(i).copied().unwrap_or(false);
            match listed {
                true => refused.push((i, Refusal::DoNotCall)),
                false => remaining.push(i),
            }
        }
        if remaining.is_empty() {
            return Err(PolicyError::NoCallableContacts { refused });
        }
        // The hours first in time (the cap counts at the start they give), with the contacts left
        // after do-not-call: the cap can only shorten the dialling, never make it not fit.
        let wished = ask.start.unwrap_or(now);
        let base = ask.schedule_after.map_or(wished, |after| after.max(wished));
        let length = ask.pacing.length(remaining.len());
        let start = match rules.and_then(|r| r.hours.as_ref()) {
            None => base,
            Some(hours) => {
                let too_short =
                    || PolicyError::WindowTooShort { max_contacts: ask.pacing.max_contacts(hours.longest_window()) };
                match hours.window_at(base) {
                    _ if ask.schedule_after.is_some() => hours.earliest_fit(base, length).ok_or_else(too_short)?,
                    Some(w) if base.checked_add(length).is_ok_and(|end| end <= w.end) => base,
                    Some(_) if ask.defer => hours.earliest_fit(base, length).ok_or_else(too_short)?,
                    Some(w) => {
                        let room = w.end.duration_since(base);
                        return Err(PolicyError::WindowTooShort { max_contacts: ask.pacing.max_contacts(room) });
                    }
                    None if ask.defer => hours.earliest_fit(base, length).ok_or_else(too_short)?,
                    None => return Err(PolicyError::OutsideHours { next_opening: hours.next_opening(base) }),
                }
            }
        };
        let mut admitted = remaining;
        let mut reserved = None;
        if let (Some(cap), Some(purpose)) = (rules.and_then(|r| r.cap), ask.purpose) {
            let keyed: Vec<(usize, u64)> = admitted.iter().filter_map(|i| ask.numbers[*i].map(|k| (*i, k))).collect();
            let numbers: Vec<u64> = keyed.iter().map(|(_, k)| *k).collect();
            let check = CapCheck {
                tenant: ask.tenant,
                purpose,
                numbers: &numbers,
                at: start,
                now,
                planned: ask.pacing.planned_calls(),
                cap,
                holder: ask.holder,
            };
            let answers = self.counts.check(check, reserve).await?;
            let mut kept = Vec::with_capacity(keyed.len());
            let mut taken = Vec::new();
            for ((i, k), answer) in keyed.into_iter().zip(answers) {
                match answer {
                    Admission::Admitted => {
                        kept.push(i);
                        taken.push(k);
                    }
                    Admission::Refused(after) => refused.push((i, Refusal::FrequencyCap(after))),
                }
            }
            admitted = kept;
            if reserve {
                reserved = Some((purpose, taken));
            }
        }
        refused.sort_by_key(|(i, _)| *i);
        if admitted.is_empty() {
            return Err(PolicyError::NoCallableContacts { refused });
        }
        let moved = start != wished;
        let end = start.checked_add(ask.pacing.length(admitted.len())).unwrap_or(start);
        Ok(Verdict { admitted, refused, start, moved, given: ask.start.is_some(), end, reserved })
    }

    /// Releases a session's reservations of `numbers` (the upstream refused them, or the
    /// whole session). Logged, not failed: the caller's answer is the upstream's refusal.
    pub async fn release(&self, tenant: &str, purpose: Purpose, numbers: &[u64], holder: &str) {
        if numbers.is_empty() {
            return;
        }
        if let Err(e) = self.counts.release(tenant, purpose, numbers, holder).await {
            tracing::warn!(error = %e, "could not release frequency-cap reservations; they expire with their window");
        }
    }
}

#[cfg(test)]
mod tests;
