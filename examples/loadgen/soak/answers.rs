//! What the soak makes of each answer: which RPC it drew ([`Op`]), whether a (code, reason) is one
//! an injected fault can cause for that RPC, whether a CreateSession may still have happened
//! upstream, and the per-worker [`Tally`] of all of it.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use tonic::Code;
use tonic_types::StatusExt;

use super::DEADLINE;

/// The RPC (and variant of it) one soak request drew from the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Op {
    ListScripts,
    GetScriptHit,
    GetScriptMiss,
    CreateSessionKeyed,
    CreateSessionKeyless,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::ListScripts => "ListScripts",
            Op::GetScriptHit => "GetScript(hit)",
            Op::GetScriptMiss => "GetScript(miss)",
            Op::CreateSessionKeyed => "CreateSession(key)",
            Op::CreateSessionKeyless => "CreateSession(no key)",
        }
    }
    fn is_write(self) -> bool {
        matches!(self, Op::CreateSessionKeyed | Op::CreateSessionKeyless)
    }
    /// Draw one by the mix (`r` uniform in 0..100).
    pub(super) fn draw(r: u64) -> Op {
        match r {
            0..15 => Op::ListScripts,
            15..35 => Op::GetScriptHit,
            35..40 => Op::GetScriptMiss,
            40..90 => Op::CreateSessionKeyed,
            _ => Op::CreateSessionKeyless,
        }
    }
}

/// Whether `(code, reason)` is an answer a soak fault (or the request itself) can give `op`.
/// `retry`: a keyed CreateSession retried after an answer that may have created the session.
pub(super) fn expected(op: Op, code: Code, reason: &str, retry: bool) -> bool {
    match (code, reason) {
        (Code::Unavailable, "UPSTREAM_UNAVAILABLE")
        | (Code::ResourceExhausted, "UPSTREAM_RATE_LIMITED")
        | (Code::Internal, "UPSTREAM_MALFORMED" | "UPSTREAM_INTERNAL_ERROR")
        | (Code::DeadlineExceeded, "UPSTREAM_TIMEOUT") => true,
        // A read loses its connection; a write cannot know whether the upstream acted.
        (Code::Unavailable, "UPSTREAM_CONNECTION_LOST") => !op.is_write(),
        (Code::Unavailable, "UPSTREAM_OUTCOME_UNKNOWN") => op.is_write(),
        // A write is one attempt over the whole deadline: slow headers or body run it out.
        (Code::DeadlineExceeded, "DEADLINE_EXCEEDED") => op.is_write(),
        // Two 401s for one call: the token it refreshed to was invalidated again before its
        // one retry (a second expiry, or the 401 fault meeting the retry), or the token
        // endpoint itself answered 401 (the matrix rows "401 twice" and "token endpoint: 401").
        (Code::Unauthenticated, "UPSTREAM_UNAUTHENTICATED") => true,
        (Code::NotFound, "SCRIPT_NOT_FOUND") => op == Op::GetScriptMiss,
        (Code::AlreadyExists, "SESSION_ALREADY_EXISTS") => op == Op::CreateSessionKeyed && retry,
        _ => false,
    }
}

/// Whether a CreateSession answered this may still have started the session upstream.
pub(super) fn may_have_created(code: Code, reason: &str) -> bool {
    matches!(
        (code, reason),
        (Code::Unavailable, "UPSTREAM_OUTCOME_UNKNOWN")
            | (Code::DeadlineExceeded, _)
            | (Code::Internal, "UPSTREAM_MALFORMED")
            | (Code::Cancelled, _)
            | (Code::Unknown, _)
    )
}

/// Whether a caller retries a keyed CreateSession answered this (with the same key).
pub(super) fn worth_retrying(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Internal | Code::Cancelled
    )
}

/// One answer, as the soak counts it.
pub(super) struct Answer {
    pub(super) code: Code,
    pub(super) reason: String,
    pub(super) message: String,
}

