//! The operator commands that drive a running facade through the generated gRPC client.
//! Every command takes `--server HOST:PORT` or a URL (`CALLBOT_SERVER`, default `http://127.0.0.1:50051`),
//! exits 0 on success and 1 on an error (the facade's status described by [`describe`]:
//! code, reason, message, field violations, session key and cursors), `campaign --watch`
//! 2 when its `--watch-timeout` passed.
//!
//! - `campaign --script ID --csv FILE [--watch [--watch-timeout 1h]]`: a CSV file to
//!   `CreateCampaign` (see [`campaign`]). With `--watch`, it then polls `GetSessionReport` for
//!   each session it started, every second, until all are finished (progress bar on a terminal:
//!   contacts final / contacts total; resumed chunks carry no session id and are skipped, with
//!   a line saying so), and prints
//!   `outcomes: N contacts, A answered, B no answer, C busy, D rejected, E failed` then
//!   `watch: all S session(s) finished (T)`. On timeout: the totals so far, then
//!   `stopped waiting after T: ...` on stderr, exit 2.
//! - `scripts [--name-contains TEXT] [--json]`: `ListScripts` as a table or JSON.
//! - `watch [--session ID] [--phone P] [--from-start | --after CURSOR] [--json]`:
//!   `WatchCallEvents`, one line per event until Ctrl-C or the stream's end (both exit 0):
//!   `HH:MM:SS  *******670  ended     answered   ring 3s talk 10s  attempt 1  session S  cursor C`
//!   (local time of the event; phone masked but its last 3 digits; the outcome, each duration
//!   and the attempt only when set; the cursor last, for `--after`). `--json`: one object per
//!   line with the CallEvent's fields by proto name, `state`/`outcome` as lower-case words
//!   (`ringing`, `no_answer`, `unspecified`...), durations in seconds or `null`, `occurred_at`
//!   RFC 3339 UTC, and the phone NOT masked.
//! - `report --session ID [--json]`: `GetSessionReport` as
//!   `session S: N contacts, A answered, B no answer, C busy, D rejected, E failed, F in progress; finished: yes|no`
//!   then a table PHONE (masked), STATE, OUTCOME, ATTEMPTS, TALK, LAST EVENT (local
//!   `YYYY-MM-DD HH:MM:SS`), FINAL (`-` where nothing is known). `--json`: the whole report as
//!   one object, same field names and words as `watch --json`, phones not masked.
//! - `sessions [--campaign-id PREFIX] [--since DURATION] [--limit N] [--json]`: `ListSessions`,
//!   newest first, paged until N: a table SESSION, KEY, SCRIPT, NAME, CREATED, CONTACTS, the
//!   outcome counts, FINISHED; or a JSON array.
//!
//! Layout:
//! - [`contacts`]: the CSV file: header, rows to contacts, the pre-flight scan that reports bad
//!   rows by line number, and the derived campaign id.
//! - [`campaign`]: the `campaign` command: scan, stream, progress, summary.
//! - [`follow`]: `campaign --watch`.
//! - [`scripts`]: the `scripts` command.
//! - [`watch`], [`report`], [`sessions`]: the `watch`, `report` and `sessions` commands.
//! - [`clock`]: local time (jiff: `$TZ` or the system zone, the IANA database compiled in), RFC 3339 for JSON.

pub mod campaign;
pub mod clock;
pub mod contacts;
mod dry_run;
pub mod follow;
pub mod report;
pub mod scripts;
pub mod sessions;
pub mod watch;

use tonic::{
    Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_types::StatusExt;

use crate::{
    config::Connection,
    pb::{self, call_bot_service_client::CallBotServiceClient},
};

/// Why a command failed; `main` prints it and exits with [`CliError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The facade could not be reached.
    #[error("cannot connect to {server}: {detail}")]
    Connect {
        /// The `--server` given.
        server: String,
        /// Why.
        detail: String,
    },
    /// The facade answered with an error.
    #[error("{}", describe(.0))]
    Rpc(Status),
    /// The CSV file cannot be used (unreadable, no header, bad rows); nothing was sent.
    #[error("{0}")]
    Input(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// `campaign --watch` stopped waiting (`--watch-timeout`); `main` exits 2.
    #[error("{0}")]
    Timeout(String),
}

impl CliError {
    /// The process exit code for this error: 2 when a wait timed out, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Timeout(_) => 2,
            _ => 1,
        }
    }
}

