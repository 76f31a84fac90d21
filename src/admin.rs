//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (serving and not draining; 503 otherwise), for scrapers, probes and load balancers
//! that do not speak gRPC health; and the console's pages (`crate::console`, at `/console/`). It stays up during the drain, so the last scrapes still see
//! the in-flight calls finish.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;

use crate::metrics::{self, Metrics};

/// What the admin endpoints read.
#[derive(Clone)]
struct Admin {
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

/// Connections the admin listener serves at once (probes and scrapers: a handful).
pub(crate) const MAX_CONNECTIONS: usize = 256;

/// Serves the admin endpoints within `limits` (the receiver's header timeout; `crate::http_listener`)
/// until `stop` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    limits: crate::http_listener::Limits,
    console: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(admin): State<Admin>| async move {
                if admin.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(admin): State<Admin>| async move {
                ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], admin.metrics.render()).into_response()
            }),
        )
        .with_state(Admin { ready, metrics })
        .merge(console);
    crate::http_listener::serve("admin", listener, app, limits, stop).await;
}
