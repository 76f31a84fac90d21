//! Server behaviour: health, reflection, shutdown and drain, request ids, caller API keys,
//! tenant isolation, caller authentication, load shedding, message and metadata size limits.

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::{Code, Request, metadata::MetadataValue};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use super::*;

fn session_request() -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: vec![pb::Contact { phone: "0912345678".into(), ..Default::default() }],
        ..Default::default()
    }
}

#[tokio::test]
async fn health_serves_both_names() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "callbot.v1.CallBotService"] {
        let got = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(got.status(), ServingStatus::Serving, "{service:?}");
    }
    let err = health.check(HealthCheckRequest { service: "nope.Service".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let ready = reqwest::get(format!("http://{}/readyz", app.admin)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let alive = reqwest::get(format!("http://{}/healthz", app.admin)).await.unwrap();
    assert_eq!(alive.status(), 200);
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_service() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = spawn_app().await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = resp.message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"callbot.v1.CallBotService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "callbot.v1.CallBotService".into(),
        )),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        resp.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
    ));
}

#[tokio::test]
async fn shutdown_flips_health_and_drains_in_flight_calls() {
    let mut app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    let mut watch =
        health.watch(HealthCheckRequest { service: "callbot.v1.CallBotService".into() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);

    // A slow call in flight when the shutdown starts must still complete.
    app.sim.fault(json!({"path": "/api/call_bot/execute_by_phone", "delay_ms": 600})).await;
    let mut client = app.client.clone();
    let in_flight = tokio::spawn(async move { client.create_session(session_request()).await });
    tokio::time::sleep(Duration::from_millis(150)).await;

    let started = Instant::now();
    app.shutdown();
    let flipped = tokio::time::timeout(Duration::from_secs(2), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(flipped.status(), ServingStatus::NotServing);
    let ready = reqwest::get(format!("http://{}/readyz", app.admin)).await;
    if let Ok(r) = ready {
        assert_eq!(r.status(), 503);
    }
    drop(watch);

    let session = in_flight.await.unwrap().expect("the in-flight call finishes during the drain");
    assert!(!session.into_inner().session.unwrap().id.is_empty());
    let done = app.done.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), done).await.unwrap().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(app.sim.sessions().await.len(), 1);
}

#[tokio::test]
async fn request_id_is_echoed_or_generated_and_forwarded() {
    let mut app = spawn_app().await;
    let mut req = Request::new(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() });
    req.metadata_mut().insert("x-request-id", MetadataValue::from_static("my-id-123"));
    let resp = app.client.get_script(req).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "my-id-123");

    let resp =
        app.client.get_script(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() }).await.unwrap();
    let generated = resp.metadata().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&generated).unwrap().get_version_num(), 4);

    // Errors carry it too, in metadata and in RequestInfo.
    let mut req = Request::new(pb::GetScriptRequest { script_id: String::new() });
    req.metadata_mut().insert("x-request-id", MetadataValue::from_static("err-id-9"));
    let err = app.client.get_script(req).await.unwrap_err();
    assert_eq!(err.metadata().get("x-request-id").unwrap(), "err-id-9");
    assert_eq!(err.get_error_details().request_info().unwrap().request_id, "err-id-9");

    // Forwarded upstream along with the trace context.
    let mut req = Request::new(session_request());
    req.metadata_mut().insert("x-request-id", MetadataValue::from_static("fwd-id-1"));
    req.metadata_mut()
        .insert("traceparent", MetadataValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    app.client.create_session(req).await.unwrap();
    let sessions = app.sim.sessions().await;
    let headers = &sessions[0]["headers"];
    assert_eq!(headers["x-request-id"], "fwd-id-1", "{headers}");
    // The trace continues: same trace id and flags, the facade's own (child) span id.
    let forwarded = headers["traceparent"].as_str().unwrap();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts.len(), 4, "{headers}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01"), "{headers}");
    assert_eq!(parts[2].len(), 16, "{headers}");
    assert_ne!(parts[2], "00f067aa0ba902b7", "{headers}");
    assert!(headers.get("tracestate").is_none());
}

#[tokio::test]
async fn caller_api_key_is_refused_unless_multi_tenant_mode_is_on() {
    let mut app = spawn_app().await;
    let mut req = Request::new(pb::ListScriptsRequest::default());
    req.metadata_mut().insert("x-api-key", MetadataValue::from_static("other-tenant"));
    let err = app.client.list_scripts(req).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "CALLER_API_KEY_NOT_ALLOWED");
    assert_eq!(app.sim.stats().await["auth_calls"], 0);

    let sim_config = SimConfig { api_keys: Some(vec![TEST_KEY.into(), "tenant-b".into()]), ..SimConfig::default() };
    let mut app = spawn_app_with(sim_config, |s| s.service.allow_caller_api_key = true).await;
    let mut req = Request::new(pb::ListScriptsRequest::default());
    req.metadata_mut().insert("x-api-key", MetadataValue::from_static("tenant-b"));
    let mut stream = app.client.list_scripts(req).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());
    let mut req = Request::new(pb::ListScriptsRequest::default());
    req.metadata_mut().insert("x-api-key", MetadataValue::from_static("not-a-tenant"));
    let err = app.client.list_scripts(req).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "UPSTREAM_UNAUTHENTICATED");
    assert_eq!(meta(&err, "upstream_code").as_deref(), Some("api_key_invalid"));
}