/// `--server` as a URL: a bare `host:port` (as grpcurl takes it) means `http://host:port`.
pub fn server_url(server: &str) -> String {
    let server = server.trim();
    if server.contains("://") { server.to_owned() } else { format!("http://{server}") }
}

/// A client of the facade, every call carrying the bearer token when one is given.
pub type Client = CallBotServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Bearer(***)" } else { "Bearer(none)" })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A client of the facade that `connection` names (`--server` as `host:port` or a URL, the
/// token, TLS).
pub async fn connect(connection: &Connection) -> Result<Client, CliError> {
    let bearer = Bearer(bearer_value(connection)?);
    let tls = tls_config(connection)?;
    let mut url = server_url(&connection.server);
    // A CA or a client certificate given with a bare host:port means TLS.
    if tls.is_some() && url.starts_with("http://") && !connection.server.contains("://") {
        url = url.replacen("http://", "https://", 1);
    }
    let err = |detail: String| CliError::Connect { server: url.clone(), detail };
    let mut endpoint =
        Channel::from_shared(url.clone()).map_err(|e| err(format!("not a host:port or URL ({e}); {SERVER_HINT}")))?;
    if url.starts_with("https://") {
        let tls = tls.unwrap_or_else(|| ClientTlsConfig::new().with_webpki_roots());
        endpoint = endpoint.tls_config(tls).map_err(|e| err(error_chain(&e)))?;
    } else if tls.is_some() {
        return Err(err("--ca-cert and --client-cert need TLS: use an https:// URL".into()));
    }
    let channel = endpoint.connect().await.map_err(|e| err(connect_detail(&e)))?;
    Ok(CallBotServiceClient::with_interceptor(channel, bearer))
}

/// The `authorization` value of `--token` or `--token-file`.
fn bearer_value(connection: &Connection) -> Result<Option<MetadataValue<Ascii>>, CliError> {
    let token = match (&connection.token, &connection.token_file) {
        (Some(token), _) => token.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Input(format!("--token-file: cannot read {}: {e}", path.display())))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        return Err(CliError::Input("--token / --token-file: the token is empty".into()));
    }
    // Never echo the token: it is a secret.
    MetadataValue::try_from(format!("Bearer {token}"))
        .map(Some)
        .map_err(|_| CliError::Input("--token / --token-file: the token holds characters a header cannot carry".into()))
}

/// The TLS settings of `--ca-cert` and `--client-cert`/`--client-key`; `None` when neither is given.
fn tls_config(connection: &Connection) -> Result<Option<ClientTlsConfig>, CliError> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| CliError::Input(format!("{flag}: cannot read {}: {e}", path.display())))
    };
    let mut tls = None::<ClientTlsConfig>;
    if let Some(path) = &connection.ca_cert {
        let pem = read("--ca-cert", path)?;
        tls = Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)));
    }
    if let (Some(cert), Some(key)) = (&connection.client_cert, &connection.client_key) {
        let identity = Identity::from_pem(read("--client-cert", cert)?, read("--client-key", key)?);
        let base = tls.unwrap_or_else(|| ClientTlsConfig::new().with_webpki_roots());
        tls = Some(base.identity(identity));
    }
    Ok(tls)
}

/// How to point a command elsewhere; the end of every connection error.
const SERVER_HINT: &str = "set --server HOST:PORT (or CALLBOT_SERVER) to the facade's gRPC address";

