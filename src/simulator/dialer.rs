//! Placing the calls of an accepted session, in scaled time, on a tokio task of its own.
//!
//! The session's own fields (read as `api.rs` validates them): `contact_info[].phone`, `num_per_call`
//! (default 15), `distance_per_call` (seconds, default 30), `num_retry` (default 0), `distance_retry` (seconds,
//! default 0) and `send_time` (Unix ms; absent = now). Contacts rejected at creation (malformed, do-not-call)
//! are never dialled. All the simulator's waits are *simulated* seconds divided by the time scale at the
//! moment the wait starts (so `PUT /_sim/time_scale` affects the waits that start after it):
//!
//! - the first dial comes 100 ms (real time) after the session was accepted at the earliest, as with the
//!   real provider, which answers before it dials;
//! - nothing happens before `send_time`: a `send_time` 60 s ahead delays the first round by 60 / time_scale
//!   real seconds. Timestamps are the wall clock, so with a time scale above 1 they can precede `send_time`;
//! - the dialled contacts, in order, are split into rounds of `num_per_call`; a round's contacts are dialled
//!   at once, and the next round starts `distance_per_call` after every contact of the previous round is
//!   final (so at most `num_per_call` calls are ever live for one session);
//! - a contact whose call ended `no_answer` or `busy` is redialled on its own timer, `distance_retry` after
//!   that call ended, within its round, up to `num_retry` times. Its next call is recorded as `scheduled`
//!   (with the planned start as `started_at_ms`) as soon as the previous one ended;
//! - each call gets a fresh `call_uuid` (UUID v4) and an `attempt` (1 = first dial of that contact); its
//!   states follow the outcome table of `calls.rs`, and each is delivered as it happens (`delivery.rs`).
//!
//! `POST /_sim/reset` (and the simulator's shutdown) stops every session's calls where they are.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};

use super::api::{int_field, on_dnc_list, phone_valid};
use super::calls::{CallRecord, CallState, Outcome, Row, outcome_for, reported_number};
use super::delivery::CallSink;
use super::state::{Sim, unix_ms};
use super::webhook_faults::Kind;

/// What an accepted session dials.
pub(crate) struct SessionPlan {
    pub session_id: String,
    pub api_key_id: String,
    pub cid: String,
    pub phones: Vec<String>,
    pub num_per_call: usize,
    pub distance_per_call: u64,
    pub num_retry: u32,
    pub distance_retry: u64,
    pub send_time_ms: Option<u64>,
}

