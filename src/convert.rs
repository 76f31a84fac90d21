//! Conversions between the three shapes of the same facts, in one place: the protobuf messages
//! callers see (`pb`), the validated requests (`domain`), and the upstream's payloads
//! (`upstream`). Requests go pb -> domain in `domain` itself (validation is the conversion);
//! everything else is here.

use crate::{
    domain::{NewSession, Purpose, ScriptVariables, ValidContact},
    events::{CallOutcome, CallState, EventSource, Fact, SessionRecord, StoredEvent, report::Report},
    pb,
    policy::Refusal,
    upstream::{ContactInfo, ExecuteBody, ExecuteOutcome, Script},
};

/// A validated session -> the `execute_by_phone` body, borrowing every string from it; `key` is
/// the session's `ext_session_id`, the one given or generated for it.
pub fn execute_body<'a>(session: &'a NewSession, key: &'a str) -> ExecuteBody<'a> {
    ExecuteBody {
        bot_script_id: &session.script_id,
        contact_info: session.contacts.iter().map(contact_info).collect(),
        name: session.name.as_deref(),
        cid: Some(session.caller_id.as_str()).filter(|c| !c.is_empty()),
        voice: session.voice.as_ref().map(|v| v.as_upstream()),
        speed: session.speed,
        num_retry: session.retry_count,
        num_per_call: session.calls_per_round,
        distance_per_call: session.round_interval_secs,
        distance_retry: session.retry_interval_secs,
        send_time: session.send_time_unix_ms,
        ext_session_id: key,
        auto_pause: session.auto_pause,
    }
}

/// One validated contact -> its `contact_info` entry.
fn contact_info(c: &ValidContact) -> ContactInfo<'_> {
    ContactInfo {
        phone: &c.phone,
        email: c.email.as_deref(),
        ext_contact_code: c.external_contact_code.as_deref(),
        mapping_variables: &c.variables,
    }
}

/// A started upstream session as the caller sees it (CreateSession, and each campaign chunk).
pub fn session_to_pb(outcome: ExecuteOutcome, script_id: &str, key: String) -> pb::Session {
    let script_id = if outcome.bot_script_id.is_empty() { script_id.to_owned() } else { outcome.bot_script_id };
    pb::Session {
        id: outcome.autocall_id,
        script_id,
        external_session_id: key,
        rejected_contacts: outcome
            .rejections
            .into_iter()
            .map(|r| pb::ContactRejection { phone: r.phone, reason: r.reason, callable_after: None })
            .collect(),
        start_time: None,
    }
}

/// A contact the calling policy did not send.
pub fn policy_rejection(phone: String, refusal: Refusal) -> pb::ContactRejection {
    let callable_after = match refusal {
        Refusal::FrequencyCap(after) => after.map(timestamp_to_pb),
        Refusal::DoNotCall => None,
    };
    pb::ContactRejection { phone, reason: refusal.reason().to_owned(), callable_after }
}

/// An instant as a protobuf timestamp.
pub fn timestamp_to_pb(t: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() }
}

/// A campaign chunk the upstream already had: its session id is unknown (the duplicate answer
/// carries only an error code), the key and script are the chunk's.
pub fn resumed_session_to_pb(script_id: &str, key: String) -> pb::Session {
    pb::Session {
        id: String::new(),
        script_id: script_id.to_owned(),
        external_session_id: key,
        rejected_contacts: Vec::new(),
        start_time: None,
    }
}

/// Upstream script -> proto script.
pub fn script_to_pb(s: &Script) -> pb::Script {
    pb::Script {
        id: s.id.clone(),
        name: s.name.clone(),
        variables: s
            .variables
            .iter()
            .map(|v| pb::ScriptVariable {
                field_code: v.field_code.clone(),
                field_name: v.field_name.clone(),
                field_value: v.field_value.clone(),
                field_type: v.field_type.clone(),
                r#type: v.kind.clone(),
                is_dynamic_attribute: v.is_dynamic_attribute,
            })
            .collect(),
    }
}

