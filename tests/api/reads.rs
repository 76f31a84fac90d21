//! ListScripts and GetScript end to end: order, mapping, filters, the token lifecycle, the
//! script cache, and every read error row through simulator faults.

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::{Code, Request};

use super::*;

const SCORES: &str = "64915bc76a690c0edad14723";

async fn upstream_ids(sim: &TestSim) -> Vec<String> {
    let request = sim.as_client("direct", reqwest::Method::GET, "/api/call_bot/script/list").await;
    let list: Value = request.send().await.unwrap().json().await.unwrap();
    list["payload"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn list_scripts_streams_every_script_in_upstream_order() {
    let mut app = spawn_app().await;
    let got = list(&mut app.client, "").await.unwrap();
    let want = upstream_ids(&app.sim).await;
    assert!(want.len() >= 10, "catalogue too small: {}", want.len());
    assert_eq!(got.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), want);
    assert!(got.iter().all(|s| !s.name.is_empty()));
    assert!(got.iter().any(|s| !s.variables.is_empty()));
}

#[tokio::test]
async fn list_scripts_maps_fields_nulls_unknown_keys_and_text_byte_exact() {
    let mut app = spawn_app().await;
    app.sim
        .set_scripts(
            r#"[
        {"id":"a1","name":"Thông báo điểm thi 🎓","extra":{"x":1},"variables":[
            {"field_code":"uB131frQEU","field_name":"Họ và tên","field_value":"Nguyễn Văn A","field_type":"single_text","type":"CONTACT","is_dynamic_attribute":true,"unknown":[1,2]},
            {"field_code":"x","field_name":null,"field_value":null,"field_type":null,"type":null,"is_dynamic_attribute":null},
            {"field_code":"y"}
        ]},
        {"id":"a2","name":null,"variables":null},
        {"id":"a3"}
    ]"#,
        )
        .await;
    let got = list(&mut app.client, "").await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].id, "a1");
    assert_eq!(got[0].name.as_bytes(), "Thông báo điểm thi 🎓".as_bytes());
    let v = &got[0].variables;
    assert_eq!(
        v[0],
        pb::ScriptVariable {
            field_code: "uB131frQEU".into(),
            field_name: "Họ và tên".into(),
            field_value: "Nguyễn Văn A".into(),
            field_type: "single_text".into(),
            r#type: "CONTACT".into(),
            is_dynamic_attribute: true,
        }
    );
    assert_eq!(v[1], pb::ScriptVariable { field_code: "x".into(), ..Default::default() });
    assert_eq!(v[2], pb::ScriptVariable { field_code: "y".into(), ..Default::default() });
    assert_eq!(got[1], pb::Script { id: "a2".into(), name: String::new(), variables: vec![] });
    assert_eq!(got[2], pb::Script { id: "a3".into(), name: String::new(), variables: vec![] });
}

#[tokio::test]
async fn name_filter_folds_case_and_vietnamese_diacritics() {
    let mut app = spawn_app().await;
    for needle in ["diem", "ĐIỂM", "điểm thi", "THONG BAO DIEM", "Thông Báo Điểm Thi"] {
        let got = list(&mut app.client, needle).await.unwrap();
        assert!(got.iter().any(|s| s.id == SCORES), "{needle} should match the scores script");
        assert!(
            got.iter().all(|s| callbot_facade::testing::fold(&s.name).contains(&callbot_facade::testing::fold(needle))),
            "{needle} matched a script whose name does not contain it"
        );
    }
    assert!(list(&mut app.client, "zzz-no-such-script").await.unwrap().is_empty());
    let all = list(&mut app.client, "").await.unwrap();
    assert!(all.len() > list(&mut app.client, "diem").await.unwrap().len());
}

#[tokio::test]
async fn get_script_finds_by_id_and_answers_not_found_and_invalid() {
    let mut app = spawn_app().await;
    let got = app
        .client
        .get_script(pb::GetScriptRequest { script_id: SCORES.into() })
        .await
        .unwrap()
        .into_inner()
        .script
        .unwrap();
    assert_eq!(got.id, SCORES);
    assert_eq!(got.name, "Thông báo điểm thi");

    let err =
        app.client.get_script(pb::GetScriptRequest { script_id: "ffffffffffffffffffffffff".into() }).await.unwrap_err();
    assert_status(&err, Code::NotFound, "SCRIPT_NOT_FOUND");

    let err = app.client.get_script(pb::GetScriptRequest { script_id: String::new() }).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_REQUEST");
    let details = err.get_error_details();
    let fields: Vec<_> = details.bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["script_id"]);
    // The invalid request never reached the upstream: only the two valid calls did.
    assert_eq!(app.sim.stats().await["script_list_calls"], 2);
}

