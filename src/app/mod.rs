//! Assembly: [`Application::build`] reads the secret files, binds every listener (port 0 in
//! tests) and constructs every component (the built-in simulator when no upstream is configured,
//! tenancy, the event store, the webhook receiver and registrar, the service, its layers,
//! reflection, health, admin, the reloader); [`Application::run_until_stopped`] only serves, until
//! a shutdown future resolves, then drains (`drain.rs`: the order, written once).
//!
//! One shutdown signal reaches everything that runs in the background: a [`CancellationToken`],
//! and a [`TaskTracker`] that holds every background task, so the drain can wait for them.
//!
//! - `events.rs`: the call-event part (receiver listener, event store, store health);
//! - `grpc.rs`: TLS, reflection and the gRPC router with its layers;
//! - `policy.rs`: the calling policy (its file, its store, its clock);
//! - `drain.rs`: the drain order.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    catalog::ScriptCatalog,
    config::{CallerAuth, Settings},
    console::{Console, Logins},
    events::EventStore,
    events::{
        memory::system_clock,
        reconcile::{HistoryBudget, Reconciler, Timing},
    },
    metrics::Metrics,
    middleware::RpcLayer,
    reload::Reloader,
    service::{CallBotApi, EventWiring},
    simulator,
    tenancy::{DEFAULT_TENANT, SecretSources, Tenancy},
    upstream::UpstreamClient,
    webhook::{Receiver, directory::Directory, registrar::Registrar, resolver::Resolver},
};

mod drain;
mod events;
mod grpc;
mod policy;
use events::EventParts;
use grpc::GrpcRouter;

/// The gRPC service name health reports on.
pub const SERVICE_NAME: &str = "callbot.v1.CallBotService";

/// The health service name of the call-event store: SERVING while it can take and give events
/// (always for the embedded store; following the NATS connection for JetStream).
pub const EVENT_STORE_SERVICE_NAME: &str = "callbot.v1.EventStore";

