//! The JSON the console's pages read, each from the `CallBotService` handler a gRPC caller would
//! call (ListSessions, GetSessionReport, ListScripts), as the viewer's tenant; phones masked
//! unless `--console-show-phones`. Health reads the facade's own figures.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::{Console, harden, json_error, status_error};
use crate::{
    domain::{listing::MAX_PAGE_SIZE, mask_phone},
    pb::{self, call_bot_service_server::CallBotService as _},
};

/// Sessions a campaign page sums up at most (its chunks).
const MAX_CAMPAIGN_CHUNKS: usize = 10_000;

impl Console {
    /// A phone as the console shows it.
    pub(crate) fn phone(&self, phone: &str) -> String {
        if self.show_phones { phone.to_owned() } else { mask_phone(phone) }
    }
}

fn unauthorized() -> Response {
    json_error(StatusCode::UNAUTHORIZED, "CONSOLE_LOGIN_REQUIRED", "sign in at /console/login")
}

fn ok(value: Value) -> Response {
    harden(Json(value).into_response())
}

fn ms(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.seconds * 1000 + i64::from(t.nanos / 1_000_000)))
}

fn word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

/// One session of a listing: its names, purpose ("" when not said), creation and dialling start
/// (null: at once), its report's counts (with `unknown` and `reconciled`) and the contacts refused
/// before dialling by reason.
pub(crate) fn summary_json(s: &pb::SessionSummary) -> Value {
    let session = s.session.clone().unwrap_or_default();
    let purpose = match s.purpose() {
        pb::CallPurpose::Unspecified => String::new(),
        p => word(p.as_str_name(), "CALL_PURPOSE_"),
    };
    json!({
        "id": session.id,
        "key": session.external_session_id,
        "script_id": s.script_id,
        "name": s.name,
        "purpose": purpose,
        "created_ms": ms(s.created_at.as_ref()),
        "start_ms": ms(session.start_time.as_ref()),
        "contacts_total": s.contacts_total,
        "counts": {
            "answered": s.answered,
            "no_answer": s.no_answer,
            "busy": s.busy,
            "rejected": s.rejected,
            "failed": s.failed,
            "unknown": s.unknown,
            "in_progress": s.in_progress,
        },
        "reconciled": s.reconciled,
        "refused": s.refused_contacts,
        "finished": s.finished,
    })
}

/// A session's report, phones as the console shows them.
pub(crate) fn report_json(console: &Console, r: &pb::GetSessionReportResponse) -> Value {
    json!({
        "session_id": r.session_id,
        "contacts_total": r.contacts_total,
        "counts": {
            "answered": r.answered,
            "no_answer": r.no_answer,
            "busy": r.busy,
            "rejected": r.rejected,
            "failed": r.failed,
            "unknown": r.unknown,
            "in_progress": r.in_progress,
        },
        "reconciled": r.reconciled,
        "finished": r.finished,
        "contacts": r.contacts.iter().map(|c| json!({
            "phone": console.phone(&c.phone),
            "state": word(c.state().as_str_name(), "CALL_STATE_"),
            "outcome": word(c.outcome().as_str_name(), "CALL_OUTCOME_"),
            "attempts": c.attempts,
            "talk_s": c.talk_duration.as_ref().map(|d| d.seconds),
            "last_event_ms": ms(c.last_event_at.as_ref()),
            "final": c.r#final,
            "source": word(c.source().as_str_name(), "CALL_EVENT_SOURCE_"),
        })).collect::<Vec<_>>(),
    })
}

/// One call event for the timeline.
pub(crate) fn event_json(console: &Console, e: &pb::CallEvent) -> Value {
    json!({
        "id": e.id,
        "call_id": e.call_id,
        "phone": console.phone(&e.phone),
        "state": word(e.state().as_str_name(), "CALL_STATE_"),
        "outcome": word(e.outcome().as_str_name(), "CALL_OUTCOME_"),
        "occurred_ms": ms(e.occurred_at.as_ref()),
        "attempt": e.attempt,
        "talk_s": e.talk_duration.as_ref().map(|d| d.seconds),
        "disposition": e.disposition,
        "hangup_cause": e.hangup_cause,
    })
}

