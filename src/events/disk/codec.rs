//! How the disk store lays out its partitions of the data dir: the keys (big-endian, so fjall's
//! order is the order the store replays in) and the values (the domain types' own JSON,
//! `domain/event.rs`: a new event field is kept with no change here).
//!
//! | partition | key | value |
//! |---|---|---|
//! | `events` | sequence number (u64 BE) | `{"t": tenant, "at": stored at (Unix ms), "e": CallEvent}` |
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

/// The layout's version: a store written with another is refused, not misread.
pub(super) const FORMAT: u32 = 1;

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

#[derive(Serialize)]
struct EventOut<'a> {
    t: &'a str,
    at: u64,
    e: &'a CallEvent,
}

#[derive(Deserialize)]
pub(super) struct EventIn {
    pub(super) t: TenantId,
    pub(super) at: u64,
    pub(super) e: CallEvent,
}

pub(super) fn event_value(tenant: &str, at_ms: u64, event: &CallEvent) -> Vec<u8> {
    // Plain data with string keys: serde_json cannot fail on it.
    serde_json::to_vec(&EventOut { t: tenant, at: at_ms, e: event }).expect("a call event encodes")
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
    use crate::events::Fact;

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
        let back: EventIn = serde_json::from_slice(&event_value("t", 5, &e)).unwrap();
        assert_eq!((&*back.t, back.at, back.e), ("t", 5, e));
        let identity = Identity { id: 1, epoch_ms: 2, seed: 3 };
        assert_eq!(read_identity(&identity_value(&identity)), Ok(identity));
        let other = br#"{"format":2,"id":1,"epoch_ms":2,"seed":3}"#;
        assert!(read_identity(other).unwrap_err().contains("format 2"));
        assert!(read_identity(b"SQLite format 3").is_err());
    }
}
