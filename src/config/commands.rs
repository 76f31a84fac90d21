//! The command line: [`Cli`] and its subcommands, and the argument structs of the operator
//! subcommands. The settings tree of `serve` is the parent module's.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use super::{LogFormat, Settings, parse_duration, parse_time_scale};

/// The `callbot-facade` command line. With no subcommand it serves (the flags of `serve` apply).
#[derive(Debug, Parser)]
#[command(name = "callbot-facade", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// The subcommand; `serve` when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The flags of `serve`, accepted without the subcommand name too.
    #[command(flatten)]
    pub serve: Settings,
}

/// What the binary does.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up; size is irrelevant
pub enum Command {
    /// Run the gRPC facade (the default).
    Serve(Settings),
    /// Run the built-in callBot REST API simulator alone.
    Simulate(SimulateArgs),
    /// Start a campaign from a CSV file through a running facade (CreateCampaign).
    Campaign(CampaignArgs),
    /// List the scripts of a running facade's tenant (ListScripts).
    Scripts(ScriptsArgs),
    /// Print a running facade's call events as they come (WatchCallEvents).
    Watch(WatchArgs),
    /// Sum up one session's calls: totals and one row per contact (GetSessionReport).
    Report(ReportArgs),
    /// List the tenant's recent sessions, newest first, with their outcome counts (ListSessions).
    Sessions(SessionsArgs),
}

/// Flags of `simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Listen address of the simulator.
    #[arg(long, env = "CALLBOT_SIM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Accepted API keys, comma separated; unset = any non-empty key.
    #[arg(long, env = "CALLBOT_SIM_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Option<Vec<String>>,
    /// Lifetime of issued access tokens.
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long, env = "CALLBOT_SIM_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// Simulated seconds per real second for the calls the simulator places (> 0; 60 = a minute a second).
    #[arg(long, env = "CALLBOT_SIM_TIME_SCALE", default_value = "10", value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// Log format.
    #[arg(long, env = "CALLBOT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// How the operator subcommands reach the facade: its address, the caller's bearer token, TLS.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The facade's gRPC address: HOST:PORT (plain HTTP/2) or a URL, http:// or https://.
    #[arg(long, env = "CALLBOT_SERVER", default_value = "http://127.0.0.1:50051", value_name = "HOST:PORT|URL")]
    pub server: String,
    /// Bearer token sent with every call (`authorization: Bearer ...`), for a facade started
    /// with --caller-tokens-file or --tenants-file; unset = no token. Never printed. Cannot be
    /// used with --token-file.
    #[arg(long, env = "CALLBOT_TOKEN", hide_env_values = true, conflicts_with = "token_file", value_name = "TOKEN")]
    pub token: Option<String>,
    /// File holding the bearer token (read whole, surrounding whitespace trimmed), so that the
    /// token stays out of the shell history and the process list; unset = no file. Cannot be
    /// used with --token.
    #[arg(long, env = "CALLBOT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that the facade's TLS certificate must chain to; turns TLS on for a
    /// HOST:PORT; unset = for https://, the public (Mozilla) roots compiled in.
    #[arg(long, env = "CALLBOT_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) presented to a facade that requires mTLS (--tls-client-ca);
    /// needs --client-key; unset = none.
    #[arg(long, env = "CALLBOT_CLIENT_CERT", requires = "client_key", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert; needs --client-cert; unset = none.
    #[arg(long, env = "CALLBOT_CLIENT_KEY", requires = "client_cert", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
}

