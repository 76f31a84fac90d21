//! Hostile inputs (README, "Security"; docs/security.md): what no unauthenticated client, tenant or
//! webhook sender can starve, read or flood. Each test reproduces a finding and fails without its fix.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::{Request, metadata::MetadataValue};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};

use serde_json::json;

use super::events::spawn_with_receiver;
use super::*;

/// Bytes read until the peer closes (or `within` passes: then `None`).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", MetadataValue::from_static("Bearer caller-token"));
    request
}

#[tokio::test]
async fn idle_open_streams_without_credentials_never_take_a_callers_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "caller-token\n").unwrap();
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.security.caller_tokens_file = Some(file);
        s.server.max_concurrency = 16;
    })
    .await;
    // 16 reflection streams nobody closes, each on its own connection, no credentials.
    let mut held = Vec::new();
    for _ in 0..16 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        })
        .await
        .unwrap();
        let mut client = ServerReflectionClient::new(app.channel().await);
        let mut stream = client.server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap();
        stream.get_mut().message().await.unwrap().expect("the services are listed");
        held.push((tx, stream));
    }
    // The callers' calls still go through.
    let mut client = app.client.clone();
    client.get_script(authorized(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() })).await.unwrap();
    // A 17th reflection stream is refused at once, with a reason.
    let (_tx, rx) = tokio::sync::mpsc::channel::<ServerReflectionRequest>(1);
    let mut client = ServerReflectionClient::new(app.channel().await);
    let err = client.server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, "OPEN_STREAMS_EXHAUSTED");

    // Health watches: their own bound, on one connection or many; checks stay exempt.
    let channel = app.channel().await;
    let mut watches = Vec::new();
    for i in 0..64 {
        let mut health = HealthClient::new(if i % 2 == 0 { channel.clone() } else { app.channel().await });
        let mut stream = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        stream.message().await.unwrap().expect("the current status");
        watches.push(stream);
    }
    let mut health = HealthClient::new(app.channel().await);
    let err = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, "OPEN_STREAMS_EXHAUSTED");
    health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    let mut client = app.client.clone();
    client.get_script(authorized(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() })).await.unwrap();
    // Closed streams give their place back.
    drop(watches);
    super::events::wait_until(|| async {
        let mut health = HealthClient::new(app.channel().await);
        health.watch(HealthCheckRequest { service: String::new() }).await.is_ok()
    })
    .await;
    drop(held);
}

