//! The reconciler against the built-in simulator (its call history is what the provider's is),
//! the embedded store and a clock the tests move.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::*;
use crate::{
    config::Settings,
    events::{
        memory::{Bounds, MemoryStore},
        report::Report,
    },
    simulator::{SimConfig, run},
    upstream::{CallRecord, Delivery},
};

const KEY: &str = "k-reconcile";
const SCRIPT: &str = "64915bc76a690c0edad14723";
const AFTER: Duration = Duration::from_secs(60);
const GIVE_UP: Duration = Duration::from_secs(600);

fn wall_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

struct Harness {
    sim: String,
    http: reqwest::Client,
    store: Arc<MemoryStore>,
    upstream: Arc<UpstreamClient>,
    metrics: Arc<Metrics>,
    budget: Arc<HistoryBudget>,
    /// Added to the wall clock: the tests move time forward with it.
    offset: Arc<AtomicU64>,
    tenant: TenantId,
}

impl Harness {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(run(listener, SimConfig { time_scale: 1000.0, ..SimConfig::default() }, std::future::pending()));
        let offset = Arc::new(AtomicU64::new(0));
        let o = offset.clone();
        let clock: Clock = Arc::new(move || wall_ms() + o.load(Ordering::Relaxed));
        let bounds = Bounds { retention: Duration::from_secs(86_400), max_events: 10_000 };
        let metrics = Arc::new(Metrics::new());
        let upstream = Arc::new(UpstreamClient::new(&sim, &Settings::for_tests().upstream, metrics.clone()).unwrap());
        Harness {
            sim,
            http: reqwest::Client::new(),
            store: Arc::new(MemoryStore::new(bounds, clock)),
            upstream,
            metrics,
            budget: HistoryBudget::new(5.0),
            offset,
            tenant: Arc::from("default"),
        }
    }

    fn now(&self) -> u64 {
        wall_ms() + self.offset.load(Ordering::Relaxed)
    }

    fn advance(&self, by: Duration) {
        self.offset.fetch_add(ms(by), Ordering::Relaxed);
    }

    /// A reconciler as a (re)started process would have (nothing in memory).
    fn reconciler(&self) -> Reconciler {
        self.reconciler_with(self.budget.clone())
    }

    fn reconciler_with(&self, budget: Arc<HistoryBudget>) -> Reconciler {
        let offset = self.offset.clone();
        Reconciler::new(
            self.store.clone(),
            self.upstream.clone(),
            Arc::new(|_: &str| Some(ApiKey::new(KEY))),
            budget,
            self.metrics.clone(),
            Timing { after: AFTER, give_up_after: GIVE_UP },
            Arc::new(move || wall_ms() + offset.load(Ordering::Relaxed)),
        )
    }

    async fn sim_post(&self, path: &str, body: Value) -> Value {
        let v: Value =
            self.http.get(format!("{}/api/auth?apiKey={KEY}", self.sim)).send().await.unwrap().json().await.unwrap();
        let token = v["payload"]["access_token"].as_str().unwrap().to_owned();
        let resp = self
            .http
            .post(format!("{}{path}", self.sim))
            .header("x-api-key", KEY)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }

    /// A session of `phones` placed by the simulator (no webhook registered: nothing is
    /// delivered), recorded in the store when `keep`; waits until its calls are over.
    async fn session(&self, phones: &[String], keep: bool) -> SessionRecord {
        self.session_of(&self.tenant.clone(), phones, keep).await
    }

    async fn session_of(&self, tenant: &TenantId, phones: &[String], keep: bool) -> SessionRecord {
        let created_at_ms = self.now();
        let body = json!({
            "bot_script_id": SCRIPT,
            "contact_info": phones.iter().map(|p| json!({"phone": p})).collect::<Vec<_>>(),
            "num_per_call": 100,
        });
        let v = self.sim_post("/api/call_bot/execute_by_phone?cid=19001234", body).await;
        let session_id = v["payload"]["autocall_id"].as_str().unwrap().to_owned();
        let record = SessionRecord {
            session_id,
            external_id: String::new(),
            contacts: phones.to_vec(),
            redials: 0,
            created_at_ms,
            script_id: SCRIPT.to_owned(),
            name: String::new(),
            ..SessionRecord::default()
        };
        if keep {
            self.store.record_session(tenant.clone(), record.clone()).await.unwrap();
        }
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let calls: Value = self.get(&format!("/_sim/calls?session={}", record.session_id)).await;
            if calls["sessions"][0]["finished"] == true {
                return record;
            }
            assert!(Instant::now() < until, "the simulator never finished: {calls}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.sim)).send().await.unwrap().json().await.unwrap()
    }

    async fn searches(&self) -> u64 {
        self.get("/_sim/stats").await["history_search_calls"].as_u64().unwrap()
    }

    async fn report(&self, session: &str) -> (Report, SessionFacts) {
        self.report_of(&self.tenant, session).await
    }

    async fn report_of(&self, tenant: &TenantId, session: &str) -> (Report, SessionFacts) {
        let facts = self.store.session(tenant.clone(), session.to_owned()).await.unwrap().unwrap();
        (report::build(&facts), facts)
    }
}

