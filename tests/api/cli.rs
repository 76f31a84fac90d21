//! The `campaign` and `scripts` commands: the real binary run against a facade started with
//! `spawn_app()`, on CSV files written by the tests.

use std::path::Path;

use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");
/// "Thông báo điểm thi": four dynamic variables, one of them `tên thí sinh`.
const SCRIPT: &str = "64915bc76a690c0edad14723";
const HEADER: &str = "phone,email,ext_contact_code,tên thí sinh,uB131frQEU,Kp7wZq2LmX,r9TdVh4sNa";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn cli(app: &TestApp, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .args(["--server", &format!("http://{}", app.addr)])
        .env_remove("CALLBOT_SERVER")
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn csv_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// BOM, quoted commas, Vietnamese, an empty email, a do-not-call number (ends in 999).
fn good_csv() -> String {
    format!(
        "\u{FEFF}{HEADER}\n\
         0912345001,an@vi.du.vn,KH-1,\"Nguyễn Văn Ánh, lớp 12A\",9.5,8,7\n\
         0912345002,,KH-2,Trần Thị Bích,6,7.5,8\n\
         0912345999,,KH-3,\"Lê Văn \"\"Cường\"\"\",5,5,5\n"
    )
}

#[tokio::test]
async fn cli_campaign_streams_a_csv_with_bom_quotes_and_vietnamese_and_prints_a_summary() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = csv_file(dir.path(), "contacts.csv", &good_csv());
    let run = cli(
        &app,
        &[
            "campaign",
            "--script",
            SCRIPT,
            "--csv",
            &csv,
            "--campaign-id",
            "c1",
            "--chunk-size",
            "2",
            "--check-variables",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for want in [
        "campaign c1: 3 contacts from",
        "sessions started: 2 (2 new, 0 resumed)",
        "contacts accepted: 2\n",
        "contacts rejected: 1\n",
        "  number_dnc: 1\n",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }
    let sessions = app.sim.sessions().await;
    let ids: Vec<&str> = sessions.iter().map(|s| s["autocall_id"].as_str().unwrap()).collect();
    // Not a terminal: plain progress lines, each with its session id.
    let (first, second) = (ids[0], ids[1]);
    assert!(run.stderr.contains(&format!("chunk 0: c1-0 started as session {first}, 2/3 contacts")), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("chunk 1: c1-1 started as session {second}, 3/3 contacts")), "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("session ids (for report --session and watch --session): {first} {second}\n"))
    );
    // The refused contact with its CSV line (the header is line 1, BOM and all).
    assert!(run.stdout.contains("refused contacts (line in"), "{}", run.stdout);
    assert!(run.stdout.contains("  line 4: *******999 number_dnc\n"), "{}", run.stdout);
    let keys: Vec<_> = sessions.iter().map(|s| s["ext_session_id"].as_str().unwrap()).collect();
    assert_eq!(keys, ["c1-0", "c1-1"]);
    let first = &sessions[0]["body"]["contact_info"][0];
    assert_eq!(first["phone"], "0912345001");
    assert_eq!(first["email"], "an@vi.du.vn");
    assert_eq!(first["ext_contact_code"], "KH-1");
    assert_eq!(first["mapping_variables"]["tên thí sinh"], "Nguyễn Văn Ánh, lớp 12A");
    assert_eq!(sessions[1]["body"]["contact_info"][0]["mapping_variables"]["tên thí sinh"], "Lê Văn \"Cường\"");
    assert!(sessions[0]["body"]["contact_info"][1].get("email").is_none());
}

#[tokio::test]
async fn cli_campaign_rerun_of_the_same_file_resumes_with_the_derived_id() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = csv_file(dir.path(), "contacts.csv", &good_csv());
    let args = ["campaign", "--script", SCRIPT, "--csv", &csv, "--chunk-size", "2"];
    let first = cli(&app, &args).await;
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let second = cli(&app, &args).await;
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    let id = |out: &str| out.lines().next().unwrap().split(':').next().unwrap().to_owned();
    assert!(id(&first.stdout).starts_with("campaign csv-"), "{}", first.stdout);
    assert_eq!(id(&first.stdout), id(&second.stdout));
    assert!(second.stdout.contains("sessions started: 2 (0 new, 2 resumed)"), "{}", second.stdout);
    assert_eq!(app.sim.sessions().await.len(), 2);
    // Another chunk size means other chunks: another id.
    let third = cli(&app, &["campaign", "--script", SCRIPT, "--csv", &csv, "--chunk-size", "3"]).await;
    assert_ne!(id(&third.stdout), id(&first.stdout));
}