/// Why a connection failed, and what to do about it.
fn connect_detail(e: &dyn std::error::Error) -> String {
    let chain = error_chain(e);
    if chain.contains("Connection refused") {
        format!(
            "connection refused: nothing listens there. Start the facade (`callbot-facade`, gRPC on port 50051) \
             or {SERVER_HINT}"
        )
    } else {
        format!("{chain}; {SERVER_HINT}")
    }
}

/// An error and its causes on one line, each cause once (tonic's transport errors repeat
/// their source in their own text).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

/// Text that came from outside (the facade, the provider through it, a webhook sender) made
/// inert for a terminal: every control character (C0, DEL, C1: escape sequences, carriage
/// returns, bells, line breaks) is written as `\u{..}`, so no field can retitle or clear the
/// terminal, move its cursor or forge a line. Printable text, Vietnamese included, is unchanged.
pub fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A status as an operator needs it: code, reason, message, then the field violations and the
/// session key, one per line.
pub fn describe(status: &Status) -> String {
    // Not a gRPC answer: tonic maps a plain HTTP status (an admin port, a web server, a proxy).
    if let Some(http) = status.message().split("mapped from HTTP status code ").nth(1) {
        return format!(
            "the server answered HTTP {http}, not gRPC: is --server the facade's gRPC address (port 50051 by \
             default), not its admin port (9090) or a web server?"
        );
    }
    let details = status.get_error_details();
    let mut text = format!("{:?}", status.code());
    if let Some(info) = details.error_info() {
        text.push_str(&format!(" ({})", inert(&info.reason)));
    }
    text.push_str(": ");
    text.push_str(&inert(status.message()));
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            text.push_str(&format!("\n  {}: {}", inert(&v.field), inert(&v.description)));
        }
    }
    if let Some(info) = details.error_info() {
        for key in ["external_session_id", "upstream_code", "earliest_cursor", "last_cursor"] {
            if let Some(value) = info.metadata.get(key) {
                text.push_str(&format!("\n  {key}: {}", inert(value)));
            }
        }
    }
    text
}

/// A call state as a lower-case word (`ringing`, `answered`, `ended`; `unspecified`).
pub fn state_word(state: pb::CallState) -> String {
    state.as_str_name().trim_start_matches("CALL_STATE_").to_ascii_lowercase()
}

/// A call outcome as a lower-case word (`answered`, `no_answer`, `busy`, `rejected`, `failed`;
/// `unspecified`).
pub fn outcome_word(outcome: pb::CallOutcome) -> String {
    outcome.as_str_name().trim_start_matches("CALL_OUTCOME_").to_ascii_lowercase()
}

/// A source as a lower-case word: `webhook`, `history`, `facade`, `unspecified`.
pub fn source_word(source: pb::CallEventSource) -> String {
    source.as_str_name().trim_start_matches("CALL_EVENT_SOURCE_").to_ascii_lowercase()
}

/// A duration as JSON seconds: an integer when whole, else fractional; `null` when absent.
pub fn seconds_json(d: Option<&prost_types::Duration>) -> serde_json::Value {
    match d {
        None => serde_json::Value::Null,
        Some(d) if d.nanos == 0 => d.seconds.into(),
        Some(d) => (d.seconds as f64 + f64::from(d.nanos) / 1e9).into(),
    }
}

/// A duration for a text line: whole seconds, `10s`.
pub fn seconds_text(d: &prost_types::Duration) -> String {
    format!("{}s", d.seconds)
}

#[cfg(test)]
mod inert_tests {
    use super::*;

    #[test]
    fn text_from_outside_is_inert_on_a_terminal() {
        assert_eq!(inert("s-1 Thông báo điểm thi 🎉"), "s-1 Thông báo điểm thi 🎉");
        assert_eq!(inert("\u{1b}]0;owned\u{7}\u{1b}[2J"), "\\u{1b}]0;owned\\u{7}\\u{1b}[2J");
        assert_eq!(inert("a\nb\rc\u{9b}d\u{7f}"), "a\\u{a}b\\u{d}c\\u{9b}d\\u{7f}");
    }
}
