//! The session records `CreateSession` and each `CreateCampaign` chunk leave in the event store,
//! so that a session's report knows every contact (also those never dialled) and when a contact
//! is final.

use std::{collections::HashSet, sync::Arc};

use super::{EventStore, SessionRecord, TenantId, memory::system_clock};
use crate::domain::national;

/// The names of a started session, as its record keeps them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started<'a> {
    /// The upstream's `autocall_id`.
    pub(crate) session_id: &'a str,
    /// The caller's key for it.
    pub(crate) external_id: &'a str,
    /// The script it reads.
    pub(crate) script_id: &'a str,
    /// The name the caller gave it (may be empty).
    pub(crate) name: &'a str,
}

/// Leaves a session's record in the store for its report. Cheap to clone; `none()` records
/// nothing (harnesses that run the campaign engine alone).
#[derive(Clone)]
pub struct SessionLog(Option<(Arc<dyn EventStore>, TenantId)>);

impl SessionLog {
    /// Records nothing.
    pub fn none() -> Self {
        SessionLog(None)
    }

    pub(crate) fn new(store: Arc<dyn EventStore>, tenant: TenantId) -> Self {
        SessionLog(Some((store, tenant)))
    }

    /// Records a started session, with the caller's `external_id` for it: its contacts as sent,
    /// less those the upstream refused.
    pub(crate) async fn record(
        &self,
        started: Started<'_>,
        mut contacts: Vec<String>,
        refused: &[String],
        redials: u32,
    ) {
        let Started { session_id, external_id, script_id, name } = started;
        let Some((store, tenant)) = &self.0 else { return };
        if !refused.is_empty() {
            let refused: HashSet<String> = refused.iter().map(|p| national(p)).collect();
            contacts.retain(|c| !refused.contains(&national(c)));
        }
        let record = SessionRecord {
            session_id: session_id.to_owned(),
            external_id: external_id.to_owned(),
            contacts,
            redials,
            created_at_ms: system_clock()(),
            script_id: script_id.to_owned(),
            name: name.to_owned(),
        };
        if let Err(e) = store.record_session(tenant.clone(), record).await {
            // The session started: the caller gets it; only its report lacks the contact list.
            tracing::warn!(session_id, error = %e, "session not recorded in the event store");
        }
    }
}
