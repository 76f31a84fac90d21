//! Serving, and the drain: the order in which a stopping facade lets go, written once.
//!
//! When the stop future resolves (SIGTERM or SIGINT in the binary):
//! 1. **health NOT_SERVING**: `/readyz` answers 503 and every `grpc.health.v1` service says
//!    NOT_SERVING, so load balancers and meshes stop sending new calls;
//! 2. **the one signal**: the shutdown token is cancelled. The gRPC server stops accepting
//!    connections and calls; every `WatchCallEvents` stream ends with `UNAVAILABLE`/`SHUTTING_DOWN`
//!    and its last cursor (so the drain is not held up and the watcher resumes elsewhere); the
//!    webhook receiver stops accepting and finishes the deliveries it has; the reloader, the
//!    webhook registrations still retrying and the store-health follower stop;
//! 3. **in-flight calls finish**: the server ends when the calls that started before the signal
//!    have, within `--shutdown-grace`; after it they are abandoned (logged);
//! 4. **background tasks and stores**: the tracker is closed and waited for (what is left of the
//!    grace, at least [`TASKS_MIN`]): a delivery answered `204` was stored before its answer (the
//!    embedded store in memory, JetStream after its PubAck), so nothing acknowledged is pending;
//! 5. **logs**: the caller (`main`) flushes the log writer and the span exporter once
//!    `run_until_stopped` returns; the built-in simulator and the admin listener stop with it.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic_health::{ServingStatus, server::HealthReporter};

use super::{AppError, EVENT_STORE_SERVICE_NAME, SERVICE_NAME};

/// The least time given to the background tasks after the calls (a receiver finishing a
/// delivery), even when the calls took the whole grace.
const TASKS_MIN: Duration = Duration::from_secs(1);

/// What serving and the drain need.
pub(super) struct Serving {
    pub(super) health: HealthReporter,
    pub(super) ready: Arc<AtomicBool>,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
    pub(super) grace: Duration,
}

impl Serving {
    /// Says it serves, serves until `stop` resolves (or the server fails), then drains.
    pub(super) async fn serve(
        self,
        server: impl Future<Output = Result<(), tonic::transport::Error>>,
        (grpc, admin): (SocketAddr, SocketAddr),
        stop: impl Future<Output = ()>,
    ) -> Result<(), AppError> {
        self.set_health(ServingStatus::Serving).await;
        self.ready.store(true, Ordering::SeqCst);
        tracing::info!(grpc = %grpc, admin = %admin, "serving");
        let mut server = std::pin::pin!(server);
        let result = tokio::select! {
            result = &mut server => {
                // The server failed on its own: stop everything else too.
                self.shutdown.cancel();
                result.map_err(AppError::Serve)
            }
            () = stop => self.drain(server).await,
        };
        self.tasks.close();
        if tokio::time::timeout(TASKS_MIN, self.tasks.wait()).await.is_err() {
            tracing::warn!(tasks = self.tasks.len(), "background tasks still running at exit");
        }
        tracing::info!("stopped");
        result
    }

    /// The drain, in the order of the module doc.
    async fn drain(
        &self,
        server: std::pin::Pin<&mut impl Future<Output = Result<(), tonic::transport::Error>>>,
    ) -> Result<(), AppError> {
        let deadline = Instant::now() + self.grace;
        tracing::info!(grace_s = self.grace.as_secs_f64(), "shutdown requested: draining");
        // 1. Health.
        self.ready.store(false, Ordering::SeqCst);
        self.set_health(ServingStatus::NotServing).await;
        // 2. The one signal.
        self.shutdown.cancel();
        // 3. In-flight calls.
        let result = match tokio::time::timeout_at(deadline, server).await {
            Ok(result) => result.map_err(AppError::Serve),
            Err(_) => {
                tracing::warn!("grace period over: abandoning the calls still in flight");
                Ok(())
            }
        };
        // 4. Background tasks (the receiver's last deliveries among them).
        self.tasks.close();
        let left = deadline.saturating_duration_since(Instant::now()).max(TASKS_MIN);
        if tokio::time::timeout(left, self.tasks.wait()).await.is_err() {
            tracing::warn!(tasks = self.tasks.len(), "grace period over: abandoning background tasks");
        }
        result
    }

    async fn set_health(&self, status: ServingStatus) {
        for service in ["", SERVICE_NAME, EVENT_STORE_SERVICE_NAME] {
            self.health.set_service_status(service, status).await;
        }
    }
}
