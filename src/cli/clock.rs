//! Local wall-clock time for the operator commands, through `jiff`: the zone is `$TZ` (an IANA
//! name, a TZif path or a POSIX rule) or else the system's (`/etc/localtime`), looked up in the
//! system's zone database when there is one and in the copy compiled into the binary otherwise
//! (`tzdb-bundle-always`), so a container without `/usr/share/zoneinfo` still shows local time.
//! A zone that cannot be found means UTC.

use std::sync::OnceLock;

use jiff::{Timestamp, tz::TimeZone};

/// The local zone, read once.
fn zone() -> &'static TimeZone {
    static ZONE: OnceLock<TimeZone> = OnceLock::new();
    ZONE.get_or_init(TimeZone::system)
}

/// Seconds since the Unix epoch of a protobuf timestamp; now when absent.
pub fn unix_seconds(at: Option<&prost_types::Timestamp>) -> i64 {
    at.map_or_else(|| Timestamp::now().as_second(), |t| t.seconds)
}

/// `unix` in `zone`, formatted with `format` (strftime); the Unix epoch when out of range.
fn format_in(zone: &TimeZone, unix: i64, format: &str) -> String {
    let at = Timestamp::from_second(unix).unwrap_or(Timestamp::UNIX_EPOCH);
    at.to_zoned_datetime(zone.clone()).strftime(format).to_string()
}

/// `HH:MM:SS`, local time.
pub fn time_of_day(unix: i64) -> String {
    format_in(zone(), unix, "%H:%M:%S")
}

/// `YYYY-MM-DD HH:MM:SS`, local time.
pub fn date_time(unix: i64) -> String {
    format_in(zone(), unix, "%Y-%m-%d %H:%M:%S")
}

/// RFC 3339 in UTC (for JSON), to the second or finer when the timestamp has nanos.
pub fn rfc3339(t: &prost_types::Timestamp) -> String {
    let at = Timestamp::new(t.seconds, t.nanos).unwrap_or(Timestamp::UNIX_EPOCH);
    // jiff writes the shortest exact fraction (none for whole seconds), `Z` for UTC.
    at.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_in_a_zone() {
        let utc = TimeZone::UTC;
        assert_eq!(format_in(&utc, 0, "%Y-%m-%d %H:%M:%S"), "1970-01-01 00:00:00");
        assert_eq!(format_in(&utc, 1_709_164_800, "%Y-%m-%d"), "2024-02-29");
        assert_eq!(format_in(&utc, -1, "%Y-%m-%d %H:%M:%S"), "1969-12-31 23:59:59");
    }

    /// From the database compiled in: no `/usr/share/zoneinfo` needed.
    #[test]
    fn iana_zones_come_from_the_bundled_database() {
        let db = jiff::tz::TimeZoneDatabase::bundled();
        let hcm = db.get("Asia/Ho_Chi_Minh").unwrap();
        assert_eq!(format_in(&hcm, 1_700_000_000, "%H:%M:%S %:z"), "05:13:20 +07:00");
        // A zone with daylight saving, on both sides of its 2024 change.
        let paris = db.get("Europe/Paris").unwrap();
        assert_eq!(format_in(&paris, 1_711_846_799, "%H:%M %Z"), "01:59 CET");
        assert_eq!(format_in(&paris, 1_711_846_800, "%H:%M %Z"), "03:00 CEST");
    }

    #[test]
    fn rfc3339_in_utc() {
        assert_eq!(rfc3339(&prost_types::Timestamp { seconds: 0, nanos: 0 }), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(&prost_types::Timestamp { seconds: 1_700_000_000, nanos: 250_000_000 }),
            "2023-11-14T22:13:20.25Z"
        );
    }
}
