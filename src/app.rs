//! Assembly: bind the listeners (port 0 in tests), start the built-in simulator when no upstream
//! is configured, put the services and layers together, and serve until a shutdown future
//! resolves, then drain within the grace period. The secret files (key file, caller tokens,
//! tenants file) are read here first, and re-read while serving (`reload.rs`).

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::{
    catalog::ScriptCatalog,
    config::Settings,
    events::EventStore,
    metrics::Metrics,
    middleware::{Callers, RpcLayer},
    pb::{self, call_bot_service_server::CallBotServiceServer},
    reload::Reloader,
    service::{CallBotApi, EventWiring},
    simulator,
    tenants::ConfiguredKey,
    upstream::UpstreamClient,
    webhook::{
        Receiver,
        directory::{DEFAULT_TENANT, Directory},
        registrar::Registrar,
        resolver::Resolver,
    },
};

#[path = "app_events.rs"]
mod events_wiring;
#[path = "app_secrets.rs"]
mod secrets;
use events_wiring::{EventParts, follow_store_health};
use secrets::SecretSources;

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
    /// Caller tokens file unusable.
    #[error(transparent)]
    CallerTokens(#[from] crate::middleware::CallerTokensError),
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

/// A built application: listeners bound, simulator (if any) running, not serving yet.
pub struct Application {
    settings: Settings,
    grpc: TcpListener,
    admin: TcpListener,
    upstream_url: String,
    upstream: Arc<UpstreamClient>,
    /// This application's metrics registry (per application, so tests in one process stay apart).
    metrics: Arc<Metrics>,
    /// The per-tenant script cache (built here so that a reload can drop a retired key's entry).
    catalog: Arc<ScriptCatalog>,
    /// The configured key, fixed or from `--api-key-file`.
    api_key: ConfiguredKey,
    /// Who may call, and as which tenant.
    callers: Callers,
    /// Re-reads the secret files while serving (nothing to do without any).
    reloader: Reloader,
    tls: Option<ServerTlsConfig>,
    /// Stops the embedded simulator when the application ends.
    simulator_stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The webhook receiver's listener, when on.
    webhook: Option<TcpListener>,
    /// The base URL registered with the provider, when any.
    webhook_base: Option<String>,
    /// The call-event store.
    events: Arc<dyn EventStore>,
    /// Tenants and their webhook tokens.
    directory: Arc<Directory>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr).await.map_err(|source| AppError::Bind { addr, source })
}

/// Reads the TLS files and checks that they make a usable server configuration now, at start-up,
/// so that a missing, unreadable or garbage file stops the process with one line saying which
/// (rather than surfacing later as an opaque transport error).
fn server_tls(files: &crate::config::TlsFiles) -> Result<Option<ServerTlsConfig>, AppError> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Ok(None);
    };
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| AppError::Tls(format!("cannot read the {what} {}: {e}", p.display())))
    };
    let (cert, key) = (read("certificate", cert)?, read("private key", key)?);
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &files.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
    }
    // tonic parses the PEM files only when the server is built: do it once here, for the error.
    Server::builder().tls_config(config.clone()).map_err(|e| {
        let cause = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_else(|| e.to_string());
        AppError::Tls(format!("unusable certificate, key or client CA ({cause})"))
    })?;
    Ok(Some(config))
}

