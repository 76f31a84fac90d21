//! The simulator's control surface under `/_sim/`: sessions, calls, stats, faults, webhook faults, time scale,
//! scripts and reset.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::MAX_BODY_BYTES;
use super::api::{json_response, query_param};
use super::calls::CallFilter;
use super::catalogue;
use super::faults::parse_faults;
use super::state::{Sim, key_id};
use super::webhook_faults;

/// Most scripts `{"generate": N}` may ask for.
const MAX_GENERATED_SCRIPTS: u64 = 1_000_000;

fn bad_request(message: &str) -> Response {
    let body = serde_json::to_vec(&json!({"error": message})).unwrap_or_default();
    json_response(StatusCode::BAD_REQUEST, body)
}

fn done() -> Response {
    json_response(StatusCode::OK, br#"{"ok":true}"#.to_vec())
}

async fn read_body(req: Request) -> Result<Bytes, Response> {
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|e| bad_request(&format!("cannot read body: {e}")))
}

/// `GET /_sim/sessions`: recorded sessions, in arrival order.
pub(crate) async fn sessions(State(sim): State<Arc<Sim>>) -> Response {
    json_response(StatusCode::OK, sim.sessions_json())
}

/// `GET /_sim/stats`: request counters.
pub(crate) async fn stats(State(sim): State<Arc<Sim>>) -> Response {
    let s = &sim.stats;
    let v = json!({
        "auth_calls": s.auth_calls.load(Ordering::Relaxed),
        "script_list_calls": s.script_list_calls.load(Ordering::Relaxed),
        "execute_calls": s.execute_calls.load(Ordering::Relaxed),
        "sessions_total": s.sessions_total.load(Ordering::Relaxed),
        "unauthorized": s.unauthorized.load(Ordering::Relaxed),
        "padding_bytes_sent": s.padding_bytes_sent.load(Ordering::Relaxed),
        "webhook_register_calls": s.webhook_register_calls.load(Ordering::Relaxed),
        "webhook_list_calls": s.webhook_list_calls.load(Ordering::Relaxed),
        "webhook_destroy_calls": s.webhook_destroy_calls.load(Ordering::Relaxed),
        "history_search_calls": s.history_search_calls.load(Ordering::Relaxed),
        "calls_placed": s.calls_placed.load(Ordering::Relaxed),
        "webhook_deliveries": s.webhook_deliveries.load(Ordering::Relaxed),
        "webhook_delivered": s.webhook_delivered.load(Ordering::Relaxed),
        "webhook_failed_attempts": s.webhook_failed_attempts.load(Ordering::Relaxed),
        "webhook_given_up": s.webhook_given_up.load(Ordering::Relaxed),
        "webhook_lost": s.webhook_lost.load(Ordering::Relaxed),
        "calls_never_ended": s.calls_never_ended.load(Ordering::Relaxed),
    });
    json_response(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default())
}

/// `POST /_sim/faults`: queue one fault object or an array of them.
pub(crate) async fn add_faults(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match parse_faults(&body) {
        Ok(faults) => {
            let n = faults.len();
            sim.push_faults(faults);
            json_response(StatusCode::OK, serde_json::to_vec(&json!({"ok": true, "queued": n})).unwrap_or_default())
        }
        Err(e) => bad_request(&e),
    }
}

/// `GET /_sim/faults`: the pending faults with their remaining counts.
pub(crate) async fn list_faults(State(sim): State<Arc<Sim>>) -> Response {
    json_response(StatusCode::OK, serde_json::to_vec(&sim.faults()).unwrap_or_default())
}

/// `DELETE /_sim/faults`: drop every pending fault.
pub(crate) async fn clear_faults(State(sim): State<Arc<Sim>>) -> Response {
    sim.clear_faults();
    done()
}

