//! CreateSession end to end.
//!
//! Every test starts its own facade and simulator, calls CreateSession through the generated
//! client, and checks both what the caller got (code, `ErrorInfo` reason and metadata,
//! `BadRequest` field paths, `RetryInfo`) and what the simulator received (sessions, bodies,
//! request counters).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tonic::Request;

#[allow(unused_imports)]
use super::*;

/// "Thông báo điểm thi" in the built-in catalogue.
const SCRIPT: &str = "64915bc76a690c0edad14723";
const EXECUTE_PATH: &str = "/api/call_bot/execute_by_phone";

fn contact(phone: &str) -> pb::Contact {
    pb::Contact { phone: phone.to_owned(), ..Default::default() }
}

/// The smallest valid request: the script, one contact, the given key ("" = generate one).
fn minimal(key: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: SCRIPT.to_owned(),
        contacts: vec![contact("0912345678")],
        external_session_id: key.to_owned(),
        ..Default::default()
    }
}

fn secs(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

/// `now + offset_secs` as a protobuf timestamp (with sub-second nanos).
fn timestamp_from_now(offset_secs: i64, nanos: i32) -> prost_types::Timestamp {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    prost_types::Timestamp { seconds: now + offset_secs, nanos }
}

async fn create(app: &mut TestApp, req: pb::CreateSessionRequest) -> Result<pb::Session, Status> {
    create_request(app, Request::new(req)).await
}

async fn create_request(app: &mut TestApp, req: Request<pb::CreateSessionRequest>) -> Result<pb::Session, Status> {
    let response = app.client.create_session(req).await?;
    Ok(response.into_inner().session.expect("session"))
}

/// The `BadRequest` field paths of a status, in order.
fn violation_paths(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// One simulator counter.
async fn stat(sim: &TestSim, name: &str) -> u64 {
    sim.stats().await[name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
}

/// Queues `fault` for the execute endpoint only (token fetches stay healthy).
async fn fault_execute(sim: &TestSim, mut fault: Value) {
    fault["path"] = json!(EXECUTE_PATH);
    sim.fault(fault).await;
}

/// The raw text of `GET /_sim/sessions` (bodies embedded verbatim, as received).
async fn raw_sessions(sim: &TestSim) -> String {
    reqwest::get(format!("{}/_sim/sessions", sim.url)).await.unwrap().text().await.unwrap()
}

fn assert_uuid_v4(key: &str) {
    let uuid = uuid::Uuid::parse_str(key).unwrap_or_else(|e| panic!("{key:?} is no UUID: {e}"));
    assert_eq!(uuid.get_version(), Some(uuid::Version::Random), "{key} is not v4");
    // The hyphenated lowercase form, as it travels upstream.
    assert_eq!(uuid.hyphenated().to_string(), key);
}

// ---------------------------------------------------------------------------------------------
// 1. Validation
// ---------------------------------------------------------------------------------------------

type Mutation = fn(&mut pb::CreateSessionRequest);

/// One row per rule of `domain/session.rs`: a minimal valid request, mutated, and the exact
/// field paths the `BadRequest` must carry.
const VALIDATION_ROWS: &[(&str, Mutation, &[&str])] = &[
    ("empty script_id", |r| r.script_id.clear(), &["script_id"]),
    ("script_id with a space", |r| r.script_id = "64915bc7 6a690c".into(), &["script_id"]),
    ("script_id over 128 chars", |r| r.script_id = "x".repeat(129), &["script_id"]),
    ("no contacts", |r| r.contacts.clear(), &["contacts"]),
    (
        "more contacts than max_contacts (3)",
        |r| r.contacts = (0..4).map(|n| contact(&format!("091234567{n}"))).collect(),
        &["contacts"],
    ),
    ("empty phone", |r| r.contacts[0].phone.clear(), &["contacts[0].phone"]),
    ("phone with letters", |r| r.contacts[0].phone = "09123abc78".into(), &["contacts[0].phone"]),
    ("phone too short", |r| r.contacts[0].phone = "0912345".into(), &["contacts[0].phone"]),
    (
        "duplicate phone is reported on the later contact",
        |r| r.contacts = vec![contact("0912345678"), contact("0987654321"), contact("0912345678")],
        &["contacts[2].phone"],
    ),
    ("bad email", |r| r.contacts[0].email = "not-an-email".into(), &["contacts[0].email"]),
    ("email with a space", |r| r.contacts[0].email = "an @example.com".into(), &["contacts[0].email"]),
    (
        "external_contact_code over 128 chars",
        |r| r.contacts[0].external_contact_code = "c".repeat(129),
        &["contacts[0].external_contact_code"],
    ),
    (
        "empty variable key",
        |r| {
            r.contacts[0].variables.insert(String::new(), "value".into());
        },
        &["contacts[0].variables[]"],
    ),
    (
        // Was "with a space": spaces are allowed now (real field codes such as `tên thí sinh`
        // have them); a tab, a control character, is still refused.
        "variable key with a tab is shown escaped",
        |r| {
            r.contacts[0].variables.insert("ho\tten".into(), "value".into());
        },
        &["contacts[0].variables[ho\\tten]"],
    ),
    (
        "variable key with a newline is shown escaped",
        |r| {
            r.contacts[0].variables.insert("ho\nten".into(), "value".into());
        },
        &["contacts[0].variables[ho\\nten]"],
    ),
    (
        "variable key over 64 chars is shown cut",
        |r| {
            r.contacts[0].variables.insert("k".repeat(65), "value".into());
        },
        &["contacts[0].variables[kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…]"],
    ),
    (
        "variable value over 2000 chars",
        |r| {
            r.contacts[0].variables.insert("diem".into(), "9".repeat(2001));
        },
        &["contacts[0].variables[diem]"],
    ),
    (
        "more than 100 variables",
        |r| {
            r.contacts[0].variables = (0..101).map(|n| (format!("k{n}"), "v".into())).collect();
        },
        &["contacts[0].variables"],
    ),
    ("name over 255 chars", |r| r.name = "đ".repeat(256), &["name"]),
    ("name with a newline", |r| r.name = "Đợt 1\nĐợt 2".into(), &["name"]),
    ("caller_id with letters", |r| r.caller_id = "1900abc".into(), &["caller_id"]),
    ("caller_id too short", |r| r.caller_id = "12".into(), &["caller_id"]),
    ("voice 99", |r| r.voice = 99, &["voice"]),
    ("speed 4", |r| r.speed = Some(4), &["speed"]),
    ("speed -4", |r| r.speed = Some(-4), &["speed"]),
    ("retry_count -1", |r| r.retry_count = Some(-1), &["retry_count"]),
    ("retry_count 11", |r| r.retry_count = Some(11), &["retry_count"]),
    ("calls_per_round 0", |r| r.calls_per_round = Some(0), &["calls_per_round"]),
    ("calls_per_round 1001", |r| r.calls_per_round = Some(1001), &["calls_per_round"]),
    (
        "round_interval with nanos",
        |r| r.round_interval = Some(prost_types::Duration { seconds: 30, nanos: 500_000_000 }),
        &["round_interval"],
    ),
    ("round_interval over 24h", |r| r.round_interval = secs(86_401), &["round_interval"]),
    ("round_interval negative", |r| r.round_interval = secs(-1), &["round_interval"]),
    ("retry_interval over 24h", |r| r.retry_interval = secs(86_401), &["retry_interval"]),
    ("start_time 10 minutes in the past", |r| r.start_time = Some(timestamp_from_now(-600, 0)), &["start_time"]),
    (
        "start_time more than 366 days ahead",
        |r| r.start_time = Some(timestamp_from_now(367 * 86_400, 0)),
        &["start_time"],
    ),
    ("start_time with negative nanos", |r| r.start_time = Some(timestamp_from_now(60, -1)), &["start_time"]),
    ("external_session_id with a space", |r| r.external_session_id = "order 42".into(), &["external_session_id"]),
    ("external_session_id over 128 chars", |r| r.external_session_id = "k".repeat(129), &["external_session_id"]),
    ("external_session_id not ASCII", |r| r.external_session_id = "đơn-42".into(), &["external_session_id"]),
];

#[tokio::test]
async fn create_session_rejects_each_rule_violation_with_its_field_path_before_any_upstream_call() {
    let mut app = spawn_app_with(SimConfig::default(), |s| s.service.max_contacts = 3).await;
    for (name, mutate, want) in VALIDATION_ROWS {
        let mut req = minimal("");
        mutate(&mut req);
        let status = create(&mut app, req).await.expect_err(&format!("{name}: accepted"));
        assert_status(&status, Code::InvalidArgument, "INVALID_REQUEST");
        assert_eq!(violation_paths(&status), *want, "{name}");
        // Nothing was sent upstream, so there is no key to report.
        assert_eq!(meta(&status, "external_session_id"), None, "{name}");
        assert_eq!(meta(&status, "upstream_http_status"), None, "{name}");
    }
    let stats = app.sim.stats().await;
    assert_eq!(stats["execute_calls"], 0, "{stats}");
    assert_eq!(stats["auth_calls"], 0, "{stats}");
    assert!(app.sim.sessions().await.is_empty());
}

#[tokio::test]
async fn create_session_accepts_the_boundary_values_of_every_rule() {
    let mut app = spawn_app_with(SimConfig::default(), |s| s.service.max_contacts = 3).await;
    let req = pb::CreateSessionRequest {
        script_id: SCRIPT.into(),
        contacts: vec![contact("+84912345678"), contact("12345678"), contact("123456789012345")],
        name: "đ".repeat(255),
        caller_id: "101".into(),
        voice: pb::Voice::SouthernMaleTienhuy as i32,
        speed: Some(-3),
        retry_count: Some(10),
        calls_per_round: Some(1000),
        round_interval: secs(86_400),
        retry_interval: secs(0),
        start_time: Some(timestamp_from_now(-60, 0)),
        external_session_id: "k".repeat(128),
        auto_pause: false,
        check_variables: false,
        purpose: 0,
        defer_to_calling_hours: false,
        validate_only: false,
    };
    let session = create(&mut app, req).await.expect("boundary values");
    assert_eq!(session.external_session_id, "k".repeat(128));
    assert_eq!(app.sim.sessions().await.len(), 1);
}

#[tokio::test]
async fn create_session_reports_every_violation_at_once_in_one_error() {
    let mut app = spawn_app().await;
    let mut req = pb::CreateSessionRequest {
        script_id: String::new(),
        contacts: vec![contact("0912345678"), contact("bad"), contact("0912345678")],
        name: "x".repeat(256),
        caller_id: "abc".into(),
        voice: 99,
        speed: Some(4),
        retry_count: Some(-1),
        calls_per_round: Some(0),
        round_interval: Some(prost_types::Duration { seconds: 1, nanos: 1 }),
        retry_interval: secs(86_401),
        start_time: Some(timestamp_from_now(-600, 0)),
        external_session_id: "has space".into(),
        auto_pause: true,
        check_variables: false,
        purpose: 0,
        defer_to_calling_hours: false,
        validate_only: false,
    };
    req.contacts[0].email = "nope".into();
    req.contacts[0].variables.insert(String::new(), "x".into());
    let status = create(&mut app, req).await.expect_err("accepted");
    assert_status(&status, Code::InvalidArgument, "INVALID_REQUEST");
    let mut got = violation_paths(&status);
    got.sort();
    let mut want = vec![
        "script_id",
        "contacts[0].email",
        "contacts[0].variables[]",
        "contacts[1].phone",
        "contacts[2].phone",
        "name",
        "caller_id",
        "voice",
        "speed",
        "retry_count",
        "calls_per_round",
        "round_interval",
        "retry_interval",
        "start_time",
        "external_session_id",
    ];
    want.sort();
    assert_eq!(got, want);
    // Every violation has a description.
    let details = status.get_error_details();
    for v in &details.bad_request().unwrap().field_violations {
        assert!(!v.description.is_empty(), "{v:?}");
    }
    let stats = app.sim.stats().await;
    assert_eq!(stats["execute_calls"], 0, "{stats}");
    assert_eq!(stats["auth_calls"], 0, "{stats}");
}

// ---------------------------------------------------------------------------------------------
// 2. Body mapping
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_session_sends_the_upstream_body_field_for_field() {
    let start = timestamp_from_now(3600, 987_654_321);
    let send_time = start.seconds * 1000 + 987;
    let full = |voice: pb::Voice, key: &str| pb::CreateSessionRequest {
        script_id: SCRIPT.into(),
        contacts: vec![
            pb::Contact {
                phone: "+84912345678".into(),
                email: "an@example.com".into(),
                external_contact_code: "KH-001".into(),
                variables: [("ten".to_owned(), "An".to_owned())].into(),
            },
            contact("0987654321"),
        ],
        name: "Đợt 1".into(),
        caller_id: "19001234".into(),
        voice: voice as i32,
        speed: Some(2),
        retry_count: Some(3),
        calls_per_round: Some(20),
        round_interval: secs(120),
        retry_interval: secs(600),
        start_time: Some(start),
        external_session_id: key.into(),
        auto_pause: true,
        check_variables: false,
        purpose: 0,
        defer_to_calling_hours: false,
        validate_only: false,
    };
    let full_body = |voice: &str, key: &str| {
        json!({
            "bot_script_id": SCRIPT,
            "contact_info": [
                {"phone": "+84912345678", "email": "an@example.com", "ext_contact_code": "KH-001",
                 "mapping_variables": {"ten": "An"}},
                {"phone": "0987654321", "mapping_variables": {}},
            ],
            "name": "Đợt 1",
            "cid": "19001234",
            "voice": voice,
            "speed": 2,
            "num_retry": 3,
            "num_per_call": 20,
            "distance_per_call": 120,
            "distance_retry": 600,
            "send_time": send_time,
            "ext_session_id": key,
            "auto_pause": true,
        })
    };
    let zero_options = pb::CreateSessionRequest {
        speed: Some(0),
        retry_count: Some(0),
        round_interval: secs(0),
        retry_interval: secs(0),
        ..minimal("zero-options")
    };
    // (row, request, expected body, expected `cid` query value)
    let rows: Vec<(&str, pb::CreateSessionRequest, Value, &str)> = vec![
        (
            "minimal",
            minimal("min-1"),
            json!({
                "bot_script_id": SCRIPT,
                "contact_info": [{"phone": "0912345678", "mapping_variables": {}}],
                "ext_session_id": "min-1",
            }),
            "",
        ),
        (
            "every option, northern voice",
            full(pb::Voice::NorthernFemaleNgocanh, "full-north"),
            full_body("northern_female_ngocanh", "full-north"),
            "19001234",
        ),
        (
            "every option, southern female voice",
            full(pb::Voice::SouthernFemaleHonganh, "full-south-f"),
            full_body("southern_female_honganh", "full-south-f"),
            "19001234",
        ),
        (
            "every option, southern male voice",
            full(pb::Voice::SouthernMaleTienhuy, "full-south-m"),
            full_body("southern_male_tienhuy", "full-south-m"),
            "19001234",
        ),
        (
            "options set to zero are sent, not dropped",
            zero_options,
            json!({
                "bot_script_id": SCRIPT,
                "contact_info": [{"phone": "0912345678", "mapping_variables": {}}],
                "speed": 0,
                "num_retry": 0,
                "distance_per_call": 0,
                "distance_retry": 0,
                "ext_session_id": "zero-options",
            }),
            "",
        ),
        (
            "empty email and contact code are omitted, variables kept",
            pb::CreateSessionRequest {
                contacts: vec![pb::Contact {
                    phone: "0912345678".into(),
                    email: String::new(),
                    external_contact_code: String::new(),
                    variables: [("b".to_owned(), "2".to_owned()), ("a".to_owned(), String::new())].into(),
                }],
                ..minimal("omit-empty")
            },
            json!({
                "bot_script_id": SCRIPT,
                "contact_info": [{"phone": "0912345678", "mapping_variables": {"a": "", "b": "2"}}],
                "ext_session_id": "omit-empty",
            }),
            "",
        ),
    ];
    let mut app = spawn_app().await;
    for (name, req, _, _) in &rows {
        create(&mut app, req.clone()).await.unwrap_or_else(|s| panic!("{name}: {s:?}"));
    }
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions.len(), rows.len());
    for ((name, _, want_body, want_cid), got) in rows.iter().zip(&sessions) {
        assert_eq!(&got["body"], want_body, "{name}");
        assert_eq!(got["cid"], json!(want_cid), "{name}: cid query");
        assert_eq!(got["ext_session_id"], want_body["ext_session_id"], "{name}: key");
    }
}

#[tokio::test]
async fn create_session_with_empty_caller_id_sends_empty_cid_query_and_no_cid_in_body() {
    let mut app = spawn_app().await;
    let req = pb::CreateSessionRequest { caller_id: String::new(), ..minimal("no-cid") };
    create(&mut app, req).await.expect("created");
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["cid"], json!(""));
    let body = sessions[0]["body"].as_object().expect("body object");
    assert!(!body.contains_key("cid"), "{body:?}");
    // The raw body too: no `"cid"` key at all (not even null or "").
    let raw = raw_sessions(&app.sim).await;
    let (_, raw_body) = raw.split_once("\"body\":").expect("body in raw sessions");
    assert!(!raw_body.contains("\"cid\""), "{raw_body}");
}

#[tokio::test]
async fn create_session_passes_caller_id_in_query_and_body() {
    let mut app = spawn_app().await;
    let req = pb::CreateSessionRequest { caller_id: "+842873001234".into(), ..minimal("with-cid") };
    create(&mut app, req).await.expect("created");
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions[0]["cid"], json!("+842873001234"));
    assert_eq!(sessions[0]["body"]["cid"], json!("+842873001234"));
}

