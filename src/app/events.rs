//! The call-event part of assembly: the webhook receiver's listener and the base URL to register,
//! the event store (on disk in `--data-dir`, in memory, or NATS JetStream with `--events-nats-url`), the tenants' directory,
//! and the event store's health.

use std::{net::SocketAddr, sync::Arc};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic_health::ServingStatus;

use super::{AppError, EVENT_STORE_SERVICE_NAME, bind};
use crate::{
    config::MIN_WEBHOOK_SECRET_BYTES,
    config::{EventsStoreKind, Settings},
    events::{
        EventStore,
        disk::DiskStore,
        jetstream::{JetStreamStore, NatsConfig},
        memory::{Bounds, MemoryStore, system_clock},
    },
    metrics::Metrics,
    reload::{Reloader, Source, read_key},
    storage::DataDir,
    tenancy::{ConfiguredKey, Tenancy},
    upstream::ApiKey,
    webhook::directory::Directory,
};

/// What the events part gives the application.
pub(super) struct EventParts {
    pub(super) webhook: Option<tokio::net::TcpListener>,
    pub(super) webhook_base: Option<String>,
    pub(super) events: Arc<dyn EventStore>,
    pub(super) directory: Arc<Directory>,
    /// The data dir, when the disk store opened it (the calling policy keeps its counts there too).
    pub(super) data_dir: Option<Arc<DataDir>>,
}

/// Binds the receiver (when on), opens the store, builds the directory.
/// `rotated` is called when `--webhook-secret-file` changes (the registrations are checked again).
pub(super) async fn build(
    settings: &Settings,
    tenancy: Arc<Tenancy>,
    reloader: &mut Reloader,
    rotated: impl Fn() + Send + Sync + 'static,
) -> Result<EventParts, AppError> {
    let simulated = settings.upstream.url.is_none();
    let webhook = match (settings.events.webhook_listen, simulated) {
        (Some(addr), _) => Some(bind(addr).await?),
        (None, true) => Some(bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?),
        (None, false) => None,
    };
    let webhook_base = match (&settings.events.webhook_public_url, &webhook, simulated) {
        (Some(url), _, _) => Some(url.clone()),
        (None, Some(listener), true) => listener.local_addr().ok().map(|mut a| {
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{a}")
        }),
        _ => None,
    };
    let mut data_dir = None;
    let events: Arc<dyn EventStore> = match &settings.events.nats_url {
        Some(url) => {
            Arc::new(JetStreamStore::open(nats_config(url, &settings.events)).await.map_err(AppError::EventStore)?)
        }
        None => {
            let bounds = Bounds { retention: settings.events.retention, max_events: settings.events.max as usize };
            match settings.events.store {
                EventsStoreKind::Memory => Arc::new(MemoryStore::new(bounds, system_clock())),
                EventsStoreKind::Disk => {
                    let (store, dir) = open_disk(&settings.events.data_dir, bounds).await?;
                    data_dir = Some(dir);
                    Arc::new(store)
                }
            }
        }
    };
    let secret = webhook_secret(settings, reloader, rotated)?;
    let previous = settings.events.webhook_secret_previous.clone();
    let directory = Arc::new(Directory::new(secret, previous, tenancy));
    Ok(EventParts { webhook, webhook_base, events, directory, data_dir })
}

/// The disk event store in `--data-dir` (its lock taken, its events replayed); a data dir held
/// by another process or a store that cannot be read stops the start with one line naming it.
async fn open_disk(path: &std::path::Path, bounds: Bounds) -> Result<(DiskStore, Arc<DataDir>), AppError> {
    let started = std::time::Instant::now();
    let fail = |e: crate::storage::StorageError| AppError::EventStore(e.to_string());
    let dir = Arc::new(DataDir::open(path).map_err(fail)?);
    let (folder, disk_bytes) = (dir.path().display().to_string(), dir.disk_space());
    let store = DiskStore::open(dir.clone(), bounds, system_clock()).await.map_err(fail)?;
    let stats = store.stats();
    tracing::info!(
        data_dir = %folder,
        disk_bytes,
        events = stats.events,
        sessions = stats.sessions,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "event store opened"
    );
    Ok((store, dir))
}

