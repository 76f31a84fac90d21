//! CreateSession: validate every contact, optionally check them against the script's variables,
//! start the session upstream with the caller's idempotency key (or a generated one), convert.

use std::time::SystemTime;

use tonic::{Request, Response, Status};

use super::{Call, CallBotApi, fail};
use crate::{
    convert,
    domain::{self, NewSession, SessionLimits},
    events::log::Started,
    pb,
    status::{ErrorContext, FacadeError, to_status},
    upstream::{EncodedExecute, UpstreamError},
};

impl CallBotApi {
    /// CreateSession.
    pub(super) async fn start_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let Call { ctx, tenant, .. } = self.call(&request)?;
        let limits = SessionLimits { max_contacts: self.max_contacts(), now: SystemTime::now() };
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
        let encoded = EncodedExecute::new(&convert::execute_body(&session, &key));
        // Only the JSON is needed from here on: the validated contacts (several times the size of
        // the body) are freed before the exchange, which may wait on the upstream for seconds.
        let NewSession { script_id, contacts, retry_count, name, .. } = session;
        let contact_count = contacts.len();
        // The numbers only, for the session's record (its report's contact list).
        let phones: Vec<String> = contacts.into_iter().map(|c| c.phone).collect();
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
        let refused: Vec<String> = outcome.rejections.iter().map(|r| r.phone.clone()).collect();
        let redials = u32::try_from(retry_count.unwrap_or(0)).unwrap_or(0);
        let started = Started {
            session_id: &outcome.autocall_id,
            external_id: &key,
            script_id: &script_id,
            name: name.as_deref().unwrap_or_default(),
        };
        self.session_log(tenant).record(started, phones, &refused, redials).await;
        Ok(Response::new(pb::CreateSessionResponse { session: Some(convert::session_to_pb(outcome, &script_id, key)) }))
    }
}
