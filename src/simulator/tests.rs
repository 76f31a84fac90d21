//! Tests of the simulator against `run()` on an ephemeral port, one simulator per test.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{SimConfig, run};

struct Harness {
    base: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    async fn start(config: SimConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, config, async move {
            let _ = rx.await;
        }));
        Self { base: format!("http://{addr}"), client: reqwest::Client::new(), stop: Some(tx), task: Some(task) }
    }

    async fn default() -> Self {
        Self::start(SimConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get_json(&self, path: &str) -> Value {
        self.client.get(self.url(path)).send().await.expect("send").json().await.expect("json")
    }

    async fn token(&self, key: &str) -> String {
        let v = self.get_json(&format!("/api/auth?apiKey={key}")).await;
        assert_eq!(v["status_code"], 9999, "{v}");
        v["payload"]["access_token"].as_str().expect("token").to_owned()
    }

    async fn list(&self, key: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url("/api/call_bot/script/list"))
            .header("x-api-key", key)
            .bearer_auth(token)
            .send()
            .await
            .expect("send")
    }

    async fn execute_raw(&self, key: &str, token: &str, query: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/call_bot/execute_by_phone{query}")))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body(body.to_owned())
            .send()
            .await
            .expect("send")
    }

    async fn execute(&self, key: &str, token: &str, body: &Value) -> Value {
        let resp = self.execute_raw(key, token, "?cid=19001234", &body.to_string()).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json")
    }

    async fn faults(&self, faults: Value) {
        let resp = self.client.post(self.url("/_sim/faults")).json(&faults).send().await.expect("send");
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    }

    async fn sessions(&self) -> Vec<Value> {
        match self.get_json("/_sim/sessions").await {
            Value::Array(a) => a,
            other => panic!("sessions not an array: {other}"),
        }
    }

    async fn stats(&self) -> Value {
        self.get_json("/_sim/stats").await
    }

    async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("join"),
            None => Ok(()),
        }
    }
}

const KEY: &str = "test-key-123";
const SCRIPT: &str = "64915bc76a690c0edad14723";

fn good_body() -> Value {
    json!({
        "bot_script_id": SCRIPT,
        "name": "Phiên thử",
        "voice": "southern_female_honganh",
        "speed": 1,
        "num_retry": 2,
        "num_per_call": 15,
        "distance_per_call": 30,
        "distance_retry": 0,
        "send_time": 1_700_000_000_000_u64,
        "contact_info": [
            {"phone": "0988888888", "email": "a@example.com", "ext_contact_code": "c1",
             "mapping_variables": {"uB131frQEU": "9.5"}}
        ]
    })
}

fn assert_fail(v: &Value, code: &str) {
    assert_eq!(v["status_code"], -9999, "{v}");
    assert_eq!(v["message"], code, "{v}");
    assert_eq!(v["payload"]["status"], "fail", "{v}");
    assert_eq!(v["payload"]["error"], code, "{v}");
    assert!(v["payload"]["message"].is_string(), "{v}");
    assert_eq!(v["instance_id"], "sim");
}

#[tokio::test]
async fn auth_issues_jwt_shaped_token() {
    let h = Harness::default().await;
    let v = h.get_json(&format!("/api/auth?apiKey={KEY}")).await;
    assert_eq!(v["status_code"], 9999);
    assert_eq!(v["instance_version"], "1.2.164");
    assert_eq!(v["key_enabled"], false);
    assert_eq!(v["payload"]["token_type"], "Bearer");
    assert_eq!(v["payload"]["access_type"], "normal");
    let token = v["payload"]["access_token"].as_str().expect("token");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    let sub = claims["sub"].as_str().expect("sub");
    assert!(!sub.contains(KEY));
    let iat = claims["iat"].as_u64().expect("iat");
    assert_eq!(claims["exp"].as_u64().expect("exp"), iat + 24 * 3600);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() == 36));
    assert!(URL_SAFE_NO_PAD.decode(parts[2]).is_ok());
    // Token works.
    assert_eq!(h.list(KEY, token).await.status(), 200);
    assert_eq!(h.stats().await["auth_calls"], 1);
}

