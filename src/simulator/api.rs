//! The simulated callBot REST endpoints: `/api/auth`, `/api/call_bot/script/list`, `/api/call_bot/execute_by_phone`.
//! An accepted (not faulted) session's calls are then placed by `dialer.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value, json};

use super::MAX_BODY_BYTES;
use super::dialer::{self, SessionPlan};
use super::state::{Accept, Session, Sim, key_id, unix_ms};

/// `instance_id` of every envelope.
pub(crate) const INSTANCE_ID: &str = "sim";
/// `instance_version` of every envelope.
pub(crate) const INSTANCE_VERSION: &str = "1.2.164";

/// The voices the upstream documents.
const VOICES: [&str; 3] = ["northern_female_ngocanh", "southern_female_honganh", "southern_male_tienhuy"];

/// Marker extension: the request is being answered under a fault (e.g. truncation); do not record it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faulted;

/// A response with a JSON body.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json; charset=utf-8"));
    resp
}

/// The success envelope's bytes around an already-serialized payload.
pub(crate) fn ok_envelope_raw(payload: &[u8]) -> Vec<u8> {
    let head = format!(
        "{{\"instance_id\":\"{INSTANCE_ID}\",\"instance_version\":\"{INSTANCE_VERSION}\",\"key_enabled\":false,\"status_code\":9999,\"payload\":"
    );
    let mut out = Vec::with_capacity(head.len() + payload.len() + 1);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out.push(b'}');
    out
}

/// 200 + success envelope.
pub(crate) fn ok(payload: &Value) -> Response {
    let payload = serde_json::to_vec(payload).unwrap_or_else(|_| b"null".to_vec());
    json_response(StatusCode::OK, ok_envelope_raw(&payload))
}

/// The failure envelope's bytes.
pub(crate) fn fail_body(code: &str, message: &str) -> Vec<u8> {
    let v = json!({
        "instance_id": INSTANCE_ID,
        "instance_version": INSTANCE_VERSION,
        "key_enabled": false,
        "status_code": -9999,
        "message": code,
        "payload": {"status": "fail", "error": code, "message": message},
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// 200 + failure envelope (business error).
pub(crate) fn fail(code: &str, message: &str) -> Response {
    json_response(StatusCode::OK, fail_body(code, message))
}

const CHECK_INPUT: &str = "Please check your input param";

/// 401 with the upstream's non-JSON body.
fn unauthorized(sim: &Sim) -> Response {
    sim.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
    let mut resp = Response::new(Body::from("Unauthorized"));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// Decode `application/x-www-form-urlencoded` text (lossy UTF-8, never fails).
fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of query parameter `name`, if present (possibly empty).
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .find(|(k, _)| url_decode(k) == name)
        .map(|(_, v)| url_decode(v))
}

/// A JWT-shaped token: standard header, claims with a key-derived subject, random signature.
fn make_token(api_key: &str, ttl_secs: u64) -> String {
    let iat = unix_ms() / 1000;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = json!({
        "sub": key_id(api_key),
        "iat": iat,
        "exp": iat.saturating_add(ttl_secs),
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let sig = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    format!("{header}.{claims}.{sig}")
}

/// `GET /api/auth?apiKey=<key>`.
pub(crate) async fn auth(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let key = query_param(req.uri().query(), "apiKey").unwrap_or_default();
    if key.is_empty() {
        return fail("api_key_is_required", "API key is required");
    }
    if !sim.key_valid(&key) {
        return fail("api_key_invalid", "API key is invalid");
    }
    let token = make_token(&key, sim.config.token_ttl.as_secs());
    sim.remember_token(token.clone(), &key);
    ok(&json!({"access_token": token, "token_type": "Bearer", "access_type": "normal"}))
}

/// Check `x-api-key` and the bearer token; returns the API key or the response to send.
#[allow(clippy::result_large_err)] // the error is the response itself, built once per rejected request
pub(crate) fn check_auth(sim: &Sim, headers: &HeaderMap) -> Result<String, Response> {
    let key = match headers.get("x-api-key") {
        None => return Err(fail("api_key_is_required", "API key is required")),
        Some(v) => match v.to_str() {
            Ok("") => {
                return Err(fail("api_key_is_required", "API key is required"));
            }
            Ok(k) => k.to_owned(),
            Err(_) => return Err(fail("api_key_invalid", "API key is invalid")),
        },
    };
    if !sim.key_valid(&key) {
        return Err(fail("api_key_invalid", "API key is invalid"));
    }
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    match token {
        Some(t) if !t.is_empty() && sim.token_valid(t, &key) => Ok(key),
        _ => Err(unauthorized(sim)),
    }
}

/// `GET /api/call_bot/script/list`.
pub(crate) async fn script_list(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let key = match check_auth(&sim, req.headers()) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    json_response(StatusCode::OK, ok_envelope_raw(&sim.catalogue_raw(&key)))
}

/// An optional integer field: absent/null → `Ok(None)`; an integral number → `Ok(Some)`; else `Err`.
pub(crate) fn int_field(obj: &Map<String, Value>, name: &str) -> Result<Option<i64>, ()> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                    _ => Err(()),
                }
            }
        }
        Some(_) => Err(()),
    }
}

