//! The drain as a whole, on the binary: SIGTERM while calls and watch streams are open.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::events::{free_addr, read_events};
use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");
const SECRET: &str = "drain-test-webhook-secret-0123456789";
/// Calls in flight when SIGTERM comes: each waits on the upstream for [`UPSTREAM_DELAY_MS`].
const IN_FLIGHT: usize = 24;
const UPSTREAM_DELAY_MS: u64 = 1_500;
const WATCHERS: usize = 3;

/// The default tenant's receiver URL, derived from the secret as every replica derives it.
fn webhook_url(addr: std::net::SocketAddr) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(b"callbot-webhook:default");
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("http://{addr}/webhooks/callbot/default.{}", &hex[..32])
}

#[tokio::test]
async fn sigterm_under_load_drains_in_order_and_exits_0_within_the_grace() {
    let sim = TestSim::start(SimConfig::default()).await;
    let (hook, admin) = (free_addr(), free_addr());
    let mut child = Reaped::new(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", &admin.to_string(), "--log-format", "json"])
            .args(["--upstream-url", &sim.url, "--caller-auth", "mesh", "--shutdown-grace", "10s"])
            .args(["--webhook-listen", &hook.to_string()])
            .env("CALLBOT_API_KEY", TEST_KEY)
            .env("CALLBOT_EVENTS_STORE", "memory")
            .env("CALLBOT_WEBHOOK_SECRET", SECRET)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = child.stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let port: u16 = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().expect("exited early");
        log.push(line.clone());
        if line["message"] == "serving" {
            break line["grpc"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let client = CallBotServiceClient::new(channel);

    // Watchers, each with an event (and so a cursor) before the signal.
    let http = reqwest::Client::new();
    let delivery = json!({"call_uuid": "drain-1", "state": "ringing", "direction": "outbound", "from_number": "1900",
        "to_number": "0912345670", "hotline": "1900", "created_time": 1_764_590_000});
    let answer = http.post(webhook_url(hook)).json(&delivery).send().await.unwrap();
    assert_eq!(answer.status(), 204);
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let request = pb::WatchCallEventsRequest { from_start: true, ..Default::default() };
        let mut stream = client.clone().watch_call_events(request).await.unwrap().into_inner();
        let last = read_events(&mut stream, 1).await.remove(0);
        watchers.push((stream, last.cursor));
    }

    // Calls in flight: the upstream holds each for a while.
    sim.fault(json!({"path": "/api/call_bot/execute_by_phone", "delay_ms": UPSTREAM_DELAY_MS, "count": IN_FLIGHT}))
        .await;
    let calls: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let request = pb::CreateSessionRequest {
                    script_id: "64915bc76a690c0edad14723".into(),
                    contacts: vec![pb::Contact { phone: format!("09123{i:05}"), ..Default::default() }],
                    ..Default::default()
                };
                client.create_session(request).await
            })
        })
        .collect();
    // Every call has reached the upstream (and waits there) before the signal.
    super::events::wait_until(|| async { sim.stats().await["execute_calls"].as_u64() >= Some(IN_FLIGHT as u64) }).await;

    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());

    // 1. Not ready any more, while the calls are still in flight (admin serves to the end).
    super::events::wait_until(|| async {
        reqwest::get(format!("http://{admin}/readyz")).await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    // 2. Every watch stream ends with its last cursor, without waiting for the calls.
    for (mut stream, cursor) in watchers {
        let err = tokio::time::timeout(Duration::from_secs(3), stream.message()).await.unwrap().unwrap_err();
        assert_status(&err, Code::Unavailable, "SHUTTING_DOWN");
        assert_eq!(meta(&err, "last_cursor").as_deref(), Some(cursor.as_str()));
    }
    assert!(signalled.elapsed() < Duration::from_millis(UPSTREAM_DELAY_MS), "the streams did not wait for the calls");
    // 3. No call that started before the signal fails.
    for call in calls {
        let session = call.await.unwrap().expect("a call in flight at SIGTERM finishes");
        assert!(!session.into_inner().session.unwrap().id.is_empty());
    }
    assert_eq!(sim.sessions().await.len(), IN_FLIGHT);
    // 4. Exit 0, within the grace.
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10), "within the grace: {:?}", signalled.elapsed());
    while let Some(line) = rx.recv().await {
        log.push(line);
    }
    let messages: Vec<&str> = log.iter().filter_map(|l| l["message"].as_str()).collect();
    let at = |m: &str| messages.iter().position(|x| *x == m).unwrap_or_else(|| panic!("no {m:?} in {messages:?}"));
    assert!(at("shutdown requested: draining") < at("stopped"));
    assert!(!messages.iter().any(|m| m.contains("abandoning")), "{messages:?}");
}