/// Upstream script -> proto script, by move (no copy of the strings).
pub fn script_into_pb(s: Script) -> pb::Script {
    pb::Script {
        id: s.id,
        name: s.name,
        variables: s
            .variables
            .into_iter()
            .map(|v| pb::ScriptVariable {
                field_code: v.field_code,
                field_name: v.field_name,
                field_value: v.field_value,
                field_type: v.field_type,
                r#type: v.kind,
                is_dynamic_attribute: v.is_dynamic_attribute,
            })
            .collect(),
    }
}

/// Upstream script -> the variable rules `check_variables` applies.
pub fn script_variables(s: &Script) -> ScriptVariables {
    ScriptVariables::new(s.variables.iter().map(|v| (v.field_code.as_str(), v.is_dynamic_attribute)))
}

fn timestamp_ms(ms: u64) -> prost_types::Timestamp {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    prost_types::Timestamp { seconds: secs, nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0) }
}

fn seconds(s: u32) -> prost_types::Duration {
    prost_types::Duration { seconds: i64::from(s), nanos: 0 }
}

fn state_to_pb(state: CallState) -> pb::CallState {
    match state {
        CallState::Ringing => pb::CallState::Ringing,
        CallState::Answered => pb::CallState::Answered,
        CallState::Ended => pb::CallState::Ended,
    }
}

fn outcome_to_pb(outcome: CallOutcome) -> pb::CallOutcome {
    match outcome {
        CallOutcome::Unspecified => pb::CallOutcome::Unspecified,
        CallOutcome::Answered => pb::CallOutcome::Answered,
        CallOutcome::NoAnswer => pb::CallOutcome::NoAnswer,
        CallOutcome::Busy => pb::CallOutcome::Busy,
        CallOutcome::Rejected => pb::CallOutcome::Rejected,
        CallOutcome::Failed => pb::CallOutcome::Failed,
        CallOutcome::Unknown => pb::CallOutcome::Unknown,
    }
}

fn source_to_pb(source: EventSource) -> pb::CallEventSource {
    match source {
        EventSource::Unspecified => pb::CallEventSource::Unspecified,
        EventSource::Webhook => pb::CallEventSource::Webhook,
        EventSource::History => pb::CallEventSource::History,
        EventSource::Facade => pb::CallEventSource::Facade,
    }
}

/// A stored event as watchers get it. Durations only on the end-of-call record (the live
/// states carry none).
pub fn event_to_pb(stored: &StoredEvent) -> pb::CallEvent {
    let e = &stored.event;
    let record = e.fact == Fact::Record;
    pb::CallEvent {
        id: e.id(),
        cursor: stored.cursor.encode(),
        session_id: e.session_id.to_string(),
        call_id: e.call_id.to_string(),
        phone: e.phone.to_string(),
        state: state_to_pb(e.state()) as i32,
        outcome: outcome_to_pb(e.outcome) as i32,
        occurred_at: Some(timestamp_ms(e.occurred_at_ms)),
        ring_duration: record.then(|| seconds(e.ring_s)),
        talk_duration: record.then(|| seconds(e.talk_s)),
        hangup_cause: e.hangup_cause.to_string(),
        disposition: e.disposition.to_string(),
        has_recording: e.has_recording,
        attempt: i32::try_from(e.attempt).unwrap_or(i32::MAX),
        source: source_to_pb(e.source) as i32,
        contact_phone: e.contact_phone.to_string(),
    }
}

