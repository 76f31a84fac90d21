//! The calling policy's part of the assembly: the policy file (kept live by the reloader), the
//! store of its counts and added numbers, and its clock.
//!
//! The store: a JetStream key-value bucket with `--events-nats-url` (many replicas); else, with the
//! disk event store, its own partitions in the data dir's database (one replica, survives restarts;
//! one engine, one lock); else (`--events-store memory`) memory.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::AppError;
use crate::{
    config::Settings,
    policy::{Clock, Counts, MemoryCounts, Policy, PolicySet, StartedClock, SystemClock, fjall::FjallCounts},
    reload::{Reloader, Source},
    storage::DataDir,
};

/// Builds the policy: a bad file (or do-not-call file) refuses to start with one line.
pub(super) async fn build(
    settings: &Settings,
    data_dir: Option<&DataDir>,
    reloader: &mut Reloader,
    shutdown: &CancellationToken,
) -> Result<Policy, AppError> {
    let set = match &settings.policy.calling_policy {
        Some(path) => {
            let path = path.clone();
            let source = Source::load("calling_policy", move |inputs| PolicySet::load(inputs, &path))
                .map_err(AppError::Secrets)?;
            let live = source.live();
            reloader.watch(Arc::new(source));
            Some(live)
        }
        None => None,
    };
    let counts: Arc<dyn Counts> = match (&settings.events.nats_url, data_dir) {
        (Some(url), _) => {
            let config = super::events::nats_config(url, &settings.events);
            let client = crate::events::jetstream::connect(&config).await.map_err(AppError::EventStore)?;
            let counts = crate::policy::jetstream::JetStreamCounts::open(client, config.replicas, shutdown.clone())
                .await
                .map_err(AppError::EventStore)?;
            Arc::new(counts)
        }
        (None, Some(dir)) => {
            let path = dir.store_path().display().to_string();
            Arc::new(
                FjallCounts::open(dir.keyspace())
                    .map_err(|e| AppError::Secrets(format!("--data-dir {path}: the calling policy's counts: {e}")))?,
            )
        }
        (None, None) => Arc::new(MemoryCounts::default()),
    };
    let clock: Arc<dyn Clock> = match &settings.policy.clock_start {
        Some(start) => {
            let start = start
                .parse()
                .map_err(|_| AppError::Secrets("--policy-clock-start: not an RFC 3339 instant".to_owned()))?;
            tracing::warn!("the calling policy runs on a test clock (--policy-clock-start)");
            Arc::new(StartedClock::new(start))
        }
        None => Arc::new(SystemClock),
    };
    Ok(Policy::new(set, counts, clock))
}