#[tokio::test]
async fn auth_missing_and_invalid_key() {
    let h = Harness::start(SimConfig { api_keys: Some(vec!["k1".into(), "k2".into()]), ..SimConfig::default() }).await;
    assert_fail(&h.get_json("/api/auth").await, "api_key_is_required");
    assert_fail(&h.get_json("/api/auth?apiKey=").await, "api_key_is_required");
    assert_fail(&h.get_json("/api/auth?apiKey=nope").await, "api_key_invalid");
    let t = h.token("k2").await;
    assert_eq!(h.list("k2", &t).await.status(), 200);
    // A callBot call with a key outside the configured list.
    let v: Value = h.list("nope", &t).await.json().await.expect("json");
    assert_fail(&v, "api_key_invalid");
}

#[tokio::test]
async fn callbot_auth_rules() {
    let h = Harness::default().await;
    let t1 = h.token("key-one").await;
    let _t2 = h.token("key-two").await;
    // No x-api-key: 200 + api_key_is_required.
    let resp = h.client.get(h.url("/api/call_bot/script/list")).bearer_auth(&t1).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_fail(&resp.json().await.expect("json"), "api_key_is_required");
    // No bearer token: 401 text/plain.
    let resp =
        h.client.get(h.url("/api/call_bot/script/list")).header("x-api-key", "key-one").send().await.expect("send");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["content-type"].to_str().is_ok_and(|c| c.starts_with("text/plain")));
    assert_eq!(resp.text().await.expect("text"), "Unauthorized");
    // Unknown token.
    assert_eq!(h.list("key-one", "not-a-token").await.status(), 401);
    // Token of another key.
    assert_eq!(h.list("key-two", &t1).await.status(), 401);
    // Right pairing.
    assert_eq!(h.list("key-one", &t1).await.status(), 200);
    let resp = h.execute_raw("key-two", &t1, "?cid=", &good_body().to_string()).await;
    assert_eq!(resp.status(), 401);
    let stats = h.stats().await;
    assert_eq!(stats["unauthorized"], 4, "{stats}");
    assert_eq!(stats["script_list_calls"], 5, "{stats}");
    assert_eq!(stats["execute_calls"], 1, "{stats}");
}

#[tokio::test]
async fn token_expires_after_ttl() {
    let h = Harness::start(SimConfig { api_keys: None, token_ttl: Duration::from_millis(300), ..SimConfig::default() })
        .await;
    let t = h.token(KEY).await;
    assert_eq!(h.list(KEY, &t).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.list(KEY, &t).await.status(), 401);
    let t = h.token(KEY).await;
    assert_eq!(h.list(KEY, &t).await.status(), 200);
}

#[tokio::test]
async fn expire_tokens_fault() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    h.faults(json!({"expire_tokens": true})).await;
    assert_eq!(h.list(KEY, &t).await.status(), 401);
    assert_eq!(h.list(KEY, &t).await.status(), 401);
    let t = h.token(KEY).await;
    assert_eq!(h.list(KEY, &t).await.status(), 200);
}

#[tokio::test]
async fn list_returns_builtin_catalogue() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    let v: Value = h.list(KEY, &t).await.json().await.expect("json");
    assert_eq!(v["status_code"], 9999);
    let scripts = v["payload"].as_array().expect("array");
    assert!(scripts.len() >= 12);
    let mut ids = std::collections::HashSet::new();
    for s in scripts {
        let id = s["id"].as_str().expect("id");
        assert_eq!(id.len(), 24);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(ids.insert(id.to_owned()), "duplicate id {id}");
        assert!(s["name"].as_str().is_some_and(|n| !n.is_empty()));
        let vars = s["variables"].as_array().expect("variables");
        assert!((1..=5).contains(&vars.len()), "{s}");
        for var in vars {
            for k in ["field_name", "field_code", "field_value", "field_type", "type"] {
                assert!(var.get(k).is_some(), "{var} lacks {k}");
            }
            assert!(var["is_dynamic_attribute"].is_boolean());
        }
    }
    assert!(scripts.iter().any(|s| s["name"] == "Thông báo điểm thi"));
    assert!(
        scripts
            .iter()
            .flat_map(|s| s["variables"].as_array().into_iter().flatten())
            .any(|v| v["field_value"].is_null())
    );
}

