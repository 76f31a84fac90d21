//! Arbitrary bytes into every parse entry point of the upstream envelope: `parse` with the three
//! payload types the client reads (script list, execute answer, auth), `failure_code`, and
//! `upstream::parse_script_list`. Never a panic, and:
//!
//! 1. a failure's code never depends on the payload type, is the same `failure_code` finds, and
//!    is identifier-like (`[A-Za-z0-9_.-]{1,64}`): raw body text never reaches status metadata;
//! 2. `parse_script_list` agrees with `parse::<ScriptList>`;
//! 3. a parsed script list, written back as JSON and parsed again, is equal to itself;
//! 4. every rejection of an execute answer has a non-empty, trimmed reason;
//! 5. the one-pass path (bodies of `ONE_PASS_MIN_BYTES` and more) gives exactly the result of the
//!    general path: the same body padded with an unknown key parses to the same value or error;
//! 6. a body that is not a JSON object (an array, a scalar, no JSON) is never an envelope.
#![no_main]

use callbot_facade::testing::{AuthPayload, Envelope, ONE_PASS_MIN_BYTES, ScriptList, ShapeError, failure_code, parse};
use callbot_facade::testing::{ExecutePayload, Script, UpstreamError, parse_script_list};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fn is_code_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn failure<T>(r: &Result<Envelope<T>, ShapeError>) -> Option<&str> {
    match r {
        Ok(Envelope::Failure { code }) => Some(code),
        _ => None,
    }
}

/// The script list as the upstream would write it.
fn to_json(list: &[Script]) -> serde_json::Value {
    let scripts: Vec<_> = list
        .iter()
        .map(|s| {
            let variables: Vec<_> = s
                .variables
                .iter()
                .map(|v| {
                    json!({
                        "field_code": v.field_code, "field_name": v.field_name, "field_value": v.field_value,
                        "field_type": v.field_type, "type": v.kind, "is_dynamic_attribute": v.is_dynamic_attribute,
                    })
                })
                .collect();
            json!({"id": s.id, "name": s.name, "variables": variables})
        })
        .collect();
    json!({"status_code": 9999, "payload": scripts})
}

/// `body` with an unknown key of `ONE_PASS_MIN_BYTES` inserted first, when it is an object.
fn padded(body: &[u8]) -> Option<Vec<u8>> {
    let rest = body.strip_prefix(b"{")?;
    let empty_object = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(body.len() + ONE_PASS_MIN_BYTES + 16);
    out.extend_from_slice(b"{\"zz_fuzz_pad\":\"");
    out.resize(out.len() + ONE_PASS_MIN_BYTES, b'x');
    out.extend_from_slice(if empty_object { b"\"" } else { b"\"," });
    out.extend_from_slice(rest);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let scripts = parse::<ScriptList>(data);
    let execute = parse::<ExecutePayload>(data);
    let auth = parse::<AuthPayload>(data);

    // 1. Failures: the same code whatever the payload type, the one failure_code reports, code-like.
    let code = failure(&scripts);
    assert_eq!(code, failure(&execute));
    assert_eq!(code, failure(&auth).map(|c| c as &str));
    assert_eq!(code.map(str::to_owned), failure_code(data));
    if let Some(code) = code {
        assert!(is_code_like(code), "failure code {code:?} is not identifier-like");
    }

    // 2. The helper the client and the benches use agrees with the envelope parser.
    match (&scripts, parse_script_list(data)) {
        (Ok(Envelope::Success(ScriptList(a))), Ok(b)) => assert_eq!(a, &b),
        (Ok(Envelope::Failure { code }), Err(UpstreamError::Rejected { code: c, .. })) => assert_eq!(code, &c),
        (Err(ShapeError(a)), Err(UpstreamError::Malformed { detail, .. })) => assert_eq!(a, &detail),
        (a, b) => panic!("parse_script_list disagrees: {a:?} vs {b:?}"),
    }

    // 3. Round trip of a parsed list.
    if let Ok(Envelope::Success(ScriptList(list))) = &scripts {
        let again = serde_json::to_vec(&to_json(list)).expect("serialise");
        match parse::<ScriptList>(&again) {
            Ok(Envelope::Success(ScriptList(back))) => assert_eq!(&back, list),
            other => panic!("re-parse of a parsed list: {other:?}"),
        }
    }

    // 4. Rejections always say why.
    if let Ok(Envelope::Success(p)) = &execute {
        for r in &p.errors {
            assert!(!r.reason.is_empty() && r.reason.trim() == r.reason, "reason {:?}", r.reason);
            assert_eq!(r.phone.trim(), r.phone);
        }
    }

    // 5. One-pass and general path agree (errors included).
    if data.len() < ONE_PASS_MIN_BYTES {
        if let Some(big) = padded(data) {
            assert_eq!(parse::<ScriptList>(&big), scripts, "script list, padded");
            assert_eq!(parse::<ExecutePayload>(&big), execute, "execute answer, padded");
            let token = |r: Result<Envelope<AuthPayload>, ShapeError>| {
                r.map(|e| match e {
                    Envelope::Success(a) => Ok(a.access_token),
                    Envelope::Failure { code } => Err(code),
                })
            };
            assert_eq!(token(parse::<AuthPayload>(&big)), token(auth), "auth, padded");
        }
    }

    // 6. An envelope is an object: a body whose first JSON token is anything else (an array, a
    //    string, a number, `true`, `false`, `null`, or no JSON) is never read as one.
    if data.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) != Some(&b'{') {
        let auth = parse::<AuthPayload>(data);
        assert!(scripts.is_err() && execute.is_err() && auth.is_err(), "a non-object body was read as an envelope");
    }
});
