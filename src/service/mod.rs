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
//! - `campaigns.rs` — CreateCampaign (a client stream driving `crate::campaign`).

mod campaigns;
mod scripts;
mod sessions;

use std::{sync::Arc, time::Duration};

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    catalog::ScriptCatalog,
    config::{ServiceSettings, Settings},
    deadline,
    pb::{self, call_bot_service_server::CallBotService},
    reload::Live,
    status::{ErrorContext, FacadeError, to_status},
    tenants::Tenant,
    upstream::{ApiKey, CallContext, UpstreamClient},
};

/// The configured tenant key: fixed (`--api-key`, or the simulator's), or the live content of
/// `--api-key-file`. Fixed is kept apart so that the common case takes no lock per call.
#[derive(Debug, Clone)]
pub enum ConfiguredKey {
    /// Given once.
    Fixed(ApiKey),
    /// Re-read when the file changes.
    File(Live<ApiKey>),
}

impl ConfiguredKey {
    fn current(&self) -> ApiKey {
        match self {
            ConfiguredKey::Fixed(key) => key.clone(),
            ConfiguredKey::File(live) => (*live.get()).clone(),
        }
    }
}

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

/// The service.
#[derive(Clone)]
pub struct CallBotApi {
    upstream: Arc<UpstreamClient>,
    catalog: Arc<ScriptCatalog>,
    settings: Arc<HandlerSettings>,
}

impl CallBotApi {
    /// Assembles the service.
    pub fn new(
        upstream: Arc<UpstreamClient>,
        catalog: Arc<ScriptCatalog>,
        api_key: ConfiguredKey,
        settings: &Settings,
    ) -> Self {
        let settings =
            HandlerSettings { api_key, upstream_timeout: settings.upstream.timeout, service: settings.service.clone() };
        CallBotApi { upstream, catalog, settings: Arc::new(settings) }
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
}
