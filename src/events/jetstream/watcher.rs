//! WatchCallEvents on JetStream: an ordered consumer filtered to the tenant's (or the session's)
//! subject, from the watcher's start; the phone filter is applied here.
//!
//! JetStream silently clips a start below the stream's first sequence: checked at the start. And
//! it skips messages that leave the stream (by `--events-max` or the retention) before a slow
//! consumer reads them: each message delivered is checked against the index's chains
//! (`index::Chains`: the previous event on the same session's subject, or of the same
//! tenant). When that previous event came after the last one this consumer delivered, it was
//! missed, and the subscription ends with `CursorExpired` rather than a silent gap. A sequence
//! jump made of other sessions' events is no gap. Where the chains do not reach back (the
//! watcher is more than `--events-max` events behind, or the index itself missed some), the check
//! falls back to the stream's first sequence, which may end a subscription that missed nothing.
//!
//! An ordered consumer lives on one NATS server. When that server dies, the client notices only
//! after two missed idle heartbeats (async-nats: 15 s each), and a consumer recreated during a
//! leader election can stay silent longer (seen in the three-node kill test). So a watcher that
//! has been quiet for [`PATIENCE`] while the stream moved past what it delivered makes its
//! consumer again from there: nothing is missed or repeated (it resumes at `mark + 1`). The
//! stream also moves with other tenants' and sessions' events, which this watcher rightly never
//! gets: each resubscription that brings nothing doubles the patience, up to [`MAX_PATIENCE`].

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt as _;

use super::{
    Shared, matches,
    wire::{self, EVENTS_PREFIX, event_subject, hash16},
};
use crate::events::{CallEvent, Filter, Start, StoreError, StoredEvent, Subscription};

/// After this long without a message, a watcher checks the stream is still reachable.
const IDLE: Duration = Duration::from_secs(1);
/// How long a watcher waits for the index to note a message it was delivered.
const NOTED: Duration = Duration::from_secs(2);
/// How long a watcher stays quiet, while the stream moves past it, before it makes its consumer
/// again (doubling while that brings nothing, up to [`MAX_PATIENCE`]).
const PATIENCE: Duration = Duration::from_secs(5);
const MAX_PATIENCE: Duration = Duration::from_secs(300);

struct Reader {
    shared: Arc<Shared>,
    filter: Filter,
    /// The consumer's filter subject.
    subject: String,
    messages: async_nats::jetstream::consumer::pull::Ordered,
    /// Since when nothing came, and how long to wait so before making the consumer again.
    quiet_since: tokio::time::Instant,
    patience: Duration,
    /// The last stream sequence this consumer delivered (its start − 1 before the first).
    mark: u64,
    /// The index's progress.
    applied: watch::Receiver<u64>,
    done: bool,
}

pub(super) async fn subscribe(shared: Arc<Shared>, filter: Filter, start: Start) -> Result<Subscription, StoreError> {
    shared.check_up()?;
    let (first, last) = shared.bounds().await?;
    let earliest = shared.cursor(first - 1);
    let next = match start {
        Start::Live => last + 1,
        Start::Replay => first,
        Start::After(c) if c.store != shared.id => return Err(StoreError::CursorExpired { earliest }),
        Start::After(c) if c.seq.saturating_add(1) < first => return Err(StoreError::CursorExpired { earliest }),
        Start::After(c) => c.seq.saturating_add(1).min(last + 1),
    };
    let subject = if filter.session_id.is_empty() {
        format!("{EVENTS_PREFIX}{}.>", hash16(&filter.tenant))
    } else {
        event_subject(&filter.tenant, &filter.session_id)
    };
    let messages = consume(&shared, &subject, next).await?;
    let applied = shared.applied.subscribe();
    let reader = Reader {
        shared,
        filter,
        subject,
        messages,
        quiet_since: tokio::time::Instant::now(),
        patience: PATIENCE,
        mark: next - 1,
        applied,
        done: false,
    };
    let stream = futures::stream::unfold(reader, |mut r| async move { r.next_event().await.map(|e| (e, r)) });
    Ok(Box::pin(stream))
}

/// An ordered consumer of `subject` from the stream sequence `next`.
async fn consume(
    shared: &Shared,
    subject: &str,
    next: u64,
) -> Result<async_nats::jetstream::consumer::pull::Ordered, StoreError> {
    let config = OrderedConfig {
        filter_subject: subject.to_owned(),
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: next },
        ..Default::default()
    };
    let consumer = super::bounded("watch", super::ACK_TIMEOUT, shared.stream.create_consumer(config)).await?;
    super::bounded("watch", super::ACK_TIMEOUT, consumer.messages()).await
}

impl Reader {
    async fn next_event(&mut self) -> Option<Result<StoredEvent, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            let next = match tokio::time::timeout(IDLE, self.messages.next()).await {
                Ok(next) => next,
                Err(_) => {
                    // Quiet: make sure the store is still there (a consumer whose server went away
                    // may wait in silence; the watcher then resumes elsewhere by its cursor).
                    let last = match self.shared.bounds().await {
                        Ok((_, last)) => last,
                        Err(e) => return self.fail(e),
                    };
                    if last > self.mark && self.quiet_since.elapsed() >= self.patience {
                        tracing::debug!(
                            mark = self.mark,
                            last,
                            "watch: quiet while the stream moved on; consuming again"
                        );
                        match consume(&self.shared, &self.subject, self.mark + 1).await {
                            Ok(messages) => self.messages = messages,
                            Err(e) => return self.fail(e),
                        }
                        self.quiet_since = tokio::time::Instant::now();
                        self.patience = (self.patience * 2).min(MAX_PATIENCE);
                    }
                    continue;
                }
            };
            let message = match next {
                None => return self.fail(StoreError::Unavailable("NATS JetStream: the watch consumer ended".into())),
                Some(Err(e)) => return self.fail(super::unavailable("watch", e)),
                Some(Ok(m)) => m,
            };
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            if seq <= self.mark {
                continue;
            }
            if let Err(e) = self.check_gap(seq).await {
                return self.fail(e);
            }
            self.mark = seq;
            (self.quiet_since, self.patience) = (tokio::time::Instant::now(), PATIENCE);
            let Some((tenant, event)) = wire::decode::<CallEvent>(&message.payload) else { continue };
            if matches(&self.filter, &tenant, &event) {
                return Some(Ok(StoredEvent { cursor: self.shared.cursor(seq), event }));
            }
        }
    }

    /// `CursorExpired` when the message at `seq` shows an earlier one of this filter was missed.
    async fn check_gap(&mut self, seq: u64) -> Result<(), StoreError> {
        if seq == self.mark + 1 {
            return Ok(());
        }
        let noted = tokio::time::timeout(NOTED, self.applied.wait_for(|a| *a >= seq)).await.is_ok_and(|r| r.is_ok());
        let link = if noted { self.shared.lock().chains.link(seq) } else { None };
        let tenant_wide = self.filter.session_id.is_empty();
        let known = link.and_then(|l| l.reveals_gap(tenant_wide, self.mark));
        if known == Some(false) {
            return Ok(());
        }
        let (first, _) = self.shared.bounds().await?;
        // Without the chains: whether anything left the stream after `mark`.
        if known == Some(true) || first > self.mark + 1 {
            return Err(StoreError::CursorExpired { earliest: self.shared.cursor(first - 1) });
        }
        Ok(())
    }

    fn fail(&mut self, e: StoreError) -> Option<Result<StoredEvent, StoreError>> {
        self.done = true;
        Some(Err(e))
    }
}
