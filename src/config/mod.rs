//! Typed settings: the command line and its environment variables (README, "Configuration"), parsed and checked
//! before any port is bound, with secrets wrapped so they cannot be printed by accident.
//!
//! - this file: the settings tree of `serve` ([`Settings`], one struct per group, each default once), its
//!   check ([`Settings::check`]) and the value parsers;
//! - `events.rs`: the webhook receiver's and the call-event store's group;
//! - `commands.rs`: the command line itself ([`Cli`], [`Command`]) and the argument structs of the
//!   operator subcommands (`simulate`, `campaign`, `scripts`, `watch`, `report`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, ValueEnum};

mod commands;
mod events;
pub use commands::{
    CampaignArgs, Cli, Command, Connection, ReportArgs, ScriptsArgs, SessionsArgs, SimulateArgs, WatchArgs,
};
pub use events::{EventsSettings, EventsStoreKind};

pub use crate::domain::ApiKey;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The settings of `serve`: one tree, each group a struct of its own, parsed from flags and their
/// environment variables (names fixed by the contract: README, "Configuration") with each default written once, here.
/// [`Settings::check`] turns a parse into settings that can run, before any port is bound.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Listeners, limits, shutdown, logs.
    #[command(flatten)]
    pub server: ServerSettings,
    /// Where REST calls go and how they are bounded and retried.
    #[command(flatten)]
    pub upstream: UpstreamSettings,
    /// What the handlers need.
    #[command(flatten)]
    pub service: ServiceSettings,
    /// Caller authentication and TLS.
    #[command(flatten)]
    pub security: SecuritySettings,
    /// The webhook receiver and the call-event store.
    #[command(flatten)]
    pub events: EventsSettings,
    /// The calling policy.
    #[command(flatten)]
    pub policy: PolicySettings,
}

/// The calling policy (docs/policy.md).
#[derive(Debug, Clone, Args)]
pub struct PolicySettings {
    /// YAML file of calling policies per tenant (hours, days, blackout dates, frequency caps,
    /// do-not-call files, the `vn-decree-91` preset), re-read when it changes and on SIGHUP;
    /// unset = no policy (only numbers added by AddDoNotCall are refused).
    #[arg(value_name = "FILE", long = "calling-policy", env = "CALLBOT_CALLING_POLICY")]
    pub calling_policy: Option<PathBuf>,
    /// The calling policy's clock starts at this instant (RFC 3339) and runs from there. Hidden:
    /// for tests, which must not depend on the wall clock.
    #[arg(long = "policy-clock-start", env = "CALLBOT_POLICY_CLOCK_START", hide = true)]
    pub clock_start: Option<String>,
}

/// Listeners, limits, shutdown and logs.
#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    /// gRPC listen address.
    #[arg(long, env = "CALLBOT_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Admin listen address (/metrics, /healthz, /readyz, and the console at /console/).
    #[arg(long, env = "CALLBOT_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
    /// Show contacts' phone numbers whole in the console (/console/); default: masked, all but
    /// the last 3 digits.
    #[arg(long, env = "CALLBOT_CONSOLE_SHOW_PHONES")]
    pub console_show_phones: bool,
    /// Log format.
    #[arg(long, env = "CALLBOT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Largest request message accepted, in bytes.
    #[arg(long, env = "CALLBOT_MAX_MESSAGE_BYTES", default_value_t = 4_194_304, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_message_bytes: u32,
    /// Most RPCs in flight; beyond it calls are shed with UNAVAILABLE + RetryInfo.
    #[arg(long, env = "CALLBOT_MAX_CONCURRENCY", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrency: u32,
    /// Time given to in-flight calls after SIGTERM/SIGINT.
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long, env = "CALLBOT_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Most concurrent streams (calls) one gRPC connection may have open (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS); a client wanting more opens more connections.
    #[arg(long, env = "CALLBOT_GRPC_MAX_STREAMS_PER_CONNECTION", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_streams_per_connection: u32,
}