/// A session's report as GetSessionReport answers it.
pub fn report_to_pb(session_id: String, r: Report) -> pb::GetSessionReportResponse {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::GetSessionReportResponse {
        session_id,
        contacts_total: n(r.contacts_total),
        answered: n(r.answered),
        no_answer: n(r.no_answer),
        busy: n(r.busy),
        rejected: n(r.rejected),
        failed: n(r.failed),
        in_progress: n(r.in_progress),
        finished: r.finished,
        unknown: n(r.unknown),
        reconciled: n(r.reconciled),
        contacts: r
            .contacts
            .into_iter()
            .map(|c| pb::ContactReport {
                phone: c.phone,
                state: c.state.map_or(pb::CallState::Unspecified, state_to_pb) as i32,
                outcome: outcome_to_pb(c.outcome) as i32,
                attempts: i32::try_from(c.attempts).unwrap_or(i32::MAX),
                talk_duration: (c.outcome == CallOutcome::Answered).then(|| seconds(c.talk_s)),
                last_event_at: c.last_event_ms.map(timestamp_ms),
                r#final: c.is_final,
                source: c.source.map_or(pb::CallEventSource::Unspecified, source_to_pb) as i32,
            })
            .collect(),
    }
}

/// A purpose as the proto says it (`None`: not said).
pub fn purpose_to_pb(purpose: Option<Purpose>) -> pb::CallPurpose {
    match purpose {
        None => pb::CallPurpose::Unspecified,
        Some(Purpose::Advertising) => pb::CallPurpose::Advertising,
        Some(Purpose::Service) => pb::CallPurpose::Service,
    }
}

/// One session of ListSessions: its record and its report's counts. `Session.rejected_contacts`
/// (the phones) is not recorded: it stays empty; `refused_contacts` counts them by reason.
pub fn summary_to_pb(record: &SessionRecord, r: &Report) -> pb::SessionSummary {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::SessionSummary {
        session: Some(pb::Session {
            id: record.session_id.clone(),
            script_id: record.script_id.clone(),
            external_session_id: record.external_id.clone(),
            rejected_contacts: Vec::new(),
            start_time: record.start_ms.map(timestamp_ms),
        }),
        script_id: record.script_id.clone(),
        name: record.name.clone(),
        created_at: Some(timestamp_ms(record.created_at_ms)),
        contacts_total: n(r.contacts_total),
        answered: n(r.answered),
        no_answer: n(r.no_answer),
        busy: n(r.busy),
        rejected: n(r.rejected),
        failed: n(r.failed),
        in_progress: n(r.in_progress),
        finished: r.finished,
        unknown: n(r.unknown),
        reconciled: n(r.reconciled),
        purpose: purpose_to_pb(record.purpose) as i32,
        refused_contacts: record.refused.iter().map(|(reason, count)| (reason.clone(), n(*count))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_carries_the_records_purpose_start_and_refusals() {
        let record = SessionRecord {
            session_id: "s1".into(),
            external_id: "camp-3".into(),
            script_id: "sc".into(),
            name: "nhắc lịch".into(),
            contacts: vec!["0912345670".into()],
            created_at_ms: 1_700_000_000_000,
            purpose: Some(Purpose::Service),
            start_ms: Some(1_700_000_360_250),
            refused: [("DO_NOT_CALL".to_owned(), 2), ("FREQUENCY_CAP".to_owned(), 1)].into(),
            ..SessionRecord::default()
        };
        let report = Report { contacts_total: 1, answered: 1, finished: true, ..Report::default() };
        let s = summary_to_pb(&record, &report);
        assert_eq!(s.purpose(), pb::CallPurpose::Service);
        let session = s.session.as_ref().unwrap();
        assert_eq!(session.start_time, Some(prost_types::Timestamp { seconds: 1_700_000_360, nanos: 250_000_000 }));
        assert_eq!((session.external_session_id.as_str(), s.name.as_str()), ("camp-3", "nhắc lịch"));
        let refused: Vec<(&str, i64)> = s.refused_contacts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(refused, [("DO_NOT_CALL", 2), ("FREQUENCY_CAP", 1)]);
        assert_eq!((s.contacts_total, s.answered, s.finished), (1, 1, true));
        // A record of an earlier version: not said, at once, nothing refused.
        let old = summary_to_pb(&SessionRecord { session_id: "s0".into(), ..SessionRecord::default() }, &report);
        assert_eq!(old.purpose(), pb::CallPurpose::Unspecified);
        assert_eq!((old.session.unwrap().start_time, old.refused_contacts.len()), (None, 0));
    }
}
