//! Reconciliation end to end (README, "Call outcomes"; docs/events.md, "Reconciliation"): the
//! simulator loses every webhook, or never ends a call; the facade fetches the outcomes from the
//! call history, gives up what never ends, and lets a late real outcome win. On JetStream, two
//! replicas reconcile each session once.
//!
//! `cargo test --test api reconcile -- --nocapture` prints the figures BENCHMARKS.md quotes
//! (searches per reconciled session, the time from `--reconcile-after` to a complete report).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::events::{FAST, create, free_addr, read_events, spawn_with_receiver, wait_session_done, wait_until};
use super::nats::Nats;
use super::*;

const AFTER: Duration = Duration::from_secs(1);

async fn webhook_fault(sim: &TestSim, fault: Value) {
    let r = reqwest::Client::new().post(format!("{}/_sim/webhook_faults", sim.url)).json(&fault).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

async fn report(app: &TestApp, session: &str) -> pb::GetSessionReportResponse {
    let request = pb::GetSessionReportRequest { session_id: session.to_owned() };
    app.client.clone().get_session_report(request).await.unwrap().into_inner()
}

async fn searches(sim: &TestSim) -> u64 {
    sim.stats().await["history_search_calls"].as_u64().unwrap()
}

async fn metrics(app: &TestApp) -> String {
    reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap()
}

/// The value of a sample line of `/metrics` (0 when absent).
fn sample(text: &str, series: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok()).map_or(0, |v| v as u64)
}

/// The simulator's outcome of each contact: its last call's.
fn outcomes(calls: &Value) -> Vec<(String, String)> {
    let calls = calls["calls"].as_array().unwrap();
    let mut last: std::collections::BTreeMap<String, &Value> = Default::default();
    for c in calls {
        let phone = c["phone"].as_str().unwrap().to_owned();
        if last.get(&phone).is_none_or(|l| l["attempt"].as_u64() < c["attempt"].as_u64()) {
            last.insert(phone, c);
        }
    }
    last.into_iter().map(|(p, c)| (p, c["outcome"].as_str().unwrap().to_owned())).collect()
}

fn outcome_word(o: pb::CallOutcome) -> String {
    o.as_str_name().trim_start_matches("CALL_OUTCOME_").to_lowercase()
}