/// Largest request header block (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`: metadata, path and
/// pseudo-headers, uncompressed) a caller may send. Above hyper's 16 KiB default because callers
/// carry trace context and bearer tokens; a larger block is refused by HTTP/2 (the stream gets
/// 431 and never reaches the layers or a handler). The upstream's answers are bounded by the
/// HTTP client's defaults instead: see `upstream::UpstreamClient::new`.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// Why the application could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(String),
    /// TLS files unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The descriptor sets for reflection do not load (a build problem).
    #[error("server reflection: {0}")]
    Reflection(String),
    /// A secret file (`--api-key-file`, `--caller-tokens-file`, `--tenants-file` and the key
    /// files it names) unusable at start: one line naming the file and the entry.
    #[error("{0}")]
    Secrets(String),
    /// The event store (NATS JetStream) unusable at start: one line saying why.
    #[error("event store: {0}")]
    EventStore(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A built application: every listener bound, every component constructed, nothing served yet.
pub struct Application {
    settings: Settings,
    upstream_url: String,
    upstream: Arc<UpstreamClient>,
    /// This application's metrics registry (per application, so tests in one process stay apart).
    metrics: Arc<Metrics>,
    /// Tenants and their webhook tokens.
    directory: Arc<Directory>,
    /// The gRPC listener and what it serves: health, reflection and `CallBotService` behind the
    /// layers.
    grpc: TcpListener,
    router: GrpcRouter,
    /// Health of the service and of the event store (`grpc.health.v1`).
    health: tonic_health::server::HealthReporter,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`) and what `/readyz` says.
    admin: TcpListener,
    ready: Arc<AtomicBool>,
    /// The built-in simulator's listener, when no upstream URL is configured.
    simulator: Option<TcpListener>,
    /// The webhook receiver's listener and the receiver, when on.
    webhook: Option<(TcpListener, Arc<Receiver>)>,
    /// Registers the receiver's URL per tenant, with a public URL.
    registrar: Option<Arc<Registrar>>,
    /// Re-reads the secret files while serving (nothing to do without any).
    reloader: Reloader,
    /// The call-event store.
    events: Arc<dyn EventStore>,
    /// Fetches what the webhooks missed and ends what never ends (with the receiver on).
    reconciler: Option<Reconciler>,
    /// The console's pages, served on the admin listener.
    console: Arc<Console>,
    /// The one shutdown signal: cancelled when the drain begins.
    shutdown: CancellationToken,
    /// Every background task, so the drain can wait for them.
    tasks: TaskTracker,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr).await.map_err(|source| AppError::Bind { addr, source })
}

impl Application {
    /// Reads the files, binds every listener and constructs every component.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        if settings.security.caller_auth == Some(CallerAuth::Mesh) {
            tracing::warn!(
                "callers are taken on the mesh's word (--caller-auth mesh): this facade authenticates no caller; \
                 whoever reaches its gRPC port can place calls"
            );
        }
        // Files first: a bad one stops the start before anything is bound or logged.
        let secrets = SecretSources::load(&settings).map_err(AppError::Secrets)?;
        let tls = grpc::server_tls(&settings.security.tls, settings.events.webhook_header_timeout)?;
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        let (simulator, upstream_url) = match &settings.upstream.url {
            Some(url) => (None, url.clone()),
            None => {
                let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
                let addr =
                    listener.local_addr().map_err(|source| AppError::Bind { addr: settings.server.listen, source })?;
                // Said first, before the simulator's own task can log anything (README, "Configuration").
                let url = format!("http://{addr}");
                tracing::info!(
                    simulator = %url,
                    "no upstream URL configured (--upstream-url / CALLBOT_UPSTREAM_URL): using the built-in callBot simulator at {url}"
                );
                (Some(listener), url)
            }
        };
        let metrics = Arc::new(Metrics::new());
        let upstream = Arc::new(
            UpstreamClient::new(&upstream_url, &settings.upstream, metrics.clone())
                .map_err(|e| AppError::Client(e.to_string()))?,
        );
        let catalog = Arc::new(ScriptCatalog::new(settings.service.script_cache_ttl, metrics.clone()));
        // A reload that retires keys drops their cached token and scripts at once.
        let forget = {
            let (upstream, catalog) = (upstream.clone(), catalog.clone());
            move |retired: &crate::domain::ApiKey| {
                upstream.forget_key(retired);
                catalog.forget(retired);
            }
        };
        let (api_key, callers, mut reloader, revisions) = secrets.watch(&settings, &metrics, forget);
        let tenancy = Arc::new(Tenancy::new(callers, api_key, settings.service.allow_caller_api_key, revisions));
        // A caller's own key is remembered once the provider accepted it (issued a token).
        let accepting = tenancy.clone();
        upstream.on_key_accepted(move |key| accepting.accepted(key));
        let grpc = bind(settings.server.listen).await?;
        let admin = bind(settings.server.admin_listen).await?;
        // A rotated webhook secret changes every URL: the registrar (built below) checks them again.
        let registrar_slot: Arc<std::sync::OnceLock<Arc<Registrar>>> = Arc::default();
        let rotated = {
            let slot = registrar_slot.clone();
            let tenancy = tenancy.clone();
            move || {
                if let Some(registrar) = slot.get() {
                    registrar.recheck(tenancy.known_tenants());
                }
            }
        };
        let EventParts { webhook, webhook_base, events, directory, data_dir } =
            events::build(&settings, tenancy.clone(), &mut reloader, rotated).await?;

        let registrar = webhook_base.map(|base| {
            let registrar = Registrar::new(
                base,
                upstream.clone(),
                directory.clone(),
                metrics.clone(),
                tasks.clone(),
                shutdown.clone(),
            );
            // A caller-key tenant's first call registers its webhook (a reaction of tenancy).
            let on_new = registrar.clone();
            tenancy.on_new_tenant(move |tenant| on_new.ensure(tenant));
            let _ = registrar_slot.set(registrar.clone());
            registrar
        });
        let record_sessions = webhook.is_some();
        // One call-history budget per tenant for the attribution look-ups and reconciliation.
        let budget = HistoryBudget::new(settings.events.history_budget);
        // Reconciliation works on the sessions recorded here: only with the receiver on.
        let reconciler = record_sessions.then(|| {
            let keys = directory.clone();
            Reconciler::new(
                events.clone(),
                upstream.clone(),
                Arc::new(move |tenant: &str| keys.key_of(tenant)),
                budget.clone(),
                metrics.clone(),
                Timing { after: settings.events.reconcile_after, give_up_after: settings.events.call_give_up_after },
                system_clock(),
            )
        });
        let webhook = webhook.map(|listener| {
            let receiver = Arc::new(Receiver {
                directory: directory.clone(),
                store: events.clone(),
                resolver: Resolver::start(upstream.clone(), metrics.clone(), budget.clone(), &tasks),
                metrics: metrics.clone(),
                body_timeout: settings.events.webhook_body_timeout,
            });
            (listener, receiver)
        });
        let wiring = EventWiring { store: events.clone(), shutdown: shutdown.clone(), record_sessions };
        let policy = policy::build(&settings, data_dir.as_deref(), &mut reloader, &shutdown).await?;
        for tenant in tenancy.initial_tenants() {
            metrics.policy().tenant_series(&tenant);
        }
        let api = CallBotApi::new(upstream.clone(), catalog, &settings, wiring, metrics.clone(), policy);
        // The console calls the same handlers, as the tenant its viewer's token resolves to.
        let console = Arc::new(Console {
            api: api.clone(),
            tenancy: tenancy.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
            upstream_timeout: settings.upstream.timeout,
            show_phones: settings.server.console_show_phones,
            logins: Logins::default(),
            shutdown: shutdown.clone(),
            deliveries: std::sync::Mutex::new(None),
        });
        let max_concurrency = settings.server.max_concurrency as usize;
        let layer = RpcLayer::new(max_concurrency, tenancy, settings.upstream.timeout, metrics.clone());
        let (health, health_service) = tonic_health::server::health_reporter();
        let router = grpc::router(&settings, tls, layer, health_service, api)?;
        Ok(Application {
            settings,
            upstream_url,
            upstream,
            metrics,
            directory,
            grpc,
            router,
            health,
            admin,
            ready: Arc::new(AtomicBool::new(false)),
            simulator,
            webhook,
            registrar,
            reloader,
            events,
            reconciler,
            console,
            shutdown,
            tasks,
        })
    }

    /// The bound webhook receiver address, when on.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The receiver URL the provider is to post the configured tenant's calls to (its path holds
    /// the tenant's secret token), when the receiver is on.
    pub fn webhook_url(&self) -> Option<String> {
        self.webhook_url_of(DEFAULT_TENANT)
    }

    /// The receiver URL of a tenant of the tenants file, when the receiver is on.
    pub fn webhook_url_of(&self, tenant: &str) -> Option<String> {
        let addr = self.webhook_addr()?;
        Some(format!("http://{addr}/webhooks/callbot/{}", self.directory.token(tenant)))
    }

    /// The bound gRPC address (the real port when 0 was asked).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.settings.server.listen)
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.settings.server.admin_listen)
    }

    /// Where REST calls go (the simulator's loopback URL when embedded).
    pub fn upstream_url(&self) -> &str {
        &self.upstream_url
    }

    /// The upstream client (its counters are useful to tests and metrics).
    pub fn upstream(&self) -> &Arc<UpstreamClient> {
        &self.upstream
    }

    /// The metrics registry `/metrics` renders.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves until `stop` resolves, then drains (`drain.rs`). The built-in simulator and the
    /// admin endpoints serve until the drain is over: the calls still in flight talk to the
    /// simulator, and probes read `/readyz` (503 once draining) until the end.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()> + Send + 'static) -> Result<(), AppError> {
        let addrs = (self.grpc_addr(), self.admin_addr());
        let Application {
            settings,
            metrics,
            directory,
            grpc,
            router,
            health,
            admin,
            ready,
            simulator,
            webhook,
            registrar,
            reloader,
            events,
            reconciler,
            console,
            shutdown,
            tasks,
            ..
        } = self;
        let simulator = async move {
            if let Some(listener) = simulator {
                let config = simulator::SimConfig::default();
                if let Err(e) = simulator::run(listener, config, std::future::pending()).await {
                    tracing::error!(error = %e, "built-in simulator stopped");
                }
            }
        };
        let header_timeout = settings.events.webhook_header_timeout;
        let limits = crate::http_listener::Limits {
            header_timeout,
            max_connections: crate::admin::MAX_CONNECTIONS,
            open: metrics.listeners().connections("admin"),
        };
        let console = crate::console::routes(console);
        let admin = crate::admin::serve(admin, ready.clone(), metrics.clone(), limits, console, std::future::pending());
        let webhook_limits = crate::http_listener::Limits {
            header_timeout,
            max_connections: settings.events.webhook_max_connections as usize,
            open: metrics.listeners().connections("webhook"),
        };
        let served = async move {
            // The background tasks, each ending on the one signal.
            if let Some((listener, receiver)) = webhook {
                let stop = shutdown.clone().cancelled_owned();
                tasks.spawn(crate::webhook::serve(listener, receiver, webhook_limits, stop));
            }
            if !reloader.is_empty() {
                tasks.spawn(reloader.run(shutdown.clone().cancelled_owned()));
            }
            if let Some(reconciler) = reconciler {
                tasks.spawn(reconciler.run(shutdown.clone()));
            }
            if let Some(registrar) = &registrar {
                for tenant in directory.initial_tenants() {
                    registrar.ensure(tenant);
                }
            }
            events::follow_store_health(&events, health.clone(), metrics, &tasks, &shutdown);
            let server = grpc::serve(router, grpc, header_timeout, shutdown.clone().cancelled_owned());
            let grace = settings.server.shutdown_grace;
            drain::Serving { health, ready, shutdown, tasks, grace }.serve(server, addrs, stop).await
        };
        tokio::select! {
            result = served => result,
            // The simulator and admin end only on an error of their own (logged): serving goes on.
            () = async {
                tokio::join!(simulator, admin);
                std::future::pending::<()>().await
            } => Ok(()),
        }
    }
}
