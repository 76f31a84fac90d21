//! The policy file (`--calling-policy`, YAML): per tenant, a time zone, whether a purpose is
//! required, do-not-call files, and per purpose its hours, days, blackout dates and frequency cap
//! (or the `vn-decree-91` preset, whose fields the entry may override). Read and checked whole:
//! an error is one line naming the entry (`policies[0] (school).advertising.hours: …`).

use std::{collections::HashMap, path::PathBuf, time::Duration};

use jiff::{SignedDuration, civil::Date, tz::TimeZone};
use serde::Deserialize;

use super::{
    dnc::DncList,
    hours::{ALL_DAYS, Hours, Range, weekday},
};
use crate::{domain::Purpose, reload::Inputs};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    policies: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    tenant: String,
    time_zone: String,
    #[serde(default)]
    require_purpose: bool,
    #[serde(default)]
    do_not_call_files: Vec<PathBuf>,
    advertising: Option<PurposeEntry>,
    service: Option<PurposeEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurposeEntry {
    preset: Option<String>,
    hours: Option<Vec<String>>,
    days: Option<Vec<String>>,
    blackout_dates: Option<Vec<String>>,
    max_calls_per_number: Option<u32>,
    per: Option<String>,
}

/// The preset for Vietnam's Decree 91/2020/ND-CP art. 13 (advertising calls).
pub const VN_DECREE_91: &str = "vn-decree-91";

/// At most so many calls to one number per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Calls allowed in any window of length `per`.
    pub max: u32,
    /// The window.
    pub per: SignedDuration,
}

/// One purpose's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct PurposeRules {
    /// When calls may be dialled; `None` = any time.
    pub hours: Option<Hours>,
    /// The frequency cap; `None` = none.
    pub cap: Option<Cap>,
}

/// One tenant's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantPolicy {
    /// Whether CreateSession and CampaignSpec must say what the calls are for.
    pub require_purpose: bool,
    /// The do-not-call files' numbers (every purpose).
    pub dnc: DncList,
    /// Rules per purpose; a purpose not listed has none (only the do-not-call lists apply).
    pub purposes: HashMap<Purpose, PurposeRules>,
}

/// The whole file: every tenant's policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    /// By tenant name.
    pub tenants: HashMap<String, TenantPolicy>,
}

impl PolicySet {
    /// Reads and checks the file at `path` (and the do-not-call files it names).
    pub(crate) fn load(inputs: &mut Inputs, path: &std::path::Path) -> Result<Self, String> {
        let text = inputs.read(path).map_err(|e| format!("calling policy {}: {e}", path.display()))?;
        let doc: FileDoc = serde_norway::from_str(&text)
            .map_err(|e| format!("calling policy {}: {}", path.display(), one_line(&e.to_string())))?;
        let mut tenants = HashMap::new();
        for (i, entry) in doc.policies.into_iter().enumerate() {
            let name = entry.tenant.clone();
            let at = format!("calling policy {}: policies[{i}] ({name})", path.display());
            if tenants.contains_key(&name) {
                return Err(format!("{at}: the tenant is listed twice"));
            }
            let policy = tenant(inputs, entry).map_err(|e| format!("{at}.{e}"))?;
            tenants.insert(name, policy);
        }
        Ok(PolicySet { tenants })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn tenant(inputs: &mut Inputs, e: Entry) -> Result<TenantPolicy, String> {
    if e.tenant.is_empty() {
        return Err("tenant: must not be empty".to_owned());
    }
    let zone = TimeZone::get(&e.time_zone).map_err(|_| format!("time_zone: {:?} is not an IANA zone", e.time_zone))?;
    let started = std::time::Instant::now();
    let dnc = DncList::load(inputs, &e.do_not_call_files).map_err(|e| format!("do_not_call_files: {e}"))?;
    if !dnc.is_empty() {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(tenant = %e.tenant, numbers = dnc.len(), elapsed_ms, "do-not-call files loaded");
    }
    let mut purposes = HashMap::new();
    for (purpose, entry) in [(Purpose::Advertising, e.advertising), (Purpose::Service, e.service)] {
        if let Some(entry) = entry {
            let rules = rules(&zone, entry).map_err(|e| format!("{}.{e}", purpose.as_str()))?;
            purposes.insert(purpose, rules);
        }
    }
    Ok(TenantPolicy { require_purpose: e.require_purpose, dnc, purposes })
}

fn rules(zone: &TimeZone, mut e: PurposeEntry) -> Result<PurposeRules, String> {
    match e.preset.as_deref() {
        None => {}
        Some(VN_DECREE_91) => {
            // Art. 13: 08:00-17:00, at most one call per number per 24 hours per advertiser.
            e.hours.get_or_insert_with(|| vec!["08:00-17:00".to_owned()]);
            e.max_calls_per_number.get_or_insert(1);
            e.per.get_or_insert_with(|| "24h".to_owned());
        }
        Some(other) => return Err(format!("preset: {other:?} is not a known preset ({VN_DECREE_91})")),
    }
    let ranges = e.hours.map(|h| h.iter().map(|r| Range::parse(r)).collect::<Result<Vec<_>, _>>()).transpose()?;
    let days = e.days.map(|d| d.iter().map(|d| weekday(d)).collect::<Result<Vec<_>, _>>()).transpose()?;
    let blackout = e
        .blackout_dates
        .unwrap_or_default()
        .iter()
        .map(|d| d.parse::<Date>().map_err(|_| format!("blackout_dates: {d:?} is not a date (YYYY-MM-DD)")))
        .collect::<Result<Vec<_>, _>>()?;
    let hours = match (ranges, days) {
        (None, None) if blackout.is_empty() => None,
        (ranges, days) => {
            let ranges = ranges.unwrap_or_else(|| vec![Range { start_min: 0, end_min: 1440 }]);
            Some(Hours::new(zone.clone(), ranges, days.unwrap_or_else(|| ALL_DAYS.to_vec()), blackout)?)
        }
    };
    let cap = match (e.max_calls_per_number, e.per) {
        (None, None) => None,
        (Some(0), _) => return Err("max_calls_per_number: must be at least 1".to_owned()),
        (Some(max), Some(per)) => {
            let per: Duration =
                humantime::parse_duration(&per).map_err(|_| format!("per: {per:?} is not a duration (24h, 7d)"))?;
            let per = SignedDuration::try_from(per).map_err(|_| "per: too long".to_owned())?;
            if per.is_zero() {
                return Err("per: must be more than 0s".to_owned());
            }
            Some(Cap { max, per })
        }
        _ => return Err("max_calls_per_number and per: give both or neither".to_owned()),
    };
    Ok(PurposeRules { hours, cap })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<PolicySet, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, yaml.replace("DIR", dir.path().to_str().unwrap())).unwrap();
        std::fs::write(dir.path().join("dnc.txt"), "0912345678\n").unwrap();
        PolicySet::load(&mut Inputs::default(), &path).map_err(|e| e.replace(dir.path().to_str().unwrap(), "DIR"))
    }

