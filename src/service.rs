//! The `CallBotService` implementation. Each handler states intent only: read the call's
//! context, validate, call the upstream, convert. Errors become statuses in `status.rs`.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    campaign::{self, CampaignRun},
    catalog::ScriptCatalog,
    domain::{self, CampaignPlan, NewSession, ScriptVariables, SessionLimits},
    middleware::CallArrival,
    pb::{self, call_bot_service_server::CallBotService},
    status::{ErrorContext, FacadeError, to_status},
    upstream::{
        ApiKey, CallContext, EncodedExecute, ExecuteBody, ExecuteOutcome, Script, UpstreamClient, UpstreamError,
    },
};

/// Stream messages buffered per ListScripts call: enough to keep the HTTP/2 window busy, small
/// enough that a slow reader holds little memory.
const STREAM_BUFFER: usize = 32;

/// CreateCampaign answers buffered per call: one per chunk, so a few are enough; a caller that
/// stops reading stops the campaign from reading its contacts (backpressure).
const CAMPAIGN_BUFFER: usize = 4;

/// The part of a caller's deadline kept back so that our own DEADLINE_EXCEEDED answers before
/// tonic's deadline timer (which would answer CANCELLED) fires.
const DEADLINE_HEADROOM_MAX: Duration = Duration::from_millis(100);

/// What handlers need from configuration.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// The configured tenant key.
    pub api_key: ApiKey,
    /// Whether a caller's `x-api-key` may choose the tenant.
    pub allow_caller_api_key: bool,
    /// Bound of a whole upstream exchange.
    pub upstream_timeout: Duration,
    /// Most contacts per CreateSession.
    pub max_contacts: usize,
}

/// The service.
#[derive(Clone)]
pub struct CallBotApi {
    upstream: Arc<UpstreamClient>,
    catalog: Arc<ScriptCatalog>,
    settings: Arc<ServiceSettings>,
}

impl CallBotApi {
    /// Assembles the service.
    pub fn new(upstream: Arc<UpstreamClient>, catalog: Arc<ScriptCatalog>, settings: ServiceSettings) -> Self {
        CallBotApi { upstream, catalog, settings: Arc::new(settings) }
    }

    /// The upstream context of a call: tenant key, deadline, correlation headers.
    fn context<T>(&self, request: &Request<T>) -> Result<CallContext, Status> {
        let metadata = request.metadata();
        let arrival = arrival(request);
        let request_id = request_id(metadata);
        let caller_key = metadata.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim);
        let api_key = match caller_key {
            None | Some("") => self.settings.api_key.clone(),
            Some(key) if self.settings.allow_caller_api_key => ApiKey::new(key),
            Some(_) => {
                return Err(to_status(
                    &FacadeError::CallerApiKeyNotAllowed,
                    &ErrorContext { request_id: &request_id, external_session_id: None },
                ));
            }
        };
        let mut deadline = arrival + self.settings.upstream_timeout;
        if let Some(caller) = caller_deadline(request) {
            deadline = deadline.min(caller);
        }
        let text = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(CallContext {
            api_key,
            deadline,
            traceparent: text("traceparent"),
            tracestate: text("tracestate"),
            request_id,
        })
    }

    /// The variables of `script_id` for `check_variables`, from the script cache;
    /// `NOT_FOUND`/`SCRIPT_NOT_FOUND` when the tenant has no such script.
    async fn script_variables(&self, ctx: &CallContext, script_id: &str) -> Result<ScriptVariables, Status> {
        let catalog = self.catalog.get(&self.upstream, ctx).await.map_err(|e| fail(ctx, e))?;
        let script =
            catalog.scripts.iter().find(|s| s.id == script_id).ok_or_else(|| fail(ctx, FacadeError::ScriptNotFound))?;
        Ok(ScriptVariables::new(script.variables.iter().map(|v| (v.field_code.as_str(), v.is_dynamic_attribute))))
    }
}

/// When the call arrived: set by the middleware at the moment tonic starts its own deadline
/// timer (now, for a call that did not come through it).
fn arrival<T>(request: &Request<T>) -> Instant {
    request.extensions().get::<CallArrival>().map_or_else(Instant::now, |a| a.0)
}

