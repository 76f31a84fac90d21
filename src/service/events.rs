//! WatchCallEvents (a server stream read from the event store at the watcher's own pace) and
//! GetSessionReport; ListSessions; and the session records `CreateSession` and `CreateCampaign` leave for
//! the report.
//!
//! A watch stream ends:
//! - with `OUT_OF_RANGE` / `CURSOR_EXPIRED` (`earliest_cursor`, `last_cursor`) when the watcher
//!   fell so far behind that the events it had not read yet expired: it resumes from either and
//!   knows exactly what it missed;
//! - with `UNAVAILABLE` / `SHUTTING_DOWN` (`last_cursor`, RetryInfo) when the facade drains, so
//!   the watcher resumes on another replica with no gap and no repeat;
//! - when the caller goes away.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::{Call, CallBotApi, fail_with};
use crate::{
    convert,
    domain::{FieldViolation, SessionListing, ValidationError, is_valid_phone, listing::encode_token, national},
    events::{Cursor, Filter, SessionLog, SessionQuery, Start, StoreError, TenantId, report},
    pb,
    status::FacadeError,
    tenancy::Revocable,
};

/// The stream type of WatchCallEvents.
pub(crate) type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchCallEventsResponse, Status>> + Send>>;

/// One watcher's stream state.
struct Watch {
    subscription: crate::events::Subscription,
    shutdown: tokio_util::sync::CancellationToken,
    /// Resolves when a reload withdrew the caller (never without a tokens or tenants file).
    revoked: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    last: Option<Cursor>,
    request_id: String,
    done: bool,
    _watching: Watching,
}

/// Holds the watchers gauge up while a stream is open.
struct Watching(prometheus_client::metrics::gauge::Gauge);

impl Watching {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Watching(gauge)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Longest session id accepted in a filter.
const MAX_SESSION_ID: usize = 128;

fn check_session_id(id: &str, required: bool, violations: &mut Vec<FieldViolation>) {
    let violation = |d: &str| FieldViolation { field: "session_id".into(), description: d.into() };
    if id.is_empty() {
        if required {
            violations.push(violation("required"));
        }
    } else if id.len() > MAX_SESSION_ID || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        violations.push(violation("at most 128 characters, no spaces or control characters"));
    }
}

fn store_error(err: StoreError, last: Option<&Cursor>) -> FacadeError {
    match err {
        StoreError::CursorExpired { earliest } => {
            FacadeError::CursorExpired { earliest_cursor: earliest.encode(), last_cursor: last.map(Cursor::encode) }
        }
        StoreError::Unavailable(why) => FacadeError::EventStoreUnavailable(why),
    }
}

impl CallBotApi {
    /// The record keeper of a call's tenant.
    pub(super) fn session_log(&self, tenant: TenantId) -> SessionLog {
        if self.record_sessions { SessionLog::new(self.events.clone(), tenant) } else { SessionLog::none() }
    }