/// The upstream REST API: target, key, bounds and retry budget.
#[derive(Debug, Clone, Args)]
pub struct UpstreamSettings {
    /// Base URL of the callBot REST API, e.g. `https://public-v1.example.com`; unset = start the
    /// built-in simulator on loopback.
    // After `Settings::check`: trimmed, no trailing slash, `None` for the simulator.
    #[arg(long = "upstream-url", env = "CALLBOT_UPSTREAM_URL")]
    pub url: Option<String>,
    /// Upstream API key; required with --upstream-url unless --api-key-file or --tenants-file
    /// gives it; unset = the simulator's key. Never logged. Cannot be used with --api-key-file
    /// or --tenants-file.
    // After `Settings::check` always set (the simulator's fixed key when none is given).
    #[arg(long = "api-key", env = "CALLBOT_API_KEY", hide_env_values = true, value_parser = parse_api_key)]
    pub api_key: Option<ApiKey>,
    /// File holding the upstream API key (read whole, surrounding whitespace trimmed), re-read
    /// when it changes and on SIGHUP, so that a rotated Secret needs no restart; unset = no
    /// file. Instead of --api-key; cannot be used with --api-key or --tenants-file.
    #[arg(value_name = "FILE", long = "api-key-file", env = "CALLBOT_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Upper bound of one upstream exchange, retries and token refresh included; a caller's
    /// shorter deadline wins.
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long = "upstream-timeout", env = "CALLBOT_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Upper bound of one HTTP attempt of a read (so a retry still fits in the deadline).
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long = "upstream-attempt-timeout", env = "CALLBOT_UPSTREAM_ATTEMPT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub attempt_timeout: Duration,
    /// Speak HTTP/2 without TLS negotiation (h2c) to a plaintext upstream known to support it,
    /// such as an egress sidecar or the simulator: one multiplexed connection instead of one
    /// per call in flight. An https upstream negotiates HTTP/2 by ALPN without this flag.
    #[arg(long = "upstream-http2-prior-knowledge", env = "CALLBOT_UPSTREAM_HTTP2_PRIOR_KNOWLEDGE")]
    pub http2_prior_knowledge: bool,
    /// Retries allowed as a share of requests over the last 10 s (retry budget), in percent.
    #[arg(long, env = "CALLBOT_RETRY_BUDGET_PERCENT", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retry_budget_percent: u32,
    /// Retries always allowed per 10 s window, whatever the traffic (so a quiet facade can retry).
    #[arg(long, env = "CALLBOT_RETRY_BUDGET_MIN", default_value_t = 10)]
    pub retry_budget_min: u32,
}

impl UpstreamSettings {
    /// The configured tenant key: the one given, else the built-in simulator's (with
    /// `--api-key-file` or `--tenants-file` the application reads the keys from the files instead).
    pub fn key(&self) -> ApiKey {
        self.api_key.clone().unwrap_or_else(|| ApiKey::new(SIMULATOR_API_KEY))
    }
}

/// What the handlers need.
#[derive(Debug, Clone, Args)]
pub struct ServiceSettings {
    /// Script-list cache lifetime; 0s turns the cache off.
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long, env = "CALLBOT_SCRIPT_CACHE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub script_cache_ttl: Duration,
    /// Most contacts accepted in one CreateSession.
    #[arg(long, env = "CALLBOT_MAX_CONTACTS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_contacts: u32,
    /// Let a caller's `x-api-key` metadata choose the upstream tenant (the weaker option: the
    /// caller holds the upstream key; --tenants-file keeps the keys in the facade). Cannot be
    /// used with --tenants-file.
    #[arg(long, env = "CALLBOT_ALLOW_CALLER_API_KEY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_caller_api_key: bool,
}

