//! The upstream faults the soak injects, and the task that queues them at the simulator in
//! proportion to the requests completed so far.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use super::worker::Shared;

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
    ("expired token, then token endpoint 503", r#"[{"expire_tokens": true}, {"path": "/api/auth", "status": 503}]"#),
    ("wrong content type", r#"{"content_type": "text/html"}"#),
];

/// Posts faults at `rate` × completed requests; returns how many of each kind were queued.
pub(super) async fn injector(
    http: reqwest::Client,
    sim_url: String,
    shared: Arc<Shared>,
    rate: f64,
) -> (u64, Vec<u64>) {
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
