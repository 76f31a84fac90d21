//! The durable embedded event store (`--events-store disk`, API.md §9) on the binary: a burst of
//! deliveries, `kill -9` in the middle, a restart: what was acknowledged is there exactly once,
//! cursors resume, repeats are repeats, reports are the same. And the starts it refuses: a data
//! dir held by another process, a store the engine cannot open.

use std::{
    collections::{HashMap, HashSet},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::events::free_addr;
use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");
const SECRET: &str = "disk-store-test-webhook-secret-012345";

/// One facade process on a data dir, in front of `upstream`; its ports stay across restarts.
struct Facade {
    child: Option<Reaped>,
    args: Vec<String>,
    admin: SocketAddr,
    grpc: SocketAddr,
    hook: SocketAddr,
    log: PathBuf,
}

impl Facade {
    fn new(data_dir: &Path, upstream: &str, log: PathBuf) -> Facade {
        let (grpc, admin, hook) = (free_addr(), free_addr(), free_addr());
        let args = [
            ("--listen", grpc.to_string()),
            ("--admin-listen", admin.to_string()),
            ("--webhook-listen", hook.to_string()),
            ("--webhook-secret", SECRET.to_owned()),
            ("--upstream-url", upstream.to_owned()),
            ("--caller-auth", "mesh".to_owned()),
            ("--api-key", TEST_KEY.to_owned()),
            ("--events-store", "disk".to_owned()),
            ("--data-dir", data_dir.display().to_string()),
        ];
        let args = args.into_iter().flat_map(|(flag, value)| [flag.to_owned(), value]).collect();
        Facade { child: None, args, admin, grpc, hook, log }
    }

    /// Starts a new process (same flags) and waits until it is ready (20 s at most).
    async fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(BIN).args(&self.args).env_clear().stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(Reaped::new(child));
        let ready = format!("http://{}/readyz", self.admin);
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                panic!("the facade exited ({status}): {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(tokio::time::Instant::now() < until, "not ready within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sigkill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }

    /// The default tenant's receiver URL, its token derived here from the secret.
    fn webhook(&self) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(b"callbot-webhook:default");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("http://{}/webhooks/callbot/default.{}", self.hook, &hex[..32])
    }

    async fn client(&self) -> CallBotServiceClient<Channel> {
        CallBotServiceClient::new(
            Channel::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.unwrap(),
        )
    }

    /// Every event of a watch from `request`, until none comes for a second.
    async fn events(&self, request: pb::WatchCallEventsRequest) -> Vec<pb::CallEvent> {
        let mut stream = self.client().await.watch_call_events(request).await.unwrap().into_inner();
        let mut out = Vec::new();
        while let Ok(next) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
            out.push(next.unwrap().expect("open").event.unwrap());
        }
        out
    }

    async fn report(&self, session: &str) -> pb::GetSessionReportResponse {
        let request = pb::GetSessionReportRequest { session_id: session.to_owned() };
        self.client().await.get_session_report(request).await.unwrap().into_inner()
    }

    async fn metric(&self, series: &str) -> f64 {
        let page = reqwest::get(format!("http://{}/metrics", self.admin)).await.unwrap().text().await.unwrap();
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series}"))
    }
}

/// An end-of-call record of `session`'s call to `to`.
fn cdr(call: &str, session: &str, to: &str, disposition: &str) -> Value {
    let (cause, talk) = if disposition == "ANSWERED" { ("NORMAL_CLEARING", 12) } else { ("NO_ANSWER", 0) };
    json!({"transaction_id": call, "autocall_id": session, "direction": "outbound", "destination_number": to,
        "disposition": disposition, "hangup_cause": cause, "bill_sec": talk.to_string(), "duration": talk + 20,
        "last_updated_date": 1_764_590_100_000u64, "recording_file": ""})
}

