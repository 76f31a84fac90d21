//! CreateSession: validate every contact, optionally check them against the script's variables,
//! apply the tenant's calling policy (purpose, do-not-call, frequency cap, calling hours), start
//! the session upstream with the caller's idempotency key (or a generated one), convert.

use tonic::{Request, Response, Status};

use super::{AccessNote, Call, CallBotApi, fail};
use crate::{
    admission::{gate, refused_by_upstream},
    convert,
    domain::{self, NewSession, SessionLimits},
    events::log::Started,
    pb, policy,
    status::{ErrorContext, FacadeError, to_status},
    upstream::EncodedExecute,
};

impl CallBotApi {
    /// CreateSession.
    pub(super) async fn start_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let Call { ctx, tenant, .. } = self.call(&request)?;
        // The policy's clock: the wall clock, or the test clock the settings inject.
        let now = policy::system_time(self.policy.now());
        let limits = SessionLimits { max_contacts: self.max_contacts(), now };
        let request = request.into_inner();
        let check_variables = request.check_variables;
        let mut session = NewSession::parse(request, &limits).map_err(|e| fail(&ctx, e))?;
        if check_variables {
            // After the rules above (no I/O for a malformed request); needs the script list.
            // Boxed: otherwise the script fetch's state is part of every CreateSession's future,
            // the ones that never check too (memory per call in flight).
            let variables = Box::pin(self.script_variables(&ctx, &session.script_id)).await?;
            variables.check(&session.contacts, 0).map_err(|e| fail(&ctx, e))?;
        }
        // The generated key comes from the thread's CSPRNG, not a getrandom syscall per call.
        let key = session.external_session_id.clone().unwrap_or_else(|| {
            // Encoded in place: `to_string` goes through the formatting machinery.
            let mut text = uuid::Uuid::encode_buffer();
            uuid::Builder::from_random_bytes(rand::random()).into_uuid().hyphenated().encode_lower(&mut text).to_owned()
        });
        let to_error = |e: FacadeError| {
            to_status(&e, &ErrorContext { request_id: &ctx.request_id, external_session_id: Some(&key) })
        };
        let (verdict, mut rejections) =
            Box::pin(gate(&self.policy, &self.metrics, &tenant, &mut session, &key, None)).await.map_err(to_error)?;
        let start_time = verdict.shown_start().map(convert::timestamp_to_pb);
        if session.validate_only {
            // The full verdict: the start the facade would choose, now included.
            let start_time = Some(convert::timestamp_to_pb(verdict.start));
            let session = pb::Session {
                id: String::new(),
                script_id: session.script_id,
                external_session_id: key,
                rejected_contacts: rejections,
                start_time,
            };
            return Ok(Response::new(pb::CreateSessionResponse { session: Some(session) }));
        }
        let encoded = EncodedExecute::new(&convert::execute_body(&session, &key));
        // Only the JSON is needed from here on: the validated contacts (several times the size of
        // the body) are freed before the exchange, which may wait on the upstream for seconds.
        let NewSession { script_id, contacts, retry_count, name, purpose, .. } = session;
        let contact_count = contacts.len();
        // The numbers only, for the session's record (its report's contact list).
        let phones: Vec<String> = contacts.into_iter().map(|c| c.phone).collect();
        let outcome = match self.upstream.execute_encoded(&ctx, &encoded).await {
            Ok(outcome) => outcome,
            Err(e) => {
                if let Some((purpose, numbers)) = verdict.reserved.as_ref().filter(|_| refused_by_upstream(&e)) {
                    self.policy.release(&tenant, *purpose, numbers, &key).await;
                }
                return Err(to_error(FacadeError::Upstream(e)));
            }
        };
        drop(encoded);
        // The access line says it (one line per RPC; `AccessNote`).
        let note = AccessNote {
            session_id: outcome.autocall_id.clone(),
            contacts: contact_count,
            rejected: outcome.rejections.len(),
        };
        for r in &outcome.rejections {
            tracing::debug!(phone = %domain::mask_phone(&r.phone), reason = %r.reason, "contact rejected by the upstream");
        }
        let refused: Vec<String> = outcome.rejections.iter().map(|r| r.phone.clone()).collect();
        if let Some((purpose, _)) = &verdict.reserved {
            let numbers: Vec<u64> = refused.iter().filter_map(|p| policy::dnc::key(p)).collect();
            self.policy.release(&tenant, *purpose, &numbers, &key).await;
        }
        let redials = u32::try_from(retry_count.unwrap_or(0)).unwrap_or(0);
        let started = Started {
            session_id: &outcome.autocall_id,
            external_id: &key,
            script_id: &script_id,
            name: name.as_deref().unwrap_or_default(),
            purpose,
            verdict: &verdict,
        };
        self.session_log(tenant).record(started, phones, &outcome.rejections, redials).await;
        let mut session = convert::session_to_pb(outcome, &script_id, key);
        rejections.append(&mut session.rejected_contacts);
        session.rejected_contacts = rejections;
        session.start_time = start_time;
        let mut response = Response::new(pb::CreateSessionResponse { session: Some(session) });
        response.extensions_mut().insert(note);
        Ok(response)
    }
}
