//! `NewSession`: a `CreateSessionRequest` that passed every rule, typed for the upstream body
//! (`POST /api/call_bot/execute_by_phone`), plus the `script_id` rule shared with `GetScript`.
//!
//! Every rule is checked and every violation reported at once; nothing here does I/O or reads
//! the clock ([`SessionLimits::now`] is injected).

use std::time::{SystemTime, UNIX_EPOCH};

use super::contact::parse_contacts;
pub use super::contact::{ValidContact, path_key, validate_contacts};
use super::{ValidationError, Violations, at_most_chars, is_space_or_control};
use crate::pb;

/// Longest accepted `script_id`, `external_contact_code` and `external_session_id`.
pub(super) const MAX_ID_CHARS: usize = 128;
/// Longest accepted session name.
const MAX_NAME_CHARS: usize = 255;
/// Reading speeds the upstream knows: -3 slow … 3 fast.
const SPEED: std::ops::RangeInclusive<i32> = -3..=3;
/// Redials per contact. The upstream documents no maximum; 10 keeps a mistake from phoning a
/// person dozens of times.
const RETRY_COUNT: std::ops::RangeInclusive<i32> = 0..=10;
/// Calls per round. The upstream documents no maximum; 1000 is far above any tenant's trunk
/// capacity, so a larger number can only be a mistake.
const CALLS_PER_ROUND: std::ops::RangeInclusive<i32> = 1..=1_000;
/// Longest interval between rounds or redials: one day, in seconds.
const MAX_INTERVAL_SECS: i64 = 86_400;
/// How far in the past `start_time` may lie (clock skew between client and facade).
const START_TIME_PAST_MS: i128 = 5 * 60 * 1_000;
/// How far in the future `start_time` may lie: 366 days.
const START_TIME_FUTURE_MS: i128 = 366 * 86_400 * 1_000;

/// Limits that come from configuration, and the clock (injected so tests are deterministic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Most contacts one `CreateSession` may carry; larger lists are rejected before any
    /// per-contact work.
    pub max_contacts: usize,
    /// "Now", against which `start_time` is checked.
    pub now: SystemTime,
}

/// A text-to-speech voice the upstream knows, so the upstream client never handles raw enum
/// numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VoiceName {
    /// `northern_female_ngocanh`.
    NorthernFemaleNgocanh,
    /// `southern_female_honganh`.
    SouthernFemaleHonganh,
    /// `southern_male_tienhuy`.
    SouthernMaleTienhuy,
}

impl VoiceName {
    /// The upstream's `voice` string for this voice.
    pub fn as_upstream(&self) -> &'static str {
        match self {
            Self::NorthernFemaleNgocanh => "northern_female_ngocanh",
            Self::SouthernFemaleHonganh => "southern_female_honganh",
            Self::SouthernMaleTienhuy => "southern_male_tienhuy",
        }
    }

    /// `Ok(None)` for `VOICE_UNSPECIFIED` (upstream default); an error for a number this build
    /// does not know (e.g. from a newer client).
    fn from_proto(value: i32) -> Result<Option<Self>, &'static str> {
        match pb::Voice::try_from(value) {
            Ok(pb::Voice::Unspecified) => Ok(None),
            Ok(pb::Voice::NorthernFemaleNgocanh) => Ok(Some(Self::NorthernFemaleNgocanh)),
            Ok(pb::Voice::SouthernFemaleHonganh) => Ok(Some(Self::SouthernFemaleHonganh)),
            Ok(pb::Voice::SouthernMaleTienhuy) => Ok(Some(Self::SouthernMaleTienhuy)),
            Err(_) => Err("must be a known Voice value"),
        }
    }
}

/// A validated `CreateSessionRequest`: everything the upstream body needs, already typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Script to run (`bot_script_id`).
    pub script_id: String,
    /// Contacts to phone (`contact_info`), in request order, at least one.
    pub contacts: Vec<ValidContact>,
    /// Session name, byte-exact; `None` when empty.
    pub name: Option<String>,
    /// Caller id (`cid`); may be empty = internal network.
    pub caller_id: String,
    /// Voice; `None` = upstream default (field omitted).
    pub voice: Option<VoiceName>,
    /// Reading speed -3..=3; `None` = upstream default.
    pub speed: Option<i32>,
    /// Redials when unanswered (`num_retry`), 0..=10; `None` = upstream default.
    pub retry_count: Option<i32>,
    /// Calls per round (`num_per_call`), 1..=1000; `None` = upstream default.
    pub calls_per_round: Option<i32>,
    /// Seconds between rounds (`distance_per_call`); `None` = upstream default.
    pub round_interval_secs: Option<u64>,
    /// Seconds between redials (`distance_retry`); `None` = upstream default.
    pub retry_interval_secs: Option<u64>,
    /// Start time in Unix milliseconds (`send_time`); `None` = now.
    pub send_time_unix_ms: Option<i64>,
    /// Idempotency key (`ext_session_id`); `None` when the caller left it empty: the service
    /// generates one.
    pub external_session_id: Option<String>,
    /// Pause when no agent is available (`auto_pause`).
    pub auto_pause: bool,
    /// What the calls are for (the calling policy's rules are per purpose); not sent upstream.
    pub purpose: Option<Purpose>,
    /// Start at the next opening of the calling hours rather than fail; not sent upstream.
    pub defer_to_calling_hours: bool,
    /// Answer the verdict only: nothing sent, nothing counted.
    pub validate_only: bool,
}

