//! The `json` log line, written directly: the same object, key for key and byte for byte, as
//! tracing-subscriber's JSON format with the options the facade used (`flatten_event`, the span
//! list, no current span): `timestamp`, `level`, the event's fields in order, `target`, then
//! `spans` (outermost first, each its fields by name then `name`) when the event is in any.
//!
//! That format serializes through serde for every line, formats the time field by field, and
//! parses every span's stored fields back from JSON for each line logged inside it; and it needs a
//! real `rpc` span, where the call's fields can be lent instead (`scope.rs`). Here strings are
//! escaped as serde_json escapes them, the time comes from the text format's per-second cache,
//! and the lent `rpc` fields are written as the first span. Fields of other spans (the `upstream`
//! span, at `debug`) are read back as that format did. The tests below compare the two formats'
//! lines for the same events.

use std::fmt::{self, Write as _};

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    field::Visit,
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer},
    registry::LookupSpan,
};

use super::scope::{CallFields, with_current};

/// The event layout (see the module doc). Span fields are kept by `JsonFields`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let w = &mut writer;
        w.write_str("{\"timestamp\":\"")?;
        super::text::write_now(w)?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(level_name(*event.metadata().level()))?;
        w.write_char('"')?;
        let mut visitor = Visitor { writer: w.by_ref(), result: Ok(()) };
        event.record(&mut visitor);
        visitor.result?;
        w.write_str(",\"target\":")?;
        write_string(w, event.metadata().target())?;
        let real = event.parent().and_then(|id| ctx.span(id)).or_else(|| ctx.lookup_current()).is_some();
        with_current(|lent| -> fmt::Result {
            if lent.is_none() && !real {
                return Ok(());
            }
            w.write_str(",\"spans\":[")?;
            let mut first = true;
            if let Some(fields) = lent {
                write_lent(w, fields)?;
                first = false;
            }
            if let Some(leaf) = ctx.lookup_current() {
                for span in leaf.scope().from_root() {
                    if !first {
                        w.write_char(',')?;
                    }
                    first = false;
                    let extensions = span.extensions();
                    let stored = extensions.get::<FormattedFields<N>>().map_or("{}", |f| f.as_str());
                    write_stored(w, stored, span.name())?;
                }
            }
            w.write_char(']')
        })?;
        w.write_str("}\n")
    }
}

/// The lent `rpc` fields as the span's object: its fields by name, then `name`.
fn write_lent(w: &mut Writer<'_>, f: &CallFields) -> fmt::Result {
    w.write_str("{\"method\":")?;
    write_string(w, &f.method)?;
    w.write_str(",\"request_id\":")?;
    write_string(w, &f.request_id)?;
    if let Some(tenant) = &f.tenant {
        w.write_str(",\"tenant\":")?;
        write_string(w, tenant)?;
    }
    w.write_str(",\"trace_id\":")?;
    write_string(w, &f.trace_id)?;
    w.write_str(",\"name\":\"rpc\"}")
}

/// A span's stored fields (a JSON object in the order they were recorded) as that format wrote
/// them: read back, by name, then `name`.
fn write_stored(w: &mut Writer<'_>, stored: &str, name: &str) -> fmt::Result {
    w.write_char('{')?;
    match serde_json::from_str::<serde_json::Value>(stored) {
        Ok(serde_json::Value::Object(fields)) => {
            for (key, value) in fields {
                write_string(w, &key)?;
                w.write_char(':')?;
                w.write_str(&serde_json::to_string(&value).map_err(|_| fmt::Error)?)?;
                w.write_char(',')?;
            }
        }
        Ok(value) => {
            w.write_str("\"field\":")?;
            w.write_str(&serde_json::to_string(&value).map_err(|_| fmt::Error)?)?;
            w.write_str(",\"field_error\":\"field was no a valid object\",")?;
        }
        Err(e) => {
            w.write_str("\"field_error\":")?;
            write_string(w, &e.to_string())?;
            w.write_char(',')?;
        }
    }
    w.write_str("\"name\":")?;
    write_string(w, name)?;
    w.write_char('}')
}

