//! AddDoNotCall and RemoveDoNotCall: the caller's tenant's added numbers, kept by the policy's
//! store (durable, seen by every replica from the next request on).

use tonic::{Request, Response, Status};

use super::{Call, CallBotApi, fail};
use crate::{
    domain::{FieldViolation, ValidationError, mask_phone},
    pb,
    policy::dnc,
    status::FacadeError,
};

/// Most numbers one call may carry.
const MAX_PHONES: usize = 10_000;

/// Every number's key, or every bad one's path.
fn keys(phones: &[String]) -> Result<Vec<u64>, ValidationError> {
    let mut violations = Vec::new();
    if phones.is_empty() || phones.len() > MAX_PHONES {
        violations.push(FieldViolation { field: "phones".into(), description: "must hold 1 to 10000 numbers".into() });
    }
    let keys: Vec<u64> = phones
        .iter()
        .take(MAX_PHONES)
        .enumerate()
        .filter_map(|(i, p)| {
            let key = dnc::key(p).filter(|_| crate::domain::is_valid_phone(&crate::domain::national(p)));
            if key.is_none() {
                violations.push(FieldViolation {
                    field: format!("phones[{i}]"),
                    description: "must be a phone number (+84…, 84…, 0…)".into(),
                });
            }
            key
        })
        .collect();
    match violations.is_empty() {
        true => Ok(keys),
        false => Err(ValidationError { violations }),
    }
}

impl CallBotApi {
    /// AddDoNotCall.
    pub(super) async fn add_do_not_call_numbers(
        &self,
        request: Request<pb::AddDoNotCallRequest>,
    ) -> Result<Response<pb::AddDoNotCallResponse>, Status> {
        let Call { ctx, tenant, .. } = self.call(&request)?;
        let pb::AddDoNotCallRequest { phones, reason } = request.into_inner();
        let keys = keys(&phones).map_err(|e| fail(&ctx, e))?;
        let added = self
            .policy
            .counts()
            .add_dnc(&tenant, &keys)
            .await
            .map_err(|e| fail(&ctx, FacadeError::PolicyStoreUnavailable(e.0)))?;
        for p in &phones {
            tracing::info!(
                request_id = %ctx.request_id, tenant = %tenant, phone = %mask_phone(p),
                reason = %reason.chars().filter(|c| !c.is_control()).take(200).collect::<String>(), "added to do-not-call"
            );
        }
        Ok(Response::new(pb::AddDoNotCallResponse { added: i64::try_from(added).unwrap_or(i64::MAX) }))
    }

    /// RemoveDoNotCall.
    pub(super) async fn remove_do_not_call_numbers(
        &self,
        request: Request<pb::RemoveDoNotCallRequest>,
    ) -> Result<Response<pb::RemoveDoNotCallResponse>, Status> {
        let Call { ctx, tenant, .. } = self.call(&request)?;
        let pb::RemoveDoNotCallRequest { phones } = request.into_inner();
        let keys = keys(&phones).map_err(|e| fail(&ctx, e))?;
        let removed = self
            .policy
            .counts()
            .remove_dnc(&tenant, &keys)
            .await
            .map_err(|e| fail(&ctx, FacadeError::PolicyStoreUnavailable(e.0)))?;
        for p in &phones {
            tracing::info!(request_id = %ctx.request_id, tenant = %tenant, phone = %mask_phone(p), "removed from do-not-call");
        }
        Ok(Response::new(pb::RemoveDoNotCallResponse { removed: i64::try_from(removed).unwrap_or(i64::MAX) }))
    }
}
