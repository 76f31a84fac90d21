//! How the disk store lays out its partitions of the data dir: the keys (big-endian, so fjall's
//! order is the order the store replays in) and the values. An event (one per delivery: the bulk
//! of the store) is a dense binary form of the domain's [`CallEvent`] (`domain/event.rs`), written
//! and read here only ([`event_value`], [`read_event`]; every field named, so a new one does not
//! compile until it is carried); the rest is the domain types' own JSON.
//!
//! | partition | key | value |
//! |---|---|---|
//! | `events` | sequence number (u64 BE) | tenant, stored at (Unix ms), the event's fields in declaration order (below) |
//! | `event_keys` | remembered since (Unix ms, u64 BE) · fact key (u64 BE) | tenant |
//! | `sessions` | tenant · 0x00 · session id | `{"at": recorded at, "before": next sequence number then, "r": SessionRecord}` |
//! | `event_meta` | `store` | `{"format": 1, "id", "epoch_ms", "seed"}` (the identity) |
//! | | `evicted/` · tenant | u64 BE: the tenant's events have left through it |
//!
//! The next sequence number is not kept: it follows the last retained event or the highest evicted
//! mark (every event that leaves moves its tenant's mark; an event lost to a crash before its fsync
//! was never seen by anyone, so its number may be given again).

use serde::{Deserialize, Serialize};

use crate::events::{CallEvent, SessionRecord, TenantId, memory::Identity};

/// The partitions.
pub(super) const EVENTS: &str = "events";
pub(super) const KEYS: &str = "event_keys";
pub(super) const SESSIONS: &str = "sessions";
pub(super) const META: &str = "event_meta";

/// The meta keys.
pub(super) const IDENTITY_KEY: &[u8] = b"store";
pub(super) const EVICTED_PREFIX: &[u8] = b"evicted/";

/// The layout's version: a store written with another is refused, not misread (1: events as JSON).
pub(super) const FORMAT: u32 = 2;

pub(super) fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// A big-endian u64 (`None` when it is not 8 bytes).
pub(super) fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

pub(super) fn fact_key(at_ms: u64, key: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..].copy_from_slice(&key.to_be_bytes());
    k
}

/// (remembered since, fact key) of an `event_keys` key.
pub(super) fn read_fact_key(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != 16 {
        return None;
    }
    Some((read_u64(&bytes[..8])?, read_u64(&bytes[8..])?))
}

pub(super) fn session_key(tenant: &str, session: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + session.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(session.as_bytes());
    k
}

pub(super) fn evicted_key(tenant: &str) -> Vec<u8> {
    [EVICTED_PREFIX, tenant.as_bytes()].concat()
}

/// A stored event as read back.
pub(super) struct EventIn {
    pub(super) t: TenantId,
    pub(super) at: u64,
    pub(super) e: CallEvent,
}

/// The event value: numbers as LEB128 varints, texts as a varint length and their UTF-8 bytes,
/// the domain's enums as their words (`Fact::as_str`, read back by their own `Deserialize`), a
/// flag as one byte.
pub(super) fn event_value(tenant: &str, at_ms: u64, event: &CallEvent) -> Vec<u8> {
    let CallEvent {
        fact,
        call_id,
        session_id,
        phone,
        outcome,
        occurred_at_ms,
        ring_s,
        talk_s,
        hangup_cause,
        disposition,
        has_recording,
        attempt,
        source,
        contact_phone,
    } = event;
    let mut out = Out(Vec::with_capacity(
        48 + tenant.len() + call_id.len() + session_id.len() + phone.len() + hangup_cause.len() + disposition.len(),
    ));
    out.text(tenant);
    out.number(at_ms);
    out.text(fact.as_str());
    out.text(call_id);
    out.text(session_id);
    out.text(phone);
    out.text(outcome.as_str());
    out.number(*occurred_at_ms);
    out.number(u64::from(*ring_s));
    out.number(u64::from(*talk_s));
    out.text(hangup_cause);
    out.text(disposition);
    out.0.push(u8::from(*has_recording));
    out.number(u64::from(*attempt));
    out.text(source.as_str());
    out.text(contact_phone);
    out.0
}

/// The event kept in `bytes` (`None`: damaged, or not this layout).
/// The tenant of an event value, read without the rest (the restore's counting pass).
pub(super) fn event_tenant(bytes: &[u8]) -> Option<&str> {
    In(bytes).text()
}

pub(super) fn read_event(bytes: &[u8]) -> Option<EventIn> {
    let mut r = In(bytes);
    let t = TenantId::from(r.text()?);
    let at = r.number()?;
    let e = CallEvent {
        fact: r.word()?,
        call_id: r.text()?.into(),
        session_id: r.text()?.into(),
        phone: r.text()?.into(),
        outcome: r.word()?,
        occurred_at_ms: r.number()?,
        ring_s: u32::try_from(r.number()?).ok()?,
        talk_s: u32::try_from(r.number()?).ok()?,
        hangup_cause: r.text()?.into(),
        disposition: r.text()?.into(),
        has_recording: match r.byte()? {
            0 => false,
            1 => true,
            _ => return None,
        },
        attempt: u32::try_from(r.number()?).ok()?,
        source: r.word()?,
        contact_phone: r.text()?.into(),
    };
    r.0.is_empty().then_some(EventIn { t, at, e })
}

