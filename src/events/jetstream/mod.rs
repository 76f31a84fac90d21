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
//!   (`index.rs`).
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
    ConnectOptions,
    connection::State,
    jetstream::{
        self, Context, ErrorCode,
        consumer::{DeliverPolicy, pull::OrderedConfig},
        context::GetStreamErrorKind,
        message::PublishMessage,
        stream::{Config, StorageType, Stream},
    },
};
use futures::{FutureExt as _, StreamExt as _, future::BoxFuture};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use super::{
    Appended, CallEvent, Cursor, EventStore, Filter, NewEvent, SessionFacts, SessionRecord, Start, StoreError,
    Subscription, TenantId, memory::system_clock, store::StoreStats,
};
use crate::domain::national;
use index::{
    EVENTS_PREFIX, Index, SESSIONS_PREFIX, WireEvent, WireSession, event_subject, hash16, msg_id, session_subject,
};

mod index;

/// How long an append waits for its PubAck.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the start waits for the server.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the start waits for the index to catch up with the stream.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How long a report's read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the server and which stream.
#[derive(Clone)]
pub(crate) struct NatsConfig {
    pub(crate) url: String,
    pub(crate) stream: String,
    pub(crate) creds_file: Option<std::path::PathBuf>,
    pub(crate) user: Option<(String, String)>,
    pub(crate) token: Option<String>,
    pub(crate) retention: Duration,
    pub(crate) max_events: u64,
    /// `num_replicas` of a stream this facade creates; the least an existing one may have.
    pub(crate) replicas: usize,
    /// A file with an NKey seed.
    pub(crate) nkey_file: Option<std::path::PathBuf>,
    /// PEM roots for the servers' certificates (TLS required when set).
    pub(crate) ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate and key (mTLS).
    pub(crate) client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The URLs without credentials, for messages.
fn shown(urls: &str) -> String {
    urls.split(',').map(|u| shown_one(u.trim())).collect::<Vec<_>>().join(",")
}

fn shown_one(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.rsplit_once('@').map_or_else(|| url.to_owned(), |(_, h)| format!("***@{h}")),
    }
}

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
        let url = shown(&config.url);
        let mut options = ConnectOptions::new()
            .name("callbot-facade")
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).clamp(100, 2000)));
        if let Some(path) = &config.creds_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| format!("--events-nats-creds {}: {e}", path.display()))?;
        }
        if let Some((user, password)) = &config.user {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &config.nkey_file {
            // The seed is a secret: the error names the file, never its content.
            let seed =
                std::fs::read_to_string(path).map_err(|e| format!("--events-nats-nkey {}: {e}", path.display()))?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(path) = &config.ca_file {
            if !path.is_file() {
                return Err(format!("--events-nats-ca {}: not a readable file", path.display()));
            }
            options = options.add_root_certificates(path.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &config.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
        }
        let servers: Vec<&str> = config.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, options.connect(servers)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(format!("cannot connect to NATS at {url} (--events-nats-url): {e}")),
            Err(_) => return Err(format!("NATS at {url} (--events-nats-url) did not answer within 5 s")),
        };
        let mut js = jetstream::new(client.clone());
        js.set_timeout(ACK_TIMEOUT);
        let stream = ensure_stream(&js, &config).await?;
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
        });
        tokio::spawn(follow(Arc::downgrade(&shared)));
        tokio::spawn(monitor(Arc::downgrade(&shared)));
        let last = info.state.last_sequence;
        let mut applied = shared.applied.subscribe();
        if tokio::time::timeout(CATCH_UP, applied.wait_for(|a| *a >= last)).await.is_err() {
            tracing::warn!(last, "the event index did not catch up with the stream in 30 s; serving anyway");
        }
        tracing::info!(stream = %config.stream, nats = %url, events = info.state.messages, "event store: NATS JetStream");
        Ok(JetStreamStore { shared })
    }
}

fn stream_config(config: &NatsConfig) -> Config {
    Config {
        name: config.stream.clone(),
        subjects: vec![format!("{EVENTS_PREFIX}>"), format!("{SESSIONS_PREFIX}>")],
        storage: StorageType::File,
        max_age: config.retention,
        max_messages: i64::try_from(config.max_events).unwrap_or(i64::MAX),
        duplicate_window: config.retention,
        num_replicas: config.replicas,
        ..Default::default()
    }
}

