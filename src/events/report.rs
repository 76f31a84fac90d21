//! A session's report from what the store holds: its creation record (the contacts, the redial
//! count) and its events, applied by precedence so that their order and repeats change nothing:
//!
//! - a call's state is the furthest one any of its facts reached (RINGING < ANSWERED < ENDED):
//!   a late `answered` never reopens an ended call;
//! - a call's outcome comes only from its end-of-call record (the live `hangup` says none);
//! - a contact's calls are ordered by attempt number, then by when they were first stored; its
//!   last call gives its state and outcome, and `attempts` counts its distinct calls;
//! - a contact is final when its last outcome is ANSWERED, REJECTED or FAILED, or NO_ANSWER /
//!   BUSY with no redials left (attempts > the session's redials; 0 redials when the session was
//!   not created through this deployment); `finished` = every contact final;
//! - counts are by last outcome; a contact not dialled yet, ringing, or ended without its record
//!   yet is `in_progress`.

use std::collections::HashMap;

use super::{CallOutcome, CallState, EventSource, Fact, SessionFacts, StoredEvent};
use crate::domain::national;

/// One contact of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContactLine {
    /// As given at creation, or as the provider wrote it.
    pub(crate) phone: String,
    /// Its last call's state; `None` when not dialled yet.
    pub(crate) state: Option<CallState>,
    /// Its last call's outcome (Unspecified while that call is under way).
    pub(crate) outcome: CallOutcome,
    /// Distinct calls to it.
    pub(crate) attempts: u32,
    /// Talk seconds of its answered call.
    pub(crate) talk_s: u32,
    /// Unix milliseconds of its latest event.
    pub(crate) last_event_ms: Option<u64>,
    /// Nothing more will happen.
    pub(crate) is_final: bool,
    /// Where the event that set its outcome came from; `None` while it has none.
    pub(crate) source: Option<EventSource>,
}

/// The report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Report {
    /// The contacts dialled or to dial.
    pub(crate) contacts_total: u64,
    /// By last outcome.
    pub(crate) answered: u64,
    /// By last outcome.
    pub(crate) no_answer: u64,
    /// By last outcome.
    pub(crate) busy: u64,
    /// By last outcome.
    pub(crate) rejected: u64,
    /// By last outcome.
    pub(crate) failed: u64,
    /// Not dialled, or a call under way.
    pub(crate) in_progress: u64,
    /// Given up: the provider never told.
    pub(crate) unknown: u64,
    /// Outcomes that came from the call history.
    pub(crate) reconciled: u64,
    /// Every contact final.
    pub(crate) finished: bool,
    /// In creation order, then the numbers only the events named.
    pub(crate) contacts: Vec<ContactLine>,
}

#[derive(Default)]
struct Call {
    attempt: u32,
    first_seq: u64,
    state: Option<CallState>,
    outcome: CallOutcome,
    talk_s: u32,
    source: EventSource,
}

#[derive(Default)]
struct ContactAcc {
    phone: String,
    calls: HashMap<String, Call>,
    last_event_ms: Option<u64>,
    /// The facade gave it up (no call of its own: the contact's other calls decide the rest).
    gave_up: bool,
}

fn apply(contact: &mut ContactAcc, stored: &StoredEvent) {
    let e = &stored.event;
    contact.last_event_ms = contact.last_event_ms.max(Some(e.occurred_at_ms));
    if e.fact == Fact::GaveUp {
        contact.gave_up = true;
        return;
    }
    let call = contact
        .calls
        .entry(e.call_id.to_string())
        .or_insert_with(|| Call { first_seq: stored.cursor.seq, ..Call::default() });
    if call.attempt == 0 {
        call.attempt = e.attempt;
    }
    call.state = call.state.max(Some(e.state()));
    if e.fact == Fact::Record {
        call.outcome = e.outcome;
        call.talk_s = e.talk_s;
        call.source = e.source;
    }
}