    #[test]
    fn the_documented_example_file_loads() {
        let example = include_str!("../../docs/calling-policy.example.yaml");
        assert!(example.contains("/etc/callbot/dnc-registry.txt"));
        let set = load(&example.replace("/etc/callbot/dnc-registry.txt", "DIR/dnc.txt")).unwrap();
        let school = &set.tenants["school"];
        assert!(school.require_purpose);
        assert_eq!(
            school.purposes[&Purpose::Advertising].cap,
            Some(Cap { max: 1, per: SignedDuration::from_hours(24) })
        );
        assert_eq!(
            school.purposes[&Purpose::Service].cap,
            Some(Cap { max: 3, per: SignedDuration::from_hours(24 * 7) })
        );
    }

    #[test]
    fn the_example_loads_with_the_preset() {
        let set = load(
            "policies:\n  - tenant: school\n    time_zone: Asia/Ho_Chi_Minh\n    require_purpose: true\n    \
             do_not_call_files: [DIR/dnc.txt]\n    advertising:\n      preset: vn-decree-91\n      \
             blackout_dates: [2027-02-05]\n    service:\n      hours: [\"07:00-21:00\"]\n      days: [mon, sat]\n",
        )
        .unwrap();
        let school = &set.tenants["school"];
        assert!(school.require_purpose);
        assert_eq!(school.dnc.len(), 1);
        let ad = &school.purposes[&Purpose::Advertising];
        assert_eq!(ad.cap, Some(Cap { max: 1, per: SignedDuration::from_hours(24) }));
        let hours = ad.hours.as_ref().unwrap();
        assert_eq!(hours.ranges, [Range { start_min: 480, end_min: 1020 }]);
        assert_eq!(hours.days.len(), 7);
        assert_eq!(hours.blackout, [jiff::civil::date(2027, 2, 5)]);
        let service = &school.purposes[&Purpose::Service];
        assert_eq!(service.cap, None);
        assert_eq!(service.hours.as_ref().unwrap().days.len(), 2);
    }

    #[test]
    fn a_bad_entry_is_named_in_one_line() {
        let rows = [
            (
                "policies:\n  - tenant: a\n    time_zone: Mars/Olympus\n",
                "policies[0] (a).time_zone: \"Mars/Olympus\" is not an IANA zone",
            ),
            (
                "policies:\n  - tenant: a\n    time_zone: UTC\n    advertising: {preset: vn-decree-92}\n",
                "policies[0] (a).advertising.preset: \"vn-decree-92\" is not a known preset (vn-decree-91)",
            ),
            (
                "policies:\n  - tenant: a\n    time_zone: UTC\n  - tenant: b\n    time_zone: UTC\n    service: {hours: [\"17:00-08:00\"]}\n",
                "policies[1] (b).service.hours \"17:00-08:00\": the end must be after the start (a range ends by 24:00)",
            ),
            (
                "policies:\n  - tenant: a\n    time_zone: UTC\n    service: {max_calls_per_number: 2}\n",
                "policies[0] (a).service.max_calls_per_number and per: give both or neither",
            ),
            (
                "policies:\n  - tenant: a\n    time_zone: UTC\n    service: {blackout_dates: [2027-02-30]}\n",
                "policies[0] (a).service.blackout_dates: \"2027-02-30\" is not a date (YYYY-MM-DD)",
            ),
            (
                "policies:\n  - tenant: a\n    time_zone: UTC\n    do_not_call_files: [DIR/none.txt]\n",
                "policies[0] (a).do_not_call_files: do-not-call file DIR/none.txt: No such file or directory (os error 2)",
            ),
            (
                "policies:\n  - tenant: a\n    time_zone: UTC\n  - tenant: a\n    time_zone: UTC\n",
                "policies[1] (a): the tenant is listed twice",
            ),
        ];
        for (yaml, want) in rows {
            let err = load(yaml).unwrap_err();
            assert_eq!(err, format!("calling policy DIR/policy.yaml: {want}"), "{yaml}");
            assert!(!err.contains('\n'));
        }
        let err = load("policies:\n  - tenant: a\n    time_zone: UTC\n    hour: 1\n").unwrap_err();
        assert!(err.starts_with("calling policy DIR/policy.yaml: policies[0]: unknown field `hour`"), "{err}");
    }
}