async fn ensure_stream(js: &Context, config: &NatsConfig) -> Result<Stream, String> {
    let name = &config.stream;
    let want = stream_config(config);
    match js.get_stream(name).await {
        Ok(stream) => {
            let have = &stream.cached_info().config;
            let mut subjects = have.subjects.clone();
            subjects.sort();
            let mut wanted = want.subjects.clone();
            wanted.sort();
            if have.storage != want.storage || subjects != wanted || have.max_age != want.max_age {
                return Err(format!(
                    "the JetStream stream {name} exists with storage {:?}, subjects {:?}, max_age {:?}; \
                     --events-stream needs storage File, subjects {wanted:?}, max_age {:?} (--events-retention)",
                    have.storage, have.subjects, have.max_age, want.max_age
                ));
            }
            if have.num_replicas.max(1) < want.num_replicas {
                return Err(format!(
                    "the JetStream stream {name} exists with {} replica(s); --events-replicas asks for at least {}",
                    have.num_replicas.max(1),
                    want.num_replicas
                ));
            }
            Ok(stream)
        }
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
            js.create_stream(want).await.map_err(|e| format!("cannot create the JetStream stream {name}: {e}"))
        }
        Err(e) => Err(format!("cannot read the JetStream stream {name} (is JetStream on?): {e}")),
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
            let now = system_clock()();
            let subject = message.subject.as_str();
            let mut index = shared.lock();
            index.chains.note(seq, subject);
            if subject.starts_with(EVENTS_PREFIX) {
                if let Ok(w) = serde_json::from_slice::<WireEvent>(&message.payload) {
                    index.apply_event(&w, now);
                }
            } else if subject.starts_with(SESSIONS_PREFIX) {
                if let Ok(w) = serde_json::from_slice::<WireSession>(&message.payload) {
                    index.apply_session(&w, now);
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

    async fn append(&self, e: NewEvent) -> Result<Appended, StoreError> {
        self.check_up()?;
        let (session, attempt) = self.lock().attribute(&e);
        let id = msg_id(&e.tenant, &format!("{}/{}", e.call_id, e.fact.as_str()));
        let wire = WireEvent::new(e, session, attempt);
        let subject = event_subject(&wire.tenant, &wire.session_id);
        let payload = serde_json::to_vec(&wire).map_err(|e| unavailable("encode", e))?;
        let (seq, duplicate) = self.publish(subject, id, payload).await?;
        if duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(Appended::Duplicate);
        }
        self.stored.fetch_add(1, Ordering::Relaxed);
        self.lock().apply_event(&wire, system_clock()());
        wire.to_event(self.cursor(seq)).map(Appended::Stored).ok_or_else(|| unavailable("encode", "unknown fact"))
    }

    async fn record(&self, record: SessionRecord) -> Result<(), StoreError> {
        let wire = WireSession::new(&record);
        let subject = session_subject(&wire.tenant, &wire.session_id);
        let id = msg_id(&wire.tenant, &format!("session/{}", wire.session_id));
        let payload = serde_json::to_vec(&wire).map_err(|e| unavailable("encode", e))?;
        self.publish(subject, id, payload).await?;
        self.lock().apply_session(&wire, system_clock()());
        Ok(())
    }

    async fn session(&self, tenant: TenantId, session_id: String) -> Result<Option<SessionFacts>, StoreError> {
        self.check_up()?;
        let record = self.lock().record(&tenant, &session_id);
        let th = hash16(&tenant);
        // The session's subject, and the tenant's unattributed events (of its calls, if any).
        let subjects = vec![event_subject(&tenant, &session_id), format!("{EVENTS_PREFIX}{th}._")];
        let config =
            OrderedConfig { filter_subjects: subjects, deliver_policy: DeliverPolicy::All, ..Default::default() };
        let all: Vec<CallEvent> = bounded("read", READ_TIMEOUT, async {
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
                if let Ok(w) = serde_json::from_slice::<WireEvent>(&message.payload) {
                    if *w.tenant == *tenant {
                        out.extend(w.to_event(self.cursor(seq)));
                    }
                }
                if pending == 0 {
                    break;
                }
            }
            Ok::<_, String>(out)
        })
        .await?;
        let calls: std::collections::HashSet<Arc<str>> =
            all.iter().filter(|e| *e.session_id == *session_id).map(|e| e.call_id.clone()).collect();
        let events: Vec<CallEvent> =
            all.into_iter().filter(|e| *e.session_id == *session_id || calls.contains(&e.call_id)).collect();
        Ok((record.is_some() || !events.is_empty()).then_some(SessionFacts { record, events }))
    }
}

mod watcher;

impl EventStore for JetStreamStore {
    fn append(&self, event: NewEvent) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.shared.append(event).boxed()
    }

    fn record_session(&self, record: SessionRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        self.shared.record(record).boxed()
    }

    fn subscribe(&self, filter: Filter, start: Start) -> BoxFuture<'_, Result<Subscription, StoreError>> {
        watcher::subscribe(self.shared.clone(), filter, start).boxed()
    }

    fn session(&self, tenant: TenantId, session_id: String) -> BoxFuture<'_, Result<Option<SessionFacts>, StoreError>> {
        self.shared.session(tenant, session_id).boxed()
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
        }
    }

    fn health(&self) -> Option<watch::Receiver<bool>> {
        Some(self.shared.up.subscribe())
    }
}

/// Whether a stored event passes the filter (the subject did the tenant and most of the session).
fn matches(filter: &Filter, w: &WireEvent) -> bool {
    *w.tenant == *filter.tenant
        && (filter.session_id.is_empty() || w.session_id == filter.session_id)
        && (filter.phone_national.is_empty() || national(&w.phone) == filter.phone_national)
}