#[tokio::test]
async fn half_open_connections_are_dropped_on_every_listener() {
    let (app, hook) = spawn_with_receiver(|s| s.events.webhook_header_timeout = Duration::from_millis(300)).await;
    let half_sent: [(std::net::SocketAddr, &[u8]); 3] = [
        // A partial HTTP/2 preface to gRPC.
        (app.addr, b"PRI * HTTP/2.0\r\n"),
        // A request line and part of the headers to admin and to the receiver.
        (app.admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
        (hook, b"POST /webhooks/callbot/x HTTP/1.1\r\nHost: x\r\nContent-Type: app"),
    ];
    for (addr, bytes) in half_sent {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let answer = closed_within(&mut stream, Duration::from_secs(5)).await;
        assert!(answer.is_some(), "{addr}: still open after 5 s");
        assert!(started.elapsed() >= Duration::from_millis(250), "{addr}: closed before its bound");
    }
    // Whole requests are served as before.
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test]
async fn a_slow_client_flood_on_the_receiver_leaves_deliveries_calls_and_health_working() {
    let (app, hook) = spawn_with_receiver(|s| {
        s.events.webhook_header_timeout = Duration::from_millis(500);
        s.events.webhook_max_connections = 20;
    })
    .await;
    // 200 clients that send a request line and never finish their headers.
    let (connected_tx, connected) = tokio::sync::oneshot::channel();
    let flood = tokio::spawn(async move {
        let mut open = Vec::new();
        for _ in 0..200 {
            if let Ok(mut stream) = TcpStream::connect(hook).await {
                let _ = stream.write_all(b"POST /webhooks/callbot/x HTTP/1.1\r\nHost: x\r\n").await;
                open.push(stream);
            }
        }
        let _ = connected_tx.send(open.len());
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(open);
    });
    assert_eq!(connected.await.unwrap(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The receiver holds at most its 20 (without the cap it took one descriptor per client, and a
    // flood of 20,000 took the process's last ones).
    let scrape = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap();
    assert!(scrape.contains("callbot_http_connections{listener=\"webhook\"} 20\n"), "{scrape}");
    // The gRPC API and the health checks answer at once: the flood took none of their descriptors.
    let mut client = app.client.clone();
    client.get_script(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() }).await.unwrap();
    let healthz = reqwest::get(format!("http://{}/healthz", app.admin)).await.unwrap();
    assert_eq!(healthz.status(), 200);
    // A legitimate delivery gets its 204 once the slow ones ahead of it time out.
    let url = app.webhook.clone().unwrap();
    let body = json!({"call_uuid": "flood-1", "state": "ringing", "direction": "outbound", "from_number": "1900",
        "to_number": "0912345670", "hotline": "1900", "created_time": 1_764_590_000});
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let answer = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 204);
    flood.abort();
}

#[tokio::test]
async fn a_body_that_never_ends_is_answered_408() {
    let (app, hook) = spawn_with_receiver(|s| s.events.webhook_body_timeout = Duration::from_millis(300)).await;
    let path = app.webhook.clone().unwrap().split_once("/webhooks/").map(|(_, p)| format!("/webhooks/{p}")).unwrap();
    let mut stream = TcpStream::connect(hook).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"call"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(5)).await.expect("answered and closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"callbot_webhook_deliveries_total{kind="unknown",answer="timeout"} 1"#), "{metrics}");
}

#[tokio::test]
async fn the_webhook_secret_rotates_from_its_file_with_the_previous_one_still_taken() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhook-secret");
    let old = "old-webhook-secret-old-webhook-secret";
    let new = "new-webhook-secret-new-webhook-secret";
    // Too short: the start is refused with one line naming the file.
    std::fs::write(&file, "short\n").unwrap();
    let sim = TestSim::start(SimConfig::default()).await;
    let hook = super::events::free_addr();
    let settings = |sim: &TestSim| {
        let mut s = test_settings(&sim.url);
        s.events.webhook_listen = Some(hook);
        s.events.webhook_secret_file = Some(file.clone());
        s.events.webhook_secret_previous = Some(ApiKey::new(old));
        s.events.webhook_public_url = Some(format!("http://{hook}"));
        s.security.secrets_poll_interval = Duration::from_millis(50);
        s
    };
    let err = Application::build(settings(&sim)).await.err().expect("refused");
    let line = err.to_string();
    assert!(line.contains("--webhook-secret-file") && line.contains("32 bytes") && !line.contains('\n'), "{line}");

    std::fs::write(&file, format!("{old}\n")).unwrap();
    let app = start(settings(&sim), sim).await;
    let registered = |n: u64| {
        let sim_url = app.sim.url.clone();
        async move {
            super::events::wait_until(|| async {
                let v: Value = reqwest::get(format!("{sim_url}/_sim/stats")).await.unwrap().json().await.unwrap();
                v["webhook_register_calls"].as_u64() == Some(n)
            })
            .await;
        }
    };
    registered(1).await;
    let old_url = app.webhook.clone().unwrap();
    let body = |call: &str| {
        json!({"call_uuid": call, "state": "ringing", "direction": "outbound", "from_number": "1900",
               "to_number": "0912345670", "hotline": "1900", "created_time": 1_764_590_000})
    };
    let http = reqwest::Client::new();
    assert_eq!(http.post(&old_url).json(&body("r-1")).send().await.unwrap().status(), 204);
    // Rotated: the new URL is registered; the old one is still taken (the previous secret).
    std::fs::write(&file, format!("{new}\n")).unwrap();
    registered(2).await;
    let hooks: Value = app
        .sim
        .as_client(TEST_KEY, reqwest::Method::GET, "/api/webhooks/list")
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let urls: Vec<String> =
        hooks.to_string().split('"').filter(|s| s.starts_with("http://")).map(str::to_owned).collect();
    let new_url = urls.iter().find(|u| **u != old_url).expect("a second URL registered").clone();
    assert_eq!(http.post(&new_url).json(&body("r-2")).send().await.unwrap().status(), 204);
    assert_eq!(http.post(&old_url).json(&body("r-3")).send().await.unwrap().status(), 204);
    // A token under another secret is not.
    let mut forged = new_url.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(http.post(&forged).json(&body("r-4")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn bogus_caller_keys_start_nothing_and_a_key_the_provider_accepts_is_registered() {
    let keys = vec![TEST_KEY.to_owned(), "good-caller-key".to_owned()];
    let sim = TestSim::start(SimConfig { api_keys: Some(keys), ..SimConfig::default() }).await;
    let hook = super::events::free_addr();
    let mut settings = test_settings(&sim.url);
    settings.service.allow_caller_api_key = true;
    settings.events.webhook_listen = Some(hook);
    settings.events.webhook_secret = Some(ApiKey::new("hostile-webhook-secret-0123456789abc"));
    settings.events.webhook_public_url = Some(format!("http://{hook}"));
    let app = start(settings, sim).await;
    let stats = || async { app.sim.stats().await };
    let registered = |n: u64| async move {
        super::events::wait_until(|| async { stats().await["webhook_register_calls"].as_u64() == Some(n) }).await;
    };
    registered(1).await; // the configured key's tenant
    let with_key = |key: &str| {
        let mut request = Request::new(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() });
        request.metadata_mut().insert("x-api-key", MetadataValue::try_from(key).unwrap());
        request
    };
    // Bogus keys, on calls that fail validation and on calls the provider refuses: nothing is
    // remembered or registered (before, each key's first CreateSession started a registration
    // retried for ever).
    for i in 0..200 {
        let mut invalid = Request::new(pb::CreateSessionRequest::default());
        invalid.metadata_mut().insert("x-api-key", MetadataValue::try_from(format!("bogus-key-{i}")).unwrap());
        let err = app.client.clone().create_session(invalid).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let err = app.client.clone().get_script(with_key(&format!("bogus-key-{i}"))).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_bogus = stats().await;
    assert_eq!(after_bogus["webhook_register_calls"], 1, "{after_bogus}");
    assert_eq!(after_bogus["webhook_list_calls"], 1, "no registration was even checked: {after_bogus}");
    // A key the provider accepts: its tenant is registered, once.
    app.client.clone().get_script(with_key("good-caller-key")).await.unwrap();
    app.client.clone().get_script(with_key("good-caller-key")).await.unwrap();
    registered(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stats().await["webhook_register_calls"], 2);
}