/// Caller authentication and TLS.
#[derive(Debug, Clone, Args)]
pub struct SecuritySettings {
    /// File of accepted caller bearer tokens, one per line, re-read when it changes and on
    /// SIGHUP; unset = no caller authentication. Cannot be used with --tenants-file.
    #[arg(value_name = "FILE", long, env = "CALLBOT_CALLER_TOKENS_FILE")]
    pub caller_tokens_file: Option<PathBuf>,
    /// YAML file of tenants: each one's upstream key (by environment variable or file) and the
    /// callers (bearer token digests, mTLS SPIFFE IDs and DNS names) that act for it
    /// (docs/flags.md, "Tenants"); unset = one tenant, the --api-key one. Replaces, and cannot be
    /// used with, --api-key, --api-key-file, --caller-tokens-file and --allow-caller-api-key.
    #[arg(value_name = "FILE", long, env = "CALLBOT_TENANTS_FILE")]
    pub tenants_file: Option<PathBuf>,
    /// How often the secret files (key file, caller tokens, tenants file and its key files) are
    /// checked for a change. Hidden: the default suits production; tests shorten it.
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long, env = "CALLBOT_SECRETS_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration, hide = true)]
    pub secrets_poll_interval: Duration,
    /// `mesh`: take callers on the service mesh's word (no caller authentication here). Required
    /// with --upstream-url when neither --caller-tokens-file nor --tenants-file is given, so that a
    /// facade placing real calls is never open to whoever reaches its port by mistake.
    #[arg(long, env = "CALLBOT_CALLER_AUTH", value_enum)]
    pub caller_auth: Option<CallerAuth>,
    /// TLS on the gRPC listener.
    #[command(flatten)]
    pub tls: TlsFiles,
}

/// How callers are authenticated when no tokens or tenants file says who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallerAuth {
    /// The mesh (mTLS between sidecars, network policies) decides who reaches the facade.
    Mesh,
}

/// PEM files for TLS: on when `--tls-cert` and `--tls-key` are given (clap refuses one alone).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsFiles {
    /// Server certificate (PEM); with --tls-key turns TLS on; unset = plaintext (h2c).
    #[arg(value_name = "FILE", id = "tls_cert", long = "tls-cert", env = "CALLBOT_TLS_CERT", requires = "tls_key")]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM) of --tls-cert; unset = plaintext (h2c).
    #[arg(value_name = "FILE", id = "tls_key", long = "tls-key", env = "CALLBOT_TLS_KEY", requires = "tls_cert")]
    pub key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to (mTLS), with --tls-cert; unset = no
    /// client certificate asked for.
    #[arg(value_name = "FILE", long = "tls-client-ca", env = "CALLBOT_TLS_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
}

/// A configuration that parses but cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A real upstream needs a key to authenticate with.
    #[error("--api-key (CALLBOT_API_KEY), --api-key-file or --tenants-file is required when --upstream-url is set")]
    MissingApiKey,
    /// Two flags that say the same thing two ways, or that the tenants file replaces.
    #[error("{first} cannot be used with {second}: {why}")]
    Conflict {
        /// The flag (and its variable) that wins the explanation.
        first: &'static str,
        /// The flag it conflicts with.
        second: &'static str,
        /// Why they do not go together.
        why: &'static str,
    },
    /// A poll interval of zero would spin.
    #[error("--secrets-poll-interval must be more than 0s")]
    ZeroPollInterval,
    /// The upstream URL is not an http(s) URL.
    #[error("--upstream-url must be an http:// or https:// URL")]
    BadUpstreamUrl,
    /// An empty API key can never authenticate.
    #[error("--api-key must not be empty")]
    EmptyApiKey,
    /// A receiver facing a real provider needs the secret its URL tokens come from.
    #[error(
        "--webhook-secret (CALLBOT_WEBHOOK_SECRET) or --webhook-secret-file is required with --webhook-listen and --upstream-url"
    )]
    MissingWebhookSecret,
    /// The public URL must be an http(s) base the provider can reach.
    #[error("--webhook-public-url must be an http:// or https:// URL")]
    BadWebhookPublicUrl,
    /// A zero timeout would drop every delivery.
    #[error("--webhook-header-timeout and --webhook-body-timeout must be more than 0s")]
    ZeroWebhookTimeout,
    /// A zero retention keeps nothing.
    #[error("--data-dir must name a folder")]
    EmptyDataDir,
    #[error("--events-retention must be more than 0s")]
    ZeroRetention,
    /// A real upstream with nobody checking who calls.
    #[error(
        "with --upstream-url, say how callers are authenticated: --caller-tokens-file (bearer tokens), \
         --tenants-file (bearer tokens or mTLS identities per tenant), or --caller-auth mesh \
         (CALLBOT_CALLER_AUTH=mesh: the service mesh decides who reaches the facade)"
    )]
    NoCallerAuth,
    /// A webhook secret short enough to be guessed offline from a tenant's own token.
    #[error(
        "--webhook-secret (CALLBOT_WEBHOOK_SECRET) and --webhook-secret-previous need at least {min} bytes \
         (e.g. `openssl rand -hex 32`)",
        min = MIN_WEBHOOK_SECRET_BYTES
    )]
    WeakWebhookSecret,
    /// The stream name must be a JetStream stream name.
    #[error("--events-stream must be a JetStream stream name (no spaces, '.', '*', '>', '/' or '\\')")]
    BadEventsStream,
}

