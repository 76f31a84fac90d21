//! The `watch` and `report` commands and `campaign --watch`: the real binary run against a
//! facade whose webhook receiver is registered with its own fast simulator (`events.rs`).

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{
    events::{FAST, create, free_addr, read_events, wait_session_done, wait_until},
    *,
};

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");
/// "Thông báo điểm thi" and a header that fills its four dynamic variables.
const SCRIPT: &str = "64915bc76a690c0edad14723";
const HEADER: &str = "phone,tên thí sinh,uB131frQEU,Kp7wZq2LmX,r9TdVh4sNa";
/// 0 answered, 5 no answer twice, 6 answered on its redial, 7 busy twice, 8 rejected, 9 failed.
const PHONES: [&str; 6] = ["0912345670", "0912345675", "0912345676", "0912345677", "0912345678", "0912345679"];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn command(app: &TestApp, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args).args(["--server", &format!("http://{}", app.addr)]).env_remove("CALLBOT_SERVER").env("TZ", "UTC");
    c
}

async fn cli(app: &TestApp, args: &[&str]) -> Run {
    let out = tokio::time::timeout(Duration::from_secs(30), command(app, args).output()).await.unwrap().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A facade with its receiver registered with a simulator at `time_scale`.
async fn spawn_at(time_scale: f64) -> TestApp {
    if time_scale == FAST {
        return super::events::spawn_with_receiver(|_| {}).await.0;
    }
    let hook = free_addr();
    let sim = TestSim::start(SimConfig { time_scale, ..SimConfig::default() }).await;
    let mut settings = test_settings(&sim.url);
    settings.events.webhook_listen = Some(hook);
    settings.events.webhook_secret = Some(ApiKey::new("test-webhook-secret"));
    settings.events.webhook_public_url = Some(format!("http://{hook}"));
    start(settings, sim).await
}

/// Creates a session of `PHONES` with one redial and waits until the facade's report of it is
/// finished; the session id and the simulator's calls.
async fn finished_session(app: &TestApp) -> (String, Vec<Value>) {
    let session = create(app, &PHONES, 1).await;
    let calls = wait_session_done(&app.sim, &session).await["calls"].as_array().unwrap().clone();
    wait_until(|| async {
        let request = pb::GetSessionReportRequest { session_id: session.clone() };
        app.client.clone().get_session_report(request).await.is_ok_and(|r| r.into_inner().finished)
    })
    .await;
    (session, calls)
}

/// The events the facade stores for one call by its outcome: ringing, (answered), the hangup,
/// the record; a failed call never rings.
fn facts_of(outcome: &str) -> usize {
    match outcome {
        "answered" => 4,
        "failed" => 2,
        _ => 3,
    }
}

/// Reads `n` lines of a child's stdout (10 s at most), then kills it.
async fn lines_of(mut command: tokio::process::Command, n: usize) -> Vec<String> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
        match next.expect("a line within 10 s").unwrap() {
            Some(line) => out.push(line),
            None => panic!("watch ended after {} of {n} lines: {out:?}", out.len()),
        }
    }
    child.kill().await.unwrap();
    out
}

