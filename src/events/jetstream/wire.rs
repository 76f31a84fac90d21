//! The JetStream store's messages: their subjects, their ids (`Nats-Msg-Id`) and their bodies.
//!
//! A body is the domain type's own JSON (`domain/event.rs`: `CallEvent`, `SessionRecord`)
//! with the tenant beside its fields, the one place either is encoded for the stream; a new
//! event field travels with no change here. The JSON is the one earlier versions wrote (field
//! names, facts and outcomes as words), so a stream written by them reads on.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest as _, Sha256};

use crate::events::TenantId;

/// The stream subjects.
pub(crate) const EVENTS_PREFIX: &str = "callbot.events.";
/// Session records travel with the events, in the same stream.
pub(crate) const SESSIONS_PREFIX: &str = "callbot.sessions.";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// First 16 hex digits of SHA-256 of `s`.
pub(crate) fn hash16(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes())[..8])
}

/// A session id as one subject token: as it is when plainly safe, else `h_` and its hash (readers
/// compare the session id in the payload, so a collision only costs a filtered-out message).
pub(crate) fn session_token(session: &str) -> String {
    let safe = !session.is_empty()
        && session != "_"
        && session.len() <= 64
        && session.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if safe { session.to_owned() } else { format!("h_{}", hash16(session)) }
}

/// The subject of an event (`_` when unattributed).
pub(crate) fn event_subject(tenant: &str, session: &str) -> String {
    let token = if session.is_empty() { "_".to_owned() } else { session_token(session) };
    format!("{EVENTS_PREFIX}{}.{token}", hash16(tenant))
}

/// The subject of a session record.
pub(crate) fn session_subject(tenant: &str, session: &str) -> String {
    format!("{SESSIONS_PREFIX}{}.{}", hash16(tenant), session_token(session))
}

/// The `Nats-Msg-Id`: `<tenant>/<id>`, hashed when it holds what a header value cannot.
pub(crate) fn msg_id(tenant: &str, id: &str) -> String {
    let raw = format!("{tenant}/{id}");
    if raw.len() <= 256 && raw.chars().all(|c| !c.is_control()) {
        raw
    } else {
        format!("h/{}", hex(&Sha256::digest(raw)))
    }
}

/// A message body as written: the tenant, then the body's own fields.
#[derive(Serialize)]
struct Out<'a, T> {
    tenant: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// A message body as read.
#[derive(Deserialize)]
struct In<T> {
    tenant: TenantId,
    #[serde(flatten)]
    body: T,
}

/// The body of a message carrying `body` (a call event or a session record) of `tenant`.
pub(crate) fn encode<T: Serialize>(tenant: &str, body: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Out { tenant, body })
}