/// The shortest webhook secret accepted: every tenant sees its own URL token, an HMAC of the secret,
/// so a short secret could be found offline and any tenant's outcomes forged.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 32;

/// The key the facade uses against its own built-in simulator (which accepts any non-empty key).
pub const SIMULATOR_API_KEY: &str = "simulator-key";

impl Settings {
    /// Checks the combination of flags and normalizes what the rest of the program relies on:
    /// the upstream URL (trimmed, no trailing slash, `None` for the simulator) and the key
    /// (always set).
    pub fn check(mut self) -> Result<Self, ConfigError> {
        self.check_conflicts()?;
        if self.security.secrets_poll_interval.is_zero() {
            return Err(ConfigError::ZeroPollInterval);
        }
        let keys_from_files = self.upstream.api_key_file.is_some() || self.security.tenants_file.is_some();
        let upstream = &mut self.upstream;
        upstream.url = match upstream.url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => {
                let lower = url.to_ascii_lowercase();
                let rest = lower
                    .strip_prefix("http://")
                    .or_else(|| lower.strip_prefix("https://"))
                    .ok_or(ConfigError::BadUpstreamUrl)?;
                if rest.is_empty() || rest.starts_with('/') || url.contains(char::is_whitespace) {
                    return Err(ConfigError::BadUpstreamUrl);
                }
                Some(url.trim_end_matches('/').to_owned())
            }
        };
        self.events.check(upstream.url.is_some())?;
        upstream.api_key = match (&upstream.url, upstream.api_key.take()) {
            (_, Some(k)) if k.expose().is_empty() => return Err(ConfigError::EmptyApiKey),
            (_, Some(k)) => Some(k),
            (_, None) if keys_from_files => None,
            (None, None) => Some(ApiKey::new(SIMULATOR_API_KEY)),
            (Some(_), None) => return Err(ConfigError::MissingApiKey),
        };
        let authenticated = self.security.caller_tokens_file.is_some() || self.security.tenants_file.is_some();
        if self.upstream.url.is_some() && !authenticated && self.security.caller_auth.is_none() {
            return Err(ConfigError::NoCallerAuth);
        }
        Ok(self)
    }

    /// The flags that cannot go together: each error names both (and their variables, since
    /// either may come from the environment).
    fn check_conflicts(&self) -> Result<(), ConfigError> {
        const TENANTS: &str = "--tenants-file (CALLBOT_TENANTS_FILE)";
        const API_KEY: &str = "--api-key (CALLBOT_API_KEY)";
        const API_KEY_FILE: &str = "--api-key-file (CALLBOT_API_KEY_FILE)";
        let conflict = |first, second, why| Err(ConfigError::Conflict { first, second, why });
        if self.security.tenants_file.is_some() {
            let why = "the tenants file gives each tenant its key and its callers";
            if self.upstream.api_key.is_some() {
                return conflict(TENANTS, API_KEY, why);
            }
            if self.upstream.api_key_file.is_some() {
                return conflict(TENANTS, API_KEY_FILE, why);
            }
            if self.security.caller_tokens_file.is_some() {
                return conflict(TENANTS, "--caller-tokens-file (CALLBOT_CALLER_TOKENS_FILE)", why);
            }
            if self.service.allow_caller_api_key {
                return conflict(TENANTS, "--allow-caller-api-key (CALLBOT_ALLOW_CALLER_API_KEY)", why);
            }
        }
        if self.upstream.api_key.is_some() && self.upstream.api_key_file.is_some() {
            return conflict(API_KEY_FILE, API_KEY, "give the key one way");
        }
        Ok(())
    }

    /// Parses `serve` flags from an argument list (the environment still applies), unchecked.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: Settings,
        }
        Wrapper::try_parse_from(args).map(|w| w.serve)
    }

    /// Settings for tests and embedding: everything default, ports 0 on loopback, simulator upstream.
    pub fn for_tests() -> Self {
        // The memory event store: a test or an embedding opens no data dir unless it says so.
        let args = ["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--events-store", "memory"];
        Settings::try_parse_from(args)
            .expect("static test arguments parse")
            .check()
            .expect("static test arguments are valid")
    }
}

