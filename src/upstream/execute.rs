//! `POST /api/call_bot/execute_by_phone?cid=`: starts a callBot session. Its JSON body, borrowed
//! from a validated session (`convert::execute_body` fills it in): unset options are omitted so
//! the upstream's defaults apply, durations are whole seconds, the start time is Unix
//! milliseconds, text is passed through byte for byte. Its answer: the session id and the
//! contacts the upstream refused.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Deserializer, Serialize, de};

use super::{
    CallContext, UpstreamClient, UpstreamError,
    envelope::{Envelope, lenient_string},
    retry::Idempotency,
};

/// The endpoint's path.
pub(super) const PATH: &str = "/api/call_bot/execute_by_phone";

/// The request body, field names as the upstream spells them.
#[derive(Debug, Serialize, PartialEq)]
pub struct ExecuteBody<'a> {
    /// Script to read.
    pub bot_script_id: &'a str,
    /// Contacts to call.
    pub contact_info: Vec<ContactInfo<'a>>,
    /// Session name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// Caller id; also sent in the query string (empty there when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid: Option<&'a str>,
    /// Voice name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice: Option<&'static str>,
    /// Reading speed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<i32>,
    /// Redials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_retry: Option<i32>,
    /// Calls per round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_per_call: Option<i32>,
    /// Seconds between rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_per_call: Option<u64>,
    /// Seconds between redials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_retry: Option<u64>,
    /// Start, Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_time: Option<i64>,
    /// The session key (always sent: given or generated).
    pub ext_session_id: &'a str,
    /// Pause when no agent is free; omitted when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auto_pause: bool,
}

/// One entry of `contact_info`.
#[derive(Debug, Serialize, PartialEq)]
pub struct ContactInfo<'a> {
    /// Phone, as given.
    pub phone: &'a str,
    /// Email, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    /// Caller-side contact code, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_contact_code: Option<&'a str>,
    /// Script variables by field code (always an object, possibly empty).
    pub mapping_variables: &'a BTreeMap<String, String>,
}

impl ExecuteBody<'_> {
    /// Appends the body's JSON to `out`: the bytes `serde_json::to_vec(self)` gives (the derived
    /// `Serialize` stays the reference, and the tests hold the two equal), written by hand because
    /// serde_json escapes strings one byte at a time, and for the 200-odd short strings of a
    /// 15-contact session that is a tenth of a CreateSession's instructions (BENCHMARKS.md,
    /// "CreateSession vs the stack floor").
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"bot_script_id\":");
        write_str(out, self.bot_script_id);
        out.extend_from_slice(b",\"contact_info\":[");
        for (i, c) in self.contact_info.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"phone\":");
            write_str(out, c.phone);
            write_optional_str(out, b",\"email\":", c.email);
            write_optional_str(out, b",\"ext_contact_code\":", c.ext_contact_code);
            out.extend_from_slice(b",\"mapping_variables\":{");
            for (j, (key, value)) in c.mapping_variables.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_str(out, value);
            }
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
        write_optional_str(out, b",\"name\":", self.name);
        write_optional_str(out, b",\"cid\":", self.cid);
        write_optional_str(out, b",\"voice\":", self.voice);
        let numbers = [
            (&b",\"speed\":"[..], self.speed.map(i128::from)),
            (b",\"num_retry\":", self.num_retry.map(i128::from)),
            (b",\"num_per_call\":", self.num_per_call.map(i128::from)),
            (b",\"distance_per_call\":", self.distance_per_call.map(i128::from)),
            (b",\"distance_retry\":", self.distance_retry.map(i128::from)),
            (b",\"send_time\":", self.send_time.map(i128::from)),
        ];
        for (field, value) in numbers {
            if let Some(n) = value {
                out.extend_from_slice(field);
                write_int(out, n);
            }
        }
        out.extend_from_slice(b",\"ext_session_id\":");
        write_str(out, self.ext_session_id);
        if self.auto_pause {
            out.extend_from_slice(b",\"auto_pause\":true");
        }
        out.push(b'}');
    }
}

