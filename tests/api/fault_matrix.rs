//! The fault matrix: every upstream fault × every RPC → the documented code and reason, answered
//! within the caller's deadline, the process still serving afterwards.
//!
//! `ROWS` is the table (one row per fault, the expected outcome for reads and for the
//! session-starting writes); `docs/fault-matrix.md` is rendered from it and a test keeps the two in
//! step (`UPDATE_FAULT_MATRIX=1 cargo test --test api fault_matrix` rewrites the document).
//! Each RPC's rows run concurrently, each against its own facade and simulator, so the whole
//! matrix takes about as long as its slowest row. Also here: an access-token expiry in the middle
//! of a burst, and junk protobuf bytes from a caller.

use std::{sync::Arc, time::Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use serde_json::json;
use tonic::Request;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use super::*;

/// "Thông báo điểm thi" in the built-in catalogue.
const SCRIPT: &str = "64915bc76a690c0edad14723";
const LIST_PATH: &str = "/api/call_bot/script/list";
const EXECUTE_PATH: &str = "/api/call_bot/execute_by_phone";
const AUTH_PATH: &str = "/api/auth";
/// The deadline every matrix call carries.
const DEADLINE: Duration = Duration::from_secs(2);
/// Scheduling slack on top of the deadline (two shared cores): "answered within the deadline".
const SLACK: Duration = Duration::from_millis(750);
/// `--upstream-attempt-timeout` of the matrix facades (ms): slow reads give up in well under
/// `DEADLINE`.
const ATTEMPT_MS: u64 = 300;
/// The attempt timeout of the huge-body row: streaming 16 MiB on a loaded machine must not be cut
/// by the attempt timeout (a retry would then hide the cap).
const HUGE_ATTEMPT_MS: u64 = 1500;
/// The body size of the "huge body" row: four times the client's 16 MiB cap.
const HUGE: u64 = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    ListScripts,
    GetScript,
    CreateSession,
    CreateCampaign,
}

const RPCS: [Rpc; 4] = [Rpc::ListScripts, Rpc::GetScript, Rpc::CreateSession, Rpc::CreateCampaign];

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::ListScripts => "ListScripts",
            Rpc::GetScript => "GetScript",
            Rpc::CreateSession => "CreateSession",
            Rpc::CreateCampaign => "CreateCampaign",
        }
    }

    /// Whether the RPC starts a session (POST execute_by_phone) rather than reading the list.
    fn writes(self) -> bool {
        matches!(self, Rpc::CreateSession | Rpc::CreateCampaign)
    }

    fn path(self) -> &'static str {
        if self.writes() { EXECUTE_PATH } else { LIST_PATH }
    }

    /// The simulator counter of the endpoint the RPC calls.
    fn counter(self) -> &'static str {
        if self.writes() { "execute_calls" } else { "script_list_calls" }
    }

    /// The upstream session key a call with `key` uses (a campaign's first chunk is `<id>-0`).
    fn session_key(self, key: &str) -> String {
        match self {
            Rpc::CreateCampaign => format!("{key}-0"),
            _ => key.to_owned(),
        }
    }
}

/// The outcome a row expects.
#[derive(Clone, Copy, Debug)]
enum Want {
    Ok,
    Fail {
        code: Code,
        reason: &'static str,
        /// `ErrorInfo.metadata.upstream_http_status` (None: no HTTP answer was read).
        http_status: Option<&'static str>,
        /// `RetryInfo.retry_delay` in seconds (None: no RetryInfo).
        retry_secs: Option<u64>,
    },
}

/// What one kind of RPC (reads or writes) must see under a fault.
#[derive(Clone, Copy, Debug)]
struct Expect {
    want: Want,
    /// Requests the RPC's upstream endpoint saw (the retries); not checked when the upstream is
    /// unreachable.
    calls: u64,
    /// Writes: sessions the upstream recorded under the call's key (None: at most one, timing
    /// decides).
    sessions: Option<usize>,
}

/// How a row's fault is injected.
#[derive(Clone, Copy)]
enum Inject {
    /// The facade points at a port nobody listens on.
    Refused,
    /// A `POST /_sim/faults` object for the RPC's endpoint (the path is added).
    Sim(fn(Rpc) -> Value),
    /// A `POST /_sim/faults` object for the token endpoint, `GET /api/auth` (the path is added).
    Auth(fn(Rpc) -> Value),
}

struct Row {
    /// The fault, as the documentation names it.
    fault: &'static str,
    /// How the simulator produces it.
    how: &'static str,
    inject: Inject,
    read: Expect,
    write: Expect,
    /// `GET /api/auth` calls expected (None: not checked).
    auth_calls: Option<u64>,
    /// `--upstream-attempt-timeout` of the row's facade (ms).
    attempt_ms: u64,
    /// Most `body_size` padding the simulator may have handed out: a reader that stops at the
    /// cap stops it well before a reader that takes everything would (None: not checked).
    max_padding_sent: Option<u64>,
}

