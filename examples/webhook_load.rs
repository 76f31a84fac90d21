//! The call-event load generator (BENCHMARKS.md, "Call events"): webhook deliveries per second
//! into a facade's embedded store with watchers connected, delivery → watcher latency, memory per
//! stored event at `--events-max`, and the memory of idle watchers.
//!
//! ```text
//! cargo build --release --bin callbot-facade --example webhook_load
//! target/release/examples/webhook_load [--deliveries 200000] [--concurrency 64] [--sessions 100]
//!     [--events-max 200000] [--idle-watchers 1000] [--rate 20000] [--facade-bin target/release/callbot-facade]
//! ```
//!
//! It starts `callbot-facade simulate` and the facade (receiver on, a known secret, so it derives
//! the tenant's URL token itself), connects one watcher per session plus one for the whole tenant,
//! then posts end-of-call records (each a new fact, spread over the sessions) from `--concurrency`
//! HTTP/1.1 connections. `--nats [--nats-sync always]`: the store on NATS JetStream (a `nats-server`
//! started here, `NATS_SERVER_BIN` or `scripts/install-nats.sh`) behind two facades, deliveries
//! alternating between them and the watchers on the second; without it, `--events-store disk|memory`
//! picks the embedded store (`disk`: a fresh data dir in the temporary folder, removed at the end) (`--rate`: paced at that many per second, to measure latency below saturation). Latency: each record's `last_updated_date` is the send time (ms); the
//! tenant-wide watcher subtracts it from the arrival time. Memory: the facade's VmRSS before and
//! after filling the store past `--events-max` (so it is measured at the bound).

