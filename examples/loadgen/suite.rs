//! `--suite`: every scenario of BENCHMARKS.md in turn (each with a fresh simulator and facade),
//! the table of all their rows, then the budget table with a verdict per budget.

use std::{path::Path, time::Duration};

use crate::{
    Args, Rpc, Which,
    report::{Report, mean_us, print_header, print_row},
    scenario::scenario,
};

/// Every scenario of BENCHMARKS.md, then the budget table.
pub(crate) async fn suite(base: &Args, bin: &Path, clk_tck: f64) -> Result<(), Box<dyn std::error::Error>> {
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