#[tokio::test]
async fn put_scripts_replaces_verbatim_and_reset_restores() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    let raw = r#"[{"id":"abc","name":null,"variables":[{"field_code":"x","weird":{"n":1},"field_value":null}],"extra":"🎉 Xin chào"},{"id":"def","name":"Hai 😀"},42,null]"#;
    let resp = h.client.put(h.url("/_sim/scripts")).body(raw).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    let text = h.list(KEY, &t).await.text().await.expect("text");
    assert!(text.contains(raw), "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let expected: Value = serde_json::from_str(raw).expect("json");
    assert_eq!(v["payload"], expected);
    // The injected id is now executable, the built-in one is not.
    let mut body = good_body();
    body["bot_script_id"] = json!("def");
    assert_eq!(h.execute(KEY, &t, &body).await["status_code"], 9999);
    body["bot_script_id"] = json!(SCRIPT);
    assert_fail(&h.execute(KEY, &t, &body).await, "bot_script_id_invalid");
    // Generated catalogue.
    let resp = h.client.put(h.url("/_sim/scripts")).json(&json!({"generate": 500})).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    let v: Value = h.list(KEY, &t).await.json().await.expect("json");
    assert_eq!(v["payload"].as_array().map(Vec::len), Some(500));
    // Bad bodies.
    for bad in ["{", "{\"generate\": -1}", "\"x\""] {
        let resp = h.client.put(h.url("/_sim/scripts")).body(bad).send().await.expect("send");
        assert_eq!(resp.status(), 400, "{bad}");
    }
    // Reset restores the built-in catalogue (and forgets tokens).
    let resp = h.client.post(h.url("/_sim/reset")).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(h.list(KEY, &t).await.status(), 401);
    let t = h.token(KEY).await;
    let v: Value = h.list(KEY, &t).await.json().await.expect("json");
    assert!(v["payload"].as_array().is_some_and(|a| a.len() >= 12));
    assert_eq!(h.stats().await["auth_calls"], 1);
}

#[tokio::test]
async fn put_scripts_for_one_api_key_leaves_the_others_on_the_shared_catalogue() {
    let h = Harness::default().await;
    let resp = h
        .client
        .put(h.url("/_sim/scripts?api_key=tenant-a"))
        .body(r#"[{"id":"a-1","name":"A"}]"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let (ta, tb) = (h.token("tenant-a").await, h.token("tenant-b").await);
    let a: Value = h.list("tenant-a", &ta).await.json().await.expect("json");
    assert_eq!(a["payload"], json!([{"id": "a-1", "name": "A"}]));
    let b: Value = h.list("tenant-b", &tb).await.json().await.expect("json");
    assert!(b["payload"].as_array().is_some_and(|s| s.len() >= 12 && s.iter().all(|x| x["id"] != "a-1")), "{b}");
    // Execution follows the same catalogue: A's script exists for A only.
    let mut body = good_body();
    body["bot_script_id"] = json!("a-1");
    assert_eq!(h.execute("tenant-a", &ta, &body).await["status_code"], 9999);
    assert_fail(&h.execute("tenant-b", &tb, &body).await, "bot_script_id_invalid");
    body["bot_script_id"] = json!(SCRIPT);
    assert_fail(&h.execute("tenant-a", &ta, &body).await, "bot_script_id_invalid");
    assert_eq!(h.execute("tenant-b", &tb, &body).await["status_code"], 9999);
    // Reset forgets per-key catalogues.
    assert_eq!(h.client.post(h.url("/_sim/reset")).send().await.expect("send").status(), 200);
    let ta = h.token("tenant-a").await;
    let a: Value = h.list("tenant-a", &ta).await.json().await.expect("json");
    assert!(a["payload"].as_array().is_some_and(|s| s.len() >= 12), "{a}");
}

#[tokio::test]
async fn execute_validation_codes() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    // cid absent.
    let v: Value = h.execute_raw(KEY, &t, "", &good_body().to_string()).await.json().await.expect("json");
    assert_fail(&v, "cid_is_required");
    // Body not JSON / not an object.
    for bad in ["", "not json", "[1,2]", "\"s\""] {
        let v: Value = h.execute_raw(KEY, &t, "?cid=", bad).await.json().await.expect("json");
        assert_fail(&v, "request_body_required");
    }
    let cases: Vec<(&str, Value, &str)> = vec![
        ("bot_script_id", Value::Null, "bot_script_id_is_required"),
        ("bot_script_id", json!(""), "bot_script_id_is_required"),
        ("bot_script_id", json!(12), "bot_script_id_invalid"),
        ("bot_script_id", json!("000000000000000000000000"), "bot_script_id_invalid"),
        ("contact_info", Value::Null, "data_is_required"),
        ("contact_info", json!([]), "data_is_required"),
        ("contact_info", json!("0988888888"), "contact_info_invalid"),
        ("voice", json!("robot"), "voice_invalid"),
        ("voice", json!(1), "voice_invalid"),
        ("speed", json!(4), "speed_invalid"),
        ("speed", json!(-4), "speed_invalid"),
        ("speed", json!(1.5), "speed_invalid"),
        ("speed", json!("1"), "speed_invalid"),
        ("num_retry", json!(-1), "num_retry_invalid"),
        ("num_per_call", json!(0), "num_per_call_invalid"),
        ("distance_per_call", json!(-5), "distance_per_call_invalid"),
        ("distance_retry", json!("x"), "distance_retry_invalid"),
        ("send_time", json!(1.25), "send_time_invalid"),
        ("send_time", json!("tomorrow"), "send_time_invalid"),
    ];
    for (field, value, code) in cases {
        let mut body = good_body();
        if value.is_null() {
            body.as_object_mut().expect("obj").remove(field);
        } else {
            body[field] = value.clone();
        }
        let v = h.execute(KEY, &t, &body).await;
        assert_fail(&v, code);
        let _ = (field, value);
    }
    // Boundaries that are fine.
    for (field, value) in [("speed", json!(-3)), ("speed", json!(3)), ("num_retry", json!(0))] {
        let mut body = good_body();
        body[field] = value;
        assert_eq!(h.execute(KEY, &t, &body).await["status_code"], 9999);
    }
    assert_eq!(h.sessions().await.len(), 3);
    assert_eq!(h.stats().await["sessions_total"], 3);
}