/// The caller's deadline (`grpc-timeout` from arrival) less a little headroom, so that our own
/// DEADLINE_EXCEEDED answers before tonic's timer would answer CANCELLED; `None` without one.
fn caller_deadline<T>(request: &Request<T>) -> Option<Instant> {
    let metadata = request.metadata();
    let caller = metadata.get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout)?;
    let headroom = (caller / 10).min(DEADLINE_HEADROOM_MAX);
    Some(arrival(request) + caller.saturating_sub(headroom))
}

/// A started upstream session as the caller sees it (CreateSession, and each campaign chunk).
pub(crate) fn session_to_pb(outcome: ExecuteOutcome, script_id: &str, key: String) -> pb::Session {
    let script_id = if outcome.bot_script_id.is_empty() { script_id.to_owned() } else { outcome.bot_script_id };
    pb::Session {
        id: outcome.autocall_id,
        script_id,
        external_session_id: key,
        rejected_contacts: outcome
            .rejections
            .into_iter()
            .map(|r| pb::ContactRejection { phone: r.phone, reason: r.reason })
            .collect(),
    }
}

/// The call's request id (the request-id layer always sets one).
fn request_id(metadata: &MetadataMap) -> String {
    metadata.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn fail(ctx: &CallContext, err: impl Into<FacadeError>) -> Status {
    to_status(&err.into(), &ErrorContext { request_id: &ctx.request_id, external_session_id: None })
}

/// Parses the gRPC `grpc-timeout` header: up to 8 digits and a unit (H M S m u n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Upstream script -> proto script.
pub fn script_to_pb(s: &Script) -> pb::Script {
    pb::Script {
        id: s.id.clone(),
        name: s.name.clone(),
        variables: s
            .variables
            .iter()
            .map(|v| pb::ScriptVariable {
                field_code: v.field_code.clone(),
                field_name: v.field_name.clone(),
                field_value: v.field_value.clone(),
                field_type: v.field_type.clone(),
                r#type: v.kind.clone(),
                is_dynamic_attribute: v.is_dynamic_attribute,
            })
            .collect(),
    }
}

/// Upstream script -> proto script, by move (no copy of the strings).
fn script_into_pb(s: Script) -> pb::Script {
    pb::Script {
        id: s.id,
        name: s.name,
        variables: s
            .variables
            .into_iter()
            .map(|v| pb::ScriptVariable {
                field_code: v.field_code,
                field_name: v.field_name,
                field_value: v.field_value,
                field_type: v.field_type,
                r#type: v.kind,
                is_dynamic_attribute: v.is_dynamic_attribute,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl CallBotService for CallBotApi {
    type ListScriptsStream = ReceiverStream<Result<pb::ListScriptsResponse, Status>>;

    async fn list_scripts(
        &self,
        request: Request<pb::ListScriptsRequest>,
    ) -> Result<Response<Self::ListScriptsStream>, Status> {
        let ctx = self.context(&request)?;
        let needle = domain::fold(&request.get_ref().name_contains);
        let catalog = self.catalog.get(&self.upstream, &ctx).await.map_err(|e| fail(&ctx, e))?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            let mut sent = 0usize;
            // Which scripts pass the filter (all when there is none).
            let keep: Vec<bool> = if needle.is_empty() {
                Vec::new()
            } else {
                catalog.folded_names().iter().map(|f| f.contains(needle.as_str())).collect()
            };
            let wanted = |i: usize| keep.get(i).copied().unwrap_or(needle.is_empty());
            // A catalog nobody else holds (cache off) is taken apart instead of copied.
            let scripts: Box<dyn Iterator<Item = pb::Script> + Send> = match Arc::try_unwrap(catalog) {
                Ok(owned) => Box::new(
                    owned.scripts.into_iter().enumerate().filter(|(i, _)| wanted(*i)).map(|(_, s)| script_into_pb(s)),
                ),
                Err(shared) => Box::new(
                    (0..shared.scripts.len()).filter(|i| wanted(*i)).map(move |i| script_to_pb(&shared.scripts[i])),
                ),
            };
            for script in scripts {
                let message = pb::ListScriptsResponse { script: Some(script) };
                if tx.send(Ok(message)).await.is_err() {
                    // The caller went away: stop producing.
                    tracing::debug!(sent, "ListScripts caller went away; stopping");
                    return;
                }
                sent += 1;
            }
            tracing::debug!(sent, "ListScripts streamed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_script(
        &self,
        request: Request<pb::GetScriptRequest>,
    ) -> Result<Response<pb::GetScriptResponse>, Status> {
        let ctx = self.context(&request)?;
        let id = &request.get_ref().script_id;
        domain::validate_script_id(id).map_err(|e| fail(&ctx, e))?;
        let catalog = self.catalog.get(&self.upstream, &ctx).await.map_err(|e| fail(&ctx, e))?;
        let script =
            catalog.scripts.iter().find(|s| s.id == *id).ok_or_else(|| fail(&ctx, FacadeError::ScriptNotFound))?;
        Ok(Response::new(pb::GetScriptResponse { script: Some(script_to_pb(script)) }))
    }

    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let ctx = self.context(&request)?;
        let limits = SessionLimits { max_contacts: self.settings.max_contacts, now: SystemTime::now() };
        let request = request.into_inner();
        let check_variables = request.check_variables;
        let session = NewSession::parse(request, &limits).map_err(|e| fail(&ctx, e))?;
        if check_variables {
            // After the rules above (no I/O for a malformed request); needs the script list.
            // Boxed: otherwise the script fetch's state is part of every CreateSession's future,
            // the ones that never check too (memory per call in flight).
            let variables = Box::pin(self.script_variables(&ctx, &session.script_id)).await?;
            variables.check(&session.contacts, 0).map_err(|e| fail(&ctx, e))?;
        }
        // The generated key comes from the thread's CSPRNG, not a getrandom syscall per call.
        let key = session
            .external_session_id
            .clone()
            .unwrap_or_else(|| uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string());
        let to_error = |e: UpstreamError| {
            to_status(
                &FacadeError::Upstream(e),
                &ErrorContext { request_id: &ctx.request_id, external_session_id: Some(&key) },
            )
        };
        let encoded = EncodedExecute::new(&ExecuteBody::new(&session, &key));
        // Only the JSON is needed from here on: the validated contacts (several times the size of
        // the body) are freed before the exchange, which may wait on the upstream for seconds.
        let NewSession { script_id, contacts, .. } = session;
        let contact_count = contacts.len();
        drop(contacts);
        let outcome = self.upstream.execute_encoded(&ctx, &encoded).await.map_err(to_error)?;
        drop(encoded);
        tracing::info!(
            request_id = %ctx.request_id,
            session_id = %outcome.autocall_id,
            contacts = contact_count,
            rejected = outcome.rejections.len(),
            "session created"
        );
        for r in &outcome.rejections {
            tracing::debug!(phone = %domain::mask_phone(&r.phone), reason = %r.reason, "contact rejected by the upstream");
        }
        Ok(Response::new(pb::CreateSessionResponse { session: Some(session_to_pb(outcome, &script_id, key)) }))
    }

    type CreateCampaignStream = ReceiverStream<Result<pb::CreateCampaignResponse, Status>>;

    async fn create_campaign(
        &self,
        request: Request<tonic::Streaming<pb::CreateCampaignRequest>>,
    ) -> Result<Response<Self::CreateCampaignStream>, Status> {
        let mut ctx = self.context(&request)?;
        // The caller's deadline bounds the whole stream; each chunk's exchange is bounded by
        // --upstream-timeout within it.
        let stream_deadline = caller_deadline(&request);
        let mut incoming = request.into_inner();
        let spec = campaign::read_spec(&mut incoming, stream_deadline).await.map_err(|e| campaign::fail(&ctx, e))?;
        ctx.deadline = campaign::exchange_deadline(self.settings.upstream_timeout, stream_deadline);
        let plan =
            CampaignPlan::parse(spec, self.settings.max_contacts, SystemTime::now()).map_err(|e| fail(&ctx, e))?;
        let variables = match plan.check_variables {
            true => Some(self.script_variables(&ctx, plan.script_id()).await?),
            false => None,
        };
        let (tx, rx) = mpsc::channel(CAMPAIGN_BUFFER);
        let run = CampaignRun {
            upstream: self.upstream.clone(),
            plan,
            variables,
            ctx,
            stream_deadline,
            upstream_timeout: self.settings.upstream_timeout,
        };
        tokio::spawn(run.run(incoming, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_table() {
        let rows = [
            ("1S", Some(Duration::from_secs(1))),
            ("250m", Some(Duration::from_millis(250))),
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5n", Some(Duration::from_nanos(5))),
            ("S", None),
            ("123456789S", None),
            ("1x", None),
            ("-1S", None),
            ("", None),
        ];
        for (v, want) in rows {
            assert_eq!(parse_grpc_timeout(v), want, "{v}");
        }
    }
}
