//! `--soak`: a long run of mixed RPCs through the facade with injected upstream faults, ending
//! in one `soak: PASS …` or `soak: FAIL …` line (CI greps it).
//!
//! * **Mix** (per request, drawn at random): 15 % ListScripts, 20 % GetScript of a listed script,
//!   5 % GetScript of a script that does not exist (`NOT_FOUND`/`SCRIPT_NOT_FOUND`), 50 %
//!   CreateSession with a caller-given `external_session_id` (`soak-<n>`), 10 % CreateSession
//!   without one (the facade generates it). Three contacts per session; caller deadline 2 s.
//!   The facade runs with `--upstream-attempt-timeout 300ms --script-cache-ttl 0s` (before any
//!   `--facade-arg`), so every read reaches the upstream (and its faults) and slow headers cost a
//!   read one attempt, as in docs/fault-matrix.md.
//! * **Faults**: a background task posts one-shot faults to `/_sim/faults` (no `path`: whichever
//!   upstream request comes next takes it, token fetches included), `--soak-fault-rate` (1 %) of the
//!   requests completed so far, drawn in turn from [`faults::FAULTS`].
//! * **Classification**: every answer is OK or a (code, reason) that one of those faults can give
//!   that RPC (docs/fault-matrix.md, README "Errors"; [`answers::expected`]), counted per (rpc, code, reason);
//!   anything else is unexpected and printed.
//! * **Sessions**: a keyed CreateSession whose answer leaves the outcome open (or that is worth
//!   retrying) is retried with the same key, as a caller would: `ALREADY_EXISTS` after an answer that
//!   may have created it is a success; on a first attempt it is a duplicate. At the end the
//!   simulator's `sessions_total` must lie between the sessions known created and that plus the
//!   open outcomes, and no `ext_session_id` may appear twice in `GET /_sim/sessions` (the last
//!   100,000 sessions; when nothing was dropped, every key known created must be there exactly once).
//! * **RSS**: the facade's VmRSS every 2 s; growth from the warm-up sample (10 % of the run or 30 s,
//!   whichever is later) to the end must stay under 5 %.
//!
//! `answers` classifies what the facade says, `worker` sends the mix and retries keyed
//! CreateSessions, `faults` queues the faults; this module runs them and judges the result.

mod answers;
mod faults;
mod worker;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::transport::Channel;

use self::{
    answers::{Tally, new_hist},
    faults::{FAULTS, injector},
    worker::{Shared, key_name, worker},
};
use crate::{
    Args,
    procs::{load1, proc_status, start_facade, start_simulator},
    scenario::{create_request, direct_get, direct_token},
};

type BoxError = Box<dyn std::error::Error>;

/// Caller deadline of every RPC.
const DEADLINE: Duration = Duration::from_secs(2);
/// Contacts per CreateSession (keeps `GET /_sim/sessions` of 100,000 sessions small).
const CONTACTS: usize = 3;
/// Largest RSS growth that passes, in percent.
const MAX_RSS_GROWTH_PCT: f64 = 5.0;

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
pub(crate) async fn run(args: &Args, bin: &Path) -> Result<bool, BoxError> {
    let load_before = load1();
    let (mut sim, sim_addr) = start_simulator(bin, "error").await?;
    let sim_url = format!("http://{sim_addr}");
    let http = reqwest::Client::builder().build()?;
    let scripts = {
        let token = direct_token(&http, &sim_url).await?;
        let body = direct_get(&http, &sim_url, &token).await?;
        callbot_facade::testing::parse_script_list(&body).map_err(|e| format!("script list: {e}"))?
    };
    if scripts.is_empty() {
        return Err("the simulator lists no script".into());
    }
    let script_ids: Vec<String> = scripts.iter().map(|s| s.id.clone()).collect();
    let create = create_request(&script_ids[0], CONTACTS);

    let extra = ["--upstream-attempt-timeout", "300ms", "--script-cache-ttl", "0s"];
    let (mut facade, grpc_addr, _) = start_facade(bin, args, &sim_url, &extra).await?;
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
    let stats: serde_json::Value = serde_json::from_slice(&sim_get(&http, &format!("{sim_url}/_sim/stats")).await?)?;
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
        FAULTS.iter().zip(&faults_by_kind).map(|((name, _), n)| format!("{name}: {n}")).collect::<Vec<_>>().join("; ")
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