#[tokio::test]
async fn per_contact_rejections() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    let mut body = good_body();
    body["contact_info"] = json!([
        {"phone": "0988888888"},
        {"phone": "0912345999"},
        {"phone": "12ab"},
        {"phone": "+84912345678"},
        {"email": "no-phone@example.com"},
    ]);
    let v = h.execute(KEY, &t, &body).await;
    assert_eq!(v["status_code"], 9999, "{v}");
    assert_eq!(v["payload"]["bot_script_id"], SCRIPT);
    let autocall = v["payload"]["autocall_id"].as_str().expect("id");
    assert_eq!(autocall.len(), 24);
    assert!(autocall.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        v["payload"]["errors"],
        json!([
            {"phone": "0912345999", "error": "number_dnc"},
            {"phone": "12ab", "error": "phone_invalid"},
            {"phone": null, "error": "phone_invalid"},
        ])
    );
    // Clean call: no `errors` key.
    let v = h.execute(KEY, &t, &good_body()).await;
    assert!(v["payload"].get("errors").is_none(), "{v}");
    assert_ne!(v["payload"]["autocall_id"], autocall);
    // Every contact rejected: still a session.
    body["contact_info"] = json!([{"phone": "0900000999"}]);
    let v = h.execute(KEY, &t, &body).await;
    assert_eq!(v["status_code"], 9999);
    assert_eq!(v["payload"]["errors"][0]["error"], "number_dnc");
    assert_eq!(h.sessions().await.len(), 3);
}

#[tokio::test]
async fn duplicate_ext_session_id() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    let mut body = good_body();
    body["ext_session_id"] = json!("crm-42");
    let first = h.execute(KEY, &t, &body).await;
    assert_eq!(first["status_code"], 9999);
    let dup = h.execute(KEY, &t, &body).await;
    assert_fail(&dup, "ext_session_id_duplicated");
    let msg = dup["payload"]["message"].as_str().expect("msg");
    assert!(msg.contains("crm-42"));
    assert!(msg.contains(first["payload"]["autocall_id"].as_str().expect("id")));
    // Another key may use the same ext id.
    let t2 = h.token("other-key").await;
    assert_eq!(h.execute("other-key", &t2, &body).await["status_code"], 9999);
    assert_eq!(h.sessions().await.len(), 2);
}