#[tokio::test]
async fn one_token_fetch_serves_many_calls_and_a_concurrent_burst() {
    let mut app = spawn_app().await;
    // A concurrent burst of first calls: one fetch.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut client = app.client.clone();
        tasks.push(tokio::spawn(async move { list(&mut client, "").await.map(|v| v.len()) }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap() >= 10);
    }
    for _ in 0..5 {
        list(&mut app.client, "").await.unwrap();
    }
    let stats = app.sim.stats().await;
    assert_eq!(stats["auth_calls"], 1, "{stats}");
    assert_eq!(stats["script_list_calls"], 25, "{stats}");
}

#[tokio::test]
async fn a_401_triggers_exactly_one_refresh_and_one_retry() {
    let mut app = spawn_app().await;
    list(&mut app.client, "").await.unwrap();
    // The upstream revokes every token: the next call gets a 401, refreshes once, succeeds.
    app.sim.fault(json!({"path": "/api/call_bot/script/list", "expire_tokens": true})).await;
    list(&mut app.client, "").await.unwrap();
    let stats = app.sim.stats().await;
    assert_eq!(stats["auth_calls"], 2, "{stats}");
    assert_eq!(stats["script_list_calls"], 3, "{stats}");

    // A 401 that persists after the refresh: UNAUTHENTICATED, and still only one refresh.
    app.sim.fault(json!({"path": "/api/call_bot/script/list", "status": 401, "count": 5})).await;
    let err = list(&mut app.client, "").await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "UPSTREAM_UNAUTHENTICATED");
    assert_eq!(meta(&err, "upstream_http_status").as_deref(), Some("401"));
    let stats = app.sim.stats().await;
    assert_eq!(stats["auth_calls"], 3, "{stats}");
    assert_eq!(stats["script_list_calls"], 5, "{stats}");
}

#[tokio::test]
async fn token_refetched_when_it_expires() {
    let sim_config = SimConfig { token_ttl: Duration::from_secs(2), ..SimConfig::default() };
    let mut app = spawn_app_with(sim_config, |_| {}).await;
    list(&mut app.client, "").await.unwrap();
    list(&mut app.client, "").await.unwrap();
    assert_eq!(app.sim.stats().await["auth_calls"], 1);
    // A 2 s token is served for half its life, then renewed before it dies.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    list(&mut app.client, "").await.unwrap();
    let stats = app.sim.stats().await;
    assert_eq!(stats["auth_calls"], 2, "{stats}");
    assert_eq!(stats["unauthorized"], 0, "{stats}");
}

