//! Tests of the placed calls, webhooks, webhook faults and the call-history search: real HTTP against `run()`
//! on a loopback port, with a small receiver on another loopback port collecting what the simulator POSTs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use http::StatusCode;
use serde_json::{Value, json};

use super::{SimConfig, run};

const SCRIPT: &str = "64915bc76a690c0edad14723";
const KEY: &str = "calls-key";

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Received {
    body: Value,
    status: u16,
    at: Instant,
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    /// Statuses to answer first, then 200.
    answers: Mutex<VecDeque<u16>>,
}

struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start() -> Self {
        async fn hook(State(st): State<Arc<ReceiverState>>, body: axum::body::Bytes) -> StatusCode {
            let status = st.answers.lock().unwrap().pop_front().unwrap_or(200);
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            st.got.lock().unwrap().push(Received { body, status, at: Instant::now() });
            StatusCode::from_u16(status).unwrap()
        }
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new().route("/hook", post(hook)).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    fn all(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// The bodies answered 2xx.
    fn accepted(&self) -> Vec<Value> {
        self.all().into_iter().filter(|r| r.status < 300).map(|r| r.body).collect()
    }
}

/// The call id a body is about (`call_uuid` of a live state, `transaction_id` of a CDR).
fn call_of(body: &Value) -> String {
    body.get("call_uuid").or_else(|| body.get("transaction_id")).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// A body's kind: the live state's name, or `cdr`.
fn kind_of(body: &Value) -> String {
    body.get("state").and_then(Value::as_str).map_or_else(|| "cdr".to_owned(), str::to_owned)
}

struct Sim {
    base: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Sim {
    async fn start(time_scale: f64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = SimConfig { time_scale, ..SimConfig::default() };
        tokio::spawn(run(listener, config, async move {
            let _ = rx.await;
        }));
        Self { base, http: reqwest::Client::new(), stop: Some(tx) }
    }

    async fn token(&self, key: &str) -> String {
        let v: Value =
            self.http.get(format!("{}/api/auth?apiKey={key}", self.base)).send().await.unwrap().json().await.unwrap();
        v["payload"]["access_token"].as_str().unwrap().to_owned()
    }

    /// An authenticated API call with `key`; returns the envelope.
    async fn api(&self, key: &str, method: http::Method, path: &str, body: Option<Value>) -> Value {
        let token = self.token(key).await;
        let mut req =
            self.http.request(method, format!("{}{path}", self.base)).header("x-api-key", key).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    async fn register(&self, key: &str, url: &str, events: Value) -> Value {
        let body = json!({"webhook": {"type": "call", "url": url, "events": events}});
        self.api(key, http::Method::POST, "/api/webhooks/register", Some(body)).await
    }

    /// Start a session of `phones` (with `extra` fields merged in); returns its autocall_id.
    async fn session(&self, key: &str, phones: &[&str], extra: Value) -> String {
        let mut body = json!({
            "bot_script_id": SCRIPT,
            "contact_info": phones.iter().map(|p| json!({"phone": p})).collect::<Vec<_>>(),
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let v = self.api(key, http::Method::POST, "/api/call_bot/execute_by_phone?cid=19001234", Some(body)).await;
        assert_eq!(v["status_code"], 9999, "{v}");
        v["payload"]["autocall_id"].as_str().unwrap().to_owned()
    }

    async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    async fn send(&self, method: http::Method, path: &str, body: Value) -> reqwest::Response {
        self.http.request(method, format!("{}{path}", self.base)).json(&body).send().await.unwrap()
    }

    async fn calls(&self, session: &str) -> Value {
        self.get(&format!("/_sim/calls?session={session}")).await
    }

    /// Wait until every dialled contact of `session` is final; returns its calls.
    async fn finished(&self, session: &str) -> Vec<Value> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let last = self.calls(session).await;
            if last["sessions"][0]["finished"] == true {
                return last["calls"].as_array().unwrap().clone();
            }
            assert!(Instant::now() < end, "session {session} never finished: {last}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn search(&self, key: &str, query: &str, body: Value) -> Value {
        let path = format!("/api/v3/call-transaction/search{query}");
        self.api(key, http::Method::POST, &path, Some(body)).await
    }
}

/// Poll `cond` every 10 ms until it holds or `timeout` passes.
async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the receiver holds `n` accepted bodies (and a little longer, to catch extra ones).
async fn accepted_n(rx: &Receiver, n: usize) -> Vec<Value> {
    assert!(wait_for(Duration::from_secs(10), || async { rx.accepted().len() >= n }).await, "{:?}", rx.all());
    tokio::time::sleep(Duration::from_millis(100)).await;
    rx.accepted()
}

/// Accepted bodies grouped by call, in arrival order.
fn by_call(bodies: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for b in bodies {
        out.entry(call_of(b)).or_default().push(b.clone());
    }
    out
}

fn kinds(bodies: &[Value]) -> Vec<String> {
    bodies.iter().map(kind_of).collect()
}

#[tokio::test]
async fn webhook_registration_list_register_replace_destroy() {
    let sim = Sim::start(1000.0).await;
    let list = |key: &'static str| sim.api(key, http::Method::GET, "/api/webhooks/list", None);
    assert_eq!(list(KEY).await["payload"], json!([]));
    let v = sim.register(KEY, "https://example.com/a", Value::Null).await;
    assert_eq!(v["status_code"], 9999);
    assert_eq!(v["payload"], json!({"url": "https://example.com/a", "type": "call", "status": "actived"}));
    // Plain http is accepted; registering again replaces.
    sim.register(KEY, "http://127.0.0.1:1/b", json!(["hangup"])).await;
    assert_eq!(
        list(KEY).await["payload"],
        json!([{"url": "http://127.0.0.1:1/b", "type": "call", "status": "actived"}])
    );
    // Another key sees none.
    assert_eq!(list("other-key").await["payload"], json!([]));
    for (hook, code) in [
        (json!({"type": "call", "url": "ftp://x"}), "webhook_url_invalid"),
        (json!({"type": "call", "url": "  "}), "webhook_url_invalid"),
        (json!({"type": "call"}), "webhook_url_invalid"),
        (json!({"type": "", "url": "https://x"}), "webhook_type_invalid"),
        (json!({"url": "https://x"}), "webhook_type_invalid"),
        (json!({"type": "call", "url": "https://x", "events": "hangup"}), "webhook_events_invalid"),
    ] {
        let v = sim.api(KEY, http::Method::POST, "/api/webhooks/register", Some(json!({"webhook": hook}))).await;
        assert_eq!(v["status_code"], -9999, "{v}");
        assert_eq!(v["payload"]["error"], code, "{v}");
    }
    let v = sim.api(KEY, http::Method::POST, "/api/webhooks/destroy?hook_type=call", None).await;
    assert_eq!(v["status_code"], 9999);
    assert_eq!(v["payload"], Value::Null);
    assert_eq!(list(KEY).await["payload"], json!([]));
    let v = sim.api(KEY, http::Method::POST, "/api/webhooks/destroy", None).await;
    assert_eq!(v["payload"]["error"], "hook_type_is_required");
    // Without a bearer token: 401 like the other API paths.
    let resp = sim.http.get(format!("{}/api/webhooks/list", sim.base)).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(stats["webhook_register_calls"], 8, "{stats}");
    assert_eq!(stats["webhook_list_calls"], 5, "{stats}");
    assert_eq!(stats["webhook_destroy_calls"], 2, "{stats}");
    // Reset forgets the hooks.
    sim.register(KEY, "https://example.com/a", Value::Null).await;
    sim.send(http::Method::POST, "/_sim/reset", json!({})).await;
    assert_eq!(list(KEY).await["payload"], json!([]));
}

/// The expected (outcome, disposition, hangup_cause, ring, talk) of each attempt, and the kinds POSTed for it.
fn expected(
    phone_digit: char,
    attempt: u64,
) -> (&'static str, &'static str, &'static str, u64, u64, Vec<&'static str>) {
    let live_answered = vec!["ringing", "answered", "hangup", "cdr"];
    let live_short = vec!["ringing", "hangup", "cdr"];
    match (phone_digit, attempt) {
        ('0', _) => ("answered", "answered", "NORMAL_CLEARING", 3, 10, live_answered),
        ('5', _) => ("no_answer", "no answer", "NO_ANSWER", 30, 0, live_short),
        ('6', 1) => ("no_answer", "cancelled", "ORIGINATOR_CANCEL", 20, 0, live_short),
        ('6', _) => ("answered", "answered", "NORMAL_CLEARING", 4, 20, live_answered),
        ('7', _) => ("busy", "busy", "USER_BUSY", 2, 0, live_short),
        ('8', _) => ("rejected", "failed", "CALL_REJECTED", 1, 0, live_short),
        _ => ("failed", "failed", "UNALLOCATED_NUMBER", 0, 0, vec!["hangup", "cdr"]),
    }
}

#[tokio::test]
async fn a_session_places_the_predicted_calls_and_delivers_them() {
    let sim = Sim::start(1000.0).await;
    let rx = Receiver::start().await;
    sim.register(KEY, &rx.url, Value::Null).await;
    let phones = ["0912345670", "0912345675", "+84912345676", "0912345677", "0912345678", "0912345679"];
    let mut all = phones.to_vec();
    all.extend(["0912345999", "12ab"]); // do-not-call and malformed: never dialled
    let session = sim.session(KEY, &all, json!({"num_retry": 1, "num_per_call": 3})).await;
    let calls = sim.finished(&session).await;
    // 0: 1 call; 5, 6, 7: 2 each; 8, 9: 1 each.
    let want_attempts: Vec<(&str, u64)> = vec![
        ("0912345670", 1),
        ("0912345675", 1),
        ("+84912345676", 1),
        ("0912345675", 2),
        ("+84912345676", 2),
        ("0912345677", 1),
        ("0912345678", 1),
        ("0912345679", 1),
        ("0912345677", 2),
    ];
    let mut got: Vec<(String, u64)> =
        calls.iter().map(|c| (c["phone"].as_str().unwrap().to_owned(), c["attempt"].as_u64().unwrap())).collect();
    let mut want: Vec<(String, u64)> = want_attempts.iter().map(|(p, a)| ((*p).to_owned(), *a)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{calls:?}");
    let sum = sim.calls(&session).await;
    assert_eq!(
        sum["sessions"],
        json!([{"session_id": session, "api_key_id": calls[0]["api_key_id"], "contacts": 6, "finished": true}])
    );
    // Expected bodies: live states + one CDR per call.
    let n: usize = calls
        .iter()
        .map(|c| {
            let digit = c["phone"].as_str().unwrap().chars().last().unwrap();
            expected(digit, c["attempt"].as_u64().unwrap()).5.len()
        })
        .sum();
    assert_eq!(n, 28);
    let bodies = accepted_n(&rx, n).await;
    assert_eq!(bodies.len(), n, "{bodies:#?}");
    let grouped = by_call(&bodies);
    for c in &calls {
        let phone = c["phone"].as_str().unwrap();
        let digit = phone.chars().last().unwrap();
        let (outcome, disposition, cause, ring, talk, ks) = expected(digit, c["attempt"].as_u64().unwrap());
        assert_eq!(c["state"], "ended");
        assert_eq!(c["outcome"], outcome, "{c}");
        assert_eq!(c["disposition"], disposition, "{c}");
        assert_eq!(c["hangup_cause"], cause, "{c}");
        assert_eq!((c["ring_s"].as_u64(), c["talk_s"].as_u64()), (Some(ring), Some(talk)), "{c}");
        assert_eq!(c["session_id"], session.as_str());
        let reported = phone.strip_prefix('0').map_or_else(|| phone.to_owned(), |rest| format!("84{rest}"));
        assert_eq!(c["reported_phone"], reported.as_str());
        assert!(c["ended_at_ms"].as_u64().unwrap() >= c["started_at_ms"].as_u64().unwrap());
        let id = c["call_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4), "{id}");
        let got = &grouped[id];
        assert_eq!(kinds(got), ks, "{phone} {got:#?}");
        for live in got.iter().filter(|b| b.get("state").is_some()) {
            assert_eq!(live["direction"], "outbound");
            assert_eq!(live["from_number"], "19001234");
            assert_eq!(live["hotline"], "19001234");
            assert_eq!(live["to_number"], reported.as_str());
            assert!(live["created_time"].as_u64().unwrap() > 1_600_000_000);
            assert_eq!(live["date_time"].as_str().unwrap().len(), 19);
        }
        let cdr = got.last().unwrap();
        let answered = outcome == "answered";
        assert_eq!(cdr["tenant_id"], c["api_key_id"]);
        assert_eq!(cdr["destination_number"], reported.as_str());
        assert_eq!(cdr["source_number"], "19001234");
        assert_eq!(cdr["disposition"], disposition);
        assert_eq!(cdr["hangup_cause"], cause);
        assert_eq!(cdr["bill_sec"], talk);
        assert_eq!(cdr["record_seconds"], talk);
        assert_eq!(cdr["duration"], ring + talk);
        assert_eq!(cdr["time_start_to_answer"], if answered { ring } else { 0 });
        let rec = if answered { format!("https://sim.invalid/rec/{id}.mp3") } else { String::new() };
        assert_eq!(cdr["recording_file"], rec.as_str());
        assert_eq!(cdr["autocall_id"], session.as_str());
        assert_eq!(cdr["autocall_uuid"], id);
        assert_eq!(cdr["is_auto_call"], true);
        assert_eq!(cdr["provider"], "sim");
        assert_eq!(cdr["created_date"], c["started_at_ms"]);
        assert_eq!(cdr["last_updated_date"], c["ended_at_ms"]);
    }
    // Rounds of 3: the second round's first dials start after every call of the first round ended.
    let first_round = ["0912345670", "0912345675", "+84912345676"];
    let round1_end = calls
        .iter()
        .filter(|c| first_round.contains(&c["phone"].as_str().unwrap()))
        .map(|c| c["ended_at_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    let round2_start = calls
        .iter()
        .filter(|c| !first_round.contains(&c["phone"].as_str().unwrap()))
        .map(|c| c["started_at_ms"].as_u64().unwrap())
        .min()
        .unwrap();
    assert!(round2_start >= round1_end, "{round2_start} < {round1_end}");
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(stats["calls_placed"], 9, "{stats}");
    assert_eq!(stats["webhook_delivered"], 28, "{stats}");
    assert_eq!(stats["webhook_failed_attempts"], 0, "{stats}");
}

#[tokio::test]
async fn the_events_filter_and_a_key_without_a_hook() {
    let sim = Sim::start(1000.0).await;
    let rx = Receiver::start().await;
    sim.register(KEY, &rx.url, json!(["hangup"])).await;
    let session = sim.session(KEY, &["0912345670"], json!({})).await;
    sim.finished(&session).await;
    assert_eq!(kinds(&accepted_n(&rx, 2).await), ["hangup", "cdr"]);
    // Another key, no hook: the call is placed and recorded, nothing is delivered.
    let other = sim.session("no-hook-key", &["0912345679"], json!({})).await;
    let calls = sim.finished(&other).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["outcome"], "failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rx.all().len(), 2);
    let keyed = sim.get("/_sim/calls?api_key=no-hook-key").await;
    assert_eq!(keyed["calls"].as_array().unwrap().len(), 1, "{keyed}");
    assert_eq!(keyed["sessions"].as_array().unwrap().len(), 1, "{keyed}");
}

#[tokio::test]
async fn a_receiver_answering_503_is_retried() {
    let sim = Sim::start(1000.0).await;
    let rx = Receiver::start().await;
    rx.state.answers.lock().unwrap().extend([503, 503]);
    sim.register(KEY, &rx.url, Value::Null).await;
    sim.session(KEY, &["0912345679"], json!({})).await;
    let bodies = accepted_n(&rx, 2).await;
    assert_eq!(kinds(&bodies), ["hangup", "cdr"]);
    let all = rx.all();
    assert_eq!(all.iter().map(|r| r.status).collect::<Vec<_>>(), [503, 503, 200, 200]);
    assert!(all.iter().all(|r| r.body == all[0].body || kind_of(&r.body) == "cdr"));
    // Backoff: 100 ms, then 200 ms.
    assert!(all[2].at - all[0].at >= Duration::from_millis(290), "{:?}", all[2].at - all[0].at);
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(stats["webhook_deliveries"], 4, "{stats}");
    assert_eq!(stats["webhook_delivered"], 2, "{stats}");
    assert_eq!(stats["webhook_failed_attempts"], 2, "{stats}");
    assert_eq!(stats["webhook_given_up"], 0, "{stats}");
}

async fn faults(sim: &Sim, faults: Value) {
    let resp = sim.send(http::Method::POST, "/_sim/webhook_faults", faults).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

#[tokio::test]
async fn webhook_fault_duplicate_drop_first_and_no_autocall_id() {
    let sim = Sim::start(1000.0).await;
    let rx = Receiver::start().await;
    sim.register(KEY, &rx.url, Value::Null).await;
    faults(&sim, json!([{"kind": "duplicate"}, {"kind": "no_autocall_id"}])).await;
    let session = sim.session(KEY, &["0912345679"], json!({})).await;
    let bodies = accepted_n(&rx, 3).await;
    assert_eq!(kinds(&bodies), ["hangup", "hangup", "cdr"]);
    assert_eq!(bodies[0], bodies[1]);
    assert!(bodies[2].get("autocall_id").is_none() && bodies[2].get("autocall_uuid").is_none(), "{}", bodies[2]);
    assert_eq!(sim.get("/_sim/webhook_faults").await, json!([]));
    // The history still knows the session.
    let found = sim.search(KEY, "", json!({"filter": {"transactionIds": [call_of(&bodies[2])]}})).await;
    assert_eq!(found["payload"]["items"][0]["autocall_id"], session.as_str(), "{found}");

    // drop_first: the first attempt reaches the receiver, its answer is ignored, it is sent again.
    faults(&sim, json!({"kind": "drop_first"})).await;
    sim.session(KEY, &["0912345679"], json!({})).await;
    let bodies = accepted_n(&rx, 6).await;
    assert_eq!(kinds(&bodies[3..]), ["hangup", "hangup", "cdr"]);
    assert_eq!(bodies[3], bodies[4]);
    assert!(bodies[5]["autocall_id"].is_string(), "{}", bodies[5]);
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(stats["webhook_failed_attempts"], 1, "{stats}");
}

#[tokio::test]
async fn webhook_fault_reorder_and_delay() {
    let sim = Sim::start(1000.0).await;
    let rx = Receiver::start().await;
    sim.register(KEY, &rx.url, Value::Null).await;
    faults(&sim, json!({"kind": "reorder"})).await;
    let s = sim.session(KEY, &["0912345670"], json!({})).await;
    sim.finished(&s).await;
    assert_eq!(kinds(&accepted_n(&rx, 4).await), ["cdr", "hangup", "answered", "ringing"]);
    // The next call is in order again; its first delivery waits 300 ms.
    faults(&sim, json!({"kind": "delay", "delay_ms": 300})).await;
    let s = sim.session(KEY, &["0912345679"], json!({})).await;
    let calls = sim.finished(&s).await;
    let ended = Instant::now();
    let bodies = accepted_n(&rx, 6).await;
    assert_eq!(kinds(&bodies[4..]), ["hangup", "cdr"]);
    let first = rx.all()[4].at;
    assert!(first + Duration::from_millis(50) >= ended + Duration::from_millis(200), "delay not applied: {calls:?}");
}

#[tokio::test]
async fn webhook_faults_lose_and_never_ends() {
    let sim = Sim::start(1000.0).await;
    let rx = Receiver::start().await;
    sim.register(KEY, &rx.url, Value::Null).await;
    // lose, by rate: no delivery at all, yet the call is placed, ends, and is in the history.
    faults(&sim, json!({"kind": "lose", "rate": 1.0})).await;
    let s = sim.session(KEY, &["0912345670", "0912345677"], json!({})).await;
    let calls = sim.finished(&s).await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c["state"] == "ended"), "{calls:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.all().is_empty(), "lose rate 1: nothing delivered");
    let found = sim.search(KEY, "", json!({"filter": {"phoneNumbers": ["0912345670", "0912345677"]}})).await;
    let items = found["payload"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{found}");
    assert!(items.iter().all(|i| i["autocall_id"] == s.as_str()), "{found}");
    let stats = sim.get("/_sim/stats").await;
    assert_eq!((stats["webhook_lost"].as_u64(), stats["webhook_deliveries"].as_u64()), (Some(7), Some(0)), "{stats}");
    assert_eq!(sim.send(http::Method::DELETE, "/_sim/webhook_faults", json!({})).await.status(), 200);

    // lose, by count: the first delivery only.
    faults(&sim, json!({"kind": "lose", "count": 1})).await;
    let s = sim.session(KEY, &["0912345679"], json!({})).await;
    sim.finished(&s).await;
    assert_eq!(kinds(&accepted_n(&rx, 1).await), ["cdr"], "the hangup was lost, the CDR came");

    // never_ends: ringing and answered are delivered, no hangup, no CDR; not in the history, no redial.
    faults(&sim, json!({"kind": "never_ends"})).await;
    let s = sim.session(KEY, &["0912345670"], json!({"num_retry": 2})).await;
    let bodies = accepted_n(&rx, 3).await;
    assert_eq!(kinds(&bodies[1..]), ["ringing", "answered"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.all().len(), 3, "no end delivered");
    let calls = sim.finished(&s).await;
    assert_eq!(calls.len(), 1, "not redialled: {calls:?}");
    assert_eq!(calls[0]["state"], "answered", "{calls:?}");
    let found = sim.search(KEY, "", json!({"filter": {"transactionIds": [calls[0]["call_id"].clone()]}})).await;
    assert_eq!(found["payload"]["items"], json!([]), "the history lacks it: {found}");
    assert_eq!(sim.get("/_sim/stats").await["calls_never_ended"], 1);
}

#[tokio::test]
async fn webhook_fault_rates_and_validation() {
    let sim = Sim::start(1000.0).await;
    let rx = Receiver::start().await;
    sim.register(KEY, &rx.url, Value::Null).await;
    faults(&sim, json!([{"kind": "no_autocall_id", "rate": 1.0}, {"kind": "duplicate", "rate": 0.0}])).await;
    let s = sim.session(KEY, &["0912345679", "0912345678"], json!({})).await;
    sim.finished(&s).await;
    let bodies = accepted_n(&rx, 5).await;
    assert_eq!(bodies.len(), 5, "{bodies:#?}");
    assert!(bodies.iter().filter(|b| kind_of(b) == "cdr").all(|b| b.get("autocall_id").is_none()));
    // Rate faults stay until cleared.
    let listed = sim.get("/_sim/webhook_faults").await;
    assert_eq!(listed, json!([{"kind": "no_autocall_id", "rate": 1.0}, {"kind": "duplicate", "rate": 0.0}]));
    assert_eq!(sim.send(http::Method::DELETE, "/_sim/webhook_faults", json!({})).await.status(), 200);
    assert_eq!(sim.get("/_sim/webhook_faults").await, json!([]));
    for bad in [
        json!({"kind": "explode"}),
        json!({"kind": "duplicate", "colour": "red"}),
        json!({"kind": "duplicate", "count": 0}),
        json!({"kind": "duplicate", "count": 1, "rate": 0.5}),
        json!({"kind": "duplicate", "rate": 1.5}),
        json!({"kind": "delay"}),
        json!({"kind": "reorder", "delay_ms": 5}),
        json!([{"kind": "duplicate"}, {"count": 2}]),
        json!("duplicate"),
    ] {
        let resp = sim.send(http::Method::POST, "/_sim/webhook_faults", bad.clone()).await;
        assert_eq!(resp.status(), 400, "{bad}");
    }
    assert_eq!(sim.get("/_sim/webhook_faults").await, json!([]));
    faults(&sim, json!({"kind": "delay", "delay_ms": 10, "count": 3})).await;
    assert_eq!(sim.get("/_sim/webhook_faults").await, json!([{"kind": "delay", "count": 3, "delay_ms": 10}]));
}

#[tokio::test]
async fn call_history_search_filters_and_pages() {
    let sim = Sim::start(1000.0).await;
    let s = sim.session(KEY, &["0912345670", "0912345671", "0912345675", "0912345679"], json!({})).await;
    let calls = sim.finished(&s).await;
    assert_eq!(calls.len(), 4);
    let all = sim.search(KEY, "?page=1&size=50", json!({})).await;
    assert_eq!(all["status_code"], 9999, "{all}");
    let p = &all["payload"];
    assert_eq!(
        p["paging"],
        json!({"page_number": 1, "page_size": 50, "total_items": 4, "total_pages": 1, "has_next": false})
    );
    // Newest first by default.
    let created: Vec<u64> =
        p["items"].as_array().unwrap().iter().map(|i| i["created_date"].as_u64().unwrap()).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
    assert!(p["items"].as_array().unwrap().iter().all(|i| i["autocall_id"] == s.as_str()));
    // By transaction id.
    let id = calls[1]["call_id"].as_str().unwrap();
    let v = sim.search(KEY, "", json!({"filter": {"transactionIds": [id]}})).await;
    assert_eq!(v["payload"]["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["payload"]["items"][0]["transaction_id"], id);
    assert_eq!(v["payload"]["items"][0]["autocall_uuid"], id);
    // By phone, in any form.
    for phone in ["0912345675", "+84912345675", "84912345675"] {
        let v = sim.search(KEY, "", json!({"filter": {"phoneNumbers": [phone]}})).await;
        let items = v["payload"]["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 1, "{phone}: {v}");
        assert_eq!(items[0]["disposition"], "no answer");
    }
    // Answered only, ascending, two per page.
    let body = json!({"filter": {"isAnswer": true}, "sort": {"field": "created_date", "isAsc": true}});
    let v = sim.search(KEY, "?page=1&size=1", body.clone()).await;
    assert_eq!(
        v["payload"]["paging"],
        json!({"page_number": 1, "page_size": 1, "total_items": 2, "total_pages": 2, "has_next": true})
    );
    let v2 = sim.search(KEY, "?page=2&size=1", body.clone()).await;
    assert_eq!(v2["payload"]["paging"]["has_next"], false);
    assert_ne!(v["payload"]["items"][0]["transaction_id"], v2["payload"]["items"][0]["transaction_id"]);
    let v3 = sim.search(KEY, "?page=3&size=1", body).await;
    assert_eq!(v3["payload"]["items"], json!([]));
    // Dates.
    let first = calls.iter().map(|c| c["started_at_ms"].as_u64().unwrap()).min().unwrap();
    let v = sim.search(KEY, "", json!({"filter": {"toDate": first - 1}})).await;
    assert_eq!(v["payload"]["paging"]["total_items"], 0);
    let v = sim.search(KEY, "", json!({"filter": {"fromDate": first}})).await;
    assert_eq!(v["payload"]["paging"]["total_items"], 4);
    // Another key sees none.
    let v = sim.search("other-key", "", json!({})).await;
    assert_eq!(v["payload"]["paging"]["total_items"], 0);
    for (query, body, code) in [
        ("?size=51", json!({}), "size_invalid"),
        ("?size=0", json!({}), "size_invalid"),
        ("?page=0", json!({}), "page_invalid"),
        ("?page=x", json!({}), "page_invalid"),
        ("", json!({"filter": {"isAnswer": "yes"}}), "filter_invalid"),
        ("", json!({"sort": {"field": "duration"}}), "sort_invalid"),
    ] {
        let v = sim.search(KEY, query, body).await;
        assert_eq!(v["payload"]["error"], code, "{query}: {v}");
    }
    // HTTP faults apply to it like to any API path.
    let resp = sim
        .send(http::Method::POST, "/_sim/faults", json!({"path": "/api/v3/call-transaction/search", "status": 503}))
        .await;
    assert_eq!(resp.status(), 200);
    let token = sim.token(KEY).await;
    let resp = sim
        .http
        .post(format!("{}/api/v3/call-transaction/search", sim.base))
        .header("x-api-key", KEY)
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(sim.get("/_sim/stats").await["history_search_calls"], 18);
}

#[tokio::test]
async fn time_scale_send_time_and_reset() {
    let sim = Sim::start(10.0).await;
    assert_eq!(sim.get("/_sim/time_scale").await, json!({"time_scale": 10.0}));
    for bad in [
        json!({"time_scale": 0}),
        json!({"time_scale": -1}),
        json!({"time_scale": "fast"}),
        json!({}),
        json!({"time_scale": 5, "x": 1}),
    ] {
        assert_eq!(sim.send(http::Method::PUT, "/_sim/time_scale", bad.clone()).await.status(), 400, "{bad}");
    }
    // At 10x, a send_time 3 s ahead is 300 ms of real time.
    let now = super::state::unix_ms();
    let s = sim.session(KEY, &["0912345679"], json!({"send_time": now + 3000})).await;
    let calls = sim.finished(&s).await;
    let started = calls[0]["started_at_ms"].as_u64().unwrap();
    assert!(started >= now + 250, "started {} ms after", started - now);
    // A long call at 10x (90 s of talk = 9 s), stopped by a reset.
    let resp = sim.send(http::Method::PUT, "/_sim/time_scale", json!({"time_scale": 1000})).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"time_scale": 1000.0}));
    let resp = sim.send(http::Method::PUT, "/_sim/time_scale", json!({"time_scale": 0.001})).await;
    assert_eq!(resp.status(), 200);
    let s = sim.session(KEY, &["0912345674"], json!({})).await;
    assert_eq!(sim.calls(&s).await["sessions"][0]["finished"], false);
    sim.send(http::Method::POST, "/_sim/reset", json!({})).await;
    assert_eq!(sim.get("/_sim/calls").await, json!({"calls": [], "sessions": []}));
    sim.send(http::Method::PUT, "/_sim/time_scale", json!({"time_scale": 1000})).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sim.get("/_sim/calls").await, json!({"calls": [], "sessions": []}));
}