use std::{
    net::{SocketAddr, TcpListener},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use callbot_facade::pb::{self, call_bot_service_client::CallBotServiceClient};
use futures::StreamExt as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::process::Command;
use tonic::transport::Channel;

const SECRET: &str = "webhook-load-secret-0123456789abcdef";
const KEY: &str = "webhook-load-key";

struct Args {
    deliveries: usize,
    concurrency: usize,
    sessions: usize,
    events_max: usize,
    idle_watchers: usize,
    /// Deliveries per second to aim at (0 = as fast as the connections go).
    rate: f64,
    /// The call events on NATS JetStream (a `nats-server` started here) behind two facades:
    /// deliveries alternate between them, the watchers sit on the second.
    nats: bool,
    /// With `--nats`: the server's `sync_interval` (`always` = fsync before every acknowledgement).
    nats_sync: Option<String>,
    /// Without `--nats`: the facade's `--events-store` (`memory`, as in the figures before the
    /// disk store; `disk`: in a fresh data dir under the temporary folder).
    events_store: String,
    bin: String,
}

fn args() -> Args {
    let mut a = Args {
        deliveries: 200_000,
        concurrency: 64,
        sessions: 100,
        events_max: 200_000,
        idle_watchers: 1000,
        rate: 0.0,
        nats: false,
        nats_sync: None,
        events_store: "memory".into(),
        bin: "target/release/callbot-facade".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--nats" {
            a.nats = true;
            continue;
        }
        let value = it.next().unwrap_or_default();
        let n = || value.parse::<usize>().unwrap_or_else(|_| panic!("{flag} takes a number"));
        match flag.as_str() {
            "--deliveries" => a.deliveries = n(),
            "--concurrency" => a.concurrency = n(),
            "--sessions" => a.sessions = n(),
            "--events-max" => a.events_max = n(),
            "--idle-watchers" => a.idle_watchers = n(),
            "--facade-bin" => a.bin = value,
            "--nats-sync" => a.nats_sync = Some(value),
            "--events-store" => a.events_store = value,
            "--rate" => a.rate = value.parse().unwrap_or_else(|_| panic!("--rate takes a number")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn token() -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(b"callbot-webhook:default");
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("default.{}", &hex[..32])
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn wait_tcp(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never accepted");
}

fn record(i: usize, sessions: usize) -> String {
    format!(
        r#"{{"transaction_id":"load-{i}","autocall_id":"s-{}","direction":"outbound","destination_number":"0912{:06}","disposition":"answered","hangup_cause":"NORMAL_CLEARING","bill_sec":30,"duration":35,"last_updated_date":{}}}"#,
        i % sessions,
        i % 1_000_000,
        now_ms()
    )
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let a = args();
    let sim_addr = free_addr();
    let _sim = Command::new(&a.bin)
        .args(["simulate", "--listen", &sim_addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("simulator");
    wait_tcp(sim_addr).await;
    let store_dir = std::env::temp_dir().join(format!("webhook-load-nats-{}", std::process::id()));
    let nats_addr = free_addr();
    let _nats = a.nats.then(|| {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| {
            let out = std::process::Command::new("bash").arg("scripts/install-nats.sh").output().expect("install-nats");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        });
        let conf = store_dir.with_extension("conf");
        let sync = a.nats_sync.as_deref().map(|v| format!("sync_interval: {v}")).unwrap_or_default();
        std::fs::write(&conf, format!("jetstream {{ store_dir: \"{}\"\n{sync} }}\n", store_dir.display())).unwrap();
        Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &nats_addr.port().to_string(), "-c", &conf.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server")
    });
    if a.nats {
        wait_tcp(nats_addr).await;
    }
    let start = |grpc: SocketAddr, hook: SocketAddr| {
        let mut cmd = Command::new(&a.bin);
        cmd.args(["--listen", &grpc.to_string(), "--admin-listen", &free_addr().to_string()])
            .args(["--upstream-url", &format!("http://{sim_addr}"), "--api-key", KEY, "--caller-auth", "mesh"])
            .args(["--webhook-listen", &hook.to_string(), "--webhook-secret", SECRET])
            .args(["--events-max", &a.events_max.to_string()]);
        if a.nats {
            cmd.args(["--events-nats-url", &format!("nats://{nats_addr}")]);
        } else {
            cmd.args(["--events-store", &a.events_store, "--data-dir"]).arg(store_dir.with_extension("data"));
        }
        cmd.env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("facade")
    };
    let (grpc_a, hook_a) = (free_addr(), free_addr());
    let facade_a = start(grpc_a, hook_a);
    wait_tcp(grpc_a).await;
    wait_tcp(hook_a).await;
    // With NATS, a second replica: the watchers sit on it, deliveries alternate.
    let (grpc, hook) = if a.nats { (free_addr(), free_addr()) } else { (grpc_a, hook_a) };
    let facade_b = a.nats.then(|| start(grpc, hook));
    wait_tcp(grpc).await;
    wait_tcp(hook).await;
    let facade = facade_b.as_ref().unwrap_or(&facade_a);
    let pid = facade.id().unwrap();
    let pid_a = facade_a.id().unwrap();
    let channel = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    let client = CallBotServiceClient::new(channel);
    let idle_rss = rss_kib(pid);

    // Idle watchers' memory.
    let mut idle = Vec::new();
    for i in 0..a.idle_watchers {
        let request = pb::WatchCallEventsRequest { session_id: format!("idle-{i}"), ..Default::default() };
        idle.push(client.clone().watch_call_events(request).await.unwrap().into_inner());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_idle = rss_kib(pid);
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 100 session watchers and one for the tenant.
    let mut followers = Vec::new();
    for s in 0..a.sessions {
        let request = pb::WatchCallEventsRequest { session_id: format!("s-{s}"), ..Default::default() };
        // The call is made inside the task: the server may send the stream's headers with its first event.
        let client = client.clone();
        followers.push(tokio::spawn(async move {
            let mut stream = client.clone().watch_call_events(request).await.unwrap().into_inner();
            let mut n = 0u64;
            while let Ok(Some(_)) = stream.message().await {
                n += 1;
            }
            n
        }));
    }
    // From the start of the (fresh) store: a subscription that lands after the first deliveries misses none.
    let request = pb::WatchCallEventsRequest { from_start: true, ..Default::default() };
    let expected = a.deliveries;
    // Its own connection: the session watchers fill the first one's 100 concurrent streams (the
    // facade's `--grpc-max-streams-per-connection` default), and a 101st stream there would wait.
    let tenant_channel = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    let tenant_client = CallBotServiceClient::new(tenant_channel);
    let tenant_watcher = tokio::spawn(async move {
        let mut all = tenant_client.clone().watch_call_events(request).await.unwrap().into_inner();
        let mut latencies = Vec::with_capacity(expected);
        while latencies.len() < expected {
            match all.message().await {
                Ok(Some(m)) => {
                    let sent = m
                        .event
                        .and_then(|e| e.occurred_at)
                        .map(|t| t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000);
                    latencies.push(now_ms().saturating_sub(sent.unwrap_or(0)));
                }
                _ => break,
            }
        }
        latencies
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let urls = Arc::new([
        format!("http://{hook_a}/webhooks/callbot/{}", token()),
        format!("http://{hook}/webhooks/callbot/{}", token()),
    ]);
    let http = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).build().unwrap();
    let cpu_before = cpu_s(pid) + if a.nats { cpu_s(pid_a) } else { 0.0 };
    let started = Instant::now();
    let sessions = a.sessions;
    let rate = a.rate;
    let statuses: Vec<u16> = futures::stream::iter(0..a.deliveries)
        .map(|i| {
            let (http, urls) = (http.clone(), urls.clone());
            async move {
                let url = &urls[i % 2];
                if rate > 0.0 {
                    tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
                }
                match http.post(url).header("content-type", "application/json").body(record(i, sessions)).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                }
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let cpu = cpu_s(pid) + if a.nats { cpu_s(pid_a) } else { 0.0 } - cpu_before;
    let mut latencies = tokio::time::timeout(Duration::from_secs(30), tenant_watcher).await.unwrap().unwrap();
    let full_rss = rss_kib(pid);
    let ok = statuses.iter().filter(|s| **s == 204).count();
    latencies.sort_unstable();
    let stored = a.deliveries.min(a.events_max);
    println!(
        "deliveries: {} in {:.2} s = {:.0}/s ({} answered 204, {} other)",
        a.deliveries,
        elapsed.as_secs_f64(),
        a.deliveries as f64 / elapsed.as_secs_f64(),
        ok,
        a.deliveries - ok
    );
    println!(
        "store: {}; watchers: {} following one session each + 1 tenant-wide{}",
        if a.nats {
            format!("NATS JetStream (sync_interval {})", a.nats_sync.as_deref().unwrap_or("default"))
        } else {
            "embedded".to_owned()
        },
        a.sessions,
        if a.nats { ", on replica B; deliveries alternate A and B" } else { "" }
    );
    println!(
        "delivery -> watcher latency (ms, 1 ms resolution, {} events): p50 {} p90 {} p99 {} max {}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0)
    );
    println!(
        "facade CPU{}: {:.2} s for the deliveries = {:.1} µs per delivery",
        if a.nats { " (both replicas)" } else { "" },
        cpu,
        cpu * 1e6 / a.deliveries as f64
    );
    println!(
        "facade RSS: idle {:.1} MiB, {} idle watchers {:.1} MiB (+{:.1} KiB each), store full ({} events at --events-max {}) {:.1} MiB",
        idle_rss as f64 / 1024.0,
        a.idle_watchers,
        with_idle as f64 / 1024.0,
        (with_idle.saturating_sub(idle_rss)) as f64 / a.idle_watchers.max(1) as f64,
        stored,
        a.events_max,
        full_rss as f64 / 1024.0
    );
    let beyond_first_mib = (full_rss.saturating_sub(idle_rss) * 1024).saturating_sub(1 << 20);
    println!("memory per stored event beyond the first MiB: {:.0} bytes", beyond_first_mib as f64 / stored as f64);
    if a.nats {
        fn size(p: &std::path::Path) -> u64 {
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => {
                    std::fs::read_dir(p).map(|d| d.flatten().map(|e| size(&e.path())).sum()).unwrap_or(0)
                }
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        }
        let bytes = size(&store_dir);
        println!(
            "JetStream store on disk: {:.1} MiB for {} events = {:.0} bytes per event",
            bytes as f64 / (1 << 20) as f64,
            a.deliveries,
            bytes as f64 / a.deliveries as f64
        );
    }
    drop(facade_b);
    drop(facade_a);
    let _ = std::fs::remove_dir_all(&store_dir);
    let _ = std::fs::remove_dir_all(store_dir.with_extension("data"));
    for f in followers {
        f.abort();
    }
}
