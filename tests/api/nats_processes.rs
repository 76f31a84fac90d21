//! The JetStream event store as it is deployed: facade *processes* (the binary, spawned twice) on
//! one real `nats-server`, sharing one upstream (a standalone simulator) and one webhook secret;
//! processes SIGKILLed and started again; and NATS authentication by NKey and by a creds file
//! (operator mode: the operator, account and user JWTs are made here, signed with nkeys).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256, Sha512_256};
use tonic::transport::Channel;

use super::events::{FAST, free_addr, read_events, wait_session_done, wait_until};
use super::nats::{Nats, from_start, live, post, start_result};
use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");

/// The `--webhook-secret` every process shares.
const SECRET: &str = "the-replicas-shared-webhook-secret";

/// The URL token of `tenant` under `secret`, derived as the README says: `<tenant>.` and the first
/// 128 bits of HMAC-SHA256(secret, "callbot-webhook:" + tenant) in hex.
fn token(secret: &str, tenant: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(b"callbot-webhook:");
    mac.update(tenant.as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("{tenant}.{}", &hex[..32])
}

/// One facade OS process (the binary) on a NATS server, in front of a shared upstream; SIGKILLed
/// when dropped (its `Reaped` guard). Its ports stay the same across restarts.
struct Facade {
    child: Option<Reaped>,
    args: Vec<String>,
    admin: SocketAddr,
    grpc: SocketAddr,
    hook: SocketAddr,
    logs: tempfile::TempDir,
    starts: usize,
}

impl Facade {
    /// A facade (not started) with its own free ports, `--events-nats-url nats_url`, the shared
    /// secret and the upstream at `upstream` (with the tests' key).
    fn new(nats_url: &str, upstream: &str) -> Facade {
        let (grpc, admin, hook) = (free_addr(), free_addr(), free_addr());
        let args = [
            ("--listen", grpc.to_string()),
            ("--admin-listen", admin.to_string()),
            ("--webhook-listen", hook.to_string()),
            ("--webhook-secret", SECRET.to_owned()),
            ("--upstream-url", upstream.to_owned()),
            ("--caller-auth", "mesh".to_owned()),
            ("--api-key", TEST_KEY.to_owned()),
            ("--events-nats-url", nats_url.to_owned()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect();
        Facade { child: None, args, admin, grpc, hook, logs: tempfile::tempdir().unwrap(), starts: 0 }
    }

    fn arg(&mut self, flag: &str, value: &str) -> &mut Self {
        self.args.extend([flag.to_owned(), value.to_owned()]);
        self
    }

    /// Starts the process (a new one, same flags) and waits until its `/readyz` says ready (20 s at most).
    async fn spawn(&mut self) {
        // A restart binds the same ports again; meanwhile the system may have lent one of them to
        // a short-lived client connection as its source port (ports are picked by binding port 0
        // and letting go). Then the start fails naming it, and is tried again.
        for _ in 0..5 {
            if self.spawn_once().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("the facade could not bind its ports in 5 starts: {}", self.log());
    }

    /// One start; `false` when the process exited because a port was taken.
    async fn spawn_once(&mut self) -> bool {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the facade");
        self.child = Some(Reaped::new(child));
        let ready = format!("http://{}/readyz", self.admin);
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                if self.log().contains("Address already in use") {
                    return false;
                }
                panic!("the facade exited ({status}) before it was ready: {}", self.log());
            }
            if reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
                return true;
            }
            assert!(tokio::time::Instant::now() < until, "not ready within 20 s: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.logs.path().join(format!("start-{}.log", self.starts))
    }

    /// What the current (or last) process wrote on stderr.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL (no drain, no goodbye) and reap.
    fn sigkill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        let status: ExitStatus = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
    }

    /// The default tenant's receiver URL, its token computed here from the secret.
    fn webhook(&self) -> String {
        format!("http://{}/webhooks/callbot/{}", self.hook, token(SECRET, "default"))
    }

    async fn client(&self) -> CallBotServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.unwrap();
        CallBotServiceClient::new(channel)
    }

    async fn watch(&self, request: pb::WatchCallEventsRequest) -> tonic::Streaming<pb::WatchCallEventsResponse> {
        self.client().await.watch_call_events(request).await.unwrap().into_inner()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin)).await.unwrap().text().await.unwrap()
    }

    async fn report(&self, session: &str) -> pb::GetSessionReportResponse {
        let request = pb::GetSessionReportRequest { session_id: session.to_owned() };
        self.client().await.get_session_report(request).await.unwrap().into_inner()
    }
}