#[tokio::test]
async fn caller_tokens_guard_the_service_but_not_health() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# callers\nsecret-one\nsecret-two\n").unwrap();
    let mut app = spawn_app_with(SimConfig::default(), |s| s.security.caller_tokens_file = Some(file)).await;

    let err = app.client.get_script(pb::GetScriptRequest { script_id: "x".into() }).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "CALLER_UNAUTHENTICATED");
    let mut req = Request::new(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() });
    req.metadata_mut().insert("authorization", MetadataValue::from_static("Bearer wrong"));
    assert_eq!(app.client.get_script(req).await.unwrap_err().code(), Code::Unauthenticated);
    let mut req = Request::new(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() });
    req.metadata_mut().insert("authorization", MetadataValue::from_static("Bearer secret-two"));
    app.client.get_script(req).await.unwrap();

    let mut health = HealthClient::new(app.channel().await);
    let got = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(got.status(), ServingStatus::Serving);
    // Only the authenticated call reached the upstream.
    assert_eq!(app.sim.stats().await["script_list_calls"], 1);
}

#[tokio::test]
async fn calls_beyond_max_concurrency_are_shed_with_retry_info() {
    let app = spawn_app_with(SimConfig::default(), |s| s.server.max_concurrency = 1).await;
    app.sim.fault(json!({"path": "/api/call_bot/script/list", "delay_ms": 500})).await;
    let mut slow = app.client.clone();
    let first = tokio::spawn(async move { list(&mut slow, "").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut client = app.client.clone();
    let err = list(&mut client, "").await.unwrap_err();
    assert_status(&err, Code::Unavailable, "OVERLOADED");
    assert!(has_retry_info(&err));
    // Health is never shed.
    let mut health = HealthClient::new(app.channel().await);
    health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    assert!(first.await.unwrap().is_ok());
    // The permit came back: calls work again.
    assert!(list(&mut client, "").await.is_ok());
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted() {
    let mut app = spawn_app_with(SimConfig::default(), |s| s.server.max_message_bytes = 2048).await;
    let mut req = session_request();
    req.name = "x".repeat(4096);
    let err = app.client.create_session(req).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
    assert_eq!(app.sim.stats().await["execute_calls"], 0);
}

/// Scripts `tenant` lists, as ids.
async fn list_as(client: &mut CallBotServiceClient<Channel>, tenant: &'static str) -> Result<Vec<String>, Status> {
    let mut req = Request::new(pb::ListScriptsRequest::default());
    req.metadata_mut().insert("x-api-key", MetadataValue::from_static(tenant));
    let mut stream = client.list_scripts(req).await?.into_inner();
    let mut ids = Vec::new();
    while let Some(msg) = stream.message().await? {
        ids.push(msg.script.expect("script").id);
    }
    Ok(ids)
}

#[tokio::test]
async fn tenants_never_see_each_others_scripts_or_tokens_with_caching_on() {
    let sim_config = SimConfig {
        api_keys: Some(vec![TEST_KEY.into(), "tenant-a".into(), "tenant-b".into()]),
        ..SimConfig::default()
    };
    let app = spawn_app_with(sim_config, |s| {
        s.service.allow_caller_api_key = true;
        s.service.script_cache_ttl = Duration::from_secs(300);
    })
    .await;
    app.sim.set_scripts_for("tenant-a", r#"[{"id":"a-1","name":"Kịch bản của A","variables":[]}]"#).await;
    app.sim
        .set_scripts_for(
            "tenant-b",
            r#"[{"id":"b-1","name":"Kịch bản của B","variables":[]},{"id":"b-2","name":"B hai","variables":[]}]"#,
        )
        .await;

    // Both tenants at once, interleaved, cold cache: each gets its own list, every time.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let tenant = if i % 2 == 0 { "tenant-a" } else { "tenant-b" };
        let mut client = app.client.clone();
        tasks.push(tokio::spawn(async move { (tenant, list_as(&mut client, tenant).await) }));
    }
    for task in tasks {
        let (tenant, ids) = task.await.unwrap();
        let want: &[&str] = if tenant == "tenant-a" { &["a-1"] } else { &["b-1", "b-2"] };
        assert_eq!(ids.unwrap(), want, "{tenant}");
    }
    // GetScript answers from the same per-tenant cache: B cannot read A's script, A can.
    let mut client = app.client.clone();
    let mut req = Request::new(pb::GetScriptRequest { script_id: "a-1".into() });
    req.metadata_mut().insert("x-api-key", MetadataValue::from_static("tenant-b"));
    let err = client.get_script(req).await.unwrap_err();
    assert_status(&err, Code::NotFound, "SCRIPT_NOT_FOUND");
    let mut req = Request::new(pb::GetScriptRequest { script_id: "a-1".into() });
    req.metadata_mut().insert("x-api-key", MetadataValue::from_static("tenant-a"));
    assert_eq!(client.get_script(req).await.unwrap().into_inner().script.unwrap().name, "Kịch bản của A");
    // No x-api-key: the configured tenant, with the shared catalogue, neither A's nor B's.
    let ids: Vec<String> = list(&mut client, "").await.unwrap().into_iter().map(|s| s.id).collect();
    assert!(ids.contains(&"64915bc76a690c0edad14723".to_owned()), "{ids:?}");
    assert!(!ids.iter().any(|id| id.starts_with("a-") || id.starts_with("b-")), "{ids:?}");

    // One token and one list fetch per tenant (the caches are per key and single-flight), and
    // never a token of one tenant presented with another's key (the simulator would answer 401).
    let stats = app.sim.stats().await;
    assert_eq!(stats["auth_calls"], 3, "{stats}");
    assert_eq!(stats["script_list_calls"], 3, "{stats}");
    assert_eq!(stats["unauthorized"], 0, "{stats}");

    // A session goes out under the caller's tenant: A may use its script, B may not (upstream).
    let mut req = Request::new(pb::CreateSessionRequest { script_id: "a-1".into(), ..session_request() });
    req.metadata_mut().insert("x-api-key", MetadataValue::from_static("tenant-a"));
    client.create_session(req).await.unwrap();
    let mut req = Request::new(pb::CreateSessionRequest { script_id: "a-1".into(), ..session_request() });
    req.metadata_mut().insert("x-api-key", MetadataValue::from_static("tenant-b"));
    let err = client.create_session(req).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "UPSTREAM_REJECTED");
    assert_eq!(app.sim.stats().await["unauthorized"], 0);
}

#[tokio::test]
async fn an_empty_caller_api_key_means_the_configured_tenant() {
    // Multi-tenant mode off: an empty x-api-key is no key at all (not refused, not forwarded).
    let mut app = spawn_app().await;
    let mut req = Request::new(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() });
    req.metadata_mut().insert("x-api-key", MetadataValue::from_static(""));
    app.client.get_script(req).await.unwrap();
    assert_eq!(app.sim.stats().await["unauthorized"], 0);
}

/// GetScript carrying `bytes` of extra metadata.
async fn get_script_with_metadata(client: &mut CallBotServiceClient<Channel>, bytes: usize) -> Result<(), Status> {
    let mut req = Request::new(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() });
    let value: MetadataValue<_> = "v".repeat(bytes).parse().unwrap();
    req.metadata_mut().insert("x-padding", value);
    client.get_script(req).await.map(|_| ())
}

