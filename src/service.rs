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
    catalog::ScriptCatalog,
    domain::{self, NewSession, SessionLimits},
    pb::{self, call_bot_service_server::CallBotService},
    status::{ErrorContext, FacadeError, to_status},
    upstream::{ApiKey, CallContext, ExecuteBody, Script, UpstreamClient},
};

/// Stream messages buffered per ListScripts call: enough to keep the HTTP/2 window busy, small
/// enough that a slow reader holds little memory.
const STREAM_BUFFER: usize = 32;

/// The part of a caller's deadline kept back so that our own DEADLINE_EXCEEDED answers before
/// tonic's deadline timer (which would answer CANCELLED) fires.
const DEADLINE_HEADROOM_MAX: Duration = Duration::from_millis(20);

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
    fn context(&self, metadata: &MetadataMap) -> Result<CallContext, Status> {
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
        let mut budget = self.settings.upstream_timeout;
        if let Some(caller) = metadata.get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout) {
            let headroom = (caller / 10).min(DEADLINE_HEADROOM_MAX);
            budget = budget.min(caller.saturating_sub(headroom));
        }
        let text = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(CallContext {
            api_key,
            deadline: Instant::now() + budget,
            traceparent: text("traceparent"),
            tracestate: text("tracestate"),
            request_id,
        })
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
        let ctx = self.context(request.metadata())?;
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
        let ctx = self.context(request.metadata())?;
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
        let ctx = self.context(request.metadata())?;
        let limits = SessionLimits { max_contacts: self.settings.max_contacts, now: SystemTime::now() };
        let session = NewSession::parse(request.into_inner(), &limits).map_err(|e| fail(&ctx, e))?;
        // The generated key comes from the thread's CSPRNG, not a getrandom syscall per call.
        let key = session
            .external_session_id
            .clone()
            .unwrap_or_else(|| uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string());
        let body = ExecuteBody::new(&session, &key);
        let outcome = self.upstream.execute_by_phone(&ctx, &body).await.map_err(|e| {
            to_status(
                &FacadeError::Upstream(e),
                &ErrorContext { request_id: &ctx.request_id, external_session_id: Some(&key) },
            )
        })?;
        tracing::info!(
            request_id = %ctx.request_id,
            session_id = %outcome.autocall_id,
            contacts = session.contacts.len(),
            rejected = outcome.rejections.len(),
            "session created"
        );
        for r in &outcome.rejections {
            tracing::debug!(phone = %domain::mask_phone(&r.phone), reason = %r.reason, "contact rejected by the upstream");
        }
        let script_id =
            if outcome.bot_script_id.is_empty() { session.script_id.clone() } else { outcome.bot_script_id };
        Ok(Response::new(pb::CreateSessionResponse {
            session: Some(pb::Session {
                id: outcome.autocall_id,
                script_id,
                external_session_id: key,
                rejected_contacts: outcome
                    .rejections
                    .into_iter()
                    .map(|r| pb::ContactRejection { phone: r.phone, reason: r.reason })
                    .collect(),
            }),
        }))
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
