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
//! cargo run --release --example loadgen -- --soak --duration 10m   # soak (exit 1 on FAIL)
//! ```
//!
//! Scenario flags: `--rpc create-session|get-script|list-scripts`, `--concurrency`, `--duration`,
//! `--warmup`, `--contacts` (per CreateSession), `--scripts N` (the simulator generates N
//! scripts), `--upstream-delay-ms` (the simulator answers every API call that late),
//! `--path facade|direct|both`, `--facade-arg=--flag=value` (repeatable, passed to the facade).
//! Measurements are only meaningful on an otherwise idle machine: the 1-minute load average is
//! printed before and after each run.
//!
//! `--soak` (see the `soak` module below) drives a mix of RPCs through the facade for `--duration`
//! with `--soak-concurrency` in flight while ~1 % injected upstream faults keep coming, classifies
//! every answer, checks that no session was created twice and that the facade's RSS stays flat,
//! and ends with one line `soak: PASS …` or `soak: FAIL …` (exit status 1).

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
    convert::execute_body,
    domain::{NewSession, SessionLimits},
    pb::{self, call_bot_service_client::CallBotServiceClient},
    upstream::parse_script_list,
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
    /// Run this binary in the facade's place, with the facade's flags (e.g.
    /// `target/release/examples/stack_floor`, the stack doing nothing of ours); the simulator
    /// still runs from `--bin`.
    #[arg(long)]
    facade_bin: Option<PathBuf>,
    /// Run every scenario of BENCHMARKS.md and print its table (other scenario flags ignored);
    /// with `target/release/examples/stack_floor` built, the floor of the stack too.
    #[arg(long)]
    suite: bool,
    /// Soak: mixed RPCs through the facade for `--duration` with injected faults (see `soak`);
    /// exits 1 unless every answer is expected, no session is created twice and RSS grows < 5 %.
    #[arg(long)]
    soak: bool,
    /// Soak: requests in flight.
    #[arg(long, default_value_t = 32)]
    soak_concurrency: usize,
    /// Soak: fault injections per completed request (0.01 = 1 %).
    #[arg(long, default_value_t = 0.01)]
    soak_fault_rate: f64,
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
    if args.soak {
        let pass = soak::run(&args, &bin).await?;
        // The children are already stopped; exit 1 on a FAIL verdict.
        std::process::exit(if pass { 0 } else { 1 });
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
        a.facade_bin = None;
        a.scripts = None;
        a.upstream_delay_ms = None;
        f(&mut a);
        a
    };
    let mut scenarios: Vec<(&str, Args)> = vec![
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
    // The floor of the stack (examples/stack_floor.rs) in the facade's place, when it is built:
    // what tonic + prost + reqwest cost doing nothing of ours, the reference for the CPU and
    // latency budgets (BENCHMARKS.md "The floor of the stack").
    let floor_bin = bin.parent().map(|d| d.join("examples").join("stack_floor")).filter(|p| p.exists());
    if let Some(floor) = &floor_bin {
        for (name, concurrency) in [
            ("stack floor (examples/stack_floor, nothing of ours), CreateSession, 64 in flight", 64),
            ("stack floor (examples/stack_floor, nothing of ours), CreateSession, 1 in flight", 1),
        ] {
            scenarios.push((
                name,
                with(&|a| {
                    a.concurrency = concurrency;
                    a.facade_bin = Some(floor.clone());
                }),
            ));
        }
    }
    let mut all = Vec::new();
    let mut startups = Vec::new();
    for (name, args) in &scenarios {
        eprintln!("== {name}");
        let (reports, startup) = scenario(args, bin, clk_tck).await?;
        if args.facade_bin.is_none() {
            startups.push(startup);
        }
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
    if floor_bin.is_some() {
        let floor_cpu64 = facade(9).per_req_us(facade(9).facade_cpu.unwrap_or(0.0));
        let floor_added = mean_us(&facade(10).hist) - mean_us(&direct(10).hist);
        println!(
            "| (reference) the stack floor's CPU per CreateSession at 64 in flight | {floor_cpu64:.1} µs (the facade: {cpu64:.1}) | – |"
        );
        println!(
            "| (reference) the stack floor's added mean latency at 1 in flight | {floor_added:.0} µs ({:.0} vs {:.0} µs; the facade: {added:.0}) | – |",
            mean_us(&facade(10).hist),
            mean_us(&direct(10).hist),
        );
    } else {
        println!("\n(`cargo build --release --example stack_floor` adds the floor of the stack to the suite.)");
    }
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
    let (mut sim, sim_addr) = start_simulator(bin, "warn").await?;
    let sim_pid = sim.id().ok_or("simulator exited")?;
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
    let (mut facade, grpc_addr, to_serving) =
        start_facade(args.facade_bin.as_deref().unwrap_or(bin), args, &sim_url, &[]).await?;
    let facade_pid = facade.id().ok_or("facade exited")?;
    let startup = Startup { to_serving, idle_rss_kib: proc_status(facade_pid, "VmRSS:") };

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
        let json = serde_json::to_string(&execute_body(&session, MARK))?;
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
/// Starts `bin simulate` on a free port (its logs at `log_level`, discarded) and waits until it
/// accepts connections; killed when the handle is dropped.
async fn start_simulator(bin: &Path, log_level: &str) -> Result<(Child, SocketAddr), Box<dyn std::error::Error>> {
    let addr = free_addr()?;
    let mut sim = Command::new(bin)
        .args(["simulate", "--listen", &addr.to_string()])
        .env("RUST_LOG", log_level)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_tcp(addr, &mut sim).await?;
    Ok((sim, addr))
}

/// Starts `program` as the facade in front of `sim_url` (free ports, `extra` flags then
/// `--facade-arg`s, logs per `--facade-log-level`/`--facade-log`) and waits for SERVING; returns
/// it, its gRPC address and the time from spawn to SERVING. Killed when the handle is dropped.
async fn start_facade(
    program: &Path,
    args: &Args,
    sim_url: &str,
    extra: &[&str],
) -> Result<(Child, SocketAddr, Duration), Box<dyn std::error::Error>> {
    let grpc_addr = free_addr()?;
    let admin_addr = free_addr()?;
    let log = match &args.facade_log {
        Some(p) => Stdio::from(std::fs::File::create(p)?),
        None => Stdio::null(),
    };
    let started = Instant::now();
    let mut facade = Command::new(program)
        .args(["--listen", &grpc_addr.to_string(), "--admin-listen", &admin_addr.to_string()])
        .args(["--upstream-url", sim_url, "--api-key", API_KEY])
        .args(extra)
        .args(&args.facade_args)
        .env("RUST_LOG", &args.facade_log_level)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    wait_serving(grpc_addr, &mut facade).await?;
    Ok((facade, grpc_addr, started.elapsed()))
}

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

/// `--soak`: a long run of mixed RPCs through the facade with injected upstream faults.
///
/// * **Mix** (per request, drawn at random): 15 % ListScripts, 20 % GetScript of a listed script,
///   5 % GetScript of a script that does not exist (`NOT_FOUND`/`SCRIPT_NOT_FOUND`), 50 %
///   CreateSession with a caller-given `external_session_id` (`soak-<n>`), 10 % CreateSession
///   without one (the facade generates it). Three contacts per session; caller deadline 2 s.
///   The facade runs with `--upstream-attempt-timeout 300ms --script-cache-ttl 0s` (before any
///   `--facade-arg`), so every read reaches the upstream (and its faults) and slow headers cost a
///   read one attempt, as in docs/fault-matrix.md.
/// * **Faults**: a background task posts one-shot faults to `/_sim/faults` (no `path`: whichever
///   upstream request comes next takes it, token fetches included), `--soak-fault-rate` (1 %) of the
///   requests completed so far, drawn in turn from [`FAULTS`].
/// * **Classification**: every answer is OK or a (code, reason) that one of those faults can give
///   that RPC (docs/fault-matrix.md, README "Errors"; [`expected`]), counted per (rpc, code, reason);
///   anything else is unexpected and printed.
/// * **Sessions**: a keyed CreateSession whose answer leaves the outcome open (or that is worth
///   retrying) is retried with the same key, as a caller would: `ALREADY_EXISTS` after an answer that
///   may have created it is a success; on a first attempt it is a duplicate. At the end the
///   simulator's `sessions_total` must lie between the sessions known created and that plus the
///   open outcomes, and no `ext_session_id` may appear twice in `GET /_sim/sessions` (the last
///   100,000 sessions; when nothing was dropped, every key known created must be there exactly once).
/// * **RSS**: the facade's VmRSS every 2 s; growth from the warm-up sample (10 % of the run or 30 s,
///   whichever is later) to the end must stay under 5 %.
mod soak {
    use std::{
        collections::{BTreeMap, HashMap, HashSet},
        path::Path,
        sync::{
            Arc, Mutex,
            atomic::{AtomicBool, AtomicU64, Ordering},
        },
        time::{Duration, Instant},
    };

    use callbot_facade::pb::{self, call_bot_service_client::CallBotServiceClient};
    use hdrhistogram::Histogram;
    use tonic::{Code, transport::Channel};
    use tonic_types::StatusExt;

    use super::{Args, create_request, load1, proc_status};

    type BoxError = Box<dyn std::error::Error>;

    /// Caller deadline of every RPC.
    const DEADLINE: Duration = Duration::from_secs(2);
    /// Most attempts of one keyed CreateSession (the first and its retries with the same key).
    const MAX_ATTEMPTS: u32 = 6;
    /// Contacts per CreateSession (keeps `GET /_sim/sessions` of 100,000 sessions small).
    const CONTACTS: usize = 3;
    /// A script id the simulator does not have.
    const MISSING_SCRIPT: &str = "ffffffffffffffffffffffff";
    /// Largest RSS growth that passes, in percent.
    const MAX_RSS_GROWTH_PCT: f64 = 5.0;

    /// The injected faults (name, `POST /_sim/faults` body), posted in turn.
    pub(super) const FAULTS: &[(&str, &str)] = &[
        ("503 once", r#"{"status": 503}"#),
        ("503 x3", r#"{"status": 503, "count": 3}"#),
        ("502", r#"{"status": 502}"#),
        ("429 Retry-After 7", r#"{"status": 429, "retry_after": 7}"#),
        ("429", r#"{"status": 429}"#),
        ("500", r#"{"status": 500}"#),
        ("504", r#"{"status": 504}"#),
        ("reset before headers", r#"{"drop": true}"#),
        ("reset after headers", r#"{"abort_after_headers": true}"#),
        ("truncated body", r#"{"truncate": true}"#),
        ("slow headers 2.5 s", r#"{"delay_ms": 2500}"#),
        ("slow body 3 x 0.8 s", r#"{"body_chunk_delay_ms": 800, "body_chunks": 4}"#),
        (
            "HTML page with 200",
            r#"{"status": 200, "body": "<!DOCTYPE html><html><body>maintenance</body></html>", "content_type": "text/html"}"#,
        ),
        ("empty body with 200", r#"{"status": 200, "body": ""}"#),
        ("401 once", r#"{"status": 401, "body": "<html>401</html>", "content_type": "text/html"}"#),
        ("expired token", r#"{"expire_tokens": true}"#),
        (
            "expired token, then token endpoint 503",
            r#"[{"expire_tokens": true}, {"path": "/api/auth", "status": 503}]"#,
        ),
        ("wrong content type", r#"{"content_type": "text/html"}"#),
    ];

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Op {
        ListScripts,
        GetScriptHit,
        GetScriptMiss,
        CreateSessionKeyed,
        CreateSessionKeyless,
    }

    impl Op {
        fn name(self) -> &'static str {
            match self {
                Op::ListScripts => "ListScripts",
                Op::GetScriptHit => "GetScript(hit)",
                Op::GetScriptMiss => "GetScript(miss)",
                Op::CreateSessionKeyed => "CreateSession(key)",
                Op::CreateSessionKeyless => "CreateSession(no key)",
            }
        }
        fn is_write(self) -> bool {
            matches!(self, Op::CreateSessionKeyed | Op::CreateSessionKeyless)
        }
        /// Draw one by the mix (`r` uniform in 0..100).
        fn draw(r: u64) -> Op {
            match r {
                0..15 => Op::ListScripts,
                15..35 => Op::GetScriptHit,
                35..40 => Op::GetScriptMiss,
                40..90 => Op::CreateSessionKeyed,
                _ => Op::CreateSessionKeyless,
            }
        }
    }

    /// Whether `(code, reason)` is an answer a soak fault (or the request itself) can give `op`.
    /// `retry`: a keyed CreateSession retried after an answer that may have created the session.
    fn expected(op: Op, code: Code, reason: &str, retry: bool) -> bool {
        match (code, reason) {
            (Code::Unavailable, "UPSTREAM_UNAVAILABLE")
            | (Code::ResourceExhausted, "UPSTREAM_RATE_LIMITED")
            | (Code::Internal, "UPSTREAM_MALFORMED" | "UPSTREAM_INTERNAL_ERROR")
            | (Code::DeadlineExceeded, "UPSTREAM_TIMEOUT") => true,
            // A read loses its connection; a write cannot know whether the upstream acted.
            (Code::Unavailable, "UPSTREAM_CONNECTION_LOST") => !op.is_write(),
            (Code::Unavailable, "UPSTREAM_OUTCOME_UNKNOWN") => op.is_write(),
            // A write is one attempt over the whole deadline: slow headers or body run it out.
            (Code::DeadlineExceeded, "DEADLINE_EXCEEDED") => op.is_write(),
            // Two 401s for one call: the token it refreshed to was invalidated again before its
            // one retry (a second expiry, or the 401 fault meeting the retry), or the token
            // endpoint itself answered 401 (the matrix rows "401 twice" and "token endpoint: 401").
            (Code::Unauthenticated, "UPSTREAM_UNAUTHENTICATED") => true,
            (Code::NotFound, "SCRIPT_NOT_FOUND") => op == Op::GetScriptMiss,
            (Code::AlreadyExists, "SESSION_ALREADY_EXISTS") => op == Op::CreateSessionKeyed && retry,
            _ => false,
        }
    }

    /// Whether a CreateSession answered this may still have started the session upstream.
    fn may_have_created(code: Code, reason: &str) -> bool {
        matches!(
            (code, reason),
            (Code::Unavailable, "UPSTREAM_OUTCOME_UNKNOWN")
                | (Code::DeadlineExceeded, _)
                | (Code::Internal, "UPSTREAM_MALFORMED")
                | (Code::Cancelled, _)
                | (Code::Unknown, _)
        )
    }

    /// Whether a caller retries a keyed CreateSession answered this (with the same key).
    fn worth_retrying(code: Code) -> bool {
        matches!(
            code,
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Internal | Code::Cancelled
        )
    }

    /// One answer, as the soak counts it.
    struct Answer {
        code: Code,
        reason: String,
        message: String,
    }

    impl Answer {
        fn ok() -> Self {
            Answer { code: Code::Ok, reason: String::new(), message: String::new() }
        }
        fn from_status(s: &tonic::Status) -> Self {
            let reason = s.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_else(|| "-".into());
            Answer { code: s.code(), reason, message: s.message().chars().take(200).collect() }
        }
        /// An OK answer whose content is wrong.
        fn bad(what: &str) -> Self {
            Answer { code: Code::Ok, reason: format!("BAD_ANSWER:{what}"), message: what.into() }
        }
    }

    /// What each worker accumulates.
    #[derive(Default)]
    struct Tally {
        /// (rpc, code, reason) → count.
        answers: BTreeMap<(String, String, String), u64>,
        unexpected: u64,
        /// CANCELLED "Timeout expired" at or past the deadline: the caller's own tonic timer (its
        /// channel enforces the grpc-timeout it sends) fired before the facade's DEADLINE_EXCEEDED,
        /// sent 100 ms early, reached it: a scheduling stall of over 100 ms on an overloaded machine.
        /// Counted and printed apart; not a facade answer.
        caller_timeouts: u64,
        /// The first unexpected answers, in words.
        unexpected_samples: Vec<String>,
        /// Keys whose session is known created (OK, or ALREADY_EXISTS after an open outcome).
        keys_created: Vec<u64>,
        /// Keys given up on while the outcome was open.
        keys_open: u64,
        /// Keys that failed for sure (no attempt may have created them).
        keys_failed: u64,
        /// Keys answered ALREADY_EXISTS on a first attempt, or after answers that created nothing.
        keys_duplicate: Vec<u64>,
        keyed_retries: u64,
        keyless_ok: u64,
        keyless_open: u64,
        /// Latency of OK answers, µs.
        hist: Option<Histogram<u64>>,
    }

    impl Tally {
        fn record(&mut self, op: Op, a: &Answer, retry: bool, us: u64) {
            let code =
                if a.code == Code::Ok && a.reason.is_empty() { "OK".to_owned() } else { format!("{:?}", a.code) };
            *self.answers.entry((op.name().to_owned(), code.clone(), a.reason.clone())).or_insert(0) += 1;
            let fine = if a.code == Code::Ok { a.reason.is_empty() } else { expected(op, a.code, &a.reason, retry) };
            let callers_own_timer =
                a.code == Code::Cancelled && a.message == "Timeout expired" && Duration::from_micros(us) >= DEADLINE;
            if callers_own_timer {
                self.caller_timeouts += 1;
            } else if !fine {
                self.unexpected += 1;
                if self.unexpected_samples.len() < 20 {
                    self.unexpected_samples.push(format!("{} {code} {} ({})", op.name(), a.reason, a.message));
                }
            } else if a.code == Code::Ok {
                if let Some(h) = &mut self.hist {
                    h.saturating_record(us.max(1));
                }
            }
        }

        fn merge(&mut self, o: Tally) {
            for (k, v) in o.answers {
                *self.answers.entry(k).or_insert(0) += v;
            }
            self.unexpected += o.unexpected;
            self.caller_timeouts += o.caller_timeouts;
            for s in o.unexpected_samples {
                if self.unexpected_samples.len() < 20 {
                    self.unexpected_samples.push(s);
                }
            }
            self.keys_created.extend(o.keys_created);
            self.keys_open += o.keys_open;
            self.keys_failed += o.keys_failed;
            self.keys_duplicate.extend(o.keys_duplicate);
            self.keyed_retries += o.keyed_retries;
            self.keyless_ok += o.keyless_ok;
            self.keyless_open += o.keyless_open;
            if let (Some(h), Some(oh)) = (&mut self.hist, &o.hist) {
                let _ = h.add(oh);
            }
        }
    }

    /// What the workers share.
    struct Shared {
        create: pb::CreateSessionRequest,
        script_ids: Vec<String>,
        next_key: AtomicU64,
        completed: AtomicU64,
        stop: AtomicBool,
    }

    fn key_name(n: u64) -> String {
        format!("soak-{n}")
    }

    fn new_hist() -> Option<Histogram<u64>> {
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).ok()
    }

    /// xorshift64*: enough randomness for a mix, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    fn with_deadline<T>(msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(DEADLINE);
        r
    }

    /// One RPC; the answer as counted.
    async fn call(
        client: &mut CallBotServiceClient<Channel>,
        shared: &Shared,
        op: Op,
        key: Option<&str>,
        pick: u64,
    ) -> Answer {
        match op {
            Op::ListScripts => {
                let mut stream = match client.list_scripts(with_deadline(pb::ListScriptsRequest::default())).await {
                    Ok(r) => r.into_inner(),
                    Err(s) => return Answer::from_status(&s),
                };
                let mut n = 0;
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => n += 1,
                        Ok(None) => break,
                        Err(s) => return Answer::from_status(&s),
                    }
                }
                if n == shared.script_ids.len() { Answer::ok() } else { Answer::bad("short_stream") }
            }
            Op::GetScriptHit | Op::GetScriptMiss => {
                let id = if op == Op::GetScriptMiss {
                    MISSING_SCRIPT.to_owned()
                } else {
                    shared.script_ids[(pick as usize) % shared.script_ids.len()].clone()
                };
                match client.get_script(with_deadline(pb::GetScriptRequest { script_id: id.clone() })).await {
                    Ok(r) => match r.into_inner().script {
                        Some(s) if s.id == id && op == Op::GetScriptHit => Answer::ok(),
                        Some(_) if op == Op::GetScriptMiss => Answer::bad("missing_script_found"),
                        _ => Answer::bad("wrong_script"),
                    },
                    Err(s) => Answer::from_status(&s),
                }
            }
            Op::CreateSessionKeyed | Op::CreateSessionKeyless => {
                let mut req = shared.create.clone();
                req.external_session_id = key.unwrap_or_default().to_owned();
                match client.create_session(with_deadline(req)).await {
                    Ok(r) => match r.into_inner().session {
                        Some(s) if s.id.is_empty() => Answer::bad("no_session_id"),
                        Some(s) if key.is_some_and(|k| k != s.external_session_id) => Answer::bad("other_key"),
                        Some(s) if s.external_session_id.is_empty() => Answer::bad("no_key"),
                        Some(_) => Answer::ok(),
                        None => Answer::bad("no_session"),
                    },
                    Err(s) => Answer::from_status(&s),
                }
            }
        }
    }

    async fn worker(channel: Channel, shared: Arc<Shared>, seed: u64) -> Tally {
        let mut client = CallBotServiceClient::new(channel);
        let mut rng = Rng(seed | 1);
        let mut t = Tally { hist: new_hist(), ..Default::default() };
        while !shared.stop.load(Ordering::Relaxed) {
            let op = Op::draw(rng.next() % 100);
            let pick = rng.next();
            if op != Op::CreateSessionKeyed {
                let started = Instant::now();
                let a = call(&mut client, &shared, op, None, pick).await;
                t.record(op, &a, false, started.elapsed().as_micros() as u64);
                shared.completed.fetch_add(1, Ordering::Relaxed);
                if op == Op::CreateSessionKeyless {
                    if a.code == Code::Ok && a.reason.is_empty() {
                        t.keyless_ok += 1;
                    } else if may_have_created(a.code, &a.reason) {
                        t.keyless_open += 1;
                    }
                }
                continue;
            }
            // A keyed CreateSession: retried with the same key while the answer says so.
            let n = shared.next_key.fetch_add(1, Ordering::Relaxed);
            let key = key_name(n);
            let mut open = false;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let started = Instant::now();
                let a = call(&mut client, &shared, op, Some(&key), pick).await;
                t.record(op, &a, open, started.elapsed().as_micros() as u64);
                shared.completed.fetch_add(1, Ordering::Relaxed);
                if a.code == Code::Ok {
                    if a.reason.is_empty() {
                        t.keys_created.push(n);
                    } else {
                        t.keys_failed += 1;
                    }
                    break;
                }
                if a.code == Code::AlreadyExists {
                    if open {
                        t.keys_created.push(n);
                    } else {
                        t.keys_duplicate.push(n);
                    }
                    break;
                }
                open |= may_have_created(a.code, &a.reason);
                if worth_retrying(a.code) && attempt < MAX_ATTEMPTS && !shared.stop.load(Ordering::Relaxed) {
                    t.keyed_retries += 1;
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    continue;
                }
                if open {
                    t.keys_open += 1;
                } else {
                    t.keys_failed += 1;
                }
                break;
            }
        }
        t
    }

    /// Posts faults at `rate` × completed requests; returns how many of each kind were queued.
    async fn injector(http: reqwest::Client, sim_url: String, shared: Arc<Shared>, rate: f64) -> (u64, Vec<u64>) {
        let mut posted = 0u64;
        let mut by_kind = vec![0u64; FAULTS.len()];
        let mut refused = 0u64;
        let mut next = 0usize;
        while !shared.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let due = (shared.completed.load(Ordering::Relaxed) as f64 * rate) as u64;
            while posted < due && !shared.stop.load(Ordering::Relaxed) {
                let (name, body) = FAULTS[next % FAULTS.len()];
                next += 1;
                posted += 1;
                let ok = http
                    .post(format!("{sim_url}/_sim/faults"))
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    by_kind[(next - 1) % FAULTS.len()] += 1;
                } else {
                    refused += 1;
                    if refused <= 3 {
                        eprintln!("soak: the simulator refused the fault {name:?}");
                    }
                }
            }
        }
        (refused, by_kind)
    }

    /// `GET` a simulator JSON document.
    async fn sim_get(http: &reqwest::Client, url: &str) -> Result<bytes::Bytes, BoxError> {
        let r = http.get(url).send().await?;
        if !r.status().is_success() {
            return Err(format!("GET {url}: {}", r.status()).into());
        }
        Ok(r.bytes().await?)
    }

    #[derive(serde::Deserialize)]
    struct SimSession {
        ext_session_id: Option<String>,
    }

    /// The run; `Ok(true)` on PASS. Both children are stopped before it returns.
    pub(super) async fn run(args: &Args, bin: &Path) -> Result<bool, BoxError> {
        let load_before = load1();
        let (mut sim, sim_addr) = super::start_simulator(bin, "error").await?;
        let sim_url = format!("http://{sim_addr}");
        let http = reqwest::Client::builder().build()?;
        let scripts = {
            let token = super::direct_token(&http, &sim_url).await?;
            let body = super::direct_get(&http, &sim_url, &token).await?;
            callbot_facade::upstream::parse_script_list(&body).map_err(|e| format!("script list: {e}"))?
        };
        if scripts.is_empty() {
            return Err("the simulator lists no script".into());
        }
        let script_ids: Vec<String> = scripts.iter().map(|s| s.id.clone()).collect();
        let create = create_request(&script_ids[0], CONTACTS);

        let extra = ["--upstream-attempt-timeout", "300ms", "--script-cache-ttl", "0s"];
        let (mut facade, grpc_addr, _) = super::start_facade(bin, args, &sim_url, &extra).await?;
        let facade_pid = facade.id().ok_or("facade exited")?;
        let idle_rss = proc_status(facade_pid, "VmRSS:");

        let concurrency = args.soak_concurrency.max(1);
        let shared = Arc::new(Shared {
            create,
            script_ids,
            next_key: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let mut channels = Vec::new();
        for _ in 0..args.connections.max(1) {
            channels.push(Channel::from_shared(format!("http://{grpc_addr}"))?.connect().await?);
        }
        eprintln!(
            "soak: {} s, {concurrency} in flight, fault rate {:.2} %, facade pid {facade_pid}, idle RSS {:.1} MiB, load {load_before}",
            args.duration.as_secs(),
            args.soak_fault_rate * 100.0,
            idle_rss as f64 / 1024.0
        );

        // RSS samples (seconds since start, KiB) and progress lines.
        let started = Instant::now();
        let samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
        let sampler = {
            let samples = samples.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut last_progress = 0u64;
                while !shared.stop.load(Ordering::Relaxed) {
                    let t = started.elapsed().as_secs_f64();
                    let rss = proc_status(facade_pid, "VmRSS:");
                    if let Ok(mut s) = samples.lock() {
                        s.push((t, rss));
                    }
                    if t as u64 / 60 > last_progress {
                        last_progress = t as u64 / 60;
                        eprintln!(
                            "soak: {:>4.0} s  {} requests  RSS {:.1} MiB  load {}",
                            t,
                            shared.completed.load(Ordering::Relaxed),
                            rss as f64 / 1024.0,
                            load1()
                        );
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            })
        };
        let injector = tokio::spawn(injector(http.clone(), sim_url.clone(), shared.clone(), args.soak_fault_rate));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        let mut workers = tokio::task::JoinSet::new();
        for i in 0..concurrency {
            let ch = channels[i % channels.len()].clone();
            workers.spawn(worker(
                ch,
                shared.clone(),
                seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            ));
        }
        tokio::time::sleep(args.duration).await;
        shared.stop.store(true, Ordering::Relaxed);
        let measured = started.elapsed();
        let mut tally = Tally { hist: new_hist(), ..Default::default() };
        let mut worker_panics = 0;
        while let Some(done) = workers.join_next().await {
            match done {
                Ok(t) => tally.merge(t),
                Err(_) => worker_panics += 1,
            }
        }
        let elapsed = started.elapsed();
        let (faults_refused, faults_by_kind) = injector.await.unwrap_or((0, Vec::new()));
        let _ = sampler.await;
        let end_rss = proc_status(facade_pid, "VmRSS:");
        let facade_alive = matches!(facade.try_wait(), Ok(None));
        let load_after = load1();

        // Drop what is still queued, then read the simulator's view.
        let _ = http.delete(format!("{sim_url}/_sim/faults")).send().await;
        let stats: serde_json::Value =
            serde_json::from_slice(&sim_get(&http, &format!("{sim_url}/_sim/stats")).await?)?;
        let sessions: Vec<SimSession> =
            serde_json::from_slice(&sim_get(&http, &format!("{sim_url}/_sim/sessions")).await?)?;

        // SIGTERM: the facade drains and exits 0.
        let _ = std::process::Command::new("kill").arg("-TERM").arg(facade_pid.to_string()).status();
        let facade_exit = match tokio::time::timeout(Duration::from_secs(30), facade.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = facade.kill().await;
                None
            }
        };
        let _ = sim.kill().await;

        // ---- figures ---------------------------------------------------------------------------
        let requests: u64 = tally.answers.values().sum();
        let rps = requests as f64 / elapsed.as_secs_f64();
        println!("\n## Soak\n");
        println!(
            "{} s ({:.1} s with the drain), {concurrency} in flight over {} connection(s), load 1m {load_before}→{load_after}",
            measured.as_secs(),
            elapsed.as_secs_f64(),
            channels.len()
        );
        println!("requests {requests} ({rps:.0} req/s)");
        if let Some(h) = &tally.hist {
            println!(
                "OK latency µs: p50 {} p90 {} p99 {} max {}",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.max()
            );
        }
        println!("\n| rpc | code | reason | answers |\n|---|---|---|---|");
        for ((rpc, code, reason), n) in &tally.answers {
            println!("| {rpc} | {code} | {} | {n} |", if reason.is_empty() { "–" } else { reason });
        }
        let mut by_reason: BTreeMap<(String, String), u64> = BTreeMap::new();
        for ((_, code, reason), n) in &tally.answers {
            if code != "OK" {
                *by_reason.entry((code.clone(), reason.clone())).or_insert(0) += n;
            }
        }
        println!(
            "\nerrors by (code, reason): {}",
            if by_reason.is_empty() {
                "none".to_owned()
            } else {
                by_reason.iter().map(|((c, r), n)| format!("{c}/{r} {n}")).collect::<Vec<_>>().join(", ")
            }
        );
        let faults_total: u64 = faults_by_kind.iter().sum();
        println!(
            "faults injected: {faults_total} ({:.2} % of requests){}",
            faults_total as f64 * 100.0 / requests.max(1) as f64,
            if faults_refused > 0 { format!(", {faults_refused} refused by the simulator") } else { String::new() }
        );
        println!(
            "  {}",
            FAULTS
                .iter()
                .zip(&faults_by_kind)
                .map(|((name, _), n)| format!("{name}: {n}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        println!("unexpected answers: {}", tally.unexpected);
        println!(
            "caller-side timeouts (CANCELLED \"Timeout expired\" at >= the {} s deadline, before the facade's answer arrived): {}",
            DEADLINE.as_secs(),
            tally.caller_timeouts
        );
        for s in &tally.unexpected_samples {
            println!("  unexpected: {s}");
        }

        // ---- sessions ----------------------------------------------------------------------------
        let num = |k: &str| stats[k].as_u64().unwrap_or(0);
        let sessions_total = num("sessions_total");
        let known = tally.keys_created.len() as u64 + tally.keyless_ok;
        let open = tally.keys_open + tally.keyless_open;
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for s in &sessions {
            if let Some(ext) = s.ext_session_id.as_deref() {
                *seen.entry(ext).or_insert(0) += 1;
            }
        }
        let twice: Vec<&str> = seen.iter().filter(|(_, n)| **n > 1).map(|(k, _)| *k).collect();
        let created: HashSet<u64> = tally.keys_created.iter().copied().collect();
        let issued = shared.next_key.load(Ordering::Relaxed);
        let unknown_keys = seen
            .keys()
            .filter(|k| k.strip_prefix("soak-").is_some_and(|n| n.parse::<u64>().map_or(true, |n| n >= issued)))
            .count();
        // With nothing dropped from the simulator's record, every key known created is there once.
        let complete = sessions.len() as u64 == sessions_total;
        let missing =
            if complete { created.iter().filter(|n| seen.get(key_name(**n).as_str()) != Some(&1)).count() } else { 0 };
        let count_ok = known <= sessions_total && sessions_total <= known + open;
        println!(
            "sessions: simulator {sessions_total} (recorded {}{}); known created {known} (keyed {}, keyless {}), outcome open {open} (keyed {}, keyless {}); keyed failed for sure {}; keyed retries {}",
            sessions.len(),
            if complete { ", all" } else { ", the last ones" },
            tally.keys_created.len(),
            tally.keyless_ok,
            tally.keys_open,
            tally.keyless_open,
            tally.keys_failed,
            tally.keyed_retries,
        );
        println!(
            "duplicates: {} ALREADY_EXISTS without an open outcome, {} ext_session_id recorded twice, {} unknown keys, {} keys created but not recorded once{}",
            tally.keys_duplicate.len(),
            twice.len(),
            unknown_keys,
            missing,
            if count_ok {
                String::new()
            } else {
                format!("; sessions_total {sessions_total} outside {known}..={}", known + open)
            }
        );
        let refreshes = num("auth_calls").saturating_sub(1);
        println!(
            "upstream: {} execute, {} script list, {} token fetches ({refreshes} after the first), {} unauthorized",
            num("execute_calls"),
            num("script_list_calls"),
            num("auth_calls"),
            num("unauthorized")
        );

        // ---- RSS ---------------------------------------------------------------------------------
        let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
        let warm_at = (args.duration.as_secs_f64() * 0.1).max(30.0_f64.min(args.duration.as_secs_f64() / 2.0));
        let warm = samples.iter().find(|(t, _)| *t >= warm_at).copied().unwrap_or((0.0, idle_rss));
        let max_rss = samples.iter().map(|(_, r)| *r).max().unwrap_or(end_rss).max(end_rss);
        let growth = (end_rss as f64 - warm.1 as f64) * 100.0 / (warm.1.max(1) as f64);
        println!(
            "facade RSS: idle {:.1} MiB, after warm-up ({:.0} s) {:.1} MiB, end {:.1} MiB, growth {growth:+.2} %, max {:.1} MiB ({} samples)",
            idle_rss as f64 / 1024.0,
            warm.0,
            warm.1 as f64 / 1024.0,
            end_rss as f64 / 1024.0,
            max_rss as f64 / 1024.0,
            samples.len()
        );
        println!(
            "facade: {} at the end; exit status after SIGTERM {}",
            if facade_alive { "running" } else { "NOT RUNNING" },
            facade_exit.map_or_else(|| "none (killed)".to_owned(), |c| c.to_string())
        );

        // ---- verdict -----------------------------------------------------------------------------
        let mut failures = Vec::new();
        if tally.unexpected > 0 {
            failures.push(format!("{} unexpected answers", tally.unexpected));
        }
        // A stall now and then on a starved machine is tolerated; more than 1 in 10,000 is not.
        if tally.caller_timeouts * 10_000 > requests {
            failures.push(format!("{} caller-side timeouts", tally.caller_timeouts));
        }
        let dups = tally.keys_duplicate.len() + twice.len() + unknown_keys + missing + usize::from(!count_ok);
        if dups > 0 {
            failures.push(format!("{dups} session accounting failures"));
        }
        if growth >= MAX_RSS_GROWTH_PCT {
            failures.push(format!("RSS growth {growth:.2} % ≥ {MAX_RSS_GROWTH_PCT} %"));
        }
        if !facade_alive || facade_exit != Some(0) {
            failures.push("the facade did not stay up and exit 0".into());
        }
        if worker_panics > 0 {
            failures.push(format!("{worker_panics} workers panicked"));
        }
        if requests == 0 {
            failures.push("no requests".into());
        }
        let summary = format!(
            "{requests} requests ({rps:.0}/s), {} unexpected, {faults_total} faults, {sessions_total} sessions, {} duplicates, RSS {:.1}→{:.1} MiB ({growth:+.2} %), {refreshes} token refreshes",
            tally.unexpected,
            tally.keys_duplicate.len() + twice.len(),
            warm.1 as f64 / 1024.0,
            end_rss as f64 / 1024.0,
        );
        if failures.is_empty() {
            println!("soak: PASS {summary}");
            Ok(true)
        } else {
            println!("soak: FAIL {} — {summary}", failures.join(", "));
            Ok(false)
        }
    }
}
