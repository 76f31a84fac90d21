//! The webhook receiver and the event store under faults: answers by status, repeats and
//! reordering, resume by cursor, cursor errors, tenants apart, slow watchers, records without a
//! session id, a burst of deliveries, shutdown.

use std::{collections::HashSet, time::Duration};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tonic::{Code, Request, metadata::MetadataValue};

use super::events::{FAST, create, read_events, spawn_with_receiver, wait_session_done, wait_until};
use super::*;

fn live(call: &str, state: &str, to: &str) -> Value {
    json!({"call_uuid": call, "state": state, "direction": "outbound", "from_number": "1900",
           "to_number": to, "hotline": "1900", "created_time": 1_764_590_000, "date_time": "2026-12-01 10:00:00"})
}

fn record(call: &str, session: Option<&str>, to: &str, disposition: &str, talk: u64) -> Value {
    let mut v = json!({"transaction_id": call, "direction": "outbound", "destination_number": to,
        "disposition": disposition, "hangup_cause": "NORMAL_CLEARING", "bill_sec": talk.to_string(),
        "duration": talk + 5, "last_updated_date": 1_764_590_100_000u64, "recording_file": ""});
    if let Some(s) = session {
        v["autocall_id"] = json!(s);
    }
    v
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> u16 {
    http.post(url).json(body).send().await.unwrap().status().as_u16()
}

/// Starts a session on the simulator directly (as another system would), not through the facade.
async fn create_upstream(sim: &TestSim, phone: &str) -> String {
    let body = json!({"bot_script_id": "64915bc76a690c0edad14723", "contact_info": [{"phone": phone}]});
    let request = sim.as_client(TEST_KEY, reqwest::Method::POST, "/api/call_bot/execute_by_phone?cid=").await;
    let answer: Value = request.json(&body).send().await.unwrap().json().await.unwrap();
    answer["payload"]["autocall_id"].as_str().unwrap_or_else(|| panic!("{answer}")).to_owned()
}

fn watch_request(session: &str) -> pb::WatchCallEventsRequest {
    pb::WatchCallEventsRequest { session_id: session.into(), from_start: true, ..Default::default() }
}

#[tokio::test]
async fn the_receiver_answers_404_400_413_and_204() {
    let (app, hook) = spawn_with_receiver(|_| {}).await;
    let url = app.webhook.clone().unwrap();
    let http = reqwest::Client::new();
    let ok = live("c-1", "ringing", "84912345670");
    assert_eq!(post(&http, &url, &ok).await, 204);
    assert_eq!(post(&http, &url, &ok).await, 204, "a repeat is acknowledged too");
    let wrong_token = format!("http://{hook}/webhooks/callbot/default.{}", "0".repeat(32));
    assert_eq!(post(&http, &wrong_token, &ok).await, 404);
    assert_eq!(post(&http, &format!("http://{hook}/webhooks/callbot/"), &ok).await, 404);
    assert_eq!(post(&http, &format!("http://{hook}/elsewhere"), &ok).await, 404);
    for junk in [&b"not json"[..], b"[]", b"{}", b"{\"transaction_id\":\"x\",\"bill_sec\":{}}", b"\xff"] {
        let status = http.post(&url).body(junk.to_vec()).send().await.unwrap().status();
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(junk));
    }
    // Over 64 KiB: by Content-Length, and while reading a chunked body.
    let big = json!({"call_uuid": "c-2", "state": "ringing", "pad": "x".repeat(70 * 1024)});
    assert_eq!(post(&http, &url, &big).await, 413);
    let chunks = futures::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let status = http.post(&url).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap().status();
    assert_eq!(status, 413);
    // An unknown live state word is acknowledged and not stored.
    assert_eq!(post(&http, &url, &live("c-3", "parked", "0912345670")).await, 204);
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap();
    for line in [
        r#"callbot_webhook_deliveries_total{kind="live",answer="stored"} 1"#,
        r#"callbot_webhook_deliveries_total{kind="live",answer="duplicate"} 1"#,
        r#"callbot_webhook_deliveries_total{kind="live",answer="ignored"} 1"#,
        r#"callbot_webhook_deliveries_total{kind="unknown",answer="unknown_token"} 1"#,
        r#"callbot_webhook_deliveries_total{kind="unknown",answer="bad_request"} 5"#,
        r#"callbot_webhook_deliveries_total{kind="unknown",answer="too_large"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
    // The store's size, read from the store every second.
    let page = || async { reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap() };
    wait_until(|| async { page().await.contains("callbot_event_store_events 1\n") }).await;
    assert!(!metrics.contains(url.rsplit('/').next().unwrap()), "the token is never exported");
}

#[tokio::test]
async fn duplicates_and_reordering_change_nothing() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let faults = json!([{"kind": "duplicate", "rate": 1.0}, {"kind": "reorder", "rate": 1.0}, {"kind": "drop_first", "rate": 0.5}]);
    let r =
        reqwest::Client::new().post(format!("{}/_sim/webhook_faults", app.sim.url)).json(&faults).send().await.unwrap();
    assert!(r.status().is_success());
    let session = create(&app, &["0912345670", "0912345675", "0912345676", "0912345677"], 1).await;
    let calls = wait_session_done(&app.sim, &session).await;
    let calls = calls["calls"].as_array().unwrap().clone();
    // Let the last (reordered, repeated) deliveries land.
    let expected: usize = calls
        .iter()
        .map(|c| match c["outcome"].as_str().unwrap() {
            "answered" => 4,
            _ => 3,
        })
        .sum();
    let mut stream = app.client.clone().watch_call_events(watch_request(&session)).await.unwrap().into_inner();
    let events = read_events(&mut stream, expected).await;
    let ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), expected, "each fact once");
    wait_until(|| async {
        let v: Value = reqwest::get(format!("{}/_sim/stats", app.sim.url)).await.unwrap().json().await.unwrap();
        v["webhook_deliveries"].as_u64() >= Some(2 * expected as u64)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::time::timeout(Duration::from_millis(200), stream.message()).await.is_err(), "no repeat came later");
    let report = app
        .client
        .clone()
        .get_session_report(pb::GetSessionReportRequest { session_id: session })
        .await
        .unwrap()
        .into_inner();
    // 0 answered; 5 no answer twice; 6 answered on the redial; 7 busy twice.
    assert_eq!((report.answered, report.no_answer, report.busy, report.in_progress), (2, 1, 1, 0));
    assert!(report.finished);
    let attempts: Vec<i32> = report.contacts.iter().map(|c| c.attempts).collect();
    assert_eq!(attempts, [1, 2, 2, 2]);
}

