//! The `text` log line, written directly: `<RFC 3339 UTC time, µs> <LEVEL> <span>{fields}:... <message> <fields>`,
//! the layout of `tracing-subscriber`'s default full format (target left out), at a fraction of its
//! cost. That format paints every field name and `=` through `nu-ansi-term` even with colours off,
//! and formats the time field by field for every line: about 10 k instructions per line, a third
//! of what the facade adds to a `CreateSession` over the bare stack (BENCHMARKS.md, "CreateSession
//! vs the stack floor"). Here the date and time to the second are formatted once per second and
//! per thread, and fields are written with `write_str`.
//!
//! Values keep the default format's spelling: strings quoted and escaped as Rust's `Debug` does
//! (so that a value can never forge a line), `%value` fields as their `Display`, numbers and
//! booleans bare, errors as their `Display`. Colours (a level's colour, span names in bold) only
//! when stderr is a terminal.

use std::{
    cell::RefCell,
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    field::{RecordFields, Visit},
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer},
    registry::LookupSpan,
};

/// The event layout (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(super) struct TextFormat {
    /// Colour the level and embolden span names (a terminal).
    pub(super) ansi: bool,
}

/// The fields' layout, for events and for the fields kept with each span.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TextFields;

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write_now(&mut writer)?;
        let level = *event.metadata().level();
        if self.ansi {
            write!(writer, " {}{}\x1b[0m ", level_colour(level), level_name(level))?;
        } else {
            writer.write_char(' ')?;
            writer.write_str(level_name(level))?;
            writer.write_char(' ')?;
        }
        // The call's `rpc` fields when they are lent rather than in a span (`scope.rs`): outermost.
        let mut any = super::scope::write_current(&mut writer, self.ansi)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                any = true;
                if self.ansi {
                    write!(writer, "\x1b[1m{}\x1b[0m", span.name())?;
                } else {
                    writer.write_str(span.name())?;
                }
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>().filter(|f| !f.is_empty()) {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
        }
        if any {
            writer.write_char(' ')?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor { writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes each field as ` name=value`, the message bare and first.
struct Visitor<'w> {
    writer: Writer<'w>,
    /// Nothing written yet (no leading space).
    first: bool,
    /// The first write error, if any.
    result: fmt::Result,
}

impl Visitor<'_> {
    /// Writes the separator and `name=` (nothing but the separator for the message).
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        if field.name() == "message" {
            return Ok(());
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }

    fn write(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = self.name(field).and_then(|()| value(&mut self.writer));
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        self.write(field, |w| if message { w.write_str(value) } else { write_quoted(w, value) });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, |w| w.write_str(itoa_u64(value, &mut [0; 20])));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, |w| {
            if value < 0 {
                w.write_char('-')?;
            }
            w.write_str(itoa_u64(value.unsigned_abs(), &mut [0; 20]))
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, |w| write!(w, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, |w| write!(w, "{value:?}"));
    }
}

/// `"value"`, escaped as `Debug` escapes a `str`; written whole when nothing needs escaping.
pub(super) fn write_quoted(w: &mut Writer<'_>, value: &str) -> fmt::Result {
    let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        w.write_char('"')?;
        w.write_str(value)?;
        w.write_char('"')
    } else {
        write!(w, "{value:?}")
    }
}

/// `n` in decimal, in `buf`.
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => " WARN",
        Level::INFO => " INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

fn level_colour(level: Level) -> &'static str {
    match level {
        Level::ERROR => "\x1b[31m",
        Level::WARN => "\x1b[33m",
        Level::INFO => "\x1b[32m",
        Level::DEBUG => "\x1b[34m",
        Level::TRACE => "\x1b[35m",
    }
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// The current time as `2026-12-07T05:08:37.123456Z`.
pub(super) fn write_now(w: &mut Writer<'_>) -> fmt::Result {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    write_time(w, since.as_secs(), since.subsec_micros())
}

