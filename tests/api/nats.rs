//! The NATS JetStream event store against a real `nats-server` (never mocked): two facades on one
//! server, cursors across replicas and restarts, retention, the server down and back.
//!
//! The binary: `NATS_SERVER_BIN`, else `nats-server` on PATH, else `scripts/install-nats.sh` is
//! run (once per test binary) and its path taken; if that fails, these tests fail saying so.

use std::{
    collections::HashSet,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use super::events::{
    create, free_addr, read_events, spawn_with_receiver, wait_session_done, wait_until, wait_until_within,
};
use super::*;

fn nats_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
            return Ok(PathBuf::from(bin));
        }
        if let Some(path) = std::env::var_os("PATH") {
            if let Some(bin) = std::env::split_paths(&path).map(|d| d.join("nats-server")).find(|p| p.is_file()) {
                return Ok(bin);
            }
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install-nats.sh");
        let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().last().map(str::trim) {
            Some(line) if out.status.success() && !line.is_empty() => Ok(PathBuf::from(line)),
            _ => Err(format!("{} exited {}", script.display(), out.status)),
        }
    });
    match found {
        Ok(bin) => bin.clone(),
        Err(why) => panic!(
            "no nats-server for the JetStream tests: set NATS_SERVER_BIN or put nats-server on PATH \
             (run `bash scripts/install-nats.sh`; running it here failed: {why})"
        ),
    }
}

/// A `nats-server -js` on free loopback ports with its own store directory; killed when dropped.
pub struct Nats {
    child: Option<Reaped>,
    port: u16,
    monitor: u16,
    dir: tempfile::TempDir,
    /// Extra arguments (a cluster node's name and routes).
    extra: Vec<String>,
}

impl Nats {
    /// Starts a server and waits until JetStream is up.
    pub async fn start() -> Nats {
        let mut nats = Nats::new(Vec::new());
        nats.restart().await;
        nats
    }

    pub(super) fn new(extra: Vec<String>) -> Nats {
        Nats {
            child: None,
            port: free_addr().port(),
            monitor: free_addr().port(),
            dir: tempfile::tempdir().unwrap(),
            extra,
        }
    }

    /// Three JetStream nodes clustered on loopback, all started, each fsyncing before it
    /// acknowledges (`sync_interval: always`: the setting under which "204 = kept" is claimed).
    pub async fn cluster() -> Vec<Nats> {
        let routes: Vec<u16> = (0..3).map(|_| free_addr().port()).collect();
        let mut nodes: Vec<Nats> = (0..3)
            .map(|i| {
                let others: Vec<String> =
                    (0..3).filter(|j| *j != i).map(|j| format!("nats://127.0.0.1:{}", routes[j])).collect();
                Nats::new(vec![
                    "-n".into(),
                    format!("n{i}"),
                    "--cluster_name".into(),
                    "callbot".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".into(),
                    others.join(","),
                ])
            })
            .collect();
        for node in &mut nodes {
            let conf = node.dir.path().join("nats.conf");
            std::fs::write(&conf, "jetstream { sync_interval: always }\n").unwrap();
            node.extra.extend(["-c".to_owned(), conf.to_string_lossy().into_owned()]);
            node.spawn();
        }
        for node in &nodes {
            node.wait_ready().await;
        }
        nodes
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its store directory stays).
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// (Re)starts it on the same port with the same store directory.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    fn spawn(&mut self) {
        self.stop();
        let child = Command::new(nats_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor.to_string(), "-sd"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(Reaped::new(child));
    }

    async fn wait_ready(&self) {
        let health = format!("http://127.0.0.1:{}/healthz?js-enabled-only=true", self.monitor);
        wait_until(|| async { reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()) }).await;
    }
}

