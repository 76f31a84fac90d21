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
