//! The calls the simulator places: the outcome table, the call records behind `GET /_sim/calls` and the
//! call-history search, and the JSON bodies it POSTs to webhooks.
//!
//! # The outcome table
//!
//! A call's fate is decided by the **last digit of the number** (as given in the session) and, for 6, by the
//! attempt. Durations are *simulated* seconds; the real time is divided by the time scale
//! (`--time-scale`, `PUT /_sim/time_scale`). Numbers on the do-not-call list (ending in `999`) and
//! malformed phones are rejected when the session is created and are never dialled, whatever this table says.
//!
//! | last digit | outcome | disposition | hangup_cause (q850) | live states sent | ring s | talk s |
//! |---|---|---|---|---|---|---|
//! | d = 0–4 | `answered` | `answered` | `NORMAL_CLEARING` (16) | ringing, answered, hangup | 3 + d | 10 + 20·d (10, 30, 50, 70, 90) |
//! | 5 | `no_answer` (every attempt) | `no answer` | `NO_ANSWER` (19) | ringing, hangup | 30 | 0 |
//! | 6, attempt 1 | `no_answer` | `cancelled` | `ORIGINATOR_CANCEL` (487) | ringing, hangup | 20 | 0 |
//! | 6, attempt ≥ 2 | `answered` | `answered` | `NORMAL_CLEARING` (16) | ringing, answered, hangup | 4 | 20 |
//! | 7 | `busy` | `busy` | `USER_BUSY` (17) | ringing, hangup | 2 | 0 |
//! | 8 | `rejected` | `failed` | `CALL_REJECTED` (21) | ringing, hangup | 1 | 0 |
//! | 9 | `failed` | `failed` | `UNALLOCATED_NUMBER` (1) | hangup only | 0 | 0 |
//!
//! `no_answer` and `busy` are redialled (up to `num_retry` times); `answered`, `rejected` and `failed` are final.
//!
//! # Reported numbers
//!
//! `to_number` / `destination_number` are the international form without `+` (`84912345678`) when the session
//! gave a national number (`0912345678`), as providers do; any other number is reported as given.
//!
//! # Bodies POSTed to the `call` webhook
//!
//! A live state, one per state the hook's `events` allow (`null` = all):
//!
//! ```json
//! {"call_uuid": "<uuid v4>", "state": "ringing"|"answered"|"hangup", "direction": "outbound",
//!  "from_number": "<cid>", "to_number": "84912345678", "hotline": "<cid>",
//!  "created_time": 1700000000, "date_time": "2023-11-15 05:13:20"}
//! ```
//!
//! `created_time` is Unix seconds of the moment the state happened (wall clock); `date_time` is the same moment
//! in Vietnam time (UTC+7, the provider's zone). `<cid>` is the session's `cid` (query, else body; `""` when
//! none). After the hangup, always (whatever `events` says), the CDR:
//!
//! ```json
//! {"tenant_id": "<api key id>", "transaction_id": "<call_uuid>", "direction": "outbound",
//!  "source_number": "<cid>", "destination_number": "84912345678", "disposition": "answered",
//!  "hangup_cause": "NORMAL_CLEARING", "hangup_cause_q850": 16, "bill_sec": 10, "duration": 13,
//!  "time_start_to_answer": 3, "record_seconds": 10,
//!  "recording_file": "https://sim.invalid/rec/<call_uuid>.mp3", "sip_user": "",
//!  "created_date": 1700000000000, "last_updated_date": 1700000001300, "ivr": "", "provider": "sim",
//!  "is_auto_call": true, "is_callbot": true, "call_out_price": 0, "user": [], "customer": null,
//!  "autocall_id": "<session's autocall_id>", "autocall_uuid": "<call_uuid>"}
//! ```
//!
//! `bill_sec` = `record_seconds` = talk, `duration` = ring + talk, `time_start_to_answer` = ring when answered
//! else 0, `recording_file` is `""` unless answered; `created_date` / `last_updated_date` are the Unix ms of the
//! call's start and end (wall clock). The `no_autocall_id` webhook fault drops the last two keys.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use super::clock::date_time_vn;

/// Most calls kept; beyond it the oldest *ended* calls are dropped.
pub(crate) const MAX_CALLS: usize = 200_000;

/// Most sessions whose progress is kept for `GET /_sim/calls`.
const MAX_SESSION_PROGRESS: usize = 100_000;

