//! Reconciliation figures (BENCHMARKS.md, "Reconciliation"): call-history searches per reconciled
//! session, and the time from `--reconcile-after` to a complete report, when every webhook is lost.
//!
//! ```text
//! cargo build --bin callbot-facade --example reconcile
//! target/debug/examples/reconcile [--sessions 20] [--contacts 20] [--reconcile-after 2s]
//!     [--history-budget 5] [--facade-bin target/debug/callbot-facade]
//! ```
//!
//! It starts `callbot-facade simulate` (time scale 3000: a session's calls are over in well under
//! a second) with the webhook fault `lose` at rate 1 (no delivery is ever made; the call history
//! has every call), then the facade (receiver on, registered with the simulator), creates
//! `--sessions` sessions of `--contacts` distinct numbers (one redial each), and polls every
//! session's report every 20 ms until each is finished. For each session it takes the time from
//! its creation + `--reconcile-after` to its first finished report; the searches are the
//! simulator's count of `POST /api/v3/call-transaction/search`.

use std::{
    net::{SocketAddr, TcpListener},
    process::Stdio,
    time::{Duration, Instant},
};

use callbot_facade::pb::{self, call_bot_service_client::CallBotServiceClient};
use tokio::process::Command;

const KEY: &str = "reconcile-key";
const SECRET: &str = "reconcile-example-secret-0123456789abcdef";

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
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

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_owned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let sessions: usize = arg("--sessions", "20").parse().unwrap();
    let contacts: usize = arg("--contacts", "20").parse().unwrap();
    let after_text = arg("--reconcile-after", "2s");
    let after = humantime::parse_duration(&after_text).unwrap();
    let budget = arg("--history-budget", "5");
    let bin = arg("--facade-bin", "target/debug/callbot-facade");
    let (sim, grpc, admin, hook) = (free_addr(), free_addr(), free_addr(), free_addr());
    let _sim = Command::new(&bin)
        .args(["simulate", "--listen", &sim.to_string(), "--time-scale", "3000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("simulator");
    wait_tcp(sim).await;
    let http = reqwest::Client::new();
    let fault = serde_json::json!({"kind": "lose", "rate": 1.0});
    let r = http.post(format!("http://{sim}/_sim/webhook_faults")).json(&fault).send().await.unwrap();
    assert!(r.status().is_success());
    let _facade = Command::new(&bin)
        .args(["serve", "--listen", &grpc.to_string(), "--admin-listen", &admin.to_string()])
        .args(["--upstream-url", &format!("http://{sim}"), "--api-key", KEY, "--caller-auth", "mesh"])
        .args(["--webhook-listen", &hook.to_string(), "--webhook-secret", SECRET])
        .args(["--webhook-public-url", &format!("http://{hook}"), "--reconcile-after", &after_text])
        .args(["--history-budget", &budget])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("facade");
    wait_tcp(grpc).await;
    let mut client = CallBotServiceClient::connect(format!("http://{grpc}")).await.unwrap();
    let mut created = Vec::new();
    for s in 0..sessions {
        let request = pb::CreateSessionRequest {
            script_id: "64915bc76a690c0edad14723".into(),
            contacts: (0..contacts)
                .map(|c| pb::Contact { phone: format!("09{:08}", s * contacts + c), ..Default::default() })
                .collect(),
            retry_count: Some(1),
            retry_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
            ..Default::default()
        };
        let session = client.create_session(request).await.unwrap().into_inner().session.unwrap();
        created.push((session.id, Instant::now()));
    }
    let mut done: Vec<Option<(f64, i64)>> = vec![None; sessions];
    let deadline = Instant::now() + after + Duration::from_secs(60);
    while done.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "not every report completed within a minute after --reconcile-after");
        for (i, (id, at)) in created.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let request = pb::GetSessionReportRequest { session_id: id.clone() };
            let report = client.get_session_report(request).await.unwrap().into_inner();
            if report.finished {
                done[i] = Some(((at.elapsed().as_secs_f64() - after.as_secs_f64()) * 1000.0, report.reconciled));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats: serde_json::Value =
        http.get(format!("http://{sim}/_sim/stats")).send().await.unwrap().json().await.unwrap();
    let searches = stats["history_search_calls"].as_u64().unwrap();
    let mut ms: Vec<f64> = done.iter().map(|d| d.unwrap().0).collect();
    ms.sort_by(f64::total_cmp);
    let reconciled: i64 = done.iter().map(|d| d.unwrap().1).sum();
    println!(
        "{sessions} sessions x {contacts} contacts, every webhook lost ({} delivered), --reconcile-after {after_text}, \
         --history-budget {budget}: \
         {searches} searches ({:.2} per session), {reconciled} of {} contacts reconciled; \
         complete report after --reconcile-after: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        stats["webhook_delivered"],
        searches as f64 / sessions as f64,
        sessions * contacts,
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        ms[ms.len() - 1]
    );
}