/// The value of one series (`name{labels}` exactly as rendered) on a `/metrics` page.
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn ids(events: &[pb::CallEvent]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

/// An end-of-call record of `session`'s call.
fn cdr(call: &str, session: &str, to: &str, disposition: &str, cause: &str, talk: u64) -> Value {
    json!({"transaction_id": call, "autocall_id": session, "direction": "outbound", "destination_number": to,
        "disposition": disposition, "hangup_cause": cause, "bill_sec": talk, "duration": talk + 5,
        "last_updated_date": 1_764_590_100_000u64, "recording_file": ""})
}

/// The hooks the upstream holds for the tests' key (what the facade registered).
async fn registered_hooks(sim: &TestSim) -> Vec<String> {
    let request = sim.as_client(TEST_KEY, reqwest::Method::GET, "/api/webhooks/list").await;
    let list: Value = request.send().await.unwrap().json().await.unwrap();
    list["payload"].as_array().unwrap().iter().map(|h| h["url"].as_str().unwrap().to_owned()).collect()
}

/// One nats-server, one simulator, and two facade processes A and B on both, started.
async fn two_facades() -> (Nats, TestSim, Facade, Facade) {
    let nats = Nats::start().await;
    let sim = TestSim::start(SimConfig::default()).await;
    let mut a = Facade::new(&nats.url(), &sim.url);
    a.spawn().await;
    let mut b = Facade::new(&nats.url(), &sim.url);
    b.spawn().await;
    (nats, sim, a, b)
}

#[tokio::test]
async fn two_processes_a_delivery_to_a_reaches_a_watcher_on_b_and_a_repeat_to_both_is_stored_once() {
    let nats = Nats::start().await;
    let sim = TestSim::start(SimConfig::default()).await;
    let mut a = Facade::new(&nats.url(), &sim.url);
    let own = format!("http://{}", a.hook);
    a.arg("--webhook-public-url", &own);
    a.spawn().await;
    let mut b = Facade::new(&nats.url(), &sim.url);
    b.spawn().await;
    // The URL A registered with the provider carries the token derived here from the secret.
    wait_until(|| async { !registered_hooks(&sim).await.is_empty() }).await;
    assert_eq!(registered_hooks(&sim).await, [a.webhook()]);
    for f in [&a, &b] {
        let forged = format!("http://{}/webhooks/callbot/{}", f.hook, token("another-secret", "default"));
        assert_eq!(post(&forged, &live("x-1", "ringing", "0912345670")).await, 404, "a token of another secret");
    }

    let mut watch_b = b.watch(pb::WatchCallEventsRequest::default()).await;
    let ringing = live("c-1", "ringing", "0912345670");
    let record = cdr("c-1", "s-two-procs", "0912345670", "busy", "USER_BUSY", 0);
    assert_eq!(post(&a.webhook(), &ringing).await, 204);
    assert_eq!(post(&b.webhook(), &ringing).await, 204, "the repeat, to the other process");
    assert_eq!(post(&a.webhook(), &record).await, 204);
    assert_eq!(post(&b.webhook(), &record).await, 204, "the repeat, to the other process");
    assert_eq!(post(&a.webhook(), &record).await, 204, "a repeat to the same process");
    // Stored after the repeats: had one been stored, it would come before this one.
    assert_eq!(post(&b.webhook(), &live("c-2", "ringing", "0912345675")).await, 204);
    let got = read_events(&mut watch_b, 3).await;
    assert_eq!(ids(&got), ["c-1/ringing", "c-1/cdr", "c-2/ringing"]);
    assert_eq!((got[0].call_id.as_str(), got[0].state()), ("c-1", pb::CallState::Ringing));
    assert_eq!(got[0].phone, "0912345670");
    assert_eq!((got[1].state(), got[1].outcome()), (pb::CallState::Ended, pb::CallOutcome::Busy));
    assert_eq!(got[1].session_id, "s-two-procs");
    assert_eq!(got[1].hangup_cause, "USER_BUSY");
    assert_eq!(got[2].call_id, "c-2");

    // A stored 2 (ringing, record) and recognized 1 repeat; B stored 1 and recognized 2.
    let (on_a, on_b) = (a.metrics().await, b.metrics().await);
    for (page, stored, duplicates) in [(&on_a, 2.0, 1.0), (&on_b, 1.0, 2.0)] {
        assert_eq!(metric(page, "callbot_events_stored_total"), Some(stored), "{page}");
        assert_eq!(metric(page, "callbot_webhook_duplicates_total"), Some(duplicates), "{page}");
        assert_eq!(metric(page, "callbot_event_store_up"), Some(1.0));
    }
    let series = r#"callbot_webhook_deliveries_total{kind="record",answer="duplicate"}"#;
    assert_eq!((metric(&on_a, series), metric(&on_b, series)), (Some(1.0), Some(1.0)));
    // Present at 0 from the start (every known label value), so A reads 0, not nothing.
    let series = r#"callbot_webhook_deliveries_total{kind="live",answer="duplicate"}"#;
    assert_eq!((metric(&on_a, series), metric(&on_b, series)), (Some(0.0), Some(1.0)));
    // The same events, cursors included, from the start on A.
    let mut watch_a = a.watch(from_start()).await;
    assert_eq!(read_events(&mut watch_a, 3).await, got);
    // Tokens are never logged, nor the secret.
    for f in [&a, &b] {
        let log = f.log();
        assert!(log.contains("event store: NATS JetStream"), "{log}");
        assert!(!log.contains(&token(SECRET, "default")[8..]) && !log.contains(SECRET), "{log}");
    }
}

/// The store-size gauges say what the stream holds, on every replica, whichever stored the events
/// (they were once set only when the replica itself stored a delivery, from its count before).
#[tokio::test]
async fn the_store_events_gauge_follows_the_stream_on_every_replica() {
    let (_nats, _sim, a, b) = two_facades().await;
    for i in 0..3 {
        assert_eq!(post(&a.webhook(), &live(&format!("g-{i}"), "ringing", "0912345670")).await, 204);
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (on_a, on_b) = (a.metrics().await, b.metrics().await);
        let gauges = [&on_a, &on_b].map(|page| metric(page, "callbot_event_store_events"));
        if gauges == [Some(3.0); 2] {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "3 events in the stream; the gauges on A and B: {gauges:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_watcher_of_a_process_sigkilled_and_started_again_resumes_by_cursor_with_no_gap_and_no_repeat() {
    let (_nats, _sim, a, mut b) = two_facades().await;
    let url = a.webhook();
    let mut watch_b = b.watch(pb::WatchCallEventsRequest::default()).await;
    for i in 0..3 {
        assert_eq!(post(&url, &live(&format!("k-{i}"), "ringing", "0912345670")).await, 204);
    }
    let seen = read_events(&mut watch_b, 3).await;
    assert_eq!(ids(&seen), ["k-0/ringing", "k-1/ringing", "k-2/ringing"]);
    let cursor = seen[2].cursor.clone();

    b.sigkill();
    // The stream ends with its process (it does not hang on a dead peer).
    let end = tokio::time::timeout(Duration::from_secs(5), watch_b.message()).await.expect("the stream ended");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    // Posted to A while B is down.
    let meanwhile = [
        live("k-0", "answered", "0912345670"),
        live("k-3", "ringing", "0912345673"),
        cdr("k-1", "s-kill", "0912345670", "no answer", "NO_ANSWER", 0),
        live("k-4", "ringing", "0912345674"),
    ];
    for body in &meanwhile {
        assert_eq!(post(&url, body).await, 204);
    }
    b.spawn().await;
    let resume = pb::WatchCallEventsRequest { after_cursor: cursor, ..Default::default() };
    let mut resumed = b.watch(resume).await;
    let rest = read_events(&mut resumed, 4).await;
    assert_eq!(ids(&rest), ["k-0/answered", "k-3/ringing", "k-1/cdr", "k-4/ringing"]);
    assert_eq!((rest[2].outcome(), rest[2].session_id.as_str()), (pb::CallOutcome::NoAnswer, "s-kill"));
    // Then live: the next one is the next stored, nothing repeated before it.
    assert_eq!(post(&url, &live("k-5", "ringing", "0912345675")).await, 204);
    assert_eq!(ids(&read_events(&mut resumed, 1).await), ["k-5/ringing"]);
    // The new process's cursors are the old one's: from the start, the same 3 first events.
    let mut all = b.watch(from_start()).await;
    let again = read_events(&mut all, 8).await;
    assert_eq!(again[..3], seen[..]);
    assert_eq!(again[3..7], rest[..]);
    assert_eq!(again.iter().map(|e| &e.id).collect::<HashSet<_>>().len(), 8, "each once");
}

/// A stand-in for the provider's side of the receiver: records what the upstream posts (the
/// token in the path, the body) and answers 204, so the test forwards each delivery where it wants.
struct Collector {
    url: String,
    got: Arc<Mutex<Vec<(String, bytes::Bytes)>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let route = axum::routing::post(
            move |axum::extract::Path(token): axum::extract::Path<String>, body: bytes::Bytes| async move {
                sink.lock().unwrap().push((token, body));
                http::StatusCode::NO_CONTENT
            },
        );
        let app = axum::Router::new().route("/webhooks/callbot/{token}", route);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { url, got }
    }

    fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

#[tokio::test]
async fn a_session_created_on_a_with_its_deliveries_split_between_a_and_b_has_one_report_on_both() {
    let nats = Nats::start().await;
    let sim = TestSim::start(SimConfig { time_scale: FAST, ..SimConfig::default() }).await;
    let collector = Collector::start().await;
    let mut a = Facade::new(&nats.url(), &sim.url);
    a.arg("--webhook-public-url", &collector.url);
    a.spawn().await;
    let mut b = Facade::new(&nats.url(), &sim.url);
    b.spawn().await;
    wait_until(|| async { !registered_hooks(&sim).await.is_empty() }).await;
    let registered = format!("{}/webhooks/callbot/{}", collector.url, token(SECRET, "default"));
    assert_eq!(registered_hooks(&sim).await, [registered]);

    // 0 answered; 5 no answer twice; 7 busy twice; 8 rejected (one redial).
    let phones = ["0912345670", "0912345675", "0912345677", "0912345678"];
    let request = pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: phones.iter().map(|p| pb::Contact { phone: (*p).into(), ..Default::default() }).collect(),
        retry_count: Some(1),
        retry_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        ..Default::default()
    };
    let session = a.client().await.create_session(request).await.unwrap().into_inner().session.unwrap().id;
    let calls = wait_session_done(&sim, &session).await["calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 6, "{calls:?}");
    // Live states then the record: answered 3 + 1, no answer and busy and rejected 2 + 1.
    let expected: usize = calls.iter().map(|c| if c["outcome"] == "answered" { 4 } else { 3 }).sum();
    wait_until(|| async { collector.len() == expected }).await;
    let deliveries = collector.got.lock().unwrap().clone();
    assert!(deliveries.iter().all(|(t, _)| *t == token(SECRET, "default")), "the token A registered");
    // Every other delivery to B, in the order the provider sent them.
    let http = reqwest::Client::new();
    for (i, (_, body)) in deliveries.iter().enumerate() {
        let to = if i % 2 == 0 { a.webhook() } else { b.webhook() };
        let status = http.post(&to).header("content-type", "application/json").body(body.clone()).send().await;
        assert_eq!(status.unwrap().status(), 204, "delivery {i}");
    }
    wait_until(|| async { a.report(&session).await.finished }).await;
    let on_a = a.report(&session).await;
    assert_eq!(b.report(&session).await, on_a);
    assert_eq!(on_a.contacts_total, 4);
    assert_eq!((on_a.answered, on_a.no_answer, on_a.busy, on_a.rejected, on_a.in_progress), (1, 1, 1, 1, 0));
    for contact in &on_a.contacts {
        let placed = calls.iter().filter(|c| c["phone"] == contact.phone.as_str()).count();
        assert_eq!(contact.attempts as usize, placed, "{}", contact.phone);
        assert!(contact.r#final, "{}", contact.phone);
    }
    // The session's events, every one attributed, in one order on both.
    let request = pb::WatchCallEventsRequest { session_id: session.clone(), from_start: true, ..Default::default() };
    let on_a = read_events(&mut a.watch(request.clone()).await, expected).await;
    let on_b = read_events(&mut b.watch(request).await, expected).await;
    assert_eq!(on_a, on_b);
    assert!(on_a.iter().all(|e| e.session_id == session));
    assert_eq!(on_a.iter().map(|e| &e.id).collect::<HashSet<_>>().len(), expected, "each fact once");
}

#[tokio::test]
async fn a_process_sigkilled_mid_burst_loses_no_delivery_it_acknowledged_and_repeats_none() {
    let (_nats, _sim, mut a, b) = two_facades().await;
    // Four posters, each until its first failure (A gone): what was answered 204, and what was sent.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let sent = Arc::new(Mutex::new(HashSet::new()));
    let posters: Vec<_> = (0..4)
        .map(|p| {
            let (url, acked, sent) = (a.webhook(), acked.clone(), sent.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                for k in 0.. {
                    let call = format!("m-{p}-{k}");
                    sent.lock().unwrap().insert(call.clone());
                    match http.post(&url).json(&live(&call, "ringing", "0912345670")).send().await {
                        Ok(r) if r.status() == 204 => {
                            acked.lock().unwrap().insert(call);
                        }
                        Ok(r) => panic!("{call}: {}", r.status()),
                        Err(_) => return k,
                    }
                }
                unreachable!()
            })
        })
        .collect();
    wait_until(|| async { acked.lock().unwrap().len() >= 100 }).await;
    a.sigkill();
    for poster in posters {
        let posted = tokio::time::timeout(Duration::from_secs(10), poster).await.expect("posters stop").unwrap();
        assert!(posted > 0);
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(acked.len() >= 100 && sent.len() > acked.len(), "{} acked of {}", acked.len(), sent.len());
    // After A's death; every event A stored comes before it.
    assert_eq!(post(&b.webhook(), &live("after", "ringing", "0912345670")).await, 204);
    let mut watch = b.watch(from_start()).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    loop {
        let event = read_events(&mut watch, 1).await.remove(0);
        assert_eq!(event.state(), pb::CallState::Ringing);
        if event.call_id == "after" {
            break;
        }
        assert!(sent.contains(&event.call_id), "{} was never sent", event.call_id);
        *seen.entry(event.call_id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "seen twice: {twice:?}");
    let missing: Vec<_> = acked.iter().filter(|c| !seen.contains_key(*c)).collect();
    assert!(missing.is_empty(), "acknowledged and lost: {missing:?}");
}

/// A `nats-server` with this configuration file (JetStream on, from the harness's flags).
async fn nats_with_config(dir: &Path, conf: &str) -> Nats {
    let path = dir.join("nats.conf");
    std::fs::write(&path, conf).unwrap();
    let mut nats = Nats::new(vec!["-c".into(), path.to_string_lossy().into_owned()]);
    nats.restart().await;
    nats
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test]
async fn an_nkey_seed_file_authenticates_and_another_seed_or_a_missing_file_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let user = KeyPair::new_user();
    let conf = format!("authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n", user.public_key());
    let nats = nats_with_config(dir.path(), &conf).await;
    let seed = user.seed().unwrap();
    let seed_file = write(dir.path(), "user.nk", &format!("{seed}\n"));
    let with = |path: PathBuf| move |s: &mut Settings| s.events.nats_nkey = Some(path);
    assert_eq!(start_result(nats.url(), with(seed_file)).await, Ok(()));

    let other = KeyPair::new_user().seed().unwrap();
    let why = start_result(nats.url(), with(write(dir.path(), "other.nk", &other))).await.unwrap_err();
    assert!(why.contains("cannot connect to NATS") && why.contains("--events-nats-url"), "{why}");
    assert!(!why.contains('\n') && !why.contains(&other) && !why.contains(&seed), "{why}");
    assert!(!why.contains(&other[2..20]), "no part of the seed: {why}");
    let why = start_result(nats.url(), |_| {}).await.unwrap_err();
    assert!(why.contains("cannot connect to NATS"), "the server requires an nkey: {why}");

    // A file that holds no seed: refused, without echoing what it holds.
    let garbage = "SUNOTASEEDBUTSOMETHINGSECRETLOOKING";
    let why = start_result(nats.url(), with(write(dir.path(), "garbage.nk", garbage))).await.unwrap_err();
    assert!(why.contains("NATS") && !why.contains('\n') && !why.contains(garbage), "{why}");

    let missing = dir.path().join("absent.nk");
    let why = start_result(nats.url(), with(missing.clone())).await.unwrap_err();
    assert!(why.contains(&format!("--events-nats-nkey {}: ", missing.display())), "{why}");
    assert!(!why.contains('\n'), "{why}");
}

/// Unpadded base32 (RFC 4648 alphabet), as nats-io/jwt writes a claim's `jti`.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buf, mut bits) = (String::new(), 0u32, 0u32);
    for &byte in data {
        buf = (buf << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
        buf &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A NATS JWT v2 (nats-io/jwt `v2/claims.go`): header `{"typ":"JWT","alg":"ed25519-nkey"}`; claims
/// `jti` (base32 of the SHA-512/256 of the claims without it), `iat`, `iss` (the signer's public
/// key), `name`, `sub`, and `nats` (the typed part, `version: 2`); signed by `issuer` over
/// `base64url(header).base64url(claims)`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, mut nats: Value) -> String {
    let iat = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut claims = json!({"iat": iat, "iss": issuer.public_key(), "name": name, "sub": subject});
    claims["jti"] = json!(base32(&Sha512_256::digest(serde_json::to_vec(&claims).unwrap())));
    nats["version"] = json!(2);
    claims["nats"] = nats;
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let signed =
        format!("{}.{}", b64(&serde_json::to_vec(&header).unwrap()), b64(&serde_json::to_vec(&claims).unwrap()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(&signature))
}

/// An account's `nats` claims (`v2/account_claims.go`): no limit on anything; JetStream (memory,
/// disk, streams, consumers unlimited) when `jetstream`.
fn account_claims(jetstream: bool) -> Value {
    let mut limits = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1});
    if jetstream {
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[key] = json!(-1);
        }
    }
    json!({"type": "account", "limits": limits, "default_permissions": {"pub": {}, "sub": {}}})
}

/// A user's `nats` claims (`v2/user_claims.go`): no permission limits.
fn user_claims() -> Value {
    json!({"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
}

/// A `.creds` file as `nsc generate creds` writes it.
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

#[test]
fn the_jwts_made_here_have_the_v2_layout() {
    assert_eq!(base32(b""), "");
    assert_eq!(base32(b"f"), "MY");
    assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let token = jwt(&account, &user.public_key(), "u", user_claims());
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap();
    let header: Value = serde_json::from_slice(&decode(parts[0])).unwrap();
    assert_eq!(header, json!({"typ": "JWT", "alg": "ed25519-nkey"}));
    let claims: Value = serde_json::from_slice(&decode(parts[1])).unwrap();
    assert_eq!(
        (claims["iss"].as_str(), claims["sub"].as_str()),
        (Some(&*account.public_key()), Some(&*user.public_key()))
    );
    assert_eq!((&claims["nats"]["type"], &claims["nats"]["version"]), (&json!("user"), &json!(2)));
    assert_eq!(claims["jti"].as_str().unwrap().len(), 52, "256 bits in base32");
    let signed = format!("{}.{}", parts[0], parts[1]);
    KeyPair::from_public_key(&account.public_key()).unwrap().verify(signed.as_bytes(), &decode(parts[2])).unwrap();
}

#[tokio::test]
async fn a_creds_file_works_on_an_operator_mode_server_and_a_user_of_another_account_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (operator, system, account) = (KeyPair::new_operator(), KeyPair::new_account(), KeyPair::new_account());
    let op = jwt(
        &operator,
        &operator.public_key(),
        "callbot-operator",
        json!({"type": "operator", "system_account": system.public_key()}),
    );
    let system_jwt = jwt(&operator, &system.public_key(), "SYS", account_claims(false));
    let account_jwt = jwt(&operator, &account.public_key(), "callbot", account_claims(true));
    let op_file = write(dir.path(), "operator.jwt", &op);
    let conf = format!(
        "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{system_jwt}\"\n  {}: \"{account_jwt}\"\n}}\n",
        op_file.display(),
        system.public_key(),
        system.public_key(),
        account.public_key(),
    );
    let nats = nats_with_config(dir.path(), &conf).await;

    let user = KeyPair::new_user();
    let user_jwt = jwt(&account, &user.public_key(), "facade", user_claims());
    let good = write(dir.path(), "facade.creds", &creds(&user_jwt, &user.seed().unwrap()));
    let with = |path: PathBuf| move |s: &mut Settings| s.events.nats_creds = Some(path);
    assert_eq!(start_result(nats.url(), with(good.clone())).await, Ok(()));

    // A user whose JWT another account signed (one the server does not know).
    let (stranger, intruder) = (KeyPair::new_account(), KeyPair::new_user());
    let intruder_jwt = jwt(&stranger, &intruder.public_key(), "intruder", user_claims());
    let intruder_seed = intruder.seed().unwrap();
    let bad = write(dir.path(), "intruder.creds", &creds(&intruder_jwt, &intruder_seed));
    let why = start_result(nats.url(), with(bad)).await.unwrap_err();
    assert!(why.contains("cannot connect to NATS"), "{why}");
    assert!(!why.contains('\n') && !why.contains(&intruder_seed), "{why}");
    let why = start_result(nats.url(), |_| {}).await.unwrap_err();
    assert!(why.contains("cannot connect to NATS"), "operator mode requires a user JWT: {why}");
    let missing = dir.path().join("absent.creds");
    let why = start_result(nats.url(), with(missing.clone())).await.unwrap_err();
    assert!(why.contains(&format!("--events-nats-creds {}: ", missing.display())), "{why}");

    // The binary with the flag: ready, and a delivery goes through JetStream in that account.
    let sim = TestSim::start(SimConfig::default()).await;
    let mut facade = Facade::new(&nats.url(), &sim.url);
    facade.arg("--events-nats-creds", &good.to_string_lossy());
    facade.spawn().await;
    assert_eq!(post(&facade.webhook(), &live("j-1", "ringing", "0912345670")).await, 204);
    let got = read_events(&mut facade.watch(from_start()).await, 1).await;
    assert_eq!(ids(&got), ["j-1/ringing"]);
    // The stream is that account's: its user sees it, with the one event.
    let client = async_nats::ConnectOptions::with_credentials_file(&good).await.unwrap().connect(nats.url()).await;
    let js = async_nats::jetstream::new(client.unwrap());
    let info = js.get_stream("CALLBOT_EVENTS").await.unwrap().get_info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    // Bounded in bytes as in messages (API.md §12): --events-max × 2 KiB.
    assert_eq!(info.config.max_bytes, 100_000 * 2048);
    assert!(!facade.log().contains(&user.seed().unwrap()[2..20]), "the seed is never logged");
}

/// The calling policy across processes (docs/policy.md): one JetStream, one policy file (a
/// ConfigMap both mount), 50 CreateSessions racing for one number through two processes.
#[tokio::test]
async fn two_processes_admit_exactly_one_of_fifty_racers_for_one_number_and_share_do_not_call() {
    let nats = Nats::start().await;
    let sim = TestSim::start(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dnc = write(dir.path(), "dnc.txt", "# registry\n");
    let policy = format!(
        "policies:\n  - tenant: default\n    time_zone: Asia/Ho_Chi_Minh\n    do_not_call_files: [{}]\n    \
         advertising: {{preset: vn-decree-91}}\n",
        dnc.display()
    );
    let policy = write(dir.path(), "policy.yaml", &policy);
    let mut facades = Vec::new();
    for _ in 0..2 {
        let mut f = Facade::new(&nats.url(), &sim.url);
        f.arg("--calling-policy", policy.to_str().unwrap())
            .arg("--policy-clock-start", "2027-01-04T10:00:00+07:00")
            .arg("--secrets-poll-interval", "50ms");
        f.spawn().await;
        facades.push(f);
    }
    let (a, b) = (&facades[0], &facades[1]);
    let request = |phone: &str, key: String| pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: vec![pb::Contact { phone: phone.into(), ..Default::default() }],
        external_session_id: key,
        purpose: pb::CallPurpose::Advertising as i32,
        ..Default::default()
    };
    let (ca, cb) = (a.client().await, b.client().await);
    let racers = (0..50).map(|i| {
        let mut client = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        let req = request("0912345678", format!("race-{i}"));
        async move { client.create_session(req).await }
    });
    let answers = futures::future::join_all(racers).await;
    assert_eq!(answers.iter().filter(|r| r.is_ok()).count(), 1, "exactly one racer admitted");
    for err in answers.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    }
    assert_eq!(sim.sessions().await.len(), 1);

    // AddDoNotCall on A, then the file changed under both: B refuses both numbers.
    ca.clone()
        .add_do_not_call(pb::AddDoNotCallRequest { phones: vec!["0912000001".into()], ..Default::default() })
        .await
        .unwrap();
    std::fs::write(&dnc, "0912000002\n").unwrap();
    let started = std::time::Instant::now();
    let mut cb = cb.clone();
    let mut req = request("0912000001", "b-0".into());
    req.contacts.push(pb::Contact { phone: "0912000002".into(), ..Default::default() });
    req.contacts.push(pb::Contact { phone: "0912000003".into(), ..Default::default() });
    loop {
        req.external_session_id = format!("b-{}", started.elapsed().as_micros());
        let mut check = req.clone();
        check.validate_only = true;
        let s = cb.create_session(check).await.unwrap().into_inner().session.unwrap();
        let refused: Vec<&str> = s.rejected_contacts.iter().map(|r| r.reason.as_str()).collect();
        if refused == ["DO_NOT_CALL", "DO_NOT_CALL"] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "B still calls: {refused:?}\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
