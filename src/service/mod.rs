//! The `CallBotService` implementation: one file per RPC family, each handler a few lines of
//! intent (validate, call the upstream, convert). This file holds what every handler shares: the
//! call's context (tenant key, deadline, correlation ids) and the error boundary.
//!
//! The tenant key of a call: with a tenants file, the caller's tenant's (the middleware settled
//! it and put it in the request's extensions); else the caller's `x-api-key` when
//! `--allow-caller-api-key` allows it; else the configured key (`--api-key`, or the current
//! content of `--api-key-file`).
//!
//! - `scripts.rs` — ListScripts (a server stream), GetScript, and the script lookup of
//!   `check_variables`;
//! - `sessions.rs` — CreateSession;
//! - `campaigns.rs` — CreateCampaign (a client stream driving `crate::campaign`);
//! - `events.rs` — WatchCallEvents, GetSessionReport, and the session records the other two
//!   leave in the event store.
//!
//! The tenant of a call, for the event store: the tenants file's name, `default` for the
//! configured key, `k-<hash>` for a caller's own key (`webhook/directory.rs`).

mod campaigns;
mod events;
mod scripts;
mod sessions;

use std::{sync::Arc, time::Duration};

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    catalog::ScriptCatalog,
    config::{ServiceSettings, Settings},
    deadline,
    events::{EventStore, TenantId},
    metrics::Metrics,
    pb::{self, call_bot_service_server::CallBotService},
    status::{ErrorContext, FacadeError, to_status},
    tenants::{ConfiguredKey, Tenant},
    upstream::{ApiKey, CallContext, UpstreamClient},
    webhook::{
        directory::{DEFAULT_TENANT, Directory, caller_key_tenant},
        registrar::Registrar,
    },
};

/// What handlers need from configuration.
#[derive(Debug)]
struct HandlerSettings {
    /// The configured tenant key (unused with a tenants file).
    api_key: ConfiguredKey,
    /// Bound of a whole upstream exchange.
    upstream_timeout: Duration,
    /// Limits and the caller-key rule.
    service: ServiceSettings,
}

/// What the event RPCs and the session records need.
#[derive(Clone)]
pub(crate) struct EventWiring {
    /// Where call events and session records are kept.
    pub(crate) store: Arc<dyn EventStore>,
    /// Tenants and their tokens.
    pub(crate) directory: Arc<Directory>,
    /// Registers the receiver for a caller-key tenant on its first call (with a public URL).
    pub(crate) registrar: Option<Arc<Registrar>>,
    /// Set to true when the facade drains: watch streams end.
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
    /// Whether sessions are recorded for their reports: only when call events can arrive (the
    /// receiver is on); otherwise the records would only take memory.
    pub(crate) record_sessions: bool,
}

/// The service.
#[derive(Clone)]
pub struct CallBotApi {
    upstream: Arc<UpstreamClient>,
    catalog: Arc<ScriptCatalog>,
    settings: Arc<HandlerSettings>,
    events: Arc<dyn EventStore>,
    directory: Arc<Directory>,
    registrar: Option<Arc<Registrar>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    record_sessions: bool,
    metrics: Arc<Metrics>,
}

impl CallBotApi {
    /// Assembles the service.
    pub(crate) fn new(
        upstream: Arc<UpstreamClient>,
        catalog: Arc<ScriptCatalog>,
        api_key: ConfiguredKey,
        settings: &Settings,
        wiring: EventWiring,
        metrics: Arc<Metrics>,
    ) -> Self {
        let settings =
            HandlerSettings { api_key, upstream_timeout: settings.upstream.timeout, service: settings.service.clone() };
        CallBotApi {
            upstream,
            catalog,
            settings: Arc::new(settings),
            events: wiring.store,
            directory: wiring.directory,
            registrar: wiring.registrar,
            shutdown: wiring.shutdown,
            record_sessions: wiring.record_sessions,
            metrics,
        }
    }