impl Application {
    /// Binds everything and starts the built-in simulator when no upstream URL is set.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        // Files first: a bad one stops the start before anything is bound or logged.
        let secrets = SecretSources::load(&settings)?;
        let tls = server_tls(&settings.security.tls)?;
        let mut simulator_stop = None;
        let upstream_url = match &settings.upstream.url {
            Some(url) => url.clone(),
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
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                tokio::spawn(async move {
                    let stop = async {
                        let _ = rx.await;
                    };
                    if let Err(e) = simulator::run(listener, simulator::SimConfig::default(), stop).await {
                        tracing::error!(error = %e, "built-in simulator stopped");
                    }
                });
                simulator_stop = Some(tx);
                url
            }
        };
        let metrics = Arc::new(Metrics::new());
        let upstream = Arc::new(
            UpstreamClient::new(&upstream_url, &settings.upstream, metrics.clone())
                .map_err(|e| AppError::Client(e.to_string()))?,
        );
        let catalog = Arc::new(ScriptCatalog::new(settings.service.script_cache_ttl, metrics.clone()));
        let (api_key, callers, reloader) = secrets.watch(&settings, &upstream, &catalog, &metrics);
        let grpc = bind(settings.server.listen).await?;
        let admin = bind(settings.server.admin_listen).await?;
        let EventParts { webhook, webhook_base, events, directory } =
            events_wiring::build(&settings, &callers, &api_key).await?;
        Ok(Application {
            settings,
            grpc,
            admin,
            upstream_url,
            upstream,
            metrics,
            catalog,
            api_key,
            callers,
            reloader,
            tls,
            simulator_stop,
            webhook,
            webhook_base,
            events,
            directory,
        })
    }

    /// The bound webhook receiver address, when on.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook.as_ref().and_then(|l| l.local_addr().ok())
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

    /// Serves until `shutdown` resolves; then health flips to NOT_SERVING, new calls are refused,
    /// and in-flight calls get `--shutdown-grace` to finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), AppError> {
        let (grpc_addr, admin_addr) = (self.grpc_addr(), self.admin_addr());
        let Application {
            settings,
            grpc,
            admin,
            upstream,
            metrics,
            catalog,
            api_key,
            callers,
            reloader,
            tls,
            simulator_stop,
            webhook,
            webhook_base,
            events,
            directory,
            ..
        } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        // Reflection serves our contract, health, and the google.rpc error details (so grpcurl
        // decodes them); v1 for current tools, v1alpha for grpcurl 1.8.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(|e| AppError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| AppError::Reflection(e.to_string()))?;

        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let registrar =
            webhook_base.map(|base| Registrar::new(base, upstream.clone(), directory.clone(), metrics.clone()));
        let record_sessions = webhook.is_some();
        let webhook_task = webhook.map(|listener| {
            let receiver = Arc::new(Receiver {
                directory: directory.clone(),
                store: events.clone(),
                resolver: Resolver::start(upstream.clone(), metrics.clone()),
                metrics: metrics.clone(),
            });
            let mut stop = shutdown_rx.clone();
            tokio::spawn(crate::webhook::serve(listener, receiver, async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        });
        if let Some(registrar) = &registrar {
            for tenant in directory.initial_tenants() {
                registrar.ensure(tenant);
            }
        }
        let (store_for_health, metrics_for_health) = (events.clone(), metrics.clone());
        let wiring = EventWiring { store: events, directory, registrar, shutdown: shutdown_rx, record_sessions };
        let api = CallBotApi::new(upstream, catalog, api_key, &settings, wiring, metrics.clone());
        let callbot = CallBotServiceServer::new(api)
            .max_decoding_message_size(settings.server.max_message_bytes as usize)
            .max_encoding_message_size(16 * 1024 * 1024);

        let ready = Arc::new(AtomicBool::new(false));
        let admin_stop = Arc::new(tokio::sync::Notify::new());
        let admin_task = tokio::spawn(crate::admin::serve(admin, ready.clone(), metrics.clone(), admin_stop.clone()));
        let reload_stop = Arc::new(tokio::sync::Notify::new());
        let reload_task = (!reloader.is_empty()).then(|| {
            let stop = reload_stop.clone();
            tokio::spawn(reloader.run(async move { stop.notified().await }))
        });

        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(AppError::Serve)?;
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = builder
            .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
            .layer(RpcLayer::new(settings.server.max_concurrency as usize, callers, metrics))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(callbot)
            .serve_with_incoming_shutdown(TcpIncoming::from(grpc).with_nodelay(Some(true)), async {
                let _ = stop_rx.await;
            });
        let mut server = std::pin::pin!(server);

        health.set_service_status("", ServingStatus::Serving).await;
        health.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;
        health.set_service_status(EVENT_STORE_SERVICE_NAME, ServingStatus::Serving).await;
        follow_store_health(&store_for_health, health.clone(), metrics_for_health);
        ready.store(true, Ordering::SeqCst);
        tracing::info!(grpc = %grpc_addr, admin = %admin_addr, "serving");

        let result = tokio::select! {
            result = &mut server => result.map_err(AppError::Serve),
            () = shutdown => {
                let grace = settings.server.shutdown_grace;
                tracing::info!(grace_s = grace.as_secs_f64(), "shutdown requested: draining");
                ready.store(false, Ordering::SeqCst);
                health.set_service_status("", ServingStatus::NotServing).await;
                health.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
                health.set_service_status(EVENT_STORE_SERVICE_NAME, ServingStatus::NotServing).await;
                // Watch streams end now (with their last cursor), so the drain is not held up.
                let _ = shutdown_tx.send(true);
                let _ = stop_tx.send(());
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(result) => result.map_err(AppError::Serve),
                    Err(_) => {
                        tracing::warn!("grace period over: abandoning the calls still in flight");
                        Ok(())
                    }
                }
            }
        };
        admin_stop.notify_one();
        reload_stop.notify_one();
        let _ = shutdown_tx.send(true);
        if let Some(task) = webhook_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Some(task) = reload_task {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
        if let Some(stop) = simulator_stop {
            let _ = stop.send(());
        }
        tracing::info!("stopped");
        result
    }
}
