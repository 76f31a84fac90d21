//! The `EventsSettings` group of the settings tree: the webhook receiver and the call-event store
//! (the embedded one, or NATS JetStream), parsed like the rest of `config.rs`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::{ApiKey, ConfigError, MIN_WEBHOOK_SECRET_BYTES, parse_api_key, parse_duration};

/// `--events-store`: which embedded store (NATS JetStream is chosen by --events-nats-url instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsStoreKind {
    /// Under --data-dir, fsynced before a delivery is acknowledged; survives restarts.
    Disk,
    /// In the process's memory only.
    Memory,
}

/// The webhook receiver (the provider's calls in) and the call-event store (README, "Call outcomes").
#[derive(Debug, Clone, Args)]
pub struct EventsSettings {
    /// Where the webhook receiver listens (plain HTTP/1.1 and h2c); unset = off, except with the
    /// built-in simulator (then on loopback, registered with it).
    #[arg(long = "webhook-listen", env = "CALLBOT_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<SocketAddr>,
    /// The secret the per-tenant URL tokens are derived from; required with --webhook-listen and a
    /// real upstream (every replica must share it).
    /// At least 32 bytes; unset = none (the built-in simulator needs none). Cannot be used with
    /// --webhook-secret-file.
    #[arg(long = "webhook-secret", env = "CALLBOT_WEBHOOK_SECRET", hide_env_values = true, value_parser = parse_api_key, conflicts_with = "webhook_secret_file")]
    pub webhook_secret: Option<ApiKey>,
    /// A file holding the webhook secret (at least 32 bytes), re-read when it changes and on SIGHUP;
    /// instead of --webhook-secret (cannot be used with it); unset = no file.
    #[arg(value_name = "FILE", long = "webhook-secret-file", env = "CALLBOT_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// The secret before a rotation: tokens derived from it are still accepted (the provider may
    /// post to the old URLs until they are replaced); new URLs use the current secret; unset =
    /// only the current secret is accepted.
    #[arg(long = "webhook-secret-previous", env = "CALLBOT_WEBHOOK_SECRET_PREVIOUS", hide_env_values = true, value_parser = parse_api_key)]
    pub webhook_secret_previous: Option<ApiKey>,
    /// The receiver drops a connection that has not sent a request's whole headers within this.
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long = "webhook-header-timeout", env = "CALLBOT_WEBHOOK_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_header_timeout: Duration,
    /// The receiver answers 408 and drops a connection that has not sent a request's whole body
    /// within this (after its headers).
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long = "webhook-body-timeout", env = "CALLBOT_WEBHOOK_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub webhook_body_timeout: Duration,
    /// Connections the receiver keeps open at most; more wait in the listen backlog, so slow or
    /// abandoned clients cannot take the file descriptors the gRPC API and health checks need.
    #[arg(long = "webhook-max-connections", env = "CALLBOT_WEBHOOK_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_max_connections: u32,
    /// The base URL the provider reaches the receiver at; when set, each tenant served gets
    /// `<base>/webhooks/callbot/<token>` registered; unset = nothing registered (the built-in
    /// simulator is told the loopback receiver).
    #[arg(long = "webhook-public-url", env = "CALLBOT_WEBHOOK_PUBLIC_URL")]
    pub webhook_public_url: Option<String>,
    /// How long call events (and the ids that recognize a redelivery) are kept.
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long = "events-retention", env = "CALLBOT_EVENTS_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub retention: Duration,
    /// Where the facade keeps what survives a restart (the disk event store): created when missing,
    /// held with a lock (a second process on the same folder refuses to start).
    #[arg(value_name = "DIR", long = "data-dir", env = "CALLBOT_DATA_DIR", default_value = "./callbot-data")]
    pub data_dir: PathBuf,
    /// Where call events are kept: `disk` (under --data-dir, survives restarts) or `memory`
    /// (nothing survives a restart: demos and tests); NATS JetStream whenever --events-nats-url is
    /// set.
    #[arg(value_name = "STORE", long = "events-store", env = "CALLBOT_EVENTS_STORE", default_value = "disk")]
    pub store: EventsStoreKind,
    /// Events the store keeps at most (for JetStream: the stream's max_msgs, session records included).
    #[arg(long = "events-max", env = "CALLBOT_EVENTS_MAX", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub max: u32,
    /// A NATS server with JetStream (`nats://host:4222`, comma-separated for several) to keep the
    /// events in, shared by every replica; unset = the embedded store (README, "Many replicas").
    #[arg(long = "events-nats-url", env = "CALLBOT_EVENTS_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// The JetStream stream (created when missing).
    #[arg(long = "events-stream", env = "CALLBOT_EVENTS_STREAM", default_value = "CALLBOT_EVENTS")]
    pub stream: String,
    /// Copies of the stream a new one is created with (3 on a three-node cluster: an acknowledged
    /// delivery then survives the loss of one node); an existing stream's count must not be lower.
    #[arg(long = "events-replicas", env = "CALLBOT_EVENTS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
    /// A NATS credentials file (JWT and nkey seed); unset = none.
    #[arg(value_name = "FILE", long = "events-nats-creds", env = "CALLBOT_EVENTS_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// NATS user (with --events-nats-password); unset = none.
    #[arg(long = "events-nats-user", env = "CALLBOT_EVENTS_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// NATS password of --events-nats-user; unset = none. Never logged.
    #[arg(long = "events-nats-password", env = "CALLBOT_EVENTS_NATS_PASSWORD", hide_env_values = true, requires = "nats_user", value_parser = parse_api_key)]
    pub nats_password: Option<ApiKey>,
    /// NATS token; unset = none. Never logged.
    #[arg(long = "events-nats-token", env = "CALLBOT_EVENTS_NATS_TOKEN", hide_env_values = true, value_parser = parse_api_key)]
    pub nats_token: Option<ApiKey>,
    /// A file holding an NKey seed (`SU...`) to authenticate with; unset = none.
    #[arg(value_name = "FILE", long = "events-nats-nkey", env = "CALLBOT_EVENTS_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// PEM root certificates to verify the NATS servers with (TLS then required); unset = TLS
    /// as the URL and the server ask, no roots of our own.
    #[arg(value_name = "FILE", long = "events-nats-ca", env = "CALLBOT_EVENTS_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// PEM client certificate for NATS (mTLS), with --events-nats-tls-key; unset = none.
    #[arg(
        value_name = "FILE",
        long = "events-nats-tls-cert",
        env = "CALLBOT_EVENTS_NATS_TLS_CERT",
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of --events-nats-tls-cert; unset = none.
    #[arg(
        value_name = "FILE",
        long = "events-nats-tls-key",
        env = "CALLBOT_EVENTS_NATS_TLS_KEY",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,
    /// A contact of a session created here that has no final outcome this long after its last
    /// event (or the session's start) is looked up in the provider's call history.
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long = "reconcile-after", env = "CALLBOT_RECONCILE_AFTER", default_value = "15m", value_parser = parse_positive_duration)]
    pub reconcile_after: Duration,
    /// A contact still without a final outcome this long after its session's start gets a final
    /// event with outcome UNKNOWN (a real outcome arriving later still wins).
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long = "call-give-up-after", env = "CALLBOT_CALL_GIVE_UP_AFTER", default_value = "6h", value_parser = parse_positive_duration)]
    pub call_give_up_after: Duration,
    /// Call-history searches per second per tenant (bursts of twice as many), shared by
    /// reconciliation and the attribution look-ups of records without a session id.
    #[arg(value_name = "PER_SECOND", long = "history-budget", env = "CALLBOT_HISTORY_BUDGET", default_value_t = 5.0, value_parser = parse_history_budget)]
    pub history_budget: f64,
}