#[tokio::test]
async fn resume_by_cursor_loses_and_repeats_nothing_across_a_dropped_stream() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let url = app.webhook.clone().unwrap();
    let http = reqwest::Client::new();
    for i in 0..10 {
        assert_eq!(post(&http, &url, &live(&format!("r-{i}"), "ringing", "0912345670")).await, 204);
    }
    let mut first = app.client.clone().watch_call_events(watch_request("")).await.unwrap().into_inner();
    let seen = read_events(&mut first, 4).await;
    drop(first);
    for i in 10..15 {
        assert_eq!(post(&http, &url, &live(&format!("r-{i}"), "ringing", "0912345670")).await, 204);
    }
    let resume =
        pb::WatchCallEventsRequest { after_cursor: seen[3].cursor.clone(), from_start: true, ..Default::default() };
    let mut second = app.client.clone().watch_call_events(resume).await.unwrap().into_inner();
    let rest = read_events(&mut second, 11).await;
    let all: Vec<String> = seen.iter().chain(&rest).map(|e| e.call_id.clone()).collect();
    let expected: Vec<String> = (0..15).map(|i| format!("r-{i}")).collect();
    assert_eq!(all, expected);
    assert!(tokio::time::timeout(Duration::from_millis(200), second.message()).await.is_err());
}

