//! Load generator: drives the facade (the release binary, as a child process) with N RPCs in
//! flight and, in the same run, the direct REST path to the same simulator (another child) with
//! the same concurrency, and reports throughput, latency percentiles (HDR histogram), errors by
//! code, and the CPU time per request and peak RSS of the facade process, measured from
//! `/proc/<pid>/stat` and `/proc/<pid>/status` so the load generator's and the simulator's own
//! work is not counted against the facade.
//!
//! ```sh
//! cargo build --release --bin callbot-facade
//! cargo run --release --example loadgen -- --rpc create-session --concurrency 64 --duration 10s
//! cargo run --release --example loadgen -- --suite          # every row of BENCHMARKS.md
//! ```
//!
//! Scenario flags: `--rpc create-session|get-script|list-scripts`, `--concurrency`, `--duration`,
//! `--warmup`, `--contacts` (per CreateSession), `--scripts N` (the simulator generates N
//! scripts), `--upstream-delay-ms` (the simulator answers every API call that late),
//! `--path facade|direct|both`, `--facade-arg=--flag=value` (repeatable, passed to the facade).
//! Measurements are only meaningful on an otherwise idle machine: the 1-minute load average is
//! printed before and after each run.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use callbot_facade::{
    domain::{NewSession, SessionLimits},
    pb::{self, call_bot_service_client::CallBotServiceClient},
    upstream::{ExecuteBody, parse_script_list},
};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

const API_KEY: &str = "loadgen-key";
const CALLER_ID: &str = "19001234";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Rpc {
    CreateSession,
    GetScript,
    ListScripts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Facade,
    Direct,
    Both,
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Load generator for callbot-facade (facade vs direct REST against the simulator)")]
struct Args {
    /// RPC to drive.
    #[arg(long, value_enum, default_value = "create-session")]
    rpc: Rpc,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured time per path.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time per path before it (connections, token, caches, allocator).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Contacts per CreateSession.
    #[arg(long, default_value_t = 15)]
    contacts: usize,
    /// Have the simulator generate this many scripts (default: its built-in 14).
    #[arg(long)]
    scripts: Option<usize>,
    /// The simulator answers every API request this late (a `delay_ms` fault).
    #[arg(long)]
    upstream_delay_ms: Option<u64>,
    /// Which path(s) to measure.
    #[arg(long, value_enum, default_value = "both")]
    path: Which,
    /// gRPC connections the load is spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Extra facade flags, e.g. `--facade-arg=--script-cache-ttl=0s`.
    #[arg(long = "facade-arg", allow_hyphen_values = true)]
    facade_args: Vec<String>,
    /// `RUST_LOG` of the facade (its logs go to /dev/null unless --facade-log is set).
    #[arg(long, default_value = "info")]
    facade_log_level: String,
    /// Write the facade's logs to this file.
    #[arg(long)]
    facade_log: Option<PathBuf>,
    /// The callbot-facade binary (default: target/release/callbot-facade beside this example).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Run every scenario of BENCHMARKS.md and print its table (other scenario flags ignored).
    #[arg(long)]
    suite: bool,
}

/// What one measured run of one path produced.
#[derive(Debug, Clone)]
struct Report {
    label: String,
    requests: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// CPU seconds of the facade (facade path only), simulator and load generator, over the run.
    facade_cpu: Option<f64>,
    sim_cpu: f64,
    self_cpu: f64,
    facade_hwm_kib: Option<u64>,
    load_before: String,
    load_after: String,
}

impl Report {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn per_req_us(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.requests.max(1) as f64
    }
    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            "0".into()
        } else {
            self.errors.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" ")
        }
    }
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Facts about one facade process, outside any load.
#[derive(Debug, Clone, Copy)]
struct Startup {
    to_serving: Duration,
    idle_rss_kib: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("callbot-facade"))
            .ok_or("cannot locate target/release")?,
    };
    if !bin.exists() {
        return Err(
            format!("{} not found: run `cargo build --release --bin callbot-facade` first", bin.display()).into()
        );
    }
    let clk_tck = clock_ticks();
    if args.suite {
        return suite(&args, &bin, clk_tck).await;
    }
    let (reports, startup) = scenario(&args, &bin, clk_tck).await?;
    print_header();
    for r in &reports {
        print_row(r, &args);
    }
    println!(
        "\nfacade start to SERVING {:.1} ms; idle RSS {:.1} MiB",
        startup.to_serving.as_secs_f64() * 1e3,
        startup.idle_rss_kib as f64 / 1024.0
    );
    Ok(())
}

