//! Webhook fault injection: the JSON format of `POST /_sim/webhook_faults` and the queue deliveries take from.
//!
//! A webhook fault is a JSON object; `POST /_sim/webhook_faults` takes one object or an array of them, queued
//! FIFO (`GET` lists the pending ones with their remaining counts, `DELETE` clears them):
//!
//! ```json
//! {"kind": "duplicate" | "reorder" | "delay" | "drop_first" | "no_autocall_id" | "lose" | "never_ends",
//!  "count": 1, "rate": 0.25, "delay_ms": 500}
//! ```
//!
//! - `duplicate`: the next `count` deliveries are each POSTed twice, the second after the first finished
//!   (delivered or given up);
//! - `reorder`: the next `count` *calls* deliver their facts in reverse order: the CDR first, then hangup,
//!   answered, ringing (the facts are held until the CDR exists);
//! - `delay`: the next `count` deliveries wait `delay_ms` (required, only for this kind) before the first attempt;
//! - `drop_first`: the next `count` deliveries have their first attempt sent but its answer ignored and counted
//!   as a failed attempt, so it is retried: the receiver sees it twice;
//! - `no_autocall_id`: the next `count` CDRs omit `autocall_id` and `autocall_uuid`;
//! - `lose`: the next `count` deliveries are never made (no attempt at all); the call itself goes on and is in
//!   the call history as usual (`history.rs`), so only a facade that searches the history learns its outcome;
//! - `never_ends`: the next `count` *calls* never end: their live states up to the answer are delivered, but no
//!   hangup and no CDR, and the call stays `ringing`/`answered` in `GET /_sim/calls`, so the call history
//!   (which lists ended calls) does not have it either. The contact is not redialled.
//!
//! A *delivery* is one body (a live state or a CDR) with its retries. `count` defaults to 1. Instead of
//! `count`, `"rate": 0.0..=1.0` applies the fault to that fraction of the deliveries (or calls, for `reorder`)
//! until cleared (for demos and soak tests). Each delivery takes, for each kind, the first queued fault of that
//! kind that applies. An unknown key or kind, `count: 0`, both `count` and `rate`, a rate outside 0..=1, or
//! `delay_ms` missing on `delay` (or given on another kind) is refused with HTTP 400.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a webhook fault does (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Duplicate,
    Reorder,
    Delay,
    DropFirst,
    NoAutocallId,
    Lose,
    NeverEnds,
}

/// One queued webhook fault.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookFault {
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

impl WebhookFault {
    fn validate(&mut self) -> Result<(), String> {
        match (self.count, self.rate) {
            (Some(_), Some(_)) => return Err("give count or rate, not both".into()),
            (Some(0), None) => return Err("count must be at least 1".into()),
            (None, Some(r)) if !(0.0..=1.0).contains(&r) => return Err("rate must be within 0.0..=1.0".into()),
            (None, None) => self.count = Some(1),
            _ => {}
        }
        match (self.kind, self.delay_ms) {
            (Kind::Delay, None) => Err("a delay fault needs delay_ms".into()),
            (Kind::Delay, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err("delay_ms is only for kind delay".into()),
        }
    }
}

/// Parse the body of `POST /_sim/webhook_faults`: one fault object or an array of them.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<WebhookFault>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return Err("expected a webhook fault object or an array of them".into()),
    };
    items
        .into_iter()
        .map(|v| {
            let mut f = serde_json::from_value::<WebhookFault>(v).map_err(|e| format!("invalid webhook fault: {e}"))?;
            f.validate()?;
            Ok(f)
        })
        .collect()
}

/// The pending webhook faults.
#[derive(Default)]
pub(crate) struct Queue {
    faults: Mutex<VecDeque<WebhookFault>>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<WebhookFault>> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, faults: Vec<WebhookFault>) {
        self.lock().extend(faults);
    }

    pub(crate) fn list(&self) -> Vec<WebhookFault> {
        self.lock().iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Take the first queued fault of `kind` that applies (one count of it, or a successful roll of its rate).
    pub(crate) fn take(&self, kind: Kind) -> Option<WebhookFault> {
        let mut q = self.lock();
        if !q.iter().any(|f| f.kind == kind) {
            return None;
        }
        let mut hit = None;
        for (i, f) in q.iter_mut().enumerate().filter(|(_, f)| f.kind == kind) {
            match (f.count, f.rate) {
                (Some(n), _) => {
                    f.count = Some(n.saturating_sub(1));
                    hit = Some((i, f.clone(), n <= 1));
                    break;
                }
                (None, Some(rate)) if rand::random::<f64>() < rate => {
                    hit = Some((i, f.clone(), false));
                    break;
                }
                _ => {}
            }
        }
        let (i, f, used_up) = hit?;
        if used_up {
            q.remove(i);
        }
        Some(f)
    }
}
