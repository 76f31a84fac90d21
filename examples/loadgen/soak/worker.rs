//! One soak worker: draws RPCs by the mix, sends each with the caller deadline, and retries a
//! keyed CreateSession with the same key as a careful caller would, so that a session created
//! twice shows up as a duplicate rather than hiding behind a fresh key.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use callbot_facade::pb::{self, call_bot_service_client::CallBotServiceClient};
use tonic::{Code, transport::Channel};

use super::{
    DEADLINE,
    answers::{Answer, Op, Tally, may_have_created, new_hist, worth_retrying},
};

/// Most attempts of one keyed CreateSession (the first and its retries with the same key).
const MAX_ATTEMPTS: u32 = 6;
/// A script id the simulator does not have.
const MISSING_SCRIPT: &str = "ffffffffffffffffffffffff";

/// What the workers share.
pub(super) struct Shared {
    pub(super) create: pb::CreateSessionRequest,
    pub(super) script_ids: Vec<String>,
    pub(super) next_key: AtomicU64,
    pub(super) completed: AtomicU64,
    pub(super) stop: AtomicBool,
}

pub(super) fn key_name(n: u64) -> String {
    format!("soak-{n}")
}

/// xorshift64*: enough randomness for a mix, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn with_deadline<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(DEADLINE);
    r
}

/// One RPC; the answer as counted.
async fn call(
    client: &mut CallBotServiceClient<Channel>,
    shared: &Shared,
    op: Op,
    key: Option<&str>,
    pick: u64,
) -> Answer {
    match op {
        Op::ListScripts => {
            let mut stream = match client.list_scripts(with_deadline(pb::ListScriptsRequest::default())).await {
                Ok(r) => r.into_inner(),
                Err(s) => return Answer::from_status(&s),
            };
            let mut n = 0;
            loop {
                match stream.message().await {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => break,
                    Err(s) => return Answer::from_status(&s),
                }
            }
            if n == shared.script_ids.len() { Answer::ok() } else { Answer::bad("short_stream") }
        }
        Op::GetScriptHit | Op::GetScriptMiss => {
            let id = if op == Op::GetScriptMiss {
                MISSING_SCRIPT.to_owned()
            } else {
                shared.script_ids[(pick as usize) % shared.script_ids.len()].clone()
            };
            match client.get_script(with_deadline(pb::GetScriptRequest { script_id: id.clone() })).await {
                Ok(r) => match r.into_inner().script {
                    Some(s) if s.id == id && op == Op::GetScriptHit => Answer::ok(),
                    Some(_) if op == Op::GetScriptMiss => Answer::bad("missing_script_found"),
                    _ => Answer::bad("wrong_script"),
                },
                Err(s) => Answer::from_status(&s),
            }
        }
        Op::CreateSessionKeyed | Op::CreateSessionKeyless => {
            let mut req = shared.create.clone();
            req.external_session_id = key.unwrap_or_default().to_owned();
            match client.create_session(with_deadline(req)).await {
                Ok(r) => match r.into_inner().session {
                    Some(s) if s.id.is_empty() => Answer::bad("no_session_id"),
                    Some(s) if key.is_some_and(|k| k != s.external_session_id) => Answer::bad("other_key"),
                    Some(s) if s.external_session_id.is_empty() => Answer::bad("no_key"),
                    Some(_) => Answer::ok(),
                    None => Answer::bad("no_session"),
                },
                Err(s) => Answer::from_status(&s),
            }
        }
    }
}

pub(super) async fn worker(channel: Channel, shared: Arc<Shared>, seed: u64) -> Tally {
    let mut client = CallBotServiceClient::new(channel);
    let mut rng = Rng(seed | 1);
    let mut t = Tally { hist: new_hist(), ..Default::default() };
    while !shared.stop.load(Ordering::Relaxed) {
        let op = Op::draw(rng.next() % 100);
        let pick = rng.next();
        if op != Op::CreateSessionKeyed {
            let started = Instant::now();
            let a = call(&mut client, &shared, op, None, pick).await;
            t.record(op, &a, false, started.elapsed().as_micros() as u64);
            shared.completed.fetch_add(1, Ordering::Relaxed);
            if op == Op::CreateSessionKeyless {
                if a.code == Code::Ok && a.reason.is_empty() {
                    t.keyless_ok += 1;
                } else if may_have_created(a.code, &a.reason) {
                    t.keyless_open += 1;
                }
            }
            continue;
        }
        // A keyed CreateSession: retried with the same key while the answer says so.
        let n = shared.next_key.fetch_add(1, Ordering::Relaxed);
        let key = key_name(n);
        let mut open = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let a = call(&mut client, &shared, op, Some(&key), pick).await;
            t.record(op, &a, open, started.elapsed().as_micros() as u64);
            shared.completed.fetch_add(1, Ordering::Relaxed);
            if a.code == Code::Ok {
                if a.reason.is_empty() {
                    t.keys_created.push(n);
                } else {
                    t.keys_failed += 1;
                }
                break;
            }
            if a.code == Code::AlreadyExists {
                if open {
                    t.keys_created.push(n);
                } else {
                    t.keys_duplicate.push(n);
                }
                break;
            }
            open |= may_have_created(a.code, &a.reason);
            if worth_retrying(a.code) && attempt < MAX_ATTEMPTS && !shared.stop.load(Ordering::Relaxed) {
                t.keyed_retries += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                continue;
            }
            if open {
                t.keys_open += 1;
            } else {
                t.keys_failed += 1;
            }
            break;
        }
    }
    t
}
