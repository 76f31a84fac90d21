//! The JSON body of `POST /api/call_bot/execute_by_phone`, borrowed from a validated
//! [`NewSession`]: unset options are omitted so the upstream's defaults apply, durations are whole
//! seconds, the start time is Unix milliseconds, text is passed through byte for byte.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::{NewSession, ValidContact};

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

impl<'a> ExecuteBody<'a> {
    /// Maps a validated session; `ext_session_id` is the key given or generated for it.
    pub fn new(session: &'a NewSession, ext_session_id: &'a str) -> Self {
        ExecuteBody {
            bot_script_id: &session.script_id,
            contact_info: session.contacts.iter().map(ContactInfo::new).collect(),
            name: session.name.as_deref(),
            cid: Some(session.caller_id.as_str()).filter(|c| !c.is_empty()),
            voice: session.voice.as_ref().map(|v| v.as_upstream()),
            speed: session.speed,
            num_retry: session.retry_count,
            num_per_call: session.calls_per_round,
            distance_per_call: session.round_interval_secs,
            distance_retry: session.retry_interval_secs,
            send_time: session.send_time_unix_ms,
            ext_session_id,
            auto_pause: session.auto_pause,
        }
    }
}

impl<'a> ContactInfo<'a> {
    fn new(c: &'a ValidContact) -> Self {
        ContactInfo {
            phone: &c.phone,
            email: c.email.as_deref(),
            ext_contact_code: c.external_contact_code.as_deref(),
            mapping_variables: &c.variables,
        }
    }
}

impl ExecuteBody<'_> {
    /// Appends the body's JSON to `out`: the bytes `serde_json::to_vec(self)` gives (the derived
    /// `Serialize` stays the reference, and the tests hold the two equal), written by hand because
    /// serde_json escapes strings one byte at a time: for the 200-odd short strings of a
    /// 15-contact session that was 9 % of a CreateSession's instructions (callgrind,
    /// BENCHMARKS.md "Third round").
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
/// included, byte for byte. A string with nothing to escape (nearly all) is found so by one pass
/// without early exit, which the compiler vectorizes, and copied whole.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let needs_escape = bytes.iter().fold(false, |seen, &b| seen | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if !needs_escape {
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

#[cfg(test)]
mod tests {
    use super::*;

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