/// How a call ended (the `outcome` of `GET /_sim/calls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Answered,
    NoAnswer,
    Busy,
    Rejected,
    Failed,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::NoAnswer => "no_answer",
            Self::Busy => "busy",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    /// Whether the number is dialled again (while redials remain).
    pub(crate) fn redialled(self) -> bool {
        matches!(self, Self::NoAnswer | Self::Busy)
    }
}

/// One row of the outcome table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Row {
    pub outcome: Outcome,
    pub disposition: &'static str,
    pub hangup_cause: &'static str,
    pub q850: u16,
    pub ring_s: u64,
    pub talk_s: u64,
}

impl Row {
    /// Whether a `ringing` state is sent (every outcome but `failed`).
    pub(crate) fn rings(&self) -> bool {
        self.outcome != Outcome::Failed
    }
}

/// The outcome table (module docs): by the last digit of `phone` and the attempt (1 = first dial).
pub(crate) fn outcome_for(phone: &str, attempt: u32) -> Row {
    let digit = phone.bytes().last().filter(u8::is_ascii_digit).map_or(9, |b| u64::from(b - b'0'));
    let row = |outcome, disposition, hangup_cause, q850, ring_s, talk_s| Row {
        outcome,
        disposition,
        hangup_cause,
        q850,
        ring_s,
        talk_s,
    };
    match digit {
        0..=4 => row(Outcome::Answered, "answered", "NORMAL_CLEARING", 16, 3 + digit, 10 + 20 * digit),
        5 => row(Outcome::NoAnswer, "no answer", "NO_ANSWER", 19, 30, 0),
        6 if attempt <= 1 => row(Outcome::NoAnswer, "cancelled", "ORIGINATOR_CANCEL", 487, 20, 0),
        6 => row(Outcome::Answered, "answered", "NORMAL_CLEARING", 16, 4, 20),
        7 => row(Outcome::Busy, "busy", "USER_BUSY", 17, 2, 0),
        8 => row(Outcome::Rejected, "failed", "CALL_REJECTED", 21, 1, 0),
        _ => row(Outcome::Failed, "failed", "UNALLOCATED_NUMBER", 1, 0, 0),
    }
}

/// The number as the provider reports it: `0912345678` → `84912345678`, anything else as given.
pub(crate) fn reported_number(phone: &str) -> String {
    match phone.strip_prefix('0') {
        Some(rest) if !rest.starts_with('0') && !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) => {
            format!("84{rest}")
        }
        _ => phone.to_owned(),
    }
}

/// The national form used to compare numbers: `+84…` and `84…` become `0…`; a leading `+` is dropped.
pub(crate) fn national(phone: &str) -> String {
    let p = phone.trim();
    let p = p.strip_prefix('+').unwrap_or(p);
    match p.strip_prefix("84") {
        Some(rest) if !rest.is_empty() => format!("0{rest}"),
        _ => p.to_owned(),
    }
}

/// Where a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallState {
    Scheduled,
    Ringing,
    Answered,
    Ended,
}

impl CallState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Ended => "ended",
        }
    }
}

/// One placed (or scheduled) call.
#[derive(Clone, Debug)]
pub(crate) struct CallRecord {
    pub call_id: String,
    pub session_id: String,
    pub api_key_id: String,
    pub cid: String,
    pub phone: String,
    pub reported_phone: String,
    pub attempt: u32,
    pub state: CallState,
    pub row: Row,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
}

impl CallRecord {
    /// The entry of `GET /_sim/calls`; `outcome`, `disposition` and `hangup_cause` are null until it ended.
    fn to_json(&self) -> Value {
        let ended = self.state == CallState::Ended;
        json!({
            "call_id": self.call_id,
            "session_id": self.session_id,
            "api_key_id": self.api_key_id,
            "phone": self.phone,
            "reported_phone": self.reported_phone,
            "attempt": self.attempt,
            "state": self.state.as_str(),
            "outcome": ended.then(|| self.row.outcome.as_str()),
            "disposition": ended.then_some(self.row.disposition),
            "hangup_cause": ended.then_some(self.row.hangup_cause),
            "ring_s": self.row.ring_s,
            "talk_s": self.row.talk_s,
            "started_at_ms": self.started_at_ms,
            "ended_at_ms": self.ended_at_ms,
        })
    }

    /// A live-state body (module docs) for a state that happened at `at_ms`.
    pub(crate) fn live_json(&self, state: &str, at_ms: u64) -> Value {
        json!({
            "call_uuid": self.call_id,
            "state": state,
            "direction": "outbound",
            "from_number": self.cid,
            "to_number": self.reported_phone,
            "hotline": self.cid,
            "created_time": at_ms / 1000,
            "date_time": date_time_vn(at_ms / 1000),
        })
    }

