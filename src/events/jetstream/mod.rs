//! The NATS JetStream event store (`--events-nats-url`): every replica appends to and reads from
//! one stream, so a webhook delivered to any replica reaches the watchers of all, a fact delivered
//! to two replicas is stored once, and cursors work on every replica and after restarts.
//!
//! - Stream `--events-stream` (file storage), subjects `callbot.events.<tenant hash>.<session|_>`
//!   and `callbot.sessions.<tenant hash>.<session>` (session records travel with the events),
//!   `max_age` = `--events-retention`, `max_msgs` = `--events-max` (the whole stream),
//!   `duplicate_window` = the retention: JetStream recognizes a repeat by its `Nats-Msg-Id`
//!   (`<tenant>/<fact id>`), and the server keeps those ids (in memory) for the whole window.
//! - `append` answers once the PubAck came (bounded: [`ACK_TIMEOUT`]); a PubAck saying
//!   `duplicate` is [`Appended::Duplicate`]. The cursor is (store identity, stream sequence); the
//!   identity is derived from the stream's name and creation time.
//! - Attribution uses an index every replica builds by consuming the whole stream
//!   (`index.rs`); the messages' subjects, ids and bodies are `wire.rs`; connecting and the
//!   stream's configuration `connect.rs`; watchers `watcher.rs`.
//! - While NATS is unreachable, every method answers [`StoreError::Unavailable`]; the client
//!   reconnects on its own.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::{
    connection::State,
    jetstream::{
        self, Context,
        consumer::{DeliverPolicy, pull::OrderedConfig},
        message::PublishMessage,
        stream::Stream,
    },
};
use futures::{FutureExt as _, StreamExt as _, future::BoxFuture};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use super::{
    Appended, CallEvent, Cursor, EventStore, Filter, SessionFacts, SessionQuery, SessionRecord, Start, StoreError,
    StoredEvent, Subscription, TenantId,
    memory::unix_ms,
    store::{StoreStats, facts_of},
};
use crate::domain::national;
pub(crate) use connect::NatsConfig;
use index::Index;
use wire::{EVENTS_PREFIX, SESSIONS_PREFIX, event_subject, hash16, msg_id, session_subject};

mod connect;
pub(crate) use connect::connect;
mod index;
mod watcher;
mod wire;

/// How long an append waits for its PubAck.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the start waits for the server.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the start waits for the index to catch up with the stream.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How long a report's read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    client: async_nats::Client,
    js: Context,
    stream: Stream,
    id: u64,
    index: Mutex<Index>,
    applied: watch::Sender<u64>,
    up: watch::Sender<bool>,
    events: AtomicU64,
    stored: AtomicU64,
    duplicates: AtomicU64,
    /// The reconciliation leases (`claim`), opened at the first claim.
    leases: std::sync::OnceLock<jetstream::kv::Store>,
    /// This process among the replicas (a lease's holder; `id` is the stream's, the same on all).
    replica: u64,
}

/// The JetStream store. Cheap to clone.
#[derive(Clone)]
pub(crate) struct JetStreamStore {
    shared: Arc<Shared>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("NATS JetStream: {what}: {e}"))
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(what, e)),
        Err(_) => Err(unavailable(what, format!("no answer within {} ms", limit.as_millis()))),
    }
}

