//! Calling hours: when a purpose's calls may be dialled, as windows of time in the tenant's zone
//! (local ranges on allowed days, never on a blackout date), and the three questions the
//! enforcement asks of them: is this moment open, when is the next opening, and where is the
//! earliest moment at or after `t` where a dialling of this length fits inside one window.
//!
//! A window is one range of one day: a session must start and end inside one range (dialling
//! does not pause over a lunch break). Ranges end by 24:00; a range over midnight is written as
//! two (`22:00-24:00` and `00:00-06:00`), and such neighbours are not joined.

use jiff::{
    SignedDuration, Timestamp,
    civil::{Date, Time, Weekday},
    tz::TimeZone,
};

/// How many days ahead an opening is searched for: a year and a day covers any weekly pattern and
/// every blackout date of a year; past it the rules allow nothing (checked at load).
pub const SEARCH_DAYS: i32 = 367;

/// One range of local time within a day, `start < end`; `end` may be 24:00 (the next midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Minutes after midnight, 0..1440.
    pub start_min: u16,
    /// Minutes after midnight, 1..=1440.
    pub end_min: u16,
}

impl Range {
    /// Parses `HH:MM-HH:MM` (24:00 allowed as the end).
    pub fn parse(s: &str) -> Result<Range, String> {
        let (a, b) = s.split_once('-').ok_or_else(|| format!("hours {s:?}: expected HH:MM-HH:MM"))?;
        let (start_min, end_min) = (minutes(a.trim(), s)?, minutes(b.trim(), s)?);
        if start_min >= end_min {
            return Err(format!("hours {s:?}: the end must be after the start (a range ends by 24:00)"));
        }
        if start_min >= 1440 {
            return Err(format!("hours {s:?}: the start must be before 24:00"));
        }
        Ok(Range { start_min, end_min })
    }
}

fn minutes(hhmm: &str, whole: &str) -> Result<u16, String> {
    let bad = || format!("hours {whole:?}: expected HH:MM-HH:MM");
    let (h, m) = hhmm.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// When a purpose's calls may be dialled.
#[derive(Debug, Clone, PartialEq)]
pub struct Hours {
    /// The zone the ranges, days and dates are read in.
    pub zone: TimeZone,
    /// Ranges of each allowed day, sorted, not overlapping.
    pub ranges: Vec<Range>,
    /// Allowed weekdays.
    pub days: Vec<Weekday>,
    /// Dates on which nothing is dialled.
    pub blackout: Vec<Date>,
}

/// One open window: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Opens.
    pub start: Timestamp,
    /// Closes.
    pub end: Timestamp,
}

impl Hours {
    /// Sorts the ranges and refuses overlapping ones, and rules that never open.
    pub fn new(
        zone: TimeZone,
        mut ranges: Vec<Range>,
        days: Vec<Weekday>,
        blackout: Vec<Date>,
    ) -> Result<Self, String> {
        ranges.sort_by_key(|r| r.start_min);
        if ranges.windows(2).any(|w| w[0].end_min > w[1].start_min) {
            return Err("hours: ranges overlap".to_owned());
        }
        if ranges.is_empty() {
            return Err("hours: at least one range is required".to_owned());
        }
        if days.is_empty() {
            return Err("days: at least one day is required".to_owned());
        }
        Ok(Hours { zone, ranges, days, blackout })
    }