#[tokio::test]
async fn script_cache_serves_within_ttl_single_flight_and_off_at_zero() {
    let mut app = spawn_app_with(SimConfig::default(), |s| s.service.script_cache_ttl = Duration::from_secs(30)).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut client = app.client.clone();
        tasks.push(tokio::spawn(async move { list(&mut client, "").await.map(|v| v.len()) }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    app.client.get_script(pb::GetScriptRequest { script_id: SCORES.into() }).await.unwrap();
    assert_eq!(app.sim.stats().await["script_list_calls"], 1);

    let mut uncached = spawn_app().await; // ttl 0 in test settings
    list(&mut uncached.client, "").await.unwrap();
    list(&mut uncached.client, "").await.unwrap();
    assert_eq!(uncached.sim.stats().await["script_list_calls"], 2);
}

/// One read error row: the fault, the code and reason expected, the HTTP status in metadata,
/// whether RetryInfo must be present, and how many list calls the upstream must have seen.
struct ErrorRow {
    fault: Value,
    code: Code,
    reason: &'static str,
    http_status: Option<&'static str>,
    retry_info: bool,
    upstream_calls: u64,
}

#[tokio::test]
async fn every_read_error_row_maps_to_its_code_and_reason() {
    let path = "/api/call_bot/script/list";
    let rows = vec![
        ErrorRow {
            fault: json!({"status": 403}),
            code: Code::PermissionDenied,
            reason: "UPSTREAM_PERMISSION_DENIED",
            http_status: Some("403"),
            retry_info: false,
            upstream_calls: 1,
        },
        ErrorRow {
            fault: json!({"status": 404}),
            code: Code::Internal,
            reason: "UPSTREAM_ENDPOINT_NOT_FOUND",
            http_status: Some("404"),
            retry_info: false,
            upstream_calls: 1,
        },
        ErrorRow {
            fault: json!({"status": 429, "retry_after": 7}),
            code: Code::ResourceExhausted,
            reason: "UPSTREAM_RATE_LIMITED",
            http_status: Some("429"),
            retry_info: true,
            upstream_calls: 1,
        },
        ErrorRow {
            fault: json!({"status": 500}),
            code: Code::Internal,
            reason: "UPSTREAM_INTERNAL_ERROR",
            http_status: Some("500"),
            retry_info: false,
            upstream_calls: 1,
        },
        ErrorRow {
            fault: json!({"status": 502, "count": 3}),
            code: Code::Unavailable,
            reason: "UPSTREAM_UNAVAILABLE",
            http_status: Some("502"),
            retry_info: true,
            upstream_calls: 3,
        },
        ErrorRow {
            fault: json!({"status": 503, "count": 3}),
            code: Code::Unavailable,
            reason: "UPSTREAM_UNAVAILABLE",
            http_status: Some("503"),
            retry_info: true,
            upstream_calls: 3,
        },
        ErrorRow {
            fault: json!({"status": 504, "count": 3}),
            code: Code::DeadlineExceeded,
            reason: "UPSTREAM_TIMEOUT",
            http_status: Some("504"),
            retry_info: false,
            upstream_calls: 3,
        },
        ErrorRow {
            fault: json!({"drop": true, "count": 3}),
            code: Code::Unavailable,
            reason: "UPSTREAM_CONNECTION_LOST",
            http_status: None,
            retry_info: true,
            upstream_calls: 3,
        },
        ErrorRow {
            fault: json!({"truncate": true}),
            code: Code::Internal,
            reason: "UPSTREAM_MALFORMED",
            http_status: Some("200"),
            retry_info: false,
            upstream_calls: 1,
        },
        ErrorRow {
            fault: json!({"status": 200, "body": "<html>oops</html>", "content_type": "text/html"}),
            code: Code::Internal,
            reason: "UPSTREAM_MALFORMED",
            http_status: Some("200"),
            retry_info: false,
            upstream_calls: 1,
        },
        ErrorRow {
            fault: json!({"status": 200, "body": "{\"status_code\":9999,\"payload\":{\"not\":\"a list\"}}"}),
            code: Code::Internal,
            reason: "UPSTREAM_MALFORMED",
            http_status: Some("200"),
            retry_info: false,
            upstream_calls: 1,
        },
        ErrorRow {
            fault: json!({"error": "api_key_invalid"}),
            code: Code::Unauthenticated,
            reason: "UPSTREAM_UNAUTHENTICATED",
            http_status: Some("200"),
            retry_info: false,
            upstream_calls: 1,
        },
        ErrorRow {
            fault: json!({"error": "tenant_invalid"}),
            code: Code::PermissionDenied,
            reason: "UPSTREAM_PERMISSION_DENIED",
            http_status: Some("200"),
            retry_info: false,
            upstream_calls: 1,
        },
        ErrorRow {
            fault: json!({"error": "brand_new_code"}),
            code: Code::Unknown,
            reason: "UPSTREAM_UNKNOWN_ERROR",
            http_status: Some("200"),
            retry_info: false,
            upstream_calls: 1,
        },
    ];
    for row in rows {
        let mut app = spawn_app().await;
        let mut fault = row.fault.clone();
        fault["path"] = json!(path);
        app.sim.fault(fault).await;
        let err = list(&mut app.client, "").await.unwrap_err();
        let what = row.fault.to_string();
        assert_eq!(err.code(), row.code, "{what}: {err:?}");
        assert_eq!(reason(&err), row.reason, "{what}");
        assert_status(&err, row.code, row.reason);
        assert_eq!(meta(&err, "upstream_http_status").as_deref(), row.http_status, "{what}");
        assert_eq!(has_retry_info(&err), row.retry_info, "{what}");
        if let Some(code) = row.fault.get("error").and_then(Value::as_str) {
            assert_eq!(meta(&err, "upstream_code").as_deref(), Some(code), "{what}");
        }
        assert!(!err.message().contains("html"), "{what}: body leaked into the message");
        assert_eq!(app.sim.stats().await["script_list_calls"], row.upstream_calls, "{what}");
        // GetScript goes through the same path and table.
        app.sim
            .fault({
                let mut f = row.fault.clone();
                f["path"] = json!(path);
                f
            })
            .await;
        let err = app.client.get_script(pb::GetScriptRequest { script_id: SCORES.into() }).await.unwrap_err();
        assert_eq!((err.code(), reason(&err).as_str()), (row.code, row.reason), "GetScript {what}");
    }
}

#[tokio::test]
async fn rate_limit_retry_info_carries_retry_after() {
    let mut app = spawn_app().await;
    app.sim.fault(json!({"path": "/api/call_bot/script/list", "status": 429, "retry_after": 7})).await;
    let err = list(&mut app.client, "").await.unwrap_err();
    let delay = err.get_error_details().retry_info().and_then(|r| r.retry_delay).unwrap();
    assert_eq!(delay, Duration::from_secs(7));
}

#[tokio::test]
async fn a_transient_503_is_retried_and_succeeds() {
    let mut app = spawn_app().await;
    app.sim.fault(json!({"path": "/api/call_bot/script/list", "status": 503, "count": 1})).await;
    let got = list(&mut app.client, "").await.unwrap();
    assert!(got.len() >= 10);
    assert_eq!(app.sim.stats().await["script_list_calls"], 2);
}

#[tokio::test]
async fn connection_refused_is_unavailable_with_retry_info() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.url = Some(format!("http://{closed}"));
    })
    .await;
    let err = list(&mut app.client, "").await.unwrap_err();
    assert_status(&err, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    assert!(has_retry_info(&err));
    assert_eq!(meta(&err, "upstream_http_status"), None);
}

