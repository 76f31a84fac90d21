//! ListScripts, GetScript, and the script lookup behind `check_variables`: all served from the
//! per-tenant script cache (`catalog.rs`).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{CallBotApi, fail};
use crate::{
    convert,
    domain::{self, ScriptVariables},
    pb,
    status::FacadeError,
    upstream::CallContext,
};

/// Stream messages buffered per ListScripts call: enough to keep the HTTP/2 window busy, small
/// enough that a slow reader holds little memory.
const STREAM_BUFFER: usize = 32;

impl CallBotApi {
    /// ListScripts: the tenant's scripts, filtered by folded name, streamed by a task that stops
    /// as soon as the caller goes away.
    pub(super) async fn list_scripts_stream(
        &self,
        request: Request<pb::ListScriptsRequest>,
    ) -> Result<Response<ReceiverStream<Result<pb::ListScriptsResponse, Status>>>, Status> {
        let ctx = self.call(&request)?.ctx;
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
                    owned
                        .scripts
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| wanted(*i))
                        .map(|(_, s)| convert::script_into_pb(s)),
                ),
                Err(shared) => Box::new(
                    (0..shared.scripts.len())
                        .filter(|i| wanted(*i))
                        .map(move |i| convert::script_to_pb(&shared.scripts[i])),
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

    /// GetScript: one script of the tenant by id.
    pub(super) async fn get_one_script(
        &self,
        request: Request<pb::GetScriptRequest>,
    ) -> Result<Response<pb::GetScriptResponse>, Status> {
        let ctx = self.call(&request)?.ctx;
        let id = &request.get_ref().script_id;
        domain::validate_script_id(id).map_err(|e| fail(&ctx, e))?;
        let catalog = self.catalog.get(&self.upstream, &ctx).await.map_err(|e| fail(&ctx, e))?;
        let script =
            catalog.scripts.iter().find(|s| s.id == *id).ok_or_else(|| fail(&ctx, FacadeError::ScriptNotFound))?;
        Ok(Response::new(pb::GetScriptResponse { script: Some(convert::script_to_pb(script)) }))
    }

    /// The variables of `script_id` for `check_variables`, from the script cache;
    /// `NOT_FOUND`/`SCRIPT_NOT_FOUND` when the tenant has no such script.
    pub(super) async fn script_variables(&self, ctx: &CallContext, script_id: &str) -> Result<ScriptVariables, Status> {
        let catalog = self.catalog.get(&self.upstream, ctx).await.map_err(|e| fail(ctx, e))?;
        let script =
            catalog.scripts.iter().find(|s| s.id == script_id).ok_or_else(|| fail(ctx, FacadeError::ScriptNotFound))?;
        Ok(convert::script_variables(script))
    }
}