#[tokio::test]
async fn create_session_sends_vietnamese_and_emoji_byte_for_byte_without_escapes() {
    // Precomposed (NFC) and decomposed (NFD) forms, emoji with a skin-tone modifier and a ZWJ
    // sequence, quotes and a backslash: all must arrive exactly as sent.
    let name = "Thông báo điểm thi – đợt 2 🎓";
    let ho_ten_nfc = "Nguyễn Thị Hương";
    let ho_ten_nfd = "Nguye\u{302}\u{303}n Thi\u{323} Hu\u{31b}o\u{31b}\u{300}ng";
    let diem = "9,5 điểm 👍🏽 👨‍👩‍👧 \"xuất sắc\" \\ ✓";
    let req = pb::CreateSessionRequest {
        name: name.into(),
        contacts: vec![pb::Contact {
            phone: "0912345678".into(),
            variables: [
                ("ho_ten".to_owned(), ho_ten_nfc.to_owned()),
                ("ho_ten_nfd".to_owned(), ho_ten_nfd.to_owned()),
                ("diem".to_owned(), diem.to_owned()),
            ]
            .into(),
            ..Default::default()
        }],
        ..minimal("utf8-1")
    };
    let mut app = spawn_app().await;
    create(&mut app, req).await.expect("created");

    let raw = raw_sessions(&app.sim).await;
    for text in [name, ho_ten_nfc, ho_ten_nfd, "Thông báo điểm thi", "👍🏽", "👨‍👩‍👧"] {
        assert!(raw.contains(text), "{text:?} not byte-exact in {raw}");
    }
    // JSON string escaping of `"` and `\` is the only change allowed.
    assert!(raw.contains(r#""9,5 điểm 👍🏽 👨‍👩‍👧 \"xuất sắc\" \\ ✓""#), "{raw}");
    assert!(!raw.contains("\\u"), "unicode escapes in {raw}");

    let sessions = app.sim.sessions().await;
    let body = &sessions[0]["body"];
    assert_eq!(body["name"], json!(name));
    assert_eq!(
        body["contact_info"][0]["mapping_variables"],
        json!({"ho_ten": ho_ten_nfc, "ho_ten_nfd": ho_ten_nfd, "diem": diem})
    );
    // Not normalized: the NFD form keeps its combining marks.
    assert_ne!(ho_ten_nfc, ho_ten_nfd);
    assert_eq!(
        body["contact_info"][0]["mapping_variables"]["ho_ten_nfd"].as_str().unwrap().as_bytes(),
        ho_ten_nfd.as_bytes()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Session key and response
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_session_without_key_generates_a_uuid_v4_and_sends_it_upstream() {
    let mut app = spawn_app().await;
    let session = create(&mut app, minimal("")).await.expect("created");
    assert_uuid_v4(&session.external_session_id);
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["ext_session_id"], json!(session.external_session_id));
    assert_eq!(sessions[0]["body"]["ext_session_id"], json!(session.external_session_id));
    assert_eq!(session.id, sessions[0]["autocall_id"].as_str().unwrap());
    assert_eq!(session.script_id, SCRIPT);
    assert!(session.rejected_contacts.is_empty());

    // A second call without a key gets a fresh key and a second session.
    let second = create(&mut app, minimal("")).await.expect("second");
    assert_uuid_v4(&second.external_session_id);
    assert_ne!(second.external_session_id, session.external_session_id);
    assert_ne!(second.id, session.id);
    assert_eq!(app.sim.sessions().await.len(), 2);
}

#[tokio::test]
async fn create_session_passes_a_given_key_through_unchanged() {
    let mut app = spawn_app().await;
    let key = "crm:order-42/retry_1.A~";
    let session = create(&mut app, minimal(key)).await.expect("created");
    assert_eq!(session.external_session_id, key);
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["ext_session_id"], json!(key));
    assert_eq!(session.id, sessions[0]["autocall_id"].as_str().unwrap());
    assert!(!session.id.is_empty());
    assert_eq!(session.script_id, SCRIPT);
}

#[tokio::test]
async fn create_session_returns_the_script_id_of_the_session_for_another_script() {
    let mut app = spawn_app().await;
    let req = pb::CreateSessionRequest { script_id: "64a922f61900954f5419d503".into(), ..minimal("other-script") };
    let session = create(&mut app, req).await.expect("created");
    assert_eq!(session.script_id, "64a922f61900954f5419d503");
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions[0]["body"]["bot_script_id"], json!("64a922f61900954f5419d503"));
}

// ---------------------------------------------------------------------------------------------
// 4. Per-contact rejections
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_session_lists_dnc_contacts_as_rejected_and_keeps_the_session() {
    let mut app = spawn_app().await;
    let req = pb::CreateSessionRequest {
        contacts: vec![contact("0912345678"), contact("0912345999"), contact("0987654321")],
        ..minimal("dnc-1")
    };
    let session = create(&mut app, req).await.expect("created");
    assert_eq!(
        session.rejected_contacts,
        vec![pb::ContactRejection { phone: "0912345999".into(), reason: "number_dnc".into(), callable_after: None }]
    );
    assert_eq!(app.sim.sessions().await.len(), 1);
}

#[tokio::test]
async fn create_session_with_every_contact_rejected_is_still_ok_and_lists_them_all() {
    let mut app = spawn_app().await;
    let req = pb::CreateSessionRequest {
        contacts: vec![contact("0912345999"), contact("+84987654999"), contact("0281234999")],
        ..minimal("dnc-all")
    };
    let session = create(&mut app, req).await.expect("created");
    let rejected: Vec<(&str, &str)> =
        session.rejected_contacts.iter().map(|r| (r.phone.as_str(), r.reason.as_str())).collect();
    assert_eq!(
        rejected,
        vec![("0912345999", "number_dnc"), ("+84987654999", "number_dnc"), ("0281234999", "number_dnc"),]
    );
    assert!(!session.id.is_empty());
    assert_eq!(app.sim.sessions().await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 5. The error table on the write path
// ---------------------------------------------------------------------------------------------

/// What one upstream failure must look like to the caller.
struct ErrorRow {
    fault: Value,
    code: Code,
    reason: &'static str,
    /// `ErrorInfo.metadata.upstream_code`.
    upstream_code: Option<&'static str>,
    /// `ErrorInfo.metadata.upstream_http_status` (None: no HTTP exchange completed).
    http_status: Option<&'static str>,
    retry_info: bool,
    /// Execute requests the simulator saw (1 = not retried).
    execute_calls: u64,
}

/// Injects `row.fault` on the execute path, calls CreateSession with `key` ("" = generated),
/// and checks the status against the row; returns it for further checks.
async fn check_error_row(key: &str, row: ErrorRow) -> (Status, TestApp) {
    let mut app = spawn_app().await;
    fault_execute(&app.sim, row.fault.clone()).await;
    let status = create(&mut app, minimal(key)).await.expect_err("a failure was expected");
    let fault = &row.fault;
    assert_status(&status, row.code, row.reason);
    assert_eq!(meta(&status, "upstream_code").as_deref(), row.upstream_code, "upstream_code for {fault}: {status:?}");
    assert_eq!(
        meta(&status, "upstream_http_status").as_deref(),
        row.http_status,
        "upstream_http_status for {fault}: {status:?}"
    );
    assert_eq!(has_retry_info(&status), row.retry_info, "RetryInfo for {fault}: {status:?}");
    let reported = meta(&status, "external_session_id").expect("external_session_id metadata");
    if key.is_empty() {
        assert_uuid_v4(&reported);
    } else {
        assert_eq!(reported, key);
    }
    assert_eq!(stat(&app.sim, "execute_calls").await, row.execute_calls, "execute calls for {fault}");
    assert!(app.sim.sessions().await.is_empty(), "no session may be recorded for {fault}");
    // Nothing of the upstream body leaks into the message.
    assert!(!status.message().contains("Simulated"), "{status:?}");
    assert!(!status.message().contains(TEST_KEY), "{status:?}");
    (status, app)
}

fn rejected_row(code: &'static str, grpc: Code, reason: &'static str) -> ErrorRow {
    ErrorRow {
        fault: json!({"error": code}),
        code: grpc,
        reason,
        upstream_code: Some(code),
        http_status: Some("200"),
        retry_info: false,
        execute_calls: 1,
    }
}

#[tokio::test]
async fn create_session_maps_upstream_data_is_required_to_invalid_argument() {
    check_error_row("k-data", rejected_row("data_is_required", Code::InvalidArgument, "UPSTREAM_REJECTED")).await;
}

#[tokio::test]
async fn create_session_maps_upstream_request_body_required_to_invalid_argument() {
    check_error_row("", rejected_row("request_body_required", Code::InvalidArgument, "UPSTREAM_REJECTED")).await;
}

#[tokio::test]
async fn create_session_maps_upstream_limit_service_to_failed_precondition_plan_limit() {
    check_error_row("k-plan", rejected_row("limit_service", Code::FailedPrecondition, "UPSTREAM_PLAN_LIMIT")).await;
}

#[tokio::test]
async fn create_session_maps_upstream_limit_word_to_quota_exceeded() {
    check_error_row("", rejected_row("limit_word", Code::FailedPrecondition, "UPSTREAM_QUOTA_EXCEEDED")).await;
}

#[tokio::test]
async fn create_session_maps_upstream_limit_word_session_to_quota_exceeded() {
    check_error_row(
        "k-word-session",
        rejected_row("limit_word_session", Code::FailedPrecondition, "UPSTREAM_QUOTA_EXCEEDED"),
    )
    .await;
}

#[tokio::test]
async fn create_session_maps_upstream_balance_is_not_enough_to_insufficient_balance() {
    check_error_row(
        "k-balance",
        rejected_row("balance_is_not_enough", Code::FailedPrecondition, "UPSTREAM_INSUFFICIENT_BALANCE"),
    )
    .await;
}

#[tokio::test]
async fn create_session_maps_upstream_api_key_invalid_to_unauthenticated() {
    check_error_row("", rejected_row("api_key_invalid", Code::Unauthenticated, "UPSTREAM_UNAUTHENTICATED")).await;
}

#[tokio::test]
async fn create_session_maps_upstream_tenant_invalid_to_permission_denied() {
    check_error_row("k-tenant", rejected_row("tenant_invalid", Code::PermissionDenied, "UPSTREAM_PERMISSION_DENIED"))
        .await;
}

#[tokio::test]
async fn create_session_maps_an_unknown_upstream_code_to_unknown_and_keeps_the_code() {
    check_error_row("k-new", rejected_row("something_new", Code::Unknown, "UPSTREAM_UNKNOWN_ERROR")).await;
}

#[tokio::test]
async fn create_session_with_a_key_already_used_is_already_exists_and_starts_one_session() {
    let mut app = spawn_app().await;
    let key = "dup-key-1";
    let first = create(&mut app, minimal(key)).await.expect("first");
    let status = create(&mut app, minimal(key)).await.expect_err("duplicate");
    assert_status(&status, Code::AlreadyExists, "SESSION_ALREADY_EXISTS");
    assert_eq!(meta(&status, "upstream_code").as_deref(), Some("ext_session_id_duplicated"));
    assert_eq!(meta(&status, "upstream_http_status").as_deref(), Some("200"));
    assert_eq!(meta(&status, "external_session_id").as_deref(), Some(key));
    assert!(!has_retry_info(&status));
    // The message names neither the key nor the existing session (no upstream text).
    assert!(!status.message().contains(&first.id), "{status:?}");
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["autocall_id"], json!(first.id));
    assert_eq!(stat(&app.sim, "execute_calls").await, 2);
}

#[tokio::test]
async fn create_session_with_http_401_twice_refreshes_the_token_once_then_is_unauthenticated() {
    let (_, app) = check_error_row(
        "k-401",
        ErrorRow {
            fault: json!({"status": 401, "body": "Unauthorized", "content_type": "text/plain", "count": 2}),
            code: Code::Unauthenticated,
            reason: "UPSTREAM_UNAUTHENTICATED",
            upstream_code: None,
            http_status: Some("401"),
            retry_info: false,
            execute_calls: 2,
        },
    )
    .await;
    assert_eq!(stat(&app.sim, "auth_calls").await, 2, "one refresh only");
}

#[tokio::test]
async fn create_session_maps_http_403_to_permission_denied() {
    check_error_row(
        "k-403",
        ErrorRow {
            fault: json!({"status": 403, "body": "Forbidden", "content_type": "text/plain"}),
            code: Code::PermissionDenied,
            reason: "UPSTREAM_PERMISSION_DENIED",
            upstream_code: None,
            http_status: Some("403"),
            retry_info: false,
            execute_calls: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn create_session_maps_http_429_to_resource_exhausted_with_the_retry_after_delay() {
    let (status, _app) = check_error_row(
        "k-429",
        ErrorRow {
            fault: json!({"status": 429, "retry_after": 7}),
            code: Code::ResourceExhausted,
            reason: "UPSTREAM_RATE_LIMITED",
            upstream_code: Some("http_429"),
            http_status: Some("429"),
            retry_info: true,
            execute_calls: 1,
        },
    )
    .await;
    let details = status.get_error_details();
    assert_eq!(details.retry_info().unwrap().retry_delay, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn create_session_maps_http_500_to_internal() {
    check_error_row(
        "",
        ErrorRow {
            fault: json!({"status": 500}),
            code: Code::Internal,
            reason: "UPSTREAM_INTERNAL_ERROR",
            upstream_code: Some("http_500"),
            http_status: Some("500"),
            retry_info: false,
            execute_calls: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn create_session_maps_http_502_to_unavailable_without_retrying_the_write() {
    check_error_row(
        "k-502",
        ErrorRow {
            fault: json!({"status": 502, "body": "<html>Bad Gateway</html>", "content_type": "text/html"}),
            code: Code::Unavailable,
            reason: "UPSTREAM_UNAVAILABLE",
            upstream_code: None,
            http_status: Some("502"),
            retry_info: true,
            execute_calls: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn create_session_maps_http_504_to_deadline_exceeded_without_retrying_the_write() {
    check_error_row(
        "",
        ErrorRow {
            fault: json!({"status": 504}),
            code: Code::DeadlineExceeded,
            reason: "UPSTREAM_TIMEOUT",
            upstream_code: Some("http_504"),
            http_status: Some("504"),
            retry_info: false,
            execute_calls: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn create_session_with_a_dropped_connection_is_outcome_unknown_and_not_retried() {
    check_error_row(
        "k-drop",
        ErrorRow {
            fault: json!({"drop": true}),
            code: Code::Unavailable,
            reason: "UPSTREAM_OUTCOME_UNKNOWN",
            upstream_code: None,
            http_status: None,
            retry_info: true,
            execute_calls: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn create_session_with_a_truncated_answer_is_internal_malformed() {
    check_error_row(
        "k-trunc",
        ErrorRow {
            fault: json!({"truncate": true}),
            code: Code::Internal,
            reason: "UPSTREAM_MALFORMED",
            upstream_code: None,
            http_status: Some("200"),
            retry_info: false,
            execute_calls: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn create_session_with_a_non_json_answer_is_internal_malformed() {
    check_error_row(
        "",
        ErrorRow {
            fault: json!({"body": "<html><body>Service maintenance</body></html>", "content_type": "text/html"}),
            code: Code::Internal,
            reason: "UPSTREAM_MALFORMED",
            upstream_code: None,
            http_status: Some("200"),
            retry_info: false,
            execute_calls: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn create_session_with_a_success_envelope_without_autocall_id_is_malformed() {
    check_error_row(
        "k-noid",
        ErrorRow {
            fault: json!({"body": r#"{"status_code":9999,"payload":{"bot_script_id":"64915bc76a690c0edad14723"}}"#}),
            code: Code::Internal,
            reason: "UPSTREAM_MALFORMED",
            upstream_code: None,
            http_status: Some("200"),
            retry_info: false,
            execute_calls: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn create_session_maps_http_404_from_the_upstream_to_internal_misconfiguration() {
    check_error_row(
        "k-404",
        ErrorRow {
            fault: json!({"status": 404, "body": "Not Found", "content_type": "text/plain"}),
            code: Code::Internal,
            reason: "UPSTREAM_ENDPOINT_NOT_FOUND",
            upstream_code: None,
            http_status: Some("404"),
            retry_info: false,
            execute_calls: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn create_session_reads_a_failure_envelope_on_http_400_as_a_business_error() {
    check_error_row(
        "k-400",
        ErrorRow {
            fault: json!({"status": 400, "error": "data_is_required"}),
            code: Code::InvalidArgument,
            reason: "UPSTREAM_REJECTED",
            upstream_code: Some("data_is_required"),
            http_status: Some("400"),
            retry_info: false,
            execute_calls: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn create_session_error_carries_the_callers_request_id() {
    let mut app = spawn_app().await;
    fault_execute(&app.sim, json!({"error": "limit_service"})).await;
    let mut req = Request::new(minimal("k-rid"));
    req.metadata_mut().insert("x-request-id", "cs-req-0042".parse().unwrap());
    let status = create_request(&mut app, req).await.expect_err("rejected");
    assert_status(&status, Code::FailedPrecondition, "UPSTREAM_PLAN_LIMIT");
    let details = status.get_error_details();
    assert_eq!(details.request_info().unwrap().request_id, "cs-req-0042");
}

// ---------------------------------------------------------------------------------------------
// 6. Deadlines
// ---------------------------------------------------------------------------------------------

/// Asserts a deadline answer that the facade produced itself (with `ErrorInfo` and a request
/// id): tonic's own deadline timer would answer CANCELLED without details.
fn assert_facade_deadline(status: &Status) {
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(!reason(status).is_empty());
    let details = status.get_error_details();
    assert!(details.request_info().is_some_and(|r| !r.request_id.is_empty()), "{status:?}");
    // The exchange never completed: no HTTP status to report.
    assert_eq!(meta(status, "upstream_http_status"), None, "{status:?}");
    assert!(!has_retry_info(status), "{status:?}");
}

/// A CreateSession against an upstream that answers after 3 s; returns the status and how long
/// the caller waited.
async fn slow_upstream_call(app: &mut TestApp, key: &str, caller_timeout: Option<Duration>) -> (Status, Duration) {
    fault_execute(&app.sim, json!({"delay_ms": 3000})).await;
    let mut req = Request::new(minimal(key));
    if let Some(t) = caller_timeout {
        req.set_timeout(t);
    }
    let started = Instant::now();
    let status = create_request(app, req).await.expect_err("deadline");
    (status, started.elapsed())
}

#[tokio::test]
async fn create_session_answers_deadline_exceeded_not_cancelled_within_the_caller_deadline() {
    let mut app = spawn_app().await;
    let (status, elapsed) = slow_upstream_call(&mut app, "k-deadline", Some(Duration::from_millis(1000))).await;
    assert_facade_deadline(&status);
    assert_eq!(meta(&status, "external_session_id").as_deref(), Some("k-deadline"));
    assert!(elapsed < Duration::from_millis(2500), "answered after {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(800), "answered early: {elapsed:?}");
}

#[tokio::test]
async fn create_session_upstream_timeout_bounds_the_call_when_the_caller_sets_no_deadline() {
    let mut app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.timeout = Duration::from_millis(300);
    })
    .await;
    let (status, elapsed) = slow_upstream_call(&mut app, "", None).await;
    assert_facade_deadline(&status);
    assert_uuid_v4(&meta(&status, "external_session_id").unwrap());
    assert!(elapsed < Duration::from_millis(2500), "answered after {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(250), "answered early: {elapsed:?}");
}

#[tokio::test]
async fn create_session_upstream_timeout_shorter_than_the_caller_deadline_wins() {
    let mut app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.timeout = Duration::from_millis(300);
    })
    .await;
    let (status, elapsed) = slow_upstream_call(&mut app, "k-both", Some(Duration::from_secs(10))).await;
    assert_facade_deadline(&status);
    assert_eq!(meta(&status, "external_session_id").as_deref(), Some("k-both"));
    assert!(elapsed < Duration::from_secs(2), "answered after {elapsed:?}");
}

#[tokio::test]
async fn create_session_past_the_caller_deadline_has_reason_deadline_exceeded() {
    let mut app = spawn_app().await;
    let (status, _) = slow_upstream_call(&mut app, "k-reason", Some(Duration::from_millis(1000))).await;
    assert_status(&status, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
}

#[tokio::test]
async fn create_session_past_the_upstream_timeout_has_reason_deadline_exceeded() {
    let mut app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.timeout = Duration::from_millis(300);
    })
    .await;
    let (status, _) = slow_upstream_call(&mut app, "k-reason-2", None).await;
    assert_status(&status, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
}

// ---------------------------------------------------------------------------------------------
// 7. Retries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_session_retries_a_503_once_with_the_same_key_and_starts_one_session() {
    let mut app = spawn_app().await;
    fault_execute(&app.sim, json!({"status": 503})).await;
    let session = create(&mut app, minimal("")).await.expect("retried to OK");
    assert_uuid_v4(&session.external_session_id);
    assert_eq!(stat(&app.sim, "execute_calls").await, 2);
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["ext_session_id"], json!(session.external_session_id));
    assert_eq!(session.id, sessions[0]["autocall_id"].as_str().unwrap());
}

#[tokio::test]
async fn create_session_with_the_upstream_unreachable_is_unavailable_with_retry_info() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.url = Some(format!("http://127.0.0.1:{port}"));
    })
    .await;
    let started = Instant::now();
    let status = create(&mut app, minimal("k-refused")).await.expect_err("unreachable");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    assert!(has_retry_info(&status), "{status:?}");
    assert_eq!(meta(&status, "external_session_id").as_deref(), Some("k-refused"));
    assert_eq!(meta(&status, "upstream_http_status"), None);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The simulator behind the default settings was never reached.
    assert_eq!(stat(&app.sim, "auth_calls").await, 0);
}

#[tokio::test]
async fn create_session_refreshes_the_token_after_a_401_and_starts_one_session() {
    let mut app = spawn_app().await;
    fault_execute(&app.sim, json!({"status": 401, "body": "Unauthorized", "content_type": "text/plain"})).await;
    let session = create(&mut app, minimal("k-refresh")).await.expect("OK");
    assert_eq!(session.external_session_id, "k-refresh");
    let stats = app.sim.stats().await;
    assert_eq!(stats["auth_calls"], 2, "{stats}");
    assert_eq!(stats["execute_calls"], 2, "{stats}");
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["ext_session_id"], json!("k-refresh"));
}

#[tokio::test]
async fn create_session_refreshes_an_expired_token_and_starts_one_session() {
    let mut app = spawn_app().await;
    // Warm the token, then expire every token the simulator issued.
    create(&mut app, minimal("k-warm")).await.expect("warm");
    fault_execute(&app.sim, json!({"expire_tokens": true})).await;
    let session = create(&mut app, minimal("k-expired")).await.expect("OK");
    assert_eq!(session.external_session_id, "k-expired");
    let stats = app.sim.stats().await;
    assert_eq!(stats["auth_calls"], 2, "{stats}");
    assert_eq!(stats["execute_calls"], 3, "{stats}");
    assert_eq!(stats["unauthorized"], 1, "{stats}");
    let keys: Vec<Value> = app.sim.sessions().await.iter().map(|s| s["ext_session_id"].clone()).collect();
    assert_eq!(keys, vec![json!("k-warm"), json!("k-expired")]);
}

#[tokio::test]
async fn create_session_does_not_retry_a_503_once_the_retry_budget_is_spent() {
    let mut app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.retry_budget_min = 0;
        s.upstream.retry_budget_percent = 0;
    })
    .await;
    fault_execute(&app.sim, json!({"status": 503, "retry_after": 5})).await;
    let status = create(&mut app, minimal("k-budget")).await.expect_err("not retried");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    assert_eq!(
        status.get_error_details().retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(5)),
        "RetryInfo from Retry-After"
    );
    assert_eq!(meta(&status, "upstream_http_status").as_deref(), Some("503"));
    assert_eq!(meta(&status, "external_session_id").as_deref(), Some("k-budget"));
    assert_eq!(stat(&app.sim, "execute_calls").await, 1);
    assert!(app.sim.sessions().await.is_empty());
}

#[tokio::test]
async fn create_session_gives_up_after_three_503s() {
    let mut app = spawn_app().await;
    fault_execute(&app.sim, json!({"status": 503, "count": 5})).await;
    let status = create(&mut app, minimal("k-3x503")).await.expect_err("gave up");
    assert_status(&status, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    assert!(has_retry_info(&status));
    assert_eq!(stat(&app.sim, "execute_calls").await, 3);
    assert!(app.sim.sessions().await.is_empty());
}