/// A duration above zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match super::parse_duration(s)? {
        d if d.is_zero() => Err(format!("invalid duration {s:?}: must be above zero")),
        d => Ok(d),
    }
}

/// Searches per second: a finite number above zero, at most 1000.
fn parse_history_budget(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 1000.0 => Ok(x),
        _ => Err(format!("invalid history budget {s:?}: expected searches per second, above 0 and at most 1000")),
    }
}

impl EventsSettings {
    pub(super) fn check(&mut self, real_upstream: bool) -> Result<(), ConfigError> {
        if self.retention.is_zero() {
            return Err(ConfigError::ZeroRetention);
        }
        if self.webhook_secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
            self.webhook_secret = None;
        }
        if self.webhook_secret_previous.as_ref().is_some_and(|s| s.expose().is_empty()) {
            self.webhook_secret_previous = None;
        }
        let weak = |s: &Option<ApiKey>| s.as_ref().is_some_and(|s| s.expose().len() < MIN_WEBHOOK_SECRET_BYTES);
        if weak(&self.webhook_secret) || weak(&self.webhook_secret_previous) {
            return Err(ConfigError::WeakWebhookSecret);
        }
        if self.webhook_header_timeout.is_zero() || self.webhook_body_timeout.is_zero() {
            return Err(ConfigError::ZeroWebhookTimeout);
        }
        if self.nats_url.as_deref().is_some_and(|u| u.trim().is_empty()) {
            self.nats_url = None;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::EmptyDataDir);
        }
        self.stream = self.stream.trim().to_owned();
        let stream = &self.stream;
        if stream.is_empty() || stream.chars().any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c)) {
            return Err(ConfigError::BadEventsStream);
        }
        let secret_given = self.webhook_secret.is_some() || self.webhook_secret_file.is_some();
        if real_upstream && self.webhook_listen.is_some() && !secret_given {
            return Err(ConfigError::MissingWebhookSecret);
        }
        self.webhook_public_url = match self.webhook_public_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(_) => return Err(ConfigError::BadWebhookPublicUrl),
        };
        Ok(())
    }
}
