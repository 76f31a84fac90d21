//! Call outcomes end to end: the simulator places the calls and posts them to the facade's
//! webhook receiver; WatchCallEvents and GetSessionReport tell them (README, "Call outcomes").

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use serde_json::Value;
use tonic::{Code, Request};

use super::*;

/// Simulated seconds per real second in these tests: a 90 s call lasts 30 ms.
pub const FAST: f64 = 3000.0;

/// A free loopback port (bound, then released for the facade to bind).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A facade with its receiver on, registered with its own simulator (which runs at `FAST`).
pub async fn spawn_with_receiver(adjust: impl FnOnce(&mut Settings)) -> (TestApp, SocketAddr) {
    let hook = free_addr();
    let sim = TestSim::start(SimConfig { time_scale: FAST, ..SimConfig::default() }).await;
    let mut settings = test_settings(&sim.url);
    settings.events.webhook_listen = Some(hook);
    settings.events.webhook_secret = Some(ApiKey::new("test-webhook-secret"));
    settings.events.webhook_public_url = Some(format!("http://{hook}"));
    adjust(&mut settings);
    let app = start(settings, sim).await;
    wait_until(|| async {
        let v: Value = reqwest::get(format!("{}/_sim/stats", app.sim.url)).await.unwrap().json().await.unwrap();
        v["webhook_register_calls"].as_u64() == Some(1)
    })
    .await;
    (app, hook)
}

/// Polls `check` until it holds (at most 10 s).
pub async fn wait_until<F, Fut>(check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until_within(Duration::from_secs(10), check).await;
}

/// Polls `check` until it holds (at most `within`).
pub async fn wait_until_within<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < until, "condition not met within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The simulator's `/_sim/calls` for one session.
pub async fn sim_calls(sim: &TestSim, session: &str) -> Value {
    reqwest::get(format!("{}/_sim/calls?session={session}", sim.url)).await.unwrap().json().await.unwrap()
}

/// Waits until the simulator has placed and ended every call of `session`; its `/_sim/calls`.
pub async fn wait_session_done(sim: &TestSim, session: &str) -> Value {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let calls = sim_calls(sim, session).await;
        if calls["sessions"].as_array().is_some_and(|s| s.iter().any(|s| s["finished"] == true)) {
            return calls;
        }
        assert!(tokio::time::Instant::now() < until, "session {session} not over within 10 s: {calls}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn contacts(phones: &[&str]) -> Vec<pb::Contact> {
    phones.iter().map(|p| pb::Contact { phone: (*p).into(), ..Default::default() }).collect()
}

/// Starts a session of these numbers with `redials`.
pub async fn create(app: &TestApp, phones: &[&str], redials: i32) -> String {
    let request = pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: contacts(phones),
        retry_count: Some(redials),
        retry_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        ..Default::default()
    };
    let session = app.client.clone().create_session(request).await.unwrap().into_inner().session.unwrap();
    session.id
}

/// Reads a watch stream until `n` events came (5 s at most).
pub async fn read_events(stream: &mut tonic::Streaming<pb::WatchCallEventsResponse>, n: usize) -> Vec<pb::CallEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
        let message = next.expect("an event within 5 s").expect("no error").expect("stream open");
        out.push(message.event.unwrap());
    }
    out
}

/// The events the simulator's table predicts for one call (live states, then the record).
fn facts_of(outcome: &str) -> usize {
    match outcome {
        "answered" => 4,
        "failed" => 2,
        _ => 3,
    }
}

