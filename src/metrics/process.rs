//! The standard `process_*` metrics of the Prometheus client libraries (CPU, memory, file
//! descriptors, start time), read from `/proc` at each scrape. Linux only: elsewhere none are
//! exported (an absent family, not a wrong value).
//!
//! Same sources and units as the Go client's `procfs`: `/proc/self/stat` for CPU ticks (at the
//! 100 Hz `USER_HZ` the kernel reports to user space on every architecture Linux runs on, as
//! procfs assumes too) and the start tick, `/proc/stat`'s `btime` for the boot time,
//! `/proc/self/status` for the memory sizes, `/proc/self/fd` and `/proc/self/limits` for the
//! descriptors. Read without `unsafe` (no `sysconf`): memory comes in kB from `status`.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// Ticks per second of the times in `/proc/self/stat`.
const USER_HZ: f64 = 100.0;

/// What one scrape read; `None` where the file could not be read or parsed.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Sample {
    pub(super) cpu_seconds: Option<f64>,
    pub(super) resident_bytes: Option<i64>,
    pub(super) virtual_bytes: Option<i64>,
    pub(super) open_fds: Option<i64>,
    pub(super) max_fds: Option<i64>,
    pub(super) start_time_seconds: Option<f64>,
}

impl Sample {
    /// Reads this process's figures.
    fn read() -> Self {
        let proc = |file: &str| std::fs::read_to_string(format!("/proc/{file}")).ok();
        let stat = proc("self/stat");
        let status = proc("self/status");
        let ticks = stat.as_deref().and_then(stat_ticks);
        let boot = proc("stat").as_deref().and_then(boot_time);
        Sample {
            cpu_seconds: ticks.map(|(utime, stime, _)| (utime + stime) as f64 / USER_HZ),
            resident_bytes: status.as_deref().and_then(|s| status_kb(s, "VmRSS:")).map(|kb| kb * 1024),
            virtual_bytes: status.as_deref().and_then(|s| status_kb(s, "VmSize:")).map(|kb| kb * 1024),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as i64),
            max_fds: proc("self/limits").as_deref().and_then(max_open_files),
            start_time_seconds: ticks.zip(boot).map(|((_, _, start), boot)| boot as f64 + start as f64 / USER_HZ),
        }
    }
}

/// `utime`, `stime` and `starttime` (fields 14, 15 and 22) of `/proc/self/stat`, read after
/// the command name's closing parenthesis (the name may hold spaces and parentheses).
fn stat_ticks(stat: &str) -> Option<(u64, u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)?, field(15)?, field(22)?))
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the Unix epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

/// A `Key:   1234 kB` line of `/proc/self/status`.
fn status_kb(status: &str, key: &str) -> Option<i64> {
    status.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<i64> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Encodes the process metrics at each scrape.
#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if !cfg!(target_os = "linux") {
            return Ok(());
        }
        let s = Sample::read();
        if let Some(v) = s.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<i64>); 4] = [
            ("process_resident_memory_bytes", "Resident memory size in bytes.", s.resident_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", s.virtual_bytes),
            ("process_open_fds", "Number of open file descriptors.", s.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors.", s.max_fds),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        if let Some(v) = s.start_time_seconds {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_field_by_field() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 75 0 0 20 0 9 0 123456 1000 200 18446744073709551615";
        assert_eq!(stat_ticks(stat), Some((250, 75, 123456)));
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
        let status = "Name:\tcallbot\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kb(status, "VmSize:"), Some(123456));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_every_figure() {
        let s = Sample::read();
        assert!(s.cpu_seconds.is_some_and(|v| v >= 0.0), "{s:?}");
        assert!(s.resident_bytes.is_some_and(|v| v > 0), "{s:?}");
        assert!(s.virtual_bytes.is_some_and(|v| v >= s.resident_bytes.unwrap_or_default()), "{s:?}");
        assert!(s.open_fds.is_some_and(|v| v >= 3), "{s:?}");
        assert!(s.max_fds.is_some_and(|v| v >= s.open_fds.unwrap_or_default()), "{s:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(s.start_time_seconds.is_some_and(|t| t > now - 86_400.0 * 365.0 && t <= now + 1.0), "{s:?}");
    }
}
