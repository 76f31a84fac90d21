//! The admin listener: `/healthz` (the process is alive) and `/readyz` (serving and not
//! draining; 503 otherwise), for probes and load balancers that do not speak gRPC health.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::{net::TcpListener, sync::Notify};

/// Serves the admin endpoints until `stop` is notified.
pub async fn serve(listener: TcpListener, ready: Arc<AtomicBool>, stop: Arc<Notify>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(ready): State<Arc<AtomicBool>>| async move {
                if ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .with_state(ready);
    let result = axum::serve(listener, app).with_graceful_shutdown(async move { stop.notified().await }).await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin listener failed");
    }
}
