//! Conversions between the three shapes of the same facts, in one place: the protobuf messages
//! callers see (`pb`), the validated requests (`domain`), and the upstream's payloads
//! (`upstream`). Requests go pb -> domain in `domain` itself (validation is the conversion);
//! everything else is here.

use crate::{
    domain::{NewSession, ScriptVariables, ValidContact},
    pb,
    upstream::{ContactInfo, ExecuteBody, ExecuteOutcome, Script},
};

/// A validated session -> the `execute_by_phone` body, borrowing every string from it; `key` is
/// the session's `ext_session_id`, the one given or generated for it.
pub fn execute_body<'a>(session: &'a NewSession, key: &'a str) -> ExecuteBody<'a> {
    ExecuteBody {
        bot_script_id: &session.script_id,
        contact_info: session.contacts.iter().map(contact_info).collect(),
        name: session.name.as_deref(),
        cid: Some(session.caller_id.as_str()).filter(|c| !c.is_empty()),
        voice: session.voice.as_ref().map(|v| v.as_upstream()),
        speed: session.speed,
        num_retry: session.retry_count,
        num_per_call: session.calls_per_round,
        distance_per_call: session.round_interval_secs,
        distance_retry: session.retry_interval_secs,
        send_time: session.send_time_unix_ms,
        ext_session_id: key,
        auto_pause: session.auto_pause,
    }
}

/// One validated contact -> its `contact_info` entry.
fn contact_info(c: &ValidContact) -> ContactInfo<'_> {
    ContactInfo {
        phone: &c.phone,
        email: c.email.as_deref(),
        ext_contact_code: c.external_contact_code.as_deref(),
        mapping_variables: &c.variables,
    }
}

/// A started upstream session as the caller sees it (CreateSession, and each campaign chunk).
pub fn session_to_pb(outcome: ExecuteOutcome, script_id: &str, key: String) -> pb::Session {
    let script_id = if outcome.bot_script_id.is_empty() { script_id.to_owned() } else { outcome.bot_script_id };
    pb::Session {
        id: outcome.autocall_id,
        script_id,
        external_session_id: key,
        rejected_contacts: outcome
            .rejections
            .into_iter()
            .map(|r| pb::ContactRejection { phone: r.phone, reason: r.reason })
            .collect(),
    }
}

/// A campaign chunk the upstream already had: its session id is unknown (the duplicate answer
/// carries only an error code), the key and script are the chunk's.
pub fn resumed_session_to_pb(script_id: &str, key: String) -> pb::Session {
    pb::Session {
        id: String::new(),
        script_id: script_id.to_owned(),
        external_session_id: key,
        rejected_contacts: Vec::new(),
    }
}

/// Upstream script -> proto script.
pub fn script_to_pb(s: &Script) -> pb::Script {
    pb::Script {
        id: s.id.clone(),
        name: s.name.clone(),
        variables: s
            .variables
            .iter()
            .map(|v| pb::ScriptVariable {
                field_code: v.field_code.clone(),
                field_name: v.field_name.clone(),
                field_value: v.field_value.clone(),
                field_type: v.field_type.clone(),
                r#type: v.kind.clone(),
                is_dynamic_attribute: v.is_dynamic_attribute,
            })
            .collect(),
    }
}

/// Upstream script -> proto script, by move (no copy of the strings).
pub fn script_into_pb(s: Script) -> pb::Script {
    pb::Script {
        id: s.id,
        name: s.name,
        variables: s
            .variables
            .into_iter()
            .map(|v| pb::ScriptVariable {
                field_code: v.field_code,
                field_name: v.field_name,
                field_value: v.field_value,
                field_type: v.field_type,
                r#type: v.kind,
                is_dynamic_attribute: v.is_dynamic_attribute,
            })
            .collect(),
    }
}

/// Upstream script -> the variable rules `check_variables` applies.
pub fn script_variables(s: &Script) -> ScriptVariables {
    ScriptVariables::new(s.variables.iter().map(|v| (v.field_code.as_str(), v.is_dynamic_attribute)))
}
