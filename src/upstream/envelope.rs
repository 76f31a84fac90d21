//! The JSON envelope every upstream answer comes in (`status_code`, `payload`, `message`), and
//! the lenient readers the endpoints' payloads use: unknown keys are ignored, `null` and missing
//! fields become defaults, numbers where strings were expected are taken as their text, and any
//! other shape is a typed error. The payloads themselves live beside their endpoints.

use serde::{Deserialize, Deserializer, de, de::IgnoredAny};
use serde_json::value::RawValue;

/// `status_code` of a successful envelope.
pub const SUCCESS: i64 = 9999;

/// The outcome of reading an envelope.
#[derive(Debug, PartialEq, Eq)]
pub enum Envelope<T> {
    /// `status_code` 9999 and a payload of the expected shape.
    Success(T),
    /// Any other `status_code`, with the error code found (or `Unknown`).
    Failure {
        /// `payload.error`, else `payload.message`/`message` when code-like, else `Unknown`.
        code: String,
    },
}

/// What was wrong with a body that is not a usable envelope (our words, never the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(default, deserialize_with = "lenient_i64")]
    status_code: Option<i64>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    /// Borrowed raw, like `payload`: read as a `serde_json::Value` it would refuse what the
    /// one-pass path skips (a number out of `f64` range such as `1e999`), and a body's outcome
    /// must not depend on its size.
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct FailurePayload {
    #[serde(default, deserialize_with = "opt_string")]
    error: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    message: Option<String>,
}

/// A success envelope read in one pass: `payload` straight into `T`. `message` and unknown keys
/// are skipped (as `RawEnvelope` accepts any JSON there); any other shape fails, and `parse`
/// then takes the general two-pass path.
#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
struct SuccessEnvelope<T> {
    #[serde(default, deserialize_with = "lenient_i64")]
    status_code: Option<i64>,
    #[serde(default)]
    payload: Option<T>,
    /// Skipped, but named: a repeated `message` is then a duplicate field here as in
    /// `RawEnvelope`, so both paths refuse it (an unknown key may repeat in both).
    #[serde(default, rename = "message")]
    _message: Option<IgnoredAny>,
}

/// Bodies from this size up are first read in one pass: a large script list is read faster so,
/// while a small body (an execute answer, a short list) is read as fast or faster by the general
/// path (BENCHMARKS.md has the figures).
pub const ONE_PASS_MIN_BYTES: usize = 4096;

/// Parses an envelope and, on success, its payload as `T`.
///
/// A success with a payload (every answer the facade lives on) is read in one pass; anything
/// else (failures, a missing or null payload, any shape error) goes through the general path,
/// which first borrows the payload as raw JSON, so errors and failure codes are exactly those
/// of the general path. A body that is not a JSON object is never an envelope, whatever it holds.
pub fn parse<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<Envelope<T>, ShapeError> {
    // Before serde: its derived struct visitors also accept a JSON array, read by position, so
    // `[-9999]` would be a failure (code `Unknown`) and `[9999, payload]` a success.
    if !is_object(body) {
        return Err(not_an_object(body));
    }
    // Valid UTF-8 first, as the general path's raw payload demands even of keys it ignores.
    // Small bodies (an execute answer) gain nothing from one pass: the general path is as fast.
    if body.len() < ONE_PASS_MIN_BYTES {
        return parse_general(body);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        if let Ok(SuccessEnvelope { status_code: Some(SUCCESS), payload: Some(value), .. }) =
            serde_json::from_str::<SuccessEnvelope<T>>(text)
        {
            return Ok(Envelope::Success(value));
        }
    }
    parse_general(body)
}

/// Whether the body's first JSON token opens an object (leading JSON whitespace skipped, as
/// serde_json skips it).
fn is_object(body: &[u8]) -> bool {
    body.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) == Some(&b'{')
}

/// Why a body that does not open an object is not an envelope: not JSON at all, or JSON of
/// another kind (an array, a string, a number, `true`, `false`, `null`).
fn not_an_object(body: &[u8]) -> ShapeError {
    match serde_json::from_slice::<IgnoredAny>(body) {
        Ok(_) => ShapeError("not a JSON envelope (JSON, but not an object)".into()),
        Err(e) => ShapeError(format!("not a JSON envelope ({})", e.classify_name())),
    }
}