    /// The CDR (module docs); `with_autocall` = false omits `autocall_id` and `autocall_uuid`.
    pub(crate) fn cdr_json(&self, with_autocall: bool) -> Value {
        let r = &self.row;
        let answered = r.outcome == Outcome::Answered;
        let mut v = json!({
            "tenant_id": self.api_key_id,
            "transaction_id": self.call_id,
            "direction": "outbound",
            "source_number": self.cid,
            "destination_number": self.reported_phone,
            "disposition": r.disposition,
            "hangup_cause": r.hangup_cause,
            "hangup_cause_q850": r.q850,
            "bill_sec": r.talk_s,
            "duration": r.ring_s + r.talk_s,
            "time_start_to_answer": if answered { r.ring_s } else { 0 },
            "record_seconds": r.talk_s,
            "recording_file": if answered { format!("https://sim.invalid/rec/{}.mp3", self.call_id) } else { String::new() },
            "sip_user": "",
            "created_date": self.started_at_ms,
            "last_updated_date": self.ended_at_ms.unwrap_or(self.started_at_ms),
            "ivr": "",
            "provider": "sim",
            "is_auto_call": true,
            "is_callbot": true,
            "call_out_price": 0,
            "user": [],
            "customer": null,
        });
        if with_autocall {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("autocall_id".into(), Value::String(self.session_id.clone()));
                obj.insert("autocall_uuid".into(), Value::String(self.call_id.clone()));
            }
        }
        v
    }
}

/// How far a session's calls are.
struct Progress {
    api_key_id: String,
    contacts: usize,
    finished_contacts: usize,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    calls: BTreeMap<u64, CallRecord>,
    /// The sequence numbers of the ended calls, in the order they ended: the ones [`Calls::insert`]
    /// forgets first, found without walking the live calls. (Walking `calls` for the oldest ended
    /// call was a scan of every call per insert once over the cap with none ended, which is every
    /// call at a slow time scale: a core busy under a lock, and the map growing unbounded.)
    ended: VecDeque<u64>,
    sessions: HashMap<String, Progress>,
    session_order: VecDeque<String>,
}

/// Every call placed, in placement order, and the progress of each session.
pub(crate) struct Calls {
    inner: Mutex<Inner>,
    /// Ended calls beyond this many calls in all are forgotten, oldest ended first
    /// ([`MAX_CALLS`]; smaller in tests). Live calls are always kept: their sessions bound them.
    cap: usize,
}

impl Default for Calls {
    fn default() -> Self {
        Self::with_cap(MAX_CALLS)
    }
}

/// The filters of `GET /_sim/calls`.
pub(crate) struct CallFilter<'a> {
    pub session: Option<&'a str>,
    /// An API key id (`k_…`), or the key itself (compared through `key_id`).
    pub api_key_id: Option<(String, String)>,
}

impl CallFilter<'_> {
    fn keeps(&self, session: &str, key_id: &str) -> bool {
        self.session.is_none_or(|s| s == session)
            && self.api_key_id.as_ref().is_none_or(|(a, b)| a == key_id || b == key_id)
    }
}