impl JetStreamStore {
    /// Connects (bounded), creates or checks the stream, and reads the stream into the index.
    /// The error is one line for the start-up failure.
    pub(crate) async fn open(config: NatsConfig) -> Result<Self, String> {
        let client = connect::connect(&config).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(ACK_TIMEOUT);
        let stream = connect::ensure_stream(&js, &config).await?;
        let info = stream.cached_info().clone();
        let mut h = Sha256::new();
        h.update(config.stream.as_bytes());
        h.update(info.created.unix_timestamp_nanos().to_be_bytes());
        let digest = h.finalize();
        let id = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
        let retention_ms = u64::try_from(config.retention.as_millis()).unwrap_or(u64::MAX);
        let shared = Arc::new(Shared {
            client,
            js,
            stream,
            id,
            index: Mutex::new(Index::new(retention_ms, usize::try_from(config.max_events).unwrap_or(usize::MAX))),
            applied: watch::channel(0).0,
            up: watch::channel(true).0,
            events: AtomicU64::new(info.state.messages),
            stored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            leases: std::sync::OnceLock::new(),
            replica: rand::random(),
        });
        tokio::spawn(follow(Arc::downgrade(&shared)));
        tokio::spawn(monitor(Arc::downgrade(&shared)));
        let last = info.state.last_sequence;
        let mut applied = shared.applied.subscribe();
        if tokio::time::timeout(CATCH_UP, applied.wait_for(|a| *a >= last)).await.is_err() {
            tracing::warn!(last, "the event index did not catch up with the stream in 30 s; serving anyway");
        }
        tracing::info!(stream = %config.stream, nats = %connect::shown(&config.url), events = info.state.messages, "event store: NATS JetStream");
        Ok(JetStreamStore { shared })
    }
}