#[tokio::test]
async fn a_sessions_calls_arrive_in_order_and_the_report_matches_the_simulator() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let mut watch_all =
        app.client.clone().watch_call_events(pb::WatchCallEventsRequest::default()).await.unwrap().into_inner();
    let phones = ["0912345670", "0912345675", "0912345676", "0912345677", "0912345678", "0912345679"];
    let session = create(&app, &phones, 1).await;
    let calls = wait_session_done(&app.sim, &session).await;
    let calls = calls["calls"].as_array().unwrap().clone();
    let expected: usize = calls.iter().map(|c| facts_of(c["outcome"].as_str().unwrap())).sum();
    let mut by_session = app
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
    let events = read_events(&mut by_session, expected).await;
    assert!(events.iter().all(|e| e.session_id == session), "every event attributed");
    // Per call: states in order, the record last, ids stable and distinct.
    let mut per_call: HashMap<&str, Vec<&pb::CallEvent>> = HashMap::new();
    for e in &events {
        per_call.entry(&e.call_id).or_default().push(e);
    }
    assert_eq!(per_call.len(), calls.len());
    for call in &calls {
        let id = call["call_id"].as_str().unwrap();
        let got = &per_call[id];
        let states: Vec<i32> = got.iter().map(|e| e.state).collect();
        let mut sorted = states.clone();
        sorted.sort();
        assert_eq!(states, sorted, "{id}: states in order");
        let record = got.last().unwrap();
        assert_eq!(record.id, format!("{id}/cdr"));
        let outcome = match call["outcome"].as_str().unwrap() {
            "answered" => pb::CallOutcome::Answered,
            "no_answer" => pb::CallOutcome::NoAnswer,
            "busy" => pb::CallOutcome::Busy,
            "rejected" => pb::CallOutcome::Rejected,
            _ => pb::CallOutcome::Failed,
        };
        assert_eq!(record.outcome(), outcome, "{id}");
        assert_eq!(record.attempt as u64, call["attempt"].as_u64().unwrap(), "{id}");
        assert_eq!(record.talk_duration.as_ref().map(|d| d.seconds as u64), call["talk_s"].as_u64());
    }
    // The tenant-wide watcher saw the same events, in the same order.
    let all = read_events(&mut watch_all, expected).await;
    assert_eq!(all.iter().map(|e| &e.id).collect::<Vec<_>>(), events.iter().map(|e| &e.id).collect::<Vec<_>>());

    // The report: each contact's last call, as the simulator placed it.
    let report = app
        .client
        .clone()
        .get_session_report(pb::GetSessionReportRequest { session_id: session.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.contacts_total, phones.len() as i64);
    assert!(report.finished, "{report:?}");
    assert_eq!(report.in_progress, 0);
    for contact in &report.contacts {
        let placed: Vec<&Value> = calls.iter().filter(|c| c["phone"] == contact.phone.as_str()).collect();
        let last = placed.iter().max_by_key(|c| c["attempt"].as_u64()).unwrap();
        assert_eq!(contact.attempts as usize, placed.len(), "{}", contact.phone);
        assert_eq!(
            contact.outcome().as_str_name().trim_start_matches("CALL_OUTCOME_").to_lowercase(),
            last["outcome"].as_str().unwrap()
        );
        assert!(contact.r#final);
    }
    // 0 answered, 5 no answer twice, 6 answered on its redial, 7 busy twice, 8 rejected, 9 failed.
    assert_eq!((report.answered, report.no_answer, report.busy, report.rejected, report.failed), (2, 1, 1, 1, 1));
}

#[tokio::test]
async fn report_and_watch_errors_name_the_field() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let mut client = app.client.clone();
    let err = client.get_session_report(pb::GetSessionReportRequest::default()).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_REQUEST");
    let err = client.get_session_report(pb::GetSessionReportRequest { session_id: "nope".into() }).await.unwrap_err();
    assert_status(&err, Code::NotFound, "SESSION_NOT_FOUND");
    for (request, field) in [
        (pb::WatchCallEventsRequest { after_cursor: "garbage".into(), ..Default::default() }, "after_cursor"),
        (pb::WatchCallEventsRequest { phone: "12ab".into(), ..Default::default() }, "phone"),
        (pb::WatchCallEventsRequest { session_id: "a b".into(), ..Default::default() }, "session_id"),
    ] {
        let err = client.watch_call_events(Request::new(request)).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, "INVALID_REQUEST");
        let details = tonic_types::StatusExt::get_error_details(&err);
        let fields: Vec<String> =
            details.bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
        assert_eq!(fields, [field]);
    }
    // A session created here with no call yet has a report: all in progress.
    let session = create(&app, &["0912345670"], 0).await;
    let report =
        client.get_session_report(pb::GetSessionReportRequest { session_id: session }).await.unwrap().into_inner();
    assert_eq!(report.contacts_total, 1);
}

#[tokio::test]
async fn out_of_the_box_the_built_in_simulator_posts_the_calls_to_the_receiver() {
    // No upstream URL: the built-in simulator, the receiver on loopback, registered with it.
    let app = Application::build(Settings::for_tests()).await.expect("build");
    assert!(app.webhook_addr().is_some(), "the receiver is on with the built-in simulator");
    let addr = app.grpc_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = pb::call_bot_service_client::CallBotServiceClient::new(channel);
    let mut watch = client.watch_call_events(pb::WatchCallEventsRequest::default()).await.unwrap().into_inner();
    let request = pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: contacts(&["0912345677"]),
        ..Default::default()
    };
    let session = client.create_session(request).await.unwrap().into_inner().session.unwrap().id;
    // Busy (last digit 7): ringing, hangup, record; the default time scale makes it a fraction of a second.
    let events = read_events(&mut watch, 3).await;
    assert_eq!(events[2].outcome(), pb::CallOutcome::Busy);
    assert!(events.iter().all(|e| e.session_id == session));
    let _ = tx.send(());
    let _ = done.await;
}

#[tokio::test]
async fn a_session_is_reported_and_watched_by_the_callers_own_id_too() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let request = pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: contacts(&["0912345670", "0912345677"]),
        external_session_id: "order-2026-12-07-0042".into(),
        ..Default::default()
    };
    let session = app.client.clone().create_session(request).await.unwrap().into_inner().session.unwrap();
    let mut by_key = app
        .client
        .clone()
        .watch_call_events(pb::WatchCallEventsRequest {
            session_id: "order-2026-12-07-0042".into(),
            from_start: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    wait_session_done(&app.sim, &session.id).await;
    let report = |id: &str| {
        let mut client = app.client.clone();
        let id = id.to_owned();
        async move { client.get_session_report(pb::GetSessionReportRequest { session_id: id }).await.unwrap().into_inner() }
    };
    let mut by_id = report(&session.id).await;
    // Both calls end: their records reach the store (the report is finished).
    for _ in 0..50 {
        if by_id.finished {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        by_id = report(&session.id).await;
    }
    assert!(by_id.finished, "{by_id:?}");
    assert_eq!(report("order-2026-12-07-0042").await, by_id, "the same report by the caller's id");
    let watched = read_events(&mut by_key, 2).await;
    assert!(watched.iter().all(|e| e.session_id == session.id), "{watched:?}");
    // An id that is neither is still not found.
    let err = app
        .client
        .clone()
        .get_session_report(pb::GetSessionReportRequest { session_id: "order-unknown".into() })
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "SESSION_NOT_FOUND");
}
