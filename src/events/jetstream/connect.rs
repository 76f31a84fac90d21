//! Reaching the NATS servers and the stream: the connection options from `--events-nats-*`
//! (credentials by file, never in a message), and the stream created, or checked when it exists.

use std::time::Duration;

use async_nats::{
    ConnectOptions,
    jetstream::{
        Context, ErrorCode,
        context::GetStreamErrorKind,
        stream::{Config, StorageType, Stream},
    },
};

use super::{
    CONNECT_TIMEOUT,
    wire::{EVENTS_PREFIX, SESSIONS_PREFIX},
};

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
pub(super) fn shown(urls: &str) -> String {
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

/// Connects (bounded by [`CONNECT_TIMEOUT`]); the error is one line naming the flag at fault.
pub(crate) async fn connect(config: &NatsConfig) -> Result<async_nats::Client, String> {
    let url = shown(&config.url);
    let mut options = ConnectOptions::new()
        .name("callbot-facade")
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).clamp(100, 2000)));
    if let Some(path) = &config.creds_file {
        options =
            options.credentials_file(path).await.map_err(|e| format!("--events-nats-creds {}: {e}", path.display()))?;
    }
    if let Some((user, password)) = &config.user {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &config.nkey_file {
        // The seed is a secret: the error names the file, never its content.
        let seed = std::fs::read_to_string(path).map_err(|e| format!("--events-nats-nkey {}: {e}", path.display()))?;
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
    Ok(client)
}

/// Bytes of stream per message `--events-max` allows: an event's fields are bounded (ids 128,
/// phones 32, words 64 characters), so its message is well under a kilobyte; session records are
/// larger but fewer. The stream's `max_bytes` is this times `--events-max`.
pub(crate) const STREAM_BYTES_PER_MESSAGE: i64 = 2048;

/// Largest message the stream takes: a session record of `--max-contacts` (10,000) numbers.
const MAX_MESSAGE_BYTES: i32 = 1024 * 1024;

fn stream_config(config: &NatsConfig) -> Config {
    let max_messages = i64::try_from(config.max_events).unwrap_or(i64::MAX);
    Config {
        name: config.stream.clone(),
        subjects: vec![format!("{EVENTS_PREFIX}>"), format!("{SESSIONS_PREFIX}>")],
        storage: StorageType::File,
        max_age: config.retention,
        max_messages,
        max_bytes: max_messages.saturating_mul(STREAM_BYTES_PER_MESSAGE),
        max_message_size: MAX_MESSAGE_BYTES,
        duplicate_window: config.retention,
        num_replicas: config.replicas,
        ..Default::default()
    }
}

pub(super) async fn ensure_stream(js: &Context, config: &NatsConfig) -> Result<Stream, String> {
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
            if have.max_bytes <= 0 {
                // A stream made before byte bounds (or by hand without one): bounded now.
                let bounded = Config { max_bytes: want.max_bytes, ..have.clone() };
                js.update_stream(bounded)
                    .await
                    .map_err(|e| format!("cannot bound the JetStream stream {name}: {e}"))?;
                tracing::info!(stream = %name, max_bytes = want.max_bytes, "the JetStream stream is now bounded in bytes");
                return js.get_stream(name).await.map_err(|e| format!("cannot read the JetStream stream {name}: {e}"));
            }
            Ok(stream)
        }
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
            js.create_stream(want).await.map_err(|e| format!("cannot create the JetStream stream {name}: {e}"))
        }
        Err(e) => Err(format!("cannot read the JetStream stream {name} (is JetStream on?): {e}")),
    }
}