/// Reads the whole stream into the index, then follows it (recreating the consumer after an error).
async fn follow(weak: std::sync::Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let start = *shared.applied.borrow() + 1;
        let config = OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start },
            ..Default::default()
        };
        let messages = match shared.stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "event index: consumer not created; retrying");
                drop(shared);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        drop(shared);
        while let Some(next) = messages.next().await {
            let Some(shared) = weak.upgrade() else { return };
            let Ok(message) = next else { break };
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            let now = unix_ms();
            let subject = message.subject.as_str();
            let mut index = shared.lock();
            index.chains.note(seq, subject);
            if subject.starts_with(EVENTS_PREFIX) {
                if let Some((tenant, event)) = wire::decode::<CallEvent>(&message.payload) {
                    index.apply_event(&tenant, &event, now);
                }
            } else if subject.starts_with(SESSIONS_PREFIX) {
                if let Some((tenant, record)) = wire::decode::<SessionRecord>(&message.payload) {
                    index.apply_session(&tenant, record, now);
                }
            }
            let applied = index.chains.seen();
            drop(index);
            shared.applied.send_replace(applied);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keeps `up` (health, the gauge) and the event count current.
async fn monitor(weak: std::sync::Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let up = shared.client.connection_state() == State::Connected
            && match tokio::time::timeout(Duration::from_secs(1), shared.stream.get_info()).await {
                Ok(Ok(info)) => {
                    shared.events.store(info.state.messages, Ordering::Relaxed);
                    true
                }
                _ => false,
            };
        shared.up.send_if_modified(|was| std::mem::replace(was, up) != up);
        drop(shared);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cursor(&self, seq: u64) -> Cursor {
        Cursor { store: self.id, seq }
    }

    fn check_up(&self) -> Result<(), StoreError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(StoreError::Unavailable(format!("NATS JetStream: not connected ({state:?})"))),
        }
    }

    /// (first, last) stream sequences now; first is `last + 1` when the stream is empty.
    async fn bounds(&self) -> Result<(u64, u64), StoreError> {
        let info = bounded("stream info", ACK_TIMEOUT, self.stream.get_info()).await?;
        Ok((info.state.first_sequence.max(1), info.state.last_sequence))
    }

    async fn publish(&self, subject: String, id: String, payload: Vec<u8>) -> Result<(u64, bool), StoreError> {
        self.check_up()?;
        let message = PublishMessage::build().payload(payload.into()).message_id(id);
        let ack = bounded("publish", ACK_TIMEOUT, async {
            let ack = self.js.send_publish(subject, message).await.map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        })
        .await?;
        Ok((ack.sequence, ack.duplicate))
    }

    async fn append(&self, tenant: TenantId, mut event: CallEvent) -> Result<Appended, StoreError> {
        self.check_up()?;
        let (session, attempt, contact_phone) = {
            let index = self.lock();
            let (session, attempt) = index.attribute(&tenant, &event);
            let contact_phone = session.as_ref().and_then(|s| index.contact_phone(&tenant, s, &event.phone));
            (session, attempt, contact_phone)
        };
        event.contact_phone = contact_phone.unwrap_or_else(crate::domain::no_text);
        event.session_id = session.unwrap_or_else(crate::domain::no_text);
        event.attempt = attempt;
        let id = msg_id(&tenant, &event.id());
        let subject = event_subject(&tenant, &event.session_id);
        let payload = wire::encode(&tenant, &event).map_err(|e| unavailable("encode", e))?;
        let (seq, duplicate) = self.publish(subject, id, payload).await?;
        if duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(Appended::Duplicate);
        }
        self.stored.fetch_add(1, Ordering::Relaxed);
        self.lock().apply_event(&tenant, &event, unix_ms());
        Ok(Appended::Stored(StoredEvent { cursor: self.cursor(seq), event }))
    }

    async fn record(&self, tenant: TenantId, record: SessionRecord) -> Result<(), StoreError> {
        let subject = session_subject(&tenant, &record.session_id);
        let id = msg_id(&tenant, &format!("session/{}", record.session_id));
        let payload = wire::encode(&tenant, &record).map_err(|e| unavailable("encode", e))?;
        self.publish(subject, id, payload).await?;
        self.lock().apply_session(&tenant, record, unix_ms());
        Ok(())
    }

    /// The reconciliation leases' bucket (`<stream>_RECONCILE`), opened or created (its max age
    /// is the lease: a lease ends by expiring) at the first claim.
    async fn leases(&self, lease: Duration) -> Result<jetstream::kv::Store, StoreError> {
        if let Some(kv) = self.leases.get() {
            return Ok(kv.clone());
        }
        let info = self.stream.cached_info();
        let bucket = format!("{}_RECONCILE", info.config.name);
        let kv = match bounded("lease bucket", ACK_TIMEOUT, self.js.get_key_value(bucket.clone())).await {
            Ok(kv) => kv,
            Err(_) => {
                let config = jetstream::kv::Config {
                    bucket,
                    history: 1,
                    max_age: lease.max(Duration::from_secs(1)),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: info.config.num_replicas,
                    ..Default::default()
                };
                bounded("lease bucket", ACK_TIMEOUT, self.js.create_key_value(config)).await?
            }
        };
        Ok(self.leases.get_or_init(|| kv).clone())
    }

    async fn claim(&self, tenant: TenantId, session_id: String, lease: Duration) -> Result<bool, StoreError> {
        self.check_up()?;
        let kv = self.leases(lease).await?;
        let key = format!("{}.{}", hash16(&tenant), wire::session_token(&session_id));
        let me = self.replica.to_string();
        match tokio::time::timeout(ACK_TIMEOUT, kv.create(&key, me.clone().into())).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if e.kind() == jetstream::kv::CreateErrorKind::AlreadyExists => {
                // Held: by this replica (a search it put off, a 429) it goes on; else it waits.
                let holder = bounded("lease", ACK_TIMEOUT, kv.get(&key)).await?;
                Ok(holder.is_some_and(|v| *v == *me.as_bytes()))
            }
            Ok(Err(e)) => Err(unavailable("lease", e)),
            Err(_) => Err(unavailable("lease", "no answer")),
        }
    }

    async fn session(&self, tenant: TenantId, session_id: String) -> Result<Option<SessionFacts>, StoreError> {
        self.check_up()?;
        let (record, resolved) = {
            let index = self.lock();
            (index.record(&tenant, &session_id), index.session_id_of(&tenant, &session_id))
        };
        let session_id = resolved.map_or(session_id, |s| s.to_string());
        let th = hash16(&tenant);
        // The session's subject, and the tenant's unattributed events (of its calls, if any).
        let all = self
            .read_events(&tenant, vec![event_subject(&tenant, &session_id), format!("{EVENTS_PREFIX}{th}._")])
            .await?;
        let calls: std::collections::HashSet<Arc<str>> =
            all.iter().filter(|s| *s.event.session_id == *session_id).map(|s| s.event.call_id.clone()).collect();
        let events: Vec<StoredEvent> = all
            .into_iter()
            .filter(|s| *s.event.session_id == *session_id || calls.contains(&s.event.call_id))
            .collect();
        Ok((record.is_some() || !events.is_empty()).then_some(SessionFacts { record, events }))
    }

    /// The tenant's recorded sessions `query` wants, with their facts: one read of the tenant's
    /// events (every subject of its hash), grouped by `facts_of`.
    async fn list_sessions(&self, tenant: TenantId, query: SessionQuery) -> Result<Vec<SessionFacts>, StoreError> {
        self.check_up()?;
        let records = self.lock().records(&tenant, &query);
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let all = self.read_events(&tenant, vec![format!("{EVENTS_PREFIX}{}.>", hash16(&tenant))]).await?;
        Ok(facts_of(records, all))
    }

    /// Every retained event of `tenant` on `subjects`, in stream order (bounded by [`READ_TIMEOUT`]).
    async fn read_events(&self, tenant: &TenantId, subjects: Vec<String>) -> Result<Vec<StoredEvent>, StoreError> {
        let config =
            OrderedConfig { filter_subjects: subjects, deliver_policy: DeliverPolicy::All, ..Default::default() };
        bounded("read", READ_TIMEOUT, async {
            let consumer = self.stream.create_consumer(config).await.map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            if consumer.cached_info().num_pending == 0 {
                return Ok(out);
            }
            let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
            while let Some(next) = messages.next().await {
                let message = next.map_err(|e| e.to_string())?;
                let info = message.info().map_err(|e| e.to_string())?;
                let (seq, pending) = (info.stream_sequence, info.pending);
                if let Some((whose, event)) = wire::decode::<CallEvent>(&message.payload) {
                    if *whose == **tenant {
                        out.push(StoredEvent { cursor: self.cursor(seq), event });
                    }
                }
                if pending == 0 {
                    break;
                }
            }
            Ok::<_, String>(out)
        })
        .await
    }
}

