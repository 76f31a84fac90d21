//! Property tests (proptest) of the pure paths the fuzz targets in `fuzz/` also cover:
//!
//! - a generated valid `CreateSessionRequest` → validation → upstream JSON → parsed back (by a
//!   reader written here, independent of `ExecuteBody`) has the request's fields, byte for byte
//!   (Vietnamese text, emoji, phones exactly as given);
//! - validation never panics on any decoded request, and reports non-empty paths;
//! - the envelope parser never panics on any bytes or JSON value, failure codes are always
//!   identifier-like, a generated script list round-trips through it;
//! - folding is idempotent, lowercase, strips every Vietnamese tone mark;
//! - the phone rule accepts exactly "optional `+`, then 8 to 15 ASCII digits".
//!
//! Few cases per property (proptest's default 256 or fewer) so the whole file runs in a second or two.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use callbot_facade::pb;
use callbot_facade::testing::execute_body;
use callbot_facade::testing::{AuthPayload, Envelope, ScriptList, failure_code, parse};
use callbot_facade::testing::{EncodedExecute, ExecuteBody, ExecutePayload, Script, ScriptVariable};
use callbot_facade::testing::{NewSession, SessionLimits, fold, is_valid_phone, mask_phone, matches};
use proptest::prelude::*;
use prost::Message;
use serde::Deserialize;
use serde_json::{Value, json};

/// 2025-06-15T15:06:40Z, the injected "now".
const NOW_SECS: i64 = 1_750_000_000;

fn limits() -> SessionLimits {
    SessionLimits { max_contacts: 50, now: UNIX_EPOCH + Duration::from_secs(NOW_SECS as u64) }
}

// ---------------------------------------------------------------------------------------------
// CreateSession mapping

/// The upstream body as the upstream reads it (written from docs/upstream.md, not from `ExecuteBody`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamBody {
    bot_script_id: String,
    contact_info: Vec<UpstreamContact>,
    name: Option<String>,
    cid: Option<String>,
    voice: Option<String>,
    speed: Option<i32>,
    num_retry: Option<i32>,
    num_per_call: Option<i32>,
    distance_per_call: Option<u64>,
    distance_retry: Option<u64>,
    send_time: Option<i64>,
    ext_session_id: String,
    auto_pause: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamContact {
    phone: String,
    email: Option<String>,
    ext_contact_code: Option<String>,
    mapping_variables: BTreeMap<String, String>,
}

/// A regex strategy compiled once (a `&str` strategy re-parses its regex for every value).
fn re(regex: &str) -> proptest::string::RegexGeneratorStrategy<String> {
    proptest::string::string_regex(regex).expect("regex")
}