/// `PUT /_sim/scripts`: a JSON array replaces the catalogue verbatim; `{"generate": N}` generates N scripts.
/// With `?api_key=K` only the catalogue that key sees is replaced (other keys keep the shared one), so
/// tests can tell tenants apart.
pub(crate) async fn put_scripts(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let tenant = query_param(req.uri().query(), "api_key").filter(|k| !k.is_empty());
    let tenant = tenant.as_deref();
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("invalid JSON: {e}")),
    };
    match value {
        Value::Array(scripts) => {
            let raw = trim_ascii(body);
            sim.set_catalogue(tenant, &scripts, Some(raw));
            done()
        }
        Value::Object(obj) => match obj.get("generate").and_then(Value::as_u64) {
            Some(n) if n <= MAX_GENERATED_SCRIPTS && obj.len() == 1 => {
                let n = usize::try_from(n).unwrap_or(0);
                sim.set_catalogue(tenant, &catalogue::generate(n), None);
                done()
            }
            _ => {
                bad_request(&format!("expected a JSON array or {{\"generate\": N}} with N <= {MAX_GENERATED_SCRIPTS}"))
            }
        },
        _ => bad_request("expected a JSON array or {\"generate\": N}"),
    }
}

/// The body without leading/trailing ASCII whitespace (still the same JSON text).
fn trim_ascii(body: Bytes) -> Bytes {
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(body.len());
    let end = body.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    body.slice(start..end.max(start))
}

/// `POST /_sim/reset`: clear faults, sessions, counters and tokens; restore the built-in catalogue.
pub(crate) async fn reset(State(sim): State<Arc<Sim>>) -> Response {
    sim.reset();
    done()
}

/// `GET /_sim/calls[?session=<autocall_id>][&api_key=<key or key id>]`: the calls placed, in placement order,
/// and each session's progress (`calls.rs`).
pub(crate) async fn calls(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let query = req.uri().query();
    let session = query_param(query, "session").filter(|s| !s.is_empty());
    let api_key_id = query_param(query, "api_key").filter(|k| !k.is_empty()).map(|k| (key_id(&k), k));
    let filter = CallFilter { session: session.as_deref(), api_key_id };
    json_response(StatusCode::OK, serde_json::to_vec(&sim.calls.to_json(&filter)).unwrap_or_default())
}

fn time_scale_answer(sim: &Sim) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&json!({"time_scale": sim.clock.time_scale()})).unwrap_or_default(),
    )
}

/// `GET /_sim/time_scale`: `{"time_scale": X}`.
pub(crate) async fn get_time_scale(State(sim): State<Arc<Sim>>) -> Response {
    time_scale_answer(&sim)
}

/// `PUT /_sim/time_scale`, body `{"time_scale": X}` (finite, > 0): the waits that start afterwards use it.
pub(crate) async fn put_time_scale(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("invalid JSON: {e}")),
    };
    let scale = match value.as_object() {
        Some(obj) if obj.len() == 1 => obj.get("time_scale").and_then(Value::as_f64),
        _ => None,
    };
    let Some(scale) = scale else {
        return bad_request("expected {\"time_scale\": X}");
    };
    match sim.clock.set_time_scale(scale) {
        Ok(()) => time_scale_answer(&sim),
        Err(e) => bad_request(&e),
    }
}

/// `POST /_sim/webhook_faults`: queue one webhook fault object or an array of them (`webhook_faults.rs`).
pub(crate) async fn add_webhook_faults(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match webhook_faults::parse(&body) {
        Ok(faults) => {
            let n = faults.len();
            sim.wh_faults.push(faults);
            json_response(StatusCode::OK, serde_json::to_vec(&json!({"ok": true, "queued": n})).unwrap_or_default())
        }
        Err(e) => bad_request(&e),
    }
}

/// `GET /_sim/webhook_faults`: the pending webhook faults with their remaining counts.
pub(crate) async fn list_webhook_faults(State(sim): State<Arc<Sim>>) -> Response {
    json_response(StatusCode::OK, serde_json::to_vec(&sim.wh_faults.list()).unwrap_or_default())
}

/// `DELETE /_sim/webhook_faults`: drop every pending webhook fault.
pub(crate) async fn clear_webhook_faults(State(sim): State<Arc<Sim>>) -> Response {
    sim.wh_faults.clear();
    done()
}