    /// The call's context and its tenant in the event store. A caller's own key is noted (the
    /// receiver then knows its key, and its webhook gets registered).
    fn tenant_context<T>(&self, request: &Request<T>) -> Result<(CallContext, TenantId), Status> {
        let ctx = self.context(request)?;
        let tenant = self.tenant_of(request, &ctx);
        Ok((ctx, tenant))
    }

    fn tenant_of<T>(&self, request: &Request<T>, ctx: &CallContext) -> TenantId {
        if let Some(tenant) = request.extensions().get::<Tenant>() {
            return tenant.name.clone();
        }
        let caller_key = request.metadata().get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim);
        if caller_key.is_none_or(str::is_empty) {
            return Arc::from(DEFAULT_TENANT);
        }
        let tenant = caller_key_tenant(&ctx.api_key);
        if self.directory.note_caller_key(&tenant, &ctx.api_key) {
            if let Some(registrar) = &self.registrar {
                registrar.ensure(tenant.clone());
            }
        }
        tenant
    }

    /// The upstream context of a call: tenant key, deadline, correlation headers.
    fn context<T>(&self, request: &Request<T>) -> Result<CallContext, Status> {
        let metadata = request.metadata();
        let text = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // The request-id layer always sets one.
        let request_id = text("x-request-id").unwrap_or_default();
        let caller_key = metadata.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim);
        let api_key = match (request.extensions().get::<Tenant>(), caller_key) {
            // The middleware refused a caller's own key already.
            (Some(tenant), _) => tenant.key.clone(),
            (None, None | Some("")) => self.settings.api_key.current(),
            (None, Some(key)) if self.settings.service.allow_caller_api_key => ApiKey::new(key),
            (None, Some(_)) => return Err(fail_with(&request_id, FacadeError::CallerApiKeyNotAllowed)),
        };
        Ok(CallContext {
            api_key,
            deadline: deadline::for_call(request, self.settings.upstream_timeout),
            traceparent: text("traceparent"),
            tracestate: text("tracestate"),
            request_id,
        })
    }

    fn max_contacts(&self) -> usize {
        self.settings.service.max_contacts as usize
    }
}

/// The status of a failed call (the error boundary: see `status.rs`).
fn fail(ctx: &CallContext, err: impl Into<FacadeError>) -> Status {
    fail_with(&ctx.request_id, err.into())
}

fn fail_with(request_id: &str, err: FacadeError) -> Status {
    to_status(&err, &ErrorContext { request_id, external_session_id: None })
}

#[tonic::async_trait]
impl CallBotService for CallBotApi {
    type ListScriptsStream = ReceiverStream<Result<pb::ListScriptsResponse, Status>>;

    async fn list_scripts(
        &self,
        request: Request<pb::ListScriptsRequest>,
    ) -> Result<Response<Self::ListScriptsStream>, Status> {
        self.list_scripts_stream(request).await
    }

    async fn get_script(
        &self,
        request: Request<pb::GetScriptRequest>,
    ) -> Result<Response<pb::GetScriptResponse>, Status> {
        self.get_one_script(request).await
    }

    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        self.start_session(request).await
    }

    type CreateCampaignStream = ReceiverStream<Result<pb::CreateCampaignResponse, Status>>;

    async fn create_campaign(
        &self,
        request: Request<tonic::Streaming<pb::CreateCampaignRequest>>,
    ) -> Result<Response<Self::CreateCampaignStream>, Status> {
        self.start_campaign(request).await
    }

    type WatchCallEventsStream = events::WatchStream;

    async fn watch_call_events(
        &self,
        request: Request<pb::WatchCallEventsRequest>,
    ) -> Result<Response<Self::WatchCallEventsStream>, Status> {
        self.watch_events(request).await
    }

    async fn get_session_report(
        &self,
        request: Request<pb::GetSessionReportRequest>,
    ) -> Result<Response<pb::GetSessionReportResponse>, Status> {
        self.session_report(request).await
    }
}