/// Writes each field as `,"name":value`: strings escaped, numbers and booleans bare, anything else
/// its `Debug` as a string (serde's `collect_str`, as tracing-serde records it).
struct Visitor<'w> {
    writer: Writer<'w>,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn write(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let w = &mut self.writer;
        self.result = w
            .write_char(',')
            .and_then(|()| write_string(w, field.name()))
            .and_then(|()| w.write_char(':'))
            .and_then(|()| value(w));
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, |w| write_string(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.write(field, |w| w.write_str(&serde_json::to_string(&value).map_err(|_| fmt::Error)?));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `value` as a JSON string, escaped as serde_json escapes it.
fn write_string(w: &mut Writer<'_>, value: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(value)?;
    w.write_char('"')
}

/// Escapes what is written through it as serde_json does inside a string: `"` and `\`, and the
/// control characters below 0x20 (`\b \t \n \f \r`, the others as `\u00XX`).
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &str = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                0x08 => "\\b",
                0x09 => "\\t",
                0x0a => "\\n",
                0x0c => "\\f",
                0x0d => "\\r",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Only ASCII bytes are split at: `start..i` is whole characters.
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.0.write_str("\\u00")?;
                self.0.write_char(HEX[(b >> 4) as usize] as char)?;
                self.0.write_char(HEX[(b & 0xf) as usize] as char)?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::{fmt::format::JsonFields, prelude::*};

    use super::{super::test_writer::Lines, *};
    use crate::telemetry::scope::InCall;

    /// The lines `log` makes with tracing-subscriber's JSON format (the facade's options before
    /// this module) or with this one.
    fn logged(ours: bool, log: impl FnOnce()) -> Vec<String> {
        let lines = Lines::default();
        if ours {
            let layer = tracing_subscriber::fmt::layer()
                .event_format(JsonFormat)
                .fmt_fields(JsonFields::new())
                .with_writer(lines.clone());
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        } else {
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(false)
                .with_span_list(true)
                .flatten_event(true)
                .with_writer(lines.clone());
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        }
        let text = lines.text();
        // The time is the only part that differs: checked apart.
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                let time = v["timestamp"].as_str().unwrap();
                assert!(time.parse::<jiff::Timestamp>().is_ok() && time.len() == 27, "{time}");
                line.replacen(time, "T", 1)
            })
            .collect()
    }

    fn events() {
        tracing::info!(target: "access", method = "/a.B/C", request_id = "r-1", latency_us = 12u64, "rpc");
        tracing::warn!(
            text = "quote \" back \\ nl \n tab \t cr \r bell \u{7} del \u{7f} đ 😀",
            neg = -7i64,
            ok = false,
            ratio = 0.25f64,
            nan = f64::NAN,
            big = u128::MAX,
            shown = %"a \"b\"",
            debugged = ?Some("x\ny"),
            error = &std::io::Error::other("boom \"x\"") as &(dyn std::error::Error + 'static),
            "message with \"quotes\""
        );
        let span = tracing::info_span!("upstream", endpoint = "/api", attempt = 2u64, slow = true);
        span.in_scope(|| {
            let inner = tracing::info_span!("inner", z = 1i64, a = "first");
            inner.in_scope(|| tracing::error!(status = 503u64, "in spans"));
        });
        tracing::info!("bare");
    }

    #[test]
    fn lines_are_the_json_format_s_byte_for_byte() {
        let theirs = logged(false, events);
        let ours = logged(true, events);
        assert_eq!(theirs.len(), 4);
        for (a, b) in theirs.iter().zip(&ours) {
            assert_eq!(b, a);
        }
    }

    #[test]
    fn lent_call_fields_read_as_the_rpc_span() {
        let (id, trace, method) = ("r-1", "0af7651916cd43dd8448eb211c80319c", "/callbot.v1.CallBotService/GetScript");
        for tenant in [None, Some("school"), Some("say \"hi\"")] {
            let event = || {
                let inner = tracing::info_span!("upstream", endpoint = "/api");
                let _inner = inner.enter();
                tracing::info!(status = 503u64, "upstream answered");
            };
            let spanned = logged(false, || {
                let span = tracing::info_span!("rpc", request_id = %id, trace_id = %trace, method = %method, tenant);
                span.in_scope(event);
            });
            let fields = CallFields {
                request_id: id.into(),
                trace_id: trace.into(),
                method: method.into(),
                tenant: tenant.map(Into::into),
            };
            let lent = logged(true, || futures::executor::block_on(InCall::new(async { event() }, fields)));
            assert_eq!(lent, spanned, "tenant {tenant:?}");
            let v: serde_json::Value = serde_json::from_str(&lent[0]).unwrap();
            assert_eq!(v["spans"][0]["name"], "rpc");
            assert_eq!(v["spans"][0]["request_id"], "r-1");
            assert_eq!(v["spans"][1]["endpoint"], "/api");
        }
    }
}
