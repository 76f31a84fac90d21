//! The call event and the session record, written once: what the provider reported about one
//! call, normalized (`events/normalize.rs` makes it from a webhook delivery), and what
//! `CreateSession`/`CreateCampaign` leave about a session for its report.
//!
//! Every store keeps these very types: the embedded store's ring slot (`events/memory/slot.rs`)
//! holds a [`CallEvent`] whose provider words are interned ([`CallEvent::map_words`]), and the
//! JetStream message (`events/jetstream/wire.rs`) is its serde form. So adding an event field
//! touches the proto, this type, the normalization row and the conversion to pb (`convert.rs`);
//! the stores follow. A new field needs `#[serde(default)]`: messages already in a stream were
//! written without it. The field names are the JetStream JSON's: renaming one is a wire change.
//!
//! Whose an event or a record is (the tenant) is not part of it: it is the stores' partition
//! key, given beside it (`EventStore::append`), like the place a store gives it (the cursor).

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Purpose;

/// Where a call stands (the proto's `CallState`, same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum CallState {
    /// Dialled, ringing.
    Ringing = 1,
    /// Picked up.
    Answered = 2,
    /// Over.
    Ended = 3,
}

/// How a call ended (the proto's `CallOutcome`, same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum CallOutcome {
    /// Not known (yet).
    #[default]
    Unspecified = 0,
    /// The contact answered.
    Answered = 1,
    /// Rang out or cancelled.
    NoAnswer = 2,
    /// Busy.
    Busy = 3,
    /// Refused.
    Rejected = 4,
    /// Could not be placed.
    Failed = 5,
    /// The provider never told: given up after `--call-give-up-after` (a real outcome arriving
    /// later still wins, `events/report.rs`).
    Unknown = 6,
}

impl CallOutcome {
    const ALL: [CallOutcome; 7] = [
        CallOutcome::Unspecified,
        CallOutcome::Answered,
        CallOutcome::NoAnswer,
        CallOutcome::Busy,
        CallOutcome::Rejected,
        CallOutcome::Failed,
        CallOutcome::Unknown,
    ];

    /// The outcome's name in lower case, for logs, metrics, the CLI's JSON and the stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Unspecified => "unspecified",
            CallOutcome::Answered => "answered",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Busy => "busy",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Failed => "failed",
            CallOutcome::Unknown => "unknown",
        }
    }
}

/// Which upstream fact an event is: one per live state word group and one for the end-of-call
/// record, so each call has at most four facts and each fact one id (`<call_id>/<fact>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Fact {
    /// Live `create`, `early`, `ringing` (one fact: the first delivery of any of them).
    Ringing = 0,
    /// Live `answered`.
    Answered = 1,
    /// Live `hangup`.
    Hangup = 2,
    /// The end-of-call record.
    Record = 3,
    /// The facade gave a contact up (`events/reconcile/`): no outcome from the provider after
    /// `--call-give-up-after`. Its "call" is the contact (`<session>/<national number>`), so its
    /// id is stable across replicas and stored once.
    GaveUp = 4,
}

impl Fact {
    const ALL: [Fact; 5] = [Fact::Ringing, Fact::Answered, Fact::Hangup, Fact::Record, Fact::GaveUp];

    /// The id suffix (also the stored form).
    pub fn as_str(self) -> &'static str {
        match self {
            Fact::Ringing => "ringing",
            Fact::Answered => "answered",
            Fact::Hangup => "hangup",
            Fact::Record => "cdr",
            Fact::GaveUp => "unknown",
        }
    }

    /// The state an event of this fact reports.
    pub fn state(self) -> CallState {
        match self {
            Fact::Ringing => CallState::Ringing,
            Fact::Answered => CallState::Answered,
            Fact::Hangup | Fact::Record | Fact::GaveUp => CallState::Ended,
        }
    }
}

/// Where the facade learned a fact (the proto's `CallEventSource`, same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum EventSource {
    /// Not known.
    Unspecified = 0,
    /// A webhook delivery (also what an event stored by an earlier version, without the field,
    /// reads as: webhooks were then the only source).
    #[default]
    Webhook = 1,
    /// The provider's call history (`events/reconcile/`).
    History = 2,
    /// The facade itself (a contact given up).
    Facade = 3,
}

impl EventSource {
    const ALL: [EventSource; 4] =
        [EventSource::Unspecified, EventSource::Webhook, EventSource::History, EventSource::Facade];

    /// The name in lower case (the stored form, the CLI's JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Unspecified => "unspecified",
            EventSource::Webhook => "webhook",
            EventSource::History => "history",
            EventSource::Facade => "facade",
        }
    }
}

