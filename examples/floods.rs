//! The hostile-input floods of docs/security.md ("Hostile inputs"), run from outside against a
//! facade binary, with the facade's memory and descriptors before, during and after each
//! (BENCHMARKS.md, "Hostile inputs").
//!
//! ```text
//! cargo build --release --bin callbot-facade --example floods
//! target/release/examples/floods [--facade-bin target/release/callbot-facade] [--watches 50000]
//!     [--posts 3000] [--slow 2000]
//! ```
//!
//! It starts `callbot-facade simulate` and the facade in front of it (receiver on, a known secret,
//! caller tokens on, `--max-concurrency 16`, `--events-max 100`), then:
//! 1. **reflection**: 16 idle reflection streams without credentials, then one authenticated
//!    `GetScript`: does it get through?
//! 2. **health watches**: `--watches` health `Watch` streams on one connection; RSS with them open
//!    and 2 s after the connection is gone;
//! 3. **webhook fields**: `--posts` deliveries with 20 KB strings in three text fields (under the
//!    64 KiB body bound); RSS after;
//! 4. **slow headers**: `--slow` connections to the receiver that send a request line and stall;
//!    the facade's open descriptors with them connected, and whether `/healthz` and a gRPC call
//!    answer meanwhile.
//!
//! The same command against an older binary gives the "before" (flags it does not know are passed
//! as environment variables, which it ignores).

use std::{
    net::{SocketAddr, TcpListener},
    process::Stdio,
    time::{Duration, Instant},
};

use callbot_facade::pb::{self, call_bot_service_client::CallBotServiceClient};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::{io::AsyncWriteExt, process::Command};
use tonic::{Request, metadata::MetadataValue, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};

const SECRET: &str = "floods-webhook-secret-0123456789abcdef";
const KEY: &str = "floods-key";
const TOKEN: &str = "floods-caller-token";

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn webhook_url(hook: SocketAddr) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(b"callbot-webhook:default");
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("http://{hook}/webhooks/callbot/default.{}", &hex[..32])
}

async fn wait_port(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

async fn get_script(channel: Channel) -> Result<(), tonic::Status> {
    let mut request = Request::new(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() });
    request.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {TOKEN}")).unwrap());
    CallBotServiceClient::new(channel).get_script(request).await.map(drop)
}

#[tokio::main]
async fn main() {
    let bin = flag("--facade-bin").unwrap_or_else(|| "target/release/callbot-facade".into());
    let watches: usize = flag("--watches").and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let posts: usize = flag("--posts").and_then(|v| v.parse().ok()).unwrap_or(3_000);
    let slow: usize = flag("--slow").and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let dir = std::env::temp_dir().join(format!("floods-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();

    let (sim, grpc, admin, hook) = (free_addr(), free_addr(), free_addr(), free_addr());
    let mut simulator = Command::new(&bin)
        .args(["simulate", "--listen", &sim.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the simulator starts");
    wait_port(sim).await;
    let mut facade = Command::new(&bin)
        .args(["--listen", &grpc.to_string(), "--admin-listen", &admin.to_string()])
        .args(["--upstream-url", &format!("http://{sim}"), "--api-key", KEY])
        .args(["--webhook-listen", &hook.to_string(), "--webhook-secret", SECRET])
        .args(["--caller-tokens-file", tokens.to_str().unwrap(), "--max-concurrency", "16", "--events-max", "100"])
        .env("CALLBOT_CALLER_AUTH", "mesh")
        // The store its figures were measured with (BENCHMARKS.md): in memory, no data dir.
        .env("CALLBOT_EVENTS_STORE", "memory")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the facade starts");
    let pid = facade.id().unwrap();
    wait_port(grpc).await;
    wait_port(hook).await;
    let endpoint = format!("http://{grpc}");
    let connect = || async { Channel::from_shared(endpoint.clone()).unwrap().connect().await.unwrap() };
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("binary: {bin}");
    println!("idle: RSS {:.1} MiB, {} descriptors", rss_mib(pid), fds(pid));

    // 1. Reflection.
    let mut held = Vec::new();
    for _ in 0..16 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx
            .send(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            })
            .await;
        let mut client = ServerReflectionClient::new(connect().await);
        if let Ok(stream) = client.server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
            held.push((tx, stream));
        }
    }
    let answer = get_script(connect().await).await;
    println!(
        "1. reflection: {} idle streams without credentials held; an authenticated GetScript: {}",
        held.len(),
        match &answer {
            Ok(()) => "OK".to_owned(),
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        }
    );
    drop(held);

    // 2. Health watches on one connection.
    let channel = connect().await;
    let before = rss_mib(pid);
    let opened = Instant::now();
    let mut streams = Vec::new();
    let (mut ok, mut refused) = (0usize, 0usize);
    let mut calls = futures::stream::FuturesUnordered::new();
    for _ in 0..watches {
        let mut health = HealthClient::new(channel.clone());
        calls.push(async move { health.watch(HealthCheckRequest { service: String::new() }).await });
    }
    use futures::StreamExt as _;
    while let Some(result) = tokio::time::timeout(Duration::from_secs(20), calls.next()).await.ok().flatten() {
        match result {
            Ok(s) => {
                ok += 1;
                streams.push(s);
            }
            Err(_) => refused += 1,
        }
    }
    let pending = calls.len();
    let during = rss_mib(pid);
    drop(calls);
    drop(streams);
    drop(channel);
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "2. health watches on one connection: {ok} open, {refused} refused, {pending} still queued after {:.0} s; \
         RSS {before:.1} -> {during:.1} MiB, {:.1} MiB 2 s after the disconnect",
        opened.elapsed().as_secs_f64(),
        rss_mib(pid)
    );

    // 3. Webhook fields of 20 KB.
    let http = reqwest::Client::new();
    let url = webhook_url(hook);
    let before = rss_mib(pid);
    let big = "x".repeat(20_000);
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..posts {
        // Distinct words each time, as a sender filling the table of words seen would send them.
        let body = serde_json::json!({"transaction_id": format!("t-{i}"), "autocall_id": big,
            "destination_number": "84912345670", "disposition": format!("{i}-{big}"), "hangup_cause": format!("{i}-{big}")});
        let status = http.post(&url).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        *answers.entry(status).or_default() += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "3. {posts} deliveries with three 20 KB fields: answers {answers:?}; RSS {before:.1} -> {:.1} MiB",
        rss_mib(pid)
    );

    // 4. Slow headers on the receiver.
    let before_fds = fds(pid);
    let mut open = Vec::new();
    for _ in 0..slow {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(hook).await {
            let _ = stream.write_all(b"POST /webhooks/callbot/x HTTP/1.1\r\nHost: x\r\n").await;
            open.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during_fds = fds(pid);
    let healthz = http.get(format!("http://{admin}/healthz")).timeout(Duration::from_secs(2)).send().await;
    let grpc_ok = tokio::time::timeout(Duration::from_secs(2), async { get_script(connect().await).await }).await;
    println!(
        "4. {} slow clients on the receiver: facade descriptors {before_fds} -> {during_fds}; /healthz: {}; GetScript: {}",
        open.len(),
        healthz.map_or_else(|e| format!("failed ({e})"), |r| r.status().to_string()),
        match grpc_ok {
            Ok(Ok(())) => "OK".to_owned(),
            Ok(Err(s)) => format!("{:?}", s.code()),
            Err(_) => "no answer in 2 s".to_owned(),
        }
    );
    drop(open);
    let _ = facade.kill().await;
    let _ = simulator.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
