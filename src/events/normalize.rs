//! THE normalization table: a webhook delivery (docs/upstream.md §11.2) to a [`CallEvent`].
//!
//! Live states (`state`, case-insensitive):
//!
//! | upstream word | fact (id suffix) | `CallState` |
//! |---|---|---|
//! | `create`, `early`, `ringing`, `progress` | `ringing` (one fact: the first of them wins, the others are repeats) | RINGING |
//! | `answered`, `answer` | `answered` | ANSWERED |
//! | `hangup` | `hangup` | ENDED, outcome UNSPECIFIED |
//! | anything else | none: acknowledged and ignored (counted) | – |
//!
//! The end-of-call record (fact `cdr`) is ENDED with an outcome, decided in this order:
//!
//! 1. talk time (`bill_sec` > 0) or `disposition` `answered` → ANSWERED (a conversation happened,
//!    whatever the hangup cause says about how it ended);
//! 2. else a `hangup_cause` with a specific meaning wins over `disposition` (it is the signalling's
//!    own reason, the disposition a summary: `failed` + `CALL_REJECTED` is REJECTED):
//!    `USER_BUSY` → BUSY; `CALL_REJECTED` → REJECTED; `NO_ANSWER`, `NO_USER_RESPONSE`,
//!    `ORIGINATOR_CANCEL`, `ALLOTTED_TIMEOUT` → NO_ANSWER; `UNALLOCATED_NUMBER`,
//!    `NO_ROUTE_DESTINATION`, `INVALID_NUMBER_FORMAT`, `NORMAL_TEMPORARY_FAILURE`,
//!    `NETWORK_OUT_OF_ORDER`, `DESTINATION_OUT_OF_ORDER`, `RECOVERY_ON_TIMER_EXPIRE`,
//!    `NORMAL_CIRCUIT_CONGESTION`, `SWITCH_CONGESTION`, `SUBSCRIBER_ABSENT`, `MEDIA_TIMEOUT`,
//!    `INCOMPATIBLE_DESTINATION` → FAILED;
//! 3. else `disposition`: `no answer`, `noanswer`, `no_answer`, `cancelled`, `canceled`,
//!    `missed` → NO_ANSWER; `busy` → BUSY; `rejected`, `declined` → REJECTED; `failed`,
//!    `congestion`, `error` → FAILED;
//! 4. else (e.g. `NORMAL_CLEARING` with no talk and an unknown word) → FAILED: the call did not
//!    connect and nothing says it rang out.
//!
//! The contact's number is `to_number` (live, outbound) or `destination_number` (record);
//! `from_number`/`source_number` for an inbound call. Times: a live state's `created_time`
//! (Unix seconds), a record's `last_updated_date` or `created_date` (Unix milliseconds); the
//! receiver's clock when none is given. Ring time: `time_start_to_answer` when answered, else
//! `duration - bill_sec`.

use super::{CallEvent, CallOutcome, EventSource, Fact};
use crate::domain::no_text;
use crate::upstream::{CallRecord, Delivery, LiveState};

/// Why a delivery gives no event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skipped {
    /// A live state word the table does not know (the delivery is acknowledged, not stored).
    UnknownState(String),
}

/// The fact of a live state word.
pub(crate) fn live_fact(state: &str) -> Option<Fact> {
    match state.trim().to_ascii_lowercase().as_str() {
        "create" | "early" | "ringing" | "progress" => Some(Fact::Ringing),
        "answered" | "answer" => Some(Fact::Answered),
        "hangup" => Some(Fact::Hangup),
        _ => None,
    }
}