#[tokio::test]
async fn cli_report_of_a_finished_session_prints_the_simulators_outcomes() {
    let app = spawn_at(FAST).await;
    let (session, _) = finished_session(&app).await;

    let run = cli(&app, &["report", "--session", &session]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "session {session}: 6 contacts, 2 answered, 1 no answer, 1 busy, 1 rejected, 1 failed, 0 in progress, 0 unknown; reconciled: 0; finished: yes"
        )
    );
    let header: Vec<&str> = lines[1].split("  ").filter(|s| !s.is_empty()).map(str::trim).collect();
    assert_eq!(header, ["PHONE", "STATE", "OUTCOME", "ATTEMPTS", "TALK", "LAST EVENT", "FINAL", "SOURCE"]);
    assert_eq!(lines.len(), 2 + PHONES.len(), "{}", run.stdout);
    // Masked phone, state, outcome, attempts, talk; then the date and time of the last event; final.
    let want = [
        ["*******670", "ended", "answered", "1", "10s"],
        ["*******675", "ended", "no_answer", "2", "-"],
        ["*******676", "ended", "answered", "2", "20s"],
        ["*******677", "ended", "busy", "2", "-"],
        ["*******678", "ended", "rejected", "1", "-"],
        ["*******679", "ended", "failed", "1", "-"],
    ];
    let mut rows: Vec<Vec<&str>> = lines[2..].iter().map(|l| l.split_whitespace().collect()).collect();
    rows.sort();
    for (row, want) in rows.iter().zip(want) {
        assert_eq!(row[..5], want, "{}", run.stdout);
        assert_eq!(row.len(), 9, "{row:?}");
        assert_eq!(row[5].len(), "2024-01-01".len(), "{row:?}");
        assert_eq!(row[6].len(), "12:00:00".len(), "{row:?}");
        assert_eq!(row[7..], ["yes", "webhook"]);
    }
    assert!(!run.stdout.contains("0912345670"), "phones are masked in the table");

    // Local time from an IANA name with no zone database on the machine (TZDIR empty): the
    // copy compiled into the binary gives Vietnam's +07:00.
    let no_zoneinfo = tempfile::tempdir().unwrap();
    let out = command(&app, &["report", "--session", &session])
        .env("TZ", "Asia/Ho_Chi_Minh")
        .env("TZDIR", no_zoneinfo.path())
        .output()
        .await
        .unwrap();
    let local = String::from_utf8(out.stdout).unwrap();
    let (utc_rows, local_rows): (Vec<&str>, Vec<&str>) = (lines[2..].to_vec(), local.lines().skip(2).collect());
    for (utc, local) in utc_rows.iter().zip(&local_rows) {
        let when = |row: &str| {
            let cells: Vec<String> = row.split_whitespace().map(str::to_owned).collect();
            format!("{}T{}Z", cells[5], cells[6]).parse::<jiff::Timestamp>().unwrap()
        };
        assert_eq!(when(local).as_second() - when(utc).as_second(), 7 * 3600, "{utc} / {local}");
    }

    let run = cli(&app, &["report", "--session", &session, "--json"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["session_id"], session.as_str());
    let counts: Vec<i64> = ["contacts_total", "answered", "no_answer", "busy", "rejected", "failed", "in_progress"]
        .iter()
        .map(|k| v[k].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [6, 2, 1, 1, 1, 1, 0]);
    assert_eq!(v["finished"], true);
    let mut contacts = v["contacts"].as_array().unwrap().clone();
    contacts.sort_by_key(|c| c["phone"].as_str().unwrap().to_owned());
    let got: Vec<(&str, &str, i64)> = contacts
        .iter()
        .map(|c| (c["phone"].as_str().unwrap(), c["outcome"].as_str().unwrap(), c["attempts"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("0912345670", "answered", 1),
            ("0912345675", "no_answer", 2),
            ("0912345676", "answered", 2),
            ("0912345677", "busy", 2),
            ("0912345678", "rejected", 1),
            ("0912345679", "failed", 1),
        ]
    );
    assert_eq!(contacts[0]["talk_duration"], 10);
    assert_eq!(contacts[2]["talk_duration"], 20);
    assert!(contacts.iter().all(|c| c["state"] == "ended" && c["final"] == true && c["last_event_at"].is_string()));
}

#[tokio::test]
async fn cli_watch_from_start_prints_the_sessions_events_in_order_and_resumes_after_a_cursor() {
    let app = spawn_at(FAST).await;
    let (session, calls) = finished_session(&app).await;
    let expected: usize = calls.iter().map(|c| facts_of(c["outcome"].as_str().unwrap())).sum();
    // What the facade streams, read through gRPC: the order to find in the CLI's output.
    let request = pb::WatchCallEventsRequest { session_id: session.clone(), from_start: true, ..Default::default() };
    let mut stream = app.client.clone().watch_call_events(request).await.unwrap().into_inner();
    let events = read_events(&mut stream, expected).await;

    let lines = lines_of(command(&app, &["watch", "--session", &session, "--from-start", "--json"]), expected).await;
    let got: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>());
    assert!(
        got.iter().all(|e| e["session_id"] == session.as_str() && e["cursor"].as_str().is_some_and(|c| !c.is_empty()))
    );
    // Per call: ringing (not for a failed call), answered (answered calls), the live hangup
    // with no outcome, then the record with the simulator's outcome and durations.
    for call in &calls {
        let id = call["call_id"].as_str().unwrap();
        let outcome = call["outcome"].as_str().unwrap();
        let mine: Vec<&Value> = got.iter().filter(|e| e["call_id"] == id).collect();
        let mut want = Vec::new();
        if outcome != "failed" {
            want.push((format!("{id}/ringing"), "ringing", "unspecified"));
        }
        if outcome == "answered" {
            want.push((format!("{id}/answered"), "answered", "unspecified"));
        }
        want.push((format!("{id}/hangup"), "ended", "unspecified"));
        want.push((format!("{id}/cdr"), "ended", outcome));
        let seen: Vec<(String, &str, &str)> = mine
            .iter()
            .map(|e| {
                (e["id"].as_str().unwrap().to_owned(), e["state"].as_str().unwrap(), e["outcome"].as_str().unwrap())
            })
            .collect();
        assert_eq!(seen, want, "{id}");
        let record = mine.last().unwrap();
        assert_eq!(record["talk_duration"].as_u64(), call["talk_s"].as_u64(), "{id}");
        assert_eq!(record["attempt"].as_u64(), call["attempt"].as_u64(), "{id}");
        // JSON is for programs: the number as the provider reported it, unmasked.
        assert!(record["phone"].as_str().unwrap().ends_with(&call["phone"].as_str().unwrap()[1..]), "{record}");
    }

    // Text lines, resumed after the third event: the rest, the cursor last, the phone masked.
    let after = events[2].cursor.clone();
    let rest = lines_of(command(&app, &["watch", "--session", &session, "--after", &after]), expected - 3).await;
    for (line, event) in rest.iter().zip(&events[3..]) {
        assert!(line.ends_with(&format!("  session {session}  cursor {}", event.cursor)), "{line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0].len(), 8, "{line}");
        assert!(words[1].starts_with("*****") && !line.contains("912345"), "{line}");
        let state = event.state().as_str_name().trim_start_matches("CALL_STATE_").to_lowercase();
        assert_eq!(words[2], state, "{line}");
    }
}

#[tokio::test]
async fn cli_watch_with_a_bad_cursor_exits_1_naming_after_cursor() {
    let app = spawn_at(FAST).await;
    let run = cli(&app, &["watch", "--after", "garbage"]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("InvalidArgument (INVALID_REQUEST)"), "{}", run.stderr);
    assert!(run.stderr.contains("after_cursor:"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

fn campaign_csv(dir: &std::path::Path, phones: &[&str]) -> String {
    let mut text = format!("{HEADER}\n");
    for (i, p) in phones.iter().enumerate() {
        text.push_str(&format!("{p},Thí sinh {i},1,2,3\n"));
    }
    let path = dir.join("contacts.csv");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn cli_campaign_watch_follows_every_session_to_the_totals_and_skips_resumed_chunks() {
    let app = spawn_at(FAST).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = campaign_csv(dir.path(), &["0912345670", "0912345675", "0912345677", "0912345678", "0912345679"]);
    let args = ["campaign", "--script", SCRIPT, "--csv", &csv, "--campaign-id", "cw", "--chunk-size", "2", "--watch"];
    let run = cli(&app, &args).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for want in [
        "sessions started: 3 (3 new, 0 resumed)",
        "watch: following 3 session(s) until every contact is final\n",
        // No redials: 5 is a no answer, 7 busy once.
        "outcomes: 5 contacts, 1 answered, 1 no answer, 1 busy, 1 rejected, 1 failed\n",
        "watch: all 3 session(s) finished (",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }
    // Not a terminal: progress lines, the last one complete.
    assert!(run.stderr.contains("watch: 5/5 contacts final, 3/3 sessions finished"), "{}", run.stderr);

    // Again: every chunk resumed, no session id to follow.
    let run = cli(&app, &args).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for want in [
        "sessions started: 3 (0 new, 3 resumed)",
        "watch: 3 resumed chunk(s) skipped",
        "watch: following 0 session(s)",
        "outcomes: 0 contacts, 0 answered",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }
}

#[tokio::test]
async fn cli_campaign_watch_timeout_stops_waiting_with_exit_2() {
    // Real time: the call rings and talks for seconds, far beyond the timeout.
    let app = spawn_at(1.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = campaign_csv(dir.path(), &["0912345670"]);
    let args = ["campaign", "--script", SCRIPT, "--csv", &csv, "--watch", "--watch-timeout", "300ms"];
    let run = cli(&app, &args).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("outcomes: 1 contacts, 0 answered"), "{}", run.stdout);
    assert!(
        run.stderr.contains("stopped waiting after 300ms: 1 of 1 session(s) not finished, 0/1 contacts final"),
        "{}",
        run.stderr
    );
}