/// `GET /console/api/me`: who the console acts as, and the logout form's CSRF token.
pub(super) async fn me(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Ok(viewer) = console.viewer(&headers) else { return unauthorized() };
    ok(json!({
        "tenant": &*viewer.tenant.name,
        "login": viewer.csrf.is_some(),
        "csrf": viewer.csrf,
        "show_phones": console.show_phones,
    }))
}

/// The Sessions page's filters.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct SessionFilter {
    /// A campaign id (prefix of the external session id).
    #[serde(default)]
    pub(crate) campaign: String,
    /// A script id (exact).
    #[serde(default)]
    pub(crate) script: String,
    /// Created after this Unix millisecond.
    #[serde(default)]
    pub(crate) after_ms: Option<i64>,
    /// The next page's token.
    #[serde(default)]
    pub(crate) page_token: String,
}

/// A page of the viewer's sessions (ListSessions), filtered by script on top; the JSON of
/// `/console/api/sessions` and of the Sessions page's live stream.
pub(crate) async fn sessions_page(
    console: &Console,
    viewer: &super::auth::Viewer,
    filter: &SessionFilter,
) -> Result<Value, tonic::Status> {
    let request = pb::ListSessionsRequest {
        page_size: 100,
        page_token: filter.page_token.clone(),
        campaign_id: filter.campaign.clone(),
        created_after: filter.after_ms.map(|ms| prost_types::Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
    };
    let page = console.api.list_sessions(console.call(viewer, request)).await?.into_inner();
    let sessions: Vec<Value> = page
        .sessions
        .iter()
        .filter(|s| filter.script.is_empty() || s.script_id == filter.script)
        .map(summary_json)
        .collect();
    Ok(json!({ "sessions": sessions, "next_page_token": page.next_page_token }))
}

/// `GET /console/api/sessions?campaign=&script=&after_ms=&page_token=`.
pub(super) async fn sessions(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filter): Query<SessionFilter>,
) -> Response {
    let Ok(viewer) = console.viewer(&headers) else { return unauthorized() };
    match sessions_page(&console, &viewer, &filter).await {
        Ok(v) => ok(v),
        Err(status) => status_error(&status),
    }
}

/// `GET /console/api/sessions/<id>`: the session's report (GetSessionReport), by its id or the
/// caller's key for it; another tenant's session is the same "not found".
pub(super) async fn session(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Ok(viewer) = console.viewer(&headers) else { return unauthorized() };
    let request = console.call(&viewer, pb::GetSessionReportRequest { session_id: id });
    match console.api.get_session_report(request).await {
        Ok(report) => ok(report_json(&console, report.get_ref())),
        Err(status) => status_error(&status),
    }
}