    /// The windows of local date `d`, in order (none on a day not allowed or a blackout date).
    fn windows_of(&self, d: Date) -> impl Iterator<Item = Window> + '_ {
        let open = self.days.contains(&d.weekday()) && !self.blackout.contains(&d);
        self.ranges
            .iter()
            .filter(move |_| open)
            .filter_map(move |r| Some(Window { start: self.local(d, r.start_min)?, end: self.local(d, r.end_min)? }))
    }

    /// The instant of `minutes` after local midnight of `d` (24:00 = the next midnight); in a
    /// DST gap, the instant after it (jiff's compatible disambiguation).
    fn local(&self, d: Date, minutes: u16) -> Option<Timestamp> {
        let (d, minutes) = if minutes >= 1440 { (d.tomorrow().ok()?, minutes - 1440) } else { (d, minutes) };
        let t = Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0).ok()?;
        self.zone.to_timestamp(d.to_datetime(t)).ok()
    }

    /// Every window that ends after `t`, in order, for [`SEARCH_DAYS`] days.
    pub fn windows_after(&self, t: Timestamp) -> impl Iterator<Item = Window> + '_ {
        let first = self.zone.to_datetime(t).date().yesterday().unwrap_or(Date::MIN);
        (0..SEARCH_DAYS + 1)
            .filter_map(move |i| first.checked_add(jiff::Span::new().days(i)).ok())
            .flat_map(move |d| self.windows_of(d))
            .filter(move |w| w.end > t)
    }

    /// The window `t` is in, if any.
    pub fn window_at(&self, t: Timestamp) -> Option<Window> {
        self.windows_after(t).next().filter(|w| w.start <= t)
    }

    /// The first opening after `t` (a window's start later than `t`).
    pub fn next_opening(&self, t: Timestamp) -> Option<Timestamp> {
        self.windows_after(t).map(|w| w.start).find(|s| *s > t)
    }

    /// The earliest moment at or after `t` from which `length` of dialling stays inside one
    /// window; `None` when no window within the search is long enough.
    pub fn earliest_fit(&self, t: Timestamp, length: SignedDuration) -> Option<Timestamp> {
        self.windows_after(t).find_map(|w| {
            let start = w.start.max(t);
            (start.checked_add(length).ok()? <= w.end).then_some(start)
        })
    }

    /// The longest window there is (for "how many would fit in a whole window").
    pub fn longest_window(&self) -> SignedDuration {
        let most = self.ranges.iter().map(|r| r.end_min - r.start_min).max().unwrap_or(0);
        SignedDuration::from_mins(i64::from(most))
    }
}

/// Parses a weekday as the policy file writes it (`mon` … `sun`).
pub fn weekday(s: &str) -> Result<Weekday, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return Err(format!("days: {s:?} is not one of mon, tue, wed, thu, fri, sat, sun")),
    })
}

/// Every day of the week.
pub const ALL_DAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hcm(ranges: &[&str], blackout: &[&str]) -> Hours {
        let zone = TimeZone::get("Asia/Ho_Chi_Minh").unwrap();
        let ranges = ranges.iter().map(|r| Range::parse(r).unwrap()).collect();
        let blackout = blackout.iter().map(|d| d.parse().unwrap()).collect();
        Hours::new(zone, ranges, ALL_DAYS.to_vec(), blackout).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_refuse() {
        assert_eq!(Range::parse("08:00-17:00"), Ok(Range { start_min: 480, end_min: 1020 }));
        assert_eq!(Range::parse("22:00-24:00"), Ok(Range { start_min: 1320, end_min: 1440 }));
        for bad in ["8:00-17:00", "08:00", "17:00-08:00", "08:00-08:00", "08:60-09:00", "24:00-24:00", "24:30-25:00"] {
            assert!(Range::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn open_closed_and_next_opening() {
        let h = hcm(&["08:00-12:00", "13:00-17:00"], &[]);
        assert!(h.window_at(ts("2027-01-04T00:59:59Z")).is_none(), "07:59:59 local");
        let w = h.window_at(ts("2027-01-04T01:00:00Z")).unwrap();
        assert_eq!((w.start, w.end), (ts("2027-01-04T01:00:00Z"), ts("2027-01-04T05:00:00Z")));
        assert!(h.window_at(ts("2027-01-04T05:30:00Z")).is_none(), "lunch");
        assert_eq!(h.next_opening(ts("2027-01-04T05:30:00Z")), Some(ts("2027-01-04T06:00:00Z")));
        assert_eq!(h.next_opening(ts("2027-01-04T10:00:00Z")), Some(ts("2027-01-05T01:00:00Z")), "17:00 -> tomorrow");
    }

    #[test]
    fn earliest_fit_skips_short_remainders_and_blackouts() {
        let h = hcm(&["08:00-17:00"], &["2027-01-05"]);
        let hour = SignedDuration::from_hours(1);
        // 16:30 local: one hour does not fit today; tomorrow is blacked out.
        assert_eq!(h.earliest_fit(ts("2027-01-04T09:30:00Z"), hour), Some(ts("2027-01-06T01:00:00Z")));
        assert_eq!(h.earliest_fit(ts("2027-01-04T02:00:00Z"), hour), Some(ts("2027-01-04T02:00:00Z")));
        assert_eq!(h.earliest_fit(ts("2027-01-04T02:00:00Z"), SignedDuration::from_hours(10)), None);
        assert_eq!(h.longest_window(), SignedDuration::from_hours(9));
    }
}