/// Every scenario of BENCHMARKS.md, then the budget table.
async fn suite(base: &Args, bin: &Path, clk_tck: f64) -> Result<(), Box<dyn std::error::Error>> {
    let with = |f: &dyn Fn(&mut Args)| {
        let mut a = base.clone();
        a.suite = false;
        a.path = Which::Both;
        a.facade_args.clear();
        a.scripts = None;
        a.upstream_delay_ms = None;
        f(&mut a);
        a
    };
    let scenarios: Vec<(&str, Args)> = vec![
        ("CreateSession, 64 in flight", with(&|a| a.concurrency = 64)),
        ("CreateSession, 1 in flight", with(&|a| a.concurrency = 1)),
        (
            "CreateSession, 64 in flight, facade RUST_LOG=warn (no access log)",
            with(&|a| {
                a.concurrency = 64;
                a.path = Which::Facade;
                a.facade_log_level = "warn".into();
            }),
        ),
        (
            "GetScript, 64 in flight",
            with(&|a| {
                a.rpc = Rpc::GetScript;
                a.concurrency = 64;
            }),
        ),
        (
            "ListScripts 10,000 scripts, 1 in flight, cache off",
            with(&|a| {
                a.rpc = Rpc::ListScripts;
                a.concurrency = 1;
                a.scripts = Some(10_000);
                a.facade_args = vec!["--script-cache-ttl=0s".into()];
            }),
        ),
        (
            "ListScripts 10,000 scripts, 1 in flight, cache on (30 s)",
            with(&|a| {
                a.rpc = Rpc::ListScripts;
                a.concurrency = 1;
                a.scripts = Some(10_000);
                a.path = Which::Facade;
            }),
        ),
        (
            "CreateSession, 1,000 in flight, upstream answers after 1 s",
            with(&|a| {
                a.concurrency = 1000;
                a.upstream_delay_ms = Some(1000);
                a.warmup = Duration::from_secs(3);
            }),
        ),
        (
            "CreateSession, 64 in flight, upstream over h2c (--upstream-http2-prior-knowledge)",
            with(&|a| {
                a.concurrency = 64;
                a.path = Which::Facade;
                a.facade_args = vec!["--upstream-http2-prior-knowledge".into()];
            }),
        ),
        (
            "CreateSession, 1,000 in flight, upstream answers after 1 s, over h2c",
            with(&|a| {
                a.concurrency = 1000;
                a.upstream_delay_ms = Some(1000);
                a.warmup = Duration::from_secs(3);
                a.path = Which::Facade;
                a.facade_args = vec!["--upstream-http2-prior-knowledge".into()];
            }),
        ),
    ];
    let mut all = Vec::new();
    let mut startups = Vec::new();
    for (name, args) in &scenarios {
        eprintln!("== {name}");
        let (reports, startup) = scenario(args, bin, clk_tck).await?;
        startups.push(startup);
        all.push((*name, args.clone(), reports));
    }
    println!("\n## Runs\n");
    print_header();
    for (name, args, reports) in &all {
        println!("| **{name}** |||||||||||||");
        for r in reports {
            print_row(r, args);
        }
    }
    let mut to_serving: Vec<f64> = startups.iter().map(|s| s.to_serving.as_secs_f64() * 1e3).collect();
    to_serving.sort_by(f64::total_cmp);
    let idle: Vec<f64> = startups.iter().map(|s| s.idle_rss_kib as f64 / 1024.0).collect();
    println!(
        "\nstart to SERVING over {} starts: min {:.1} ms, median {:.1} ms, max {:.1} ms; idle RSS {:.1}..{:.1} MiB",
        to_serving.len(),
        to_serving[0],
        to_serving[to_serving.len() / 2],
        to_serving[to_serving.len() - 1],
        idle.iter().copied().fold(f64::INFINITY, f64::min),
        idle.iter().copied().fold(0.0, f64::max),
    );

    // The budgets.
    let facade = |i: usize| all[i].2.iter().find(|r| r.label == "facade").expect("facade row");
    let direct = |i: usize| all[i].2.iter().find(|r| r.label == "direct").expect("direct row");
    let cpu64 = facade(0).per_req_us(facade(0).facade_cpu.unwrap_or(0.0));
    let added = mean_us(&facade(1).hist) - mean_us(&direct(1).hist);
    let list_ratio = mean_us(&facade(4).hist) / mean_us(&direct(4).hist);
    let rss1000 = facade(6).facade_hwm_kib.unwrap_or(0) as f64 / 1024.0;
    let cpu64_h2 = facade(7).per_req_us(facade(7).facade_cpu.unwrap_or(0.0));
    let rss1000_h2 = facade(8).facade_hwm_kib.unwrap_or(0) as f64 / 1024.0;
    let idle_max = idle.iter().copied().fold(0.0, f64::max);
    let errors: u64 = all.iter().flat_map(|(_, _, rs)| rs.iter()).map(Report::error_count).sum();
    let ok = |pass: bool| if pass { "met" } else { "**missed**" };
    println!("\n## Budgets\n");
    println!("| budget | measured | verdict |\n|---|---|---|");
    println!("| facade CPU ≤ 40 µs per CreateSession at 64 in flight | {cpu64:.1} µs | {} |", ok(cpu64 <= 40.0));
    println!(
        "| the same, upstream over h2c (`--upstream-http2-prior-knowledge`) | {cpu64_h2:.1} µs | {} |",
        ok(cpu64_h2 <= 40.0)
    );
    println!(
        "| added mean latency ≤ 100 µs per CreateSession at 1 in flight | {added:.0} µs ({:.0} vs {:.0} µs) | {} |",
        mean_us(&facade(1).hist),
        mean_us(&direct(1).hist),
        ok(added <= 100.0)
    );
    println!(
        "| ListScripts 10,000 ≤ 2× direct fetch+parse | {list_ratio:.2}× ({:.1} vs {:.1} ms) | {} |",
        mean_us(&facade(4).hist) / 1e3,
        mean_us(&direct(4).hist) / 1e3,
        ok(list_ratio <= 2.0)
    );
    println!(
        "| peak RSS ≤ 64 MiB, 1,000 CreateSessions in flight, upstream 1 s | {rss1000:.1} MiB | {} |",
        ok(rss1000 <= 64.0)
    );
    println!("| the same, upstream over h2c | {rss1000_h2:.1} MiB | {} |", ok(rss1000_h2 <= 64.0));
    println!("| idle RSS ≤ 20 MiB | {idle_max:.1} MiB (max of {} starts) | {} |", idle.len(), ok(idle_max <= 20.0));
    println!(
        "| start to SERVING ≤ 100 ms | {:.1} ms (median of {}) | {} |",
        to_serving[to_serving.len() / 2],
        to_serving.len(),
        ok(to_serving[to_serving.len() - 1] <= 100.0)
    );
    println!("| 0 errors in every run | {errors} | {} |", ok(errors == 0));
    Ok(())
}