/// `field` and the string, when there is one (serde's `skip_serializing_if = "Option::is_none"`).
fn write_optional_str(out: &mut Vec<u8>, field: &[u8], value: Option<&str>) {
    if let Some(value) = value {
        out.extend_from_slice(field);
        write_str(out, value);
    }
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, `\b`, `\t`, `\n`, `\f`, `\r`, and
/// `\u00xx` (lowercase hex) for the other control characters; everything else, non-ASCII
/// included, byte for byte. A string with nothing to escape (nearly all) is found so eight bytes
/// at a time ([`needs_escape`]) and copied whole.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
    } else {
        let mut clean_from = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0x00..=0x1f => &[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]],
                _ => continue,
            };
            out.extend_from_slice(&bytes[clean_from..i]);
            out.extend_from_slice(escape);
            clean_from = i + 1;
        }
        out.extend_from_slice(&bytes[clean_from..]);
    }
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `bytes` holds a byte JSON escapes: a control character (below 0x20), `"` or `\\`.
/// Eight bytes at a time (the classic "has a zero byte" test on the word, its XOR with `"` and
/// with `\\`, and "has a byte below 0x20", exact for the bytes below 0x80 and never set by the
/// others); the last few bytes one at a time. Measured against a byte loop that the compiler
/// vectorizes: about a fifth fewer instructions on the short strings of a contact list.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut words = bytes.chunks_exact(8);
    let mut found = 0u64;
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let v = u64::from_le_bytes(eight);
        found |= (v.wrapping_sub(ONES * 0x20) & !v & HIGH)
            | has_zero_byte(v ^ (ONES * u64::from(b'"')))
            | has_zero_byte(v ^ (ONES * u64::from(b'\\')));
    }
    found != 0 || words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// An integer in decimal.
fn write_int(out: &mut Vec<u8>, n: i128) {
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

/// An `execute_by_phone` request ready to send: the JSON body (built once; a retry sends the
/// same bytes) and the `cid` query value.
#[derive(Debug, Clone)]
pub struct EncodedExecute {
    json: Bytes,
    cid: String,
}

impl EncodedExecute {
    /// Encodes `body` (by hand: [`ExecuteBody::write_json`]) into a per-thread scratch buffer
    /// and copies it into a body of exactly its size: the body lives until the upstream answers
    /// (a second or more), and a buffer grown by doubling can be half slack (BENCHMARKS.md,
    /// "Third round").
    pub fn new(body: &ExecuteBody<'_>) -> Self {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let json = SCRATCH.with(|scratch| {
            // A re-entrant call (impossible: writing calls nothing of ours) gets its own buffer.
            let mut owned = Vec::new();
            let mut borrowed = scratch.try_borrow_mut().ok();
            let buf = borrowed.as_deref_mut().unwrap_or(&mut owned);
            buf.clear();
            body.write_json(buf);
            let json = Bytes::copy_from_slice(buf);
            // A huge body (thousands of contacts) does not stay pinned to the thread.
            if buf.capacity() > SCRATCH_KEEP_BYTES {
                *buf = Vec::new();
            }
            json
        });
        EncodedExecute { json, cid: body.cid.unwrap_or("").to_owned() }
    }

    /// The JSON body.
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

/// The largest scratch buffer [`EncodedExecute::new`] keeps for the next call on its thread.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

/// What `execute_by_phone` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteOutcome {
    /// The upstream session id.
    pub autocall_id: String,
    /// The script id the upstream echoed.
    pub bot_script_id: String,
    /// Contacts it refused.
    pub rejections: Vec<Rejection>,
}

impl UpstreamClient {
    /// `POST /api/call_bot/execute_by_phone?cid=`: starts a session. Retried only when the
    /// request provably never reached the application; the body (and so its session key) is
    /// the same on every attempt.
    pub async fn execute_by_phone(
        &self,
        ctx: &CallContext,
        body: &ExecuteBody<'_>,
    ) -> Result<ExecuteOutcome, UpstreamError> {
        self.execute_encoded(ctx, &EncodedExecute::new(body)).await
    }

    /// `execute_by_phone` with a body encoded beforehand, so the caller can let go of the
    /// validated request while the exchange is in flight (its JSON is all that is sent).
    pub async fn execute_encoded(
        &self,
        ctx: &CallContext,
        encoded: &EncodedExecute,
    ) -> Result<ExecuteOutcome, UpstreamError> {
        let (json, cid) = (&encoded.json, encoded.cid.as_str());
        let answer = self
            .call_with_token(ctx, Idempotency::Write, Method::POST, &self.endpoints.execute, |request| {
                request
                    .query(&[("cid", cid)])
                    .header(&http::header::CONTENT_TYPE, "application/json")
                    .body(json.clone())
            })
            .await?;
        match self.decode::<ExecutePayload>(&answer)? {
            Envelope::Success(p) if p.autocall_id.trim().is_empty() => Err(UpstreamError::Malformed {
                detail: "success without autocall_id".into(),
                http_status: answer.status.as_u16(),
            }),
            Envelope::Success(p) => {
                Ok(ExecuteOutcome { autocall_id: p.autocall_id, bot_script_id: p.bot_script_id, rejections: p.errors })
            }
            Envelope::Failure { code } => Err(UpstreamError::Rejected { code, http_status: answer.status.as_u16() }),
        }
    }
}

