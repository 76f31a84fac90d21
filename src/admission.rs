//! The calling policy applied to one session on its way upstream (a CreateSession, or one chunk of
//! a CreateCampaign): the verdict asked of `crate::policy`, counted in the metrics, applied to the
//! session (refused contacts out, the chosen start in), and which upstream failures release what
//! the verdict reserved.

use crate::{
    convert,
    domain::NewSession,
    metrics::Metrics,
    pb,
    policy::{self, Ask, Policy, PolicyError, Refusal, Verdict},
    status::FacadeError,
    upstream::UpstreamError,
};

/// Whether the upstream refused a session without starting it: its reservations are released.
/// A lost connection or an unknown outcome keeps them (the session may exist: counting a call
/// that never happens is the safe side).
pub(crate) fn refused_by_upstream(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Connect { .. } => true,
        UpstreamError::Rejected { .. } => !e.is_duplicate_session(),
        UpstreamError::Http { status, .. } => (400..500).contains(status),
        _ => false,
    }
}

/// The policy's verdict on `session` (reserving unless `validate_only`), counted in the metrics;
/// the refused contacts are taken out of `session` and returned as rejections.
pub(crate) async fn gate(
    policy: &Policy,
    metrics: &Metrics,
    tenant: &str,
    session: &mut NewSession,
    key: &str,
    schedule_after: Option<jiff::Timestamp>,
) -> Result<(Verdict, Vec<pb::ContactRejection>), FacadeError> {
    let numbers = match policy.numbers_matter(tenant) {
        true => policy::session::numbers(session),
        false => vec![None; session.contacts.len()],
    };
    let ask = Ask {
        tenant,
        purpose: session.purpose,
        numbers: &numbers,
        pacing: policy::session::pacing(session),
        start: policy::session::start(session),
        defer: session.defer_to_calling_hours,
        schedule_after,
        holder: key,
    };
    let count = |refused: &[(usize, Refusal)]| {
        for reason in [Refusal::DoNotCall, Refusal::FrequencyCap(None)] {
            let n = refused.iter().filter(|(_, r)| r.reason() == reason.reason()).count() as u64;
            if n > 0 {
                metrics.policy().refused(tenant, reason.reason(), n);
            }
        }
    };
    let verdict = match policy.decide(ask, !session.validate_only).await {
        Ok(v) => v,
        Err(e) => {
            if let PolicyError::NoCallableContacts { refused } = &e {
                count(refused);
            }
            return Err(e.into());
        }
    };
    count(&verdict.refused);
    if verdict.moved && !session.validate_only {
        metrics.policy().deferred(tenant);
    }
    let refused = policy::session::apply(session, &verdict);
    let rejections = refused.into_iter().map(|(phone, r)| convert::policy_rejection(phone, r)).collect();
    Ok((verdict, rejections))
}
