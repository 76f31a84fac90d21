//! The session records `CreateSession` and each `CreateCampaign` chunk leave in the event store,
//! so that a session's report knows every contact (also those never dialled) and when a contact
//! is final.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use super::{EventStore, SessionRecord, TenantId, memory::unix_ms};
use crate::{
    domain::{Purpose, national},
    policy::Verdict,
    upstream::Rejection,
};

/// The names of a started session, as its record keeps them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started<'a> {
    /// The upstream's `autocall_id`.
    pub(crate) session_id: &'a str,
    /// The caller's key for it.
    pub(crate) external_id: &'a str,
    /// The script it reads.
    pub(crate) script_id: &'a str,
    /// The name the caller gave it (may be empty).
    pub(crate) name: &'a str,
    /// What the calls are for, as the caller said.
    pub(crate) purpose: Option<Purpose>,
    /// The calling policy's verdict on it: the start it shows callers, the contacts it refused.
    pub(crate) verdict: &'a Verdict,
}

/// Leaves a session's record in the store for its report. Cheap to clone; `none()` records
/// nothing (harnesses that run the campaign engine alone).
#[derive(Clone)]
pub struct SessionLog(Option<(Arc<dyn EventStore>, TenantId)>);

impl SessionLog {
    /// Records nothing.
    pub fn none() -> Self {
        SessionLog(None)
    }

    pub(crate) fn new(store: Arc<dyn EventStore>, tenant: TenantId) -> Self {
        SessionLog(Some((store, tenant)))
    }

    /// Records a started session, with the caller's `external_id` for it: its contacts as sent,
    /// less those the upstream refused (`refused`), and the count of contacts refused before
    /// dialling by reason (the policy's and the upstream's).
    pub(crate) async fn record(
        &self,
        started: Started<'_>,
        contacts: Vec<String>,
        refused: &[Rejection],
        redials: u32,
    ) {
        let Some((store, tenant)) = &self.0 else { return };
        let record = session_record(started, contacts, refused, redials, unix_ms());
        let session_id = started.session_id;
        if let Err(e) = store.record_session(tenant.clone(), record).await {
            // The session started: the caller gets it; only its report lacks the contact list.
            tracing::warn!(session_id, error = %e, "session not recorded in the event store");
        }
    }
}

/// The record of a started session, created at `now_ms`.
fn session_record(
    started: Started<'_>,
    mut contacts: Vec<String>,
    refused: &[Rejection],
    redials: u32,
    now_ms: u64,
) -> SessionRecord {
    let Started { session_id, external_id, script_id, name, purpose, verdict } = started;
    if !refused.is_empty() {
        let phones: HashSet<String> = refused.iter().map(|r| national(&r.phone)).collect();
        contacts.retain(|c| !phones.contains(&national(c)));
    }
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let reasons = verdict.refused.iter().map(|(_, r)| r.reason()).chain(refused.iter().map(|r| r.reason.as_str()));
    for reason in reasons {
        *by_reason.entry(reason.to_owned()).or_default() += 1;
    }
    SessionRecord {
        session_id: session_id.to_owned(),
        external_id: external_id.to_owned(),
        contacts,
        redials,
        created_at_ms: now_ms,
        script_id: script_id.to_owned(),
        name: name.to_owned(),
        purpose,
        start_ms: verdict.shown_start().and_then(|t| u64::try_from(t.as_millisecond()).ok()),
        refused: by_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Refusal;

    fn verdict(start: jiff::Timestamp, moved: bool, given: bool, refused: Vec<(usize, Refusal)>) -> Verdict {
        Verdict { admitted: vec![0], refused, start, moved, given, end: start, reserved: None }
    }

    fn started<'a>(verdict: &'a Verdict, purpose: Option<Purpose>) -> Started<'a> {
        Started { session_id: "s1", external_id: "camp-0", script_id: "sc", name: "", purpose, verdict }
    }

    #[test]
    fn the_record_counts_refusals_by_reason_and_keeps_purpose_and_the_chosen_start() {
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let v = verdict(
            at,
            true,
            false,
            vec![(1, Refusal::DoNotCall), (2, Refusal::FrequencyCap(None)), (3, Refusal::DoNotCall)],
        );
        let upstream = [
            Rejection { phone: "+84912345671".into(), reason: "invalid_phone".into() },
            Rejection { phone: "".into(), reason: "rejected".into() },
        ];
        let contacts = vec!["0912345670".to_owned(), "0912345671".to_owned()];
        let r = session_record(started(&v, Some(Purpose::Advertising)), contacts, &upstream, 1, 7);
        assert_eq!(r.contacts, ["0912345670"], "the upstream's refusal is not dialled");
        assert_eq!(r.purpose, Some(Purpose::Advertising));
        assert_eq!(r.start_ms, Some(1_800_000_000_000));
        let refused: Vec<(&str, u64)> = r.refused.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(refused, [("DO_NOT_CALL", 2), ("FREQUENCY_CAP", 1), ("invalid_phone", 1), ("rejected", 1)]);
        assert_eq!((r.created_at_ms, r.redials, r.external_id.as_str()), (7, 1, "camp-0"));
    }

    #[test]
    fn a_session_that_starts_at_once_has_no_start_and_the_callers_start_is_kept() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let at_once = verdict(now, false, false, Vec::new());
        let r = session_record(started(&at_once, None), vec!["0912345670".into()], &[], 0, 1);
        assert_eq!((r.purpose, r.start_ms, r.refused.len()), (None, None, 0));
        let given = verdict(now, false, true, Vec::new());
        let r = session_record(started(&given, Some(Purpose::Service)), vec!["0912345670".into()], &[], 0, 1);
        assert_eq!((r.purpose, r.start_ms), (Some(Purpose::Service), Some(1_800_000_000_000)));
    }
}