#[tokio::test]
async fn caller_deadline_bounds_the_exchange_and_answers_deadline_exceeded() {
    let mut app = spawn_app().await;
    app.sim.fault(json!({"path": "/api/call_bot/script/list", "delay_ms": 3000})).await;
    let mut req = Request::new(pb::ListScriptsRequest::default());
    req.set_timeout(Duration::from_millis(1000));
    let started = Instant::now();
    let err = app.client.list_scripts(req).await.unwrap_err();
    assert_status(&err, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    assert!(started.elapsed() < Duration::from_millis(2500), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn caller_deadline_bounds_the_token_fetch_and_the_wait_for_another_calls_fetch() {
    let app = spawn_app().await;
    // No token yet: the first call fetches it, the second waits for that fetch (single-flight).
    app.sim.fault(json!({"path": "/api/auth", "delay_ms": 3000})).await;
    let call = |timeout_ms: u64| {
        let mut client = app.client.clone();
        async move {
            let mut req = Request::new(pb::ListScriptsRequest::default());
            req.set_timeout(Duration::from_millis(timeout_ms));
            let started = Instant::now();
            let result = client.list_scripts(req).await.map(|_| ());
            (result, started.elapsed())
        }
    };
    let ((first, first_took), (second, second_took)) = tokio::join!(call(1000), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        call(800).await
    });
    for (err, took) in [(first.unwrap_err(), first_took), (second.unwrap_err(), second_took)] {
        assert_status(&err, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
        assert!(took < Duration::from_millis(2500), "took {took:?}");
    }
    // A waiter's own deadline, shorter than the fetch it waits for (which succeeds for its caller).
    app.sim.fault(json!({"path": "/api/auth", "delay_ms": 1500})).await;
    let ((first, _), (second, second_took)) = tokio::join!(call(10_000), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        call(800).await
    });
    first.unwrap();
    assert_status(&second.unwrap_err(), Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    assert!(second_took < Duration::from_millis(2000), "took {second_took:?}");
}

#[tokio::test]
async fn a_slow_attempt_times_out_and_is_retried_within_the_deadline() {
    let mut app =
        spawn_app_with(SimConfig::default(), |s| s.upstream.attempt_timeout = Duration::from_millis(200)).await;
    app.sim.fault(json!({"path": "/api/call_bot/script/list", "delay_ms": 1000, "count": 1})).await;
    let got = list(&mut app.client, "").await.unwrap();
    assert!(got.len() >= 10);
    assert_eq!(app.sim.stats().await["script_list_calls"], 2);

    app.sim.fault(json!({"path": "/api/call_bot/script/list", "delay_ms": 1000, "count": 3})).await;
    let err = list(&mut app.client, "").await.unwrap_err();
    assert_status(&err, Code::DeadlineExceeded, "UPSTREAM_TIMEOUT");
}

#[tokio::test]
async fn the_stream_producer_stops_when_the_caller_goes_away() {
    let mut app = spawn_app().await;
    app.sim.set_scripts(r#"{"generate": 5000}"#).await;
    let mut stream = app.client.list_scripts(pb::ListScriptsRequest::default()).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.script.is_some());
    drop(stream);
    // The facade stays healthy and serves the next caller in full.
    let all = list(&mut app.client, "").await.unwrap();
    assert_eq!(all.len(), 5000);
}

#[tokio::test]
async fn an_endless_upstream_body_is_cut_at_the_16_mib_cap_while_streaming() {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A raw HTTP/1.1 upstream: every answer is a 200 whose chunked body never ends (no
    // Content-Length to refuse up front), so only a cap applied while reading can stop it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let start = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if socket.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                let mut chunk = b"10000\r\n".to_vec();
                chunk.extend(std::iter::repeat_n(b' ', 0x10000));
                chunk.extend_from_slice(b"\r\n");
                while socket.write_all(&chunk).await.is_ok() {
                    counter.fetch_add(0x10000, Ordering::Relaxed);
                }
            });
        }
    });
    let sim = TestSim::start(SimConfig::default()).await;
    let mut settings = test_settings(&sim.url);
    settings.upstream.url = Some(url);
    settings.upstream.timeout = Duration::from_secs(30);
    settings.upstream.attempt_timeout = Duration::from_secs(30);
    let mut app = start(settings, sim).await;

    let started = Instant::now();
    let err = app.client.get_script(pb::GetScriptRequest { script_id: SCORES.into() }).await.unwrap_err();
    assert_status(&err, Code::Internal, "UPSTREAM_MALFORMED");
    assert_eq!(meta(&err, "upstream_http_status").as_deref(), Some("200"));
    assert!(!err.message().contains("    "), "no body in the message: {}", err.message());
    // Cut at the cap, not at a timeout: well before the 30 s deadline, and the facade stopped
    // reading near 16 MiB (the socket buffers hold a few MiB more).
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let total = sent.load(Ordering::Relaxed);
    assert!(total >= 16 * 1024 * 1024, "the cap is 16 MiB: {total}");
    assert!(total < 32 * 1024 * 1024, "read on far past the cap: {total} bytes");
}

/// A raw HTTP/1.1 upstream whose every answer is `200 {}` with `fields` extra header fields.
async fn upstream_with_header_fields(fields: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let mut answer = String::from("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n");
                for i in 0..fields {
                    answer.push_str(&format!("x-filler-{i}: {i}\r\n"));
                }
                answer.push_str("content-length: 2\r\n\r\n{}");
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn upstream_response_headers_are_bounded_by_the_http_client() {
    for (fields, code, reason) in [
        // Within hyper's 100-field limit: the answer is read (and `{}` is no auth envelope).
        (50, Code::Internal, "UPSTREAM_MALFORMED"),
        // Over it: refused by the HTTP client, reported as a broken exchange, nothing hangs.
        (150, Code::Unavailable, "UPSTREAM_CONNECTION_LOST"),
    ] {
        let sim = TestSim::start(SimConfig::default()).await;
        let mut settings = test_settings(&sim.url);
        settings.upstream.url = Some(upstream_with_header_fields(fields).await);
        let mut app = start(settings, sim).await;
        let err = app.client.get_script(pb::GetScriptRequest { script_id: SCORES.into() }).await.unwrap_err();
        assert_status(&err, code, reason);
        // The facade is still serving.
        let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    }
}
