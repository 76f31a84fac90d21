//! The simulated clock: the time scale (simulated seconds per real second) and the epoch that stops the calls
//! in progress (bumped by `POST /_sim/reset` and the simulator's shutdown).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// The time scale and the epoch of the calls.
pub(crate) struct Clock {
    /// Simulated seconds per real second (`f64` bits).
    time_scale: AtomicU64,
    /// The calls and deliveries started under an older epoch stop at their next step.
    epoch: watch::Sender<u64>,
}

/// `scale` if it is a valid time scale (finite, > 0).
fn valid_scale(scale: f64) -> Option<f64> {
    (scale.is_finite() && scale > 0.0).then_some(scale)
}

impl Clock {
    /// A clock at `time_scale` (the default one when it is not finite and > 0).
    pub(crate) fn new(time_scale: f64) -> Self {
        let scale = valid_scale(time_scale).unwrap_or(super::DEFAULT_TIME_SCALE);
        Self { time_scale: AtomicU64::new(scale.to_bits()), epoch: watch::Sender::new(0) }
    }

    /// Simulated seconds per real second.
    pub(crate) fn time_scale(&self) -> f64 {
        f64::from_bits(self.time_scale.load(Ordering::Relaxed))
    }

    /// Change the time scale (for the waits that start afterwards); `Err` unless finite and > 0.
    pub(crate) fn set_time_scale(&self, scale: f64) -> Result<(), String> {
        let scale = valid_scale(scale).ok_or("time_scale must be a finite number > 0")?;
        self.time_scale.store(scale.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// The real duration of `sim_secs` simulated seconds at the current time scale (at most a year).
    pub(crate) fn real_duration(&self, sim_secs: f64) -> Duration {
        const YEAR: Duration = Duration::from_secs(365 * 86_400);
        Duration::try_from_secs_f64(sim_secs.max(0.0) / self.time_scale()).map_or(YEAR, |d| d.min(YEAR))
    }

    /// The current epoch (see [`Clock::stop_calls`]).
    pub(crate) fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    /// Sleep `sim_secs` simulated seconds; false (at once) if the epoch moves on from `epoch` meanwhile.
    pub(crate) async fn sleep_sim(&self, sim_secs: f64, epoch: u64) -> bool {
        let mut rx = self.epoch.subscribe();
        if *rx.borrow_and_update() != epoch {
            return false;
        }
        let wait = self.real_duration(sim_secs);
        tokio::select! {
            () = tokio::time::sleep(wait) => self.epoch() == epoch,
            _ = rx.wait_for(|e| *e != epoch) => false,
        }
    }

    /// Stop every session's calls and every delivery in progress.
    pub(crate) fn stop_calls(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }
}

/// `YYYY-MM-DD HH:MM:SS` of Unix seconds `secs`, in Vietnam's time (UTC+7, no daylight saving;
/// the provider's clock), through `jiff` (a crate the product uses too: the simulator shares no
/// product code, a crate is fine).
pub(crate) fn date_time_vn(secs: u64) -> String {
    let vietnam = jiff::tz::TimeZone::fixed(jiff::tz::offset(7));
    let at = jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX)).unwrap_or(jiff::Timestamp::MAX);
    at.to_zoned_datetime(vietnam).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnam_time() {
        assert_eq!(date_time_vn(0), "1970-01-01 07:00:00");
        assert_eq!(date_time_vn(1_709_164_800 - 7 * 3600), "2024-02-29 00:00:00");
        assert_eq!(date_time_vn(1_700_000_000), "2023-11-15 05:13:20");
    }
}
