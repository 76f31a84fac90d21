//! The binary as operators run it: first log line, bad flags, JSON logs without secrets, SIGTERM.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use tonic::Request;

use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");

#[test]
fn a_bad_flag_value_exits_non_zero_with_the_reason_on_the_first_line() {
    // Refused by clap (exit 2): the reason first, then where to read more. Refused by the
    // settings check (exit 1): one line.
    for (args, code, lines) in [
        (&["--upstream-timeout", "soon"][..], 2, 3),
        (&["--listen", "not-an-address"], 2, 3),
        (&["--max-concurrency", "0"], 2, 3),
        (&["--log-format", "xml"], 2, 4),
        (&["--upstream-url", "https://api.example.com"], 1, 1),
    ] {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("CALLBOT_API_KEY")
            .env("CALLBOT_EVENTS_STORE", "memory")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), lines, "{args:?}: {stderr}");
        assert!(stderr.starts_with("callbot-facade: "), "{args:?}: {stderr}");
        assert!(!stderr.starts_with("callbot-facade: error:"), "{args:?}: {stderr}");
        if code == 2 {
            assert!(stderr.contains(&format!("'{}", args[0])), "{args:?}: the flag is named: {stderr}");
            assert!(stderr.trim_end().ends_with("For more information, try '--help'."), "{args:?}: {stderr}");
        }
    }
}

/// Reads the port the facade says it serves on from its log.
fn grpc_port(line: &str) -> Option<u16> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["message"] != "serving" {
        return None;
    }
    v["grpc"].as_str()?.rsplit(':').next()?.parse().ok()
}

#[tokio::test]
async fn serve_starts_the_simulator_logs_json_without_secrets_and_exits_0_on_sigterm() {
    let mut child = Reaped::new(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"])
            .env("CALLBOT_API_KEY", "SUPERSECRETKEY42")
            .env("CALLBOT_EVENTS_STORE", "memory")
            .env("RUST_LOG", "trace")
            .env_remove("CALLBOT_UPSTREAM_URL")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut rx = crate::lines_of(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    let port = loop {
        let line =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().expect("facade exited early");
        lines.push(line.clone());
        if let Some(p) = grpc_port(&line) {
            break p;
        }
    };
    let first: Value = serde_json::from_str(&lines[0]).expect("JSON log line");
    assert!(first["message"].as_str().unwrap().contains("built-in callBot simulator"), "{first}");
    assert_eq!(first["level"], "INFO");

    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let mut client = CallBotServiceClient::new(channel);
    list(&mut client, "").await.unwrap();
    let mut req = Request::new(pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: vec![
            pb::Contact { phone: "0912345678".into(), ..Default::default() },
            pb::Contact { phone: "0912000999".into(), ..Default::default() },
        ],
        ..Default::default()
    });
    req.metadata_mut().insert("x-request-id", "bin-test-1".parse().unwrap());
    let session = client.create_session(req).await.unwrap().into_inner().session.unwrap();
    assert_eq!(session.rejected_contacts.len(), 1);

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    let all = lines.join("\n");
    for line in &lines {
        serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
    assert!(all.contains("bin-test-1"), "request id not logged");
    // One access line per RPC: CreateSession's carries the session it created.
    let access: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["message"] == "rpc" && v["request_id"] == "bin-test-1")
        .collect();
    assert_eq!(access.len(), 1, "{all}");
    assert_eq!(access[0]["session_id"], session.id.as_str(), "{all}");
    assert_eq!((access[0]["contacts"].as_u64(), access[0]["rejected"].as_u64()), (Some(2), Some(1)), "{all}");
    assert!(!all.contains("session created"), "a second line per call at info: {all}");
    for secret in ["SUPERSECRETKEY42", "0912345678", "0912000999", "eyJ"] {
        assert!(!all.contains(secret), "{secret} leaked into the logs");
    }
}