fn mean_us(h: &Histogram<u64>) -> f64 {
    h.mean()
}

fn print_header() {
    println!(
        "| path | rpc | in flight | requests | req/s | p50 µs | p90 µs | p99 µs | max µs | mean µs | errors | facade CPU µs/req | facade peak RSS MiB | sim CPU µs/req | loadgen CPU µs/req | load 1m before→after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

fn print_row(r: &Report, args: &Args) {
    let rpc = match args.rpc {
        Rpc::CreateSession => "CreateSession",
        Rpc::GetScript => "GetScript",
        Rpc::ListScripts => "ListScripts",
    };
    let h = &r.hist;
    println!(
        "| {} | {rpc} | {} | {} | {:.0} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {}→{} |",
        r.label,
        args.concurrency,
        r.requests,
        r.rps(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.max(),
        h.mean(),
        r.errors_text(),
        r.facade_cpu.map(|c| format!("{:.1}", r.per_req_us(c))).unwrap_or_else(|| "–".into()),
        r.facade_hwm_kib.map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or_else(|| "–".into()),
        r.per_req_us(r.sim_cpu),
        r.per_req_us(r.self_cpu),
        r.load_before,
        r.load_after,
    );
}

/// One scenario: a fresh simulator and facade, then the facade path and the direct path.
async fn scenario(args: &Args, bin: &Path, clk_tck: f64) -> Result<(Vec<Report>, Startup), Box<dyn std::error::Error>> {
    let sim_addr = free_addr()?;
    let mut sim = Command::new(bin)
        .args(["simulate", "--listen", &sim_addr.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let sim_pid = sim.id().ok_or("simulator exited")?;
    wait_tcp(sim_addr, &mut sim).await?;
    let sim_url = format!("http://{sim_addr}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(usize::MAX).tcp_nodelay(true).build()?;
    if let Some(n) = args.scripts {
        let r = http.put(format!("{sim_url}/_sim/scripts")).body(format!("{{\"generate\": {n}}}")).send().await?;
        if !r.status().is_success() {
            return Err(format!("simulator refused the scripts: {}", r.status()).into());
        }
    }
    if let Some(ms) = args.upstream_delay_ms {
        let fault = format!("{{\"path\": \"/api/\", \"delay_ms\": {ms}, \"count\": 100000000}}");
        let r = http.post(format!("{sim_url}/_sim/faults")).body(fault).send().await?;
        if !r.status().is_success() {
            return Err(format!("simulator refused the fault: {}", r.status()).into());
        }
    }
    // The direct path's token, and the script GetScript asks for (the last one: a full scan).
    let token = direct_token(&http, &sim_url).await?;
    let scripts = {
        let body = direct_get(&http, &sim_url, &token).await?;
        parse_script_list(&body).map_err(|e| format!("script list: {e}"))?
    };
    let script_id = scripts.last().map(|s| s.id.clone()).ok_or("the simulator lists no script")?;
    let work = Arc::new(Work::new(args, script_id, scripts.len())?);

    // The facade.
    let grpc_addr = free_addr()?;
    let admin_addr = free_addr()?;
    let log = match &args.facade_log {
        Some(p) => Stdio::from(std::fs::File::create(p)?),
        None => Stdio::null(),
    };
    let started = Instant::now();
    let mut facade = Command::new(bin)
        .args(["--listen", &grpc_addr.to_string(), "--admin-listen", &admin_addr.to_string()])
        .args(["--upstream-url", &sim_url, "--api-key", API_KEY])
        .args(&args.facade_args)
        .env("RUST_LOG", &args.facade_log_level)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let facade_pid = facade.id().ok_or("facade exited")?;
    wait_serving(grpc_addr, &mut facade).await?;
    let startup = Startup { to_serving: started.elapsed(), idle_rss_kib: proc_status(facade_pid, "VmRSS:") };

    let mut reports = Vec::new();
    if args.path != Which::Direct {
        let mut channels = Vec::new();
        for _ in 0..args.connections.max(1) {
            channels.push(Channel::from_shared(format!("http://{grpc_addr}"))?.connect().await?);
        }
        let target = Target::Facade(channels);
        let mut r = measure("facade", args, &target, &work, &[facade_pid, sim_pid], clk_tck).await;
        r.facade_hwm_kib = Some(proc_status(facade_pid, "VmHWM:"));
        reports.push(r);
    }
    if args.path != Which::Facade {
        let target = Target::Direct { http: http.clone(), url: sim_url.clone(), token };
        let mut r = measure("direct", args, &target, &work, &[facade_pid, sim_pid], clk_tck).await;
        r.facade_cpu = None;
        reports.push(r);
    }
    // SIGTERM first: the facade drains and exits 0 (and a profiler wrapping it, `--bin`, writes
    // its output); killed if it is not gone within 30 s.
    let _ = std::process::Command::new("kill").arg("-TERM").arg(facade_pid.to_string()).status();
    if tokio::time::timeout(Duration::from_secs(30), facade.wait()).await.is_err() {
        let _ = facade.kill().await;
    }
    let _ = sim.kill().await;
    Ok((reports, startup))
}

/// What a worker sends, prepared once.
struct Work {
    rpc: Rpc,
    create: pb::CreateSessionRequest,
    /// The exact JSON the facade sends upstream for `create`, split around its session key.
    body_head: Bytes,
    body_tail: Bytes,
    script_id: String,
    script_count: usize,
}

impl Work {
    fn new(args: &Args, script_id: String, script_count: usize) -> Result<Self, Box<dyn std::error::Error>> {
        let create = create_request(&script_id, args.contacts);
        let limits = SessionLimits { max_contacts: 1_000_000, now: SystemTime::now() };
        let session = NewSession::parse(create.clone(), &limits).map_err(|e| format!("request invalid: {e:?}"))?;
        const MARK: &str = "@@SESSION-KEY@@";
        let json = serde_json::to_string(&ExecuteBody::new(&session, MARK))?;
        let (head, tail) = json.split_once(MARK).ok_or("no key in the body")?;
        Ok(Work {
            rpc: args.rpc,
            create,
            body_head: Bytes::copy_from_slice(head.as_bytes()),
            body_tail: Bytes::copy_from_slice(tail.as_bytes()),
            script_id,
            script_count,
        })
    }
}

/// A request with `contacts` contacts (email, code, three Vietnamese variables each).
fn create_request(script_id: &str, contacts: usize) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: script_id.to_owned(),
        contacts: (0..contacts)
            .map(|i| pb::Contact {
                phone: format!("09123{i:05}"),
                email: format!("hoc.sinh{i}@truong.edu.vn"),
                external_contact_code: format!("HS-{i:06}"),
                variables: [
                    ("uB131frQEU".to_owned(), format!("{}.5", i % 10)),
                    ("ho_ten".to_owned(), format!("Nguyễn Văn Đức {i}")),
                    ("lop".to_owned(), "12A1".to_owned()),
                ]
                .into_iter()
                .collect(),
            })
            .collect(),
        name: "Thông báo điểm thi học kỳ I".into(),
        caller_id: CALLER_ID.into(),
        voice: pb::Voice::SouthernFemaleHonganh as i32,
        speed: Some(1),
        retry_count: Some(2),
        calls_per_round: Some(10),
        round_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        retry_interval: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
        ..Default::default()
    }
}

enum Target {
    Facade(Vec<Channel>),
    Direct { http: reqwest::Client, url: String, token: String },
}

/// Warm up, then measure `args.duration` with `args.concurrency` workers; CPU of `pids` (facade,
/// simulator) and of this process is read before and after.
async fn measure(label: &str, args: &Args, target: &Target, work: &Arc<Work>, pids: &[u32; 2], clk_tck: f64) -> Report {
    let _ = run_workers(args, target, work, args.warmup).await;
    let load_before = load1();
    let cpu_before: Vec<f64> = pids.iter().map(|p| proc_cpu(&p.to_string(), clk_tck)).collect();
    let self_before = proc_cpu("self", clk_tck);
    let started = Instant::now();
    let (hist, errors) = run_workers(args, target, work, args.duration).await;
    let elapsed = started.elapsed();
    let cpu_after: Vec<f64> = pids.iter().map(|p| proc_cpu(&p.to_string(), clk_tck)).collect();
    let self_after = proc_cpu("self", clk_tck);
    Report {
        label: label.into(),
        requests: hist.len(),
        elapsed,
        hist,
        errors,
        facade_cpu: Some(cpu_after[0] - cpu_before[0]),
        sim_cpu: cpu_after[1] - cpu_before[1],
        self_cpu: self_after - self_before,
        facade_hwm_kib: None,
        load_before,
        load_after: load1(),
    }
}

/// `concurrency` workers, each sending one request after the other until `duration` is over;
/// every completed request's latency (µs) goes in the histogram, failures by code.
async fn run_workers(
    args: &Args,
    target: &Target,
    work: &Arc<Work>,
    duration: Duration,
) -> (Histogram<u64>, BTreeMap<String, u64>) {
    let until = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.concurrency {
        let work = work.clone();
        let client = match target {
            Target::Facade(channels) => Client::Facade(CallBotServiceClient::new(channels[i % channels.len()].clone())),
            Target::Direct { http, url, token } => {
                Client::Direct { http: http.clone(), url: url.clone(), token: token.clone() }
            }
        };
        tasks.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
            let mut errors = BTreeMap::new();
            while Instant::now() < until {
                let t = Instant::now();
                let result = client.call(&work).await;
                let us = t.elapsed().as_micros() as u64;
                match result {
                    Ok(()) => hist.saturating_record(us.max(1)),
                    Err(code) => *errors.entry(code).or_insert(0) += 1,
                }
            }
            (hist, errors)
        });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let mut errors = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (h, e) = done.expect("worker panicked");
        hist.add(h).expect("histogram bounds");
        for (k, v) in e {
            *errors.entry(k).or_insert(0) += v;
        }
    }
    (hist, errors)
}

enum Client {
    Facade(CallBotServiceClient<Channel>),
    Direct { http: reqwest::Client, url: String, token: String },
}

impl Client {
    /// One request; `Err` names the failure (gRPC code, HTTP status or envelope code).
    async fn call(&self, work: &Work) -> Result<(), String> {
        match self {
            Client::Facade(client) => {
                let mut client = client.clone();
                let code = |s: tonic::Status| format!("{:?}", s.code());
                match work.rpc {
                    Rpc::CreateSession => {
                        let r = client.create_session(work.create.clone()).await.map_err(code)?;
                        let session = r.into_inner().session.ok_or("no_session")?;
                        if session.id.is_empty() {
                            return Err("no_session_id".into());
                        }
                    }
                    Rpc::GetScript => {
                        let r = client
                            .get_script(pb::GetScriptRequest { script_id: work.script_id.clone() })
                            .await
                            .map_err(code)?;
                        r.into_inner().script.ok_or("no_script")?;
                    }
                    Rpc::ListScripts => {
                        let mut stream = client
                            .list_scripts(pb::ListScriptsRequest { name_contains: String::new() })
                            .await
                            .map_err(code)?
                            .into_inner();
                        let mut n = 0;
                        while stream.message().await.map_err(code)?.is_some() {
                            n += 1;
                        }
                        if n != work.script_count {
                            return Err("short_stream".into());
                        }
                    }
                }
                Ok(())
            }
            Client::Direct { http, url, token } => match work.rpc {
                Rpc::CreateSession => {
                    let key = uuid::Uuid::new_v4().to_string();
                    let mut body = Vec::with_capacity(work.body_head.len() + key.len() + work.body_tail.len());
                    body.extend_from_slice(&work.body_head);
                    body.extend_from_slice(key.as_bytes());
                    body.extend_from_slice(&work.body_tail);
                    let r = http
                        .post(format!("{url}/api/call_bot/execute_by_phone"))
                        .query(&[("cid", CALLER_ID)])
                        .header("x-api-key", API_KEY)
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| format!("io:{}", e.without_url()))?;
                    if !r.status().is_success() {
                        return Err(format!("http_{}", r.status().as_u16()));
                    }
                    let body = r.bytes().await.map_err(|_| "io_body".to_owned())?;
                    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| "json".to_owned())?;
                    if v["status_code"] != 9999 || v["payload"]["autocall_id"].as_str().is_none_or(str::is_empty) {
                        return Err(format!("envelope_{}", v["payload"]["error"].as_str().unwrap_or("?")));
                    }
                    Ok(())
                }
                Rpc::GetScript | Rpc::ListScripts => {
                    let body = direct_get(http, url, token).await?;
                    let scripts = parse_script_list(&body).map_err(|e| format!("parse:{e}"))?;
                    if work.rpc == Rpc::GetScript {
                        scripts.iter().find(|s| s.id == work.script_id).ok_or("not_found")?;
                    } else if scripts.len() != work.script_count {
                        return Err("short_list".into());
                    }
                    Ok(())
                }
            },
        }
    }
}