/// One normalized upstream fact about a call. Generic over how its two provider words are held
/// (`W`): as text everywhere, as indices into a word table in the embedded store's ring, so
/// that the slot is this type and follows every new field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEvent<W = Arc<str>> {
    /// Which fact of the call.
    pub fact: Fact,
    /// The call (`call_uuid` / `transaction_id`).
    pub call_id: Arc<str>,
    /// The session (`autocall_id`, or the one the store attributed); empty when unknown.
    pub session_id: Arc<str>,
    /// The contact's number as the provider wrote it.
    pub phone: Arc<str>,
    /// Set for an end-of-call record.
    pub outcome: CallOutcome,
    /// Unix milliseconds, by the provider's clock (the receiver's when the provider gave none).
    pub occurred_at_ms: u64,
    /// Seconds ringing (records only).
    pub ring_s: u32,
    /// Seconds talking (records only).
    pub talk_s: u32,
    /// The provider's hangup cause.
    pub hangup_cause: W,
    /// The provider's disposition word.
    pub disposition: W,
    /// Whether a recording exists.
    pub has_recording: bool,
    /// 1 = the first call to this contact in the session; 0 = unknown (the store attributes it).
    pub attempt: u32,
    /// Where the facade learned it.
    #[serde(default)]
    pub source: EventSource,
    /// The contact's number exactly as the caller gave it in the session's record, when the
    /// store attributed the event to a contact of a session created here; else empty (the store
    /// sets it, like `attempt`).
    #[serde(default = "no_text", skip_serializing_if = "str_is_empty")]
    pub contact_phone: Arc<str>,
}

fn str_is_empty(s: &Arc<str>) -> bool {
    s.is_empty()
}

impl<W> CallEvent<W> {
    /// The same event with its provider words held another way (a store's interned form, and
    /// back). Every field is named here, so a new one does not compile until it is carried.
    pub fn map_words<V>(self, mut word: impl FnMut(W) -> V) -> CallEvent<V> {
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
        } = self;
        CallEvent {
            fact,
            call_id,
            session_id,
            phone,
            outcome,
            occurred_at_ms,
            ring_s,
            talk_s,
            hangup_cause: word(hangup_cause),
            disposition: word(disposition),
            has_recording,
            attempt,
            source,
            contact_phone,
        }
    }

    /// The fact's stable id: `<call_id>/<fact>`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.call_id, self.fact.as_str())
    }

    /// Where the call stands after this fact.
    pub fn state(&self) -> CallState {
        self.fact.state()
    }
}

impl CallEvent {
    /// For tests: a live-state fact of a call to `phone`, with no session id.
    #[cfg(test)]
    pub(crate) fn live(call: &str, fact: Fact, phone: &str) -> CallEvent {
        CallEvent {
            fact,
            call_id: call.into(),
            session_id: no_text(),
            phone: phone.into(),
            outcome: CallOutcome::Unspecified,
            occurred_at_ms: 1,
            ring_s: 0,
            talk_s: 0,
            hangup_cause: no_text(),
            disposition: no_text(),
            has_recording: false,
            attempt: 0,
            source: EventSource::Webhook,
            contact_phone: no_text(),
        }
    }
}

/// The empty text, shared (a live state leaves three fields empty: no allocation for them).
pub fn no_text() -> Arc<str> {
    static EMPTY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
}

/// What `CreateSession` and each `CreateCampaign` chunk record about a session, so that its
/// report knows every contact (also those never dialled) and when a contact is final.
///
/// Fields added after the first version default when absent (records already stored read on),
/// and are not written when empty (a record without them is written as before).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The upstream's `autocall_id`.
    pub session_id: String,
    /// The caller's name for it: `CreateSession`'s `external_session_id` (or the one generated),
    /// a `CreateCampaign` chunk's key. Reports and watchers take either id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_id: String,
    /// The contacts the upstream accepted (those it refused are not dialled), as given.
    pub contacts: Vec<String>,
    /// Redials of an unanswered contact (`retry_count`, upstream default 0).
    pub redials: u32,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// The script it reads (`ListSessions`, the console); empty in records of older versions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub script_id: String,
    /// The session name the caller gave (`ListSessions`, the console); may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What the calls are for, as the caller said (`None`: not said, or a purpose this version
    /// does not know).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "purpose_word")]
    pub purpose: Option<Purpose>,
    /// When dialling starts, Unix milliseconds: the caller's `start_time`, or the one the calling
    /// policy chose (deferral, campaign scheduling); `None` = at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// Contacts refused before dialling, by reason: the calling policy's (`DO_NOT_CALL`,
    /// `FREQUENCY_CAP`) and the upstream's (its own reason word). Not in `contacts`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, u64>,
}