/// The outcome of an end-of-call record (the table's steps 1–4).
pub(crate) fn record_outcome(disposition: &str, hangup_cause: &str, talk_s: u64) -> CallOutcome {
    let disposition = disposition.trim().to_ascii_lowercase();
    if talk_s > 0 || disposition == "answered" {
        return CallOutcome::Answered;
    }
    let by_cause = match hangup_cause.trim().to_ascii_uppercase().as_str() {
        "USER_BUSY" => Some(CallOutcome::Busy),
        "CALL_REJECTED" => Some(CallOutcome::Rejected),
        "NO_ANSWER" | "NO_USER_RESPONSE" | "ORIGINATOR_CANCEL" | "ALLOTTED_TIMEOUT" => Some(CallOutcome::NoAnswer),
        "UNALLOCATED_NUMBER"
        | "NO_ROUTE_DESTINATION"
        | "INVALID_NUMBER_FORMAT"
        | "NORMAL_TEMPORARY_FAILURE"
        | "NETWORK_OUT_OF_ORDER"
        | "DESTINATION_OUT_OF_ORDER"
        | "RECOVERY_ON_TIMER_EXPIRE"
        | "NORMAL_CIRCUIT_CONGESTION"
        | "SWITCH_CONGESTION"
        | "SUBSCRIBER_ABSENT"
        | "MEDIA_TIMEOUT"
        | "INCOMPATIBLE_DESTINATION" => Some(CallOutcome::Failed),
        _ => None,
    };
    if let Some(outcome) = by_cause {
        return outcome;
    }
    match disposition.as_str() {
        "no answer" | "noanswer" | "no_answer" | "cancelled" | "canceled" | "missed" => CallOutcome::NoAnswer,
        "busy" => CallOutcome::Busy,
        "rejected" | "declined" => CallOutcome::Rejected,
        _ => CallOutcome::Failed,
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn contact_number<'a>(direction: &str, outbound: &'a str, inbound: &'a str) -> &'a str {
    if direction.trim().eq_ignore_ascii_case("inbound") { inbound } else { outbound }
}

/// The event of one delivery, received at `now_ms` (not attributed yet: attempt 0).
pub(crate) fn normalize(delivery: Delivery, now_ms: u64) -> Result<CallEvent, Skipped> {
    match delivery {
        Delivery::Live(live) => normalize_live(live, now_ms),
        Delivery::Record(record) => Ok(normalize_record(record, now_ms, EventSource::Webhook)),
    }
}

/// The event of an item of the call history (`events/reconcile/`): the very event its
/// end-of-call record would have given as a webhook (same id, `<call_id>/cdr`), from the history.
pub(crate) fn history_record(record: CallRecord, now_ms: u64) -> CallEvent {
    normalize_record(record, now_ms, EventSource::History)
}

/// The text of a trimmed field, shared when empty.
fn text(s: &str) -> std::sync::Arc<str> {
    let s = s.trim();
    if s.is_empty() { no_text() } else { s.into() }
}

fn normalize_live(live: LiveState, now_ms: u64) -> Result<CallEvent, Skipped> {
    let fact = live_fact(&live.state).ok_or_else(|| Skipped::UnknownState(live.state.clone()))?;
    Ok(CallEvent {
        fact,
        call_id: text(&live.call_uuid),
        session_id: no_text(),
        phone: text(contact_number(&live.direction, &live.to_number, &live.from_number)),
        outcome: CallOutcome::Unspecified,
        occurred_at_ms: live.created_time.map_or(now_ms, |s| s.saturating_mul(1000)),
        ring_s: 0,
        talk_s: 0,
        hangup_cause: no_text(),
        disposition: no_text(),
        has_recording: false,
        attempt: 0,
        source: EventSource::Webhook,
        contact_phone: no_text(),
    })
}

fn normalize_record(r: CallRecord, now_ms: u64, source: EventSource) -> CallEvent {
    let talk = r.bill_sec.unwrap_or(0);
    let outcome = record_outcome(&r.disposition, &r.hangup_cause, talk);
    let ring = match outcome {
        CallOutcome::Answered => r.time_start_to_answer.unwrap_or(0),
        _ => r.duration.unwrap_or(0).saturating_sub(talk),
    };
    CallEvent {
        fact: Fact::Record,
        call_id: text(&r.transaction_id),
        session_id: text(&r.autocall_id),
        phone: text(contact_number(&r.direction, &r.destination_number, &r.source_number)),
        outcome,
        occurred_at_ms: r.last_updated_date.or(r.created_date).unwrap_or(now_ms),
        ring_s: clamp_u32(ring),
        talk_s: clamp_u32(talk),
        hangup_cause: text(&r.hangup_cause),
        disposition: text(&r.disposition),
        has_recording: r.has_recording_file || r.record_seconds.unwrap_or(0) > 0,
        attempt: 0,
        source,
        contact_phone: no_text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::CallState;
    use CallOutcome::*;

    #[test]
    fn the_live_state_table_row_by_row() {
        for (word, fact) in [
            ("create", Some(Fact::Ringing)),
            ("early", Some(Fact::Ringing)),
            ("ringing", Some(Fact::Ringing)),
            ("RINGING ", Some(Fact::Ringing)),
            ("progress", Some(Fact::Ringing)),
            ("answered", Some(Fact::Answered)),
            ("answer", Some(Fact::Answered)),
            ("hangup", Some(Fact::Hangup)),
            ("transfer", None),
            ("", None),
        ] {
            assert_eq!(live_fact(word), fact, "{word:?}");
        }
        assert_eq!(Fact::Ringing.state(), CallState::Ringing);
        assert_eq!(Fact::Answered.state(), CallState::Answered);
        assert_eq!(Fact::Hangup.state(), CallState::Ended);
        assert_eq!(Fact::Record.state(), CallState::Ended);
    }

    #[test]
    fn the_record_outcome_table_row_by_row() {
        for (disposition, cause, talk, expected) in [
            // 1: talk or "answered" wins.
            ("answered", "NORMAL_CLEARING", 30, Answered),
            ("answered", "", 0, Answered),
            ("busy", "USER_BUSY", 5, Answered),
            ("", "", 12, Answered),
            // 2: a specific cause wins over the disposition.
            ("failed", "CALL_REJECTED", 0, Rejected),
            ("cancelled", "USER_BUSY", 0, Busy),
            ("busy", "NO_ANSWER", 0, NoAnswer),
            ("no answer", "ORIGINATOR_CANCEL", 0, NoAnswer),
            ("no answer", "NO_USER_RESPONSE", 0, NoAnswer),
            ("", "ALLOTTED_TIMEOUT", 0, NoAnswer),
            ("failed", "UNALLOCATED_NUMBER", 0, Failed),
            ("no answer", "NORMAL_TEMPORARY_FAILURE", 0, Failed),
            ("", "no_route_destination", 0, Failed),
            ("", "INVALID_NUMBER_FORMAT", 0, Failed),
            ("", "NETWORK_OUT_OF_ORDER", 0, Failed),
            ("", "DESTINATION_OUT_OF_ORDER", 0, Failed),
            ("", "RECOVERY_ON_TIMER_EXPIRE", 0, Failed),
            ("", "NORMAL_CIRCUIT_CONGESTION", 0, Failed),
            ("", "SWITCH_CONGESTION", 0, Failed),
            ("", "SUBSCRIBER_ABSENT", 0, Failed),
            ("", "MEDIA_TIMEOUT", 0, Failed),
            ("", "INCOMPATIBLE_DESTINATION", 0, Failed),
            // 3: the disposition.
            ("no answer", "NORMAL_CLEARING", 0, NoAnswer),
            ("No Answer", "", 0, NoAnswer),
            ("noanswer", "", 0, NoAnswer),
            ("no_answer", "", 0, NoAnswer),
            ("cancelled", "", 0, NoAnswer),
            ("canceled", "", 0, NoAnswer),
            ("missed", "", 0, NoAnswer),
            ("busy", "NORMAL_CLEARING", 0, Busy),
            ("rejected", "", 0, Rejected),
            ("declined", "", 0, Rejected),
            ("failed", "", 0, Failed),
            ("congestion", "", 0, Failed),
            ("error", "", 0, Failed),
            // 4: nothing known.
            ("", "NORMAL_CLEARING", 0, Failed),
            ("voicemail?", "", 0, Failed),
        ] {
            assert_eq!(record_outcome(disposition, cause, talk), expected, "{disposition:?} {cause:?} {talk}");
        }
    }

    #[test]
    fn deliveries_become_events() {
        let live = LiveState {
            call_uuid: " c1 ".into(),
            state: "early".into(),
            direction: "outbound".into(),
            from_number: "1900".into(),
            to_number: "84912345678".into(),
            created_time: Some(1_700_000_000),
        };
        let e = normalize(Delivery::Live(live.clone()), 5).unwrap();
        assert_eq!((e.id().as_str(), &*e.phone, e.occurred_at_ms), ("c1/ringing", "84912345678", 1_700_000_000_000));
        assert_eq!(e.outcome, Unspecified);
        let unknown = LiveState { state: "parked".into(), created_time: None, ..live };
        assert_eq!(normalize(Delivery::Live(unknown), 5), Err(Skipped::UnknownState("parked".into())));

        let record = CallRecord {
            transaction_id: "c1".into(),
            autocall_id: "s1".into(),
            direction: "outbound".into(),
            destination_number: "0912345678".into(),
            disposition: "answered".into(),
            hangup_cause: "NORMAL_CLEARING".into(),
            bill_sec: Some(40),
            duration: Some(47),
            time_start_to_answer: Some(7),
            has_recording_file: true,
            last_updated_date: Some(1_700_000_047_000),
            ..CallRecord::default()
        };
        let e = normalize(Delivery::Record(record.clone()), 5).unwrap();
        assert_eq!(e.id(), "c1/cdr");
        assert_eq!((&*e.session_id, e.outcome, e.ring_s, e.talk_s), ("s1", Answered, 7, 40));
        assert!(e.has_recording);
        let missed = CallRecord {
            disposition: "no answer".into(),
            bill_sec: None,
            duration: Some(30),
            has_recording_file: false,
            last_updated_date: None,
            created_date: Some(9),
            ..record
        };
        let e = normalize(Delivery::Record(missed), 5).unwrap();
        assert_eq!((e.outcome, e.ring_s, e.talk_s, e.occurred_at_ms, e.has_recording), (NoAnswer, 30, 0, 9, false));
        assert_eq!(e.source, EventSource::Webhook);
        let h = history_record(CallRecord { transaction_id: "c9".into(), ..CallRecord::default() }, 5);
        assert_eq!(
            (h.id().as_str(), h.source),
            ("c9/cdr", EventSource::History),
            "the webhook's id: a late webhook is a repeat"
        );
    }
}