async fn direct_token(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = http
        .get(format!("{url}/api/auth"))
        .query(&[("apiKey", API_KEY)])
        .send()
        .await
        .map_err(|e| format!("auth: {e}"))?;
    let v: serde_json::Value = r.json().await.map_err(|e| format!("auth: {e}"))?;
    v["payload"]["access_token"].as_str().map(str::to_owned).ok_or_else(|| "auth: no token".into())
}

async fn direct_get(http: &reqwest::Client, url: &str, token: &str) -> Result<Bytes, String> {
    let r = http
        .get(format!("{url}/api/call_bot/script/list"))
        .header("x-api-key", API_KEY)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .map_err(|e| format!("io:{}", e.without_url()))?;
    if !r.status().is_success() {
        return Err(format!("http_{}", r.status().as_u16()));
    }
    r.bytes().await.map_err(|_| "io_body".into())
}

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> std::io::Result<SocketAddr> {
    StdListener::bind("127.0.0.1:0")?.local_addr()
}

async fn wait_tcp(addr: SocketAddr, child: &mut Child) -> Result<(), Box<dyn std::error::Error>> {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            return Err(format!("child exited: {status}").into());
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!("nothing listening on {addr} after 10 s").into())
}

/// Polls `grpc.health.v1.Health/Check` until it answers SERVING.
async fn wait_serving(addr: SocketAddr, child: &mut Child) -> Result<(), Box<dyn std::error::Error>> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let until = Instant::now() + Duration::from_secs(10);
    let endpoint = Channel::from_shared(format!("http://{addr}"))?;
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            return Err(format!("facade exited: {status}").into());
        }
        if let Ok(channel) = endpoint.connect().await {
            let mut health = HealthClient::new(channel);
            loop {
                match health.check(HealthCheckRequest { service: String::new() }).await {
                    Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
                    _ if Instant::now() >= until => break,
                    _ => tokio::time::sleep(Duration::from_micros(200)).await,
                }
            }
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Err("the facade did not report SERVING within 10 s".into())
}

/// utime + stime of a process, in seconds (`pid` may be `self`).
fn proc_cpu(pid: &str, clk_tck: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces) start at field 3, "state".
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / clk_tck
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in KiB.
fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// The 1-minute load average.
fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ; 100 on Linux).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