#[tokio::test]
async fn cursors_past_the_window_or_from_another_store_are_out_of_range_with_the_earliest() {
    let (app, _) = spawn_with_receiver(|s| s.events.max = 5).await;
    let url = app.webhook.clone().unwrap();
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &url, &live("e-0", "ringing", "0912345670")).await, 204);
    let mut s = app.client.clone().watch_call_events(watch_request("")).await.unwrap().into_inner();
    let first = read_events(&mut s, 1).await.remove(0);
    drop(s);
    for i in 1..10 {
        assert_eq!(post(&http, &url, &live(&format!("e-{i}"), "ringing", "0912345670")).await, 204);
    }
    let request = pb::WatchCallEventsRequest { after_cursor: first.cursor.clone(), ..Default::default() };
    let err = app.client.clone().watch_call_events(request).await.unwrap_err();
    assert_status(&err, Code::OutOfRange, "CURSOR_EXPIRED");
    let earliest = meta(&err, "earliest_cursor").expect("earliest_cursor");
    let request = pb::WatchCallEventsRequest { after_cursor: earliest, ..Default::default() };
    let mut s = app.client.clone().watch_call_events(request).await.unwrap().into_inner();
    let got: Vec<String> = read_events(&mut s, 5).await.into_iter().map(|e| e.call_id).collect();
    assert_eq!(got, ["e-5", "e-6", "e-7", "e-8", "e-9"], "the earliest retained comes first");
    // A cursor of another process's store (another facade's).
    let (other, _) = spawn_with_receiver(|_| {}).await;
    let request = pb::WatchCallEventsRequest { after_cursor: first.cursor, ..Default::default() };
    let err = other.client.clone().watch_call_events(request).await.unwrap_err();
    assert_status(&err, Code::OutOfRange, "CURSOR_EXPIRED");
    assert!(meta(&err, "earliest_cursor").is_some());
}

#[tokio::test]
async fn tenants_see_only_their_own_calls() {
    let (app, _) = spawn_with_receiver(|s| s.service.allow_caller_api_key = true).await;
    let with_key = |mut r: Request<pb::WatchCallEventsRequest>, key: &str| {
        r.metadata_mut().insert("x-api-key", MetadataValue::try_from(key).unwrap());
        r
    };
    let mut b_watch = app
        .client
        .clone()
        .watch_call_events(with_key(Request::new(watch_request("")), "tenant-b"))
        .await
        .unwrap()
        .into_inner();
    let mut a_watch = app.client.clone().watch_call_events(watch_request("")).await.unwrap().into_inner();
    // B's first call registers B's webhook with the simulator.
    let mut create_b = Request::new(pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: vec![pb::Contact { phone: "0912345677".into(), ..Default::default() }],
        ..Default::default()
    });
    create_b.metadata_mut().insert("x-api-key", MetadataValue::from_static("tenant-b"));
    let b_session = app.client.clone().create_session(create_b).await.unwrap().into_inner().session.unwrap().id;
    wait_until(|| async {
        let v: Value = reqwest::get(format!("{}/_sim/stats", app.sim.url)).await.unwrap().json().await.unwrap();
        v["webhook_register_calls"].as_u64() == Some(2)
    })
    .await;
    let a_session = create(&app, &["0912345670"], 0).await;
    wait_session_done(&app.sim, &a_session).await;
    let a_events = read_events(&mut a_watch, 4).await;
    assert!(a_events.iter().all(|e| e.session_id == a_session && e.phone.ends_with("670")), "{a_events:?}");
    let b_events = read_events(&mut b_watch, 3).await;
    assert!(b_events.iter().all(|e| e.session_id == b_session && e.phone.ends_with("677")), "{b_events:?}");
    assert!(tokio::time::timeout(Duration::from_millis(300), a_watch.message()).await.is_err(), "nothing of B's");
    let err = app
        .client
        .clone()
        .get_session_report(pb::GetSessionReportRequest { session_id: b_session.clone() })
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "SESSION_NOT_FOUND");
}

