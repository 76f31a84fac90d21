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
    assert_eq!(list(KEY).await["payload"], json!([{"url": "http://127.0.0.1:1/b", "type": "call", "status": "actived"}]));
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
fn expected(phone_digit: char, attempt: u64) -> (&'static str, &'static str, &'static str, u64, u64, Vec<&'static str>) {
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
    assert_eq!(sum["sessions"], json!([{"session_id": session, "api_key_id": calls[0]["api_key_id"], "contacts": 6, "finished": true}]));
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
        let reported = if phone.starts_with('0') { format!("84{}", &phone[1..]) } else { phone.to_owned() };
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
    let round1_end = calls.iter().filter(|c| first_round.contains(&c["phone"].as_str().unwrap())).map(|c| c["ended_at_ms"].as_u64().unwrap()).max().unwrap();
    let round2_start = calls.iter().filter(|c| !first_round.contains(&c["phone"].as_str().unwrap())).map(|c| c["started_at_ms"].as_u64().unwrap()).min().unwrap();
    assert!(round2_start >= round1_end, "{round2_start} < {round1_end}");
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(stats["calls_placed"], 9, "{stats}");
    assert_eq!(stats["webhook_delivered"], 28, "{stats}");
    assert_eq!(stats["webhook_failed_attempts"], 0, "{stats}");
}
