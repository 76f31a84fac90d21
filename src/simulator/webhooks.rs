//! Webhook registration, per API key: `GET /api/webhooks/list`, `POST /api/webhooks/register`,
//! `POST /api/webhooks/destroy?hook_type=<type>`.
//!
//! Same headers (`x-api-key`, `Authorization: Bearer`) and envelope as the callBot paths:
//!
//! - list → `payload: [{"url": "...", "type": "call", "status": "actived"}]` (`[]` when none);
//! - register, body `{"webhook": {"type": "call", "url": "http(s)://...", "events": ["ringing", "answered",
//!   "hangup"] | null}}` → `payload: {"url": "...", "type": "call", "status": "actived"}`. One hook per type
//!   and key: registering again replaces it. `events` absent or `null` = every live state; the CDR is always
//!   sent. Business errors (HTTP 200, -9999): a body that is not JSON with a `webhook` object →
//!   `request_body_required`; a missing or blank `type` → `webhook_type_invalid`; a missing or blank `url`, or
//!   one not starting with `http://` or `https://` → `webhook_url_invalid`; `events` not null nor an array
//!   of strings → `webhook_events_invalid`. **The real provider insists on https; the simulator also
//!   accepts plain http** (loopback receivers in tests);
//! - destroy → `payload: null` (also when nothing was registered); no `hook_type` →
//!   `hook_type_is_required`.
//!
//! Only `call` hooks receive anything (`delivery.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::MAX_BODY_BYTES;
use super::api::{check_auth, fail, ok, query_param};
use super::state::{Sim, key_id};

/// One registered hook.
#[derive(Clone, Debug)]
pub(crate) struct Hook {
    pub url: String,
    /// The live states wanted; `None` = all.
    pub events: Option<Vec<String>>,
}

/// The hooks of every API key: (key id, type) → hook.
#[derive(Default)]
pub(crate) struct Hooks {
    hooks: Mutex<HashMap<(String, String), Hook>>,
}

impl Hooks {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Hook>> {
        self.hooks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hook of type `hook_type` registered by the key with id `api_key_id`.
    pub(crate) fn get(&self, api_key_id: &str, hook_type: &str) -> Option<Hook> {
        self.lock().get(&(api_key_id.to_owned(), hook_type.to_owned())).cloned()
    }

    fn list(&self, api_key_id: &str) -> Vec<(String, Hook)> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .filter(|((k, _), _)| k == api_key_id)
            .map(|((_, t), h)| (t.clone(), h.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

fn hook_json(hook_type: &str, url: &str) -> Value {
    json!({"url": url, "type": hook_type, "status": "actived"})
}

/// `GET /api/webhooks/list`.
pub(crate) async fn list(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let key = match check_auth(&sim, req.headers()) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let hooks: Vec<Value> = sim.hooks.list(&key_id(&key)).iter().map(|(t, h)| hook_json(t, &h.url)).collect();
    ok(&Value::Array(hooks))
}

/// `POST /api/webhooks/register`.
pub(crate) async fn register(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let key = match check_auth(&sim, &parts.headers) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.unwrap_or_default();
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(hook) = value.get("webhook").and_then(Value::as_object) else {
        return fail("request_body_required", "Request body is required");
    };
    let hook_type = match hook.get("type") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => return fail("webhook_type_invalid", "Webhook type is required"),
    };
    let url = match hook.get("url") {
        Some(Value::String(u)) if is_http_url(u.trim()) => u.trim().to_owned(),
        _ => return fail("webhook_url_invalid", "Webhook url must be an http(s) URL"),
    };
    let events = match hook.get("events") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Some(items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        }
        Some(_) => return fail("webhook_events_invalid", "Webhook events must be a list of states"),
    };
    let answer = hook_json(&hook_type, &url);
    sim.hooks.lock().insert((key_id(&key), hook_type), Hook { url, events });
    ok(&answer)
}

/// Whether `url` starts with `http://` or `https://` (any case) and has something after it.
fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["http://", "https://"].iter().any(|p| lower.len() > p.len() && lower.starts_with(p))
}

/// `POST /api/webhooks/destroy?hook_type=<type>`.
pub(crate) async fn destroy(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let key = match check_auth(&sim, req.headers()) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let Some(hook_type) = query_param(req.uri().query(), "hook_type").filter(|t| !t.trim().is_empty()) else {
        return fail("hook_type_is_required", "hook_type is required");
    };
    sim.hooks.lock().remove(&(key_id(&key), hook_type.trim().to_owned()));
    ok(&Value::Null)
}
