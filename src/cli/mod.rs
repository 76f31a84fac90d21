//! The operator commands that drive a running facade through the generated gRPC client:
//! `campaign` (a CSV file to `CreateCampaign`) and `scripts` (`ListScripts` as a table or JSON).
//!
//! Layout:
//! - [`contacts`]: the CSV file: header, rows to contacts, the pre-flight scan that reports bad
//!   rows by line number, and the derived campaign id.
//! - [`campaign`]: the `campaign` command: scan, stream, progress, summary.
//! - [`scripts`]: the `scripts` command.

pub mod campaign;
pub mod contacts;
pub mod scripts;

use tonic::{Status, transport::Channel};
use tonic_types::StatusExt;

use crate::pb::call_bot_service_client::CallBotServiceClient;

/// Why a command failed; `main` prints it and exits 1.
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
}

/// A client of the facade at `server`.
pub async fn connect(server: &str) -> Result<CallBotServiceClient<Channel>, CliError> {
    let err = |detail: String| CliError::Connect { server: server.to_owned(), detail };
    let endpoint = Channel::from_shared(server.to_owned()).map_err(|e| err(e.to_string()))?;
    let channel = endpoint.connect().await.map_err(|e| err(error_chain(&e)))?;
    Ok(CallBotServiceClient::new(channel))
}

/// An error and its causes on one line (tonic's transport errors say little at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A status as an operator needs it: code, reason, message, then the field violations and the
/// session key, one per line.
pub fn describe(status: &Status) -> String {
    let details = status.get_error_details();
    let mut text = format!("{:?}", status.code());
    if let Some(info) = details.error_info() {
        text.push_str(&format!(" ({})", info.reason));
    }
    text.push_str(": ");
    text.push_str(status.message());
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    if let Some(info) = details.error_info() {
        for key in ["external_session_id", "upstream_code"] {
            if let Some(value) = info.metadata.get(key) {
                text.push_str(&format!("\n  {key}: {value}"));
            }
        }
    }
    text
}
