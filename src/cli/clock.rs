//! Local wall-clock time for the operator commands, without a time-zone crate: the offset comes
//! from the system's compiled zone file (TZif: `$TZ` as a path or a zone name under
//! `/usr/share/zoneinfo`, else `/etc/localtime`). A `$TZ` that names no file (a POSIX rule
//! such as `EST5EDT`), an empty one, or an unreadable file means UTC. After the file's last
//! transition the last transition's offset holds (exact for zones without daylight saving,
//! such as Asia/Ho_Chi_Minh).

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The local zone's transitions: (from this Unix second, offset in seconds), ascending; the
/// first entry's offset also holds before it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Zone(Vec<(i64, i64)>);

impl Zone {
    fn offset_at(&self, unix: i64) -> i64 {
        match self.0.partition_point(|&(at, _)| at <= unix) {
            0 => self.0.first().map_or(0, |&(_, off)| off),
            i => self.0[i - 1].1,
        }
    }
}

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let path = match std::env::var("TZ") {
            Err(_) => "/etc/localtime".to_owned(),
            Ok(tz) => {
                let tz = tz.strip_prefix(':').unwrap_or(&tz);
                if tz.is_empty() || tz.contains("..") {
                    return Zone::default();
                }
                if tz.starts_with('/') { tz.to_owned() } else { format!("/usr/share/zoneinfo/{tz}") }
            }
        };
        std::fs::read(path).ok().and_then(|bytes| parse_tzif(&bytes)).unwrap_or_default()
    })
}

/// The transitions of a TZif file (RFC 8536): the 64-bit block of version 2+ files, else the
/// 32-bit one. `None` when the file is not TZif or is cut short.
fn parse_tzif(bytes: &[u8]) -> Option<Zone> {
    let (header, v1) = block(bytes, 4)?;
    let (counts, data) = if bytes.get(4).is_some_and(|&v| v >= b'2') {
        let (h2, _) = block(bytes.get(v1..)?, 8)?;
        (h2, bytes.get(v1 + 44..)?)
    } else {
        (header, bytes.get(44..)?)
    };
    let Counts { time_size, times, types } = counts;
    let at = |i: usize| -> Option<i64> {
        let raw = data.get(i * time_size..(i + 1) * time_size)?;
        Some(if time_size == 8 {
            i64::from_be_bytes(raw.try_into().ok()?)
        } else {
            i64::from(i32::from_be_bytes(raw.try_into().ok()?))
        })
    };
    let index_base = times * time_size;
    let types_base = index_base + times;
    let offset_of = |t: usize| -> Option<i64> {
        let raw = data.get(types_base + t * 6..types_base + t * 6 + 4)?;
        Some(i64::from(i32::from_be_bytes(raw.try_into().ok()?)))
    };
    if types == 0 {
        return None;
    }
    // Before the first transition: the first standard-time type (type 0 in practice).
    let mut out = vec![(i64::MIN, offset_of(0)?)];
    for i in 0..times {
        let t = usize::from(*data.get(index_base + i)?);
        if t >= types {
            return None;
        }
        out.push((at(i)?, offset_of(t)?));
    }
    Some(Zone(out))
}

/// What a header says: the size of a transition time, the transitions and the types.
#[derive(Clone, Copy)]
struct Counts {
    time_size: usize,
    times: usize,
    types: usize,
}

/// The header at the start of `bytes` and the length of the block it heads.
fn block(bytes: &[u8], time_size: usize) -> Option<(Counts, usize)> {
    if bytes.get(..4)? != b"TZif" {
        return None;
    }
    let count = |i: usize| -> Option<usize> {
        let raw = bytes.get(20 + i * 4..24 + i * 4)?;
        usize::try_from(u32::from_be_bytes(raw.try_into().ok()?)).ok()
    };
    let (isut, isstd, leap, times, types, chars) = (count(0)?, count(1)?, count(2)?, count(3)?, count(4)?, count(5)?);
    let len = 44 + times * time_size + times + types * 6 + chars + leap * (time_size + 4) + isstd + isut;
    Some((Counts { time_size, times, types }, len))
}

/// Seconds since the Unix epoch of a protobuf timestamp; now when absent.
pub fn unix_seconds(at: Option<&prost_types::Timestamp>) -> i64 {
    match at {
        Some(t) => t.seconds,
        None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
    }
}

/// Local (days since the epoch, second of the day) of a Unix second.
fn local(unix: i64) -> (i64, i64) {
    let local = unix.saturating_add(zone().offset_at(unix));
    (local.div_euclid(86_400), local.rem_euclid(86_400))
}

/// `HH:MM:SS`, local time.
pub fn time_of_day(unix: i64) -> String {
    let (_, s) = local(unix);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `YYYY-MM-DD HH:MM:SS`, local time.
pub fn date_time(unix: i64) -> String {
    let (days, _) = local(unix);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {}", time_of_day(unix))
}

/// RFC 3339 in UTC (for JSON), to the second or finer when the timestamp has nanos.
pub fn rfc3339(t: &prost_types::Timestamp) -> String {
    let since = Duration::new(t.seconds.unsigned_abs(), u32::try_from(t.nanos).unwrap_or(0));
    let at = if t.seconds >= 0 { UNIX_EPOCH + since } else { UNIX_EPOCH - since };
    if t.nanos == 0 {
        humantime::format_rfc3339_seconds(at).to_string()
    } else {
        humantime::format_rfc3339(at).to_string()
    }
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_to_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    /// A hand-made version 1 file: +07:00 from 0, then +08:00 from 1000.
    #[test]
    fn a_tzif_file_gives_offsets_by_transition() {
        let mut f = b"TZif".to_vec();
        f.push(0);
        f.extend([0; 15]);
        for n in [0u32, 0, 0, 2, 2, 8] {
            f.extend(n.to_be_bytes());
        }
        f.extend(0i32.to_be_bytes());
        f.extend(1000i32.to_be_bytes());
        f.extend([0, 1]);
        f.extend(25_200i32.to_be_bytes());
        f.extend([0, 0]);
        f.extend(28_800i32.to_be_bytes());
        f.extend([0, 4]);
        f.extend(b"ICT\0XXX\0");
        let zone = parse_tzif(&f).unwrap();
        assert_eq!(zone.offset_at(-5), 25_200);
        assert_eq!(zone.offset_at(999), 25_200);
        assert_eq!(zone.offset_at(1000), 28_800);
        assert!(parse_tzif(b"nope").is_none());
        assert!(parse_tzif(&f[..50]).is_none());
    }

    #[test]
    fn the_system_zone_file_parses_when_present() {
        if let Ok(bytes) = std::fs::read("/usr/share/zoneinfo/Asia/Ho_Chi_Minh") {
            assert_eq!(parse_tzif(&bytes).unwrap().offset_at(1_700_000_000), 25_200);
        }
    }

    #[test]
    fn rfc3339_in_utc() {
        assert_eq!(rfc3339(&prost_types::Timestamp { seconds: 0, nanos: 0 }), "1970-01-01T00:00:00Z");
    }
}