/// The tenant and the body of a message; `None` for a body this version cannot read (an event
/// of a fact it does not know, a message of another writer): the stores skip it.
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Option<(TenantId, T)> {
    serde_json::from_slice::<In<T>>(payload).ok().map(|m| (m.tenant, m.body))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::events::{CallEvent, CallOutcome, Fact, SessionRecord};

    #[test]
    fn subjects_are_safe_tokens_and_ids_are_header_safe() {
        assert_eq!(hash16("default").len(), 16);
        assert_eq!(event_subject("default", ""), format!("callbot.events.{}._", hash16("default")));
        assert!(event_subject("t", "abc-123_x").ends_with(".abc-123_x"));
        for odd in ["a.b", "a b", "*", ">", "_", &"x".repeat(100)] {
            let token = session_token(odd);
            assert!(token.starts_with("h_") && !token.contains(['.', '*', '>', ' ']), "{odd} -> {token}");
        }
        assert_eq!(msg_id("default", "c-1/ringing"), "default/c-1/ringing");
        assert!(msg_id("t", "a\nb").starts_with("h/"));
    }

    fn record_event() -> CallEvent {
        CallEvent {
            session_id: Arc::from("s1"),
            outcome: CallOutcome::NoAnswer,
            occurred_at_ms: 1_700_000_047_000,
            ring_s: 30,
            talk_s: 0,
            hangup_cause: Arc::from("NO_ANSWER"),
            disposition: Arc::from("no answer"),
            has_recording: true,
            attempt: 2,
            ..CallEvent::live("c1", Fact::Record, "84912345670")
        }
    }

    #[test]
    fn an_event_comes_back_from_its_message_as_it_went_in() {
        let reconciled = CallEvent {
            source: crate::events::EventSource::History,
            contact_phone: Arc::from("+84 91 234 5670"),
            ..record_event()
        };
        let given_up = CallEvent {
            outcome: CallOutcome::Unknown,
            source: crate::events::EventSource::Facade,
            ..CallEvent::live("s1/0912345670", Fact::GaveUp, "0912345670")
        };
        for event in [record_event(), CallEvent::live("c2", Fact::Ringing, "0912"), reconciled, given_up] {
            let payload = encode("acme", &event).unwrap();
            assert_eq!(decode::<CallEvent>(&payload), Some((Arc::from("acme"), event)));
        }
    }

    #[test]
    fn a_session_record_comes_back_from_its_message_as_it_went_in() {
        let record = SessionRecord {
            session_id: "s1".into(),
            external_id: String::new(),
            contacts: vec!["0912345670".into(), "+84912345671".into()],
            redials: 2,
            created_at_ms: 1_700_000_000_000,
            script_id: String::new(),
            name: String::new(),
            ..SessionRecord::default()
        };
        let policed = SessionRecord {
            purpose: Some(crate::domain::Purpose::Service),
            start_ms: Some(1_700_000_360_000),
            refused: [("FREQUENCY_CAP".to_owned(), 3), ("invalid_phone".to_owned(), 1)].into(),
            ..record.clone()
        };
        for record in [record, policed] {
            let payload = encode("acme", &record).unwrap();
            assert_eq!(decode::<SessionRecord>(&payload), Some((Arc::from("acme"), record)));
        }
    }

    #[test]
    fn messages_written_by_earlier_versions_read_on() {
        let event = br#"{"tenant":"acme","fact":"cdr","call_id":"c1","session_id":"s1","phone":"84912345670",
            "outcome":"no_answer","occurred_at_ms":1700000047000,"ring_s":30,"talk_s":0,
            "hangup_cause":"NO_ANSWER","disposition":"no answer","has_recording":true,"attempt":2}"#;
        assert_eq!(decode::<CallEvent>(event), Some((Arc::from("acme"), record_event())));
        let record = br#"{"tenant":"acme","session_id":"s1","contacts":["0912345670"],"redials":1,"created_at_ms":5}"#;
        let (tenant, r) = decode::<SessionRecord>(record).unwrap();
        assert_eq!(
            (&*tenant, r.session_id.as_str(), r.contacts.len(), r.redials, r.created_at_ms),
            ("acme", "s1", 1, 1, 5)
        );
        // Written before purpose, start and refusals: not said, at once, none refused.
        assert_eq!((r.purpose, r.start_ms, r.refused.len()), (None, None, 0));
        // A fact this version does not know is skipped; an outcome it does not know is unspecified.
        let unknown = String::from_utf8_lossy(event).replace(r#""fact":"cdr""#, r#""fact":"transfer""#);
        assert_eq!(decode::<CallEvent>(unknown.as_bytes()), None);
        let odd = String::from_utf8_lossy(event).replace("no_answer", "voicemail");
        assert_eq!(decode::<CallEvent>(odd.as_bytes()).map(|(_, e)| e.outcome), Some(CallOutcome::Unspecified));
        // Written before `source` and `contact_phone`: from a webhook, no caller's number.
        let (_, old) = decode::<CallEvent>(event).unwrap();
        assert_eq!((old.source, &*old.contact_phone), (crate::events::EventSource::Webhook, ""));
        // A webhook event without a caller's number is written as before (no new keys).
        let json = String::from_utf8(encode("acme", &CallEvent::live("c3", Fact::Ringing, "0912")).unwrap()).unwrap();
        assert!(!json.contains("contact_phone") && json.contains(r#""source":"webhook""#), "{json}");
    }
}
