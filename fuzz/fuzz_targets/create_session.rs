//! Arbitrary bytes → `CreateSessionRequest` (protobuf decode) → validation → the upstream JSON
//! body, or the `InvalidArgument` status with its `BadRequest`. Never a panic, and:
//!
//! - valid: the body is JSON that parses back, with no key beyond the documented ones;
//!   `bot_script_id`, the contacts (same count, same order, phones byte-exact, email/code omitted
//!   exactly when empty, `mapping_variables` equal to the request's map), name, `cid`, voice and
//!   every option are the request's; the key is present; every phone obeys the phone rule and no
//!   valid phone repeats;
//! - invalid: `to_status` gives `INVALID_ARGUMENT` whose `BadRequest` holds the violations in
//!   order, each with a non-empty description and a path naming a real field (`contacts[i]`
//!   with `i` in range, `variables[KEY]` with one of that contact's keys), no description echoing
//!   a phone; a phone is reported exactly when it breaks the rule or repeats an earlier valid one;
//!   `validate_contacts` and `validate_script_id` report the same as the whole request does.
#![no_main]

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use callbot_facade::testing::execute_body;
use callbot_facade::testing::{NewSession, SessionLimits, is_valid_phone, validate_contacts, validate_script_id};
use callbot_facade::testing::path_key;
use callbot_facade::pb;
use callbot_facade::testing::{ErrorContext, FacadeError, to_status};
use callbot_facade::testing::EncodedExecute;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use serde_json::Value;
use tonic_types::StatusExt;