/// A purpose stored as its word (`Purpose::as_str`); a word this version does not know reads as
/// `None` (the record stays readable).
mod purpose_word {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Purpose, Word};

    pub(super) fn serialize<S: Serializer>(p: &Option<Purpose>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.serialize_str(p.as_str()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Purpose>, D::Error> {
        let word = Option::<Word<'de>>::deserialize(d)?;
        Ok(word.and_then(|w| [Purpose::Advertising, Purpose::Service].into_iter().find(|p| p.as_str() == w.0)))
    }
}

impl Serialize for Fact {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Fact {
    /// A fact this version does not know is an error: the stores skip such an event.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = Word::deserialize(d)?.0;
        Fact::ALL.into_iter().find(|f| f.as_str() == word).ok_or_else(|| {
            serde::de::Error::unknown_variant(&word, &["ringing", "answered", "hangup", "cdr", "unknown"])
        })
    }
}

impl Serialize for EventSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventSource {
    /// A source this version does not know reads as unspecified.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = Word::deserialize(d)?.0;
        Ok(EventSource::ALL.into_iter().find(|o| o.as_str() == word).unwrap_or(EventSource::Unspecified))
    }
}

impl Serialize for CallOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CallOutcome {
    /// An outcome this version does not know reads as unspecified.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = Word::deserialize(d)?.0;
        Ok(CallOutcome::ALL.into_iter().find(|o| o.as_str() == word).unwrap_or_default())
    }
}

/// A word read borrowed when the input allows, owned otherwise.
struct Word<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Word<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Word<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a word")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Word(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Word(v.to_owned().into()))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_go_and_come_back_through_map_words() {
        let e = CallEvent {
            outcome: CallOutcome::Busy,
            hangup_cause: Arc::from("USER_BUSY"),
            disposition: Arc::from("busy"),
            ..CallEvent::live("c1", Fact::Record, "0912")
        };
        let words = ["USER_BUSY", "busy"];
        let held: CallEvent<usize> = e.clone().map_words(|w| words.iter().position(|x| **x == *w).unwrap());
        assert_eq!((held.hangup_cause, held.disposition), (0, 1));
        assert_eq!(held.map_words(|i| Arc::from(words[i])), e);
        assert_eq!((e.id(), e.state()), ("c1/cdr".to_owned(), CallState::Ended));
    }

    #[test]
    fn facts_and_outcomes_are_stored_as_their_words() {
        for fact in Fact::ALL {
            let json = serde_json::to_string(&fact).unwrap();
            assert_eq!(json, format!("\"{}\"", fact.as_str()));
            assert_eq!(serde_json::from_str::<Fact>(&json).unwrap(), fact);
        }
        assert!(serde_json::from_str::<Fact>("\"transfer\"").is_err(), "a fact this version does not know");
        for outcome in CallOutcome::ALL {
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(serde_json::from_str::<CallOutcome>(&json).unwrap(), outcome);
        }
        assert_eq!(serde_json::from_str::<CallOutcome>("\"voicemail\"").unwrap(), CallOutcome::Unspecified);
    }

    #[test]
    fn a_record_keeps_purpose_start_and_refusals_and_older_records_read_without_them() {
        let record = SessionRecord {
            session_id: "s1".into(),
            contacts: vec!["0912345670".into()],
            purpose: Some(Purpose::Advertising),
            start_ms: Some(1_700_000_000_000),
            refused: BTreeMap::from([("DO_NOT_CALL".to_owned(), 2), ("INVALID_PHONE".to_owned(), 1)]),
            ..SessionRecord::default()
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#""purpose":"advertising""#), "{json}");
        assert!(json.contains(r#""refused":{"DO_NOT_CALL":2,"INVALID_PHONE":1}"#), "{json}");
        assert_eq!(serde_json::from_str::<SessionRecord>(&json).unwrap(), record);
        // Without them: written as before, read back as not said / at once / none refused.
        let plain = SessionRecord { session_id: "s2".into(), ..SessionRecord::default() };
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("purpose") && !json.contains("start_ms") && !json.contains("refused"), "{json}");
        let old: SessionRecord =
            serde_json::from_str(r#"{"session_id":"s3","contacts":[],"redials":0,"created_at_ms":1}"#).unwrap();
        assert_eq!((old.purpose, old.start_ms, old.refused.len()), (None, None, 0));
        // A purpose a later version adds reads as not said; the rest of the record stays.
        let later: SessionRecord = serde_json::from_str(
            r#"{"session_id":"s4","contacts":["0912"],"redials":0,"created_at_ms":1,"purpose":"political"}"#,
        )
        .unwrap();
        assert_eq!((later.purpose, later.contacts.len()), (None, 1));
    }
}