#[tokio::test]
async fn sessions_recorded_exactly_once() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    let raw = r#"{"zeta":1,"bot_script_id":"64915bc76a690c0edad14723","ext_session_id":"s-1","contact_info":[{"phone":"0988888888","mapping_variables":{"uB131frQEU":"Điểm 10 🎓"}}]}"#;
    let resp = h.execute_raw(KEY, &t, "?cid=1900%201234", raw).await;
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["status_code"], 9999);
    let sessions = h.sessions().await;
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s["autocall_id"], v["payload"]["autocall_id"]);
    assert_eq!(s["ext_session_id"], "s-1");
    assert_eq!(s["cid"], "1900 1234");
    assert!(s["received_at_ms"].as_u64().is_some_and(|ms| ms > 0));
    let key_id = s["api_key_id"].as_str().expect("key id");
    assert!(!key_id.contains(KEY));
    assert_eq!(s["body"], serde_json::from_str::<Value>(raw).expect("json"));
    let text = h.client.get(h.url("/_sim/sessions")).send().await.expect("send").text().await.expect("text");
    assert!(text.contains(raw), "body spliced verbatim");
    let stats = h.stats().await;
    assert_eq!(stats["sessions_total"], 1);
    assert_eq!(stats["execute_calls"], 1);
}

#[tokio::test]
async fn fault_status_with_retry_after_and_count() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    h.faults(json!({"status": 429, "retry_after": 7, "count": 2})).await;
    for _ in 0..2 {
        let resp = h.list(KEY, &t).await;
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        let v: Value = resp.json().await.expect("json");
        assert_fail(&v, "http_429");
    }
    assert_eq!(h.list(KEY, &t).await.status(), 200);
    let stats = h.stats().await;
    assert_eq!(stats["script_list_calls"], 3);
    // Several faults queue FIFO.
    h.faults(json!([{"status": 503}, {"status": 502, "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT"}])).await;
    assert_eq!(h.list(KEY, &t).await.status(), 503);
    let resp = h.list(KEY, &t).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["retry-after"], "Wed, 21 Oct 2015 07:28:00 GMT");
    assert_eq!(h.list(KEY, &t).await.status(), 200);
}

#[tokio::test]
async fn fault_error_and_body() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    h.faults(json!([
        {"path": "/api/call_bot/execute_by_phone", "error": "limit_service"},
        {"path": "/api/call_bot/execute_by_phone", "body": "<html>oops</html>", "content_type": "text/html"},
        {"path": "/api/call_bot/execute_by_phone", "status": 500, "body": "{\"status_code\":"},
    ]))
    .await;
    // Path matching: the list is not affected.
    assert_eq!(h.list(KEY, &t).await.status(), 200);
    let v = h.execute(KEY, &t, &good_body()).await;
    assert_fail(&v, "limit_service");
    let resp = h.execute_raw(KEY, &t, "?cid=", &good_body().to_string()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html");
    assert_eq!(resp.text().await.expect("text"), "<html>oops</html>");
    let resp = h.execute_raw(KEY, &t, "?cid=", &good_body().to_string()).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.text().await.expect("text"), "{\"status_code\":");
    // Faulted requests are not sessions; the next one is.
    assert_eq!(h.sessions().await.len(), 0);
    assert_eq!(h.execute(KEY, &t, &good_body()).await["status_code"], 9999);
    assert_eq!(h.sessions().await.len(), 1);
    assert_eq!(h.stats().await["execute_calls"], 4);
}

#[tokio::test]
async fn fault_delay_then_normal() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    h.faults(json!({"delay_ms": 150, "path": "/api/call_bot/execute_by_phone"})).await;
    let started = Instant::now();
    let v = h.execute(KEY, &t, &good_body()).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(v["status_code"], 9999);
    assert_eq!(h.sessions().await.len(), 1, "delay-only faults process normally");
    // Delay combined with a status.
    h.faults(json!({"delay_ms": 100, "status": 504})).await;
    let started = Instant::now();
    assert_eq!(h.list(KEY, &t).await.status(), 504);
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn fault_truncate_breaks_body() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    h.faults(json!([
        {"path": "/api/call_bot/script/list", "truncate": true},
        {"path": "/api/call_bot/execute_by_phone", "truncate": true},
    ]))
    .await;
    let mut resp = h.list(KEY, &t).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().is_ok_and(|c| c.starts_with("application/json")));
    let full_len = resp.content_length().expect("content-length");
    let mut got = Vec::new();
    let failed = loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(failed, "truncated body must fail");
    assert!(!got.is_empty() && (got.len() as u64) < full_len);
    assert!(got.starts_with(b"{\"instance_id\""));
    let resp = h.execute_raw(KEY, &t, "?cid=", &good_body().to_string()).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err());
    assert_eq!(h.sessions().await.len(), 0, "truncated execute not recorded");
    // Back to normal.
    assert_eq!(h.list(KEY, &t).await.status(), 200);
}