impl Answer {
    pub(super) fn ok() -> Self {
        Answer { code: Code::Ok, reason: String::new(), message: String::new() }
    }
    pub(super) fn from_status(s: &tonic::Status) -> Self {
        let reason = s.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_else(|| "-".into());
        Answer { code: s.code(), reason, message: s.message().chars().take(200).collect() }
    }
    /// An OK answer whose content is wrong.
    pub(super) fn bad(what: &str) -> Self {
        Answer { code: Code::Ok, reason: format!("BAD_ANSWER:{what}"), message: what.into() }
    }
}

/// What each worker accumulates.
#[derive(Default)]
pub(super) struct Tally {
    /// (rpc, code, reason) → count.
    pub(super) answers: BTreeMap<(String, String, String), u64>,
    pub(super) unexpected: u64,
    /// CANCELLED "Timeout expired" at or past the deadline: the caller's own tonic timer (its
    /// channel enforces the grpc-timeout it sends) fired before the facade's DEADLINE_EXCEEDED,
    /// sent 100 ms early, reached it: a scheduling stall of over 100 ms on an overloaded machine.
    /// Counted and printed apart; not a facade answer.
    pub(super) caller_timeouts: u64,
    /// The first unexpected answers, in words.
    pub(super) unexpected_samples: Vec<String>,
    /// Keys whose session is known created (OK, or ALREADY_EXISTS after an open outcome).
    pub(super) keys_created: Vec<u64>,
    /// Keys given up on while the outcome was open.
    pub(super) keys_open: u64,
    /// Keys that failed for sure (no attempt may have created them).
    pub(super) keys_failed: u64,
    /// Keys answered ALREADY_EXISTS on a first attempt, or after answers that created nothing.
    pub(super) keys_duplicate: Vec<u64>,
    pub(super) keyed_retries: u64,
    pub(super) keyless_ok: u64,
    pub(super) keyless_open: u64,
    /// Latency of OK answers, µs.
    pub(super) hist: Option<Histogram<u64>>,
}

impl Tally {
    pub(super) fn record(&mut self, op: Op, a: &Answer, retry: bool, us: u64) {
        let code = if a.code == Code::Ok && a.reason.is_empty() { "OK".to_owned() } else { format!("{:?}", a.code) };
        *self.answers.entry((op.name().to_owned(), code.clone(), a.reason.clone())).or_insert(0) += 1;
        let fine = if a.code == Code::Ok { a.reason.is_empty() } else { expected(op, a.code, &a.reason, retry) };
        let callers_own_timer =
            a.code == Code::Cancelled && a.message == "Timeout expired" && Duration::from_micros(us) >= DEADLINE;
        if callers_own_timer {
            self.caller_timeouts += 1;
        } else if !fine {
            self.unexpected += 1;
            if self.unexpected_samples.len() < 20 {
                self.unexpected_samples.push(format!("{} {code} {} ({})", op.name(), a.reason, a.message));
            }
        } else if a.code == Code::Ok {
            if let Some(h) = &mut self.hist {
                h.saturating_record(us.max(1));
            }
        }
    }

    pub(super) fn merge(&mut self, o: Tally) {
        for (k, v) in o.answers {
            *self.answers.entry(k).or_insert(0) += v;
        }
        self.unexpected += o.unexpected;
        self.caller_timeouts += o.caller_timeouts;
        for s in o.unexpected_samples {
            if self.unexpected_samples.len() < 20 {
                self.unexpected_samples.push(s);
            }
        }
        self.keys_created.extend(o.keys_created);
        self.keys_open += o.keys_open;
        self.keys_failed += o.keys_failed;
        self.keys_duplicate.extend(o.keys_duplicate);
        self.keyed_retries += o.keyed_retries;
        self.keyless_ok += o.keyless_ok;
        self.keyless_open += o.keyless_open;
        if let (Some(h), Some(oh)) = (&mut self.hist, &o.hist) {
            let _ = h.add(oh);
        }
    }
}

/// The histogram of OK latencies, in µs (1 µs .. 120 s, 3 significant digits).
pub(super) fn new_hist() -> Option<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).ok()
}
