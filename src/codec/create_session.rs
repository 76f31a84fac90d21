//! A direct decoder for the one large request, `CreateSessionRequest`, in its usual shape.
//!
//! prost decodes each of a 15-contact request's ~110 strings through its generic field
//! machinery: a growable copy (`reserve` + `put` through a `Take`), then `str::from_utf8`,
//! whose byte loop dominates on short strings. That was 60 k instructions of a CreateSession's
//! 274 k, a third of the stack floor's whole budget for the facade's own work (BENCHMARKS.md,
//! "CreateSession vs the stack floor"). This walks the bytes once and copies each string,
//! validated, into an allocation of exactly its size.
//!
//! It only ever answers for bytes it fully understands: known fields with their wire types,
//! lengths within the message, varints of at most nine bytes, valid UTF-8. Anything else (an
//! unknown or repeated-message field, a group, a truncation, an error of any kind) returns
//! `None` and the caller decodes with prost, which then gives its own result or error. So the
//! result is prost's whenever this returns one; the tests below hold the two equal on
//! generated requests and on corrupted bytes.

use std::collections::BTreeMap;

use crate::pb;

/// `buf` decoded as prost would, or `None` when it is not in the shape this handles.
pub(super) fn decode(buf: &[u8]) -> Option<pb::CreateSessionRequest> {
    let mut r = Reader { buf, text: None, at: 0 };
    let mut m = pb::CreateSessionRequest::default();
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, LEN) => m.script_id = r.string()?,
            (2, LEN) => {
                let body = r.bytes()?;
                m.contacts.push(contact(body)?);
            }
            (3, LEN) => m.name = r.string()?,
            (4, LEN) => m.caller_id = r.string()?,
            (5, VARINT) => m.voice = r.varint()? as i32,
            (6, VARINT) => m.speed = Some(r.varint()? as i32),
            (7, VARINT) => m.retry_count = Some(r.varint()? as i32),
            (8, VARINT) => m.calls_per_round = Some(r.varint()? as i32),
            (9, LEN) => {
                let d = m.round_interval.get_or_insert_with(Default::default);
                (d.seconds, d.nanos) = seconds_nanos(r.bytes()?, (d.seconds, d.nanos))?;
            }
            (10, LEN) => {
                let d = m.retry_interval.get_or_insert_with(Default::default);
                (d.seconds, d.nanos) = seconds_nanos(r.bytes()?, (d.seconds, d.nanos))?;
            }
            (11, LEN) => {
                let t = m.start_time.get_or_insert_with(Default::default);
                (t.seconds, t.nanos) = seconds_nanos(r.bytes()?, (t.seconds, t.nanos))?;
            }
            (12, LEN) => m.external_session_id = r.string()?,
            (13, VARINT) => m.auto_pause = r.varint()? != 0,
            (14, VARINT) => m.check_variables = r.varint()? != 0,
            (15, VARINT) => m.purpose = r.varint()? as i32,
            (16, VARINT) => m.defer_to_calling_hours = r.varint()? != 0,
            (17, VARINT) => m.validate_only = r.varint()? != 0,
            _ => return None,
        }
    }
    Some(m)
}

/// Wire type of a varint field.
const VARINT: u8 = 0;
/// Wire type of a length-delimited field.
const LEN: u8 = 2;

/// One `Contact`, its strings validated as UTF-8 in one pass over the whole contact when they
/// can be (below).
fn contact(buf: &[u8]) -> Option<pb::Contact> {
    let mut r = Reader { buf, text: std::str::from_utf8(buf).ok(), at: 0 };
    let mut c = pb::Contact::default();
    while !r.done() {
        match r.key()? {
            (1, LEN) => c.phone = r.string()?,
            (2, LEN) => c.email = r.string()?,
            (3, LEN) => c.external_contact_code = r.string()?,
            (4, LEN) => {
                let entry = r.bytes()?;
                let start = r.at - entry.len();
                let text = r.text.and_then(|t| t.get(start..r.at));
                variable(entry, text, &mut c.variables)?
            }
            _ => return None,
        }
    }
    Some(c)
}

/// One map entry of `Contact.variables`: a missing key or value is the empty string, a later
/// entry with the same key replaces the earlier one (prost's map semantics).
fn variable(buf: &[u8], text: Option<&str>, into: &mut BTreeMap<String, String>) -> Option<()> {
    let mut r = Reader { buf, text, at: 0 };
    let (mut key, mut value) = (String::new(), String::new());
    while !r.done() {
        match r.key()? {
            (1, LEN) => key = r.string()?,
            (2, LEN) => value = r.string()?,
            _ => return None,
        }
    }
    into.insert(key, value);
    Some(())
}

