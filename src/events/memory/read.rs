//! Reading the embedded store: where a subscription starts, the batches a watcher copies under
//! the lock, and the reader that waits on its own `Notify` (woken only by the events its filter
//! may take), deregistered when dropped.

use std::{collections::VecDeque, sync::Arc};

use tokio::sync::Notify;

use super::{READ_BATCH, SCAN_BATCH, Shared, WaitKey};
use crate::{
    domain::national,
    events::{Filter, Start, StoreError, StoredEvent, Subscription},
};

impl Shared {
    /// Where a subscription starting at `start` begins, or why it cannot.
    fn start_seq(&self, start: Start) -> Result<u64, StoreError> {
        let now = (self.clock)();
        let mut g = self.lock();
        self.expire(&mut g, now);
        let next = g.first_seq + g.events.len() as u64;
        let earliest = self.cursor(g.first_seq - 1);
        match start {
            Start::Live => Ok(next),
            Start::Replay => Ok(g.first_seq),
            Start::After(c) if c.store != self.id => Err(StoreError::CursorExpired { earliest }),
            Start::After(c) if c.seq.saturating_add(1) < g.first_seq => Err(StoreError::CursorExpired { earliest }),
            Start::After(c) => Ok(c.seq.saturating_add(1).min(next)),
        }
    }

    /// Copies the next matching events from `*next` on into `out`; `Err` when `*next` has
    /// left the window.
    /// `Ok(true)` when `*next` reached the end of the ring.
    fn read(&self, filter: &Filter, next: &mut u64, out: &mut VecDeque<StoredEvent>) -> Result<bool, StoreError> {
        let now = (self.clock)();
        let mut g = self.lock();
        self.expire(&mut g, now);
        if *next < g.first_seq {
            return Err(StoreError::CursorExpired { earliest: self.cursor(g.first_seq - 1) });
        }
        let from = usize::try_from(*next - g.first_seq).unwrap_or(usize::MAX);
        let tenant = g.tenants.find(&filter.tenant);
        for (i, slot) in g.events.iter().enumerate().skip(from).take(SCAN_BATCH) {
            *next = g.first_seq + i as u64 + 1;
            let e = &slot.event;
            if Some(slot.tenant) != tenant
                || (!filter.session_id.is_empty() && *e.session_id != *filter.session_id)
                || (!filter.phone_national.is_empty() && national(&e.phone) != filter.phone_national)
            {
                continue;
            }
            out.push_back(slot.stored(&g.words, self.cursor(*next - 1)));
            if out.len() >= READ_BATCH {
                break;
            }
        }
        Ok(*next >= g.first_seq + g.events.len() as u64)
    }
}

struct Reader {
    shared: Arc<Shared>,
    filter: Filter,
    next: u64,
    buffer: VecDeque<StoredEvent>,
    /// Woken by appends of events this reader's filter may take.
    notify: Arc<Notify>,
    waiter: (WaitKey, u64),
    done: bool,
}

impl Reader {
    async fn next_event(&mut self) -> Option<Result<StoredEvent, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(e) = self.buffer.pop_front() {
                return Some(Ok(e));
            }
            let caught_up = match self.shared.read(&self.filter, &mut self.next, &mut self.buffer) {
                Ok(caught_up) => caught_up,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            // An append after the read left a permit: the wait returns at once.
            if self.buffer.is_empty() && caught_up {
                self.notify.notified().await;
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        let (key, id) = &self.waiter;
        if let Some(list) = g.waiters.get_mut(key) {
            list.retain(|(i, _)| i != id);
            if list.is_empty() {
                g.waiters.remove(key);
            }
        }
    }
}

/// A reader of `shared` from `start`, registered to be woken by the events `filter` may take.
pub(super) fn subscribe(shared: &Arc<Shared>, filter: Filter, start: Start) -> Result<Subscription, StoreError> {
    shared.start_seq(start).map(|next| {
        let notify = Arc::new(Notify::new());
        let waiter = {
            let mut g = shared.lock();
            // Not interned here: only the receiver's (verified) tenants enter the table.
            let tenant = filter.tenant.clone();
            let session: Arc<str> = Arc::from(filter.session_id.as_str());
            let id = g.next_waiter;
            g.next_waiter += 1;
            g.waiters.entry((tenant.clone(), session.clone())).or_default().push((id, notify.clone()));
            ((tenant, session), id)
        };
        let reader =
            Reader { shared: shared.clone(), filter, next, buffer: VecDeque::new(), notify, waiter, done: false };
        let stream = futures::stream::unfold(reader, |mut r| async move { r.next_event().await.map(|e| (e, r)) });
        Box::pin(stream) as Subscription
    })
}