fn write_time(w: &mut Writer<'_>, secs: u64, micros: u32) -> fmt::Result {
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, format_second(secs));
        }
        // Only ASCII was written.
        w.write_str(std::str::from_utf8(&cached.1).unwrap_or("1970-01-01T00:00:00"))
    })?;
    let mut frac = *b".000000Z";
    let mut rest = micros.min(999_999);
    for at in (1..7).rev() {
        frac[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    w.write_str(std::str::from_utf8(&frac).unwrap_or(".000000Z"))
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch, UTC (proleptic Gregorian, days to civil
/// date by Howard Hinnant's algorithm).
fn format_second(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, of_day / 3_600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    out
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::prelude::*;

    use super::{super::test_writer::Lines, *};

    #[test]
    fn the_second_is_the_calendars() {
        for secs in
            [0u64, 59, 86_399, 86_400, 951_782_400, 1_709_210_096, 1_796_533_717, 4_102_444_799, 253_402_207_200]
        {
            let expected = jiff::Timestamp::from_second(secs as i64).unwrap().strftime("%Y-%m-%dT%H:%M:%S").to_string();
            assert_eq!(std::str::from_utf8(&format_second(secs)).unwrap(), expected, "{secs}");
        }
        // Every day of four years around a leap century.
        for day in 0..(4 * 366) {
            let secs = 946_684_800 - 2 * 366 * 86_400 + day * 86_400 + 45_296;
            let expected = jiff::Timestamp::from_second(secs as i64).unwrap().strftime("%Y-%m-%dT%H:%M:%S").to_string();
            assert_eq!(std::str::from_utf8(&format_second(secs)).unwrap(), expected);
        }
    }

    fn logged(ansi: bool, log: impl FnOnce()) -> String {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(TextFormat { ansi })
                .fmt_fields(TextFields)
                .with_writer(lines.clone()),
        );
        tracing::subscriber::with_default(subscriber, log);
        lines.text()
    }

    #[test]
    fn a_line_reads_as_the_default_format_did() {
        let out = logged(false, || {
            let span =
                tracing::info_span!("rpc", request_id = %"r-1", method = "/a.B/C", tenant = tracing::field::Empty);
            span.record("tenant", "school");
            let _entered = span.enter();
            let inner = tracing::info_span!("upstream", endpoint = "/api");
            let _inner = inner.enter();
            tracing::info!(
                status = 503u64,
                attempt = 2,
                ok = false,
                delta = -7i64,
                note = "say \"hi\"\n",
                "upstream answered"
            );
        });
        let line = out.strip_suffix('\n').unwrap();
        assert!(!line.contains('\n'), "{out:?}");
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");
        assert_eq!(time.len(), "2026-12-07T05:08:37.123456Z".len(), "{time}");
        assert_eq!(
            rest,
            r#" INFO rpc{request_id=r-1 method="/a.B/C" tenant="school"}:upstream{endpoint="/api"}: upstream answered status=503 attempt=2 ok=false delta=-7 note="say \"hi\"\n""#
        );
    }

    /// The lines of an event inside the call's real `rpc` span (as the middleware makes it) and
    /// inside its lent fields (`scope.rs`), after their times.
    fn spanned_and_lent(ansi: bool, tenant: Option<&str>) -> (String, String) {
        let (id, trace, method) = ("r-1", "0af7651916cd43dd8448eb211c80319c", "/callbot.v1.CallBotService/GetScript");
        let event = || {
            let inner = tracing::info_span!("upstream", endpoint = "/api");
            let _inner = inner.enter();
            tracing::info!(status = 503u64, "upstream answered");
        };
        let spanned = logged(ansi, || {
            let span = tracing::info_span!("rpc", request_id = %id, trace_id = %trace, method = %method, tenant);
            span.in_scope(event);
        });
        let fields = super::super::scope::CallFields {
            request_id: id.into(),
            trace_id: trace.into(),
            method: method.into(),
            tenant: tenant.map(Into::into),
        };
        let lent = logged(ansi, || {
            futures::executor::block_on(super::super::scope::InCall::new(async { event() }, fields));
        });
        let after_time = |line: String| line.split_once(' ').unwrap().1.to_owned();
        (after_time(spanned), after_time(lent))
    }

    #[test]
    fn lent_call_fields_read_as_the_rpc_span() {
        for ansi in [false, true] {
            for tenant in [None, Some("school"), Some("say \"hi\"")] {
                let (spanned, lent) = spanned_and_lent(ansi, tenant);
                assert_eq!(lent, spanned, "ansi {ansi}, tenant {tenant:?}");
                assert!(spanned.contains("rpc"), "{spanned}");
            }
        }
        let (plain, _) = spanned_and_lent(false, Some("school"));
        assert_eq!(
            plain,
            concat!(
                r#" INFO rpc{request_id=r-1 trace_id=0af7651916cd43dd8448eb211c80319c method=/callbot.v1.CallBotService/GetScript"#,
                r#" tenant="school"}:upstream{endpoint="/api"}: upstream answered status=503"#,
                "\n"
            )
        );
        // Outside a call, nothing is lent.
        let outside = logged(false, || tracing::info!("x"));
        assert!(outside.ends_with("Z  INFO x\n"), "{outside:?}");
    }

    #[test]
    fn without_spans_and_in_colour() {
        let plain = logged(false, || tracing::warn!(error = %std::io::Error::other("boom"), "cannot"));
        assert!(plain.ends_with("Z  WARN cannot error=boom\n"), "{plain:?}");
        let coloured = logged(true, || {
            let span = tracing::info_span!("rpc");
            let _e = span.enter();
            tracing::error!("x");
        });
        assert!(coloured.contains("\x1b[31mERROR\x1b[0m \x1b[1mrpc\x1b[0m: x\n"), "{coloured:?}");
    }
}