#[tokio::test]
async fn a_slow_watcher_does_not_delay_another() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let url = app.webhook.clone().unwrap();
    // A watcher that reads nothing for now, and one that keeps up.
    let mut slow = app.client.clone().watch_call_events(watch_request("")).await.unwrap().into_inner();
    let mut fast = app.client.clone().watch_call_events(watch_request("")).await.unwrap().into_inner();
    let http = reqwest::Client::new();
    const N: usize = 3000;
    let posts = futures::stream::iter(0..N)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move { post(&http, &url, &live(&format!("s-{i}"), "hangup", "0912345670")).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<u16>>()
        .await;
    assert!(posts.iter().all(|s| *s == 204));
    assert_eq!(read_events(&mut fast, N).await.len(), N);
    // The slow one catches up from the store: everything, in order.
    let caught_up = read_events(&mut slow, N).await;
    let seqs: HashSet<String> = caught_up.iter().map(|e| e.id.clone()).collect();
    assert_eq!(seqs.len(), N);
}

#[tokio::test]
async fn a_record_without_autocall_id_is_attributed_through_the_call_history() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let faults = json!({"kind": "no_autocall_id", "rate": 1.0});
    let r =
        reqwest::Client::new().post(format!("{}/_sim/webhook_faults", app.sim.url)).json(&faults).send().await.unwrap();
    assert!(r.status().is_success());
    // Sessions this facade did not create (started on the provider directly): the live states
    // cannot be attributed by number, and the records come without autocall_id: only the call
    // history can say.
    let s1 = create_upstream(&app.sim, "0912345671").await;
    let s2 = create_upstream(&app.sim, "0912345671").await;
    for session in [&s1, &s2] {
        wait_session_done(&app.sim, session).await;
        let mut stream = app.client.clone().watch_call_events(watch_request(session)).await.unwrap().into_inner();
        let events = read_events(&mut stream, 1).await;
        assert_eq!(events[0].id.rsplit('/').next(), Some("cdr"), "the record, attributed: {events:?}");
        assert_eq!(&events[0].session_id, session);
    }
    let stats: Value = reqwest::get(format!("{}/_sim/stats", app.sim.url)).await.unwrap().json().await.unwrap();
    assert!(stats["history_search_calls"].as_u64() >= Some(1), "{stats}");
    let report = app
        .client
        .clone()
        .get_session_report(pb::GetSessionReportRequest { session_id: s1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((report.answered, report.finished), (1, true));
}

#[tokio::test]
async fn a_burst_of_10000_deliveries_keeps_every_event_exactly_once() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let url = app.webhook.clone().unwrap();
    let http = reqwest::Client::new();
    const CALLS: usize = 2500;
    // 4 facts per call, each delivered twice: 20,000 deliveries, 10,000 facts.
    let bodies: Vec<Value> = (0..CALLS)
        .flat_map(|i| {
            let call = format!("b-{i}");
            [
                live(&call, "ringing", "0912345670"),
                live(&call, "answered", "0912345670"),
                live(&call, "hangup", "0912345670"),
                record(&call, Some("burst"), "0912345670", "answered", 30),
            ]
        })
        .collect();
    let statuses = futures::stream::iter(bodies.iter().chain(bodies.iter()))
        .map(|b| {
            let (http, url) = (http.clone(), url.clone());
            async move { post(&http, &url, b).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<u16>>()
        .await;
    assert!(statuses.iter().all(|s| *s == 204));
    let mut stream = app.client.clone().watch_call_events(watch_request("")).await.unwrap().into_inner();
    let events = read_events(&mut stream, 4 * CALLS).await;
    let ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 4 * CALLS);
    assert!(tokio::time::timeout(Duration::from_millis(200), stream.message()).await.is_err(), "nothing more");
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("callbot_events_stored_total 10000"), "stored");
    assert!(metrics.contains("callbot_webhook_duplicates_total 10000"), "duplicates");
}

#[tokio::test]
async fn shutdown_ends_watch_streams_with_their_last_cursor() {
    let (mut app, _) = spawn_with_receiver(|_| {}).await;
    let url = app.webhook.clone().unwrap();
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &url, &live("d-1", "ringing", "0912345670")).await, 204);
    let mut stream = app.client.clone().watch_call_events(watch_request("")).await.unwrap().into_inner();
    let last = read_events(&mut stream, 1).await.remove(0);
    let started = std::time::Instant::now();
    app.shutdown();
    let err = tokio::time::timeout(Duration::from_secs(3), stream.message()).await.unwrap().unwrap_err();
    assert_status(&err, Code::Unavailable, "SHUTTING_DOWN");
    assert_eq!(meta(&err, "last_cursor").as_deref(), Some(last.cursor.as_str()));
    assert!(has_retry_info(&err));
    let done = app.done.take().unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(4), done).await.is_ok(), "the drain is not held up");
    assert!(started.elapsed() < Duration::from_secs(4));
    let _ = FAST;
}