#[tokio::test]
async fn fault_drop_closes_connection() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    h.faults(json!({"drop": true, "path": "/api/call_bot/execute_by_phone"})).await;
    let res = h
        .client
        .post(h.url("/api/call_bot/execute_by_phone?cid="))
        .header("x-api-key", KEY)
        .bearer_auth(&t)
        .json(&good_body())
        .send()
        .await;
    assert!(res.is_err(), "drop must fail the send: {res:?}");
    assert_eq!(h.sessions().await.len(), 0);
    assert_eq!(h.stats().await["execute_calls"], 1);
    assert_eq!(h.execute(KEY, &t, &good_body()).await["status_code"], 9999);
}

/// Reads a body chunk by chunk: (bytes received, whether it ended in an error).
async fn drain(mut resp: reqwest::Response) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return (got, false),
            Err(_) => return (got, true),
        }
    }
}

#[tokio::test]
async fn fault_abort_after_headers_sends_the_head_then_breaks() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    h.faults(json!([
        {"path": "/api/call_bot/script/list", "abort_after_headers": true},
        {"path": "/api/call_bot/execute_by_phone", "abort_after_headers": true},
    ]))
    .await;
    let resp = h.list(KEY, &t).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().is_ok_and(|c| c.starts_with("application/json")));
    let (got, failed) = drain(resp).await;
    assert!(failed, "the body must break");
    assert!(got.is_empty(), "no body byte before the break: {got:?}");
    let resp = h.execute_raw(KEY, &t, "?cid=", &good_body().to_string()).await;
    assert_eq!(resp.status(), 200);
    assert!(drain(resp).await.1);
    assert_eq!(h.sessions().await.len(), 0, "an aborted execute is not recorded");
    assert_eq!(h.list(KEY, &t).await.status(), 200);
}

#[tokio::test]
async fn fault_body_size_streams_a_padded_valid_body() {
    const SIZE: u64 = 64 * 1024 * 1024;
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    let normal = h.list(KEY, &t).await.bytes().await.expect("body");
    h.faults(json!({"path": "/api/call_bot/script/list", "body_size": SIZE})).await;
    let mut resp = h.list(KEY, &t).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), None, "a padded body is streamed without a length");
    // Counted as it streams: the head is the normal answer, the rest spaces.
    let (mut total, mut head) = (0u64, Vec::new());
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        let keep = normal.len().saturating_sub(head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..keep]);
        assert!(chunk[keep..].iter().all(|b| *b == b' '), "padding is spaces");
        total += chunk.len() as u64;
    }
    assert_eq!(total, SIZE);
    assert_eq!(head, normal);
    assert_eq!(h.stats().await["padding_bytes_sent"], SIZE - normal.len() as u64);
    // A canned body is padded the same way, and stays valid JSON.
    h.faults(json!({"body": "{\"status_code\":9999,\"payload\":[]}", "body_size": 1000})).await;
    let text = h.list(KEY, &t).await.text().await.expect("text");
    assert_eq!(text.len(), 1000);
    assert_eq!(serde_json::from_str::<Value>(&text).expect("json")["status_code"], 9999);
}

#[tokio::test]
async fn fault_body_chunk_delay_dribbles_the_body_after_the_head() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    h.faults(json!({"path": "/api/call_bot/execute_by_phone", "body_chunk_delay_ms": 100, "body_chunks": 3})).await;
    let started = Instant::now();
    let mut resp = h.execute_raw(KEY, &t, "?cid=", &good_body().to_string()).await;
    let head_at = started.elapsed();
    assert_eq!(resp.status(), 200);
    let mut body = Vec::new();
    let mut pieces = 0;
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        body.extend_from_slice(&chunk);
        pieces += 1;
    }
    // The head comes with the first piece; two pauses of 100 ms follow it.
    assert!(started.elapsed() >= head_at + Duration::from_millis(200), "{head_at:?} {:?}", started.elapsed());
    assert!(pieces >= 3, "{pieces} pieces");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["status_code"], 9999);
    assert_eq!(h.sessions().await.len(), 1, "a slow but complete answer is a session");
}