#[tokio::test]
async fn cli_campaign_reports_bad_rows_by_line_number_and_sends_nothing() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEADER}\n\
         0912345001,,,An,1,2,3\n\
         09-12,,,Bình,1,2,3\n\
         0912345003,,,\"Chi, Hà Nội\",1,2\n\
         0912345001,,,Dũng,1,2,3\n\
         0912345005,not-an-email,,Én,1,2,3\n"
    );
    let csv = csv_file(dir.path(), "bad.csv", &text);
    let run = cli(&app, &["campaign", "--script", SCRIPT, "--csv", &csv]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("4 bad row(s); nothing was sent"), "{}", run.stderr);
    for want in [
        "line 3: phone \"09-12\": must be an optional leading '+' followed by 8 to 15 digits",
        "line 4: expected 7 columns, found 6",
        "line 5: phone \"0912345001\": repeats the phone of line 2",
        "line 6: email \"not-an-email\": must be a plausible email address",
    ] {
        assert!(run.stderr.contains(want), "{want:?} not in\n{}", run.stderr);
    }
    assert_eq!(app.sim.stats().await["execute_calls"], 0);

    // --check-variables: a missing required column and an empty required cell, nothing sent.
    let text = "phone,tên thí sinh,uB131frQEU,Kp7wZq2LmX,lop\n0912345001,An,1,2,12A\n0912345002,,1,2,12B\n";
    let csv = csv_file(dir.path(), "vars.csv", text);
    let run = cli(&app, &["campaign", "--script", SCRIPT, "--csv", &csv, "--check-variables"]).await;
    assert_ne!(run.code, 0);
    for want in [
        "line 1: column \"lop\" is not a variable of the script",
        "line 1: no column for the script's required variable \"r9TdVh4sNa\"",
        "line 3: variables[tên thí sinh]: is required by the script",
    ] {
        assert!(run.stderr.contains(want), "{want:?} not in\n{}", run.stderr);
    }
    assert_eq!(app.sim.stats().await["execute_calls"], 0);
}

#[tokio::test]
async fn cli_campaign_facade_error_exits_non_zero_with_code_and_reason() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = csv_file(dir.path(), "contacts.csv", "phone\n0912345001\n");
    let run =
        cli(&app, &["campaign", "--script", "000000000000000000000000", "--csv", &csv, "--check-variables"]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("NotFound (SCRIPT_NOT_FOUND)"), "{}", run.stderr);
    let run = cli(&app, &["campaign", "--script", SCRIPT, "--csv", &csv, "--campaign-id", "has space"]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("InvalidArgument (INVALID_REQUEST)"), "{}", run.stderr);
    assert!(run.stderr.contains("spec.campaign_id:"), "{}", run.stderr);
    assert!(run.stdout.contains("sessions started: 0"), "{}", run.stdout);
    assert_eq!(app.sim.stats().await["execute_calls"], 0);
}

#[tokio::test]
async fn cli_scripts_prints_a_table_or_json() {
    let app = spawn_app().await;
    let run = cli(&app, &["scripts"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("ID ") && lines[0].contains("NAME") && lines[0].contains("VARIABLES"), "{}", lines[0]);
    assert!(lines[1].starts_with(SCRIPT), "{}", lines[1]);
    assert!(lines[1].contains("Thông báo điểm thi"), "{}", lines[1]);
    assert!(lines[1].contains("tên thí sinh*, uB131frQEU*"), "{}", lines[1]);
    assert!(run.stdout.contains("14 script(s)"), "{}", run.stdout);

    let run = cli(&app, &["scripts", "--json", "--name-contains", "diem"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let scripts = v.as_array().unwrap();
    assert_eq!(scripts[0]["id"], SCRIPT);
    assert_eq!(scripts[0]["variables"][0]["field_code"], "tên thí sinh");
    assert_eq!(scripts[0]["variables"][0]["is_dynamic_attribute"], true);
}