fn parse_general<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<Envelope<T>, ShapeError> {
    let raw: RawEnvelope<'de> =
        serde_json::from_slice(body).map_err(|e| ShapeError(format!("not a JSON envelope ({})", e.classify_name())))?;
    let status = raw.status_code.ok_or_else(|| ShapeError("envelope without status_code".into()))?;
    if status == SUCCESS {
        let payload = raw.payload.map(RawValue::get).unwrap_or("null");
        let value = T::deserialize(&mut serde_json::Deserializer::from_str(payload))
            .map_err(|e| ShapeError(format!("unexpected payload shape ({})", e.classify_name())))?;
        return Ok(Envelope::Success(value));
    }
    let failure: FailurePayload = raw.payload.and_then(|p| serde_json::from_str(p.get()).ok()).unwrap_or_default();
    let top_message = raw.message.and_then(|m| serde_json::from_str::<String>(m.get()).ok());
    let code = failure
        .error
        .filter(|s| !s.trim().is_empty())
        .map(|s| sanitize_code(&s))
        .or_else(|| failure.message.filter(|m| is_code_like(m)))
        .or_else(|| top_message.filter(|m| is_code_like(m)))
        .unwrap_or_else(|| "Unknown".to_owned());
    Ok(Envelope::Failure { code })
}

/// Best effort: the error code of a failure envelope in any body, for metadata on HTTP errors.
pub fn failure_code(body: &[u8]) -> Option<String> {
    match parse::<serde::de::IgnoredAny>(body) {
        Ok(Envelope::Failure { code }) => Some(code),
        _ => None,
    }
}

/// An `error` field is meant to be a code; if it holds free text, keep a safe identifier-like
/// form of it (it ends up in status metadata and messages, which must never echo raw bodies).
fn sanitize_code(s: &str) -> String {
    let s = s.trim();
    if is_code_like(s) {
        return s.to_owned();
    }
    s.chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' { c } else { '_' })
        .collect()
}

/// A code is a short identifier like `data_is_required`; free text is not a code.
fn is_code_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "i/o",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong types",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// string -> itself; null/missing -> ""; number/bool -> its text; anything else is an error.
pub(super) fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string, a number or null")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_unit<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_any(V)
}

pub(super) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<serde_json::Value>::deserialize(d)?.and_then(|v| match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }))
}

/// bool; null/missing -> false; 0/1 and "true"/"false" accepted.
pub(super) fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(b),
        Some(serde_json::Value::Number(n)) if n.as_i64() == Some(0) => Ok(false),
        Some(serde_json::Value::Number(n)) if n.as_i64() == Some(1) => Ok(true),
        Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("false") || s.is_empty() => Ok(false),
        Some(_) => Err(de::Error::custom("expected a boolean")),
    }
}

/// `status_code` as a number or a numeric string.
pub(super) fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

