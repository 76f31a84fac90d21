//! The opaque cursor of an event: which store (its identity, so a cursor of another process or
//! another stream is recognized) and the event's sequence number in it. Encoded as URL-safe
//! base64 of 17 bytes: a version byte, the store id and the sequence, both big-endian.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

const VERSION: u8 = 1;
const LEN: usize = 17;

/// A place in a store: resume right after the event with this sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Cursor {
    /// The store's identity (random per embedded store; derived from the stream for JetStream).
    pub(crate) store: u64,
    /// The event's sequence number in that store (the first event is 1; 0 = before the first).
    pub(crate) seq: u64,
}

/// The cursor text is not one this facade writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

impl Cursor {
    /// The text callers see.
    pub(crate) fn encode(&self) -> String {
        let mut bytes = [0u8; LEN];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&self.store.to_be_bytes());
        bytes[9..].copy_from_slice(&self.seq.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a cursor back; anything else is [`Malformed`].
    pub(crate) fn decode(text: &str) -> Result<Cursor, Malformed> {
        if text.len() > 64 {
            return Err(Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| Malformed)?;
        let bytes: [u8; LEN] = bytes.try_into().map_err(|_| Malformed)?;
        if bytes[0] != VERSION {
            return Err(Malformed);
        }
        let word = |range: std::ops::Range<usize>| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[range]);
            u64::from_be_bytes(w)
        };
        Ok(Cursor { store: word(1..9), seq: word(9..LEN) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_malformed() {
        for c in [Cursor { store: 0, seq: 0 }, Cursor { store: u64::MAX, seq: 42 }, Cursor { store: 7, seq: u64::MAX }]
        {
            assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        }
        let good = Cursor { store: 9, seq: 3 }.encode();
        for bad in ["", "x", "AAAA", &good[1..], &format!("{good}A"), "!!!!!!!!!!!!!!!!!!!!!!!", &"A".repeat(200)] {
            assert_eq!(Cursor::decode(bad), Err(Malformed), "{bad}");
        }
        let mut v2 = URL_SAFE_NO_PAD.decode(&good).unwrap();
        v2[0] = 2;
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode(v2)), Err(Malformed));
    }
}
