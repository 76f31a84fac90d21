//! `CreateCampaign`'s engine: cut a client stream of contacts into chunks and start one upstream
//! session per chunk, keyed `<campaign_id>-<chunk index>`, answering one message per chunk.
//!
//! Memory is bounded by one chunk plus one request message: the next message is read only
//! while the current chunk is not full, and a chunk is sent (and answered) before any more
//! contacts are read. The answer channel is bounded, so a caller that stops reading, or a slow
//! upstream, stops the reading of contacts: backpressure runs end to end over HTTP/2 flow
//! control. A chunk key the upstream already has (a re-run after a crash or a dropped stream)
//! answers `resumed = true` instead of failing, so re-running a campaign starts no call twice.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use tokio::{sync::mpsc, time::Instant};
use tonic::Status;

use crate::{
    admission::{gate, refused_by_upstream},
    convert, deadline,
    domain::{CampaignPlan, NewSession, ScriptVariables, ValidationError, campaign as rules},
    events::{SessionLog, log::Started},
    metrics::Metrics,
    pb::{self, create_campaign_request::Item},
    policy::{self, Policy},
    status::{ErrorContext, FacadeError, to_status},
    upstream::{CallContext, UpstreamClient, UpstreamError},
};

/// Why a campaign stopped early.
#[derive(Debug)]
pub enum Stop {
    /// A failure to report to the caller (validation, upstream, deadline).
    Failed(FacadeError, Option<String>),
    /// The caller's request stream failed (cancelled, reset, undecodable): this status.
    Stream(Status),
    /// The caller stopped reading answers: nobody to report to.
    CallerGone,
}

impl From<ValidationError> for Stop {
    fn from(e: ValidationError) -> Self {
        Stop::Failed(FacadeError::Invalid(e), None)
    }
}

impl Stop {
    /// The status that tells the caller why the campaign stopped.
    pub fn into_status(self, ctx: &CallContext) -> Status {
        match self {
            Stop::Failed(err, key) => {
                to_status(&err, &ErrorContext { request_id: &ctx.request_id, external_session_id: key.as_deref() })
            }
            Stop::Stream(status) => status,
            Stop::CallerGone => Status::cancelled("the caller went away"),
        }
    }
}

/// The next message's item, waiting at most until `deadline`; `None` when the caller closed
/// its side.
async fn next_item<S>(incoming: &mut S, deadline: Option<Instant>) -> Result<Option<Item>, Stop>
where
    S: Stream<Item = Result<pb::CreateCampaignRequest, Status>> + Unpin,
{
    let next = match deadline {
        Some(d) => tokio::time::timeout_at(d, incoming.next())
            .await
            .map_err(|_| Stop::Failed(FacadeError::Upstream(UpstreamError::DeadlineExceeded), None))?,
        None => incoming.next().await,
    };
    match next {
        None => Ok(None),
        Some(Err(status)) => Err(Stop::Stream(status)),
        Some(Ok(pb::CreateCampaignRequest { item: Some(item) })) => Ok(Some(item)),
        Some(Ok(pb::CreateCampaignRequest { item: None })) => Err(rules::item_missing().into()),
    }
}

/// Reads the first message, which must carry the spec.
pub async fn read_spec<S>(incoming: &mut S, deadline: Option<Instant>) -> Result<pb::CampaignSpec, Stop>
where
    S: Stream<Item = Result<pb::CreateCampaignRequest, Status>> + Unpin,
{
    match next_item(incoming, deadline).await? {
        Some(Item::Spec(spec)) => Ok(spec),
        Some(Item::Batch(_)) | None => Err(rules::spec_missing().into()),
    }
}

/// One campaign, after its spec was read and validated.
pub struct CampaignRun {
    /// Starts the sessions.
    pub upstream: Arc<UpstreamClient>,
    /// The validated spec.
    pub plan: CampaignPlan,
    /// The script's variables, when `check_variables` is on.
    pub variables: Option<ScriptVariables>,
    /// Tenant, request id, trace headers; its deadline is renewed for each chunk.
    pub ctx: CallContext,
    /// The caller's deadline for the whole stream, if any.
    pub stream_deadline: Option<Instant>,
    /// Bound of one chunk's upstream exchange.
    pub upstream_timeout: Duration,
    /// Where each started chunk's session is recorded (for its report).
    pub sessions: SessionLog,
    /// The calling policy, applied to every chunk before it is sent.
    pub policy: Policy,
    /// The policy's counters.
    pub metrics: Arc<Metrics>,
    /// The caller's tenant.
    pub tenant: Arc<str>,
}

/// What a finished campaign did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Chunks answered.
    pub chunks: u64,
    /// Of which the upstream already had.
    pub resumed: u64,
    /// Contacts accepted.
    pub contacts: u64,
}

impl CampaignRun {
    /// Runs the campaign to its end, answering on `tx`; a failure ends the answer stream with
    /// its status, after the answers of every chunk already started.
    pub async fn run<S>(self, mut incoming: S, tx: mpsc::Sender<Result<pb::CreateCampaignResponse, Status>>)
    where
        S: Stream<Item = Result<pb::CreateCampaignRequest, Status>> + Unpin,
    {
        let mut tally = Tally::default();
        let result = self.drive(&mut incoming, &tx, &mut tally).await;
        let campaign_id = &self.plan.campaign_id;
        let request_id = &self.ctx.request_id;
        match result {
            Ok(()) => tracing::info!(
                %request_id, %campaign_id, chunks = tally.chunks, resumed = tally.resumed, contacts = tally.contacts,
                "campaign streamed"
            ),
            Err(Stop::CallerGone) => tracing::info!(
                %request_id, %campaign_id, chunks = tally.chunks, contacts = tally.contacts,
                "campaign caller went away; stopping"
            ),
            Err(stop) => {
                tracing::info!(%request_id, %campaign_id, chunks = tally.chunks, "campaign stopped early");
                let _ = tx.send(Err(stop.into_status(&self.ctx))).await;
            }
        }
    }