#[tokio::test]
async fn fault_body_base64_and_content_type_over_a_real_answer() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    let raw: &[u8] = b"{\"status_code\":9999,\"payload\":\"\xff\xfe\"}";
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    h.faults(json!([
        {"path": "/api/call_bot/script/list", "body_base64": b64},
        {"path": "/api/call_bot/execute_by_phone", "content_type": "text/html"},
    ]))
    .await;
    let resp = h.list(KEY, &t).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), raw);
    let resp = h.execute_raw(KEY, &t, "?cid=", &good_body().to_string()).await;
    assert_eq!(resp.headers()["content-type"], "text/html");
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["status_code"], 9999);
    assert_eq!(h.sessions().await.len(), 1, "only the content type changed: a session");
    for bad in [
        json!({"body_base64": "%%%"}),
        json!({"body": "x", "body_base64": "eA=="}),
        json!({"body_chunk_delay_ms": 1, "body_chunks": 0}),
    ] {
        let resp = h.client.post(h.url("/_sim/faults")).json(&bad).send().await.expect("send");
        assert_eq!(resp.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn fault_admin_paths_and_clearing() {
    let h = Harness::default().await;
    // A path-less fault never hits /_sim/*.
    h.faults(json!({"status": 500})).await;
    assert_eq!(h.get_json("/_sim/stats").await["auth_calls"], 0);
    let pending = h.get_json("/_sim/faults").await;
    assert_eq!(pending.as_array().map(Vec::len), Some(1));
    let resp = h.client.delete(h.url("/_sim/faults")).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    let _ = h.token(KEY).await;
    // Invalid faults are refused.
    for bad in [json!({"status": 42}), json!({"count": 0}), json!({"unknown": true}), json!(3)] {
        let resp = h.client.post(h.url("/_sim/faults")).json(&bad).send().await.expect("send");
        assert_eq!(resp.status(), 400, "{bad}");
    }
    // Reset clears faults.
    h.faults(json!({"status": 500})).await;
    let _ = h.client.post(h.url("/_sim/reset")).send().await.expect("send");
    let _ = h.token(KEY).await;
}

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let h = Harness::default().await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    let resp = client.get(h.url(&format!("/api/auth?apiKey={KEY}"))).send().await.expect("send");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["status_code"], 9999);
}

#[tokio::test]
async fn unknown_path_is_404_and_shutdown_returns() {
    let h = Harness::default().await;
    let resp = h.client.get(h.url("/api/nope")).send().await.expect("send");
    assert_eq!(resp.status(), 404);
    let base = h.base.clone();
    tokio::time::timeout(Duration::from_secs(3), h.shutdown()).await.expect("shutdown in time").expect("run ok");
    let res = reqwest::Client::new().get(format!("{base}/_sim/stats")).send().await;
    assert!(res.is_err(), "listener closed after shutdown");
}

#[tokio::test]
async fn garbage_inputs_never_break_the_server() {
    let h = Harness::default().await;
    let t = h.token(KEY).await;
    for q in ["?cid=%zz%", "?cid=%F0%28%8C", "?&&=&cid", "?cid=a=b&cid=c"] {
        let v: Value = h.execute_raw(KEY, &t, q, &good_body().to_string()).await.json().await.expect("json");
        assert_eq!(v["status_code"], 9999, "{q}: {v}");
    }
    for body in [
        r#"{"bot_script_id":"64915bc76a690c0edad14723","contact_info":[1,null,[],{"phone":{}},{"phone":84988888888}]}"#,
        r#"{"bot_script_id":"64915bc76a690c0edad14723","contact_info":[{"phone":"0988888888"}],"speed":1e20}"#,
        r#"{"bot_script_id":"64915bc76a690c0edad14723","contact_info":[{"phone":"0988888888"}],"send_time":1e400}"#,
        r#"{"bot_script_id":"64915bc76a690c0edad14723","contact_info":[{"phone":"0988888888"}],"num_retry":18446744073709551615}"#,
        "\u{0}\u{ff}",
    ] {
        let resp = h.execute_raw(KEY, &t, "?cid=", body).await;
        assert_eq!(resp.status(), 200, "{body}");
        let v: Value = resp.json().await.expect("json");
        assert!(v["status_code"].is_i64(), "{body}: {v}");
    }
    let weird = reqwest::header::HeaderValue::from_bytes(b"k\xff\xfe").expect("header");
    let resp = h
        .client
        .get(h.url("/api/call_bot/script/list"))
        .header("x-api-key", weird)
        .bearer_auth(&t)
        .send()
        .await
        .expect("send");
    assert_fail(&resp.json().await.expect("json"), "api_key_invalid");
    let resp = h
        .client
        .get(h.url("/api/call_bot/script/list"))
        .header("x-api-key", KEY)
        .header("authorization", "Bearer")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    assert_eq!(h.list(KEY, &t).await.status(), 200);
}