/// What calls are for: the calling policy's rules are per purpose (`CallPurpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// Advertising (marketing) calls: the strict rules (Decree 91 art. 13 in Vietnam).
    Advertising,
    /// Calls the person expects (reminders, notices).
    Service,
}

impl Purpose {
    /// The name in the policy file and in stored keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Advertising => "advertising",
            Purpose::Service => "service",
        }
    }

    /// `Ok(None)` for `CALL_PURPOSE_UNSPECIFIED`; an error for a number this build does not know.
    pub fn from_proto(value: i32) -> Result<Option<Self>, &'static str> {
        match pb::CallPurpose::try_from(value) {
            Ok(pb::CallPurpose::Unspecified) => Ok(None),
            Ok(pb::CallPurpose::Advertising) => Ok(Some(Purpose::Advertising)),
            Ok(pb::CallPurpose::Service) => Ok(Some(Purpose::Service)),
            Err(_) => Err("must be a known CallPurpose value"),
        }
    }
}

impl NewSession {
    /// Validates `req` against every rule and `limits`, reporting all violations at once.
    ///
    /// Takes ownership so strings move into the result without copies. Rules and paths:
    /// - `script_id`: see [`validate_script_id`].
    /// - `contacts`: 1 to `max_contacts`; over the maximum, that one violation is reported and
    ///   no contact is inspected (cheap reject of oversized requests).
    /// - `contacts[i].phone`: required, `+`? and 8 to 15 digits, kept as given; a phone equal
    ///   (exactly, no normalization) to an earlier contact's is reported on the later one.
    /// - `contacts[i].email`: empty, or ≤ 254 chars, one `@`, non-empty local part, a domain
    ///   with an inner dot, no whitespace or control characters.
    /// - `contacts[i].external_contact_code`: ≤ 128 chars.
    /// - `contacts[i].variables`: at most 100 entries (over that, entries are not inspected);
    ///   `contacts[i].variables[]` for an empty key; `contacts[i].variables[KEY]` for a key over
    ///   64 chars or with control characters (shown escaped and truncated; spaces are allowed), or a
    ///   value over 2,000 chars. Values are kept byte-exact.
    /// - `name`: ≤ 255 chars, no control characters, byte-exact.
    /// - `caller_id`: empty, or `+`? and 3 to 15 digits (hotlines like `1900xxxx` and SIP
    ///   extensions like `101` are short).
    /// - `voice`: a known enum value; unspecified = upstream default.
    /// - `speed` -3..=3, `retry_count` 0..=10, `calls_per_round` 1..=1000.
    /// - `round_interval`, `retry_interval`: whole seconds, 0 to 86,400.
    /// - `start_time`: a valid timestamp between now − 5 minutes and now + 366 days.
    /// - `external_session_id`: empty, or ≤ 128 printable ASCII characters without spaces.
    pub fn parse(req: pb::CreateSessionRequest, limits: &SessionLimits) -> Result<NewSession, ValidationError> {
        // Destructured in full: a field added to the proto fails to compile here until it has
        // a rule.
        let pb::CreateSessionRequest {
            script_id,
            contacts,
            name,
            caller_id,
            voice,
            speed,
            retry_count,
            calls_per_round,
            round_interval,
            retry_interval,
            start_time,
            external_session_id,
            auto_pause,
            // Not part of the upstream body: the service checks the variables against the
            // script (which needs the script list, so I/O) after these rules pass.
            check_variables: _,
            purpose,
            defer_to_calling_hours,
            validate_only,
        } = req;
        let mut v = Violations::default();

        v.take(|| "script_id".into(), check_script_id(&script_id));
        let contacts = parse_contacts(contacts, limits.max_contacts, 0, &mut v);
        v.take(|| "name".into(), check_name(&name));
        v.take(|| "caller_id".into(), check_caller_id(&caller_id));
        let voice = v.take(|| "voice".into(), VoiceName::from_proto(voice));
        v.take(|| "speed".into(), check_range(speed, SPEED, SPEED_RULE));
        v.take(|| "retry_count".into(), check_range(retry_count, RETRY_COUNT, RETRY_COUNT_RULE));
        v.take(|| "calls_per_round".into(), check_range(calls_per_round, CALLS_PER_ROUND, CALLS_PER_ROUND_RULE));
        let round_interval_secs = v.take(|| "round_interval".into(), interval_secs(round_interval));
        let retry_interval_secs = v.take(|| "retry_interval".into(), interval_secs(retry_interval));
        let send_time_unix_ms = v.take(|| "start_time".into(), start_time_ms(start_time, limits.now));
        v.take(|| "external_session_id".into(), check_external_session_id(&external_session_id));
        let purpose = v.take(|| "purpose".into(), Purpose::from_proto(purpose));

        v.into_result(NewSession {
            script_id,
            contacts,
            name: non_empty(name),
            caller_id,
            voice,
            speed,
            retry_count,
            calls_per_round,
            round_interval_secs,
            retry_interval_secs,
            send_time_unix_ms,
            external_session_id: non_empty(external_session_id),
            auto_pause,
            purpose,
            defer_to_calling_hours,
            validate_only,
        })
    }
}