/// Watches from the start until every call of `acknowledged` came, as a watcher would: an
/// UNAVAILABLE (the store settling after a failure) is retried after the last cursor (20 s at most).
async fn assert_all_stored(app: &TestApp, acknowledged: &HashSet<String>) {
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = HashSet::new();
    let mut last: Option<String> = None;
    while !acknowledged.is_subset(&seen) {
        assert!(tokio::time::Instant::now() < until, "missing {:?}", acknowledged.difference(&seen));
        let request = match &last {
            Some(cursor) => pb::WatchCallEventsRequest { after_cursor: cursor.clone(), ..Default::default() },
            None => from_start(),
        };
        let mut stream = match app.client.clone().watch_call_events(request).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while !acknowledged.is_subset(&seen) {
            match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                Ok(Ok(Some(message))) => {
                    let event = message.event.unwrap();
                    last = Some(event.cursor);
                    seen.insert(event.call_id);
                }
                Ok(Err(e)) => {
                    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                    break;
                }
                _ => panic!("missing {:?}", acknowledged.difference(&seen)),
            }
        }
    }
}

/// What a follower saw: the call ids, and how many came twice.
type Followed = std::sync::Arc<std::sync::Mutex<(HashSet<String>, usize)>>;

/// A watcher that follows the tenant from the start for as long as it runs, resuming after its last
/// cursor whenever its stream ends with UNAVAILABLE (as a client would): the call ids it saw, and
/// how many it saw twice.
fn follower(app: &TestApp) -> (Followed, tokio::task::JoinHandle<()>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new((HashSet::new(), 0usize)));
    let (client, out) = (app.client.clone(), seen.clone());
    let task = tokio::spawn(async move {
        let mut last: Option<String> = None;
        loop {
            let request = match &last {
                Some(cursor) => pb::WatchCallEventsRequest { after_cursor: cursor.clone(), ..Default::default() },
                None => from_start(),
            };
            let mut stream = match client.clone().watch_call_events(request).await {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            while let Ok(Some(message)) = stream.message().await {
                let event = message.event.unwrap();
                last = Some(event.cursor);
                let mut g = out.lock().unwrap();
                if !g.0.insert(event.call_id) {
                    g.1 += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (seen, task)
}

pub(super) fn live(call: &str, state: &str, to: &str) -> Value {
    json!({"call_uuid": call, "state": state, "direction": "outbound", "from_number": "1900",
           "to_number": to, "hotline": "1900", "created_time": 1_764_590_000, "date_time": "2026-12-01 10:00:00"})
}

pub(super) async fn post(url: &str, body: &Value) -> u16 {
    reqwest::Client::new().post(url).json(body).send().await.unwrap().status().as_u16()
}

/// A facade (receiver on, own simulator) on this server's stream.
async fn replica(nats: &Nats, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let url = nats.url();
    spawn_with_receiver(move |s| {
        s.events.nats_url = Some(url);
        adjust(s);
    })
    .await
    .0
}

pub(super) fn from_start() -> pb::WatchCallEventsRequest {
    pb::WatchCallEventsRequest { from_start: true, ..Default::default() }
}

/// The event store's health status (`callbot.v1.EventStore`).
async fn store_health(app: &TestApp) -> ServingStatus {
    let mut health = HealthClient::new(app.channel().await);
    let request = HealthCheckRequest { service: callbot_facade::app::EVENT_STORE_SERVICE_NAME.into() };
    health.check(request).await.expect("health").into_inner().status()
}

async fn metrics(app: &TestApp) -> String {
    reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_webhook_to_one_replica_reaches_a_watcher_on_the_other_and_a_repeat_to_both_is_stored_once() {
    let nats = Nats::start().await;
    let (a, b) = (replica(&nats, |_| {}).await, replica(&nats, |_| {}).await);
    let mut watch_b = b.client.clone().watch_call_events(pb::WatchCallEventsRequest::default()).await.unwrap();
    let watch_b = watch_b.get_mut();
    let ringing = live("n-1", "ringing", "0912345670");
    assert_eq!(post(a.webhook.as_ref().unwrap(), &ringing).await, 204);
    assert_eq!(post(b.webhook.as_ref().unwrap(), &ringing).await, 204, "the repeat, to the other replica");
    assert_eq!(post(b.webhook.as_ref().unwrap(), &live("n-1", "answered", "0912345670")).await, 204);
    let got = read_events(watch_b, 2).await;
    assert_eq!(got.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["n-1/ringing", "n-1/answered"]);
    assert!(tokio::time::timeout(Duration::from_millis(300), watch_b.message()).await.is_err(), "stored once");
    assert!(metrics(&b).await.contains(r#"callbot_webhook_deliveries_total{kind="live",answer="duplicate"} 1"#));
    assert!(metrics(&a).await.contains("callbot_event_store_up 1"));
    // The cursor of an event is the same on both replicas.
    let mut watch_a = a.client.clone().watch_call_events(from_start()).await.unwrap().into_inner();
    let on_a = read_events(&mut watch_a, 2).await;
    assert_eq!(on_a.iter().map(|e| &e.cursor).collect::<Vec<_>>(), got.iter().map(|e| &e.cursor).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_watcher_resumes_by_cursor_on_either_replica_with_no_gap_and_no_repeat() {
    let nats = Nats::start().await;
    let (a, b) = (replica(&nats, |_| {}).await, replica(&nats, |_| {}).await);
    let url = a.webhook.clone().unwrap();
    for i in 0..3 {
        assert_eq!(post(&url, &live(&format!("r-{i}"), "ringing", "0912345670")).await, 204);
    }
    let mut first = b.client.clone().watch_call_events(from_start()).await.unwrap().into_inner();
    let seen = read_events(&mut first, 3).await;
    drop(first);
    for i in 3..6 {
        assert_eq!(post(&url, &live(&format!("r-{i}"), "ringing", "0912345670")).await, 204);
    }
    let expected: Vec<String> = (2..6).map(|i| format!("r-{i}")).collect();
    for app in [&b, &a] {
        let resume = pb::WatchCallEventsRequest { after_cursor: seen[1].cursor.clone(), ..Default::default() };
        let mut again = app.client.clone().watch_call_events(resume).await.unwrap().into_inner();
        let rest: Vec<String> = read_events(&mut again, 4).await.into_iter().map(|e| e.call_id).collect();
        assert_eq!(rest, expected);
        assert!(tokio::time::timeout(Duration::from_millis(300), again.message()).await.is_err(), "no repeat");
    }
    // A live watcher on B sees what A stores next, and a restarted facade keeps the cursors.
    let mut live_b = b.client.clone().watch_call_events(pb::WatchCallEventsRequest::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post(&url, &live("r-6", "ringing", "0912345670")).await, 204);
    let next = read_events(live_b.get_mut(), 1).await.remove(0);
    assert_eq!(next.call_id, "r-6");
    drop((a, b));
    let c = replica(&nats, |_| {}).await;
    let resume = pb::WatchCallEventsRequest { after_cursor: seen[2].cursor.clone(), ..Default::default() };
    let mut s = c.client.clone().watch_call_events(resume).await.unwrap().into_inner();
    let got: Vec<String> = read_events(&mut s, 4).await.into_iter().map(|e| e.call_id).collect();
    assert_eq!(got, ["r-3", "r-4", "r-5", "r-6"]);
}

#[tokio::test]
async fn the_session_report_is_the_same_on_both_replicas() {
    let nats = Nats::start().await;
    let (a, b) = (replica(&nats, |_| {}).await, replica(&nats, |_| {}).await);
    let phones = ["0912345670", "0912345675", "0912345677", "0912345678"];
    let session = create(&a, &phones, 1).await;
    wait_session_done(&a.sim, &session).await;
    let report = |app: &TestApp| {
        let mut client = app.client.clone();
        let session = session.clone();
        async move {
            client.get_session_report(pb::GetSessionReportRequest { session_id: session }).await.unwrap().into_inner()
        }
    };
    wait_until(|| async { report(&a).await.finished }).await;
    let on_a = report(&a).await;
    assert_eq!(on_a.contacts_total, phones.len() as i64);
    wait_until(|| async { report(&b).await == on_a }).await;
    // The session's events, in one order, on both.
    let request = pb::WatchCallEventsRequest { session_id: session.clone(), from_start: true, ..Default::default() };
    let total: usize = on_a.contacts.iter().map(|c| c.attempts as usize).sum::<usize>();
    assert!(total >= phones.len());
    let mut sa = a.client.clone().watch_call_events(request.clone()).await.unwrap().into_inner();
    let mut sb = b.client.clone().watch_call_events(request).await.unwrap().into_inner();
    let (ea, eb) = (read_events(&mut sa, total).await, read_events(&mut sb, total).await);
    assert_eq!(ea, eb);
}

#[tokio::test]
async fn list_sessions_is_the_same_on_both_replicas_newest_first_with_the_reports_counts() {
    let nats = Nats::start().await;
    let (a, b) = (replica(&nats, |_| {}).await, replica(&nats, |_| {}).await);
    let first = create(&a, &["0912345670", "0912345677"], 0).await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let second = create(&b, &["0912345678"], 0).await;
    wait_session_done(&a.sim, &first).await;
    wait_session_done(&b.sim, &second).await;
    let list = |app: &TestApp, page_size: i32| {
        let mut client = app.client.clone();
        async move {
            client
                .list_sessions(pb::ListSessionsRequest { page_size, ..Default::default() })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let ids =
        |r: &pb::ListSessionsResponse| r.sessions.iter().map(|s| s.session.clone().unwrap().id).collect::<Vec<_>>();
    wait_until(|| async { ids(&list(&a, 0).await) == [second.clone(), first.clone()] }).await;
    wait_until(|| async {
        list(&b, 0).await.sessions.iter().all(|s| s.finished) && list(&a, 0).await.sessions.iter().all(|s| s.finished)
    })
    .await;
    let (on_a, on_b) = (list(&a, 0).await, list(&b, 0).await);
    assert_eq!(on_a, on_b, "every replica lists the stream's records");
    let oldest = &on_a.sessions[1];
    assert_eq!((oldest.contacts_total, oldest.answered, oldest.busy), (2, 1, 1));
    // Paged: one, then the other.
    let page = list(&b, 1).await;
    assert_eq!(ids(&page), [second]);
    let next = b
        .client
        .clone()
        .list_sessions(pb::ListSessionsRequest { page_size: 1, page_token: page.next_page_token, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&next), [first]);
    assert!(next.next_page_token.is_empty());
}

#[tokio::test]
async fn a_cursor_below_the_streams_first_sequence_is_out_of_range_with_the_earliest() {
    let nats = Nats::start().await;
    let a = replica(&nats, |s| s.events.max = 5).await;
    let url = a.webhook.clone().unwrap();
    assert_eq!(post(&url, &live("e-0", "ringing", "0912345670")).await, 204);
    let mut s = a.client.clone().watch_call_events(from_start()).await.unwrap().into_inner();
    let first = read_events(&mut s, 1).await.remove(0);
    drop(s);
    for i in 1..10 {
        assert_eq!(post(&url, &live(&format!("e-{i}"), "ringing", "0912345670")).await, 204);
    }
    let request = pb::WatchCallEventsRequest { after_cursor: first.cursor.clone(), ..Default::default() };
    let err = a.client.clone().watch_call_events(request).await.unwrap_err();
    assert_status(&err, Code::OutOfRange, "CURSOR_EXPIRED");
    let earliest = meta(&err, "earliest_cursor").expect("earliest_cursor");
    let request = pb::WatchCallEventsRequest { after_cursor: earliest, ..Default::default() };
    let mut s = a.client.clone().watch_call_events(request).await.unwrap().into_inner();
    let got: Vec<String> = read_events(&mut s, 5).await.into_iter().map(|e| e.call_id).collect();
    assert_eq!(got, ["e-5", "e-6", "e-7", "e-8", "e-9"], "the earliest retained comes first");
    // A cursor of another stream (another server's).
    let other_nats = Nats::start().await;
    let other = replica(&other_nats, |_| {}).await;
    let request = pb::WatchCallEventsRequest { after_cursor: first.cursor, ..Default::default() };
    let err = other.client.clone().watch_call_events(request).await.unwrap_err();
    assert_status(&err, Code::OutOfRange, "CURSOR_EXPIRED");
}

#[tokio::test]
async fn with_nats_down_mid_burst_deliveries_get_503_and_reads_unavailable_and_after_its_restart_nothing_acknowledged_is_lost()
 {
    let mut nats = Nats::start().await;
    let a = replica(&nats, |_| {}).await;
    let url = a.webhook.clone().unwrap();
    let mut acknowledged = HashSet::new();
    for i in 0..5 {
        let call = format!("d-{i}");
        assert_eq!(post(&url, &live(&call, "ringing", "0912345670")).await, 204);
        acknowledged.insert(call);
    }
    // A burst runs through the outage: every delivery it sees acknowledged must be kept.
    let burst = {
        let url = url.clone();
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = running.clone();
        let task = tokio::spawn(async move {
            let (mut acked, mut refused, mut k) = (HashSet::new(), 0usize, 0usize);
            while flag.load(std::sync::atomic::Ordering::SeqCst) {
                let call = format!("m-{k}");
                k += 1;
                match post(&url, &live(&call, "ringing", "0912345670")).await {
                    204 => {
                        acked.insert(call);
                    }
                    _ => refused += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acked, refused)
        });
        (running, task)
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    nats.stop();
    let mut i = 5;
    wait_until(|| {
        i += 1;
        let call = format!("d-{i}");
        let url = url.clone();
        async move { post(&url, &live(&call, "ringing", "0912345670")).await == 503 }
    })
    .await;
    assert_eq!(post(&url, &live("d-down", "ringing", "0912345670")).await, 503);
    let err = a.client.clone().watch_call_events(from_start()).await.unwrap_err();
    assert_status(&err, Code::Unavailable, "EVENT_STORE_UNAVAILABLE");
    assert!(has_retry_info(&err));
    let err = a
        .client
        .clone()
        .get_session_report(pb::GetSessionReportRequest { session_id: "s-1".into() })
        .await
        .unwrap_err();
    assert_status(&err, Code::Unavailable, "EVENT_STORE_UNAVAILABLE");
    let session = create(&a, &["0912345670"], 0).await;
    assert!(!session.is_empty(), "CreateSession works with the event store down");
    wait_until(|| async { metrics(&a).await.contains("callbot_event_store_up 0") }).await;
    assert_eq!(store_health(&a).await, ServingStatus::NotServing);

    nats.restart().await;
    let mut j = 100;
    wait_until(|| {
        j += 1;
        let call = format!("d-{j}");
        let url = url.clone();
        async move { post(&url, &live(&call, "ringing", "0912345670")).await == 204 }
    })
    .await;
    acknowledged.insert(format!("d-{j}"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    burst.0.store(false, std::sync::atomic::Ordering::SeqCst);
    let (acked, refused) = burst.1.await.unwrap();
    assert!(refused > 0, "the burst met the outage");
    assert!(acked.iter().any(|c| c.starts_with("m-")) && acked.len() > 10, "{}", acked.len());
    acknowledged.extend(acked);
    wait_until(|| async { metrics(&a).await.contains("callbot_event_store_up 1") }).await;
    wait_until(|| async { store_health(&a).await == ServingStatus::Serving }).await;
    // Every acknowledged delivery is there (some answered 503 may be too: their retry is a repeat).
    assert_all_stored(&a, &acknowledged).await;
}

#[tokio::test]
async fn the_facade_refuses_to_start_on_an_unreachable_server_or_a_stream_configured_otherwise() {
    let build = |nats_url: String, adjust: fn(&mut Settings)| async move {
        let mut settings = Settings::for_tests();
        settings.events.nats_url = Some(nats_url);
        adjust(&mut settings);
        match Application::build(settings).await {
            Ok(_) => panic!("started"),
            Err(e) => e.to_string(),
        }
    };
    let started = std::time::Instant::now();
    let why = build(format!("nats://user:secret@127.0.0.1:{}", free_addr().port()), |_| {}).await;
    assert!(why.contains("cannot connect to NATS at nats://***@127.0.0.1:"), "{why}");
    assert!(!why.contains("secret") && !why.contains('\n'), "{why}");
    assert!(started.elapsed() < Duration::from_secs(7), "bounded wait");

    let nats = Nats::start().await;
    let _first = replica(&nats, |_| {}).await;
    let why = build(nats.url(), |s| s.events.retention = Duration::from_secs(3600)).await;
    assert!(why.contains("stream CALLBOT_EVENTS exists with") && why.contains("max_age"), "{why}");
    assert!(!why.contains('\n'), "{why}");
    let why = build(nats.url(), |s| s.events.replicas = 3).await;
    assert!(why.contains("exists with 1 replica(s); --events-replicas asks for at least 3"), "{why}");
}

#[tokio::test]
async fn on_a_three_node_cluster_with_replicas_3_a_node_killed_mid_burst_loses_nothing_acknowledged() {
    let mut nodes = Nats::cluster().await;
    let urls: Vec<String> = nodes.iter().map(Nats::url).collect();
    // The stream, R3, made beforehand once the cluster can (the facade's own start does not wait
    // for a cluster to elect its leaders); the facade checks it has at least --events-replicas.
    let client = async_nats::connect(urls.clone()).await.expect("connect to the cluster");
    let js = async_nats::jetstream::new(client);
    let day = Duration::from_secs(24 * 3600);
    let config = async_nats::jetstream::stream::Config {
        name: "CALLBOT_EVENTS".into(),
        subjects: vec!["callbot.events.>".into(), "callbot.sessions.>".into()],
        max_age: day,
        duplicate_window: day,
        max_messages: 100_000,
        num_replicas: 3,
        ..Default::default()
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match js.create_stream(config.clone()).await {
            Ok(stream) => break stream,
            Err(e) => assert!(tokio::time::Instant::now() < until, "no R3 stream within 30 s: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let joined = urls.join(",");
    let a = spawn_with_receiver(move |s| {
        s.events.nats_url = Some(joined);
        s.events.replicas = 3;
    })
    .await
    .0;
    let bound = stream.info().await.unwrap().config.max_bytes;
    assert_eq!(bound, 100_000 * 2048, "a stream made without a byte bound is bounded at start");
    let url = a.webhook.clone().unwrap();
    // A watcher connected through the kill: it must go on (resuming by cursor), missing and
    // repeating nothing.
    let (followed, follow_task) = follower(&a);
    let mut acknowledged = HashSet::new();
    for i in 0..120 {
        if i == 40 {
            let leader =
                stream.info().await.unwrap().cluster.as_ref().and_then(|c| c.leader.clone()).expect("a leader");
            let n: usize = leader.trim_start_matches('n').parse().unwrap();
            nodes[n].stop();
        }
        let call = format!("b-{i}");
        if post(&url, &live(&call, "ringing", "0912345670")).await == 204 {
            acknowledged.insert(call);
        }
    }
    let mut j = 1000;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        j += 1;
        let call = format!("b-{j}");
        if post(&url, &live(&call, "ringing", "0912345670")).await == 204 {
            acknowledged.insert(call);
            break;
        }
        assert!(tokio::time::Instant::now() < until, "the facade did not recover on the two nodes left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(acknowledged.len() > 40, "{}", acknowledged.len());
    assert_all_stored(&a, &acknowledged).await;
    // The watcher's ordered consumer is one node's (R1): when that node was the one killed, the
    // client recreates it after two missed idle heartbeats (async-nats: 15 s each), then the
    // watcher goes on from its cursor. 10 s was too short once in the whole suite.
    let caught_up = tokio::time::Instant::now();
    wait_until_within(Duration::from_secs(45), || async { acknowledged.is_subset(&followed.lock().unwrap().0) }).await;
    eprintln!("the watcher caught up {:?} after every delivery was stored", caught_up.elapsed());
    assert_eq!(followed.lock().unwrap().1, 0, "the watcher saw no event twice");
    follow_task.abort();
}

/// What `Application::build` says for these settings on `nats` (`Ok` = it started).
pub(super) async fn start_result(nats_url: String, adjust: impl FnOnce(&mut Settings)) -> Result<(), String> {
    let mut settings = Settings::for_tests();
    settings.events.nats_url = Some(nats_url);
    adjust(&mut settings);
    Application::build(settings).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn nats_credentials_and_tls_are_used_and_wrong_ones_refuse_the_start() {
    // User and password.
    let mut nats = Nats::new(vec!["--user".into(), "callbot".into(), "--pass".into(), "s3cret-pass".into()]);
    nats.restart().await;
    let right = |s: &mut Settings| {
        s.events.nats_user = Some("callbot".into());
        s.events.nats_password = Some(ApiKey::new("s3cret-pass"));
    };
    assert_eq!(start_result(nats.url(), right).await, Ok(()));
    let why = start_result(nats.url(), |s| {
        s.events.nats_user = Some("callbot".into());
        s.events.nats_password = Some(ApiKey::new("wrong-pass"));
    })
    .await
    .unwrap_err();
    assert!(why.contains("cannot connect to NATS") && !why.contains("wrong-pass"), "{why}");
    assert!(start_result(nats.url(), |_| {}).await.is_err(), "no credentials");
    drop(nats);

    // TLS: the servers' certificate verified against --events-nats-ca.
    let pki = super::tls::Pki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let mut nats = Nats::new(vec![
        "--tls".into(),
        "--tlscert".into(),
        cert.to_string_lossy().into_owned(),
        "--tlskey".into(),
        key.to_string_lossy().into_owned(),
    ]);
    nats.restart().await;
    let ca = pki.path("ca.pem");
    assert_eq!(start_result(nats.url(), |s| s.events.nats_ca = Some(ca.clone())).await, Ok(()));
    let why = start_result(nats.url(), |_| {}).await.unwrap_err();
    assert!(why.contains("NATS"), "without the CA the server's certificate is not trusted: {why}");
    let why = start_result(nats.url(), |s| s.events.nats_ca = Some("/nonexistent/ca.pem".into())).await.unwrap_err();
    assert!(why.contains("--events-nats-ca /nonexistent/ca.pem"), "{why}");
}

fn record_of(call: &str, session: &str, to: &str, hangup_cause: &str) -> Value {
    json!({"transaction_id": call, "autocall_id": session, "direction": "outbound", "destination_number": to,
        "disposition": "NO ANSWER", "hangup_cause": hangup_cause, "bill_sec": "0", "duration": 30,
        "last_updated_date": 1_764_590_100_000u64, "recording_file": ""})
}

/// Posts `n` end-of-call records of `session` (calls `<prefix>-<i>`), `at_once` at a time, all 204.
async fn post_records(url: &str, prefix: &str, session: &str, n: usize, at_once: usize, hangup_cause: &str) {
    let http = reqwest::Client::new();
    let posts = (0..n).map(|i| {
        let (http, body) = (http.clone(), record_of(&format!("{prefix}-{i}"), session, "0912345675", hangup_cause));
        async move { http.post(url).json(&body).send().await.unwrap().status().as_u16() }
    });
    let answers: Vec<u16> = futures::stream::iter(posts).buffer_unordered(at_once).collect().await;
    assert!(answers.iter().all(|a| *a == 204), "{answers:?}");
}

#[tokio::test]
async fn a_session_watcher_goes_on_while_other_sessions_turn_the_stream_over() {
    let nats = Nats::start().await;
    let a = replica(&nats, |s| s.events.max = 100).await;
    let url = a.webhook.clone().unwrap();
    let request = pb::WatchCallEventsRequest { session_id: "quiet".into(), ..Default::default() };
    let mut quiet = a.client.clone().watch_call_events(request).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(100)).await;
    post_records(&url, "q-1", "quiet", 1, 1, "NORMAL_CLEARING").await;
    assert_eq!(read_events(&mut quiet, 1).await[0].call_id, "q-1-0");
    // 300 events of another session, one at a time (so the facade's own index reads each before
    // it leaves): the stream (100 at most) turns over three times, and nothing of "quiet" leaves
    // it unread, so no CURSOR_EXPIRED. (A sequence jump alone said otherwise.)
    post_records(&url, "busy", "busy", 300, 1, "NORMAL_CLEARING").await;
    post_records(&url, "q-2", "quiet", 1, 1, "NORMAL_CLEARING").await;
    let next = tokio::time::timeout(Duration::from_secs(5), quiet.message()).await.expect("within 5 s");
    assert_eq!(next.expect("no CURSOR_EXPIRED").expect("open").event.unwrap().call_id, "q-2-0");
}

#[tokio::test]
async fn a_watcher_too_slow_for_the_stream_ends_with_cursor_expired_mid_stream_and_resumes_from_the_earliest() {
    let nats = Nats::start().await;
    let a = replica(&nats, |s| s.events.max = 20).await;
    let url = a.webhook.clone().unwrap();
    // Small HTTP/2 windows, and events with the longest hangup cause a delivery may carry (64
    // characters): what the facade and this client can hold unread is a few hundred events, so
    // most of the 1,500 below leave the stream before it reads them.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", a.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = CallBotServiceClient::new(channel);
    let request = pb::WatchCallEventsRequest { session_id: "slow".into(), ..Default::default() };
    let mut slow = client.watch_call_events(request).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cause = "X".repeat(64);
    post_records(&url, "s", "slow", 1, 1, &cause).await;
    let first = read_events(&mut slow, 1).await.remove(0);
    assert_eq!(first.call_id, "s-0");
    post_records(&url, "t", "slow", 1500, 16, &cause).await;
    // It reads on: what was held comes in stream order, then the gap is an error, never skipped.
    let mut got = vec![first];
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(5), slow.message()).await.expect("within 5 s") {
            Ok(Some(m)) => got.push(m.event.unwrap()),
            Ok(None) => panic!("the stream ended without an error after {} events", got.len()),
            Err(e) => break e,
        }
    };
    assert!(got.len() < 1501, "some events left the stream unread");
    assert_status(&err, Code::OutOfRange, "CURSOR_EXPIRED");
    assert_eq!(meta(&err, "last_cursor").as_deref(), Some(got.last().unwrap().cursor.as_str()));
    let earliest = meta(&err, "earliest_cursor").expect("earliest_cursor");
    // From the earliest cursor: the 20 the stream still holds, the last ones posted.
    let request =
        pb::WatchCallEventsRequest { session_id: "slow".into(), after_cursor: earliest, ..Default::default() };
    let mut again = a.client.clone().watch_call_events(request).await.unwrap().into_inner();
    let rest = read_events(&mut again, 20).await;
    let ids: HashSet<String> = rest.iter().map(|e| e.call_id.clone()).collect();
    assert_eq!(ids.len(), 20);
    let sent: HashSet<String> = (0..1500).map(|i| format!("t-{i}")).collect();
    assert!(ids.is_subset(&sent), "{ids:?}");
}

#[tokio::test]
async fn a_nats_token_and_a_client_certificate_are_used_and_wrong_ones_refuse_the_start() {
    // A token.
    let mut nats = Nats::new(vec!["--auth".into(), "s3cret-token-1".into()]);
    nats.restart().await;
    assert_eq!(start_result(nats.url(), |s| s.events.nats_token = Some(ApiKey::new("s3cret-token-1"))).await, Ok(()));
    let why = start_result(nats.url(), |s| s.events.nats_token = Some(ApiKey::new("wrong-token-2"))).await.unwrap_err();
    assert!(why.contains("cannot connect to NATS") && !why.contains("wrong-token-2"), "{why}");
    assert!(start_result(nats.url(), |_| {}).await.is_err(), "no token");
    drop(nats);

    // Mutual TLS: the server asks for a client certificate of its CA.
    let pki = super::tls::Pki::new();
    let (cert, key) = pki.ca.leaf(&["callbot-facade"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(pki.path("client.pem"), cert).unwrap();
    std::fs::write(pki.path("client.key"), key).unwrap();
    let rogue = super::tls::Ca::new("another CA");
    let (rogue_cert, rogue_key) = rogue.leaf(&["callbot-facade"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(pki.path("rogue.pem"), rogue_cert).unwrap();
    std::fs::write(pki.path("rogue.key"), rogue_key).unwrap();
    let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let mut nats = Nats::new(vec![
        "--tlsverify".into(),
        "--tlscert".into(),
        path("server.pem"),
        "--tlskey".into(),
        path("server.key"),
        "--tlscacert".into(),
        path("ca.pem"),
    ]);
    nats.restart().await;
    let with = |cert: &str, key: &str| {
        let (ca, cert, key) = (pki.path("ca.pem"), pki.path(cert), pki.path(key));
        move |s: &mut Settings| {
            s.events.nats_ca = Some(ca);
            s.events.nats_tls_cert = Some(cert);
            s.events.nats_tls_key = Some(key);
        }
    };
    assert_eq!(start_result(nats.url(), with("client.pem", "client.key")).await, Ok(()));
    let why = start_result(nats.url(), with("rogue.pem", "rogue.key")).await.unwrap_err();
    assert!(why.contains("cannot connect to NATS"), "a certificate of another CA: {why}");
    let ca = pki.path("ca.pem");
    let why = start_result(nats.url(), |s| s.events.nats_ca = Some(ca)).await.unwrap_err();
    assert!(why.contains("cannot connect to NATS"), "no client certificate: {why}");
}
