//! WatchCallEvents on JetStream: an ordered consumer filtered to the tenant's (or the session's)
//! subject, from the watcher's start; the phone filter is applied here.
//!
//! JetStream silently clips a start below the stream's first sequence, and skips messages that
//! expire before a slow consumer reads them: both are checked here against the stream's first
//! sequence, and end the subscription with `CursorExpired` rather than a silent gap. `next` is
//! the first stream sequence not accounted for: each message delivered advances it, and so does
//! an idle moment when the consumer had nothing pending (up to the stream's last sequence then).
//!
//! The check is conservative: when the stream's first sequence passed `next` between two messages
//! of this watcher (the whole stream turned over by `--events-max` with no idle second between),
//! the subscription ends with `CursorExpired` even if only other subjects' messages expired; the
//! watcher resumes from `earliest_cursor` (it may then see nothing missing).

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt as _;

use super::{Shared, matches};
use crate::events::{
    Filter, Start, StoreError, Subscription,
    jetstream_index::{EVENTS_PREFIX, WireEvent, event_subject, hash16},
};

/// After this long without a message, a caught-up watcher moves `next` to the stream's end.
const IDLE: Duration = Duration::from_secs(1);

struct Reader {
    shared: Arc<Shared>,
    filter: Filter,
    messages: async_nats::jetstream::consumer::pull::Ordered,
    next: u64,
    caught_up: bool,
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
    let config = OrderedConfig {
        filter_subject: subject,
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: next },
        ..Default::default()
    };
    let consumer = super::bounded("watch", super::ACK_TIMEOUT, shared.stream.create_consumer(config)).await?;
    let caught_up = consumer.cached_info().num_pending == 0;
    let messages = super::bounded("watch", super::ACK_TIMEOUT, consumer.messages()).await?;
    let reader = Reader { shared, filter, messages, next, caught_up, done: false };
    let stream = futures::stream::unfold(reader, |mut r| async move { r.next_event().await.map(|e| (e, r)) });
    Ok(Box::pin(stream))
}

impl Reader {
    async fn next_event(&mut self) -> Option<Result<crate::events::CallEvent, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            let next = match tokio::time::timeout(IDLE, self.messages.next()).await {
                Ok(next) => next,
                Err(_) => {
                    if self.caught_up {
                        match self.shared.bounds().await {
                            Ok((_, last)) => self.next = self.next.max(last + 1),
                            Err(e) => return self.fail(e),
                        }
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
            let (seq, pending) = (info.stream_sequence, info.pending);
            self.caught_up = pending == 0;
            // A sequence below `next` comes after an idle move (the ordered consumer never
            // redelivers): new to this watcher. Above it: other subjects' messages, or ours that
            // expired.
            if seq > self.next {
                match self.shared.bounds().await {
                    Ok((first, _)) if first > self.next => {
                        return self.fail(StoreError::CursorExpired { earliest: self.shared.cursor(first - 1) });
                    }
                    Ok(_) => {}
                    Err(e) => return self.fail(e),
                }
            }
            self.next = self.next.max(seq + 1);
            let Ok(wire) = serde_json::from_slice::<WireEvent>(&message.payload) else { continue };
            if !matches(&self.filter, &wire) {
                continue;
            }
            if let Some(event) = wire.to_event(self.shared.cursor(seq)) {
                return Some(Ok(event));
            }
        }
    }

    fn fail(&mut self, e: StoreError) -> Option<Result<crate::events::CallEvent, StoreError>> {
        self.done = true;
        Some(Err(e))
    }
}