/// A `Duration` or `Timestamp` merged into `(seconds, nanos)` (a message field given twice
/// merges, field by field).
fn seconds_nanos(buf: &[u8], (mut seconds, mut nanos): (i64, i32)) -> Option<(i64, i32)> {
    let mut r = Reader { buf, text: None, at: 0 };
    while !r.done() {
        match r.key()? {
            (1, VARINT) => seconds = r.varint()? as i64,
            (2, VARINT) => nanos = r.varint()? as i32,
            _ => return None,
        }
    }
    Some((seconds, nanos))
}

/// A cursor over a message's bytes.
///
/// `text` is the same bytes as `str` when they are valid UTF-8 as a whole, as a contact usually
/// is (its keys and lengths are ASCII while its strings are under 128 bytes). A string field of
/// such a message is then valid UTF-8 exactly when it starts and ends on a character boundary, a
/// check of two bytes: one validation pass per contact instead of one per string (the standard
/// validator's start-up cost per call is most of what a short string costs).
struct Reader<'a> {
    buf: &'a [u8],
    text: Option<&'a str>,
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }

    /// A varint of at most nine bytes (63 bits); longer ones are left to prost.
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let first = *self.buf.get(self.at)?;
        self.at += 1;
        if first < 0x80 {
            return Some(u64::from(first));
        }
        let mut value = u64::from(first & 0x7f);
        for shift in (7..63).step_by(7) {
            let b = *self.buf.get(self.at)?;
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// A field key: its number and wire type.
    #[inline]
    fn key(&mut self) -> Option<(u64, u8)> {
        let key = self.varint()?;
        Some((key >> 3, (key & 7) as u8))
    }

    /// A length-delimited field's bytes.
    #[inline]
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.at.checked_add(len)?;
        let bytes = self.buf.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    /// A string field, copied into an allocation of its size.
    #[inline]
    fn string(&mut self) -> Option<String> {
        let bytes = self.bytes()?;
        let s = match self.text {
            Some(text) => text.get(self.at - bytes.len()..self.at)?,
            None => std::str::from_utf8(bytes).ok()?,
        };
        Some(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    /// The load generator's 15-contact request, as h2load sends it.
    fn usual() -> pb::CreateSessionRequest {
        let contacts = (0..15)
            .map(|n| pb::Contact {
                phone: format!("09123{n:05}"),
                email: format!("hoc.sinh{n}@truong.edu.vn"),
                external_contact_code: format!("HS-{n:06}"),
                variables: [
                    ("uB131frQEU".to_owned(), format!("{}.5", n % 10)),
                    ("ho_ten".to_owned(), format!("Nguyễn Văn Đức {n}")),
                    ("lop".to_owned(), "12A1".to_owned()),
                ]
                .into(),
            })
            .collect();
        pb::CreateSessionRequest {
            script_id: "script-1".into(),
            contacts,
            name: "Thông báo điểm thi học kỳ I".into(),
            caller_id: "19001234".into(),
            voice: 2,
            speed: Some(1),
            retry_count: Some(2),
            calls_per_round: Some(10),
            round_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
            retry_interval: Some(prost_types::Duration { seconds: 300, nanos: 5 }),
            start_time: Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 7 }),
            external_session_id: "ext-1".into(),
            auto_pause: true,
            check_variables: true,
            purpose: 2,
            defer_to_calling_hours: true,
            validate_only: false,
        }
    }

    /// The decoder's answer, or prost's when it has none: what the codec does.
    fn both(bytes: &[u8]) -> Result<pb::CreateSessionRequest, prost::DecodeError> {
        decode(bytes).map_or_else(|| pb::CreateSessionRequest::decode(bytes), Ok)
    }

    #[test]
    fn the_usual_request_is_decoded_here_and_equals_prosts() {
        let bytes = usual().encode_to_vec();
        assert_eq!(decode(&bytes), Some(usual()));
        assert_eq!(decode(&bytes), pb::CreateSessionRequest::decode(&bytes[..]).ok());
        assert_eq!(decode(&[]), Some(pb::CreateSessionRequest::default()));
    }

    #[test]
    fn what_it_does_not_handle_is_left_to_prost() {
        let mut bytes = usual().encode_to_vec();
        // An unknown field (99, varint) at the end: prost skips it.
        bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
        assert_eq!(decode(&bytes), None);
        assert_eq!(both(&bytes).unwrap(), usual());
        // Truncated: prost's error, not ours.
        let cut = &usual().encode_to_vec()[..100];
        assert_eq!(decode(cut), None);
        assert!(both(cut).is_err());
        // Invalid UTF-8 in script_id.
        let bad = [0x0a, 0x02, 0xc3, 0x28];
        assert_eq!(decode(&bad), None);
        assert!(both(&bad).is_err());
        // A ten-byte varint (a negative int32 speed): prost decodes it.
        let negative = pb::CreateSessionRequest { speed: Some(-1), ..Default::default() }.encode_to_vec();
        assert_eq!(decode(&negative), None);
        assert_eq!(both(&negative).unwrap().speed, Some(-1));
    }

    #[test]
    fn repeated_fields_follow_prost_last_scalar_wins_messages_merge_map_keys_replace() {
        let a = pb::CreateSessionRequest {
            script_id: "a".into(),
            round_interval: Some(prost_types::Duration { seconds: 5, nanos: 0 }),
            contacts: vec![pb::Contact {
                phone: "0912345678".into(),
                variables: [("k".to_owned(), "1".to_owned())].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let b = pb::CreateSessionRequest {
            script_id: "b".into(),
            round_interval: Some(prost_types::Duration { seconds: 0, nanos: 9 }),
            speed: Some(3),
            ..Default::default()
        };
        let mut bytes = a.encode_to_vec();
        bytes.extend(b.encode_to_vec());
        // A map entry with only a value, then the same key again inside one contact.
        let contact = [0x0a, 0x01, b'1', 0x22, 0x03, 0x12, 0x01, b'x', 0x22, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'2'];
        bytes.push(0x12);
        bytes.push(contact.len() as u8);
        bytes.extend_from_slice(&contact);
        let ours = decode(&bytes).expect("handled");
        assert_eq!(Ok(&ours), pb::CreateSessionRequest::decode(&bytes[..]).as_ref());
        assert_eq!(ours.script_id, "b");
        assert_eq!(ours.round_interval, Some(prost_types::Duration { seconds: 5, nanos: 9 }));
        assert_eq!(ours.contacts[1].variables.get(""), Some(&"x".to_owned()));
        assert_eq!(ours.contacts[1].variables.get("k"), Some(&"2".to_owned()));
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9@._ -]{0,20}",
            "\\PC{0,12}",
            // Long enough that a contact's lengths are no longer ASCII (validated string by string).
            "\\PC{40,140}",
            Just("Nguyễn Văn Đức".to_owned()),
            Just(String::new())
        ]
    }

    fn contact_strategy() -> impl Strategy<Value = pb::Contact> {
        (text(), text(), text(), proptest::collection::btree_map(text(), text(), 0..4)).prop_map(
            |(phone, email, external_contact_code, variables)| pb::Contact {
                phone,
                email,
                external_contact_code,
                variables,
            },
        )
    }

    fn request_strategy() -> impl Strategy<Value = pb::CreateSessionRequest> {
        let duration = proptest::option::of((any::<i64>(), any::<i32>()))
            .prop_map(|d| d.map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }));
        let time = proptest::option::of((any::<i64>(), any::<i32>()))
            .prop_map(|d| d.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }));
        (
            (text(), proptest::collection::vec(contact_strategy(), 0..5), text(), text(), any::<i32>()),
            (
                proptest::option::of(any::<i32>()),
                proptest::option::of(0..1000i32),
                proptest::option::of(any::<i32>()),
                duration.clone(),
                duration,
                time,
            ),
            (text(), any::<bool>(), any::<bool>(), 0..4i32, any::<bool>(), any::<bool>()),
        )
            .prop_map(|(a, b, c)| pb::CreateSessionRequest {
                script_id: a.0,
                contacts: a.1,
                name: a.2,
                caller_id: a.3,
                voice: a.4,
                speed: b.0,
                retry_count: b.1,
                calls_per_round: b.2,
                round_interval: b.3,
                retry_interval: b.4,
                start_time: b.5,
                external_session_id: c.0,
                auto_pause: c.1,
                check_variables: c.2,
                purpose: c.3,
                defer_to_calling_hours: c.4,
                validate_only: c.5,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Every encoded request decodes to itself, here or through prost.
        #[test]
        fn encoded_requests_round_trip(request in request_strategy()) {
            let bytes = request.encode_to_vec();
            prop_assert_eq!(both(&bytes).unwrap(), request.clone());
            // Negative numbers are ten-byte varints, left to prost; everything else is decoded here.
            let r = &request;
            let negative = [r.voice, r.purpose, r.speed.unwrap_or(0), r.retry_count.unwrap_or(0), r.calls_per_round.unwrap_or(0)]
                .into_iter()
                .chain([r.round_interval, r.retry_interval].iter().flatten().map(|d| d.nanos.min(d.seconds.signum() as i32)))
                .chain(r.start_time.iter().map(|t| t.nanos.min(t.seconds.signum() as i32)))
                .any(|n| n < 0);
            match decode(&bytes) {
                Some(ours) => prop_assert_eq!(ours, request),
                None => prop_assert!(negative, "left to prost without a negative number"),
            }
        }

        /// Corrupted bytes: whenever this decoder answers, prost gives the same message.
        #[test]
        fn corrupted_bytes_give_prosts_answer_or_none(
            request in request_strategy(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = request.encode_to_vec();
            if !bytes.is_empty() {
                for (at, value) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            if let Some(ours) = decode(&bytes) {
                prop_assert_eq!(Ok(ours), pb::CreateSessionRequest::decode(&bytes[..]));
            }
        }
    }
}