    async fn drive<S>(
        &self,
        incoming: &mut S,
        tx: &mpsc::Sender<Result<pb::CreateCampaignResponse, Status>>,
        tally: &mut Tally,
    ) -> Result<(), Stop>
    where
        S: Stream<Item = Result<pb::CreateCampaignRequest, Status>> + Unpin,
    {
        let size = self.plan.chunk_size;
        // The rest of the last batch read; never more than one request message.
        let mut pending = Vec::new().into_iter();
        let mut chunk = Vec::with_capacity(size);
        let mut closed = false;
        let mut index: u64 = 0;
        // Contacts accepted so far, which is also the global index of the next chunk's first.
        let mut total: usize = 0;
        // With schedule_within_calling_hours: the previous chunk's projected end.
        // The first chunk starts at the spec's start_time (or now), so a re-run schedules the same way.
        let first = policy::session::start(self.plan.template()).unwrap_or_else(|| self.policy.now());
        let mut after = self.plan.schedule_within_calling_hours.then_some(first);
        loop {
            while chunk.len() < size {
                if let Some(contact) = pending.next() {
                    chunk.push(contact);
                    continue;
                }
                if closed {
                    break;
                }
                match next_item(incoming, self.stream_deadline).await? {
                    None => closed = true,
                    Some(Item::Batch(batch)) => pending = batch.contacts.into_iter(),
                    Some(Item::Spec(_)) => return Err(rules::spec_repeated().into()),
                }
            }
            if chunk.is_empty() {
                break;
            }
            let contacts = std::mem::replace(&mut chunk, Vec::with_capacity(size));
            let count = contacts.len();
            let mut session = self.plan.chunk(index, total, contacts)?;
            if let Some(variables) = &self.variables {
                variables.check(&session.contacts, total)?;
            }
            let key = self.plan.key(index);
            let (verdict, rejections) = gate(&self.policy, &self.metrics, &self.tenant, &mut session, &key, after)
                .await
                .map_err(|e| Stop::Failed(e, Some(key.clone())))?;
            if after.is_some() {
                after = Some(verdict.end);
            }
            let (mut session, resumed) = self.start(&session, &verdict).await?;
            session.start_time = verdict.shown_start().map(convert::timestamp_to_pb);
            let mut upstream = std::mem::replace(&mut session.rejected_contacts, rejections);
            session.rejected_contacts.append(&mut upstream);
            total += count;
            let answer = pb::CreateCampaignResponse {
                chunk_index: i64::try_from(index).unwrap_or(i64::MAX),
                session: Some(session),
                contacts_total: i64::try_from(total).unwrap_or(i64::MAX),
                resumed,
            };
            tx.send(Ok(answer)).await.map_err(|_| Stop::CallerGone)?;
            tally.chunks += 1;
            tally.resumed += u64::from(resumed);
            tally.contacts = total as u64;
            index += 1;
        }
        if index == 0 {
            return Err(rules::no_contacts().into());
        }
        Ok(())
    }

    /// Starts one chunk's session; `resumed` when the upstream already had its key. A resumed
    /// chunk's session id is unknown: the duplicate answer carries only an error code.
    async fn start(&self, session: &NewSession, verdict: &policy::Verdict) -> Result<(pb::Session, bool), Stop> {
        let key = session.external_session_id.clone().unwrap_or_default();
        let mut ctx = self.ctx.clone();
        ctx.deadline = deadline::for_exchange(self.upstream_timeout, self.stream_deadline);
        let body = convert::execute_body(session, &key);
        match self.upstream.execute_by_phone(&ctx, &body).await {
            Ok(outcome) => {
                tracing::info!(
                    request_id = %ctx.request_id,
                    key = %key,
                    session_id = %outcome.autocall_id,
                    contacts = session.contacts.len(),
                    rejected = outcome.rejections.len(),
                    "campaign chunk started"
                );
                let phones: Vec<String> = session.contacts.iter().map(|c| c.phone.clone()).collect();
                let refused: Vec<String> = outcome.rejections.iter().map(|r| r.phone.clone()).collect();
                if let Some((purpose, _)) = &verdict.reserved {
                    let numbers: Vec<u64> = refused.iter().filter_map(|p| policy::dnc::key(p)).collect();
                    self.policy.release(&self.tenant, *purpose, &numbers, &key).await;
                }
                let redials = u32::try_from(session.retry_count.unwrap_or(0)).unwrap_or(0);
                let started = Started {
                    session_id: &outcome.autocall_id,
                    external_id: &key,
                    script_id: &session.script_id,
                    name: session.name.as_deref().unwrap_or_default(),
                    purpose: session.purpose,
                    verdict,
                };
                self.sessions.record(started, phones, &outcome.rejections, redials).await;
                Ok((convert::session_to_pb(outcome, &session.script_id, key), false))
            }
            Err(e) if e.is_duplicate_session() => {
                tracing::info!(request_id = %ctx.request_id, key = %key, "campaign chunk already started: resumed");
                Ok((convert::resumed_session_to_pb(&session.script_id, key), true))
            }
            Err(e) => {
                if let Some((purpose, numbers)) = verdict.reserved.as_ref().filter(|_| refused_by_upstream(&e)) {
                    self.policy.release(&self.tenant, *purpose, numbers, &key).await;
                }
                Err(Stop::Failed(FacadeError::Upstream(e), Some(key)))
            }
        }
    }
}