#[tokio::test]
async fn a_session_whose_every_webhook_is_lost_is_reconciled_from_the_call_history() {
    let (app, _) = spawn_with_receiver(|s| s.events.reconcile_after = AFTER).await;
    webhook_fault(&app.sim, json!({"kind": "lose", "rate": 1.0})).await;
    let phones = ["0912345670", "+84912345675", "0912345676", "0912345677", "0912345678", "0912345679"];
    let searches_before = searches(&app.sim).await;
    let session = create(&app, &phones, 1).await;
    let created = Instant::now();
    let mut watch = app
        .client
        .clone()
        .watch_call_events(pb::WatchCallEventsRequest { session_id: session.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let calls = wait_session_done(&app.sim, &session).await;
    assert_eq!(app.sim.stats().await["webhook_delivered"], 0, "every webhook lost");
    let before = report(&app, &session).await;
    assert_eq!((before.in_progress, before.finished), (phones.len() as i64, false), "nothing known yet");

    wait_until(|| async { report(&app, &session).await.finished }).await;
    let complete = created.elapsed();
    let r = report(&app, &session).await;
    assert_eq!((r.reconciled, r.contacts_total, r.unknown), (phones.len() as i64, phones.len() as i64, 0));
    let want = outcomes(&calls);
    for c in &r.contacts {
        let sim = want.iter().find(|(p, _)| p.trim_start_matches('+') == c.phone.trim_start_matches('+')).unwrap();
        assert_eq!(outcome_word(c.outcome()), sim.1, "{}", c.phone);
        assert_eq!((c.source(), c.r#final), (pb::CallEventSource::History, true), "{}", c.phone);
    }
    // Redials are there too: 0912345676 answered on its second call.
    let six = r.contacts.iter().find(|c| c.phone == "0912345676").unwrap();
    assert_eq!((six.attempts, six.outcome()), (2, pb::CallOutcome::Answered));
    // Watchers got the events, with the provider's number and the caller's own.
    let n = calls["calls"].as_array().unwrap().len();
    let events = read_events(&mut watch, n).await;
    assert!(events.iter().all(|e| e.source() == pb::CallEventSource::History && e.id.ends_with("/cdr")));
    let zero = events.iter().find(|e| e.contact_phone == "0912345670").expect("the caller's own form");
    assert_eq!(zero.phone, "84912345670", "the provider's form stays in phone");
    assert!(events.iter().any(|e| e.contact_phone == "+84912345675"), "each contact as the caller wrote it");
    let m = metrics(&app).await;
    assert_eq!(sample(&m, "callbot_reconcile_events_total"), n as u64, "{m}");
    let used = searches(&app.sim).await - searches_before;
    assert_eq!(sample(&m, "callbot_reconcile_lookups_total{result=\"found\"}"), used, "every search counted");
    eprintln!(
        "reconcile figures: {used} call-history search(es) for 1 session of {} contacts ({n} calls, all webhooks lost); \
         report complete {:.2} s after --reconcile-after ({} s) from the session's creation",
        phones.len(),
        complete.as_secs_f64() - AFTER.as_secs_f64(),
        AFTER.as_secs()
    );
}

#[tokio::test]
async fn a_call_that_never_ends_is_unknown_after_give_up_and_a_late_real_cdr_replaces_it() {
    let (app, _) = spawn_with_receiver(|s| {
        s.events.reconcile_after = Duration::from_millis(500);
        s.events.call_give_up_after = Duration::from_secs(2);
    })
    .await;
    webhook_fault(&app.sim, json!({"kind": "never_ends", "count": 1})).await;
    let phones = ["0912345670", "0912345671"];
    let session = create(&app, &phones, 0).await;
    let mut watch = app
        .client
        .clone()
        .watch_call_events(pb::WatchCallEventsRequest {
            session_id: session.clone(),
            from_start: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let calls = wait_session_done(&app.sim, &session).await;
    let open = calls["calls"].as_array().unwrap().iter().find(|c| c["state"] != "ended").unwrap().clone();
    let open_phone = open["phone"].as_str().unwrap().to_owned();
    wait_until(|| async { report(&app, &session).await.finished }).await;
    let r = report(&app, &session).await;
    assert_eq!((r.unknown, r.answered, r.reconciled), (1, 1, 0), "{r:?}");
    let given_up = r.contacts.iter().find(|c| c.phone == open_phone).unwrap();
    assert_eq!(
        (given_up.outcome(), given_up.source(), given_up.state(), given_up.r#final),
        (pb::CallOutcome::Unknown, pb::CallEventSource::Facade, pb::CallState::Ended, true)
    );
    // The watcher sees the give-up: ringing, answered of the open call, 4 facts of the other, then it.
    let events = read_events(&mut watch, 7).await;
    let last = events.last().unwrap();
    assert_eq!((last.outcome(), last.source()), (pb::CallOutcome::Unknown, pb::CallEventSource::Facade));
    assert_eq!(
        (last.disposition.as_str(), last.contact_phone.as_str()),
        ("no outcome from the provider", open_phone.as_str())
    );
    assert_eq!(sample(&metrics(&app).await, "callbot_calls_given_up_total"), 1);

    // The provider's record comes after all: the real outcome wins.
    let cdr = json!({"transaction_id": open["call_id"], "autocall_id": session, "direction": "outbound",
        "destination_number": open["reported_phone"], "disposition": "answered", "hangup_cause": "NORMAL_CLEARING",
        "bill_sec": 25, "duration": 30, "created_date": open["started_at_ms"]});
    let status = reqwest::Client::new().post(app.webhook.as_ref().unwrap()).json(&cdr).send().await.unwrap().status();
    assert_eq!(status, 204);
    let r = report(&app, &session).await;
    let c = r.contacts.iter().find(|c| c.phone == open_phone).unwrap();
    assert_eq!((c.outcome(), c.source(), c.r#final), (pb::CallOutcome::Answered, pb::CallEventSource::Webhook, true));
    assert_eq!((r.unknown, r.answered), (0, 2));
    assert_eq!(c.talk_duration.as_ref().map(|d| d.seconds), Some(25));
}

/// A facade on `nats`'s stream, in front of the shared simulator at `sim`, its receiver on.
async fn replica_of(nats: &Nats, sim: &str, after: Duration) -> TestApp {
    let hook = free_addr();
    let mut settings = test_settings(sim);
    settings.events.webhook_listen = Some(hook);
    settings.events.webhook_secret = Some(ApiKey::new("test-webhook-secret"));
    settings.events.webhook_public_url = Some(format!("http://{hook}"));
    settings.events.nats_url = Some(nats.url());
    settings.events.reconcile_after = after;
    start(settings, TestSim::detached(sim)).await
}

#[tokio::test]
async fn two_replicas_on_jetstream_reconcile_each_call_once_within_the_budget() {
    let nats = Nats::start().await;
    let sim = TestSim::start(SimConfig { time_scale: FAST, ..SimConfig::default() }).await;
    webhook_fault(&sim, json!({"kind": "lose", "rate": 1.0})).await;
    let (a, b) = (replica_of(&nats, &sim.url, AFTER).await, replica_of(&nats, &sim.url, AFTER).await);
    let started = Instant::now();
    let phones = ["0912345670", "0912345675", "0912345677", "0912345678", "0912345679"];
    let mut sessions = Vec::new();
    for app in [&a, &b, &a] {
        let session = create(app, &phones, 1).await;
        wait_session_done(&sim, &session).await;
        sessions.push(session);
    }
    let mut calls = 0;
    for session in &sessions {
        calls += super::events::sim_calls(&sim, session).await["calls"].as_array().unwrap().len() as u64;
        wait_until(|| async { report(&a, session).await.finished && report(&b, session).await.finished }).await;
        let (on_a, on_b) = (report(&a, session).await, report(&b, session).await);
        assert_eq!(on_a, on_b, "the same report on both replicas");
        assert_eq!(on_a.reconciled, phones.len() as i64);
    }
    // Wait out a lease: nothing more is searched or stored.
    tokio::time::sleep(AFTER * 2).await;
    let elapsed = started.elapsed();
    let (ma, mb) = (metrics(&a).await, metrics(&b).await);
    let stored = sample(&ma, "callbot_reconcile_events_total") + sample(&mb, "callbot_reconcile_events_total");
    assert_eq!(stored, calls, "each call stored once, by one replica");
    for session in &sessions {
        let request =
            pb::WatchCallEventsRequest { session_id: session.clone(), from_start: true, ..Default::default() };
        let mut s = b.client.clone().watch_call_events(request).await.unwrap().into_inner();
        let n = super::events::sim_calls(&sim, session).await["calls"].as_array().unwrap().len();
        let events = read_events(&mut s, n).await;
        let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), n, "distinct");
        assert!(tokio::time::timeout(Duration::from_millis(300), s.message()).await.is_err(), "no second copy");
    }
    let used = searches(&sim).await;
    let counted: u64 = ["found", "not_found", "failed", "throttled"]
        .iter()
        .map(|r| {
            let series = format!("callbot_reconcile_lookups_total{{result=\"{r}\"}}");
            sample(&ma, &series) + sample(&mb, &series)
        })
        .sum();
    assert_eq!(counted, used, "every search counted by the replica that made it");
    assert!(used >= sessions.len() as u64, "each session searched");
    assert!(used <= 2 * sessions.len() as u64, "a session is searched by one replica at a time: {used}");
    // Within --history-budget (5/s, burst 10 per replica, one tenant).
    assert!(used as f64 <= 2.0 * (10.0 + 5.0 * elapsed.as_secs_f64()), "{used} searches in {elapsed:?}");
    eprintln!(
        "reconcile figures (JetStream, 2 replicas): {used} search(es) for {} sessions of {} contacts, {calls} calls stored once",
        sessions.len(),
        phones.len()
    );
}

#[tokio::test]
async fn reconciliation_survives_a_restart_of_the_facade_on_jetstream() {
    let nats = Nats::start().await;
    let sim = TestSim::start(SimConfig { time_scale: FAST, ..SimConfig::default() }).await;
    webhook_fault(&sim, json!({"kind": "lose", "rate": 1.0})).await;
    let phones = ["0912345670", "0912345677", "0912345679"];
    // Long enough for the first facade to be gone before it could search.
    let after = Duration::from_secs(3);
    let mut first = replica_of(&nats, &sim.url, after).await;
    let session = create(&first, &phones, 0).await;
    wait_session_done(&sim, &session).await;
    // Down before --reconcile-after: nothing was searched; no timer of it survives.
    first.shutdown();
    first.done.take().unwrap().await.unwrap().unwrap();
    assert_eq!(searches(&sim).await, 0);
    let again = replica_of(&nats, &sim.url, after).await;
    wait_until(|| async { report(&again, &session).await.finished }).await;
    let r = report(&again, &session).await;
    assert_eq!((r.reconciled, r.contacts_total), (3, 3));
    assert_eq!(searches(&sim).await, 1, "one search, by the restarted facade, from what the stream holds");
}

#[tokio::test]
async fn on_jetstream_a_search_put_off_by_a_429_goes_on_after_its_retry_after_under_its_own_lease() {
    let nats = Nats::start().await;
    let sim = TestSim::start(SimConfig { time_scale: FAST, ..SimConfig::default() }).await;
    webhook_fault(&sim, json!({"kind": "lose", "rate": 1.0})).await;
    // A lease of 4 s: waiting it out would take the report past the 10 s of wait_until.
    let after = Duration::from_secs(4);
    let app = replica_of(&nats, &sim.url, after).await;
    sim.fault(json!({"path": "/api/v3/call-transaction/search", "status": 429, "retry_after": 1})).await;
    let session = create(&app, &["0912345670", "0912345677"], 0).await;
    let created = Instant::now();
    wait_until(|| async { report(&app, &session).await.finished }).await;
    let took = created.elapsed();
    assert!(took < after * 2, "retried after Retry-After, not after the lease: {took:?}");
    let m = metrics(&app).await;
    assert_eq!(sample(&m, "callbot_reconcile_lookups_total{result=\"throttled\"}"), 1, "{m}");
    assert_eq!(sample(&m, "callbot_reconcile_lookups_total{result=\"found\"}"), 1, "{m}");
    assert_eq!(report(&app, &session).await.reconciled, 2);
}
