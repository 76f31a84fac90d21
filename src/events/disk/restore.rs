//! Opening the disk store: its identity (made and made durable on first use), then the replay
//! of what it kept into the memory store, in the order it happened: session records before the
//! events stored after them, events by sequence number, fact keys by the time they were
//! remembered. What has expired meanwhile leaves at the end (and from disk).

use std::{collections::HashMap, sync::Arc};

use tokio::sync::watch;

use super::{DiskJournal, DiskStore, EVENTS_AT, Inner, KEYS_AT, Partitions, SESSIONS_AT, codec, follow};
use crate::{
    events::{
        TenantId,
        memory::{Bounds, Clock, Identity, MemoryStore},
    },
    storage::{Batch, DataDir, StorageError, one_line},
};

impl DiskStore {
    /// Opens the event store in `dir` and replays it; an error (one line, naming the path) for a
    /// store that cannot be read: it is never replaced.
    pub(crate) async fn open(dir: Arc<DataDir>, bounds: Bounds, clock: Clock) -> Result<DiskStore, StorageError> {
        let bad = |why: String| StorageError::Open { path: dir.store_path().to_owned(), why };
        let read = |e: fjall::Error| bad(format!("the event store cannot be read: {}", one_line(e)));
        let parts = Partitions::open(&dir)?;
        let identity = match parts.meta.get(codec::IDENTITY_KEY).map_err(read)? {
            Some(bytes) => codec::read_identity(&bytes).map_err(|why| bad(format!("the event store: {why}")))?,
            None => {
                if !parts.events.is_empty().map_err(read)? || !parts.sessions.is_empty().map_err(read)? {
                    return Err(bad("the event store holds events but no identity (damaged?)".to_owned()));
                }
                let identity = Identity::random(clock());
                let mut batch = Batch::new();
                batch.put(&parts.meta, codec::IDENTITY_KEY.to_vec(), codec::identity_value(&identity));
                dir.commit(batch).await?;
                identity
            }
        };
        let journal = Arc::new(DiskJournal::new(dir.clone(), parts.clone(), bounds.max_events));
        let memory = MemoryStore::with_journal(bounds, clock, identity, Some(journal.clone() as _));

        // Each tenant's events and fact keys counted first, so that its rings are made to their
        // size once: grown one step at a time, they would leave every smaller copy with the
        // allocator, which keeps freed memory resident for a while (about 20 MiB at 100,000 events:
        // BENCHMARKS.md, "Durable event store", "the restart's peak").
        let mut counts: HashMap<Box<str>, (usize, usize)> = HashMap::new();
        let mut count = |tenant: Option<&str>, which: fn(&mut (usize, usize)) -> &mut usize| {
            let tenant = tenant
                .ok_or_else(|| bad("an event or fact id of the event store cannot be read (damaged?)".to_owned()))?;
            match counts.get_mut(tenant) {
                Some(c) => *which(c) += 1,
                None => *which(counts.entry(Box::from(tenant)).or_default()) += 1,
            }
            Ok::<_, StorageError>(())
        };
        let (mut events_read, mut keys_read) = (0, 0);
        for kv in parts.events.iter() {
            let (_, value) = kv.map_err(read)?;
            count(codec::event_tenant(&value), |c| &mut c.0)?;
            events_read += 1;
        }
        for kv in parts.keys.iter() {
            let (_, value) = kv.map_err(read)?;
            count(std::str::from_utf8(&value).ok(), |c| &mut c.1)?;
            keys_read += 1;
        }
        for (tenant, (events, keys)) in counts {
            memory.restore_reserve(&TenantId::from(&*tenant), events, keys);
        }

        // Session records, in the order they were made among the events.
        let mut records = Vec::new();
        for kv in parts.sessions.iter() {
            let (key, value) = kv.map_err(read)?;
            let tenant = key.split(|b| *b == 0).next().and_then(|t| std::str::from_utf8(t).ok());
            let (Some(tenant), Ok(r)) = (tenant, serde_json::from_slice::<codec::RecordIn>(&value)) else {
                return Err(bad("a session record of the event store cannot be read (damaged?)".to_owned()));
            };
            records.push((r.before, r.at, TenantId::from(tenant), r.r));
        }
        let sessions_read = records.len();
        records.sort_by_key(|(before, at, _, _)| (*before, *at));
        let mut records = records.into_iter().peekable();
        let mut next_seq = 1;
        for kv in parts.events.iter() {
            let (key, value) = kv.map_err(read)?;
            let (Some(seq), Some(e)) = (codec::read_u64(&key), codec::read_event(&value)) else {
                return Err(bad("an event of the event store cannot be read (damaged?)".to_owned()));
            };
            while let Some((_, at, tenant, record)) = records.next_if(|(before, _, _, _)| *before <= seq) {
                memory.restore_record(&tenant, record, at);
            }
            memory.restore_event(seq, &e.t, e.at, e.e);
            next_seq = seq + 1;
        }
        for (_, at, tenant, record) in records {
            memory.restore_record(&tenant, record, at);
        }
        for kv in parts.keys.iter() {
            let (key, value) = kv.map_err(read)?;
            let (Some((at, key)), Ok(tenant)) = (codec::read_fact_key(&key), std::str::from_utf8(&value)) else {
                return Err(bad("a fact id of the event store cannot be read (damaged?)".to_owned()));
            };
            memory.restore_key(&TenantId::from(tenant), key, at);
        }
        for kv in parts.meta.prefix(codec::EVICTED_PREFIX) {
            let (key, value) = kv.map_err(read)?;
            let tenant = std::str::from_utf8(&key[codec::EVICTED_PREFIX.len()..]).ok();
            let (Some(tenant), Some(seq)) = (tenant, codec::read_u64(&value)) else {
                return Err(bad("an evicted mark of the event store cannot be read (damaged?)".to_owned()));
            };
            memory.restore_evicted_through(&TenantId::from(tenant), seq);
            next_seq = next_seq.max(seq + 1);
        }
        if let Some(ticket) = memory.restored(next_seq) {
            dir.durable(ticket).await?;
        }

        // Tombstones left by an earlier run (by a version before whole compactions, or one
        // stopped before its next): compacted in the background, for the next start.
        for (at, read) in [(EVENTS_AT, events_read), (KEYS_AT, keys_read), (SESSIONS_AT, sessions_read)] {
            journal.compact_if_littered(at, read);
        }

        let (up_tx, up) = watch::channel(true);
        let inner = Arc::new(Inner { memory, journal, dir: dir.clone(), up });
        dir.on_durable(follow(Arc::downgrade(&inner), up_tx));
        Ok(DiskStore { inner })
    }
}