#[tokio::test]
async fn a_record_the_history_cannot_attribute_is_stored_without_a_session() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    app.sim.fault(json!({"path": "/api/v3/call-transaction/search", "status": 503, "count": 100})).await;
    let url = app.webhook.clone().unwrap();
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &url, &record("lost-1", None, "0912345670", "busy", 0)).await, 204);
    let mut stream = app.client.clone().watch_call_events(watch_request("")).await.unwrap().into_inner();
    let event = read_events(&mut stream, 1).await.remove(0);
    assert_eq!((event.id.as_str(), event.session_id.as_str()), ("lost-1/cdr", ""));
    assert_eq!(event.outcome(), pb::CallOutcome::Busy);
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"callbot_call_history_lookups_total{result="failed"} 1"#), "lookup counted");
}

#[tokio::test]
async fn registration_is_retried_after_a_failure_and_never_repeated_for_the_same_url() {
    let hook = super::events::free_addr();
    let sim = TestSim::start(SimConfig { time_scale: FAST, ..SimConfig::default() }).await;
    // 500 is not retried within the exchange: the registrar's own retry (after 1 s) must do it.
    sim.fault(json!({"path": "/api/webhooks/list", "status": 500, "count": 1})).await;
    let settings = |sim: &TestSim| {
        let mut s = test_settings(&sim.url);
        s.events.webhook_listen = Some(hook);
        s.events.webhook_secret = Some(ApiKey::new("shared-secret"));
        s.events.webhook_public_url = Some(format!("http://{hook}"));
        s
    };
    let first = start(settings(&sim), sim).await;
    wait_until(|| async {
        let v: Value = reqwest::get(format!("{}/_sim/stats", first.sim.url)).await.unwrap().json().await.unwrap();
        v["webhook_register_calls"].as_u64() == Some(1)
    })
    .await;
    let metrics = reqwest::get(format!("http://{}/metrics", first.admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"callbot_webhook_registrations_total{result="registered"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"callbot_webhook_registrations_total{result="failed"} 1"#), "{metrics}");
    // A second replica (or a restart) with the same secret finds the URL registered.
    let sim_url = first.sim.url.clone();
    let mut second_settings = test_settings(&sim_url);
    second_settings.events.webhook_listen = Some(super::events::free_addr());
    second_settings.events.webhook_secret = Some(ApiKey::new("shared-secret"));
    second_settings.events.webhook_public_url = Some(format!("http://{hook}"));
    let second = start(second_settings, TestSim::detached(&sim_url)).await;
    wait_until(|| async {
        let m = reqwest::get(format!("http://{}/metrics", second.admin)).await.unwrap().text().await.unwrap();
        m.contains(r#"callbot_webhook_registrations_total{result="present"} 1"#)
    })
    .await;
    let v: Value = reqwest::get(format!("{sim_url}/_sim/stats")).await.unwrap().json().await.unwrap();
    assert_eq!(v["webhook_register_calls"].as_u64(), Some(1), "never a second registration");
}