/// `GET /console/api/campaigns/<id>`: the campaign's chunks (sessions keyed `<id>-<index>`),
/// their contacts and outcomes summed, and progress toward finished.
pub(super) async fn campaign(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Ok(viewer) = console.viewer(&headers) else { return unauthorized() };
    let prefix = format!("{id}-");
    let mut chunks = Vec::new();
    let mut token = String::new();
    loop {
        let request = pb::ListSessionsRequest {
            page_size: MAX_PAGE_SIZE as i32,
            page_token: token.clone(),
            campaign_id: prefix.clone(),
            created_after: None,
        };
        let page = match console.api.list_sessions(console.call(&viewer, request)).await {
            Ok(page) => page.into_inner(),
            Err(status) => return status_error(&status),
        };
        // Only the campaign's own chunks: "<id>-<digits>" (another campaign may extend the id).
        chunks.extend(page.sessions.into_iter().filter(|s| {
            let key = s.session.as_ref().map_or("", |s| s.external_session_id.as_str());
            key.strip_prefix(&prefix).is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        }));
        if page.next_page_token.is_empty() || chunks.len() >= MAX_CAMPAIGN_CHUNKS {
            break;
        }
        token = page.next_page_token;
    }
    if chunks.is_empty() {
        return json_error(StatusCode::NOT_FOUND, "CAMPAIGN_NOT_FOUND", "no session of this campaign is recorded here");
    }
    let index = |s: &pb::SessionSummary| {
        s.session.as_ref().and_then(|s| s.external_session_id.rsplit('-').next()?.parse::<u64>().ok()).unwrap_or(0)
    };
    chunks.sort_by_key(index);
    let sum = |f: fn(&pb::SessionSummary) -> i64| chunks.iter().map(f).sum::<i64>();
    let total = sum(|s| s.contacts_total);
    let done = total - sum(|s| s.in_progress);
    let mut refused: BTreeMap<&str, i64> = BTreeMap::new();
    for (reason, n) in chunks.iter().flat_map(|s| &s.refused_contacts) {
        *refused.entry(reason).or_default() += n;
    }
    ok(json!({
        "campaign_id": id,
        "chunks": chunks.iter().map(|s| {
            let mut v = summary_json(s);
            v["index"] = json!(index(s));
            v
        }).collect::<Vec<_>>(),
        "contacts_total": total,
        "contacts_final": done,
        "contacts_refused": refused.values().sum::<i64>(),
        "refused_by_reason": refused,
        "counts": {
            "answered": sum(|s| s.answered),
            "no_answer": sum(|s| s.no_answer),
            "busy": sum(|s| s.busy),
            "rejected": sum(|s| s.rejected),
            "failed": sum(|s| s.failed),
            "unknown": sum(|s| s.unknown),
            "in_progress": sum(|s| s.in_progress),
        },
        "reconciled": sum(|s| s.reconciled),
        "finished": chunks.iter().all(|s| s.finished),
    }))
}

/// The Scripts page's search.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ScriptSearch {
    /// Folded like `ListScriptsRequest.name_contains` (case and Vietnamese diacritics).
    #[serde(default)]
    q: String,
}

/// `GET /console/api/scripts?q=`: ListScripts with `name_contains`, folded by the service.
pub(super) async fn scripts(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(search): Query<ScriptSearch>,
) -> Response {
    let Ok(viewer) = console.viewer(&headers) else { return unauthorized() };
    match list_scripts(&console, &viewer, search.q).await {
        Ok(scripts) => ok(json!({ "scripts": scripts })),
        Err(status) => status_error(&status),
    }
}

