//! Operations: `/metrics` after traffic, trace context continued to the upstream, the drain of a
//! stream in flight, secrets kept out of trace-level logs, and the Kubernetes manifests.

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::{Code, Request, metadata::MetadataValue};

use super::*;

const SCRIPT_ID: &str = "64915bc76a690c0edad14723";
const SVC: &str = r#"grpc_service="callbot.v1.CallBotService""#;

fn session_request() -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: SCRIPT_ID.into(),
        contacts: vec![pb::Contact { phone: "0912345678".into(), ..Default::default() }],
        ..Default::default()
    }
}

/// The value of one series, `name{labels}` exactly as rendered, or of an unlabelled `name`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let resp = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    resp.text().await.unwrap()
}

/// Scrapes until `series` reads `want` (the server counts an RPC when its body ends, which can
/// be a moment after the client saw the trailers), and returns the last scrape.
async fn wait_for(app: &TestApp, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = scrape(app).await;
        if value(&text, series) == Some(want) || Instant::now() > deadline {
            assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn handled(method: &str, kind: &str, code: &str) -> String {
    format!(r#"grpc_server_handled_total{{grpc_type="{kind}",{SVC},grpc_method="{method}",grpc_code="{code}"}}"#)
}

fn per_method(name: &str, method: &str, kind: &str) -> String {
    format!(r#"{name}{{grpc_type="{kind}",{SVC},grpc_method="{method}"}}"#)
}

#[tokio::test]
async fn metrics_count_rpcs_by_code_and_upstream_requests_by_status() {
    let mut app = spawn_app().await;
    let before = scrape(&app).await;
    assert_eq!(value(&before, &per_method("grpc_server_started_total", "GetScript", "unary")), Some(0.0));
    assert!(before.contains(r#"callbot_build_info{version=""#), "{before}");
    assert_eq!(value(&before, "callbot_grpc_in_flight"), Some(0.0));

    app.client.get_script(pb::GetScriptRequest { script_id: SCRIPT_ID.into() }).await.unwrap();
    let err = app.client.get_script(pb::GetScriptRequest { script_id: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let scripts = list(&mut app.client, "").await.unwrap();

    let text = wait_for(&app, &handled("ListScripts", "server_stream", "OK"), 1.0).await;
    let text = if value(&text, &handled("GetScript", "unary", "InvalidArgument")) == Some(1.0) {
        text
    } else {
        wait_for(&app, &handled("GetScript", "unary", "InvalidArgument"), 1.0).await
    };
    let rows = [
        (handled("GetScript", "unary", "OK"), 1.0),
        (handled("GetScript", "unary", "InvalidArgument"), 1.0),
        (per_method("grpc_server_started_total", "GetScript", "unary"), 2.0),
        (per_method("grpc_server_handling_seconds_count", "GetScript", "unary"), 2.0),
        (per_method("grpc_server_msg_sent_total", "ListScripts", "server_stream"), scripts.len() as f64),
        (per_method("grpc_server_msg_received_total", "ListScripts", "server_stream"), 1.0),
        (per_method("grpc_server_msg_sent_total", "GetScript", "unary"), 1.0),
        // Two script-list fetches (the cache is off in tests), one token.
        (r#"callbot_upstream_requests_total{endpoint="/api/call_bot/script/list",status="200"}"#.into(), 2.0),
        (r#"callbot_upstream_requests_total{endpoint="/api/auth",status="200"}"#.into(), 1.0),
        (r#"callbot_upstream_request_duration_seconds_count{endpoint="/api/call_bot/script/list"}"#.into(), 2.0),
        ("callbot_upstream_token_refreshes_total".into(), 1.0),
        ("callbot_script_cache_misses_total".into(), 2.0),
        ("callbot_script_cache_hits_total".into(), 0.0),
        ("callbot_grpc_in_flight".into(), 0.0),
        ("callbot_shed_total".into(), 0.0),
    ];
    for (series, want) in rows {
        assert_eq!(value(&text, &series), Some(want), "{series}\n{text}");
    }
    assert!(scripts.len() > 1);
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn a_retried_503_is_counted_by_endpoint_and_status() {
    let mut app = spawn_app().await;
    app.sim.fault(json!({"path": "/api/call_bot/script/list", "status": 503, "count": 1})).await;
    app.client.get_script(pb::GetScriptRequest { script_id: SCRIPT_ID.into() }).await.unwrap();
    let text = wait_for(&app, &handled("GetScript", "unary", "OK"), 1.0).await;
    for (series, want) in [
        (r#"callbot_upstream_retries_total{endpoint="/api/call_bot/script/list"}"#, 1.0),
        (r#"callbot_upstream_requests_total{endpoint="/api/call_bot/script/list",status="503"}"#, 1.0),
        (r#"callbot_upstream_requests_total{endpoint="/api/call_bot/script/list",status="200"}"#, 1.0),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
    }
}

#[tokio::test]
async fn a_connection_failure_is_counted_as_error() {
    let sim = TestSim::start(SimConfig::default()).await;
    let mut settings = test_settings("http://127.0.0.1:9");
    settings.upstream.timeout = Duration::from_secs(2);
    let mut app = start(settings, sim).await;
    let err = app.client.get_script(pb::GetScriptRequest { script_id: SCRIPT_ID.into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let text = wait_for(&app, &handled("GetScript", "unary", "Unavailable"), 1.0).await;
    let errors = value(&text, r#"callbot_upstream_requests_total{endpoint="/api/auth",status="error"}"#);
    assert!(errors.is_some_and(|n| n >= 1.0), "{text}");
}

#[tokio::test]
async fn script_cache_hits_and_misses_are_counted() {
    let mut app = spawn_app_with(SimConfig::default(), |s| s.service.script_cache_ttl = Duration::from_secs(30)).await;
    list(&mut app.client, "").await.unwrap();
    list(&mut app.client, "diem").await.unwrap();
    app.client.get_script(pb::GetScriptRequest { script_id: SCRIPT_ID.into() }).await.unwrap();
    let text = scrape(&app).await;
    assert_eq!(value(&text, "callbot_script_cache_misses_total"), Some(1.0), "{text}");
    assert_eq!(value(&text, "callbot_script_cache_hits_total"), Some(2.0), "{text}");
    assert_eq!(
        value(&text, r#"callbot_upstream_requests_total{endpoint="/api/call_bot/script/list",status="200"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn shed_calls_are_counted_and_in_flight_is_visible() {
    let app = spawn_app_with(SimConfig::default(), |s| s.server.max_concurrency = 1).await;
    app.sim.fault(json!({"path": "/api/call_bot/script/list", "delay_ms": 500})).await;
    let mut slow = app.client.clone();
    let first = tokio::spawn(async move { list(&mut slow, "").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let during = scrape(&app).await;
    assert_eq!(value(&during, "callbot_grpc_in_flight"), Some(1.0), "{during}");
    let mut client = app.client.clone();
    let err = list(&mut client, "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(first.await.unwrap().is_ok());
    let text = wait_for(&app, &handled("ListScripts", "server_stream", "OK"), 1.0).await;
    assert_eq!(value(&text, "callbot_shed_total"), Some(1.0), "{text}");
    assert_eq!(value(&text, &handled("ListScripts", "server_stream", "Unavailable")), Some(1.0), "{text}");
    assert_eq!(value(&text, &per_method("grpc_server_started_total", "ListScripts", "server_stream")), Some(2.0));
    assert_eq!(value(&text, "callbot_grpc_in_flight"), Some(0.0), "{text}");
}

/// The traceparent the upstream saw on the last session.
async fn upstream_trace(app: &TestApp) -> (Vec<String>, Option<String>) {
    let sessions = app.sim.sessions().await;
    let headers = &sessions.last().unwrap()["headers"];
    let tp = headers["traceparent"].as_str().unwrap_or_else(|| panic!("no traceparent: {headers}"));
    (tp.split('-').map(str::to_owned).collect(), headers.get("tracestate").and_then(|v| v.as_str()).map(str::to_owned))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

#[tokio::test]
async fn trace_context_is_continued_started_or_replaced() {
    let mut app = spawn_app().await;
    let parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";

    // Continued: same trace id, new span id, same flags (00 = not sampled, kept as is), state kept.
    let mut req = Request::new(session_request());
    let tp = format!("00-{parent_trace}-{parent_span}-00");
    req.metadata_mut().insert("traceparent", tp.parse().unwrap());
    req.metadata_mut().insert("tracestate", MetadataValue::from_static("congo=t61rcWkgMzE"));
    app.client.create_session(req).await.unwrap();
    let (parts, state) = upstream_trace(&app).await;
    assert_eq!((parts[0].as_str(), parts[1].as_str(), parts[3].as_str()), ("00", parent_trace, "00"));
    assert!(is_hex(&parts[2], 16) && parts[2] != parent_span, "{parts:?}");
    assert_eq!(state.as_deref(), Some("congo=t61rcWkgMzE"));

    // None in: a new trace per call.
    let mut seen = Vec::new();
    for _ in 0..2 {
        app.client.create_session(session_request()).await.unwrap();
        let (parts, state) = upstream_trace(&app).await;
        assert_eq!(parts.len(), 4);
        assert!(is_hex(&parts[1], 32) && is_hex(&parts[2], 16), "{parts:?}");
        assert!(state.is_none());
        seen.push(parts[1].clone());
    }
    assert_ne!(seen[0], seen[1]);

    // Invalid in: replaced by a new trace, and its tracestate dropped with it.
    for bad in ["00-00000000000000000000000000000000-00f067aa0ba902b7-01", "garbage", "00-4bf92f-00f0-01"] {
        let mut req = Request::new(session_request());
        req.metadata_mut().insert("traceparent", bad.parse().unwrap());
        req.metadata_mut().insert("tracestate", MetadataValue::from_static("congo=t61rcWkgMzE"));
        app.client.create_session(req).await.unwrap();
        let (parts, state) = upstream_trace(&app).await;
        assert!(is_hex(&parts[1], 32) && parts[1] != parent_trace, "{bad}: {parts:?}");
        assert!(state.is_none(), "{bad}");
    }
}

#[tokio::test]
async fn shutdown_drains_a_stream_in_flight_with_a_slow_consumer() {
    let sim = TestSim::start(SimConfig::default()).await;
    sim.set_scripts(r#"{"generate": 400}"#).await;
    let mut settings = test_settings(&sim.url);
    settings.server.shutdown_grace = Duration::from_secs(10);
    let mut app = start(settings, sim).await;

    // A client with a tiny HTTP/2 window, so the server cannot push the whole stream into
    // buffers: it stays truly in flight for as long as the consumer is slow.
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut client = CallBotServiceClient::new(channel);
    let mut stream = client.list_scripts(pb::ListScriptsRequest::default()).await.unwrap().into_inner();
    let mut received = 0usize;
    for _ in 0..5 {
        stream.message().await.unwrap().unwrap();
        received += 1;
    }

    let shutdown_at = Instant::now();
    app.shutdown();
    // Readiness flips at once, while the stream is still going.
    let mut flipped = false;
    for _ in 0..50 {
        let r = reqwest::get(format!("http://{}/readyz", app.admin)).await.unwrap();
        if r.status() == 503 {
            flipped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(flipped, "/readyz did not flip");
    // New calls are refused during the drain (the listener is closed; a call that somehow got
    // a connection would not be answered, so it is bounded).
    let addr = app.addr;
    let answered = tokio::time::timeout(Duration::from_secs(1), async move {
        let Ok(channel) = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await else {
            return false;
        };
        let mut client = CallBotServiceClient::new(channel);
        client.get_script(pb::GetScriptRequest { script_id: SCRIPT_ID.into() }).await.is_ok()
    })
    .await;
    assert!(!matches!(answered, Ok(true)), "a new call was served during the drain");

    // The slow consumer: ~5 ms per message.
    while let Some(msg) = stream.message().await.expect("the stream ends cleanly during the drain") {
        assert!(msg.script.is_some());
        received += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consumed_at = shutdown_at.elapsed();
    assert_eq!(received, 400);
    let done = app.done.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), done).await.expect("exits within the grace").unwrap().unwrap();
    let exited_at = shutdown_at.elapsed();
    eprintln!("drain: stream consumed {consumed_at:?} after shutdown, facade exited {exited_at:?} after shutdown");
    assert!(consumed_at > Duration::from_secs(1), "the stream was not in flight during the drain");
    assert!(exited_at < Duration::from_secs(10));
}

/// Reads the gRPC and admin ports from the facade's "serving" line.
fn serving_ports(line: &str) -> Option<(u16, u16)> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["message"] != "serving" {
        return None;
    }
    let port = |k: &str| v[k].as_str()?.rsplit(':').next()?.parse().ok();
    Some((port("grpc")?, port("admin")?))
}

#[tokio::test]
async fn trace_level_json_logs_carry_ids_and_never_secrets_or_phones() {
    use std::process::{Command, Stdio};
    const API_KEY: &str = "OPS-APIKEY-7f3c9d";
    const CALLER_TOKEN: &str = "ops-caller-token-4e1b8a";
    const WRONG_TOKEN: &str = "ops-wrong-token-99aa";
    const PHONES: [&str; 3] = ["0912345678", "0912000999", "0987654321"];
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# callers\n{CALLER_TOKEN}\n")).unwrap();

    let mut child = Reaped::new(
        Command::new(env!("CARGO_BIN_EXE_callbot-facade"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"])
            .env("CALLBOT_EVENTS_STORE", "memory")
            .arg("--caller-tokens-file")
            .arg(&tokens)
            .env("CALLBOT_API_KEY", API_KEY)
            .env("RUST_LOG", "trace")
            .env_remove("CALLBOT_UPSTREAM_URL")
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    crate::forward_lines(child.stderr.take().unwrap(), tx.clone());
    crate::forward_lines(child.stdout.take().unwrap(), tx);
    let mut lines = Vec::new();
    let (port, admin) = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().expect("exited early");
        lines.push(line.clone());
        if let Some(p) = serving_ports(&line) {
            break p;
        }
    };
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let mut client = CallBotServiceClient::new(channel);
    fn authed<T>(mut req: Request<T>) -> Request<T> {
        req.metadata_mut().insert("authorization", format!("Bearer {CALLER_TOKEN}").parse().unwrap());
        req
    }
    // Refused caller, good calls, a call with a trace, a validation failure with phones in it.
    let mut req = Request::new(pb::GetScriptRequest { script_id: SCRIPT_ID.into() });
    req.metadata_mut().insert("authorization", format!("Bearer {WRONG_TOKEN}").parse().unwrap());
    assert_eq!(client.get_script(req).await.unwrap_err().code(), Code::Unauthenticated);
    let mut stream = client.list_scripts(authed(Request::new(pb::ListScriptsRequest::default()))).await.unwrap();
    while stream.get_mut().message().await.unwrap().is_some() {}
    let contacts = PHONES.iter().map(|p| pb::Contact { phone: (*p).into(), ..Default::default() }).collect();
    let mut req =
        authed(Request::new(pb::CreateSessionRequest { script_id: SCRIPT_ID.into(), contacts, ..Default::default() }));
    req.metadata_mut().insert("x-request-id", "ops-log-1".parse().unwrap());
    req.metadata_mut()
        .insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
    client.create_session(req).await.unwrap();
    let bad = pb::CreateSessionRequest {
        script_id: SCRIPT_ID.into(),
        contacts: vec![pb::Contact { phone: format!("{}x", PHONES[2]), ..Default::default() }],
        ..Default::default()
    };
    assert_eq!(client.create_session(authed(Request::new(bad))).await.unwrap_err().code(), Code::InvalidArgument);
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("grpc_server_handled_total"), "{metrics}");

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }

    let events: Vec<Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    for e in &events {
        assert!(e["timestamp"].is_string() && e["level"].is_string(), "{e}");
    }
    // The access line of the traced call: ids, method, code, latency.
    let access = events
        .iter()
        .find(|e| e["message"] == "rpc" && e["request_id"] == "ops-log-1")
        .unwrap_or_else(|| panic!("no access line:\n{}", lines.join("\n")));
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(access["method"], "/callbot.v1.CallBotService/CreateSession");
    // The same spelling as the metrics' `grpc_code` (grpc-go's).
    assert_eq!(access["grpc_code"], "OK");
    assert!(access["latency_us"].is_u64());
    assert!(events.iter().any(|e| e["message"] == "rpc" && e["grpc_code"] == "Unauthenticated"));
    // Upstream lines carry endpoint and status, and the call's ids through its span.
    let upstream = events
        .iter()
        .find(|e| e["message"] == "upstream answered" && e["endpoint"] == "/api/call_bot/execute_by_phone")
        .unwrap_or_else(|| panic!("no upstream line:\n{}", lines.join("\n")));
    assert_eq!(upstream["status"], 200);
    let spans = upstream["spans"].as_array().unwrap();
    assert!(
        spans.iter().any(|s| s["request_id"] == "ops-log-1" && s["trace_id"] == "0af7651916cd43dd8448eb211c80319c")
    );

    let all = lines.join("\n");
    for secret in [API_KEY, CALLER_TOKEN, WRONG_TOKEN, "eyJ", "Bearer "].iter().copied().chain(PHONES) {
        assert!(!all.contains(secret), "{secret} leaked into the logs");
    }
}

/// The text lines of the binary (the default format, `RUST_LOG` of targets and levels): what a call
/// logs while it runs carries its `rpc` fields, nested spans after them; the access line stands
/// alone.
#[tokio::test]
async fn text_logs_carry_the_calls_rpc_fields_on_what_it_logs_while_running() {
    use std::process::{Command, Stdio};
    let mut child = Reaped::new(
        Command::new(env!("CARGO_BIN_EXE_callbot-facade"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--caller-auth", "mesh"])
            .env("CALLBOT_EVENTS_STORE", "memory")
            .env("CALLBOT_API_KEY", "ops-text-key")
            .env("RUST_LOG", "info,callbot_facade::upstream=debug")
            .env_remove("CALLBOT_UPSTREAM_URL")
            .env_remove("CALLBOT_LOG_FORMAT")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut rx = crate::lines_of(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    let port = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().expect("exited early");
        lines.push(line.clone());
        if let Some(p) = line.split_whitespace().find_map(|w| w.strip_prefix("grpc=127.0.0.1:")) {
            break p.parse::<u16>().unwrap();
        }
    };
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let mut client = CallBotServiceClient::new(channel);
    let mut req = Request::new(pb::GetScriptRequest { script_id: SCRIPT_ID.into() });
    req.metadata_mut().insert("x-request-id", "ops-text-1".parse().unwrap());
    req.metadata_mut()
        .insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
    client.get_script(req).await.unwrap();
    let mut bad = Request::new(pb::GetScriptRequest { script_id: String::new() });
    bad.metadata_mut().insert("x-request-id", "ops-text-2".parse().unwrap());
    assert_eq!(client.get_script(bad).await.unwrap_err().code(), Code::InvalidArgument);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    let all = lines.join("\n");
    let line = |needle: &str| {
        lines.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle}:\n{all}")).clone()
    };
    let fields = "rpc{request_id=ops-text-1 trace_id=0af7651916cd43dd8448eb211c80319c method=/callbot.v1.CallBotService/GetScript}:";
    let upstream = line("upstream answered endpoint=\"/api/call_bot/script/list\"");
    assert!(upstream.contains(&format!(" DEBUG {fields}upstream{{endpoint=")), "{upstream}");
    let failed = line("call failed");
    assert!(
        failed.contains(" INFO rpc{request_id=ops-text-2 trace_id=")
            && failed.contains("method=/callbot.v1.CallBotService/GetScript}: call failed request_id=\"ops-text-2\""),
        "{failed}"
    );
    let access = line("request_id=\"ops-text-1\" trace_id=");
    assert!(
        access.contains(" INFO rpc method=\"/callbot.v1.CallBotService/GetScript\""),
        "the access line stands alone: {access}"
    );
}

/// Every document of every manifest under `deploy/kubernetes`, by kind.
fn manifests() -> Vec<(String, Value)> {
    use serde::Deserialize;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kind = v["kind"].as_str().unwrap_or_else(|| panic!("{}: no kind", path.display())).to_owned();
            out.push((kind, v));
        }
    }
    out
}

fn seconds(text: &str) -> u64 {
    text.strip_suffix('s').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not whole seconds: {text}"))
}

#[test]
fn kubernetes_manifests_are_valid_and_production_shaped() {
    let all = manifests();
    let one = |kind: &str| -> &Value {
        let found: Vec<_> = all.iter().filter(|(k, _)| k == kind).collect();
        assert_eq!(found.len(), 1, "one {kind} expected");
        &found[0].1
    };
    let named = |kind: &str, name: &str| -> &Value {
        let found: Vec<_> = all.iter().filter(|(k, v)| k == kind && v["metadata"]["name"] == name).collect();
        assert_eq!(found.len(), 1, "one {kind} {name} expected");
        &found[0].1
    };

    let deploy = one("Deployment");
    assert_eq!(deploy["apiVersion"], "apps/v1");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["runAsNonRoot"], true);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(c[probe]["grpc"]["port"], 50051, "{probe} must be a native gRPC probe");
        assert!(c[probe].get("httpGet").is_none() && c[probe].get("exec").is_none(), "{probe}");
    }
    assert_eq!(c["readinessProbe"]["grpc"]["service"], "callbot.v1.CallBotService");
    for want in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][want].is_string(), "requests.{want}");
    }
    assert!(c["resources"]["limits"]["memory"].is_string());
    let ports: Vec<(&str, u64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_u64().unwrap()))
        .collect();
    assert_eq!(ports, [("grpc", 50051), ("admin", 9090), ("webhook", 8080)]);
    let env = c["env"].as_array().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no env {name}"));
    // Secrets are files of a Secret volume, never environment values; callers are authenticated.
    let mounts = c["volumeMounts"].as_array().expect("volume mounts");
    let secret_dir = |volume: &str| {
        let mount = mounts.iter().find(|m| m["name"] == volume).unwrap_or_else(|| panic!("no mount {volume}"));
        assert_eq!(mount["readOnly"], true);
        mount["mountPath"].as_str().unwrap().to_owned()
    };
    let volumes = pod["volumes"].as_array().expect("volumes");
    let secret_of = |volume: &str| {
        let v = volumes.iter().find(|v| v["name"] == volume).unwrap_or_else(|| panic!("no volume {volume}"));
        v["secret"]["secretName"].as_str().unwrap_or_else(|| panic!("{volume} is not a Secret")).to_owned()
    };
    let secrets = secret_dir("secrets");
    for (name, file) in [
        ("CALLBOT_API_KEY_FILE", "api-key"),
        ("CALLBOT_CALLER_TOKENS_FILE", "caller-tokens"),
        ("CALLBOT_WEBHOOK_SECRET_FILE", "webhook-secret"),
    ] {
        assert_eq!(var(name)["value"], format!("{secrets}/{file}"), "{name}");
    }
    for gone in ["CALLBOT_API_KEY", "CALLBOT_WEBHOOK_SECRET", "CALLBOT_CALLER_AUTH"] {
        assert!(env.iter().all(|e| e["name"] != gone), "{gone} must not be set");
    }
    // The data dir: writable under the read-only root, where the image puts it; nothing in it must
    // outlive the pod here (the events are on JetStream): an emptyDir.
    assert_eq!(var("CALLBOT_DATA_DIR")["value"], "/var/lib/callbot");
    let data = mounts.iter().find(|m| m["name"] == "data").expect("a data dir mount");
    assert_eq!(data["mountPath"], "/var/lib/callbot");
    assert!(data.get("readOnly").is_none_or(|r| r == false));
    let data_volume = volumes.iter().find(|v| v["name"] == "data").expect("a data volume");
    assert!(data_volume["emptyDir"].is_object(), "{data_volume}");
    // The drain fits: preStop sleep + shutdown grace < terminationGracePeriodSeconds.
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().expect("a preStop sleep");
    let grace = seconds(var("CALLBOT_SHUTDOWN_GRACE")["value"].as_str().unwrap());
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(pre_stop > 0 && pre_stop + grace < termination, "{pre_stop} + {grace} < {termination}");

    // The call events: the receiver on, its secret from a Secret, the store on the three-node
    // JetStream below with three copies.
    assert_eq!(var("CALLBOT_WEBHOOK_LISTEN")["value"], "0.0.0.0:8080");
    assert!(var("CALLBOT_WEBHOOK_PUBLIC_URL")["value"].as_str().unwrap().starts_with("https://"));
    assert_eq!(var("CALLBOT_EVENTS_REPLICAS")["value"], "3");
    let nats_urls = var("CALLBOT_EVENTS_NATS_URL")["value"].as_str().unwrap();
    assert_eq!(nats_urls.split(',').count(), 3, "{nats_urls}");
    assert!(nats_urls.split(',').all(|u| u.starts_with("tls://")), "NATS over TLS: {nats_urls}");
    assert_eq!(var("CALLBOT_EVENTS_NATS_CA")["value"], format!("{}/ca.crt", secret_dir("nats-ca")));
    assert_eq!(secret_of("nats-ca"), "callbot-nats-tls");
    let password = &var("CALLBOT_EVENTS_NATS_PASSWORD")["valueFrom"]["secretKeyRef"];
    assert_eq!(password["name"], "callbot-nats-auth");
    let nats = one("StatefulSet");
    assert_eq!(nats["spec"]["replicas"], 3);
    assert_eq!(nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data");
    let conf = named("ConfigMap", "callbot-nats-config")["data"]["nats.conf"].as_str().unwrap();
    assert!(conf.contains("sync_interval: always") && conf.contains("store_dir: /data/jetstream"), "{conf}");
    // Clients and routes over TLS; only the account's user (no anonymous connections).
    assert!(conf.matches("cert_file: /etc/nats/tls/tls.crt").count() == 2, "{conf}");
    assert!(conf.contains("accounts {") && conf.contains("password: $CALLBOT_NATS_PASSWORD"), "{conf}");
    assert!(!conf.contains("no_auth_user"), "{conf}");

    // Network policies: each port open to its one kind of client.
    let policy = named("NetworkPolicy", "callbot-facade");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], deploy["spec"]["selector"]["matchLabels"]);
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let ingress_ports: Vec<&str> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap().iter().map(|p| p["port"].as_str().unwrap()))
        .collect();
    assert_eq!(ingress_ports, ["grpc", "admin", "webhook"]);
    let nats_policy = named("NetworkPolicy", "callbot-nats");
    let clients = &nats_policy["spec"]["ingress"][0];
    assert_eq!(clients["ports"][0]["port"], 4222);
    assert_eq!(clients["from"][0]["podSelector"]["matchLabels"], deploy["spec"]["selector"]["matchLabels"]);
    assert_eq!(named("PodDisruptionBudget", "callbot-nats")["spec"]["maxUnavailable"], 1);

    let svc = named("Service", "callbot-facade");
    let ports = svc["spec"]["ports"].as_array().unwrap();
    let grpc = ports.iter().find(|p| p["name"] == "grpc").expect("a port named grpc");
    assert_eq!(grpc["appProtocol"], "grpc");
    assert_eq!(grpc["port"], 50051);
    assert!(ports.iter().any(|p| p["name"] == "admin" && p["port"] == 9090));
    assert!(ports.iter().any(|p| p["name"] == "webhook" && p["port"] == 8080));
    let selector = &svc["spec"]["selector"];
    assert_eq!(selector, &deploy["spec"]["selector"]["matchLabels"]);

    let hpa = one("HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], deploy["metadata"]["name"]);
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);

    let pdb = named("PodDisruptionBudget", "callbot-facade");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], deploy["spec"]["selector"]["matchLabels"]);
    assert!(pdb["spec"]["minAvailable"].as_u64().is_some_and(|n| n >= 1));

    let secret = named("Secret", &secret_of("secrets"));
    for file in ["api-key", "caller-tokens", "webhook-secret"] {
        assert!(secret["stringData"].get(file).is_some(), "{file}");
    }
    let example = secret["stringData"]["webhook-secret"].as_str().unwrap();
    assert!(example.len() >= 32, "the example webhook secret shows the length it needs");
    assert!(named("Secret", "callbot-nats-auth")["stringData"]["password"].is_string());
    assert!(named("Secret", "callbot-nats-tls")["stringData"]["ca.crt"].is_string());
}

/// The YAML documents of `path`.
fn yaml_docs(path: &std::path::Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

#[test]
fn the_single_replica_overlay_keeps_the_events_on_a_volume_and_drops_nats() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/single-replica");
    let kustomization = yaml_docs(&dir.join("kustomization.yaml")).remove(0);
    assert_eq!(kustomization["resources"], json!(["../kubernetes", "pvc.yaml"]));
    let pvc = yaml_docs(&dir.join("pvc.yaml")).remove(0);
    assert_eq!(
        (pvc["kind"].as_str(), pvc["metadata"]["name"].as_str()),
        (Some("PersistentVolumeClaim"), Some("callbot-data"))
    );
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));

    // One replica, replaced (not rolled: the data dir's lock admits one process), its data dir on the claim.
    let patch = yaml_docs(&dir.join("deployment-patch.yaml")).remove(0);
    assert_eq!(patch["spec"]["replicas"], 1);
    assert_eq!(patch["spec"]["strategy"]["type"], "Recreate");
    let pod = &patch["spec"]["template"]["spec"];
    let data = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "data").expect("the data volume");
    assert_eq!(data["persistentVolumeClaim"]["claimName"], "callbot-data");
    assert!(data["emptyDir"].is_null(), "the base's emptyDir is replaced");
    let env = pod["containers"][0]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "CALLBOT_EVENTS_STORE" && e["value"] == "disk"));
    let deleted = |list: &[Value], name: &str| list.iter().any(|e| e["name"] == name && e["$patch"] == "delete");
    // Every NATS setting of the base goes (with --events-nats-url set, the events would stay on NATS).
    let base = manifests();
    let deploy = &base.iter().find(|(k, _)| k == "Deployment").unwrap().1;
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        if name.starts_with("CALLBOT_EVENTS_NATS") || name == "CALLBOT_EVENTS_REPLICAS" {
            assert!(deleted(env, name), "{name} is not deleted");
        }
    }
    // And every NATS object of the base, the autoscaler and the facade's disruption budget.
    let patches: Vec<Value> = kustomization["patches"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["patch"].as_str())
        .map(|text| {
            use serde::Deserialize;
            Value::deserialize(serde_norway::Deserializer::from_str(text)).unwrap()
        })
        .collect();
    let dropped = |kind: &str, name: &str| {
        patches.iter().any(|p| p["$patch"] == "delete" && p["kind"] == kind && p["metadata"]["name"] == name)
    };
    for (kind, v) in &base {
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        if name.starts_with("callbot-nats") && kind != "Secret" {
            assert!(dropped(kind, name), "{kind} {name} is not dropped");
        }
    }
    assert!(dropped("HorizontalPodAutoscaler", "callbot-facade"));
    assert!(dropped("PodDisruptionBudget", "callbot-facade"));
}

#[test]
fn the_image_has_a_writable_data_dir_for_its_non_root_user() {
    let dockerfile =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("chown 65532:65532 /var/lib/callbot"), "{dockerfile}");
    assert!(dockerfile.contains("COPY --from=build --chown=65532:65532 /var/lib/callbot /var/lib/callbot"));
    assert!(dockerfile.contains("CALLBOT_DATA_DIR=/var/lib/callbot"));
    assert!(dockerfile.contains("USER 65532:65532"));
}
