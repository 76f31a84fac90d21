//! The calling policy's cap under contention on JetStream (issue 23; BENCHMARKS.md, "The calling
//! policy"): one `nats-server -js`, one simulator, two facade processes on both with the same policy
//! file (the `vn-decree-91` preset: one advertising call per number per 24 h), on a test clock at
//! 10:00 local so the hours are open. For each of `--numbers` numbers, `--racers` CreateSessions for that
//! one number are sent at once, alternately through the two processes; the latency of every
//! CreateSession is recorded. Then, as the uncontended reference, the same number of rounds of
//! `--racers` CreateSessions each for a different number (every one admitted). Measurement only:
//! it prints p50/p99/max per phase and how many were admitted per number, and asserts nothing.
//! `--without-policy` runs the same with no policy file (the reference: every racer is admitted).
//!
//! ```text
//! cargo build --release --bin callbot-facade --example policy_race
//! NATS_SERVER_BIN=/root/.cache/callbot-nats/2.12.8/bin/nats-server \
//!   target/release/examples/policy_race [--facade-bin target/release/callbot-facade] [--numbers 40] [--racers 50] \
//!   [--without-policy]
//! ```

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use callbot_facade::pb::{self, call_bot_service_client::CallBotServiceClient};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const API_KEY: &str = "policy-race-key";
const SCRIPT: &str = "64915bc76a690c0edad14723";

#[derive(Parser, Debug)]
struct Args {
    /// The facade binary (its `simulate` subcommand is the upstream).
    #[arg(long, default_value = "target/release/callbot-facade")]
    facade_bin: PathBuf,
    /// Contended numbers (one round of racers each).
    #[arg(long, default_value_t = 40)]
    numbers: usize,
    /// CreateSessions racing for one number.
    #[arg(long, default_value_t = 50)]
    racers: usize,
    /// The reference: the same runs with no `--calling-policy` (every racer is admitted).
    #[arg(long)]
    without_policy: bool,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn spawn(program: &Path, args: &[String]) -> Result<Child> {
    Ok(Command::new(program)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

async fn wait_http(url: &str, child: &mut Child) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!("{url}: the process exited ({status})").into());
        }
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("{url}: not ready within 20 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn request(phone: String, key: String) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: SCRIPT.to_owned(),
        contacts: vec![pb::Contact { phone, ..Default::default() }],
        external_session_id: key,
        purpose: pb::CallPurpose::Advertising as i32,
        ..Default::default()
    }
}

/// One round: `phones[i]` through `clients[i % 2]`, all at once; each answer's latency (µs) into
/// `hist`; returns how many were admitted and how many refused for another reason than the policy's.
async fn round(
    clients: &[CallBotServiceClient<Channel>; 2],
    phones: Vec<String>,
    tag: &str,
    hist: &mut Histogram<u64>,
) -> (usize, usize) {
    let racers = phones.into_iter().enumerate().map(|(i, phone)| {
        let mut client = clients[i % 2].clone();
        let req = request(phone, format!("{tag}-{i}"));
        async move {
            let started = Instant::now();
            let answer = client.create_session(req).await;
            (started.elapsed(), answer)
        }
    });
    let (mut admitted, mut other) = (0, 0);
    for (took, answer) in futures::future::join_all(racers).await {
        hist.record(took.as_micros() as u64).unwrap();
        match answer {
            Ok(_) => admitted += 1,
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
            Err(status) => {
                other += 1;
                eprintln!("unexpected answer: {status:?}");
            }
        }
    }
    (admitted, other)
}

fn line(name: &str, h: &Histogram<u64>) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{name}: {} CreateSessions, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
}

fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let nats_bin = std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from).unwrap_or_else(|| "nats-server".into());
    let dir = tempfile::tempdir()?;

    let (nats_port, nats_monitor) = (free_addr().port(), free_addr().port());
    let nats_args: Vec<String> =
        ["-js", "-a", "127.0.0.1", "-p", &nats_port.to_string(), "-m", &nats_monitor.to_string()]
            .into_iter()
            .map(str::to_owned)
            .chain(["-sd".to_owned(), dir.path().join("nats").display().to_string()])
            .collect();
    let mut nats = spawn(&nats_bin, &nats_args)?;
    wait_http(&format!("http://127.0.0.1:{nats_monitor}/healthz?js-enabled-only=true"), &mut nats).await?;

    let sim_addr = free_addr();
    let mut sim = spawn(&args.facade_bin, &["simulate".into(), "--listen".into(), sim_addr.to_string()])?;
    let until = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(sim_addr).await.is_err() {
        if sim.try_wait()?.is_some() || Instant::now() > until {
            return Err("the simulator did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "policies:\n  - tenant: default\n    time_zone: Asia/Ho_Chi_Minh\n    advertising: {preset: vn-decree-91}\n",
    )?;
    let mut facades = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (grpc, admin) = (free_addr(), free_addr());
        let flags: Vec<String> = [
            ("--listen", grpc.to_string()),
            ("--admin-listen", admin.to_string()),
            ("--upstream-url", format!("http://{sim_addr}")),
            ("--api-key", API_KEY.to_owned()),
            ("--caller-auth", "mesh".to_owned()),
            ("--events-nats-url", format!("nats://127.0.0.1:{nats_port}")),
            ("--calling-policy", policy.display().to_string()),
            ("--policy-clock-start", "2027-01-04T10:00:00+07:00".to_owned()),
        ]
        .into_iter()
        .filter(|(flag, _)| !(args.without_policy && flag.contains("policy")))
        .flat_map(|(f, v)| [f.to_owned(), v])
        .collect();
        let mut facade = spawn(&args.facade_bin, &flags)?;
        wait_http(&format!("http://{admin}/readyz"), &mut facade).await?;
        facades.push(facade);
        clients.push(CallBotServiceClient::new(Channel::from_shared(format!("http://{grpc}"))?.connect().await?));
    }
    let clients: [CallBotServiceClient<Channel>; 2] = [clients[0].clone(), clients[1].clone()];

    // Warm-up: connections, the bucket, the simulator (numbers used nowhere else).
    let mut warm = Histogram::<u64>::new(3)?;
    round(&clients, (0..args.racers).map(|i| format!("0918{i:06}")).collect(), "warm", &mut warm).await;

    println!(
        "policy_race: {} numbers x {} racers through 2 facades on one JetStream, {} (load 1m {} at the start)",
        args.numbers,
        args.racers,
        if args.without_policy { "without a policy" } else { "the vn-decree-91 preset" },
        load1()
    );
    let mut contended = Histogram::<u64>::new(3)?;
    let mut per_number = Vec::with_capacity(args.numbers);
    let mut errors = 0;
    for n in 0..args.numbers {
        let phone = format!("0912{n:06}");
        let phones = vec![phone; args.racers];
        let (admitted, other) = round(&clients, phones, &format!("race-{n}"), &mut contended).await;
        per_number.push(admitted);
        errors += other;
    }
    let mut uncontended = Histogram::<u64>::new(3)?;
    for n in 0..args.numbers {
        let phones = (0..args.racers).map(|i| format!("0913{:06}", n * args.racers + i)).collect();
        let (_, other) = round(&clients, phones, &format!("free-{n}"), &mut uncontended).await;
        errors += other;
    }
    line("contended (one number per round)", &contended);
    line("uncontended (a number per racer)", &uncontended);
    let exactly_one = per_number.iter().filter(|a| **a == 1).count();
    println!(
        "admitted per contended number: exactly one for {exactly_one} of {} numbers {:?}; other errors: {errors}; \
         load 1m {} at the end",
        args.numbers,
        per_number,
        load1()
    );
    drop(facades);
    drop(sim);
    drop(nats);
    Ok(())
}
