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
//! `--soak` (see `soak.rs`) drives a mix of RPCs through the facade for `--duration`
//! with `--soak-concurrency` in flight while ~1 % injected upstream faults keep coming, classifies
//! every answer, checks that no session was created twice and that the facade's RSS stays flat,
//! and ends with one line `soak: PASS …` or `soak: FAIL …` (exit status 1).
//!
//! The modules: `procs` (the simulator and facade child processes, `/proc` CPU and RSS),
//! `scenario` (one measured run of the facade path and the direct REST path), `report` (its
//! figures and table rows), `suite` (the BENCHMARKS.md scenarios and the budget table) and
//! `soak`.

mod procs;
mod report;
mod scenario;
mod soak;
mod suite;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Parser, ValueEnum};

use crate::{
    procs::clock_ticks,
    report::{print_header, print_row},
    scenario::scenario,
    suite::suite,
};

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