/// The success payload of `execute_by_phone`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExecutePayload {
    /// The session id.
    #[serde(default, deserialize_with = "lenient_string")]
    pub autocall_id: String,
    /// The script it runs.
    #[serde(default, deserialize_with = "lenient_string")]
    pub bot_script_id: String,
    /// Per-contact rejections. Their shape is not documented: every form `rejection` reads is
    /// accepted.
    #[serde(default, deserialize_with = "rejections")]
    pub errors: Vec<Rejection>,
}

/// One contact the upstream refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The phone as the upstream echoed it ("" when it gave none).
    pub phone: String,
    /// Its code ("rejected" when it gave none).
    pub reason: String,
}

fn rejections<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rejection>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    let items = match value {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items,
        Some(serde_json::Value::Object(map)) => {
            map.into_iter().map(|(k, v)| serde_json::json!({"phone": k, "error": v})).collect()
        }
        Some(_) => return Err(de::Error::custom("errors is neither a list nor an object")),
    };
    Ok(items.into_iter().filter_map(rejection).collect())
}

/// One rejection entry: an object with a phone and a code/error/reason/message, or a bare
/// string (`"0912345678: number_dnc"`, a phone alone, or a code alone).
fn rejection(item: serde_json::Value) -> Option<Rejection> {
    fn text(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    match item {
        serde_json::Value::Object(map) => {
            let phone = ["phone", "phone_number", "msisdn", "number"]
                .iter()
                .find_map(|k| map.get(*k).and_then(text))
                .unwrap_or_default();
            let reason = ["code", "error", "reason", "error_code", "message", "status"]
                .iter()
                .find_map(|k| map.get(*k).and_then(text))
                .unwrap_or_else(|| "rejected".to_owned());
            Some(Rejection { phone, reason })
        }
        serde_json::Value::String(s) => {
            let s = s.trim();
            if s.is_empty() {
                return None;
            }
            let looks_like_phone = |p: &str| {
                let digits = p.strip_prefix('+').unwrap_or(p);
                !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
            };
            if let Some((a, b)) = s.split_once([':', '|', ',', ' ', '=']) {
                let (a, b) = (a.trim(), b.trim());
                if looks_like_phone(a) && !b.is_empty() {
                    return Some(Rejection { phone: a.into(), reason: b.into() });
                }
                if looks_like_phone(b) && !a.is_empty() {
                    return Some(Rejection { phone: b.into(), reason: a.into() });
                }
            }
            if looks_like_phone(s) {
                Some(Rejection { phone: s.into(), reason: "rejected".into() })
            } else {
                Some(Rejection { phone: String::new(), reason: s.into() })
            }
        }
        serde_json::Value::Number(n) => Some(Rejection { phone: n.to_string(), reason: "rejected".into() }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::envelope::parse;

    #[test]
    fn the_word_at_a_time_escape_check_agrees_with_the_byte_rule_everywhere() {
        let by_byte = |bytes: &[u8]| bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        // Every byte value at every position of strings of 1 to 20 bytes, among ASCII letters
        // and among bytes just above the rule (0x20, 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xff).
        for len in 1..=20 {
            for fill in [b'a', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xff] {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut bytes = vec![fill; len];
                        bytes[at] = b;
                        assert_eq!(needs_escape(&bytes), by_byte(&bytes), "{bytes:?}");
                    }
                }
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape("Nguyễn Văn Đức, lớp 12A1".as_bytes()));
    }

    #[test]
    fn rejections_accept_every_known_shape() {
        let body = r#"{"status_code":9999,"payload":{"autocall_id":"s1","bot_script_id":"b","errors":[
            {"phone":"0912000999","error":"number_dnc"},
            {"phone":"0912000111","code":"phone_invalid"},
            {"phone_number":"0912000222","reason":"blocked"},
            {"phone":"0912000333","message":"number_dnc"},
            {"phone":"0912000444"},
            "0912000555: number_dnc",
            "number_dnc 0912000666",
            "0912000777",
            "quota",
            "",
            null,
            7]}}"#;
        let Ok(Envelope::Success(p)) = parse::<ExecutePayload>(body.as_bytes()) else { panic!("parse") };
        assert_eq!(p.autocall_id, "s1");
        let got: Vec<(&str, &str)> = p.errors.iter().map(|r| (r.phone.as_str(), r.reason.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("0912000999", "number_dnc"),
                ("0912000111", "phone_invalid"),
                ("0912000222", "blocked"),
                ("0912000333", "number_dnc"),
                ("0912000444", "rejected"),
                ("0912000555", "number_dnc"),
                ("0912000666", "number_dnc"),
                ("0912000777", "rejected"),
                ("", "quota"),
                ("7", "rejected"),
            ]
        );
        let map_form = r#"{"status_code":9999,"payload":{"autocall_id":"s","errors":{"0912000999":"number_dnc"}}}"#;
        let Ok(Envelope::Success(p)) = parse::<ExecutePayload>(map_form.as_bytes()) else { panic!("parse") };
        assert_eq!(p.errors, vec![Rejection { phone: "0912000999".into(), reason: "number_dnc".into() }]);
        let no_errors = r#"{"status_code":9999,"payload":{"autocall_id":"s","errors":null}}"#;
        let Ok(Envelope::Success(p)) = parse::<ExecutePayload>(no_errors.as_bytes()) else { panic!("parse") };
        assert!(p.errors.is_empty());
    }

    fn by_hand(body: &ExecuteBody<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        body.write_json(&mut out);
        out
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut every_ascii = String::new();
        for b in 0u8..0x80 {
            every_ascii.push(char::from(b));
        }
        let samples = [
            "",
            "plain",
            "exactly8",
            "Nguyễn Văn Đức — điểm 9,5 \u{2028}\u{2029} 😀",
            "quote \" backslash \\ newline \n tab \t cr \r bs \u{8} ff \u{c} nul \0 us \u{1f} del \u{7f}",
            "\"\"\"\"\"\"\"\"\\\\\\\\\\\\\\\\\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}x",
            "12345678\"",
            "1234567\"8",
            &every_ascii,
        ];
        for s in samples {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap(), "for {s:?}");
        }
    }

    #[test]
    fn integers_are_written_as_serde_json_writes_them() {
        for n in [
            0i128,
            1,
            -1,
            9,
            10,
            99,
            100,
            i128::from(i32::MIN),
            i128::from(i64::MAX),
            i128::from(u64::MAX),
            i128::from(i64::MIN),
        ] {
            let mut out = Vec::new();
            write_int(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn the_body_is_byte_for_byte_what_serde_json_writes() {
        let vars: BTreeMap<String, String> =
            [("ho_ten".to_owned(), "Nguyễn \"Văn\" An".to_owned()), ("lop".to_owned(), "12A1\n".to_owned())].into();
        let empty = BTreeMap::new();
        let contact =
            |phone, email, code, vars| ContactInfo { phone, email, ext_contact_code: code, mapping_variables: vars };
        let full = ExecuteBody {
            bot_script_id: "script\t1",
            contact_info: vec![
                contact("0912345678", Some("a@b.vn"), Some("HS-1"), &vars),
                contact("+84912345679", None, None, &empty),
            ],
            name: Some("Thông báo"),
            cid: Some("19001234"),
            voice: Some("southern_female_honganh"),
            speed: Some(-3),
            num_retry: Some(0),
            num_per_call: Some(i32::MAX),
            distance_per_call: Some(u64::MAX),
            distance_retry: Some(0),
            send_time: Some(i64::MIN),
            ext_session_id: "key-1",
            auto_pause: true,
        };
        assert_eq!(by_hand(&full), serde_json::to_vec(&full).unwrap());
        let bare = ExecuteBody {
            bot_script_id: "s",
            contact_info: vec![],
            name: None,
            cid: None,
            voice: None,
            speed: None,
            num_retry: None,
            num_per_call: None,
            distance_per_call: None,
            distance_retry: None,
            send_time: None,
            ext_session_id: "",
            auto_pause: false,
        };
        assert_eq!(by_hand(&bare), serde_json::to_vec(&bare).unwrap());
    }
}