/// Validates a script id on its own, for `GetScript` (field `script_id`); the same rule
/// `CreateSession` applies.
pub fn validate_script_id(id: &str) -> Result<(), ValidationError> {
    let mut v = Violations::default();
    v.take(|| "script_id".into(), check_script_id(id));
    v.into_result(())
}

const SPEED_RULE: &str = "must be between -3 and 3";
const RETRY_COUNT_RULE: &str = "must be between 0 and 10";
const CALLS_PER_ROUND_RULE: &str = "must be between 1 and 1000";

/// Required, ≤ 128 chars, no whitespace or control characters (which also rules out a
/// whitespace-only id).
fn check_script_id(id: &str) -> Result<(), &'static str> {
    if id.trim().is_empty() {
        Err("is required")
    } else if !at_most_chars(id, MAX_ID_CHARS) {
        Err("must be at most 128 characters")
    } else if id.chars().any(is_space_or_control) {
        Err("must not contain whitespace or control characters")
    } else {
        Ok(())
    }
}

/// ≤ 255 chars, no control characters (a name with a newline breaks the operator's UI and logs).
fn check_name(name: &str) -> Result<(), &'static str> {
    if !at_most_chars(name, MAX_NAME_CHARS) {
        Err("must be at most 255 characters")
    } else if name.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else {
        Ok(())
    }
}

/// Empty (internal network), or `+`? and 3 to 15 digits. Shorter than a phone on purpose:
/// hotlines (`1900xxxx`) and SIP extensions (`101`) are valid caller ids.
fn check_caller_id(caller_id: &str) -> Result<(), &'static str> {
    if caller_id.is_empty() {
        return Ok(());
    }
    let digits = caller_id.strip_prefix('+').unwrap_or(caller_id);
    if (3..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("must be empty or an optional leading '+' followed by 3 to 15 digits")
    }
}

fn check_range(
    value: Option<i32>,
    range: std::ops::RangeInclusive<i32>,
    rule: &'static str,
) -> Result<(), &'static str> {
    match value {
        Some(n) if !range.contains(&n) => Err(rule),
        _ => Ok(()),
    }
}

/// Unset → `None` (upstream default); otherwise whole seconds in 0..=86,400.
fn interval_secs(d: Option<prost_types::Duration>) -> Result<Option<u64>, &'static str> {
    let Some(d) = d else { return Ok(None) };
    if d.nanos != 0 {
        return Err("must be a whole number of seconds");
    }
    match u64::try_from(d.seconds) {
        Ok(secs) if d.seconds <= MAX_INTERVAL_SECS => Ok(Some(secs)),
        _ => Err("must be between 0 and 86400 seconds"),
    }
}

/// Unset → `None` (start now); otherwise Unix milliseconds, between now − 5 minutes and
/// now + 366 days. Sub-millisecond precision is dropped. Wide integers so no input overflows.
fn start_time_ms(ts: Option<prost_types::Timestamp>, now: SystemTime) -> Result<Option<i64>, &'static str> {
    let Some(ts) = ts else { return Ok(None) };
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err("must be a valid timestamp (nanos between 0 and 999999999)");
    }
    let ms = i128::from(ts.seconds) * 1_000 + i128::from(ts.nanos / 1_000_000);
    let now_ms = unix_ms(now);
    if ms < now_ms - START_TIME_PAST_MS {
        return Err("must not be more than 5 minutes in the past");
    }
    if ms > now_ms + START_TIME_FUTURE_MS {
        return Err("must not be more than 366 days in the future");
    }
    i64::try_from(ms).map(Some).map_err(|_| "must be a representable timestamp")
}

