//! `/metrics` as a Prometheus user meets it on a facade that has served nothing yet: every family
//! in docs/operations.md's table and no other, every counter present at 0 for its known labels,
//! clean help texts, the process metrics; upstream refusals countable by envelope outcome.

use std::collections::BTreeMap;

use super::*;

/// `name -> type` of every family in `# TYPE` lines, counters by their sample name (`_total`).
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            let name = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
            (name, kind.to_owned())
        })
        .collect()
}

/// `name -> type` of the rows of docs/operations.md's metrics table.
fn documented() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let table = doc.split("## Metrics").nth(1).unwrap().split("\n## ").next().unwrap();
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
        })
        .collect()
}

async fn idle_metrics() -> String {
    let app = spawn_app().await;
    reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn metrics_of_an_idle_facade_are_the_documented_families() {
    let text = idle_metrics().await;
    let (mut got, doc) = (families(&text), documented());
    // A family without any series is not rendered: these two get theirs with the first call
    // (the caller's tenant, the upstream's HTTP status); the docs say so.
    for name in FIRST_CALL {
        assert!(!got.contains_key(name), "{name} is served idle: drop it from FIRST_CALL");
        got.insert(name.to_owned(), "counter".to_owned());
    }
    let missing: Vec<_> = doc.keys().filter(|k| !got.contains_key(*k)).collect();
    let undocumented: Vec<_> = got.keys().filter(|k| !doc.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && undocumented.is_empty(),
        "documented, not served: {missing:?}; served, not documented: {undocumented:?}"
    );
    assert_eq!(got, doc, "types differ");
}

/// The counters whose label values are only known with the first call.
const FIRST_CALL: [&str; 2] = ["callbot_tenant_handled_total", "callbot_upstream_requests_total"];

#[tokio::test]
async fn metrics_every_counter_is_present_at_zero_from_the_start() {
    let text = idle_metrics().await;
    for (name, kind) in families(&text) {
        if kind != "counter" || FIRST_CALL.contains(&name.as_str()) {
            continue;
        }
        let samples =
            text.lines().filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))).count();
        assert!(samples > 0, "{name} has no series:\n{text}");
    }
    for series in [
        r#"callbot_upstream_retries_total{endpoint="/api/call_bot/execute_by_phone"} 0"#,
        r#"callbot_upstream_retries_refused_total{endpoint="/api/v3/call-transaction/search"} 0"#,
        r#"callbot_config_reloads_total{file="tenants_file"} 0"#,
        r#"callbot_config_reload_failures_total{file="api_key_file"} 0"#,
        r#"callbot_call_history_lookups_total{result="over_budget"} 0"#,
        r#"callbot_webhook_registrations_total{result="failed"} 0"#,
        r#"callbot_webhook_deliveries_total{kind="live",answer="unknown_token"} 0"#,
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="callbot.v1.CallBotService",grpc_method="CreateSession",grpc_code="Unavailable"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == series), "{series} missing:\n{text}");
    }
}

#[tokio::test]
async fn metrics_help_texts_are_clean_and_process_metrics_are_there() {
    let text = idle_metrics().await;
    for help in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(!help.ends_with(".."), "{help}");
    }
    if cfg!(target_os = "linux") {
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let value: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
            assert!(value >= 0.0, "{name} {value}");
        }
    }
}

#[tokio::test]
async fn metrics_count_an_upstream_refusal_by_its_envelope_not_only_its_http_status() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    // An unknown script: the simulator answers HTTP 200 with a -9999 envelope.
    let request = pb::CreateSessionRequest {
        script_id: "000000000000000000000000".into(),
        contacts: vec![pb::Contact { phone: "0912345678".into(), ..Default::default() }],
        ..Default::default()
    };
    let status = client.create_session(request).await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    let text = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap();
    let endpoint = "/api/call_bot/execute_by_phone";
    assert!(
        text.contains(&format!(r#"callbot_upstream_requests_total{{endpoint="{endpoint}",status="200"}} 1"#)),
        "{text}"
    );
    assert!(
        text.contains(&format!(r#"callbot_upstream_answers_total{{endpoint="{endpoint}",outcome="rejected"}} 1"#)),
        "{text}"
    );
    assert!(
        text.contains(&format!(r#"callbot_upstream_answers_total{{endpoint="{endpoint}",outcome="success"}} 0"#)),
        "{text}"
    );
}