async fn list_scripts(console: &Console, viewer: &super::auth::Viewer, q: String) -> Result<Vec<Value>, tonic::Status> {
    let request = console.call(viewer, pb::ListScriptsRequest { name_contains: q });
    let mut stream = console.api.list_scripts(request).await?.into_inner();
    let mut out = Vec::new();
    while let Some(message) = stream.next().await {
        let Some(s) = message?.script else { continue };
        out.push(json!({
            "id": s.id,
            "name": s.name,
            "variables": s.variables.iter().map(|v| json!({
                "field_code": v.field_code,
                "field_name": v.field_name,
                "required": v.is_dynamic_attribute,
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(out)
}

/// Sums of the samples of the families named `family` (`_total` included) in Prometheus text,
/// by the value of `label` ("" = one sum under "").
fn samples(text: &str, family: &str, label: &str) -> BTreeMap<String, f64> {
    samples_of(text, family, label, None)
}

/// A label's value in a series' labels (`a="x",b="y"`), or "".
fn label_value<'a>(labels: &'a str, label: &str) -> &'a str {
    labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == label)
        .map_or("", |(_, v)| v.trim_matches('"'))
}

/// As [`samples`], of the series whose `tenant` label is `tenant` only, when given.
fn samples_of(text: &str, family: &str, label: &str, tenant: Option<&str>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        if name != family && name.strip_suffix("_total") != Some(family) {
            continue;
        }
        let Ok(value) = value.parse::<f64>() else { continue };
        if tenant.is_some_and(|t| label_value(labels, "tenant") != t) {
            continue;
        }
        let key = label_value(labels, label).to_owned();
        *out.entry(key).or_insert(0.0) += value;
    }
    out
}

/// `GET /console/api/health`: the upstream (the viewer's scripts listed, how long it took), the
/// event store, webhook deliveries per second since the last read, the viewer's tenant's contacts
/// refused by the calling policy by reason (another tenant's are not shown).
pub(super) async fn health(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Ok(viewer) = console.viewer(&headers) else { return unauthorized() };
    let started = Instant::now();
    let upstream = match list_scripts(&console, &viewer, String::new()).await {
        Ok(scripts) => {
            json!({ "reachable": true, "ms": started.elapsed().as_millis() as u64, "scripts": scripts.len() })
        }
        Err(status) => json!({
            "reachable": false,
            "ms": started.elapsed().as_millis() as u64,
            "reason": tonic_types::StatusExt::get_error_details(&status).error_info().map(|i| i.reason.clone()),
        }),
    };
    let store_up = console.events.health().is_none_or(|rx| *rx.borrow());
    let text = console.metrics.render();
    let delivered: f64 = samples(&text, "callbot_webhook_deliveries", "").values().sum();
    let rate = {
        let mut last = console.deliveries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let rate = last.map(|(at, n)| {
            let secs = now.duration_since(at).as_secs_f64();
            if secs > 0.0 { (delivered - n).max(0.0) / secs } else { 0.0 }
        });
        *last = Some((now, delivered));
        rate
    };
    let refusals: BTreeMap<String, f64> =
        samples_of(&text, "callbot_policy_refused_contacts", "reason", Some(&viewer.tenant.name));
    let shed: f64 = samples(&text, "callbot_shed", "").values().sum();
    ok(json!({
        "upstream": upstream,
        "event_store_up": store_up,
        "webhook_deliveries_total": delivered,
        "webhook_deliveries_per_s": rate,
        "refusals_by_reason": refusals,
        "shed_total": shed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_samples_are_summed_by_label() {
        let text = "# HELP x\ncallbot_policy_refused_contacts_total{reason=\"QUIET_HOURS\",tenant=\"a\"} 3\n\
                    callbot_policy_refused_contacts_total{tenant=\"b\",reason=\"QUIET_HOURS\"} 2\n\
                    callbot_policy_refused_contacts_total{reason=\"DO_NOT_CALL\"} 1\n\
                    callbot_webhook_deliveries_total{outcome=\"stored\"} 7\ncallbot_webhook_deliveries_total{outcome=\"duplicate\"} 1\n\
                    callbot_webhook_deliveries_other 100\n";
        let by_reason = samples(text, "callbot_policy_refused_contacts", "reason");
        assert_eq!(by_reason.get("QUIET_HOURS"), Some(&5.0));
        assert_eq!(by_reason.get("DO_NOT_CALL"), Some(&1.0));
        assert_eq!(samples(text, "callbot_webhook_deliveries", "").get(""), Some(&8.0));
        assert!(samples(text, "callbot_nothing", "").is_empty());
        let of_a = samples_of(text, "callbot_policy_refused_contacts", "reason", Some("a"));
        assert_eq!(of_a, BTreeMap::from([("QUIET_HOURS".to_owned(), 3.0)]), "tenant b's and unlabelled are not a's");
    }

    fn summary() -> pb::SessionSummary {
        pb::SessionSummary {
            session: Some(pb::Session {
                id: "s1".into(),
                external_session_id: "camp-2".into(),
                start_time: Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 500_000_000 }),
                ..Default::default()
            }),
            contacts_total: 4,
            answered: 1,
            unknown: 1,
            in_progress: 2,
            reconciled: 1,
            purpose: pb::CallPurpose::Advertising as i32,
            refused_contacts: [("DO_NOT_CALL".to_owned(), 2), ("number_dnc".to_owned(), 1)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_summary_says_purpose_start_unknown_reconciled_and_refusals() {
        let v = summary_json(&summary());
        assert_eq!(v["purpose"], "advertising");
        assert_eq!(v["start_ms"], 1_800_000_000_500_i64);
        assert_eq!((v["counts"]["unknown"].as_i64(), v["reconciled"].as_i64()), (Some(1), Some(1)));
        assert_eq!(v["refused"], json!({"DO_NOT_CALL": 2, "number_dnc": 1}));
        let plain = pb::SessionSummary { session: Some(pb::Session::default()), ..Default::default() };
        let v = summary_json(&plain);
        assert_eq!((v["purpose"].as_str(), &v["start_ms"], &v["refused"]), (Some(""), &Value::Null, &json!({})));
    }
}