/// Whether `phone` matches `^\+?[0-9]{8,15}$`.
pub(crate) fn phone_valid(phone: &str) -> bool {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The simulated do-not-call list: every (well-formed) phone number whose last three digits are `999`
/// is on it, and is rejected per contact with reason `number_dnc`.
pub(crate) fn on_dnc_list(phone: &str) -> bool {
    phone.ends_with("999")
}

fn invalid(field: &str) -> Response {
    fail(&format!("{field}_invalid"), CHECK_INPUT)
}

/// Validate the request body; on success returns the per-contact rejections.
#[allow(clippy::result_large_err)]
fn validate(sim: &Sim, api_key: &str, obj: &Map<String, Value>) -> Result<(String, Vec<Value>), Response> {
    let script_id = match obj.get("bot_script_id") {
        None | Some(Value::Null) => {
            return Err(fail("bot_script_id_is_required", CHECK_INPUT));
        }
        Some(Value::String(s)) if s.is_empty() => {
            return Err(fail("bot_script_id_is_required", CHECK_INPUT));
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("bot_script_id")),
    };
    let contacts = match obj.get("contact_info") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        None | Some(Value::Null) | Some(Value::Array(_)) => {
            return Err(fail("data_is_required", CHECK_INPUT));
        }
        Some(_) => return Err(invalid("contact_info")),
    };
    match obj.get("voice") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if VOICES.contains(&v.as_str()) => {}
        Some(_) => return Err(invalid("voice")),
    }
    match int_field(obj, "speed") {
        Ok(None) => {}
        Ok(Some(s)) if (-3..=3).contains(&s) => {}
        _ => return Err(invalid("speed")),
    }
    for (field, min) in
        [("num_retry", 0), ("num_per_call", 1), ("distance_per_call", 0), ("distance_retry", 0), ("send_time", 0)]
    {
        match int_field(obj, field) {
            Ok(None) => {}
            Ok(Some(v)) if v >= min => {}
            _ => return Err(invalid(field)),
        }
    }
    for field in ["name", "cid", "ext_session_id"] {
        match obj.get(field) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(_) => return Err(invalid(field)),
        }
    }
    match obj.get("auto_pause") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(_) => return Err(invalid("auto_pause")),
    }
    if !sim.script_exists(api_key, &script_id) {
        return Err(fail("bot_script_id_invalid", "Bot script not found"));
    }
    let mut errors = Vec::new();
    for contact in contacts {
        let phone = contact.get("phone");
        let phone_str = match phone {
            Some(Value::String(p)) => p.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let shown = match phone {
            Some(Value::String(p)) => Value::String(p.clone()),
            Some(other) => other.clone(),
            None => Value::Null,
        };
        if !contact.is_object() || !phone_valid(&phone_str) {
            errors.push(json!({"phone": shown, "error": "phone_invalid"}));
        } else if on_dnc_list(&phone_str) {
            errors.push(json!({"phone": shown, "error": "number_dnc"}));
        }
    }
    Ok((script_id, errors))
}

/// `POST /api/call_bot/execute_by_phone?cid=<cid>`.
pub(crate) async fn execute(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let key = match check_auth(&sim, &parts.headers) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let dry_run = parts.extensions.get::<Faulted>().is_some();
    let Some(cid) = query_param(parts.uri.query(), "cid") else {
        return fail("cid_is_required", CHECK_INPUT);
    };
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return fail("request_body_required", "Request body is required"),
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return fail("request_body_required", "Request body is required"),
    };
    let Some(obj) = value.as_object() else {
        return fail("request_body_required", "Request body is required");
    };
    let (script_id, errors) = match validate(&sim, &key, obj) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let ext_session_id = match obj.get("ext_session_id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let autocall_id = sim.new_object_id();
    let plan = SessionPlan::new(autocall_id.clone(), key_id(&key), &cid, obj);
    let session = Session {
        autocall_id,
        ext_session_id: ext_session_id.clone(),
        api_key_id: key_id(&key),
        cid,
        headers: ["x-request-id", "traceparent", "tracestate"]
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), Value::String(value.to_owned())))
            })
            .collect(),
        body: bytes,
        received_at_ms: 0,
        http_version: match parts.version {
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
    };
    match sim.accept_session(session, dry_run) {
        Accept::Duplicate(existing) => fail(
            "ext_session_id_duplicated",
            &format!("ext_session_id {} already used by session {existing}", ext_session_id.unwrap_or_default()),
        ),
        Accept::Accepted(autocall_id) => {
            if !dry_run {
                dialer::start(&sim, plan);
            }
            let mut payload = json!({"bot_script_id": script_id, "autocall_id": autocall_id});
            if !errors.is_empty() {
                if let Some(p) = payload.as_object_mut() {
                    p.insert("errors".into(), Value::Array(errors));
                }
            }
            ok(&payload)
        }
    }
}