/// Small, so that the "too many contacts" rule is reachable.
const MAX_CONTACTS: usize = 8;
/// 2025-06-15T15:06:40Z.
const NOW_SECS: u64 = 1_750_000_000;
const TOP_LEVEL: &[&str] = &[
    "script_id",
    "contacts",
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

/// The keys of an `execute_by_phone` body, as the upstream documents them (not from `ExecuteBody`).
const BODY_KEYS: &[&str] = &[
    "bot_script_id",
    "contact_info",
    "name",
    "cid",
    "voice",
    "speed",
    "num_retry",
    "num_per_call",
    "distance_per_call",
    "distance_retry",
    "send_time",
    "ext_session_id",
    "auto_pause",
];
/// The keys of one `contact_info` entry.
const CONTACT_KEYS: &[&str] = &["phone", "email", "ext_contact_code", "mapping_variables"];

/// Checks that `path` names a real field of `req`.
fn assert_real_path(path: &str, req: &pb::CreateSessionRequest) {
    assert!(!path.is_empty(), "empty field path");
    if TOP_LEVEL.contains(&path) {
        return;
    }
    let rest = path.strip_prefix("contacts[").unwrap_or_else(|| panic!("unknown path {path:?}"));
    let (index, field) = rest.split_once(']').unwrap_or_else(|| panic!("unclosed index in {path:?}"));
    let i: usize = index.parse().unwrap_or_else(|_| panic!("bad index in {path:?}"));
    let contact = req.contacts.get(i).unwrap_or_else(|| panic!("{path:?}: no such contact"));
    match field {
        ".phone" | ".email" | ".external_contact_code" | ".variables" => {}
        _ => {
            let key = field
                .strip_prefix(".variables[")
                .and_then(|k| k.strip_suffix(']'))
                .unwrap_or_else(|| panic!("unknown contact field in {path:?}"));
            assert!(contact.variables.keys().any(|k| path_key(k) == key), "{path:?}: no such variable");
        }
    }
}

/// Indices of the contacts whose phone must be reported: invalid, or a repeat of an earlier
/// valid phone.
fn bad_phones(contacts: &[pb::Contact]) -> Vec<usize> {
    (0..contacts.len())
        .filter(|&i| {
            let p = &contacts[i].phone;
            !is_valid_phone(p) || contacts[..i].iter().any(|c| &c.phone == p)
        })
        .collect()
}

fn check_valid(session: &NewSession, req: &pb::CreateSessionRequest) {
    let key = session.external_session_id.clone().unwrap_or_else(|| "generated-key".to_owned());
    // The bytes the facade sends.
    let encoded = EncodedExecute::new(&execute_body(session, &key));
    let body: Value = serde_json::from_slice(encoded.json()).expect("the body is JSON");
    let obj = body.as_object().expect("an object");
    // No key beyond the documented ones: each is checked against the request below.
    for k in obj.keys() {
        assert!(BODY_KEYS.contains(&k.as_str()), "unexpected key {k:?} in the body");
    }
    assert_eq!(obj["bot_script_id"], req.script_id.as_str());
    assert_eq!(obj["ext_session_id"], key.as_str());
    if !req.external_session_id.is_empty() {
        assert_eq!(key, req.external_session_id);
    }
    let contacts = obj["contact_info"].as_array().expect("contact_info is a list");
    assert_eq!(contacts.len(), req.contacts.len());
    for (got, want) in contacts.iter().zip(&req.contacts) {
        for k in got.as_object().expect("a contact is an object").keys() {
            assert!(CONTACT_KEYS.contains(&k.as_str()), "unexpected key {k:?} in a contact");
        }
        assert!(is_valid_phone(&want.phone));
        assert_eq!(got["phone"].as_str(), Some(want.phone.as_str()), "phones are sent as given");
        assert_eq!(got.get("email").and_then(Value::as_str), Some(want.email.as_str()).filter(|e| !e.is_empty()));
        assert_eq!(
            got.get("ext_contact_code").and_then(Value::as_str),
            Some(want.external_contact_code.as_str()).filter(|e| !e.is_empty())
        );
        let vars: BTreeMap<String, String> =
            serde_json::from_value(got["mapping_variables"].clone()).expect("mapping_variables is a string map");
        let want_vars: BTreeMap<String, String> = want.variables.clone().into_iter().collect();
        assert_eq!(vars, want_vars);
    }
    assert!(bad_phones(&req.contacts).is_empty());
    assert_eq!(obj.get("name").and_then(Value::as_str), Some(req.name.as_str()).filter(|n| !n.is_empty()));
    assert_eq!(obj.get("cid").and_then(Value::as_str), Some(req.caller_id.as_str()).filter(|c| !c.is_empty()));
    let voice = obj.get("voice").and_then(Value::as_str);
    let want_voice = match pb::Voice::try_from(req.voice).expect("a valid request has a known voice") {
        pb::Voice::Unspecified => None,
        pb::Voice::NorthernFemaleNgocanh => Some("northern_female_ngocanh"),
        pb::Voice::SouthernFemaleHonganh => Some("southern_female_honganh"),
        pb::Voice::SouthernMaleTienhuy => Some("southern_male_tienhuy"),
    };
    assert_eq!(voice, want_voice);
    let int = |k: &str| obj.get(k).and_then(Value::as_i64);
    assert_eq!(int("speed"), req.speed.map(i64::from));
    assert_eq!(int("num_retry"), req.retry_count.map(i64::from));
    assert_eq!(int("num_per_call"), req.calls_per_round.map(i64::from));
    assert_eq!(int("distance_per_call"), req.round_interval.map(|d| d.seconds));
    assert_eq!(int("distance_retry"), req.retry_interval.map(|d| d.seconds));
    assert_eq!(
        int("send_time"),
        req.start_time.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
        "send_time is Unix ms"
    );
    assert_eq!(obj.get("auto_pause").and_then(Value::as_bool), req.auto_pause.then_some(true));
}

fn check_invalid(err: callbot_facade::testing::ValidationError, req: &pb::CreateSessionRequest) {
    assert!(!err.violations.is_empty());
    for v in &err.violations {
        assert_real_path(&v.field, req);
        assert!(!v.description.is_empty());
        for c in &req.contacts {
            if is_valid_phone(&c.phone) {
                assert!(!v.description.contains(&c.phone), "a description echoes a phone");
            }
        }
    }
    let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();

    // Phone violations: exactly the broken or repeated phones (when the list is inspected at all).
    let phone_paths: Vec<String> = fields.iter().filter(|f| f.ends_with("].phone")).map(|f| f.to_string()).collect();
    if (1..=MAX_CONTACTS).contains(&req.contacts.len()) {
        let want: Vec<String> = bad_phones(&req.contacts).iter().map(|i| format!("contacts[{i}].phone")).collect();
        assert_eq!(phone_paths, want);
    } else {
        assert!(fields.iter().all(|f| !f.starts_with("contacts[")));
        assert!(fields.contains(&"contacts"));
    }

    // The contact rules on their own report the same paths, in the same order.
    let contact_fields: Vec<&str> = fields.iter().copied().filter(|f| f.starts_with("contacts")).collect();
    match validate_contacts(req.contacts.clone(), MAX_CONTACTS, 0) {
        Ok(_) => assert!(contact_fields.is_empty()),
        Err(e) => assert_eq!(e.violations.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(), contact_fields),
    }
    assert_eq!(validate_script_id(&req.script_id).is_err(), fields.contains(&"script_id"));

    // What the caller receives.
    let status =
        to_status(&FacadeError::Invalid(err.clone()), &ErrorContext { request_id: "fuzz", external_session_id: None });
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let details = status.get_error_details();
    let bad_request = details.bad_request().expect("BadRequest");
    let got: Vec<(&str, &str)> =
        bad_request.field_violations.iter().map(|v| (v.field.as_str(), v.description.as_str())).collect();
    let want: Vec<(&str, &str)> = err.violations.iter().map(|v| (v.field.as_str(), v.description.as_str())).collect();
    assert_eq!(got, want);
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::CreateSessionRequest::decode(data) else { return };
    let limits = SessionLimits { max_contacts: MAX_CONTACTS, now: UNIX_EPOCH + Duration::from_secs(NOW_SECS) };
    // A second decode of the re-encoded request is the same request (prost round trip), so the
    // comparison below is against exactly what the service would see.
    let again = pb::CreateSessionRequest::decode(req.encode_to_vec().as_slice()).expect("re-decode");
    assert_eq!(again, req);
    match NewSession::parse(req.clone(), &limits) {
        Ok(session) => check_valid(&session, &req),
        Err(err) => check_invalid(err, &req),
    }
});