/// Picks one of `pieces`.
fn one_of(pieces: &[&str]) -> impl Strategy<Value = String> + use<> {
    proptest::sample::select(pieces.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
}

/// Text with Vietnamese letters (precomposed and decomposed), emoji, ZWJ sequences, CJK and ASCII.
fn rich_text(max: usize) -> impl Strategy<Value = String> {
    let ascii: Vec<String> = "abcXYZ019 .,'-".chars().map(String::from).collect();
    let vietnamese: Vec<String> =
        "àáảãạăằắẳẵặâầấẩẫậđèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵĐƯƠẾỆ".chars().map(String::from).collect();
    proptest::collection::vec(
        prop_oneof![
            proptest::sample::select(ascii),
            proptest::sample::select(vietnamese),
            one_of(&["e\u{302}\u{301}", "🎓", "🎉", "😀", "👍🏽", "📞", "👩\u{200d}👩\u{200d}👧", "日本", "中"]),
        ],
        0..max,
    )
    .prop_map(|parts| parts.concat())
}

fn contact_strategy() -> impl Strategy<Value = pb::Contact> {
    (
        prop_oneof![Just(String::new()), re("[a-z0-9.]{1,10}@[a-z]{1,8}\\.(vn|com|edu\\.vn)")],
        prop_oneof![Just(String::new()), rich_text(20)],
        proptest::collection::btree_map(
            // Keys: non-empty, no control characters, spaces allowed (`tên thí sinh`).
            prop_oneof![re("[a-zA-Z0-9_]{1,12}"), rich_text(10).prop_filter("non-empty", |k| !k.is_empty())],
            rich_text(30),
            0..5,
        ),
    )
        .prop_map(|(email, external_contact_code, variables)| pb::Contact {
            phone: String::new(),
            email,
            external_contact_code,
            variables,
        })
}

fn valid_request() -> impl Strategy<Value = pb::CreateSessionRequest> {
    let ids = (
        re("[a-zA-Z0-9_-]{1,24}|[a-f0-9]{24}|kịch-bản-[0-9]{1,3}"),
        // Distinct phones; order shuffled by the set's hash order.
        proptest::collection::hash_set(re("\\+?[0-9]{8,15}"), 1..6),
        proptest::collection::vec(contact_strategy(), 6),
        rich_text(40),
        prop_oneof![Just(String::new()), re("\\+?[0-9]{3,15}")],
        re("[!-~]{0,40}"),
    );
    let options = (
        0..=3i32,
        proptest::option::of(-3..=3i32),
        proptest::option::of(0..=10i32),
        proptest::option::of(1..=1000i32),
        proptest::option::of(0..=86_400i64),
        proptest::option::of(0..=86_400i64),
        proptest::option::of((-299i64..366 * 86_400, 0..1_000_000_000i32)),
        any::<bool>(),
    );
    (ids, options).prop_map(
        |(
            (script_id, phones, contacts, name, caller_id, external_session_id),
            (voice, speed, retry_count, calls_per_round, round, retry, start, auto_pause),
        )| pb::CreateSessionRequest {
            script_id,
            contacts: phones.into_iter().zip(contacts).map(|(phone, c)| pb::Contact { phone, ..c }).collect(),
            name,
            caller_id,
            voice,
            speed,
            retry_count,
            calls_per_round,
            round_interval: round.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            retry_interval: retry.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            start_time: start.map(|(offset, nanos)| prost_types::Timestamp { seconds: NOW_SECS + offset, nanos }),
            external_session_id,
            auto_pause,
            check_variables: false,
            purpose: 0,
            defer_to_calling_hours: false,
            validate_only: false,
        },
    )
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

proptest! {
    // Requests are big values: fewer cases keep the file fast in a debug build.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_text_and_number_read_back_from_the_encoded_body(
        texts in proptest::collection::vec(any::<String>(), 6),
        keys in proptest::collection::btree_map(any::<String>(), any::<String>(), 0..4),
        numbers in (any::<i32>(), any::<u64>(), any::<i64>()),
    ) {
        let body = ExecuteBody {
            bot_script_id: &texts[0],
            contact_info: vec![callbot_facade::testing::ContactInfo {
                phone: &texts[1],
                email: Some(&texts[2]),
                ext_contact_code: Some(&texts[3]),
                mapping_variables: &keys,
            }],
            name: Some(&texts[4]),
            cid: None,
            voice: Some("northern_female_ngocanh"),
            speed: Some(numbers.0),
            num_retry: None,
            num_per_call: Some(numbers.0),
            distance_per_call: Some(numbers.1),
            distance_retry: None,
            send_time: Some(numbers.2),
            ext_session_id: &texts[5],
            auto_pause: numbers.0 % 2 == 0,
        };
        // The bytes the facade sends, read by the independent reader: every string and number
        // exactly as given, the unset options absent (`deny_unknown_fields` refuses any other key).
        let encoded = EncodedExecute::new(&body);
        let back: UpstreamBody = serde_json::from_slice(encoded.json()).expect("the body reads back");
        prop_assert_eq!(&back.bot_script_id, &texts[0]);
        prop_assert_eq!(back.contact_info.len(), 1);
        let contact = &back.contact_info[0];
        prop_assert_eq!(&contact.phone, &texts[1]);
        prop_assert_eq!(contact.email.as_ref(), Some(&texts[2]));
        prop_assert_eq!(contact.ext_contact_code.as_ref(), Some(&texts[3]));
        prop_assert_eq!(&contact.mapping_variables, &keys);
        prop_assert_eq!(back.name.as_ref(), Some(&texts[4]));
        prop_assert_eq!(back.cid, None);
        prop_assert_eq!(back.voice.as_deref(), Some("northern_female_ngocanh"));
        prop_assert_eq!(back.speed, Some(numbers.0));
        prop_assert_eq!(back.num_retry, None);
        prop_assert_eq!(back.num_per_call, Some(numbers.0));
        prop_assert_eq!(back.distance_per_call, Some(numbers.1));
        prop_assert_eq!(back.distance_retry, None);
        prop_assert_eq!(back.send_time, Some(numbers.2));
        prop_assert_eq!(&back.ext_session_id, &texts[5]);
        prop_assert_eq!(back.auto_pause, (numbers.0 % 2 == 0).then_some(true));
    }

    #[test]
    fn valid_request_maps_to_the_upstream_body_and_back(req in valid_request()) {
        let session = NewSession::parse(req.clone(), &limits()).expect("a generated valid request passes");
        let key = session.external_session_id.clone().unwrap_or_else(|| "generated-key".to_owned());
        // The bytes the facade sends: the body's serde_json encoding, nothing added.
        let encoded = EncodedExecute::new(&execute_body(&session, &key));
        let reference = serde_json::to_vec(&execute_body(&session, &key)).unwrap();
        prop_assert_eq!(encoded.json(), reference.as_slice());
        let json = std::str::from_utf8(encoded.json()).expect("UTF-8");
        let body: UpstreamBody = serde_json::from_str(json).expect("the body reads back");

        prop_assert_eq!(&body.bot_script_id, &req.script_id);
        prop_assert_eq!(body.contact_info.len(), req.contacts.len());
        for (got, want) in body.contact_info.iter().zip(&req.contacts) {
            prop_assert_eq!(got.phone.as_bytes(), want.phone.as_bytes());
            prop_assert_eq!(&got.email, &non_empty(&want.email));
            prop_assert_eq!(&got.ext_contact_code, &non_empty(&want.external_contact_code));
            let want_vars: BTreeMap<String, String> = want.variables.clone().into_iter().collect();
            prop_assert_eq!(&got.mapping_variables, &want_vars);
        }
        prop_assert_eq!(body.name, non_empty(&req.name));
        prop_assert_eq!(body.cid, non_empty(&req.caller_id));
        let voice = ["", "northern_female_ngocanh", "southern_female_honganh", "southern_male_tienhuy"];
        prop_assert_eq!(body.voice, non_empty(voice[req.voice as usize]));
        prop_assert_eq!(body.speed, req.speed);
        prop_assert_eq!(body.num_retry, req.retry_count);
        prop_assert_eq!(body.num_per_call, req.calls_per_round);
        prop_assert_eq!(body.distance_per_call, req.round_interval.map(|d| d.seconds as u64));
        prop_assert_eq!(body.distance_retry, req.retry_interval.map(|d| d.seconds as u64));
        prop_assert_eq!(body.send_time, req.start_time.map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000)));
        prop_assert_eq!(body.auto_pause, req.auto_pause.then_some(true));
        if req.external_session_id.is_empty() {
            prop_assert_eq!(body.ext_session_id, "generated-key");
        } else {
            prop_assert_eq!(body.ext_session_id, req.external_session_id.clone());
        }
    }

    #[test]
    fn a_repeated_phone_is_reported_on_the_later_contact(req in valid_request(), from in 0usize..6, to in 0usize..6) {
        let n = req.contacts.len();
        prop_assume!(n >= 2);
        // from in 0..n-1, to in from+1..n.
        let from = from % (n - 1);
        let to = from + 1 + to % (n - 1 - from);
        let mut req = req;
        req.contacts[to].phone = req.contacts[from].phone.clone();
        let err = NewSession::parse(req, &limits()).expect_err("a repeat is refused");
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.clone()).collect();
        prop_assert_eq!(fields, vec![format!("contacts[{to}].phone")]);
    }

    #[test]
    fn validation_never_panics_on_any_decoded_request(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(req) = pb::CreateSessionRequest::decode(bytes.as_slice()) {
            let contacts = req.contacts.len();
            match NewSession::parse(req, &limits()) {
                Ok(session) => prop_assert_eq!(session.contacts.len(), contacts),
                Err(err) => {
                    prop_assert!(!err.violations.is_empty());
                    prop_assert!(err.violations.iter().all(|v| !v.field.is_empty() && !v.description.is_empty()));
                }
            }
        }
    }

    #[test]
    fn validation_never_panics_on_any_field_values(
        script_id in ".{0,10}",
        phone in "\\PC{0,20}",
        email in "\\PC{0,20}",
        variables in proptest::collection::btree_map("\\PC{0,8}", "\\PC{0,8}", 0..4),
        voice in any::<i32>(),
        speed in proptest::option::of(any::<i32>()),
        seconds in any::<i64>(),
        nanos in any::<i32>(),
    ) {
        let req = pb::CreateSessionRequest {
            script_id,
            contacts: vec![pb::Contact { phone, email, external_contact_code: String::new(), variables }],
            voice,
            speed,
            round_interval: Some(prost_types::Duration { seconds, nanos }),
            start_time: Some(prost_types::Timestamp { seconds, nanos }),
            ..Default::default()
        };
        if let Err(err) = NewSession::parse(req, &limits()) {
            prop_assert!(err.violations.iter().all(|v| !v.field.is_empty()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Envelope

fn is_code_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        rich_text(12).prop_map(Value::String),
        re("[a-z_]{1,20}").prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("error".to_owned()),
                    Just("message".to_owned()),
                    Just("phone".to_owned()),
                    Just("errors".to_owned()),
                    Just("variables".to_owned()),
                    re("[a-z_]{1,10}")
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every entry point on one body; failure codes identical across payload types and code-like.
fn parse_everything(body: &[u8]) -> Result<(), TestCaseError> {
    let a = parse::<ScriptList>(body);
    let b = parse::<ExecutePayload>(body);
    let c = parse::<AuthPayload>(body);
    let code = failure_code(body);
    for got in [failure_of(&a), failure_of(&b), failure_of(&c)] {
        prop_assert_eq!(&got, &code);
    }
    if let Some(code) = &code {
        prop_assert!(is_code_like(code), "code {:?}", code);
    }
    Ok(())
}

fn failure_of<T, E>(r: &Result<Envelope<T>, E>) -> Option<String> {
    match r {
        Ok(Envelope::Failure { code }) => Some(code.clone()),
        _ => None,
    }
}

fn script_strategy() -> impl Strategy<Value = Script> {
    let variable = (rich_text(10), rich_text(10), rich_text(10), re("[a-z_]{0,12}"), re("[A-Z]{0,8}"), any::<bool>())
        .prop_map(|(field_code, field_name, field_value, field_type, kind, is_dynamic_attribute)| ScriptVariable {
            field_code,
            field_name,
            field_value,
            field_type,
            kind,
            is_dynamic_attribute,
        });
    (re("[a-f0-9]{24}"), rich_text(30), proptest::collection::vec(variable, 0..4))
        .prop_map(|(id, name, variables)| Script { id, name, variables })
}

proptest! {
    #[test]
    fn envelope_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        parse_everything(&body)?;
    }

    #[test]
    fn envelope_never_panics_on_json(status in prop_oneof![Just(json!(9999)), Just(json!(-9999)), Just(json!("9999")), json_value()],
                                     payload in json_value(), message in json_value(), pad in any::<bool>()) {
        let mut envelope = json!({"status_code": status, "payload": payload, "message": message});
        if pad {
            // Over the one-pass threshold.
            envelope["zz_pad"] = Value::String("x".repeat(callbot_facade::testing::ONE_PASS_MIN_BYTES));
        }
        parse_everything(serde_json::to_vec(&envelope).unwrap().as_slice())?;
    }

    #[test]
    fn script_list_round_trips_byte_exact(list in proptest::collection::vec(script_strategy(), 0..5), pad in any::<bool>()) {
        let scripts: Vec<Value> = list.iter().map(|s| json!({
            "id": s.id, "name": s.name, "zz_unknown": [1, {"a": null}],
            "variables": s.variables.iter().map(|v| json!({
                "field_code": v.field_code, "field_name": v.field_name, "field_value": v.field_value,
                "field_type": v.field_type, "type": v.kind, "is_dynamic_attribute": v.is_dynamic_attribute,
            })).collect::<Vec<_>>(),
        })).collect();
        let mut envelope = json!({"status_code": 9999, "payload": scripts, "instance_id": "stg"});
        if pad {
            envelope["zz_pad"] = Value::String("x".repeat(callbot_facade::testing::ONE_PASS_MIN_BYTES));
        }
        let body = serde_json::to_vec(&envelope).unwrap();
        match parse::<ScriptList>(&body) {
            Ok(Envelope::Success(ScriptList(back))) => prop_assert_eq!(back, list),
            other => prop_assert!(false, "parse: {:?}", other),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Folding

/// (letter with diacritics, its base letter), both cases.
const TONED: &[(&str, char)] = &[
    ("àáảãạăằắẳẵặâầấẩẫậÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬ", 'a'),
    ("èéẻẽẹêềếểễệÈÉẺẼẸÊỀẾỂỄỆ", 'e'),
    ("ìíỉĩịÌÍỈĨỊ", 'i'),
    ("òóỏõọôồốổỗộơờớởỡợÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢ", 'o'),
    ("ùúủũụưừứửữựÙÚỦŨỤƯỪỨỬỮỰ", 'u'),
    ("ỳýỷỹỵỲÝỶỸỴ", 'y'),
    ("đĐ", 'd'),
];

/// A Vietnamese-looking word and what folding must give for it.
fn toned_text() -> impl Strategy<Value = (String, String)> {
    let all: Vec<(char, char)> =
        TONED.iter().flat_map(|(letters, base)| letters.chars().map(move |c| (c, *base))).collect();
    proptest::collection::vec(
        prop_oneof![
            proptest::sample::select(all).prop_map(|(c, b)| (c.to_string(), b.to_string())),
            re("[a-zA-Z0-9 ]").prop_map(|s| (s.clone(), s.to_lowercase())),
        ],
        0..30,
    )
    .prop_map(|parts| parts.into_iter().unzip::<String, String, String, String>())
}

proptest! {
    #[test]
    fn fold_strips_every_tone_and_case((text, want) in toned_text()) {
        prop_assert_eq!(fold(&text), want.clone());
        // Decomposed (NFD) input folds the same.
        let nfd: String = unicode_normalization::UnicodeNormalization::nfd(text.as_str()).collect();
        prop_assert_eq!(fold(&nfd), want.clone());
        prop_assert!(matches(&text, &want));
    }

    #[test]
    fn fold_is_idempotent_and_lowercase(s in any::<String>(), t in rich_text(20)) {
        for s in [s, t] {
            let f = fold(&s);
            prop_assert_eq!(fold(&f), f.clone());
            prop_assert!(f.chars().all(|c| c.to_lowercase().eq([c])), "{:?}", f);
            prop_assert!(!f.chars().any(unicode_normalization::char::is_combining_mark));
            prop_assert!(matches(&s, &f));
        }
    }

    #[test]
    fn ascii_fast_paths_equal_the_general_path(hay in "[ -~]{0,30}", needle in "[ -~]{0,4}") {
        prop_assert_eq!(fold(&hay), hay.to_lowercase());
        let folded = fold(&needle);
        prop_assert_eq!(matches(&hay, &folded), hay.to_lowercase().contains(&folded));
    }
}

// ---------------------------------------------------------------------------------------------
// Phones

/// The documented rule, written independently: optional `+`, then 8 to 15 ASCII digits, nothing else.
fn phone_rule(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let digits = match chars.first() {
        Some('+') => &chars[1..],
        _ => &chars[..],
    };
    (8..=15).contains(&digits.len()) && digits.iter().all(char::is_ascii_digit)
}

proptest! {
    #[test]
    fn phone_rule_is_exactly_the_documented_one(
        s in prop_oneof![
            any::<String>(),
            "\\+?[0-9]{6,17}",
            "[+0-9 ()٠-٩０-９-]{0,18}",
            "\\+?[0-9]{8,15}[\n ]?",
        ],
    ) {
        prop_assert_eq!(is_valid_phone(&s), phone_rule(&s), "{:?}", s);
        let masked = mask_phone(&s);
        prop_assert_eq!(masked.chars().count(), s.chars().count());
        prop_assert!(masked.chars().filter(char::is_ascii_digit).count() <= 3);
    }

    #[test]
    fn every_phone_of_the_documented_shape_is_accepted(s in "\\+?[0-9]{8,15}") {
        prop_assert!(is_valid_phone(&s));
        let req = pb::CreateSessionRequest {
            script_id: "s".into(),
            contacts: vec![pb::Contact { phone: s.clone(), ..Default::default() }],
            ..Default::default()
        };
        let session = NewSession::parse(req, &limits()).expect("valid");
        prop_assert_eq!(&session.contacts[0].phone, &s);
    }
}

#[test]
fn generated_requests_cover_the_options() {
    // Guards the strategies themselves: a request with every option set is valid and maps.
    let req = pb::CreateSessionRequest {
        script_id: "kịch-bản-1".into(),
        contacts: vec![pb::Contact {
            phone: "+84912345678".into(),
            email: "a@b.vn".into(),
            external_contact_code: "KH-1 🎓".into(),
            variables: BTreeMap::from([("tên thí sinh".to_owned(), "Nguyễn Văn Đức 👩‍👩‍👧".to_owned())]),
        }],
        name: "Đợt 1 🎉".into(),
        caller_id: "19001234".into(),
        voice: 2,
        speed: Some(-3),
        retry_count: Some(10),
        calls_per_round: Some(1000),
        round_interval: Some(prost_types::Duration { seconds: 86_400, nanos: 0 }),
        retry_interval: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        start_time: Some(prost_types::Timestamp { seconds: NOW_SECS - 299, nanos: 999_999_999 }),
        external_session_id: "k".into(),
        auto_pause: true,
        check_variables: false,
        purpose: 0,
        defer_to_calling_hours: false,
        validate_only: false,
    };
    let session = NewSession::parse(req, &limits()).unwrap();
    let body: UpstreamBody =
        serde_json::from_str(&serde_json::to_string(&execute_body(&session, "k")).unwrap()).unwrap();
    assert_eq!(body.contact_info[0].mapping_variables["tên thí sinh"], "Nguyễn Văn Đức 👩‍👩‍👧");
    assert_eq!(body.send_time, Some((NOW_SECS - 299) * 1000 + 999));
    assert_eq!(body.voice.as_deref(), Some("southern_female_honganh"));
}
