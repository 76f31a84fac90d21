//! W3C Trace Context (`traceparent`, level 1): parse the caller's header, start a new trace when
//! there is none or it is invalid, and derive child span contexts for what the facade calls.
//!
//! The middleware turns the incoming header into the facade's own server span (same trace id, a
//! new span id, same flags) and puts that back in the request metadata; each upstream HTTP
//! attempt then sends a child of it ([`TraceParent::child`]). An invalid header is replaced by a
//! new trace, and its `tracestate` is dropped with it, as the spec requires.

use rand::Rng;

/// A parsed `traceparent` (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, not all zero: the span the receiver's span will be a child of.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a header value; `None` when it is not a valid trace context. Versions above 00
    /// are read by their first four fields, as the spec asks of a version-00 parser; `ff` is
    /// invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        if version.len() != 2 || !is_lower_hex(version) || version == "ff" {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && (rest.is_some() || value.len() != 55) {
            return None;
        }
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let span_id: [u8; 8] = decode_hex(span)?;
        let [flags] = decode_hex::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, span_id, flags })
    }

    /// A new trace: random trace and span ids, sampled (what OpenTelemetry's default sampler
    /// decides for a root span).
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        TraceParent { trace_id: nonzero(&mut rng), span_id: nonzero(&mut rng), flags: 0x01 }
    }

    /// A child: same trace id and flags, a new span id.
    pub fn child(&self) -> Self {
        let mut rng = rand::rng();
        loop {
            let span_id = nonzero(&mut rng);
            if span_id != self.span_id {
                return TraceParent { span_id, ..*self };
            }
        }
    }

    /// The trace id as 32 lower-case hex digits (what logs carry).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lower-case hex digits.
    #[cfg(test)]
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The version-00 header value.
    pub fn header(&self) -> String {
        // By hand: `format!` with `{:02x}` per byte cost more than the rest of the call's tracing.
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.header())
    }
}

fn nonzero<const N: usize>(rng: &mut impl Rng) -> [u8; N] {
    loop {
        let mut bytes = [0u8; N];
        rng.fill(&mut bytes[..]);
        if bytes != [0u8; N] {
            return bytes;
        }
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !is_lower_hex(s) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parse_table() {
        let rows: [(&str, bool); 17] = [
            (VALID, true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true),
            ("  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ", true),
            // A future version with an extra field is read by its first four.
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds", true),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01", false),
            ("0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false),
            ("", false),
            ("garbage", false),
        ];
        for (value, ok) in rows {
            assert_eq!(TraceParent::parse(value).is_some(), ok, "{value:?}");
        }
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.header(), VALID);
    }

    #[test]
    fn a_child_keeps_trace_and_flags_and_takes_a_new_span() {
        for parent in [VALID, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"] {
            let parent = TraceParent::parse(parent).unwrap();
            let child = parent.child();
            assert_eq!(child.trace_id, parent.trace_id);
            assert_eq!(child.flags, parent.flags);
            assert_ne!(child.span_id, parent.span_id);
            assert_eq!(TraceParent::parse(&child.header()), Some(child));
        }
    }

    #[test]
    fn roots_are_new_valid_and_distinct() {
        let (a, b) = (TraceParent::new_root(), TraceParent::new_root());
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(TraceParent::parse(&a.header()), Some(a));
        assert_eq!(a.header().len(), 55);
    }
}
