//! The binary with `--features otlp` and OTEL_EXPORTER_OTLP_ENDPOINT pointing at a fake OTLP/HTTP
//! collector: a call's `rpc` span reaches it by the time the facade exits on SIGTERM.
#![cfg(feature = "otlp")]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Clone, Default)]
struct Collector {
    requests: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

async fn collector() -> (Collector, String) {
    let collector = Collector::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(c): State<Collector>, body: Bytes| async move {
                c.requests.fetch_add(1, Ordering::SeqCst);
                c.bytes.fetch_add(body.len(), Ordering::SeqCst);
                c.bodies.lock().unwrap().push(body);
                ([(http::header::CONTENT_TYPE, "application/x-protobuf")], Bytes::new())
            }),
        )
        .with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (collector, endpoint)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_rpc_spans_and_flushes_them_on_sigterm() {
    let (collector, endpoint) = collector().await;
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"])
        .env("CALLBOT_EVENTS_STORE", "memory")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("RUST_LOG", "info")
        .env_remove("CALLBOT_UPSTREAM_URL")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let port: u16 = loop {
        let line =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().expect("facade exited early");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "serving" {
            break v["grpc"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
        }
    };

    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
    request.metadata_mut().insert("traceparent", TRACEPARENT.parse().unwrap());
    request.metadata_mut().insert("x-request-id", "otlp-export-test".parse().unwrap());
    health.check(request).await.unwrap();
    // The batch delay is 5 s: nothing need have been sent yet; the exit must flush it.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit}");

    assert!(collector.requests.load(Ordering::SeqCst) >= 1, "no export request reached the collector");
    assert!(collector.bytes.load(Ordering::SeqCst) > 0);
    let body = collector.bodies.lock().unwrap().concat();
    assert!(contains(&body, b"callbot-facade"), "service.name missing");
    assert!(contains(&body, b"/grpc.health.v1.Health/Check"), "the rpc span is missing");
    assert!(contains(&body, b"otlp-export-test"), "the rpc span has no request_id");
    // The caller's trace id is an attribute of the exported rpc span.
    assert!(contains(&body, b"4bf92f3577b34da6a3ce929d0e0e4736"), "trace_id attribute missing");
    // EXPERIMENT: the span is a child of the caller's (trace id and parent span id as bytes).
    assert!(contains(
        &body,
        &[0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36]
    ));
    assert!(contains(&body, &[0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]));
}