/// The webhook secret: `--webhook-secret`, or `--webhook-secret-file` read now (a bad file stops
/// the start) and kept live (a bad new content keeps the last good one), or, without either (the
/// built-in simulator, or no receiver), a random one: tokens then need only be unguessable for
/// this process.
fn webhook_secret(
    settings: &Settings,
    reloader: &mut Reloader,
    rotated: impl Fn() + Send + Sync + 'static,
) -> Result<ConfiguredKey, AppError> {
    if let Some(secret) = &settings.events.webhook_secret {
        return Ok(ConfiguredKey::Fixed(secret.clone()));
    }
    let Some(path) = settings.events.webhook_secret_file.clone() else {
        let random = uuid::Builder::from_random_bytes(rand::random()).into_uuid().simple().to_string();
        return Ok(ConfiguredKey::Fixed(ApiKey::new(random)));
    };
    let source = Source::load("webhook_secret_file", move |inputs| {
        let secret = read_key(inputs, &path).map_err(|why| format!("--webhook-secret-file: {why}"))?;
        if secret.expose().len() < MIN_WEBHOOK_SECRET_BYTES {
            return Err(format!(
                "--webhook-secret-file {}: the secret has fewer than {MIN_WEBHOOK_SECRET_BYTES} bytes",
                path.display()
            ));
        }
        Ok(secret)
    })
    .map_err(AppError::Secrets)?
    .on_replace(move |old: &ApiKey, new: &ApiKey| {
        if old != new {
            tracing::info!("webhook secret rotated: registrations are checked again");
            rotated();
        }
    });
    let live = source.live();
    reloader.watch(Arc::new(source));
    Ok(ConfiguredKey::File(live))
}

pub(super) fn nats_config(url: &str, events: &crate::config::EventsSettings) -> NatsConfig {
    NatsConfig {
        url: url.trim().to_owned(),
        stream: events.stream.clone(),
        creds_file: events.nats_creds.clone(),
        user: events.nats_user.clone().zip(events.nats_password.as_ref().map(|p| p.expose().to_owned())),
        token: events.nats_token.as_ref().map(|t| t.expose().to_owned()),
        retention: events.retention,
        max_events: u64::from(events.max),
        replicas: usize::from(events.replicas),
        nkey_file: events.nats_nkey.clone(),
        ca_file: events.nats_ca.clone(),
        client_cert: events.nats_tls_cert.clone().zip(events.nats_tls_key.clone()),
    }
}

/// How often `callbot_event_store_{events,ids,sessions}` are read from the store.
const STORE_SIZE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the event store's health status, `callbot_event_store_up` and the store's size gauges
/// following the store (the size as the store sees it: on JetStream, the whole stream, whichever
/// replica stored its events).
/// Both tasks run among `tasks` and end on `shutdown`.
pub(super) fn follow_store_health(
    events: &Arc<dyn EventStore>,
    health: tonic_health::server::HealthReporter,
    metrics: Arc<Metrics>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let (store, gauges) = (Arc::downgrade(events), metrics.clone());
    tasks.spawn(shutdown.clone().run_until_cancelled_owned(async move {
        let mut every = tokio::time::interval(STORE_SIZE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(store) = store.upgrade() else { return };
            let s = store.stats();
            gauges.events().store_size(s.events, s.ids_remembered, s.sessions);
            gauges.events().store_fsyncs(s.fsyncs_total);
            gauges.events().store_compactions(s.compactions_total);
        }
    }));
    let Some(mut up) = events.health() else {
        metrics.events().store_up(true);
        return;
    };
    tasks.spawn(shutdown.clone().run_until_cancelled_owned(async move {
        loop {
            let now = *up.borrow_and_update();
            metrics.events().store_up(now);
            let status = if now { ServingStatus::Serving } else { ServingStatus::NotServing };
            health.set_service_status(EVENT_STORE_SERVICE_NAME, status).await;
            if up.changed().await.is_err() {
                return;
            }
        }
    }));
}