impl SessionPlan {
    /// The plan of a session whose (already validated) body is `obj`; `query_cid` is the `cid` query parameter.
    pub(crate) fn new(session_id: String, api_key_id: String, query_cid: &str, obj: &Map<String, Value>) -> Self {
        let int = |name: &str, default: i64| int_field(obj, name).ok().flatten().unwrap_or(default).max(0);
        let cid = match obj.get("cid") {
            Some(Value::String(c)) if query_cid.is_empty() => c.clone(),
            _ => query_cid.to_owned(),
        };
        let phones = obj
            .get("contact_info")
            .and_then(Value::as_array)
            .map(|contacts| {
                contacts
                    .iter()
                    .filter(|c| c.is_object())
                    .filter_map(|c| match c.get("phone") {
                        Some(Value::String(p)) => Some(p.trim().to_owned()),
                        Some(Value::Number(n)) => Some(n.to_string()),
                        _ => None,
                    })
                    .filter(|p| phone_valid(p) && !on_dnc_list(p))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            session_id,
            api_key_id,
            cid,
            phones,
            num_per_call: usize::try_from(int("num_per_call", 15)).unwrap_or(usize::MAX).max(1),
            distance_per_call: int("distance_per_call", 30).unsigned_abs(),
            num_retry: u32::try_from(int("num_retry", 0)).unwrap_or(u32::MAX),
            distance_retry: int("distance_retry", 0).unsigned_abs(),
            send_time_ms: int_field(obj, "send_time").ok().flatten().map(i64::unsigned_abs),
        }
    }
}

/// Start placing the session's calls (returns at once).
pub(crate) fn start(sim: &Arc<Sim>, plan: SessionPlan) {
    sim.calls.open_session(&plan.session_id, &plan.api_key_id, plan.phones.len());
    if plan.phones.is_empty() {
        return;
    }
    let epoch = sim.clock.epoch();
    tokio::spawn(run_session(Arc::clone(sim), plan, epoch));
}

/// Real time between accepting a session and its first dial, whatever the time scale: a real
/// provider answers `execute_by_phone` before it starts dialling, and the facade records the
/// session (to attribute the live states by number) when it has that answer.
const FIRST_DIAL_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

async fn run_session(sim: Arc<Sim>, plan: SessionPlan, epoch: u64) {
    tokio::time::sleep(FIRST_DIAL_DELAY).await;
    if let Some(at) = plan.send_time_ms {
        let now = unix_ms();
        if at > now && !sim.clock.sleep_sim((at - now) as f64 / 1000.0, epoch).await {
            return;
        }
    }
    for (i, round) in plan.phones.chunks(plan.num_per_call).enumerate() {
        if i > 0 && !sim.clock.sleep_sim(plan.distance_per_call as f64, epoch).await {
            return;
        }
        futures::future::join_all(round.iter().map(|phone| dial_contact(&sim, &plan, phone, epoch))).await;
        if sim.clock.epoch() != epoch {
            return;
        }
    }
}

/// Every attempt of one contact, until one is final or the redials run out.
async fn dial_contact(sim: &Arc<Sim>, plan: &SessionPlan, phone: &str, epoch: u64) {
    let reported = reported_number(phone);
    for attempt in 1..=plan.num_retry.saturating_add(1) {
        let row = outcome_for(phone, attempt);
        let wait = if attempt > 1 { plan.distance_retry } else { 0 };
        let planned = unix_ms() + sim.clock.real_duration(wait as f64).as_millis() as u64;
        let seq = sim.calls.insert(CallRecord {
            call_id: uuid::Uuid::new_v4().to_string(),
            session_id: plan.session_id.clone(),
            api_key_id: plan.api_key_id.clone(),
            cid: plan.cid.clone(),
            phone: phone.to_owned(),
            reported_phone: reported.clone(),
            attempt,
            state: CallState::Scheduled,
            row,
            started_at_ms: planned,
            ended_at_ms: None,
        });
        if wait > 0 && !sim.clock.sleep_sim(wait as f64, epoch).await {
            return;
        }
        match place_call(sim, seq, row, epoch).await {
            Placed::Reset => return,
            Placed::Open => break,
            Placed::Ended if !row.outcome.redialled() => break,
            Placed::Ended => {}
        }
    }
    sim.calls.contact_finished(&plan.session_id);
}

/// How a placed call went for its contact's loop.
enum Placed {
    /// It ended (its CDR is out).
    Ended,
    /// A `never_ends` fault holds it open: no end, no redial.
    Open,
    /// The simulator was reset meanwhile.
    Reset,
}

/// One call from ringing to the CDR (or, under a `never_ends` fault, to where it hangs forever).
async fn place_call(sim: &Arc<Sim>, seq: u64, row: Row, epoch: u64) -> Placed {
    match ring_talk_end(sim, seq, row, epoch, sim.wh_faults.take(Kind::NeverEnds).is_some()).await {
        None => Placed::Reset,
        Some(true) => Placed::Ended,
        Some(false) => Placed::Open,
    }
}

/// The call's states as they happen; `Some(false)` when it stops before its end (`never_ends`).
async fn ring_talk_end(sim: &Arc<Sim>, seq: u64, row: Row, epoch: u64, never_ends: bool) -> Option<bool> {
    sim.stats.calls_placed.fetch_add(1, Ordering::Relaxed);
    let mut sink = CallSink::new(Arc::clone(sim), epoch);
    let t0 = unix_ms();
    let call = sim.calls.update(seq, |c| {
        c.started_at_ms = t0;
        if row.rings() {
            c.state = CallState::Ringing;
        }
    })?;
    if row.rings() {
        sink.live(&call, "ringing", t0);
        if !sim.clock.sleep_sim(row.ring_s as f64, epoch).await {
            return None;
        }
    }
    if row.outcome == Outcome::Answered {
        let at = unix_ms();
        let call = sim.calls.update(seq, |c| c.state = CallState::Answered)?;
        sink.live(&call, "answered", at);
        if !sim.clock.sleep_sim(row.talk_s as f64, epoch).await {
            return None;
        }
    }
    if never_ends {
        sim.stats.calls_never_ended.fetch_add(1, Ordering::Relaxed);
        return Some(false);
    }
    let at = unix_ms();
    let call = sim.calls.update(seq, |c| {
        c.state = CallState::Ended;
        c.ended_at_ms = Some(at);
    })?;
    sink.live(&call, "hangup", at);
    sink.cdr(&call);
    Some(true)
}