const fn fail(code: Code, reason: &'static str, http_status: Option<&'static str>, retry_secs: Option<u64>) -> Want {
    Want::Fail { code, reason, http_status, retry_secs }
}

const fn read(want: Want, calls: u64) -> Expect {
    Expect { want, calls, sessions: None }
}

const fn write(want: Want, calls: u64, sessions: Option<usize>) -> Expect {
    Expect { want, calls, sessions }
}

const MALFORMED_200: Want = fail(Code::Internal, "UPSTREAM_MALFORMED", Some("200"), None);

/// A body that is valid JSON except for bytes that are not UTF-8 inside a string the facade reads.
fn non_utf8_body(rpc: Rpc) -> Value {
    let raw: &[u8] = if rpc.writes() {
        b"{\"status_code\":9999,\"payload\":{\"autocall_id\":\"a\xff\xfe\",\"bot_script_id\":\"b\"}}"
    } else {
        b"{\"status_code\":9999,\"payload\":[{\"id\":\"64915bc76a690c0edad14723\",\"name\":\"\xc4\x90i\xff\xfem\"}]}"
    };
    use base64::Engine as _;
    json!({ "body_base64": base64::engine::general_purpose::STANDARD.encode(raw) })
}

/// A success written as a JSON array, `[status_code, payload]` with the payload the RPC expects:
/// read by position into the envelope's fields, it was taken for a success.
fn array_success(rpc: Rpc) -> Value {
    let payload = if rpc.writes() {
        format!(r#"{{"autocall_id":"a1","bot_script_id":"{SCRIPT}"}}"#)
    } else {
        format!(r#"[{{"id":"{SCRIPT}","name":"x"}}]"#)
    };
    json!({ "status": 200, "body": format!("[9999,{payload}]") })
}

/// A row whose fault is `{"status": 200, "body": BODY}`: valid JSON that is not an object.
const fn not_an_object_200(fault: &'static str, how: &'static str, inject: fn(Rpc) -> Value) -> Row {
    Row {
        fault,
        how,
        inject: Inject::Sim(inject),
        read: read(MALFORMED_200, 1),
        write: write(MALFORMED_200, 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    }
}

/// 100,000 arrays, one in the other.
fn deep_array() -> String {
    let depth = 100_000;
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// A success envelope whose payload is 100,000 arrays deep.
fn nested_payload(_: Rpc) -> Value {
    json!({ "status": 200, "body": format!("{{\"status_code\":9999,\"payload\":{}}}", deep_array()) })
}

/// A success envelope of the expected shape but for a key the facade ignores, 100,000 arrays deep.
fn nested_ignored_key(rpc: Rpc) -> Value {
    let deep = deep_array();
    let payload = if rpc.writes() {
        format!("{{\"autocall_id\":\"a1\",\"bot_script_id\":\"{SCRIPT}\",\"extra\":{deep}}}")
    } else {
        format!("[{{\"id\":\"{SCRIPT}\",\"name\":\"x\",\"extra\":{deep}}}]")
    };
    json!({ "status": 200, "body": format!("{{\"status_code\":9999,\"payload\":{payload}}}") })
}

static ROWS: &[Row] = &[
    Row {
        fault: "connection refused",
        how: "upstream URL on a closed port",
        inject: Inject::Refused,
        read: read(fail(Code::Unavailable, "UPSTREAM_UNAVAILABLE", None, Some(1)), 0),
        write: write(fail(Code::Unavailable, "UPSTREAM_UNAVAILABLE", None, Some(1)), 0, None),
        auth_calls: None,
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "reset before headers",
        how: r#"`{"drop": true, "count": 3}`"#,
        inject: Inject::Sim(|_| json!({"drop": true, "count": 3})),
        read: read(fail(Code::Unavailable, "UPSTREAM_CONNECTION_LOST", None, Some(1)), 3),
        write: write(fail(Code::Unavailable, "UPSTREAM_OUTCOME_UNKNOWN", None, Some(1)), 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "reset after headers",
        how: r#"`{"abort_after_headers": true}`"#,
        inject: Inject::Sim(|_| json!({"abort_after_headers": true})),
        read: read(MALFORMED_200, 1),
        write: write(MALFORMED_200, 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "truncated body",
        how: r#"`{"truncate": true}`"#,
        inject: Inject::Sim(|_| json!({"truncate": true})),
        read: read(MALFORMED_200, 1),
        write: write(MALFORMED_200, 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "slow headers (2.5 s)",
        how: r#"`{"delay_ms": 2500, "count": 3}`"#,
        inject: Inject::Sim(|_| json!({"delay_ms": 2500, "count": 3})),
        read: read(fail(Code::DeadlineExceeded, "UPSTREAM_TIMEOUT", None, None), 3),
        write: write(fail(Code::DeadlineExceeded, "DEADLINE_EXCEEDED", None, None), 1, None),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "slow body (headers and a first piece, then 3 more 0.8 s apart)",
        how: r#"`{"body_chunk_delay_ms": 800, "body_chunks": 4, "count": 3}`"#,
        inject: Inject::Sim(|_| json!({"body_chunk_delay_ms": 800, "body_chunks": 4, "count": 3})),
        read: read(fail(Code::DeadlineExceeded, "UPSTREAM_TIMEOUT", None, None), 3),
        write: write(fail(Code::DeadlineExceeded, "DEADLINE_EXCEEDED", None, None), 1, Some(1)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "401 with an HTML body (twice)",
        how: r#"`{"status": 401, "body": "<html>…", "content_type": "text/html", "count": 2}`"#,
        inject: Inject::Sim(|_| {
            json!({"status": 401, "body": "<html><body>401 Unauthorized</body></html>",
                   "content_type": "text/html", "count": 2})
        }),
        read: read(fail(Code::Unauthenticated, "UPSTREAM_UNAUTHENTICATED", Some("401"), None), 2),
        write: write(fail(Code::Unauthenticated, "UPSTREAM_UNAUTHENTICATED", Some("401"), None), 2, Some(0)),
        auth_calls: Some(2),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "429 with Retry-After: 7",
        how: r#"`{"status": 429, "retry_after": 7}`"#,
        inject: Inject::Sim(|_| json!({"status": 429, "retry_after": 7})),
        read: read(fail(Code::ResourceExhausted, "UPSTREAM_RATE_LIMITED", Some("429"), Some(7)), 1),
        write: write(fail(Code::ResourceExhausted, "UPSTREAM_RATE_LIMITED", Some("429"), Some(7)), 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "429 without Retry-After",
        how: r#"`{"status": 429}`"#,
        inject: Inject::Sim(|_| json!({"status": 429})),
        read: read(fail(Code::ResourceExhausted, "UPSTREAM_RATE_LIMITED", Some("429"), Some(1)), 1),
        write: write(fail(Code::ResourceExhausted, "UPSTREAM_RATE_LIMITED", Some("429"), Some(1)), 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "500",
        how: r#"`{"status": 500}`"#,
        inject: Inject::Sim(|_| json!({"status": 500})),
        read: read(fail(Code::Internal, "UPSTREAM_INTERNAL_ERROR", Some("500"), None), 1),
        write: write(fail(Code::Internal, "UPSTREAM_INTERNAL_ERROR", Some("500"), None), 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "502 (three times)",
        how: r#"`{"status": 502, "count": 3}`"#,
        inject: Inject::Sim(|_| json!({"status": 502, "count": 3})),
        read: read(fail(Code::Unavailable, "UPSTREAM_UNAVAILABLE", Some("502"), Some(1)), 3),
        write: write(fail(Code::Unavailable, "UPSTREAM_UNAVAILABLE", Some("502"), Some(1)), 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "503 (three times)",
        how: r#"`{"status": 503, "count": 3}`"#,
        inject: Inject::Sim(|_| json!({"status": 503, "count": 3})),
        read: read(fail(Code::Unavailable, "UPSTREAM_UNAVAILABLE", Some("503"), Some(1)), 3),
        write: write(fail(Code::Unavailable, "UPSTREAM_UNAVAILABLE", Some("503"), Some(1)), 3, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "503 once, then healthy",
        how: r#"`{"status": 503}`"#,
        inject: Inject::Sim(|_| json!({"status": 503})),
        read: read(Want::Ok, 2),
        write: write(Want::Ok, 2, Some(1)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "504 (three times)",
        how: r#"`{"status": 504, "count": 3}`"#,
        inject: Inject::Sim(|_| json!({"status": 504, "count": 3})),
        read: read(fail(Code::DeadlineExceeded, "UPSTREAM_TIMEOUT", Some("504"), None), 3),
        write: write(fail(Code::DeadlineExceeded, "UPSTREAM_TIMEOUT", Some("504"), None), 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "non-UTF-8 bytes in a string",
        how: r#"`{"body_base64": …}` (`\xff\xfe` in a name / `autocall_id`)"#,
        inject: Inject::Sim(non_utf8_body),
        read: read(MALFORMED_200, 1),
        write: write(MALFORMED_200, 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "64 MiB body (valid JSON, chunked)",
        how: r#"`{"body_size": 67108864}` (the real answer padded with spaces)"#,
        inject: Inject::Sim(|_| json!({"body_size": HUGE})),
        read: read(MALFORMED_200, 1),
        write: write(MALFORMED_200, 1, Some(1)),
        auth_calls: Some(1),
        attempt_ms: HUGE_ATTEMPT_MS,
        max_padding_sent: Some(HUGE / 2),
    },
    Row {
        fault: "wrong content type, valid JSON",
        how: r#"`{"content_type": "text/html"}` (the real answer)"#,
        inject: Inject::Sim(|_| json!({"content_type": "text/html"})),
        read: read(Want::Ok, 1),
        write: write(Want::Ok, 1, Some(1)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "HTML page with 200",
        how: r#"`{"status": 200, "body": "<!DOCTYPE html>…", "content_type": "text/html"}`"#,
        inject: Inject::Sim(|_| {
            json!({"status": 200, "body": "<!DOCTYPE html><html><body>Maintenance</body></html>",
                   "content_type": "text/html"})
        }),
        read: read(MALFORMED_200, 1),
        write: write(MALFORMED_200, 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "empty body with 200",
        how: r#"`{"status": 200, "body": ""}`"#,
        inject: Inject::Sim(|_| json!({"status": 200, "body": ""})),
        read: read(MALFORMED_200, 1),
        write: write(MALFORMED_200, 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    not_an_object_200(
        "JSON array with 200",
        r#"`{"status": 200, "body": "[-9999]"}`"#,
        |_| json!({"status": 200, "body": "[-9999]"}),
    ),
    not_an_object_200(
        "JSON array with 200, shaped like a success",
        r#"`{"status": 200, "body": "[9999, …]"}` (the RPC's payload in second place)"#,
        array_success,
    ),
    not_an_object_200(
        "JSON number with 200",
        r#"`{"status": 200, "body": "-9999"}`"#,
        |_| json!({"status": 200, "body": "-9999"}),
    ),
    not_an_object_200(
        "JSON string with 200",
        r#"`{"status": 200, "body": "\"-9999\""}`"#,
        |_| json!({"status": 200, "body": "\"-9999\""}),
    ),
    not_an_object_200(
        "`true` with 200",
        r#"`{"status": 200, "body": "true"}`"#,
        |_| json!({"status": 200, "body": "true"}),
    ),
    not_an_object_200(
        "`null` with 200",
        r#"`{"status": 200, "body": "null"}`"#,
        |_| json!({"status": 200, "body": "null"}),
    ),
    Row {
        // Not an envelope, so no failure code: the HTTP status speaks, as for an HTML page.
        fault: "JSON array with 400",
        how: r#"`{"status": 400, "body": "[-9999]"}`"#,
        inject: Inject::Sim(|_| json!({"status": 400, "body": "[-9999]"})),
        read: read(fail(Code::Internal, "UPSTREAM_HTTP_ERROR", Some("400"), None), 1),
        write: write(fail(Code::Internal, "UPSTREAM_HTTP_ERROR", Some("400"), None), 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "deeply nested JSON as the payload (100,000 levels)",
        how: r#"`{"status": 200, "body": "{\"status_code\":9999,\"payload\":[[[…]]]}"}`"#,
        inject: Inject::Sim(nested_payload),
        read: read(MALFORMED_200, 1),
        write: write(MALFORMED_200, 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "deeply nested JSON in an ignored key (100,000 levels)",
        how: r#"`{"status": 200, "body": …}`: a valid answer with `"extra": [[[…]]]` in the payload"#,
        inject: Inject::Sim(nested_ignored_key),
        read: read(Want::Ok, 1),
        write: write(Want::Ok, 1, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "token endpoint: 503 (three times)",
        how: r#"`{"path": "/api/auth", "status": 503, "count": 3}`"#,
        inject: Inject::Auth(|_| json!({"status": 503, "count": 3})),
        read: read(fail(Code::Unavailable, "UPSTREAM_UNAVAILABLE", Some("503"), Some(1)), 0),
        write: write(fail(Code::Unavailable, "UPSTREAM_UNAVAILABLE", Some("503"), Some(1)), 0, Some(0)),
        auth_calls: Some(3),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "token endpoint: reset before headers (three times)",
        how: r#"`{"path": "/api/auth", "drop": true, "count": 3}`"#,
        inject: Inject::Auth(|_| json!({"drop": true, "count": 3})),
        read: read(fail(Code::Unavailable, "UPSTREAM_CONNECTION_LOST", None, Some(1)), 0),
        // Nothing was sent to execute_by_phone: not "outcome unknown".
        write: write(fail(Code::Unavailable, "UPSTREAM_UNAVAILABLE", None, Some(1)), 0, Some(0)),
        auth_calls: Some(3),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "token endpoint: 401 with an HTML body",
        how: r#"`{"path": "/api/auth", "status": 401, "body": "<html>…", "content_type": "text/html"}`"#,
        inject: Inject::Auth(
            |_| json!({"status": 401, "body": "<html><body>401 Unauthorized</body></html>", "content_type": "text/html"}),
        ),
        read: read(fail(Code::Unauthenticated, "UPSTREAM_UNAUTHENTICATED", Some("401"), None), 0),
        write: write(fail(Code::Unauthenticated, "UPSTREAM_UNAUTHENTICATED", Some("401"), None), 0, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "token endpoint: HTML page with 200",
        how: r#"`{"path": "/api/auth", "status": 200, "body": "<!DOCTYPE html>…", "content_type": "text/html"}`"#,
        inject: Inject::Auth(|_| {
            json!({"status": 200, "body": "<!DOCTYPE html><html><body>Maintenance</body></html>",
                   "content_type": "text/html"})
        }),
        read: read(MALFORMED_200, 0),
        write: write(MALFORMED_200, 0, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
    Row {
        fault: "token endpoint: JSON array with 200",
        how: r#"`{"path": "/api/auth", "status": 200, "body": "[9999, {\"access_token\": …}]"}`"#,
        inject: Inject::Auth(
            |_| json!({"status": 200, "body": "[9999,{\"access_token\":\"eyJhbGciOiJub25lIn0.e30.x\"}]"}),
        ),
        read: read(MALFORMED_200, 0),
        write: write(MALFORMED_200, 0, Some(0)),
        auth_calls: Some(1),
        attempt_ms: ATTEMPT_MS,
        max_padding_sent: None,
    },
];

/// One call of `rpc` with the matrix deadline; `key` names the session (writes). Checks the shape
/// of a success.
async fn call(client: &mut CallBotServiceClient<Channel>, rpc: Rpc, key: &str) -> Result<(), Status> {
    match rpc {
        Rpc::ListScripts => {
            let mut req = Request::new(pb::ListScriptsRequest::default());
            req.set_timeout(DEADLINE);
            let mut stream = client.list_scripts(req).await?.into_inner();
            let mut ids = Vec::new();
            while let Some(m) = stream.message().await? {
                ids.push(m.script.expect("script").id);
            }
            assert!(ids.iter().any(|id| id == SCRIPT), "{SCRIPT} missing from {ids:?}");
        }
        Rpc::GetScript => {
            let mut req = Request::new(pb::GetScriptRequest { script_id: SCRIPT.into() });
            req.set_timeout(DEADLINE);
            let script = client.get_script(req).await?.into_inner().script.expect("script");
            assert_eq!(script.id, SCRIPT);
        }
        Rpc::CreateSession => {
            let mut req = Request::new(pb::CreateSessionRequest {
                script_id: SCRIPT.into(),
                contacts: vec![pb::Contact { phone: "0912345678".into(), ..Default::default() }],
                external_session_id: key.into(),
                ..Default::default()
            });
            req.set_timeout(DEADLINE);
            let session = client.create_session(req).await?.into_inner().session.expect("session");
            assert_eq!(session.external_session_id, key);
            assert!(!session.id.is_empty());
        }
        Rpc::CreateCampaign => {
            use pb::create_campaign_request::Item;
            let spec = pb::CampaignSpec { campaign_id: key.into(), script_id: SCRIPT.into(), ..Default::default() };
            let contacts = vec![pb::Contact { phone: "0912345678".into(), ..Default::default() }];
            let messages = vec![
                pb::CreateCampaignRequest { item: Some(Item::Spec(spec)) },
                pb::CreateCampaignRequest { item: Some(Item::Batch(pb::ContactBatch { contacts })) },
            ];
            let mut req = Request::new(tokio_stream::iter(messages));
            req.set_timeout(DEADLINE);
            let mut stream = client.create_campaign(req).await?.into_inner();
            let mut answers = Vec::new();
            while let Some(m) = stream.message().await? {
                answers.push(m);
            }
            assert_eq!(answers.len(), 1, "{answers:?}");
            let session = answers[0].session.as_ref().expect("session");
            assert_eq!(session.external_session_id, format!("{key}-0"));
            assert!(!answers[0].resumed && !session.id.is_empty());
        }
    }
    Ok(())
}

/// Sessions the simulator recorded under `key`.
async fn sessions_with_key(sim: &TestSim, key: &str) -> usize {
    sim.sessions().await.iter().filter(|s| s["ext_session_id"] == json!(key)).count()
}

/// Asserts that the facade still answers: health is SERVING and, when the upstream is reachable,
/// the same RPC succeeds once the faults are cleared.
async fn assert_still_up(app: &TestApp, rpc: Rpc, key: &str, upstream_reachable: bool, what: &str) {
    let mut health = HealthClient::new(app.channel().await);
    let got = health.check(HealthCheckRequest { service: String::new() }).await.expect("health").into_inner();
    assert_eq!(got.status(), ServingStatus::Serving, "{what}: not serving");
    if upstream_reachable {
        let cleared = reqwest::Client::new().delete(format!("{}/_sim/faults", app.sim.url)).send().await.unwrap();
        assert!(cleared.status().is_success());
        let mut client = app.client.clone();
        let after = format!("{key}-after");
        call(&mut client, rpc, &after).await.unwrap_or_else(|s| panic!("{what}: follow-up call failed: {s:?}"));
        if rpc.writes() {
            assert_eq!(sessions_with_key(&app.sim, &rpc.session_key(&after)).await, 1, "{what}");
        }
    }
}

/// Runs row `index` against `rpc` on a fresh facade and simulator.
async fn run_row(rpc: Rpc, index: usize) {
    let row = &ROWS[index];
    let what = format!("{} × {}", row.fault, rpc.name());
    let refused = matches!(row.inject, Inject::Refused);
    // Bound but not listening: connecting is refused, and no other test can take the port.
    let closed = refused.then(|| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket
    });
    let closed_addr = closed.as_ref().map(|s| s.local_addr().unwrap());
    let mut app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.attempt_timeout = Duration::from_millis(row.attempt_ms);
        if let Some(addr) = closed_addr {
            s.upstream.url = Some(format!("http://{addr}"));
        }
    })
    .await;
    match row.inject {
        Inject::Refused => {}
        Inject::Sim(make) => {
            let mut fault = make(rpc);
            fault["path"] = json!(rpc.path());
            app.sim.fault(fault).await;
        }
        Inject::Auth(make) => {
            let mut fault = make(rpc);
            fault["path"] = json!(AUTH_PATH);
            app.sim.fault(fault).await;
        }
    }
    let key = format!("fm-{index}");
    let expect = if rpc.writes() { row.write } else { row.read };

    let started = Instant::now();
    let result = call(&mut app.client, rpc, &key).await;
    let elapsed = started.elapsed();
    assert!(elapsed < DEADLINE + SLACK, "{what}: answered after {elapsed:?} (deadline {DEADLINE:?})");

    match (expect.want, result) {
        (Want::Ok, Ok(())) => {}
        (Want::Ok, Err(status)) => panic!("{what}: expected OK, got {status:?}"),
        (Want::Fail { code, .. }, Ok(())) => panic!("{what}: expected {code:?}, got OK"),
        (Want::Fail { code, reason: want_reason, http_status, retry_secs }, Err(status)) => {
            assert_eq!((status.code(), reason(&status).as_str()), (code, want_reason), "{what}: {status:?}");
            assert_status(&status, code, want_reason);
            assert_eq!(meta(&status, "upstream_http_status").as_deref(), http_status, "{what}: {status:?}");
            let delay = status.get_error_details().retry_info().map(|r| r.retry_delay);
            assert_eq!(delay, retry_secs.map(|s| Some(Duration::from_secs(s))), "{what}: RetryInfo {status:?}");
            if rpc.writes() {
                let reported = meta(&status, "external_session_id");
                assert_eq!(reported, Some(rpc.session_key(&key)), "{what}: {status:?}");
            }
            for leak in ["html", "Unauthorized", "Maintenance", "Simulated", TEST_KEY] {
                assert!(!status.message().contains(leak), "{what}: {leak:?} leaked into {status:?}");
            }
        }
    }
    if !refused {
        let stats = app.sim.stats().await;
        assert_eq!(stats[rpc.counter()], expect.calls, "{what}: upstream calls {stats}");
        if let Some(auth) = row.auth_calls {
            assert_eq!(stats["auth_calls"], auth, "{what}: auth calls {stats}");
        }
        if let Some(max) = row.max_padding_sent {
            // The cap held while the body streamed: the facade stopped reading at 16 MiB (plus
            // what the socket buffers took), not after all of it.
            let sent = stats["padding_bytes_sent"].as_u64().expect("padding_bytes_sent");
            assert!(sent > 0 && sent <= max, "{what}: {sent} bytes of padding sent");
        }
    }
    if rpc.writes() && !refused {
        let recorded = sessions_with_key(&app.sim, &rpc.session_key(&key)).await;
        assert!(recorded <= 1, "{what}: {recorded} sessions with one key");
        if let Some(n) = expect.sessions {
            assert_eq!(recorded, n, "{what}: sessions recorded");
        }
    }
    assert_still_up(&app, rpc, &key, !refused, &what).await;
}

/// The text of a panic caught by a join handle.
fn panic_text(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "non-text panic".into()),
        Err(err) => err.to_string(),
    }
}

/// Rows of one RPC in flight at once: enough to keep the matrix short, few enough that a loaded
/// two-core machine still answers every deadline on time.
const ROWS_IN_FLIGHT: usize = 5;

/// Every row against `rpc`, a few at a time; fails with every failing row listed.
async fn matrix(rpc: Rpc) {
    let gate = Arc::new(tokio::sync::Semaphore::new(ROWS_IN_FLIGHT));
    let tasks: Vec<_> = (0..ROWS.len())
        .map(|i| {
            let gate = gate.clone();
            let task = tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("gate");
                run_row(rpc, i).await;
            });
            (ROWS[i].fault, task)
        })
        .collect();
    let mut failures = Vec::new();
    for (fault, task) in tasks {
        if let Err(e) = task.await {
            failures.push(format!("- {fault}: {}", panic_text(e)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed for {}:\n{}",
        failures.len(),
        ROWS.len(),
        rpc.name(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_scripts_answers_every_fault_with_its_documented_status() {
    matrix(Rpc::ListScripts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_script_answers_every_fault_with_its_documented_status() {
    matrix(Rpc::GetScript).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_session_answers_every_fault_with_its_documented_status() {
    matrix(Rpc::CreateSession).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_campaign_answers_every_fault_with_its_documented_status() {
    matrix(Rpc::CreateCampaign).await;
}

// ---------------------------------------------------------------------------------------------
// The table as documentation
// ---------------------------------------------------------------------------------------------

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn cell(row: &Row, e: &Expect) -> String {
    let mut out = match e.want {
        Want::Ok => "OK".to_owned(),
        Want::Fail { code, reason, retry_secs, .. } => {
            let mut s = format!("`{}` `{reason}`", code_name(code));
            if let Some(secs) = retry_secs {
                s.push_str(&format!(" + RetryInfo {secs} s"));
            }
            s
        }
    };
    if e.calls > 1 {
        out.push_str(&format!(" ({} attempts)", e.calls));
    }
    match (row.inject, row.auth_calls) {
        (Inject::Auth(_), Some(n)) if n > 1 => out.push_str(&format!(" ({n} token fetch attempts)")),
        _ => {}
    }
    out
}

/// The markdown table of `ROWS`.
fn render_table() -> String {
    let mut out = String::from("| fault | injected with | ");
    out.push_str(&RPCS.map(Rpc::name).join(" | "));
    out.push_str(" |\n|---|---|---|---|---|---|\n");
    for row in ROWS {
        let how = match row.attempt_ms {
            ATTEMPT_MS => row.how.replace('|', "\\|"),
            ms => format!("{}; attempt timeout {ms} ms", row.how.replace('|', "\\|")),
        };
        out.push_str(&format!("| {} | {how} |", row.fault));
        for rpc in RPCS {
            let e = if rpc.writes() { &row.write } else { &row.read };
            out.push_str(&format!(" {} |", cell(row, e)));
        }
        out.push('\n');
    }
    out
}

const BEGIN: &str = "<!-- fault-matrix:begin (generated from tests/api/fault_matrix.rs) -->\n";
const END: &str = "<!-- fault-matrix:end -->";

#[test]
fn docs_fault_matrix_is_the_test_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fault-matrix.md");
    let doc = std::fs::read_to_string(path).expect("docs/fault-matrix.md");
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc.find(END).expect("end marker");
    let table = render_table();
    if std::env::var_os("UPDATE_FAULT_MATRIX").is_some() {
        std::fs::write(path, format!("{}{table}{}", &doc[..start], &doc[end..])).expect("write");
        return;
    }
    assert_eq!(&doc[start..end], table, "docs/fault-matrix.md is stale: run with UPDATE_FAULT_MATRIX=1");
}

// ---------------------------------------------------------------------------------------------
// An access token expiring in the middle of a burst
// ---------------------------------------------------------------------------------------------

/// `BURST` calls of `rpc` in flight when the simulator forgets every token: the first request
/// to arrive expires them (after 150 ms), the others are held 400 ms and so all meet a 401. Every
/// call must succeed after one refresh, shared by all (single flight).
async fn burst_across_token_expiry(rpc: Rpc) {
    const BURST: u64 = 16;
    let app = spawn_app().await;
    let mut client = app.client.clone();
    call(&mut client, rpc, "warm").await.expect("warm-up");
    app.sim
        .fault(json!([
            {"path": rpc.path(), "delay_ms": 150, "expire_tokens": true},
            {"path": rpc.path(), "delay_ms": 400, "count": BURST - 1},
        ]))
        .await;
    let calls: Vec<_> = (0..BURST)
        .map(|i| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = call(&mut client, rpc, &format!("burst-{i}")).await;
                (result, started.elapsed())
            })
        })
        .collect();
    for task in calls {
        let (result, elapsed) = task.await.expect("no panic");
        result.unwrap_or_else(|s| panic!("{}: a call of the burst failed: {s:?}", rpc.name()));
        assert!(elapsed < DEADLINE + SLACK, "{}: answered after {elapsed:?}", rpc.name());
    }
    let stats = app.sim.stats().await;
    // The warm-up's token, then exactly one refresh for the whole burst.
    assert_eq!(stats["auth_calls"], 2, "{}: {stats}", rpc.name());
    assert_eq!(stats["unauthorized"], BURST, "{}: every call met the expiry once: {stats}", rpc.name());
    // Each call: the refused attempt and its one retry (plus the warm-up).
    assert_eq!(stats[rpc.counter()], 1 + 2 * BURST, "{}: {stats}", rpc.name());
    if rpc.writes() {
        for i in 0..BURST {
            let key = rpc.session_key(&format!("burst-{i}"));
            assert_eq!(sessions_with_key(&app.sim, &key).await, 1, "{}: {key}", rpc.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_scripts_burst_survives_a_token_expiry_with_one_refresh() {
    burst_across_token_expiry(Rpc::ListScripts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_script_burst_survives_a_token_expiry_with_one_refresh() {
    burst_across_token_expiry(Rpc::GetScript).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_session_burst_survives_a_token_expiry_with_one_refresh() {
    burst_across_token_expiry(Rpc::CreateSession).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_campaign_burst_survives_a_token_expiry_with_one_refresh() {
    burst_across_token_expiry(Rpc::CreateCampaign).await;
}

// ---------------------------------------------------------------------------------------------
// Junk protobuf bytes from a caller
// ---------------------------------------------------------------------------------------------

/// A gRPC frame (uncompressed) declaring `declared` bytes and carrying `payload`.
fn frame(declared: u32, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(declared);
    b.put_slice(payload);
    b.freeze()
}

/// Sends `body` as the raw request body of `method` and returns the call's final status
/// (trailers-only answer or trailers).
async fn raw_call(app: &TestApp, method: &str, body: Bytes) -> Status {
    raw_call_where(app, method, body).await.0
}

/// `raw_call`, and whether the status came in the trailers (after response headers) rather than
/// in a trailers-only answer.
async fn raw_call_where(app: &TestApp, method: &str, body: Bytes) -> (Status, bool) {
    let channel = app.channel().await;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/callbot.v1.CallBotService/{method}", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "2S")
        .body(tonic::body::Body::new(http_body_util::Full::new(body)))
        .unwrap();
    let started = Instant::now();
    let resp = tower::ServiceExt::oneshot(channel, req).await.expect("HTTP answer");
    assert_eq!(resp.status(), http::StatusCode::OK);
    let (parts, body) = resp.into_parts();
    let (status, in_trailers) = match Status::from_header_map(&parts.headers) {
        Some(status) => (status, false),
        None => {
            let collected = body.collect().await.expect("body");
            let trailers = collected.trailers().cloned().expect("trailers");
            (Status::from_header_map(&trailers).expect("grpc-status in trailers"), true)
        }
    };
    assert!(started.elapsed() < DEADLINE + SLACK, "{method}: answered after {:?}", started.elapsed());
    (status, in_trailers)
}

const METHODS: [&str; 4] = ["ListScripts", "GetScript", "CreateSession", "CreateCampaign"];

#[tokio::test]
async fn junk_protobuf_bytes_are_refused_with_details_and_the_process_stays_up() {
    let app = spawn_app().await;
    let junk: [(&str, Bytes); 6] = [
        ("a truncated varint", frame(4, b"\xff\xff\xff\xff")),
        ("a length beyond the buffer", frame(3, b"\x0a\x7f\x01")),
        ("field 1 as non-UTF-8 text", frame(4, b"\x0a\x02\xff\xfe")),
        ("wire type 7", frame(1, b"\x0f")),
        ("a frame cut short", frame(100, b"\x0a\x01x")),
        ("the compressed flag without grpc-encoding", {
            let mut b = BytesMut::from(&frame(3, b"\x0a\x01x")[..]);
            b[0] = 1;
            b.freeze()
        }),
    ];
    for method in METHODS {
        for (what, body) in &junk {
            let status = raw_call(&app, method, body.clone()).await;
            let what = format!("{method} with {what}");
            assert_eq!(status.code(), Code::Internal, "{what}: {status:?}");
            assert_status(&status, Code::Internal, "MALFORMED_REQUEST_MESSAGE");
            assert!(!status.message().contains("Protobuf"), "{what}: tonic's text replaced by ours: {status:?}");
        }
    }
    // Nothing reached the upstream, and the process serves a good call of each RPC.
    assert_eq!(app.sim.stats().await["script_list_calls"], 0);
    assert_eq!(app.sim.stats().await["execute_calls"], 0);
    for rpc in RPCS {
        let mut client = app.client.clone();
        call(&mut client, rpc, &format!("after-junk-{}", rpc.name())).await.expect("a good call after junk");
    }
}

#[tokio::test]
async fn a_frame_declaring_more_than_max_message_bytes_is_resource_exhausted() {
    let app = spawn_app_with(SimConfig::default(), |s| s.server.max_message_bytes = 2048).await;
    for method in METHODS {
        // The prefix claims 1 MiB; only a few bytes follow.
        let status = raw_call(&app, method, frame(1024 * 1024, b"\x0a\x01x")).await;
        assert_status(&status, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
    }
    assert_eq!(app.sim.stats().await["auth_calls"], 0);
    for rpc in RPCS {
        let mut client = app.client.clone();
        call(&mut client, rpc, &format!("after-large-{}", rpc.name())).await.expect("a good call after");
    }
}

#[tokio::test]
async fn junk_after_a_good_campaign_spec_ends_the_stream_with_details() {
    use prost::Message as _;
    let app = spawn_app().await;
    let spec = pb::CreateCampaignRequest {
        item: Some(pb::create_campaign_request::Item::Spec(pb::CampaignSpec {
            campaign_id: "junk-after-spec".into(),
            script_id: SCRIPT.into(),
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let mut body = BytesMut::from(&frame(spec.len() as u32, &spec)[..]);
    body.extend_from_slice(&frame(4, b"\xff\xff\xff\xff"));
    // The answer's headers went out when the spec was read: the status comes in the trailers.
    let (status, in_trailers) = raw_call_where(&app, "CreateCampaign", body.freeze()).await;
    assert!(in_trailers, "the status was expected in the trailers: {status:?}");
    assert_status(&status, Code::Internal, "MALFORMED_REQUEST_MESSAGE");
    assert_eq!(app.sim.stats().await["execute_calls"], 0);
    let mut client = app.client.clone();
    call(&mut client, Rpc::CreateCampaign, "after-junk-spec").await.expect("a good campaign after junk");
}