fn phones(from: u32, n: u32) -> Vec<String> {
    (from..from + n).map(|i| format!("0912{i:06}")).collect()
}

#[tokio::test]
async fn a_scan_searches_due_sessions_pages_keeps_the_sessions_calls_and_stores_each_once() {
    let h = Harness::start().await;
    // Another session (not recorded here) called three of the same numbers: its calls are in the
    // history's answer and must not count.
    h.session(&phones(0, 3), false).await;
    let contacts = phones(0, 60);
    let s = h.session(&contacts, true).await;
    let before = h.searches().await;
    let r = h.reconciler();
    assert_eq!(r.scan().await, Pass::default(), "not due before --reconcile-after");
    assert_eq!(h.searches().await, before);

    h.advance(AFTER);
    let pass = r.scan().await;
    assert_eq!(pass, Pass { searched: 1, stored: 60, given_up: 0 });
    // 50 numbers a search: 53 items (two pages) for the first 50, 10 for the rest.
    assert_eq!(h.searches().await - before, 3);
    let (report, facts) = h.report(&s.session_id).await;
    assert!(report.finished, "{report:?}");
    assert_eq!((report.reconciled, report.contacts_total, report.in_progress), (60, 60, 0));
    assert!(facts.events.iter().all(|e| e.event.source == EventSource::History && e.event.fact == Fact::Record));
    assert!(facts.events.iter().all(|e| *e.event.session_id == *s.session_id));
    let first = facts.events.iter().find(|e| national(&e.event.phone) == national(&contacts[0])).unwrap();
    assert_eq!(&*first.event.contact_phone, contacts[0].as_str(), "the caller's own form");
    assert_ne!(&*first.event.phone, contacts[0].as_str(), "the provider's form stays");
    // The simulator's outcomes (by the last digit).
    for c in &report.contacts {
        let want = match c.phone.chars().last().unwrap() {
            '0'..='4' => CallOutcome::Answered,
            '5' | '6' => CallOutcome::NoAnswer,
            '7' => CallOutcome::Busy,
            '8' => CallOutcome::Rejected,
            _ => CallOutcome::Failed,
        };
        assert_eq!((c.outcome, c.source), (want, Some(EventSource::History)), "{c:?}");
    }
    let text = h.metrics.render();
    assert!(text.contains("callbot_reconcile_lookups_total{result=\"found\"} 3"), "{text}");
    assert!(text.contains("callbot_reconcile_events_total 60"), "{text}");

    // Nothing left to do, also for a restarted process; a webhook CDR arriving now is a repeat.
    h.advance(AFTER);
    assert_eq!(r.scan().await, Pass::default());
    assert_eq!(h.reconciler().scan().await, Pass::default());
    assert_eq!(h.searches().await - before, 3);
    let late = CallRecord {
        transaction_id: first.event.call_id.to_string(),
        autocall_id: s.session_id.clone(),
        destination_number: first.event.phone.to_string(),
        disposition: "answered".into(),
        bill_sec: Some(10),
        ..CallRecord::default()
    };
    let webhook = normalize::normalize(Delivery::Record(late), h.now()).unwrap();
    assert_eq!(h.store.append(h.tenant.clone(), webhook).await.unwrap(), Appended::Duplicate);
}

#[tokio::test]
async fn a_429_pauses_the_tenant_for_its_retry_after_then_the_search_goes_on() {
    let h = Harness::start().await;
    let s = h.session(&phones(100, 2), true).await;
    let fault = json!({"path": "/api/v3/call-transaction/search", "status": 429, "retry_after": 1});
    let resp = h.http.post(format!("{}/_sim/faults", h.sim)).json(&fault).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    h.advance(AFTER);
    let r = h.reconciler();
    assert_eq!(r.scan().await, Pass::default(), "throttled: nothing stored");
    let throttled_at = Instant::now();
    assert!(h.metrics.render().contains("callbot_reconcile_lookups_total{result=\"throttled\"} 1"));
    assert_eq!(r.scan().await, Pass::default(), "looked at again only a moment later");
    h.advance(RETRY_SOON);
    let pass = r.scan().await;
    assert!(
        throttled_at.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After: {:?}",
        throttled_at.elapsed()
    );
    assert_eq!(pass, Pass { searched: 1, stored: 2, given_up: 0 });
    assert!(h.report(&s.session_id).await.0.finished);
}