pub(super) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{
        ExecutePayload,
        auth::AuthPayload,
        scripts::{Script, ScriptList},
    };

    fn scripts(body: &str) -> Result<Envelope<ScriptList>, ShapeError> {
        parse::<ScriptList>(body.as_bytes())
    }

    #[test]
    fn envelope_table() {
        struct Row {
            body: &'static str,
            want: Result<Envelope<ScriptList>, ()>,
        }
        let ok = |v: Vec<Script>| Ok(Envelope::Success(ScriptList(v)));
        let fail = |c: &str| Ok(Envelope::Failure { code: c.to_owned() });
        let rows = [
            Row { body: r#"{"status_code":9999,"payload":[]}"#, want: ok(vec![]) },
            Row { body: r#"{"status_code":"9999","payload":null}"#, want: ok(vec![]) },
            Row { body: r#"{"status_code":9999}"#, want: ok(vec![]) },
            Row {
                body: r#"{"instance_id":"stg","status_code":9999,"key_enabled":false,"extra":{"a":1},"payload":[{"id":"a","name":null,"variables":null,"zzz":1}]}"#,
                want: ok(vec![Script { id: "a".into(), ..Default::default() }]),
            },
            Row { body: r#"{"status_code":9999,"payload":{"not":"a list"}}"#, want: Err(()) },
            Row { body: r#"{"status_code":9999,"payload":[{"id":{"x":1}}]}"#, want: Err(()) },
            Row {
                body: r#"{"status_code":-9999,"payload":{"status":"fail","error":"data_is_required","message":"Please check your input param"}}"#,
                want: fail("data_is_required"),
            },
            Row { body: r#"{"status_code":-9999,"message":"api_key_invalid"}"#, want: fail("api_key_invalid") },
            Row { body: r#"{"status_code":-9999,"message":"Something went wrong, sorry"}"#, want: fail("Unknown") },
            Row { body: r#"{"status_code":-9999,"payload":"oops"}"#, want: fail("Unknown") },
            Row {
                body: r#"{"status_code":-9999,"payload":{"error":null,"message":"limit_word"}}"#,
                want: fail("limit_word"),
            },
            Row { body: r#"{"status_code":0,"payload":{"error":"tenant_invalid"}}"#, want: fail("tenant_invalid") },
            Row {
                body: r#"{"status_code":-9999,"payload":{"error":"bad <b>thing</b> happened"}}"#,
                want: fail("bad__b_thing__b__happened"),
            },
            Row { body: r#"{"payload":[]}"#, want: Err(()) },
            Row { body: r#"<html>502</html>"#, want: Err(()) },
            Row { body: r#"{"status_code":9999,"payload":[{"id":"a""#, want: Err(()) },
            Row { body: "", want: Err(()) },
            Row { body: "[]", want: Err(()) },
        ];
        for row in rows {
            let got = scripts(row.body).map_err(|_| ());
            assert_eq!(got, row.want, "body {}", row.body);
            // The same envelope over the one-pass size: the same outcome (an unknown key pads it).
            if let Some(rest) = row.body.strip_prefix('{') {
                let padded = format!("{{\"zz_pad\":\"{}\",{rest}", "x".repeat(ONE_PASS_MIN_BYTES));
                assert_eq!(scripts(&padded).map_err(|_| ()), row.want, "padded body {}", row.body);
                assert_eq!(scripts(&padded).map_err(|e| e.0), scripts(row.body).map_err(|e| e.0), "{}", row.body);
            }
        }
    }

    /// Found by the `envelope` fuzz target (fuzz/README.md): a body's outcome depended on its
    /// size, because the one-pass path (bodies of 4 KiB and more) skipped `message` while the
    /// general path read it as a `serde_json::Value`: `1e999` (out of `f64` range) and a repeated
    /// `message` were malformed envelopes when small and successes when large.
    #[test]
    fn message_is_read_alike_whatever_the_body_size() {
        let rows: &[(&str, Result<Envelope<ScriptList>, ()>)] = &[
            (r#"{"status_code":9999,"payload":[],"message":1e999}"#, Ok(Envelope::Success(ScriptList(vec![])))),
            (
                r#"{"status_code":9999,"payload":[],"message":[1e999,{"a":-1e400}]}"#,
                Ok(Envelope::Success(ScriptList(vec![]))),
            ),
            (r#"{"status_code":-9999,"message":1e999}"#, Ok(Envelope::Failure { code: "Unknown".into() })),
            (r#"{"status_code":-9999,"message":"limit_word"}"#, Ok(Envelope::Failure { code: "limit_word".into() })),
            (r#"{"status_code":9999,"payload":[],"message":"a","message":"b"}"#, Err(())),
            (r#"{"status_code":9999,"payload":[],"zz":1,"zz":2}"#, Ok(Envelope::Success(ScriptList(vec![])))),
        ];
        for (body, want) in rows {
            let padded = format!("{{\"zz_pad\":\"{}\",{}", "x".repeat(ONE_PASS_MIN_BYTES), &body[1..]);
            assert_eq!(&scripts(body).map_err(|_| ()), want, "{body}");
            assert_eq!(scripts(&padded).map_err(|e| e.0), scripts(body).map_err(|e| e.0), "padded {body}");
        }
    }

    /// Found reading the envelope against serde's derived visitors: they accept a JSON array for
    /// a struct, by position, so `[-9999]` was a failure envelope (`UNKNOWN` for the caller) and
    /// `[9999, payload]` a success. Every body that is not an object is malformed, for every
    /// payload type, on either path, and holds no failure code for an HTTP error.
    #[test]
    fn a_body_that_is_not_an_object_is_never_an_envelope() {
        const NOT_AN_OBJECT: &str = "not a JSON envelope (JSON, but not an object)";
        let one_pass = format!(r#"[9999,[{{"id":"a"}}],"{}"]"#, "x".repeat(ONE_PASS_MIN_BYTES));
        let rows: &[(&str, &str)] = &[
            ("[]", NOT_AN_OBJECT),
            ("[-9999]", NOT_AN_OBJECT),
            (r#"["-9999",{"error":"limit_word"},"api_key_invalid"]"#, NOT_AN_OBJECT),
            (r#"[9999,[{"id":"a"}]]"#, NOT_AN_OBJECT),
            (r#"[9999,{"autocall_id":"a1","bot_script_id":"b"}]"#, NOT_AN_OBJECT),
            (r#"[9999,{"access_token":"t"}]"#, NOT_AN_OBJECT),
            (r#"[{"status_code":-9999,"payload":{"error":"limit_word"}}]"#, NOT_AN_OBJECT),
            (&one_pass, NOT_AN_OBJECT),
            (" \n\t[-9999] ", NOT_AN_OBJECT),
            ("-9999", NOT_AN_OBJECT),
            ("9999", NOT_AN_OBJECT),
            ("1e999", NOT_AN_OBJECT),
            (r#""-9999""#, NOT_AN_OBJECT),
            (r#""{\"status_code\":-9999}""#, NOT_AN_OBJECT),
            ("true", NOT_AN_OBJECT),
            ("false", NOT_AN_OBJECT),
            ("null", NOT_AN_OBJECT),
            ("[-9999", "not a JSON envelope (truncated)"),
            ("[-9999]]", "not a JSON envelope (syntax error)"),
            ("nul", "not a JSON envelope (truncated)"),
            ("nulL", "not a JSON envelope (syntax error)"),
        ];
        for (body, detail) in rows {
            let want: Result<(), String> = Err(detail.to_string());
            let bytes = body.as_bytes();
            assert_eq!(parse::<ScriptList>(bytes).map(|_| ()).map_err(|e| e.0), want, "{body}");
            assert_eq!(parse::<ExecutePayload>(bytes).map(|_| ()).map_err(|e| e.0), want, "{body}");
            assert_eq!(parse::<AuthPayload>(bytes).map(|_| ()).map_err(|e| e.0), want, "{body}");
            assert_eq!(parse::<IgnoredAny>(bytes).map(|_| ()).map_err(|e| e.0), want, "{body}");
            assert_eq!(failure_code(bytes), None, "{body}");
        }
        // An object after leading JSON whitespace is still read, on either path.
        let rows: &[(&str, Envelope<ScriptList>)] = &[
            (" \r\n\t{\"status_code\":-9999,\"payload\":{\"error\":\"limit_word\"}}", fail("limit_word")),
            ("\n{\"status_code\":9999,\"payload\":[]}", Envelope::Success(ScriptList(vec![]))),
        ];
        for (body, want) in rows {
            assert_eq!(scripts(body).as_ref(), Ok(want), "{body:?}");
            let padded = body.replacen('{', &format!("{{\"zz_pad\":\"{}\",", "x".repeat(ONE_PASS_MIN_BYTES)), 1);
            assert_eq!(scripts(&padded).as_ref(), Ok(want), "padded {body:?}");
        }
    }

    fn fail(code: &str) -> Envelope<ScriptList> {
        Envelope::Failure { code: code.to_owned() }
    }

    #[test]
    fn no_panic_on_junk() {
        for body in [
            &b"\xff\xfe"[..],
            b"{",
            b"null",
            b"{\"status_code\":1e999}",
            b"{\"status_code\":9999,\"payload\":[[[[[[]]]]]]}",
        ] {
            let _ = parse::<ScriptList>(body);
            let _ = parse::<ExecutePayload>(body);
            let _ = failure_code(body);
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let body = format!("{{\"status_code\":9999,\"payload\":{deep}}}");
        assert!(parse::<ScriptList>(body.as_bytes()).is_err());
    }
}