/// Milliseconds since the Unix epoch, negative before it; saturates instead of overflowing.
fn unix_ms(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX / 2),
        Err(e) => i128::try_from(e.duration().as_millis()).map(|ms| -ms).unwrap_or(i128::MIN / 2),
    }
}

/// Empty, or ≤ 128 printable ASCII characters (0x21..=0x7E): the key travels in a JSON body and
/// in logs, and upstream comparisons must be byte-for-byte.
fn check_external_session_id(id: &str) -> Result<(), &'static str> {
    if id.len() <= MAX_ID_CHARS && id.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        Ok(())
    } else {
        Err("must be empty or at most 128 printable ASCII characters without spaces")
    }
}

/// `None` for an empty string: proto3 cannot tell "unset" from "empty", and the upstream
/// treats an omitted field as "use the default".
pub(super) fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use std::collections::BTreeMap;

    /// 2025-06-15T15:06:40Z, a fixed "now".
    const NOW_SECS: i64 = 1_750_000_000;
    const MAX_CONTACTS: usize = 5;

    fn limits() -> SessionLimits {
        SessionLimits { max_contacts: MAX_CONTACTS, now: UNIX_EPOCH + Duration::from_secs(NOW_SECS as u64) }
    }

    fn contact(phone: &str) -> pb::Contact {
        pb::Contact { phone: phone.into(), ..Default::default() }
    }

    /// The smallest valid request: a script and one contact.
    fn minimal() -> pb::CreateSessionRequest {
        pb::CreateSessionRequest {
            script_id: "script-1".into(),
            contacts: vec![contact("0912345678")],
            ..Default::default()
        }
    }

    fn secs(seconds: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds, nanos: 0 })
    }

    fn at(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos })
    }

    fn var(req: &mut pb::CreateSessionRequest, key: &str, value: &str) {
        req.contacts[0].variables.insert(key.into(), value.into());
    }

    fn fields(err: &ValidationError) -> Vec<&str> {
        err.violations.iter().map(|v| v.field.as_str()).collect()
    }

    type Mutation = fn(&mut pb::CreateSessionRequest);

    /// One row per rule (and per boundary): a minimal valid request, mutated, and the exact
    /// field paths expected; an empty list means the request must be accepted.
    const ROWS: &[(&str, Mutation, &[&str])] = &[
        ("minimal", |_| {}, &[]),
        // script_id
        ("script_id empty", |r| r.script_id.clear(), &["script_id"]),
        ("script_id blank", |r| r.script_id = "  \t".into(), &["script_id"]),
        ("script_id inner space", |r| r.script_id = "a b".into(), &["script_id"]),
        ("script_id control", |r| r.script_id = "ab\u{0}".into(), &["script_id"]),
        ("script_id 129", |r| r.script_id = "x".repeat(129), &["script_id"]),
        ("script_id 128", |r| r.script_id = "x".repeat(128), &[]),
        ("script_id unicode", |r| r.script_id = "kịch-bản-1".into(), &[]),
        // contacts
        ("contacts empty", |r| r.contacts.clear(), &["contacts"]),
        ("contacts at max", |r| r.contacts = (0..5).map(|n| contact(&format!("091234567{n}"))).collect(), &[]),
        (
            "contacts over max: one violation, contacts not inspected",
            |r| r.contacts = (0..6).map(|_| contact("bad")).collect(),
            &["contacts"],
        ),
        // contacts[i].phone
        ("phone empty", |r| r.contacts[0].phone.clear(), &["contacts[0].phone"]),
        ("phone spaces", |r| r.contacts[0].phone = "0912 345 678".into(), &["contacts[0].phone"]),
        ("phone 7 digits", |r| r.contacts[0].phone = "0912345".into(), &["contacts[0].phone"]),
        ("phone 16 digits", |r| r.contacts[0].phone = "+0912345678901234".into(), &["contacts[0].phone"]),
        ("phone plus", |r| r.contacts[0].phone = "+84912345678".into(), &[]),
        ("phone bad in second contact", |r| r.contacts.push(contact("09-12")), &["contacts[1].phone"]),
        (
            "phone duplicates: later ones reported",
            |r| {
                r.contacts.push(contact("0987654321"));
                r.contacts.push(contact("0912345678"));
                r.contacts.push(contact("0912345678"));
                r.contacts.push(contact("0987654321"));
            },
            &["contacts[2].phone", "contacts[3].phone", "contacts[4].phone"],
        ),
        (
            "violations come in request order",
            |r| {
                r.contacts[0].email = "x".into();
                r.contacts.push(contact("0912345678"));
                r.name = "\u{7}".into();
            },
            &["contacts[0].email", "contacts[1].phone", "name"],
        ),
        ("phone same digits, different form: not a duplicate", |r| r.contacts.push(contact("+0912345678")), &[]),
        // contacts[i].email
        ("email ok", |r| r.contacts[0].email = "an.nguyen@vi.du.vn".into(), &[]),
        ("email no at", |r| r.contacts[0].email = "an.example.vn".into(), &["contacts[0].email"]),
        ("email two at", |r| r.contacts[0].email = "a@b@c.vn".into(), &["contacts[0].email"]),
        ("email empty local", |r| r.contacts[0].email = "@c.vn".into(), &["contacts[0].email"]),
        ("email no dot", |r| r.contacts[0].email = "a@localhost".into(), &["contacts[0].email"]),
        ("email leading dot", |r| r.contacts[0].email = "a@.vn".into(), &["contacts[0].email"]),
        ("email trailing dot", |r| r.contacts[0].email = "a@vn.".into(), &["contacts[0].email"]),
        ("email space", |r| r.contacts[0].email = "a b@c.vn".into(), &["contacts[0].email"]),
        ("email 255", |r| r.contacts[0].email = format!("{}@c.vn", "a".repeat(250)), &["contacts[0].email"]),
        ("email 254", |r| r.contacts[0].email = format!("{}@c.vn", "a".repeat(249)), &[]),
        // contacts[i].external_contact_code
        (
            "contact code 129",
            |r| r.contacts[0].external_contact_code = "đ".repeat(129),
            &["contacts[0].external_contact_code"],
        ),
        ("contact code 128", |r| r.contacts[0].external_contact_code = "đ".repeat(128), &[]),
        // contacts[i].variables
        ("variable ok", |r| var(r, "ten", "Nguyễn Văn A"), &[]),
        ("variable empty key", |r| var(r, "", "x"), &["contacts[0].variables[]"]),
        // Spaces are allowed since real field codes have them (`tên thí sinh`); tabs are control.
        ("variable key space", |r| var(r, "ho ten", "x"), &[]),
        ("variable key tab", |r| var(r, "ho\tten", "x"), &["contacts[0].variables[ho\\tten]"]),
        ("variable key control, escaped in path", |r| var(r, "a\nb", "x"), &["contacts[0].variables[a\\nb]"]),
        ("variable key 64", |r| var(r, &"k".repeat(64), "x"), &[]),
        (
            "variable key 65, truncated in path",
            |r| var(r, &"k".repeat(65), "x"),
            &["contacts[0].variables[kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…]"],
        ),
        ("variable value 2000 chars (6000 bytes)", |r| var(r, "ten", &"ễ".repeat(2000)), &[]),
        ("variable value 2001 chars", |r| var(r, "ten", &"ễ".repeat(2001)), &["contacts[0].variables[ten]"]),
        ("variable value empty", |r| var(r, "ten", ""), &[]),
        ("variables 100", |r| (0..100).for_each(|n| var(r, &format!("k{n}"), "v")), &[]),
        (
            "variables 101: one violation, entries not inspected",
            |r| {
                (0..100).for_each(|n| var(r, &format!("k{n}"), "v"));
                var(r, "", "");
            },
            &["contacts[0].variables"],
        ),
        (
            "variables sorted by key in the error",
            |r| {
                var(r, "z\tz", "");
                var(r, "a\ta", "");
            },
            &["contacts[0].variables[a\\ta]", "contacts[0].variables[z\\tz]"],
        ),
        // name
        ("name 255 chars", |r| r.name = "ộ".repeat(255), &[]),
        ("name 256 chars", |r| r.name = "ộ".repeat(256), &["name"]),
        ("name newline", |r| r.name = "a\nb".into(), &["name"]),
        ("name spaces and emoji", |r| r.name = " Thông báo 🎉 ".into(), &[]),
        // caller_id
        ("caller_id empty", |r| r.caller_id.clear(), &[]),
        ("caller_id SIP extension", |r| r.caller_id = "101".into(), &[]),
        ("caller_id hotline", |r| r.caller_id = "19001234".into(), &[]),
        ("caller_id plus 15", |r| r.caller_id = "+123456789012345".into(), &[]),
        ("caller_id 2 digits", |r| r.caller_id = "10".into(), &["caller_id"]),
        ("caller_id plus 2 digits", |r| r.caller_id = "+10".into(), &["caller_id"]),
        ("caller_id 16 digits", |r| r.caller_id = "1234567890123456".into(), &["caller_id"]),
        ("caller_id letters", |r| r.caller_id = "sip:101".into(), &["caller_id"]),
        // voice
        ("voice 3", |r| r.voice = 3, &[]),
        ("voice 99", |r| r.voice = 99, &["voice"]),
        ("voice -1", |r| r.voice = -1, &["voice"]),
        // speed, retry_count, calls_per_round
        ("speed -3", |r| r.speed = Some(-3), &[]),
        ("speed 3", |r| r.speed = Some(3), &[]),
        ("speed -4", |r| r.speed = Some(-4), &["speed"]),
        ("speed 4", |r| r.speed = Some(4), &["speed"]),
        ("retry_count 0", |r| r.retry_count = Some(0), &[]),
        ("retry_count 10", |r| r.retry_count = Some(10), &[]),
        ("retry_count -1", |r| r.retry_count = Some(-1), &["retry_count"]),
        ("retry_count 11", |r| r.retry_count = Some(11), &["retry_count"]),
        ("calls_per_round 1", |r| r.calls_per_round = Some(1), &[]),
        ("calls_per_round 1000", |r| r.calls_per_round = Some(1000), &[]),
        ("calls_per_round 0", |r| r.calls_per_round = Some(0), &["calls_per_round"]),
        ("calls_per_round 1001", |r| r.calls_per_round = Some(1001), &["calls_per_round"]),
        // round_interval, retry_interval
        ("round_interval 0", |r| r.round_interval = secs(0), &[]),
        ("round_interval 86400", |r| r.round_interval = secs(86_400), &[]),
        ("round_interval 86401", |r| r.round_interval = secs(86_401), &["round_interval"]),
        ("round_interval negative", |r| r.round_interval = secs(-1), &["round_interval"]),
        (
            "round_interval fractional",
            |r| r.round_interval = Some(prost_types::Duration { seconds: 30, nanos: 500_000_000 }),
            &["round_interval"],
        ),
        (
            "retry_interval negative nanos",
            |r| r.retry_interval = Some(prost_types::Duration { seconds: 0, nanos: -1 }),
            &["retry_interval"],
        ),
        ("retry_interval 86401", |r| r.retry_interval = secs(86_401), &["retry_interval"]),
        ("retry_interval 60", |r| r.retry_interval = secs(60), &[]),
        // start_time
        ("start_time now", |r| r.start_time = at(NOW_SECS, 0), &[]),
        ("start_time now - 300 s", |r| r.start_time = at(NOW_SECS - 300, 0), &[]),
        ("start_time now - 301 s", |r| r.start_time = at(NOW_SECS - 301, 0), &["start_time"]),
        ("start_time now + 366 d", |r| r.start_time = at(NOW_SECS + 366 * 86_400, 0), &[]),
        ("start_time now + 366 d + 1 s", |r| r.start_time = at(NOW_SECS + 366 * 86_400 + 1, 0), &["start_time"]),
        ("start_time negative nanos", |r| r.start_time = at(NOW_SECS, -1), &["start_time"]),
        ("start_time nanos 1e9", |r| r.start_time = at(NOW_SECS, 1_000_000_000), &["start_time"]),
        ("start_time epoch", |r| r.start_time = at(0, 0), &["start_time"]),
        // external_session_id
        ("session id uuid", |r| r.external_session_id = "6f1c2d3e-0000-4000-8000-000000000000".into(), &[]),
        ("session id 128", |r| r.external_session_id = "~".repeat(128), &[]),
        ("session id 129", |r| r.external_session_id = "a".repeat(129), &["external_session_id"]),
        ("session id space", |r| r.external_session_id = "a b".into(), &["external_session_id"]),
        ("session id non-ASCII", |r| r.external_session_id = "phiên-1".into(), &["external_session_id"]),
        ("session id DEL", |r| r.external_session_id = "a\u{7f}".into(), &["external_session_id"]),
    ];

    #[test]
    fn one_row_per_rule() {
        for (label, mutate, want) in ROWS {
            let mut req = minimal();
            mutate(&mut req);
            let got = match NewSession::parse(req, &limits()) {
                Ok(_) => Vec::new(),
                Err(err) => {
                    assert!(!err.violations.is_empty(), "{label}: empty error");
                    fields(&err).into_iter().map(str::to_owned).collect()
                }
            };
            assert_eq!(got, *want, "{label}");
        }
    }

    #[test]
    fn many_broken_rules_reported_at_once() {
        let req = pb::CreateSessionRequest {
            script_id: " ".into(),
            contacts: vec![
                pb::Contact {
                    phone: "0912345678".into(),
                    email: "not-an-email".into(),
                    external_contact_code: "c".repeat(200),
                    variables: BTreeMap::from([(String::new(), "x".into()), ("ten".into(), "x".repeat(2_001))]),
                },
                contact("0912-345-678"),
                contact("0912345678"),
            ],
            name: "tab\there".into(),
            caller_id: "hotline".into(),
            voice: 99,
            speed: Some(9),
            retry_count: Some(-1),
            calls_per_round: Some(0),
            round_interval: Some(prost_types::Duration { seconds: 1, nanos: 1 }),
            retry_interval: secs(-5),
            start_time: at(NOW_SECS - 3_600, 0),
            external_session_id: "has space".into(),
            auto_pause: true,
            check_variables: false,
            purpose: 9,
            defer_to_calling_hours: false,
            validate_only: false,
        };
        let err = NewSession::parse(req, &limits()).unwrap_err();
        let mut got = fields(&err);
        got.sort_unstable();
        let mut want = vec![
            "script_id",
            "contacts[2].phone",
            "contacts[0].email",
            "contacts[0].external_contact_code",
            "contacts[0].variables[]",
            "contacts[0].variables[ten]",
            "contacts[1].phone",
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
            "purpose",
        ];
        want.sort_unstable();
        assert_eq!(got, want);
        let dup = err.violations.iter().find(|v| v.field == "contacts[2].phone").unwrap();
        assert_eq!(dup.description, "duplicates contacts[0].phone");
        // Neither the message nor any description echoes a value.
        assert_eq!(err.to_string(), "invalid request: 18 violation(s)");
        for v in &err.violations {
            for secret in ["0912345678", "0912-345-678", "not-an-email", "hotline", "has space", "tab\there"] {
                assert!(!v.description.contains(secret), "{v:?} echoes {secret}");
            }
        }
    }

    #[test]
    fn valid_request_maps_every_field() {
        let variables = BTreeMap::from([
            ("ten".to_owned(), "Nguyễn Thị Ánh".to_owned()),
            ("ghi_chu".to_owned(), "  chúc mừng 🎉\u{301} ".to_owned()),
            ("diem".to_owned(), "e\u{301}".to_owned()), // NFD stays NFD
        ]);
        let req = pb::CreateSessionRequest {
            script_id: "script-42".into(),
            contacts: vec![
                pb::Contact {
                    phone: "+84912345678".into(),
                    email: "an@vi.du.vn".into(),
                    external_contact_code: "KH-001".into(),
                    variables: variables.clone(),
                },
                contact("0987654321"),
            ],
            name: " Thông báo ĐIỂM thi 🎓 ".into(),
            caller_id: "19001234".into(),
            voice: pb::Voice::SouthernMaleTienhuy as i32,
            speed: Some(-2),
            retry_count: Some(3),
            calls_per_round: Some(20),
            round_interval: secs(45),
            retry_interval: secs(600),
            start_time: at(NOW_SECS + 60, 123_999_999),
            external_session_id: "order-7781".into(),
            auto_pause: true,
            check_variables: true,
            purpose: pb::CallPurpose::Service as i32,
            defer_to_calling_hours: true,
            validate_only: true,
        };
        let got = NewSession::parse(req, &limits()).unwrap();
        let want = NewSession {
            script_id: "script-42".into(),
            contacts: vec![
                ValidContact {
                    phone: "+84912345678".into(),
                    email: Some("an@vi.du.vn".into()),
                    external_contact_code: Some("KH-001".into()),
                    variables: variables.into_iter().collect(),
                },
                ValidContact {
                    phone: "0987654321".into(),
                    email: None,
                    external_contact_code: None,
                    variables: BTreeMap::new(),
                },
            ],
            name: Some(" Thông báo ĐIỂM thi 🎓 ".into()),
            caller_id: "19001234".into(),
            voice: Some(VoiceName::SouthernMaleTienhuy),
            speed: Some(-2),
            retry_count: Some(3),
            calls_per_round: Some(20),
            round_interval_secs: Some(45),
            retry_interval_secs: Some(600),
            send_time_unix_ms: Some((NOW_SECS + 60) * 1_000 + 123),
            external_session_id: Some("order-7781".into()),
            auto_pause: true,
            purpose: Some(Purpose::Service),
            defer_to_calling_hours: true,
            validate_only: true,
        };
        assert_eq!(got, want);
        let vars = &got.contacts[0].variables;
        assert_eq!(vars["diem"].as_bytes(), b"e\xcc\x81");
        assert_eq!(vars["ghi_chu"], "  chúc mừng 🎉\u{301} ");
        let keys: Vec<_> = vars.keys().map(String::as_str).collect();
        assert_eq!(keys, ["diem", "ghi_chu", "ten"]);
    }

    #[test]
    fn minimal_request_leaves_everything_to_upstream_defaults() {
        let got = NewSession::parse(minimal(), &limits()).unwrap();
        assert_eq!(
            got,
            NewSession {
                script_id: "script-1".into(),
                contacts: vec![ValidContact {
                    phone: "0912345678".into(),
                    email: None,
                    external_contact_code: None,
                    variables: BTreeMap::new(),
                }],
                name: None,
                caller_id: String::new(),
                voice: None,
                speed: None,
                retry_count: None,
                calls_per_round: None,
                round_interval_secs: None,
                retry_interval_secs: None,
                send_time_unix_ms: None,
                external_session_id: None,
                auto_pause: false,
                purpose: None,
                defer_to_calling_hours: false,
                validate_only: false,
            }
        );
    }

    #[test]
    fn voice_names() {
        let rows = [
            (0, None),
            (1, Some("northern_female_ngocanh")),
            (2, Some("southern_female_honganh")),
            (3, Some("southern_male_tienhuy")),
        ];
        for (number, want) in rows {
            let mut req = minimal();
            req.voice = number;
            let got = NewSession::parse(req, &limits()).unwrap().voice;
            assert_eq!(got.map(|v| v.as_upstream()), want, "voice {number}");
        }
    }

    #[test]
    fn script_id_alone() {
        assert_eq!(validate_script_id("abc-123"), Ok(()));
        for bad in ["", " ", "a b", "a\u{7}", &"x".repeat(129)] {
            let err = validate_script_id(bad).unwrap_err();
            assert_eq!(fields(&err), ["script_id"], "{bad:?}");
        }
    }

    #[test]
    fn clock_before_epoch_does_not_panic() {
        let limits = SessionLimits { max_contacts: 1, now: UNIX_EPOCH - Duration::from_secs(1_000) };
        let mut req = minimal();
        req.start_time = at(-1_000, 0);
        assert_eq!(NewSession::parse(req, &limits).unwrap().send_time_unix_ms, Some(-1_000_000));
    }

    #[test]
    fn adversarial_inputs_never_panic() {
        let i64s = [i64::MIN, i64::MIN + 1, -1, 0, 1, 86_400, NOW_SECS, i64::MAX - 1, i64::MAX];
        let i32s = [i32::MIN, -1_000_000_000, -1, 0, 1, 999_999_999, 1_000_000_000, i32::MAX];
        let huge = "ễ".repeat(200_000);
        let strings = [
            "",
            " ",
            "\u{0}",
            "+",
            "++",
            "@",
            "@.",
            "a@",
            "a@.",
            "\u{10FFFF}",
            "\u{FEFF}0912345678",
            "0912345678\u{200B}",
            "🎉",
            huge.as_str(),
        ];
        for &seconds in &i64s {
            for &nanos in &i32s {
                let mut req = minimal();
                req.round_interval = Some(prost_types::Duration { seconds, nanos });
                req.retry_interval = Some(prost_types::Duration { seconds, nanos });
                req.start_time = at(seconds, nanos);
                req.speed = Some(nanos);
                req.retry_count = Some(nanos);
                req.calls_per_round = Some(nanos);
                req.voice = nanos;
                let _ = NewSession::parse(req, &limits());
            }
        }
        for s in strings {
            let req = pb::CreateSessionRequest {
                script_id: s.into(),
                contacts: vec![
                    pb::Contact {
                        phone: s.into(),
                        email: s.into(),
                        external_contact_code: s.into(),
                        variables: BTreeMap::from([(s.to_owned(), s.to_owned())]),
                    };
                    3
                ],
                name: s.into(),
                caller_id: s.into(),
                external_session_id: s.into(),
                ..Default::default()
            };
            if let Err(err) = NewSession::parse(req, &limits()) {
                // Paths stay short even for a 600 kB key.
                assert!(err.violations.iter().all(|v| v.field.len() < 400));
            }
            let _ = validate_script_id(s);
            let _ = crate::domain::mask_phone(s);
            let _ = crate::domain::fold(s);
        }
        for max_contacts in [0, 1, usize::MAX] {
            let limits = SessionLimits {
                max_contacts,
                now: SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 1_000),
            };
            let _ = NewSession::parse(minimal(), &limits);
        }
    }
}