#[tokio::test]
async fn a_kill_9_in_a_burst_loses_no_acknowledged_delivery_and_the_restart_is_as_before() {
    let sim = TestSim::start(SimConfig::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut facade = Facade::new(&tmp.path().join("data"), &sim.url, tmp.path().join("facade.log"));
    facade.spawn().await;
    let http = reqwest::Client::new();

    // A session created here, two of its three contacts with an outcome.
    let phones = ["0912000001", "0912000002", "0912000003"];
    let request = pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: phones.iter().map(|p| pb::Contact { phone: (*p).into(), ..Default::default() }).collect(),
        ..Default::default()
    };
    let session = facade.client().await.create_session(request).await.unwrap().into_inner().session.unwrap().id;
    for (call, phone, disposition) in [("s-1", "84912000001", "ANSWERED"), ("s-2", "84912000002", "NO ANSWER")] {
        let answer = http.post(facade.webhook()).json(&cdr(call, &session, phone, disposition)).send().await.unwrap();
        assert_eq!(answer.status(), 204);
    }
    let before = facade.events(pb::WatchCallEventsRequest { from_start: true, ..Default::default() }).await;
    assert_eq!(before.len(), 2);
    let report = facade.report(&session).await;
    assert_eq!((report.answered, report.no_answer, report.in_progress), (1, 1, 1));

    // The burst: four posters, each its own calls; what got 204 is noted. kill -9 in the middle.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let posters: Vec<_> = (0..4)
        .map(|p| {
            let (http, url, acknowledged) = (http.clone(), facade.webhook(), acknowledged.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let call = format!("burst-{p}-{n}");
                    let body = cdr(&call, "not-created-here", "0913000000", "ANSWERED");
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 204 => acknowledged.lock().unwrap().push(format!("{call}/cdr")),
                        Ok(r) => panic!("{call}: {}", r.status()),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    super::events::wait_until(|| async { acknowledged.lock().unwrap().len() >= 300 }).await;
    facade.sigkill();
    for poster in posters {
        poster.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    facade.spawn().await;
    // Every acknowledged delivery is there, exactly once; nothing is there twice.
    let after = facade.events(pb::WatchCallEventsRequest { from_start: true, ..Default::default() }).await;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in &after {
        *seen.entry(e.id.as_str()).or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "an event twice");
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !seen.contains_key(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged deliveries lost: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
    // The events from before keep their place and cursor; a cursor from before resumes right after it.
    assert_eq!(after[..2], before[..]);
    let resumed = facade
        .events(pb::WatchCallEventsRequest { after_cursor: before[0].cursor.clone(), ..Default::default() })
        .await;
    assert_eq!(resumed, after[1..], "no gap, no repeat");
    // The report of the session from before the restart is the same.
    assert_eq!(facade.report(&session).await, report);
    // A repeat after the restart is a repeat; a new fact is stored after everything.
    let repeat = acknowledged.last().unwrap().trim_end_matches("/cdr").to_owned();
    let answer =
        http.post(facade.webhook()).json(&cdr(&repeat, "not-created-here", "0913000000", "ANSWERED")).send().await;
    assert_eq!(answer.unwrap().status(), 204);
    let answer = http.post(facade.webhook()).json(&cdr("s-3", &session, "84912000003", "ANSWERED")).send().await;
    assert_eq!(answer.unwrap().status(), 204);
    assert_eq!(facade.metric("callbot_webhook_duplicates_total").await, 1.0);
    let live = facade
        .events(pb::WatchCallEventsRequest { after_cursor: after.last().unwrap().cursor.clone(), ..Default::default() })
        .await;
    assert_eq!(live.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["s-3/cdr"]);
    let again = facade.report(&session).await;
    assert_eq!((again.answered, again.no_answer, again.in_progress, again.finished), (2, 1, 0, true));
    assert!(facade.metric("callbot_event_store_fsyncs_total").await >= 1.0);
    // Exported (its count is the store's: `events::disk::tests`, deletions compacted away).
    assert_eq!(facade.metric("callbot_event_store_compactions_total").await, 0.0, "nothing deleted here");
}

/// Runs the binary on `data_dir` until it exits (10 s at most); (exit code, stderr).
fn refused_start(data_dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_clear()
        .env("CALLBOT_EVENTS_STORE", "disk")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The start was refused with one line of its own, naming `path`.
fn assert_refused(data_dir: &Path, path: &Path, says: &str) {
    let (code, stderr) = refused_start(data_dir);
    assert_eq!(code, Some(1), "{stderr}");
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("callbot-facade: ")).collect();
    assert_eq!(ours.len(), 1, "{stderr}");
    assert!(ours[0].contains(&path.display().to_string()) && ours[0].contains(says), "{stderr}");
    let looked_like: HashSet<&str> = ["SQLite format 3", "garbage"].into();
    assert!(!looked_like.iter().any(|s| ours[0].contains(s)), "no file content in the line: {stderr}");
}

#[tokio::test]
async fn a_locked_data_dir_a_corrupt_store_and_a_foreign_file_refuse_the_start_with_one_line() {
    let sim = TestSim::start(SimConfig::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut facade = Facade::new(&data, &sim.url, tmp.path().join("facade.log"));
    facade.spawn().await;
    // A second process on the same folder.
    assert_refused(&data, &data, "in use by another process");
    facade.sigkill();

    // The store's files are not fjall's any more: refused, and left as they are.
    let version = data.join("store").join("version");
    std::fs::write(&version, b"garbage").unwrap();
    assert_refused(&data, &data.join("store"), "cannot be opened");
    assert_eq!(std::fs::read(&version).unwrap(), b"garbage");

    // Another program's file where the store goes.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("store"), b"SQLite format 3\0").unwrap();
    assert_refused(&foreign, &foreign.join("store"), "cannot be opened");
    assert_eq!(std::fs::read(foreign.join("store")).unwrap(), b"SQLite format 3\0");
}

/// Reconciliation is driven by what the store holds, not by timers in memory: a session whose
/// webhooks are all lost, created by a process that is killed before it reconciles anything
/// (`--reconcile-after 1h`), is reconciled by the next process on the same data dir.
#[tokio::test]
async fn reconciliation_survives_a_kill_9() {
    let sim = TestSim::start(SimConfig { time_scale: super::events::FAST, ..SimConfig::default() }).await;
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/webhook_faults", sim.url))
        .json(&json!({"kind": "lose", "rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tmp = tempfile::tempdir().unwrap();
    let mut facade = Facade::new(&tmp.path().join("data"), &sim.url, tmp.path().join("facade.log"));
    let public = format!("http://{}", facade.hook);
    facade.args.extend(["--webhook-public-url".to_owned(), public, "--reconcile-after".to_owned(), "1h".to_owned()]);
    facade.spawn().await;

    let phones = ["0912000101", "+84912000102", "0912000103"];
    let request = pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: phones.iter().map(|p| pb::Contact { phone: (*p).into(), ..Default::default() }).collect(),
        ..Default::default()
    };
    let session = facade.client().await.create_session(request).await.unwrap().into_inner().session.unwrap().id;
    super::events::wait_session_done(&sim, &session).await;
    assert_eq!(sim.stats().await["webhook_delivered"], 0, "every webhook lost");
    let before = facade.report(&session).await;
    assert_eq!((before.in_progress, before.reconciled, before.finished), (3, 0, false));
    facade.sigkill();

    // The next process reconciles soon after it starts.
    let at = facade.args.iter().position(|a| a == "--reconcile-after").unwrap();
    facade.args[at + 1] = "1s".to_owned();
    facade.spawn().await;
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    let report = loop {
        let report = facade.report(&session).await;
        if report.finished {
            break report;
        }
        assert!(tokio::time::Instant::now() < until, "not reconciled after the restart: {report:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((report.reconciled, report.contacts_total, report.in_progress, report.unknown), (3, 3, 0, 0));
    for c in &report.contacts {
        assert_eq!((c.source(), c.r#final), (pb::CallEventSource::History, true), "{}", c.phone);
    }
    assert!(facade.metric("callbot_reconcile_events_total").await >= 3.0);
    // The contact as the caller wrote it, on the events the history gave.
    let events = facade.events(pb::WatchCallEventsRequest { from_start: true, ..Default::default() }).await;
    assert!(events.iter().any(|e| e.contact_phone == "+84912000102"), "{events:?}");
    assert!(events.iter().any(|e| e.contact_phone == "0912000101" && e.phone == "84912000101"), "{events:?}");
}