#[test]
fn sessions_are_capped_but_counted() {
    use super::state::{Accept, MAX_SESSIONS, Session, Sim};
    use std::sync::atomic::Ordering;
    assert_eq!(MAX_SESSIONS, 100_000);
    let cap = 1_000;
    let sim = Sim::with_session_cap(SimConfig::default(), cap);
    let total = cap + 5;
    let mut first_kept = String::new();
    for i in 0..total {
        let session = Session {
            autocall_id: sim.new_object_id(),
            ext_session_id: None,
            api_key_id: "k".into(),
            cid: String::new(),
            headers: Default::default(),
            body: bytes::Bytes::from_static(b"{}"),
            received_at_ms: 0,
            http_version: "HTTP/1.1",
        };
        match sim.accept_session(session, false) {
            Accept::Accepted(id) if i == 5 => first_kept = id,
            Accept::Accepted(_) => {}
            Accept::Duplicate(_) => panic!("no ext ids here"),
        }
    }
    let sessions: Vec<Value> = serde_json::from_slice(&sim.sessions_json()).expect("json");
    assert_eq!(sessions.len(), cap);
    assert_eq!(sessions[0]["autocall_id"], first_kept.as_str());
    assert_eq!(sim.stats.sessions_total.load(Ordering::Relaxed), total as u64);
}

#[test]
fn session_keys_are_forgotten_with_their_sessions() {
    use super::state::{Accept, Session, Sim};
    let sim = Sim::with_session_cap(SimConfig::default(), 2);
    let session = |ext: &str| Session {
        autocall_id: sim.new_object_id(),
        ext_session_id: Some(ext.into()),
        api_key_id: "k".into(),
        cid: String::new(),
        headers: Default::default(),
        body: bytes::Bytes::from_static(b"{}"),
        received_at_ms: 0,
        http_version: "HTTP/1.1",
    };
    assert!(matches!(sim.accept_session(session("a"), false), Accept::Accepted(_)));
    assert!(matches!(sim.accept_session(session("a"), false), Accept::Duplicate(_)));
    assert!(matches!(sim.accept_session(session("b"), false), Accept::Accepted(_)));
    assert!(matches!(sim.accept_session(session("c"), false), Accept::Accepted(_)));
    // "a" left with its session: the key map is bounded by the session cap.
    assert!(matches!(sim.accept_session(session("a"), false), Accept::Accepted(_)));
    assert!(matches!(sim.accept_session(session("c"), false), Accept::Duplicate(_)));
}

#[test]
fn simulate_time_scale_flag_refuses_zero_negative_and_nan() {
    use clap::Parser as _;
    let parse = |v: &str| {
        crate::config::Cli::try_parse_from(["callbot-facade", "simulate", "--time-scale", v]).map(|c| match c.command {
            Some(crate::config::Command::Simulate(a)) => a.time_scale,
            _ => panic!("not simulate"),
        })
    };
    assert_eq!(parse("1000").expect("valid"), 1000.0);
    assert_eq!(parse("0.5").expect("valid"), 0.5);
    for bad in ["0", "-1", "NaN", "inf", "fast", ""] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    let default = crate::config::Cli::try_parse_from(["callbot-facade", "simulate"]).expect("parse");
    match default.command {
        Some(crate::config::Command::Simulate(a)) => assert_eq!(a.time_scale, super::DEFAULT_TIME_SCALE),
        _ => panic!("not simulate"),
    }
}
