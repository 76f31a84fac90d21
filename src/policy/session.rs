//! A validated session as the policy sees it, and the verdict applied back to it: the numbers,
//! the pacing, the refused contacts taken out, the chosen start put in.

use jiff::Timestamp;

use super::{Pacing, Refusal, Verdict, dnc};
use crate::domain::NewSession;

/// Each contact's number key, in order.
pub fn numbers(session: &NewSession) -> Vec<Option<u64>> {
    session.contacts.iter().map(|c| dnc::key(&c.phone)).collect()
}

/// The session's pacing (the upstream's defaults where unset).
pub fn pacing(session: &NewSession) -> Pacing {
    Pacing::new(session.calls_per_round, session.round_interval_secs, session.retry_count, session.retry_interval_secs)
}

/// The caller's start.
pub fn start(session: &NewSession) -> Option<Timestamp> {
    session.send_time_unix_ms.and_then(|ms| Timestamp::from_millisecond(ms).ok())
}

/// Takes the refused contacts out of `session` (returned with why, phones as given) and puts the
/// chosen start in.
pub fn apply(session: &mut NewSession, verdict: &Verdict) -> Vec<(String, Refusal)> {
    let mut refused = Vec::with_capacity(verdict.refused.len());
    if !verdict.refused.is_empty() {
        let mut why = verdict.refused.iter().peekable();
        let contacts = std::mem::take(&mut session.contacts);
        for (i, contact) in contacts.into_iter().enumerate() {
            match why.next_if(|(j, _)| *j == i) {
                Some((_, refusal)) => refused.push((contact.phone, *refusal)),
                None => session.contacts.push(contact),
            }
        }
    }
    if verdict.moved {
        session.send_time_unix_ms = Some(verdict.start.as_millisecond());
    }
    refused
}
