//! Makes sure the provider posts each served tenant's calls to this receiver: with a public URL
//! (`--webhook-public-url`, or the loopback receiver with the built-in simulator), at start for
//! the tenants known then, and for a caller-key tenant on its first RPC. The tenant's webhooks
//! are listed first and ours registered only when missing; one check per tenant per process, so
//! never a second registration for the same URL. Failures are logged and retried with backoff,
//! never fatal.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::directory::Directory;
use crate::{
    events::TenantId,
    metrics::Metrics,
    upstream::{CallContext, UpstreamClient},
};

/// First wait after a failed check; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between checks.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Checks of one tenant before giving up (about 8.5 minutes of backoff): a key the provider
/// keeps refusing, or an endpoint that stays down, does not keep a task retrying for ever.
const MAX_CHECKS: u32 = 10;
/// Bound of one list or register exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Registers the receiver's URL per tenant.
pub(crate) struct Registrar {
    base: String,
    upstream: Arc<UpstreamClient>,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
    started: Mutex<HashSet<TenantId>>,
    /// The application's background tasks: the checks run among them.
    tasks: TaskTracker,
    /// The application's shutdown signal: a check still retrying gives up.
    shutdown: CancellationToken,
}

impl Registrar {
    /// A registrar of `<base>/webhooks/callbot/<token>`.
    pub(crate) fn new(
        base: String,
        upstream: Arc<UpstreamClient>,
        directory: Arc<Directory>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let started = Mutex::new(HashSet::new());
        Arc::new(Registrar { base, upstream, directory, metrics, started, tasks, shutdown })
    }

    /// The URL the provider is to post `tenant`'s calls to (secret: never logged).
    fn url(&self, tenant: &str) -> String {
        format!("{}/webhooks/callbot/{}", self.base, self.directory.token(tenant))
    }

    /// Starts the check of `tenant` unless one was started already.
    pub(crate) fn ensure(self: &Arc<Self>, tenant: TenantId) {
        let first = self.started.lock().map(|mut s| s.insert(tenant.clone())).unwrap_or(false);
        if first {
            let me = self.clone();
            let stop = self.shutdown.clone();
            self.tasks.spawn(async move {
                tokio::select! {
                    () = me.check_until_done(tenant) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    }

    /// Checks `tenants` again, whether or not they were checked before (after a rotation of the
    /// webhook secret, their URLs changed).
    pub(crate) fn recheck(self: &Arc<Self>, tenants: Vec<TenantId>) {
        if let Ok(mut started) = self.started.lock() {
            for tenant in &tenants {
                started.remove(tenant);
            }
        }
        for tenant in tenants {
            self.ensure(tenant);
        }
    }

    async fn check_until_done(&self, tenant: TenantId) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_CHECKS {
            match self.check(&tenant).await {
                Ok(registered) => {
                    let result = if registered { "registered" } else { "present" };
                    self.metrics.events().registration(result);
                    tracing::info!(%tenant, result, "webhook registration checked");
                    return;
                }
                Err(why) if attempt == MAX_CHECKS => {
                    self.metrics.events().registration("given_up");
                    tracing::error!(%tenant, error = %why, attempts = attempt, "webhook registration given up (restart, or rotate the webhook secret, to try again)");
                }
                Err(why) => {
                    self.metrics.events().registration("failed");
                    tracing::warn!(%tenant, error = %why, retry_in_s = backoff.as_secs(), "webhook registration failed; will retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Lists the tenant's hooks and registers ours when missing: `Ok(true)` when it registered.
    async fn check(&self, tenant: &str) -> Result<bool, String> {
        let key = self.directory.key_of(tenant).ok_or_else(|| "the tenant's key is not known".to_owned())?;
        let ctx = || CallContext {
            api_key: key.clone(),
            deadline: Instant::now() + EXCHANGE_TIMEOUT,
            request_id: format!("webhook-registration-{}", uuid::Uuid::new_v4()),
            traceparent: None,
            tracestate: None,
        };
        let url = self.url(tenant);
        let hooks = self.upstream.list_webhooks(&ctx()).await.map_err(|e| e.to_string())?;
        if hooks.iter().any(|h| h.url == url && (h.kind.is_empty() || h.kind.eq_ignore_ascii_case("call"))) {
            return Ok(false);
        }
        self.upstream.register_webhook(&ctx(), &url).await.map_err(|e| e.to_string())?;
        Ok(true)
    }
}
