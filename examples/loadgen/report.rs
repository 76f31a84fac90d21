//! What one measured run of one path produced, and how it is printed: the rows of the Markdown
//! table that BENCHMARKS.md holds.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;

use crate::{Args, Rpc};

/// What one measured run of one path produced.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) label: String,
    pub(crate) requests: u64,
    pub(crate) elapsed: Duration,
    pub(crate) hist: Histogram<u64>,
    pub(crate) errors: BTreeMap<String, u64>,
    /// CPU seconds of the facade (facade path only), simulator and load generator, over the run.
    pub(crate) facade_cpu: Option<f64>,
    pub(crate) sim_cpu: f64,
    pub(crate) self_cpu: f64,
    pub(crate) facade_hwm_kib: Option<u64>,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
}

impl Report {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    pub(crate) fn per_req_us(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.requests.max(1) as f64
    }
    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            "0".into()
        } else {
            self.errors.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" ")
        }
    }
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

pub(crate) fn mean_us(h: &Histogram<u64>) -> f64 {
    h.mean()
}

pub(crate) fn print_header() {
    println!(
        "| path | rpc | in flight | requests | req/s | p50 µs | p90 µs | p99 µs | max µs | mean µs | errors | facade CPU µs/req | facade peak RSS MiB | sim CPU µs/req | loadgen CPU µs/req | load 1m before→after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

pub(crate) fn print_row(r: &Report, args: &Args) {
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