#[tokio::test]
async fn after_give_up_a_contact_without_outcome_is_unknown_until_a_real_outcome_comes() {
    let h = Harness::start().await;
    let resp = h
        .http
        .post(format!("{}/_sim/webhook_faults", h.sim))
        .json(&json!({"kind": "never_ends", "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // One contact never ends (the first call placed); the other is answered.
    let contacts = vec!["0912345670".to_owned(), "0912345671".to_owned()];
    let s = h.session(&contacts, true).await;
    h.advance(GIVE_UP);
    let pass = h.reconciler().scan().await;
    assert_eq!(pass, Pass { searched: 1, stored: 1, given_up: 1 });
    let (report, facts) = h.report(&s.session_id).await;
    assert!(report.finished);
    assert_eq!((report.unknown, report.reconciled, report.answered), (1, 1, 1));
    let unknown = report.contacts.iter().find(|c| c.outcome == CallOutcome::Unknown).unwrap();
    assert_eq!((unknown.source, unknown.is_final), (Some(EventSource::Facade), true));
    let given_up = facts.events.iter().find(|e| e.event.fact == Fact::GaveUp).unwrap();
    assert_eq!(&*given_up.event.disposition, GAVE_UP_DISPOSITION);
    assert_eq!(given_up.event.id(), format!("{}/{}/unknown", s.session_id, national(&unknown.phone)));
    assert!(h.metrics.render().contains("callbot_calls_given_up_total 1"));
    // Given up once: a restarted process finds nothing to do; the same give-up again is a repeat.
    assert_eq!(h.reconciler().scan().await, Pass::default());
    let again = gave_up(&s.session_id, &unknown.phone, h.now());
    assert_eq!(h.store.append(h.tenant.clone(), again).await.unwrap(), Appended::Duplicate);
    // The real outcome arrives late, by webhook: it wins.
    let calls = h.get(&format!("/_sim/calls?session={}", s.session_id)).await;
    let open = calls["calls"].as_array().unwrap().iter().find(|c| c["state"] != "ended").unwrap().clone();
    let late = CallRecord {
        transaction_id: open["call_id"].as_str().unwrap().to_owned(),
        autocall_id: s.session_id.clone(),
        destination_number: open["reported_phone"].as_str().unwrap().to_owned(),
        disposition: "busy".into(),
        hangup_cause: "USER_BUSY".into(),
        ..CallRecord::default()
    };
    let webhook = normalize::normalize(Delivery::Record(late), h.now()).unwrap();
    assert!(matches!(h.store.append(h.tenant.clone(), webhook).await.unwrap(), Appended::Stored(_)));
    let (report, _) = h.report(&s.session_id).await;
    let c = report.contacts.iter().find(|c| c.phone == unknown.phone).unwrap();
    assert_eq!((c.outcome, c.source, c.is_final), (CallOutcome::Busy, Some(EventSource::Webhook), true));
    assert_eq!((report.unknown, report.busy), (0, 1));
}

#[tokio::test]
async fn a_tenant_waiting_for_its_budget_holds_no_other_tenant() {
    let h = Harness::start().await;
    let (a, b): (TenantId, TenantId) = (Arc::from("a"), Arc::from("b"));
    let mut mine = Vec::new();
    for i in 0..4 {
        mine.push(h.session_of(&a, &phones(200 + 10 * i, 2), true).await);
    }
    let other = h.session_of(&b, &phones(300, 2), true).await;
    h.advance(AFTER);
    // One search a second, bursts of two: a's four sessions take two seconds; b's is searched at once.
    let r = Arc::new(h.reconciler_with(HistoryBudget::new(1.0)));
    let scan = tokio::spawn({
        let r = r.clone();
        async move { r.scan().await }
    });
    let t0 = Instant::now();
    loop {
        if h.report_of(&b, &other.session_id).await.0.finished {
            break;
        }
        assert!(t0.elapsed() < Duration::from_millis(800), "b waited behind a");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done: Vec<bool> = futures::future::join_all(mine.iter().map(|s| h.report_of(&a, &s.session_id)))
        .await
        .into_iter()
        .map(|r| r.0.finished)
        .collect();
    assert!(done.iter().filter(|d| **d).count() <= 2, "a's burst at most: the rest wait for a's budget ({done:?})");
    assert_eq!(scan.await.unwrap(), Pass { searched: 5, stored: 10, given_up: 0 });
    assert!(t0.elapsed() >= Duration::from_millis(1800), "a's budget held: {:?}", t0.elapsed());
    for s in &mine {
        assert!(h.report_of(&a, &s.session_id).await.0.finished);
    }
}
