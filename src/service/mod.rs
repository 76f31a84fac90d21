//! The `CallBotService` implementation: one file per RPC family, each handler a few lines of
//! intent (validate, call the upstream, convert). This file holds what every handler shares: the
//! call as the middleware settled it ([`Call`]: tenant, upstream context, deadlines; handlers read
//! no metadata) and the error boundary.
//!
//! - `scripts.rs` — ListScripts (a server stream), GetScript, and the script lookup of
//!   `check_variables`;
//! - `sessions.rs` — CreateSession;
//! - `campaigns.rs` — CreateCampaign (a client stream driving `crate::campaign`);
//! - `do_not_call.rs` — AddDoNotCall, RemoveDoNotCall (the calling policy's added numbers);
//! - `events.rs` — WatchCallEvents, GetSessionReport, ListSessions, and the session records the other two
//!   leave in the event store.
//!
//! The tenant of a call, for the event store: the tenants file's name, `default` for the
//! configured key, `k-<hash>` for a caller's own key (`crate::tenancy`).

mod campaigns;
mod do_not_call;
mod events;
mod scripts;
mod sessions;

use std::{sync::Arc, time::Duration};

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    catalog::ScriptCatalog,
    config::{ServiceSettings, Settings},
    events::EventStore,
    metrics::Metrics,
    middleware::{AccessNote, Call},
    pb::{self, call_bot_service_server::CallBotService},
    policy::Policy,
    status::{ErrorContext, FacadeError, to_status},
    upstream::{CallContext, UpstreamClient},
};

/// What handlers need from configuration.
#[derive(Debug)]
struct HandlerSettings {
    /// Bound of one upstream exchange inside a stream (a campaign chunk).
    upstream_timeout: Duration,
    /// Limits.
    service: ServiceSettings,
}

/// What the event RPCs and the session records need.
#[derive(Clone)]
pub(crate) struct EventWiring {
    /// Where call events and session records are kept.
    pub(crate) store: Arc<dyn EventStore>,
    /// The application's one shutdown signal: watch streams end (with their last cursor) when
    /// the drain begins.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
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
    shutdown: tokio_util::sync::CancellationToken,
    record_sessions: bool,
    metrics: Arc<Metrics>,
    /// The calling policy, checked before anything is sent upstream.
    policy: Policy,
}

impl CallBotApi {
    /// Assembles the service.
    pub(crate) fn new(
        upstream: Arc<UpstreamClient>,
        catalog: Arc<ScriptCatalog>,
        settings: &Settings,
        wiring: EventWiring,
        metrics: Arc<Metrics>,
        policy: Policy,
    ) -> Self {
        let settings =
            HandlerSettings { upstream_timeout: settings.upstream.timeout, service: settings.service.clone() };
        CallBotApi {
            upstream,
            catalog,
            settings: Arc::new(settings),
            events: wiring.store,
            shutdown: wiring.shutdown,
            record_sessions: wiring.record_sessions,
            metrics,
            policy,
        }
    }

    /// The call as the middleware settled it (every `CallBotService` call goes through it).
    fn call<T>(&self, request: &Request<T>) -> Result<Call, Status> {
        request.extensions().get::<Call>().cloned().ok_or_else(|| {
            tracing::error!("a call reached its handler without the middleware's settlement");
            Status::internal("the call was not settled by the facade's middleware")
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

    async fn add_do_not_call(
        &self,
        request: Request<pb::AddDoNotCallRequest>,
    ) -> Result<Response<pb::AddDoNotCallResponse>, Status> {
        self.add_do_not_call_numbers(request).await
    }

    async fn remove_do_not_call(
        &self,
        request: Request<pb::RemoveDoNotCallRequest>,
    ) -> Result<Response<pb::RemoveDoNotCallResponse>, Status> {
        self.remove_do_not_call_numbers(request).await
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.list_sessions_page(request).await
    }
}