impl EventStore for JetStreamStore {
    fn append(&self, tenant: TenantId, event: CallEvent) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.shared.append(tenant, event).boxed()
    }

    fn record_session(&self, tenant: TenantId, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        self.shared.record(tenant, record).boxed()
    }

    fn subscribe(&self, filter: Filter, start: Start) -> BoxFuture<'_, Result<Subscription, StoreError>> {
        watcher::subscribe(self.shared.clone(), filter, start).boxed()
    }

    fn session(&self, tenant: TenantId, session_id: String) -> BoxFuture<'_, Result<Option<SessionFacts>, StoreError>> {
        self.shared.session(tenant, session_id).boxed()
    }

    fn session_id_of(&self, tenant: TenantId, id: String) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let found = self.shared.lock().session_id_of(&tenant, &id).map(|s| s.to_string());
        async move { Ok(found.filter(|s| *s != id)) }.boxed()
    }

    fn unfinished_sessions(
        &self,
        created_before_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<(TenantId, SessionRecord)>, StoreError>> {
        let unfinished = self.shared.lock().unfinished(unix_ms(), created_before_ms);
        async move { Ok(unfinished) }.boxed()
    }

    fn claim(&self, tenant: TenantId, session_id: String, lease: Duration) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.shared.claim(tenant, session_id, lease).boxed()
    }

    fn list_sessions(
        &self,
        tenant: TenantId,
        query: SessionQuery,
    ) -> BoxFuture<'_, Result<Vec<SessionFacts>, StoreError>> {
        self.shared.list_sessions(tenant, query).boxed()
    }

    fn stats(&self) -> StoreStats {
        let s = &self.shared;
        StoreStats {
            events: s.events.load(Ordering::Relaxed),
            ids_remembered: 0,
            sessions: s.lock().sessions() as u64,
            stored_total: s.stored.load(Ordering::Relaxed),
            duplicates_total: s.duplicates.load(Ordering::Relaxed),
            evicted_total: 0,
            fsyncs_total: 0,
            compactions_total: 0,
        }
    }

    fn health(&self) -> Option<watch::Receiver<bool>> {
        Some(self.shared.up.subscribe())
    }
}

/// Whether `tenant`'s stored event passes the filter (the subject did the tenant and most of the
/// session).
fn matches(filter: &Filter, tenant: &str, e: &CallEvent) -> bool {
    *tenant == *filter.tenant
        && (filter.session_id.is_empty() || *e.session_id == *filter.session_id)
        && (filter.phone_national.is_empty() || national(&e.phone) == filter.phone_national)
}