/// Flags of `campaign`.
#[derive(Debug, Clone, Args)]
pub struct CampaignArgs {
    /// Where the facade is and how to reach it.
    #[command(flatten)]
    pub connection: Connection,
    /// The script every contact's call reads (an id that `scripts` lists). Required.
    #[arg(long)]
    pub script: String,
    /// The contacts: UTF-8 (BOM or not), a header row with `phone`, optional `email` and
    /// `ext_contact_code`, every other column a script variable by field_code; `,`, `;` or tab
    /// between cells. Required.
    #[arg(value_name = "FILE", long)]
    pub csv: PathBuf,
    /// The campaign's idempotency root; default: derived from the CSV content, the script and
    /// the chunk size, so re-running the same command resumes.
    #[arg(long)]
    pub campaign_id: Option<String>,
    /// Contacts per upstream session.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub chunk_size: u32,
    /// Check every contact against the script's variables (required ones filled, no unknown
    /// column) before sending anything, and have the facade check them too.
    #[arg(long)]
    pub check_variables: bool,
    /// Session name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Caller id (hotline or SIP number); empty = the internal network.
    #[arg(long, default_value = "")]
    pub caller_id: String,
    /// After sending, follow the campaign's sessions until every contact is final (polls
    /// GetSessionReport every second), then print the outcome totals.
    #[arg(long)]
    pub watch: bool,
    /// Write the rows of the contacts the upstream refused to this CSV file (the input's header
    /// and separator), for a re-run once fixed; their lines and reasons are printed either way;
    /// unset = no file.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// With --watch: stop waiting after this long (exit code 2).
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long, default_value = "1h", value_parser = parse_duration, requires = "watch")]
    pub watch_timeout: Duration,
    /// What the calls are for (the tenant's calling policy applies the purpose's hours and cap);
    /// unset = not said.
    #[arg(long, value_enum)]
    pub purpose: Option<CallPurposeArg>,
    /// Start each chunk at the earliest moment within the calling hours where its dialling fits,
    /// after the previous chunk's projected end (docs/policy.md).
    #[arg(long)]
    pub schedule_within_calling_hours: bool,
    /// Call no one: ask the facade, chunk by chunk (CreateSession with validate_only), what
    /// would be refused and when each chunk would dial, and print it.
    #[arg(long, conflicts_with_all = ["watch", "rejects"])]
    pub dry_run: bool,
}

/// `--purpose` of `campaign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CallPurposeArg {
    /// Advertising (marketing) calls.
    Advertising,
    /// Calls the person expects (reminders, notices).
    Service,
}

impl CallPurposeArg {
    /// The proto value.
    pub fn to_proto(self) -> i32 {
        match self {
            CallPurposeArg::Advertising => crate::pb::CallPurpose::Advertising as i32,
            CallPurposeArg::Service => crate::pb::CallPurpose::Service as i32,
        }
    }
}

/// Flags of `watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Where the facade is and how to reach it.
    #[command(flatten)]
    pub connection: Connection,
    /// Only that session's calls; default: every call of the tenant.
    #[arg(long, default_value = "")]
    pub session: String,
    /// Only calls to that number (+84..., 84... and 0... compare equal).
    #[arg(long, default_value = "")]
    pub phone: String,
    /// First replay every retained event that matches, then go live.
    #[arg(long, conflicts_with = "after")]
    pub from_start: bool,
    /// Resume right after the event with this cursor (the last word of a printed line).
    #[arg(long, default_value = "")]
    pub after: String,
    /// One JSON object per line instead of text; the phone is NOT masked there (it is data for
    /// programs), while text lines show only its last 3 digits.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Where the facade is and how to reach it.
    #[command(flatten)]
    pub connection: Connection,
    /// The session: the id `campaign` prints (autocall_id). Required.
    #[arg(long)]
    pub session: String,
    /// Print the whole report as one JSON object (phones not masked) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `sessions`.
#[derive(Debug, Clone, Args)]
pub struct SessionsArgs {
    /// Where the facade is and how to reach it.
    #[command(flatten)]
    pub connection: Connection,
    /// Only the sessions of this campaign (a prefix of their external session id); default: all.
    #[arg(long, default_value = "")]
    pub campaign_id: String,
    /// Only sessions created within this long before now; default: every retained one.
    /// A duration: `500ms`, `30s`, `5m`, `1h`.
    #[arg(value_name = "DURATION", long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// At most this many sessions (pages of up to 500 are fetched until then).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// Print JSON (an array of sessions) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `scripts`.
#[derive(Debug, Clone, Args)]
pub struct ScriptsArgs {
    /// Where the facade is and how to reach it.
    #[command(flatten)]
    pub connection: Connection,
    /// Only scripts whose name contains this (case and Vietnamese diacritics folded).
    #[arg(long, default_value = "")]
    pub name_contains: String,
    /// Print JSON (an array of scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
}