impl Calls {
    /// Calls that keep at most `cap` calls when some have ended.
    pub(crate) fn with_cap(cap: usize) -> Self {
        Self { inner: Mutex::default(), cap }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start tracking a session with `contacts` dialled contacts.
    pub(crate) fn open_session(&self, session_id: &str, api_key_id: &str, contacts: usize) {
        let mut inner = self.lock();
        if inner.session_order.len() >= MAX_SESSION_PROGRESS {
            if let Some(old) = inner.session_order.pop_front() {
                inner.sessions.remove(&old);
            }
        }
        let p = Progress { api_key_id: api_key_id.to_owned(), contacts, finished_contacts: 0 };
        if inner.sessions.insert(session_id.to_owned(), p).is_none() {
            inner.session_order.push_back(session_id.to_owned());
        }
    }

    /// One contact of the session is final (answered, rejected, failed or out of redials).
    pub(crate) fn contact_finished(&self, session_id: &str) {
        if let Some(p) = self.lock().sessions.get_mut(session_id) {
            p.finished_contacts += 1;
        }
    }

    /// Record a new call; returns its sequence number (for [`Calls::update`]).
    pub(crate) fn insert(&self, call: CallRecord) -> u64 {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if call.state == CallState::Ended {
            inner.ended.push_back(seq);
        }
        inner.calls.insert(seq, call);
        while inner.calls.len() > self.cap {
            let Some(old) = inner.ended.pop_front() else {
                break;
            };
            inner.calls.remove(&old);
        }
        seq
    }

    /// Change a call and return a copy of it as changed (None if it was dropped).
    pub(crate) fn update(&self, seq: u64, f: impl FnOnce(&mut CallRecord)) -> Option<CallRecord> {
        let mut inner = self.lock();
        let call = inner.calls.get_mut(&seq)?;
        let was_ended = call.state == CallState::Ended;
        f(call);
        let copy = call.clone();
        if !was_ended && copy.state == CallState::Ended {
            inner.ended.push_back(seq);
        }
        Some(copy)
    }

    /// The ended calls of `api_key_id` that `keep` accepts, in placement order.
    pub(crate) fn ended_of(&self, api_key_id: &str, keep: impl Fn(&CallRecord) -> bool) -> Vec<CallRecord> {
        let inner = self.lock();
        inner
            .calls
            .values()
            .filter(|c| c.state == CallState::Ended && c.api_key_id == api_key_id && keep(c))
            .cloned()
            .collect()
    }

    /// The body of `GET /_sim/calls`.
    pub(crate) fn to_json(&self, filter: &CallFilter<'_>) -> Value {
        let inner = self.lock();
        let calls: Vec<Value> = inner
            .calls
            .values()
            .filter(|c| filter.keeps(&c.session_id, &c.api_key_id))
            .map(CallRecord::to_json)
            .collect();
        let sessions: Vec<Value> = inner
            .session_order
            .iter()
            .filter_map(|id| Some((id, inner.sessions.get(id)?)))
            .filter(|(id, p)| filter.keeps(id, &p.api_key_id))
            .map(|(id, p)| {
                json!({
                    "session_id": id,
                    "api_key_id": p.api_key_id,
                    "contacts": p.contacts,
                    "finished": p.finished_contacts >= p.contacts,
                })
            })
            .collect();
        json!({"calls": calls, "sessions": sessions})
    }

    /// Forget every call and session.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.calls.clear();
        inner.ended.clear();
        inner.sessions.clear();
        inner.session_order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(phone: &str, state: CallState) -> CallRecord {
        CallRecord {
            call_id: phone.to_owned(),
            session_id: "s".into(),
            api_key_id: "k".into(),
            cid: String::new(),
            phone: phone.to_owned(),
            reported_phone: phone.to_owned(),
            attempt: 1,
            state,
            row: outcome_for(phone, 1),
            started_at_ms: 0,
            ended_at_ms: None,
        }
    }

    fn phones(calls: &Calls) -> Vec<String> {
        calls.lock().calls.values().map(|c| c.phone.clone()).collect()
    }

    #[test]
    fn over_the_cap_the_oldest_ended_calls_go_and_live_calls_stay() {
        let calls = Calls::with_cap(3);
        let a = calls.insert(call("a", CallState::Ringing));
        let b = calls.insert(call("b", CallState::Ringing));
        calls.insert(call("c", CallState::Ringing));
        // Nothing ended: a slow time scale. Every live call stays, and nothing is walked.
        calls.insert(call("d", CallState::Ringing));
        assert_eq!(phones(&calls), ["a", "b", "c", "d"]);
        assert!(calls.lock().ended.is_empty());
        // b ends, then a: the next inserts forget them in that order (the order they ended).
        calls.update(b, |c| c.state = CallState::Ended).unwrap();
        calls.update(a, |c| c.state = CallState::Ended).unwrap();
        // Ending twice is noted once.
        calls.update(a, |c| c.state = CallState::Ended).unwrap();
        let e = calls.insert(call("e", CallState::Ringing));
        assert_eq!(phones(&calls), ["c", "d", "e"]);
        assert!(calls.lock().ended.is_empty());
        calls.insert(call("f", CallState::Ringing));
        assert_eq!(phones(&calls), ["c", "d", "e", "f"]);
        // e ends after d: d is still live, e goes first.
        calls.update(e, |c| c.state = CallState::Ended).unwrap();
        // Over the cap, an ended call goes as soon as it is recorded; live ones stay.
        calls.insert(call("g", CallState::Ended));
        assert_eq!(phones(&calls), ["c", "d", "f"]);
        assert!(calls.lock().ended.is_empty());
        assert!(calls.update(a, |_| {}).is_none());
    }
}