    /// WatchCallEvents.
    pub(super) async fn watch_events(
        &self,
        request: Request<pb::WatchCallEventsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let Call { ctx, tenant, .. } = self.call(&request)?;
        let revoked = match request.extensions().get::<Revocable>().cloned() {
            Some(revocable) => revocable.revoked(),
            None => Box::pin(std::future::pending()),
        };
        let request = request.into_inner();
        let mut violations = Vec::new();
        check_session_id(&request.session_id, false, &mut violations);
        let phone = request.phone.trim();
        if !phone.is_empty() && !is_valid_phone(phone) {
            violations.push(FieldViolation {
                field: "phone".into(),
                description: "an optional '+' and 8 to 15 digits".into(),
            });
        }
        let start = match request.after_cursor.trim() {
            "" if request.from_start => Start::Replay,
            "" => Start::Live,
            text => match Cursor::decode(text) {
                Ok(c) => Start::After(c),
                Err(_) => {
                    violations.push(FieldViolation {
                        field: "after_cursor".into(),
                        description: "not a cursor this facade gave (pass CallEvent.cursor back as it is)".into(),
                    });
                    Start::Live
                }
            },
        };
        if !violations.is_empty() {
            return Err(fail_with(&ctx.request_id, FacadeError::Invalid(ValidationError { violations })));
        }
        // A caller's own name for a session (its external session id, a campaign chunk's key)
        // watches that session.
        let mut session_id = request.session_id.clone();
        if !session_id.is_empty() {
            let resolved = self.events.session_id_of(tenant.clone(), session_id.clone()).await;
            if let Some(id) = resolved.map_err(|e| fail_with(&ctx.request_id, store_error(e, None)))? {
                session_id = id;
            }
        }
        let filter = Filter {
            tenant,
            session_id,
            phone_national: if phone.is_empty() { String::new() } else { national(phone) },
        };
        let subscription =
            self.events.subscribe(filter, start).await.map_err(|e| fail_with(&ctx.request_id, store_error(e, None)))?;
        let state = Watch {
            subscription,
            shutdown: self.shutdown.clone(),
            revoked,
            last: None,
            request_id: ctx.request_id.clone(),
            done: false,
            _watching: Watching::new(self.metrics.events().watchers().clone()),
        };
        let stream = futures::stream::unfold(state, |mut w| async move {
            if w.done {
                return None;
            }
            let next = {
                let Watch { subscription, shutdown, revoked, .. } = &mut w;
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => None,
                    () = revoked => Some(Some(Err(None))),
                    next = subscription.next() => Some(next.map(|n| n.map_err(Some))),
                }
            };
            let err = match next {
                None => FacadeError::ShuttingDown { last_cursor: w.last.map(|c| c.encode()) },
                Some(Some(Err(None))) => FacadeError::CallerRevoked,
                Some(None) => return None,
                Some(Some(Ok(event))) => {
                    w.last = Some(event.cursor);
                    return Some((Ok(pb::WatchCallEventsResponse { event: Some(convert::event_to_pb(&event)) }), w));
                }
                Some(Some(Err(Some(e)))) => store_error(e, w.last.as_ref()),
            };
            w.done = true;
            let status = fail_with(&w.request_id, err);
            Some((Err(status), w))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    /// ListSessions: a page of the tenant's recorded sessions, newest first, each with its
    /// report's counts; a next-page token when the page is full and more follow.
    pub(super) async fn list_sessions_page(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let Call { ctx, tenant, .. } = self.call(&request)?;
        let listing = SessionListing::parse(request.into_inner())
            .map_err(|e| fail_with(&ctx.request_id, FacadeError::Invalid(e)))?;
        let query = SessionQuery {
            external_prefix: listing.campaign_id,
            created_after_ms: listing.created_after_ms,
            before: listing.after,
            // One more than the page: whether another page follows.
            limit: listing.page_size + 1,
        };
        let mut page = self
            .events
            .list_sessions(tenant, query)
            .await
            .map_err(|e| fail_with(&ctx.request_id, store_error(e, None)))?;
        let more = page.len() > listing.page_size;
        page.truncate(listing.page_size);
        let sessions: Vec<pb::SessionSummary> = page
            .iter()
            .filter_map(|facts| facts.record.as_ref().map(|r| convert::summary_to_pb(r, &report::build(facts))))
            .collect();
        let next_page_token = match page.last().and_then(|f| f.record.as_ref()) {
            Some(last) if more => encode_token(last.created_at_ms, &last.session_id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListSessionsResponse { sessions, next_page_token }))
    }

    /// GetSessionReport.
    pub(super) async fn session_report(
        &self,
        request: Request<pb::GetSessionReportRequest>,
    ) -> Result<Response<pb::GetSessionReportResponse>, Status> {
        let Call { ctx, tenant, .. } = self.call(&request)?;
        let session_id = request.into_inner().session_id;
        let mut violations = Vec::new();
        check_session_id(&session_id, true, &mut violations);
        if !violations.is_empty() {
            return Err(fail_with(&ctx.request_id, FacadeError::Invalid(ValidationError { violations })));
        }
        let facts = self
            .events
            .session(tenant, session_id.clone())
            .await
            .map_err(|e| fail_with(&ctx.request_id, store_error(e, None)))?
            .ok_or_else(|| fail_with(&ctx.request_id, FacadeError::SessionNotFound))?;
        let report = report::build(&facts);
        // Asked by the caller's own id, answered with the session's.
        let session_id = facts.record.as_ref().map_or(session_id, |r| r.session_id.clone());
        Ok(Response::new(convert::report_to_pb(session_id, report)))
    }
}