/// An API key from the command line, trimmed (emptiness is [`Settings::check`]'s to refuse).
fn parse_api_key(s: &str) -> Result<ApiKey, String> {
    Ok(ApiKey::new(s.trim()))
}

/// Parses `10s`, `500ms`, `24h`, `1m30s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// A time scale: a finite number > 0.
pub fn parse_time_scale(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("invalid time scale {s:?}: expected a finite number > 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut full = vec!["serve"];
        full.extend_from_slice(args);
        let args = Settings::try_parse_from(full).map_err(|e| e.kind().to_string())?;
        args.check().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.server.listen.to_string(), "0.0.0.0:50051");
        assert_eq!(s.server.admin_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(s.upstream.url, None);
        assert_eq!(s.upstream.key().expose(), SIMULATOR_API_KEY);
        assert_eq!(s.upstream.timeout, Duration::from_secs(10));
        assert_eq!(s.upstream.attempt_timeout, Duration::from_secs(5));
        assert_eq!((s.upstream.retry_budget_percent, s.upstream.retry_budget_min), (20, 10));
        assert_eq!(s.service.script_cache_ttl, Duration::from_secs(30));
        assert_eq!(s.service.max_contacts, 10_000);
        assert_eq!(s.server.max_message_bytes, 4_194_304);
        assert_eq!(s.server.max_concurrency, 1024);
        assert_eq!(s.server.shutdown_grace, Duration::from_secs(30));
        assert!(!s.service.allow_caller_api_key);
        assert!(s.security.tls.cert.is_none());
        assert_eq!(s.server.log_format, LogFormat::Text);
        assert!(!s.upstream.http2_prior_knowledge);
        assert!(parse(&["--upstream-http2-prior-knowledge"]).unwrap().upstream.http2_prior_knowledge);
    }

    #[test]
    fn the_nats_event_store_flags() {
        let s = parse(&[]).unwrap();
        assert_eq!((s.events.nats_url.as_deref(), s.events.stream.as_str()), (None, "CALLBOT_EVENTS"));
        let s = parse(&[
            "--events-nats-url",
            "nats://a:4222,nats://b:4222",
            "--events-stream",
            " EV ",
            "--events-nats-user",
            "u",
            "--events-nats-password",
            "p",
        ])
        .unwrap();
        assert_eq!(s.events.nats_url.as_deref(), Some("nats://a:4222,nats://b:4222"));
        assert_eq!(s.events.stream, "EV");
        assert_eq!(s.events.nats_password.as_ref().map(ApiKey::expose), Some("p"));
        assert!(!format!("{:?}", s.events).contains("\"p\""), "the password is never printed");
        assert_eq!(parse(&["--events-nats-url", " "]).unwrap().events.nats_url, None);
        for bad in ["a.b", "a b", "a*", "a>", ""] {
            assert_eq!(
                parse(&["--events-stream", bad]).unwrap_err(),
                ConfigError::BadEventsStream.to_string(),
                "{bad}"
            );
        }
        assert!(parse(&["--events-nats-user", "u"]).is_err(), "a user needs a password");
    }

    #[test]
    fn remote_upstream_requires_a_key_and_a_url() {
        assert_eq!(
            parse(&["--upstream-url", "https://api.example.com/"]).unwrap_err(),
            ConfigError::MissingApiKey.to_string()
        );
        let s =
            parse(&["--upstream-url", "https://api.example.com/", "--api-key", "k", "--caller-auth", "mesh"]).unwrap();
        assert_eq!(s.upstream.url.as_deref(), Some("https://api.example.com"));
        assert_eq!(s.upstream.key().expose(), "k");
        assert_eq!(
            parse(&["--upstream-url", "ftp://x", "--api-key", "k"]).unwrap_err(),
            ConfigError::BadUpstreamUrl.to_string()
        );
        assert_eq!(parse(&["--api-key", "  "]).unwrap_err(), ConfigError::EmptyApiKey.to_string());
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            &["--upstream-timeout", "ten"][..],
            &["--listen", "nowhere"],
            &["--max-concurrency", "0"],
            &["--max-contacts", "-1"],
            &["--log-format", "xml"],
            &["--tls-cert", "a.pem"],
            &["--tls-key", "a.key"],
            &["--tls-client-ca", "ca.pem"],
            &["--tls-client-ca", "ca.pem", "--tls-key", "a.key"],
            &["--allow-caller-api-key", "maybe"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn tls_is_one_group() {
        let s = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        let tls = s.security.tls;
        assert_eq!(
            (tls.cert.unwrap().to_str(), tls.key.unwrap().to_str(), tls.client_ca),
            (Some("c.pem"), Some("k.pem"), None)
        );
        let s = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"]).unwrap();
        assert_eq!(s.security.tls.client_ca.unwrap().to_str(), Some("ca.pem"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn the_tenants_file_replaces_the_key_and_caller_flags() {
        let tenants = ["--tenants-file", "tenants.yaml"];
        let with = |extra: &[&str]| parse(&[&tenants[..], extra].concat());
        for (extra, other) in [
            (&["--api-key", "k"][..], "--api-key (CALLBOT_API_KEY)"),
            (&["--api-key-file", "k.txt"], "--api-key-file (CALLBOT_API_KEY_FILE)"),
            (&["--caller-tokens-file", "t.txt"], "--caller-tokens-file (CALLBOT_CALLER_TOKENS_FILE)"),
            (&["--allow-caller-api-key"], "--allow-caller-api-key (CALLBOT_ALLOW_CALLER_API_KEY)"),
        ] {
            let err = with(extra).unwrap_err();
            assert!(err.starts_with("--tenants-file (CALLBOT_TENANTS_FILE) cannot be used with "), "{err}");
            assert!(err.contains(other), "{extra:?}: {err}");
        }
        // Without a key of its own, even with a real upstream.
        let s = with(&["--upstream-url", "https://api.example.com", "--allow-caller-api-key=false"]).unwrap();
        assert_eq!(s.upstream.api_key, None);
        assert_eq!(s.security.tenants_file.unwrap().to_str(), Some("tenants.yaml"));
        assert_eq!(s.security.secrets_poll_interval, Duration::from_secs(1));
    }

    #[test]
    fn an_api_key_file_replaces_the_api_key() {
        let err = parse(&["--api-key", "k", "--api-key-file", "k.txt"]).unwrap_err();
        assert_eq!(
            err,
            "--api-key-file (CALLBOT_API_KEY_FILE) cannot be used with --api-key (CALLBOT_API_KEY): give the key one way"
        );
        let s =
            parse(&["--upstream-url", "https://api.example.com", "--api-key-file", "k.txt", "--caller-auth", "mesh"])
                .unwrap();
        assert_eq!((s.upstream.api_key, s.upstream.api_key_file.unwrap().to_str()), (None, Some("k.txt")));
        assert_eq!(parse(&["--secrets-poll-interval", "0s"]).unwrap_err(), ConfigError::ZeroPollInterval.to_string());
        let s = parse(&["--secrets-poll-interval", "50ms"]).unwrap();
        assert_eq!(s.security.secrets_poll_interval, Duration::from_millis(50));
    }

    #[test]
    fn a_real_upstream_needs_callers_authenticated_or_the_mesh_trusted_explicitly() {
        let real = ["--upstream-url", "https://api.example.com", "--api-key", "k"];
        let with = |extra: &[&str]| parse(&[&real[..], extra].concat());
        let err = with(&[]).unwrap_err();
        assert_eq!(err, ConfigError::NoCallerAuth.to_string());
        for way in ["--caller-tokens-file", "--tenants-file", "--caller-auth mesh"] {
            assert!(err.contains(way), "{err} names {way}");
        }
        assert_eq!(with(&["--caller-auth", "mesh"]).unwrap().security.caller_auth, Some(CallerAuth::Mesh));
        assert!(with(&["--caller-tokens-file", "t.txt"]).is_ok());
        assert!(with(&["--caller-auth", "none"]).is_err(), "mesh is the only explicit trust");
        // The built-in simulator places no real call: no need to say.
        assert_eq!(parse(&[]).unwrap().security.caller_auth, None);
        assert_eq!(parse(&[]).unwrap().server.grpc_max_streams_per_connection, 100);
    }

    #[test]
    fn webhook_secrets_are_long_enough_and_the_receiver_bounds_its_clients() {
        let strong = "0123456789abcdef0123456789abcdef";
        let s = parse(&["--webhook-secret", strong, "--webhook-secret-previous", &strong.replace('0', "x")]).unwrap();
        assert_eq!(s.events.webhook_secret.as_ref().map(ApiKey::expose), Some(strong));
        for weak in [&["--webhook-secret", "a"][..], &["--webhook-secret-previous", &strong[1..]]] {
            assert_eq!(parse(weak).unwrap_err(), ConfigError::WeakWebhookSecret.to_string(), "{weak:?}");
        }
        assert!(parse(&["--webhook-secret", strong, "--webhook-secret-file", "s.txt"]).is_err(), "one way");
        let s = parse(&[]).unwrap();
        assert_eq!(s.events.webhook_header_timeout, Duration::from_secs(10));
        assert_eq!(s.events.webhook_body_timeout, Duration::from_secs(30));
        assert_eq!(s.events.webhook_max_connections, 1024);
        assert_eq!(parse(&["--webhook-body-timeout", "0s"]).unwrap_err(), ConfigError::ZeroWebhookTimeout.to_string());
        // A secret file stands for the secret with a real upstream.
        let real = ["--upstream-url", "https://x.example", "--api-key", "k", "--caller-auth", "mesh"];
        let listen = ["--webhook-listen", "127.0.0.1:0"];
        assert_eq!(parse(&[&real[..], &listen].concat()).unwrap_err(), ConfigError::MissingWebhookSecret.to_string());
        assert!(parse(&[&real[..], &listen, &["--webhook-secret-file", "s.txt"]].concat()).is_ok());
    }

    #[test]
    fn api_key_is_never_printed() {
        let s = parse(&["--api-key", "super-secret-key"]).unwrap();
        assert!(!format!("{s:?}").contains("super-secret-key"));
    }
}
