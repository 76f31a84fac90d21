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
    /// Where a subscription of `filter`'s tenant starting at `start` begins, or why it cannot.
    fn start_seq(&self, filter: &Filter, start: Start) -> Result<u64, StoreError> {
        let now = (self.clock)();
        let mut g = self.lock();
        let t = g.tenants.find(&filter.tenant);
        self.expire(&mut g, now, t);
        self.submit(&mut g);
        let evicted_through = t.and_then(|t| g.rings.get(&t)).map_or(0, |r| r.evicted_through);
        let earliest = self.cursor(evicted_through);
        match start {
            // From the first event not yet seen by watchers (with a journal: not yet durable).
            Start::Live => Ok(self.visible(&g) + 1),
            Start::Replay => Ok(evicted_through + 1),
            Start::After(c) if c.store != self.id => Err(StoreError::CursorExpired { earliest }),
            Start::After(c) if c.seq < evicted_through => Err(StoreError::CursorExpired { earliest }),
            Start::After(c) => Ok(c.seq.saturating_add(1).min(g.next_seq)),
        }
    }

    /// Copies the next matching events of the filter's tenant from `*next` on into `out`; `Err`
    /// when an event of the tenant at or after `*next` has left. `Ok(true)` when `*next` reached
    /// the end of the tenant's ring.
    fn read(&self, filter: &Filter, next: &mut u64, out: &mut VecDeque<StoredEvent>) -> Result<bool, StoreError> {
        let now = (self.clock)();
        let mut g = self.lock();
        let Some(t) = g.tenants.find(&filter.tenant) else {
            return Ok(true);
        };
        self.expire(&mut g, now, Some(t));
        self.submit(&mut g);
        let visible = self.visible(&g);
        let Some(ring) = g.rings.get(&t) else {
            return Ok(true);
        };
        if *next <= ring.evicted_through {
            return Err(StoreError::CursorExpired { earliest: self.cursor(ring.evicted_through) });
        }
        let from = ring.events.partition_point(|(seq, _)| *seq < *next);
        let mut scanned = 0;
        for (seq, slot) in ring.events.iter().skip(from).take(SCAN_BATCH) {
            if *seq > visible {
                // Not durable yet: the reader waits for `made_durable` to wake it.
                return Ok(true);
            }
            scanned += 1;
            *next = seq + 1;
            let e = &slot.event;
            if (!filter.session_id.is_empty() && *e.session_id != *filter.session_id)
                || (!filter.phone_national.is_empty() && national(&e.phone) != filter.phone_national)
            {
                continue;
            }
            out.push_back(slot.stored(&g.words, self.cursor(*seq)));
            if out.len() >= READ_BATCH {
                break;
            }
        }
        Ok(from + scanned >= ring.events.len())
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
    shared.start_seq(&filter, start).map(|next| {
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
