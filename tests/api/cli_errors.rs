//! The command line's refusals, as a newcomer meets them: each by its exit code and a stable
//! fragment of its message that says what to do.

use std::process::Command;

use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");
const SCRIPT: &str = "64915bc76a690c0edad14723";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary with exactly these arguments (no `--server` added).
async fn bin(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("CALLBOT_SERVER")
        .env_remove("CALLBOT_TOKEN")
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn assert_refused(run: &Run, code: i32, fragments: &[&str]) {
    assert_eq!(run.code, code, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.starts_with("callbot-facade: "), "{}", run.stderr);
    for f in fragments {
        assert!(run.stderr.contains(f), "{f:?} not in\n{}", run.stderr);
    }
}

#[tokio::test]
async fn cli_a_missing_flag_is_named_with_the_usage() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("good.csv");
    std::fs::write(&csv, "phone\n0912345001\n").unwrap();
    let run = bin(&["campaign", "--csv", csv.to_str().unwrap()]).await;
    assert_refused(&run, 2, &["the following required arguments were not provided", "--script <SCRIPT>", "Usage:"]);
    let run = bin(&["report"]).await;
    assert_refused(&run, 2, &["--session <SESSION>", "Usage: callbot-facade report"]);
}

#[tokio::test]
async fn cli_server_takes_host_port_and_says_where_it_tried() {
    let app = spawn_app().await;
    // host:port, as grpcurl takes it.
    let run = bin(&["scripts", "--server", &app.addr.to_string()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("14 script(s)"), "{}", run.stdout);

    // Nothing listens: where it tried, how to start the facade, how to point elsewhere; each
    // cause once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let run = bin(&["scripts", "--server", &closed.to_string()]).await;
    assert_refused(
        &run,
        1,
        &[
            &format!("cannot connect to http://{closed}: connection refused"),
            "callbot-facade",
            "--server",
            "CALLBOT_SERVER",
        ],
    );
    assert!(!run.stderr.contains("tcp connect error: tcp connect error"), "{}", run.stderr);

    // The admin port answers HTTP, not gRPC.
    let run = bin(&["scripts", "--server", &app.admin.to_string()]).await;
    assert_refused(&run, 1, &["answered HTTP 404, not gRPC", "admin port"]);
    assert!(!run.stderr.contains("grpc-status header missing"), "{}", run.stderr);
}

#[test]
fn cli_a_missing_caller_tokens_file_is_named() {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--caller-tokens-file", "nosuch.tokens"])
        .env("CALLBOT_EVENTS_STORE", "memory")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--caller-tokens-file: cannot read nosuch.tokens: "), "{stderr}");
}

#[tokio::test]
async fn cli_csv_with_semicolons_is_read_and_a_missing_variable_is_named_before_sending() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    // What a spreadsheet writes in a Vietnamese locale: `;` between cells, `,` as the decimal mark.
    let csv = dir.path().join("vn.csv");
    std::fs::write(&csv, "phone;tên thí sinh;diem\n0912345001;Nguyễn Văn Ánh;9,5\n0912345002;Trần Thị Bích;8\n")
        .unwrap();
    let server = app.addr.to_string();
    let run = bin(&["campaign", "--server", &server, "--script", SCRIPT, "--csv", csv.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("(columns separated by ';')"), "{}", run.stderr);
    // Three of the script's four required variables have no column: said once, before sending.
    for want in ["warning: ", "no column for the script's required variable(s)", "\"uB131frQEU\"", "\"r9TdVh4sNa\""] {
        assert!(run.stderr.contains(want), "{want:?} not in\n{}", run.stderr);
    }
    assert_eq!(run.stderr.matches("uB131frQEU").count(), 1, "{}", run.stderr);
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions[0]["body"]["contact_info"][0]["mapping_variables"]["diem"], "9,5");

    // --check-variables keeps refusing, each missing column once, not on every row.
    let run = bin(&[
        "campaign",
        "--server",
        &server,
        "--script",
        SCRIPT,
        "--csv",
        csv.to_str().unwrap(),
        "--check-variables",
    ])
    .await;
    assert_refused(&run, 1, &["no column for the script's required variable \"uB131frQEU\""]);
    assert_eq!(run.stderr.matches("uB131frQEU").count(), 1, "{}", run.stderr);
    assert_eq!(app.sim.sessions().await.len(), 1);
}

#[tokio::test]
async fn cli_campaign_rejects_file_holds_the_refused_rows_for_a_rerun() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("c.csv");
    let header = "phone,tên thí sinh,uB131frQEU,Kp7wZq2LmX,r9TdVh4sNa";
    std::fs::write(
        &csv,
        format!("{header}\n0912345001,An,1,2,3\n0912345999,\"Bình, Huế\",1,2,3\n0912345003,Chi,1,2,3\n"),
    )
    .unwrap();
    let rejects = dir.path().join("rejects.csv");
    let run = bin(&[
        "campaign",
        "--server",
        &app.addr.to_string(),
        "--script",
        SCRIPT,
        "--csv",
        csv.to_str().unwrap(),
        "--rejects",
        rejects.to_str().unwrap(),
    ])
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("  line 3: *******999 number_dnc\n"), "{}", run.stdout);
    assert_eq!(std::fs::read_to_string(&rejects).unwrap(), format!("{header}\n0912345999,\"Bình, Huế\",1,2,3\n"));
}

#[tokio::test]
async fn cli_report_of_a_chunk_key_says_which_id_to_give() {
    let app = spawn_app().await;
    let run = bin(&["report", "--server", &app.addr.to_string(), "--session", "csv-0123456789abcdef-0"]).await;
    assert_refused(
        &run,
        1,
        &[
            "NotFound (SESSION_NOT_FOUND)",
            "looks like a chunk key (external session id)",
            "session id that `campaign` printed",
        ],
    );
}