#[tokio::test]
async fn metadata_over_the_header_list_limit_is_refused_and_the_server_stays_up() {
    let mut app = spawn_app().await;
    // Under MAX_HEADER_LIST_BYTES (64 KiB) but over hyper's 16 KiB default: accepted, so the
    // documented limit is the one in force.
    get_script_with_metadata(&mut app.client, 32 * 1024).await.unwrap();
    // Over it: the call is refused before it reaches a handler or the upstream.
    let lists_before = app.sim.stats().await["script_list_calls"].clone();
    let err = get_script_with_metadata(&mut app.client, 80 * 1024).await.unwrap_err();
    // HTTP/2 answers 431 before any gRPC layer runs, so there is no grpc-status (nor details):
    // the client maps the HTTP status to UNKNOWN.
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    assert!(err.message().contains("431"), "{err:?}");
    assert_eq!(app.sim.stats().await["script_list_calls"], lists_before);
    // The server is still up: health and a normal call on the same client work.
    let mut health = HealthClient::new(app.channel().await);
    let got = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(got.status(), ServingStatus::Serving);
    get_script_with_metadata(&mut app.client, 0).await.unwrap();
}

#[tokio::test]
async fn upstream_http2_prior_knowledge_multiplexes_every_call_over_h2c() {
    let mut app = spawn_app_with(SimConfig::default(), |s| s.upstream.http2_prior_knowledge = true).await;
    // A burst of concurrent calls (reads and writes), all over HTTP/2 to the plaintext simulator.
    let calls = (0..8).map(|_| {
        let mut client = app.client.clone();
        async move { client.create_session(session_request()).await }
    });
    for result in futures::future::join_all(calls).await {
        result.expect("CreateSession over h2c");
    }
    let scripts = list(&mut app.client, "").await.expect("ListScripts over h2c");
    assert_eq!(scripts.len(), 14);
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions.len(), 8);
    for s in &sessions {
        assert_eq!(s["http_version"], "HTTP/2.0", "{s}");
    }

    // Without the flag the same simulator is spoken to over HTTP/1.1.
    let mut app = spawn_app().await;
    app.client.create_session(session_request()).await.expect("CreateSession over HTTP/1.1");
    assert_eq!(app.sim.sessions().await[0]["http_version"], "HTTP/1.1");
}
