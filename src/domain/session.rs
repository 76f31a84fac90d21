//! `NewSession`: a `CreateSessionRequest` that passed every rule, typed for the upstream body
//! (`POST /api/call_bot/execute_by_phone`), plus the `script_id` rule shared with `GetScript`.
//!
//! Every rule is checked and every violation reported at once; nothing here does I/O or reads
//! the clock ([`SessionLimits::now`] is injected).

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use super::phone::is_valid_phone;
use super::{ValidationError, Violations, at_most_chars, is_space_or_control};
use crate::pb;

/// Longest accepted `script_id`, `external_contact_code` and `external_session_id`.
const MAX_ID_CHARS: usize = 128;
/// Longest accepted email (RFC 5321 path limit).
const MAX_EMAIL_CHARS: usize = 254;
/// Longest accepted variable key.
const MAX_VARIABLE_KEY_CHARS: usize = 64;
/// Longest accepted variable value.
const MAX_VARIABLE_VALUE_CHARS: usize = 2_000;
/// Most variables one contact may carry (scripts have a handful; this bounds the work).
const MAX_VARIABLES: usize = 100;
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

/// A contact that passed every rule: the upstream's `contact_info[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidContact {
    /// Phone number exactly as given (`+`? and 8 to 15 digits).
    pub phone: String,
    /// Email, `None` when the caller left it empty.
    pub email: Option<String>,
    /// Caller-side contact code (`ext_contact_code`), `None` when empty.
    pub external_contact_code: Option<String>,
    /// Script variable values by `field_code` (`mapping_variables`), byte-exact; a `BTreeMap`
    /// so the upstream body is deterministic whatever order the client sent.
    pub variables: BTreeMap<String, String>,
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
    ///   64 chars or with whitespace/control characters (shown escaped and truncated), or a
    ///   value over 2,000 chars. Values are kept byte-exact.
    /// - `name`: ≤ 255 chars, no control characters, byte-exact.
    /// - `caller_id`: empty, or `+`? and 3 to 15 digits (hotlines like `1900xxxx` and SIP
    ///   extensions like `101` are short).
    /// - `voice`: a known enum value; unspecified = upstream default.
    /// - `speed` -3..=3, `retry_count` 0..=10, `calls_per_round` 1..=1000.
    /// - `round_interval`, `retry_interval`: whole seconds, 0 to 86,400.
    /// - `start_time`: a valid timestamp between now − 5 minutes and now + 366 days.
    /// - `external_session_id`: empty, or ≤ 128 printable ASCII characters without spaces.
    pub fn parse(
        req: pb::CreateSessionRequest,
        limits: &SessionLimits,
    ) -> Result<NewSession, ValidationError> {
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
        } = req;
        let mut v = Violations::default();

        v.take(|| "script_id".into(), check_script_id(&script_id));
        let contacts = parse_contacts(contacts, limits.max_contacts, &mut v);
        v.take(|| "name".into(), check_name(&name));
        v.take(|| "caller_id".into(), check_caller_id(&caller_id));
        let voice = v.take(|| "voice".into(), VoiceName::from_proto(voice));
        v.take(|| "speed".into(), check_range(speed, SPEED, SPEED_RULE));
        v.take(
            || "retry_count".into(),
            check_range(retry_count, RETRY_COUNT, RETRY_COUNT_RULE),
        );
        v.take(
            || "calls_per_round".into(),
            check_range(calls_per_round, CALLS_PER_ROUND, CALLS_PER_ROUND_RULE),
        );
        let round_interval_secs = v.take(|| "round_interval".into(), interval_secs(round_interval));
        let retry_interval_secs = v.take(|| "retry_interval".into(), interval_secs(retry_interval));
        let send_time_unix_ms = v.take(
            || "start_time".into(),
            start_time_ms(start_time, limits.now),
        );
        v.take(
            || "external_session_id".into(),
            check_external_session_id(&external_session_id),
        );

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

/// Validates the contact list; moves each contact's strings into its [`ValidContact`].
fn parse_contacts(
    contacts: Vec<pb::Contact>,
    max_contacts: usize,
    v: &mut Violations,
) -> Vec<ValidContact> {
    if contacts.is_empty() {
        v.push("contacts", "at least one contact is required");
        return Vec::new();
    }
    if contacts.len() > max_contacts {
        v.push(
            "contacts",
            format!("must hold at most {max_contacts} contacts"),
        );
        return Vec::new();
    }
    report_duplicate_phones(&contacts, v);
    contacts
        .into_iter()
        .enumerate()
        .map(|(i, c)| parse_contact(i, c, v))
        .collect()
}

