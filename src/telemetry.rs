//! Log setup: `RUST_LOG` filter (default `info`), text or one JSON object per line, on stderr.
//! Nothing logs secrets: keys and tokens are wrapped types whose `Debug` hides them, and phone
//! numbers are masked where they are logged.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber; harmless if one is already installed (tests).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    // Every span of the line, outermost first: `rpc` carries request_id, trace_id
                    // and method, `upstream` the endpoint.
                    .with_current_span(false)
                    .with_span_list(true)
                    .flatten_event(true),
            )
            .try_init(),
    };
    let _ = result;
}