struct Out(Vec<u8>);

impl Out {
    fn number(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn text(&mut self, s: &str) {
        self.number(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn number(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b < 0x80 {
                return Some(n);
            }
        }
        None
    }

    fn text(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.number()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(s).ok()
    }

    /// One of the domain's enums, by its word.
    fn word<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        use serde::de::IntoDeserializer as _;
        T::deserialize(self.text()?.into_deserializer()).map_err(|_: serde::de::value::Error| ()).ok()
    }
}

#[derive(Serialize)]
struct RecordOut<'a> {
    at: u64,
    before: u64,
    r: &'a SessionRecord,
}

#[derive(Deserialize)]
pub(super) struct RecordIn {
    pub(super) at: u64,
    pub(super) before: u64,
    pub(super) r: SessionRecord,
}

pub(super) fn record_value(at_ms: u64, before_seq: u64, record: &SessionRecord) -> Vec<u8> {
    serde_json::to_vec(&RecordOut { at: at_ms, before: before_seq, r: record }).expect("a session record encodes")
}

#[derive(Serialize, Deserialize)]
struct IdentityForm {
    format: u32,
    id: u64,
    epoch_ms: u64,
    seed: u64,
}

pub(super) fn identity_value(identity: &Identity) -> Vec<u8> {
    let Identity { id, epoch_ms, seed } = *identity;
    serde_json::to_vec(&IdentityForm { format: FORMAT, id, epoch_ms, seed }).expect("an identity encodes")
}

/// The identity kept in `bytes`, or why it cannot be used.
pub(super) fn read_identity(bytes: &[u8]) -> Result<Identity, String> {
    let form: IdentityForm = serde_json::from_slice(bytes).map_err(|e| format!("its identity cannot be read ({e})"))?;
    if form.format != FORMAT {
        return Err(format!("it was written in format {}, this version reads format {FORMAT}", form.format));
    }
    Ok(Identity { id: form.id, epoch_ms: form.epoch_ms, seed: form.seed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CallOutcome, EventSource, Fact};

    #[test]
    fn keys_sort_as_the_store_replays() {
        assert!(u64_key(2) < u64_key(256));
        assert!(fact_key(1, u64::MAX) < fact_key(2, 0));
        assert_eq!(read_fact_key(&fact_key(7, 9)), Some((7, 9)));
        assert_eq!(read_u64(&u64_key(42)), Some(42));
        assert_eq!(read_u64(b"short"), None);
    }

    #[test]
    fn values_round_trip_and_a_foreign_identity_is_refused() {
        let e = CallEvent { attempt: 2, ..CallEvent::live("c1", Fact::Ringing, "0912") };
        let back = read_event(&event_value("t", 5, &e)).unwrap();
        assert_eq!((&*back.t, back.at, back.e), ("t", 5, e));
        let identity = Identity { id: 1, epoch_ms: 2, seed: 3 };
        assert_eq!(read_identity(&identity_value(&identity)), Ok(identity));
        let other = br#"{"format":1,"id":1,"epoch_ms":2,"seed":3}"#;
        assert!(read_identity(other).unwrap_err().contains("format 1"));
        assert!(read_identity(b"SQLite format 3").is_err());
    }

    #[test]
    fn every_field_of_an_event_round_trips_and_a_damaged_value_is_refused() {
        let e = CallEvent {
            session_id: "s-1".into(),
            outcome: CallOutcome::NoAnswer,
            occurred_at_ms: 1_764_590_100_123,
            ring_s: 30,
            talk_s: u32::MAX,
            hangup_cause: "NO_ANSWER".into(),
            disposition: "no answer".into(),
            has_recording: true,
            attempt: 3,
            source: EventSource::History,
            contact_phone: "0912 345 670".into(),
            ..CallEvent::live("call-é", Fact::Record, "84912345670")
        };
        let bytes = event_value("tenant-a", 1_764_590_100_456, &e);
        let back = read_event(&bytes).unwrap();
        assert_eq!((&*back.t, back.at, back.e.clone()), ("tenant-a", 1_764_590_100_456, e.clone()));
        assert!(bytes.len() < serde_json::to_vec(&e).unwrap().len() / 2, "{} bytes", bytes.len());
        // Cut short anywhere, or with a byte too many, or JSON of the first layout: refused.
        for n in 0..bytes.len() {
            assert!(read_event(&bytes[..n]).is_none(), "cut at {n}");
        }
        assert!(read_event(&[bytes.as_slice(), b"x"].concat()).is_none());
        let old = serde_json::to_vec(&serde_json::json!({"t": "t", "at": 5, "e": e})).unwrap();
        assert!(read_event(&old).is_none());
    }
}