/// The report of `facts`.
pub(crate) fn build(facts: &SessionFacts) -> Report {
    let redials = facts.record.as_ref().map_or(0, |r| r.redials);
    let mut order: Vec<String> = Vec::new();
    let mut contacts: HashMap<String, ContactAcc> = HashMap::new();
    for phone in facts.record.iter().flat_map(|r| &r.contacts) {
        let n = national(phone);
        if let std::collections::hash_map::Entry::Vacant(slot) = contacts.entry(n.clone()) {
            order.push(n);
            slot.insert(ContactAcc { phone: phone.clone(), ..ContactAcc::default() });
        }
    }
    // The number of a call is the one its first fact with a number gave (records and live
    // states may write it differently; the national form is the same).
    let mut number_of_call: HashMap<&str, String> = HashMap::new();
    for stored in &facts.events {
        let e = &stored.event;
        let n = match number_of_call.get(&*e.call_id) {
            Some(n) => n.clone(),
            None if e.phone.is_empty() => continue,
            None => {
                let n = national(&e.phone);
                number_of_call.insert(&e.call_id, n.clone());
                n
            }
        };
        let contact = contacts.entry(n.clone()).or_insert_with(|| {
            order.push(n.clone());
            ContactAcc { phone: e.phone.to_string(), ..ContactAcc::default() }
        });
        apply(contact, stored);
    }
    let mut report = Report { contacts_total: order.len() as u64, ..Report::default() };
    for n in &order {
        let c = &contacts[n];
        let last = c.calls.values().max_by_key(|call| (call.attempt, call.first_seq));
        let attempts = u32::try_from(c.calls.len()).unwrap_or(u32::MAX);
        let real = last.map_or(CallOutcome::Unspecified, |l| l.outcome);
        let (outcome, source) = match (real, last) {
            (CallOutcome::Unspecified, _) if c.gave_up => (CallOutcome::Unknown, Some(EventSource::Facade)),
            (CallOutcome::Unspecified, _) | (_, None) => (real, None),
            (_, Some(l)) => (real, Some(l.source)),
        };
        let is_final = c.gave_up
            || match real {
                CallOutcome::Answered | CallOutcome::Rejected | CallOutcome::Failed | CallOutcome::Unknown => true,
                CallOutcome::NoAnswer | CallOutcome::Busy => attempts > redials,
                CallOutcome::Unspecified => false,
            };
        match outcome {
            CallOutcome::Answered => report.answered += 1,
            CallOutcome::NoAnswer => report.no_answer += 1,
            CallOutcome::Busy => report.busy += 1,
            CallOutcome::Rejected => report.rejected += 1,
            CallOutcome::Failed => report.failed += 1,
            CallOutcome::Unknown => report.unknown += 1,
            CallOutcome::Unspecified => report.in_progress += 1,
        }
        if source == Some(EventSource::History) {
            report.reconciled += 1;
        }
        let state = match outcome {
            CallOutcome::Unknown => Some(CallState::Ended),
            _ => last.and_then(|l| l.state),
        };
        let talk_s =
            c.calls.values().filter(|call| call.outcome == CallOutcome::Answered).map(|call| call.talk_s).max();
        report.contacts.push(ContactLine {
            phone: c.phone.clone(),
            state,
            outcome,
            attempts,
            talk_s: talk_s.unwrap_or(0),
            last_event_ms: c.last_event_ms,
            is_final,
            source,
        });
    }
    report.finished = report.contacts.iter().all(|c| c.is_final);
    report
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::events::{CallEvent, Cursor, SessionRecord};

    fn ev(seq: u64, call: &str, fact: Fact, phone: &str, outcome: CallOutcome, attempt: u32) -> StoredEvent {
        let event = CallEvent {
            session_id: Arc::from("s1"),
            outcome,
            occurred_at_ms: seq * 1000,
            ring_s: 1,
            talk_s: if outcome == CallOutcome::Answered { 30 } else { 0 },
            attempt,
            ..CallEvent::live(call, fact, phone)
        };
        StoredEvent { cursor: Cursor { store: 1, seq }, event }
    }

    fn record(contacts: &[&str], redials: u32) -> Option<SessionRecord> {
        Some(SessionRecord {
            session_id: "s1".into(),
            external_id: String::new(),
            contacts: contacts.iter().map(|c| (*c).to_owned()).collect(),
            redials,
            created_at_ms: 0,
            script_id: String::new(),
            name: String::new(),
            ..SessionRecord::default()
        })
    }

    use CallOutcome::*;
    use Fact::{Hangup, Record, Ringing};

    #[test]
    fn a_session_with_no_call_yet_is_all_in_progress() {
        let r = build(&SessionFacts { record: record(&["0912345670", "0912345675"], 0), events: vec![] });
        assert_eq!((r.contacts_total, r.in_progress, r.finished), (2, 2, false));
        assert_eq!(r.contacts[0].state, None);
        assert_eq!(r.contacts[0].attempts, 0);
    }

    #[test]
    fn counts_by_last_outcome_with_redials() {
        let events = vec![
            ev(1, "a", Ringing, "84912345670", Unspecified, 1),
            ev(2, "a", Fact::Answered, "84912345670", Unspecified, 1),
            ev(3, "a", Hangup, "84912345670", Unspecified, 1),
            ev(4, "a", Record, "84912345670", CallOutcome::Answered, 1),
            ev(5, "b", Record, "0912345675", NoAnswer, 1),
            ev(6, "c", Record, "0912345677", Busy, 1),
            ev(7, "c2", Record, "0912345677", Busy, 2),
            ev(8, "d", Ringing, "0912345678", Unspecified, 1),
        ];
        let r = build(&SessionFacts {
            record: record(&["0912345670", "0912345675", "0912345677", "0912345678"], 1),
            events,
        });
        assert_eq!((r.answered, r.no_answer, r.busy, r.in_progress), (1, 1, 1, 1));
        assert_eq!(r.contacts_total, 4);
        let finals: Vec<bool> = r.contacts.iter().map(|c| c.is_final).collect();
        assert_eq!(finals, [true, false, true, false], "no answer with a redial left is not final");
        assert_eq!(r.contacts[0].phone, "0912345670", "the number as given at creation");
        assert_eq!(r.contacts[0].talk_s, 30);
        assert_eq!(r.contacts[2].attempts, 2);
        assert!(!r.finished);
    }

    #[test]
    fn reordering_and_repeats_change_nothing() {
        let events = vec![
            ev(1, "a", Ringing, "0912345670", Unspecified, 1),
            ev(2, "a", Fact::Answered, "0912345670", Unspecified, 1),
            ev(3, "a", Hangup, "0912345670", Unspecified, 1),
            ev(4, "a", Record, "0912345670", CallOutcome::Answered, 1),
            ev(5, "b", Ringing, "0912345676", Unspecified, 1),
            ev(6, "b", Record, "0912345676", NoAnswer, 1),
            ev(7, "b2", Ringing, "0912345676", Unspecified, 2),
            ev(8, "b2", Record, "0912345676", CallOutcome::Answered, 2),
        ];
        let facts = SessionFacts { record: record(&["0912345670", "0912345676"], 1), events: events.clone() };
        let expected = build(&facts);
        assert!(expected.finished);
        assert_eq!(expected.answered, 2);
        let mut reversed = events.clone();
        reversed.reverse();
        let mut doubled = events.clone();
        doubled.extend(events);
        for events in [reversed, doubled] {
            let mut r = build(&SessionFacts { events, ..facts.clone() });
            // Only the latest-event time may not move with order; it does not (max).
            r.contacts
                .iter_mut()
                .zip(&expected.contacts)
                .for_each(|(a, b)| assert_eq!(a.last_event_ms, b.last_event_ms));
            assert_eq!(r, expected);
        }
    }

    fn with_source(mut e: StoredEvent, source: EventSource) -> StoredEvent {
        e.event.source = source;
        e
    }

    #[test]
    fn precedence_real_over_unknown_over_none_and_where_each_came_from() {
        let gave_up = |seq, phone: &str| StoredEvent {
            cursor: Cursor { store: 1, seq },
            event: CallEvent {
                session_id: Arc::from("s1"),
                outcome: Unknown,
                source: EventSource::Facade,
                ..CallEvent::live(&format!("s1/{phone}"), Fact::GaveUp, phone)
            },
        };
        let contacts = ["0912345670", "0912345671", "0912345672", "0912345673"];
        let given_up = vec![
            // 0: given up, nothing else: UNKNOWN, final.
            gave_up(1, "0912345670"),
            // 1: given up while ringing: UNKNOWN.
            ev(2, "b", Ringing, "0912345671", Unspecified, 1),
            gave_up(3, "0912345671"),
            // 2: reconciled from the history before any give-up.
            with_source(ev(4, "c", Record, "0912345672", Busy, 1), EventSource::History),
            // 3: not given up, nothing: in progress.
        ];
        let r = build(&SessionFacts { record: record(&contacts, 0), events: given_up.clone() });
        let got: Vec<_> = r.contacts.iter().map(|c| (c.outcome, c.is_final, c.source)).collect();
        assert_eq!(
            got,
            [
                (Unknown, true, Some(EventSource::Facade)),
                (Unknown, true, Some(EventSource::Facade)),
                (Busy, true, Some(EventSource::History)),
                (Unspecified, false, None),
            ]
        );
        assert_eq!((r.unknown, r.reconciled, r.busy, r.in_progress, r.finished), (2, 1, 1, 1, false));
        assert_eq!(r.contacts[0].state, Some(CallState::Ended), "given up: ended");
        // A real outcome that arrives after the give-up wins, in whatever order the store holds them.
        let mut late = given_up.clone();
        late.push(ev(5, "b", Record, "0912345671", CallOutcome::Answered, 1));
        let r2 = build(&SessionFacts { record: record(&contacts, 0), events: late.clone() });
        assert_eq!(
            (r2.contacts[1].outcome, r2.contacts[1].source),
            (CallOutcome::Answered, Some(EventSource::Webhook))
        );
        assert_eq!((r2.unknown, r2.answered), (1, 1));
        late.reverse();
        assert_eq!(
            build(&SessionFacts { record: record(&contacts, 0), events: late }).contacts[1].outcome,
            CallOutcome::Answered
        );
        // A real non-final outcome (a redial left) after a give-up still shows, and stays final.
        let mut redial = given_up;
        redial.push(ev(6, "b", Record, "0912345671", NoAnswer, 1));
        let r3 = build(&SessionFacts { record: record(&contacts, 2), events: redial });
        assert_eq!((r3.contacts[1].outcome, r3.contacts[1].is_final), (NoAnswer, true));
        assert_eq!(r3.contacts[0].attempts, 0, "a give-up is no call");
    }

    #[test]
    fn a_late_answered_never_reopens_an_ended_call() {
        let events = vec![
            ev(1, "a", Hangup, "0912345670", Unspecified, 1),
            ev(2, "a", Fact::Answered, "0912345670", Unspecified, 1),
        ];
        let r = build(&SessionFacts { record: None, events });
        assert_eq!(r.contacts[0].state, Some(CallState::Ended));
        assert_eq!(r.in_progress, 1, "ended without its record: outcome not known yet");
    }
}