/// Reports every valid phone that repeats an earlier contact's phone, on the later contact.
/// Compared exactly as sent: `+8491…` and `091…` are not recognized as the same person.
fn report_duplicate_phones(contacts: &[pb::Contact], v: &mut Violations) {
    let mut first_seen: HashMap<&str, usize> = HashMap::with_capacity(contacts.len());
    for (j, c) in contacts.iter().enumerate() {
        if !is_valid_phone(&c.phone) {
            continue; // already reported by the phone rule
        }
        if let Some(&i) = first_seen.get(c.phone.as_str()) {
            v.push(
                format!("contacts[{j}].phone"),
                format!("duplicates contacts[{i}].phone"),
            );
        } else {
            first_seen.insert(&c.phone, j);
        }
    }
}

fn parse_contact(i: usize, c: pb::Contact, v: &mut Violations) -> ValidContact {
    let pb::Contact {
        phone,
        email,
        external_contact_code,
        variables,
    } = c;
    if phone.is_empty() {
        v.push(format!("contacts[{i}].phone"), "is required");
    } else if !is_valid_phone(&phone) {
        v.push(
            format!("contacts[{i}].phone"),
            "must be an optional leading '+' followed by 8 to 15 digits",
        );
    }
    v.take(|| format!("contacts[{i}].email"), check_email(&email));
    if !at_most_chars(&external_contact_code, MAX_ID_CHARS) {
        v.push(
            format!("contacts[{i}].external_contact_code"),
            "must be at most 128 characters",
        );
    }
    // Sorted first, so violations come out in a deterministic order too.
    let variables: BTreeMap<String, String> = variables.into_iter().collect();
    if variables.len() > MAX_VARIABLES {
        v.push(
            format!("contacts[{i}].variables"),
            "must hold at most 100 variables",
        );
    } else {
        for (key, value) in &variables {
            if let Err(description) = check_variable(key, value) {
                v.push(
                    format!("contacts[{i}].variables[{}]", path_key(key)),
                    description,
                );
            }
        }
    }
    ValidContact {
        phone,
        email: non_empty(email),
        external_contact_code: non_empty(external_contact_code),
        variables,
    }
}

/// Empty, or plausible: ≤ 254 chars, exactly one `@`, non-empty local part, a domain with a dot
/// that neither starts nor ends it, no whitespace or control characters. Deliverability is the
/// upstream's business; this only catches obvious mistakes such as a phone in the email field.
fn check_email(email: &str) -> Result<(), &'static str> {
    const RULE: &str =
        "must be a plausible email address (local@domain.tld, no spaces, at most 254 characters)";
    if email.is_empty() {
        return Ok(());
    }
    if !at_most_chars(email, MAX_EMAIL_CHARS) || email.chars().any(is_space_or_control) {
        return Err(RULE);
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.') =>
        {
            Ok(())
        }
        _ => Err(RULE),
    }
}

fn check_variable(key: &str, value: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        Err("variable key must not be empty")
    } else if !at_most_chars(key, MAX_VARIABLE_KEY_CHARS) {
        Err("variable key must be at most 64 characters")
    } else if key.chars().any(is_space_or_control) {
        Err("variable key must not contain whitespace or control characters")
    } else if !at_most_chars(value, MAX_VARIABLE_VALUE_CHARS) {
        Err("variable value must be at most 2000 characters")
    } else {
        Ok(())
    }
}

/// A variable key as shown inside a field path: valid keys verbatim; invalid ones escaped
/// (no raw newlines in logs) and cut to 64 chars, so a huge key cannot blow up the error.
fn path_key(key: &str) -> String {
    if at_most_chars(key, MAX_VARIABLE_KEY_CHARS) && !key.chars().any(is_space_or_control) {
        return key.to_owned();
    }
    let mut shown: String = key
        .chars()
        .take(MAX_VARIABLE_KEY_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if !at_most_chars(key, MAX_VARIABLE_KEY_CHARS) {
        shown.push('…');
    }
    shown
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
fn start_time_ms(
    ts: Option<prost_types::Timestamp>,
    now: SystemTime,
) -> Result<Option<i64>, &'static str> {
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
    i64::try_from(ms)
        .map(Some)
        .map_err(|_| "must be a representable timestamp")
}

/// Milliseconds since the Unix epoch, negative before it; saturates instead of overflowing.
fn unix_ms(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX / 2),
        Err(e) => i128::try_from(e.duration().as_millis())
            .map(|ms| -ms)
            .unwrap_or(i128::MIN / 2),
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
fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}
