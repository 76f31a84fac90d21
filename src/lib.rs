//! callbot-facade: a gRPC facade in front of a call-center provider's callBot REST API.
//!
//! Callers speak gRPC (`callbot.v1.CallBotService`); the facade validates, calls the REST API
//! with a cached access token, retries what is safe to retry, and answers with rich gRPC errors.
//!
//! # Layout
//! - [`config`]: typed settings from flags and environment.
//! - [`app`]: binds listeners, assembles services and layers, serves until stopped.
//! - [`middleware`]: request id, caller auth, load shedding, access log (one tower layer).
//! - [`service`]: the `CallBotService` handlers: validate, call upstream, convert.
//! - [`campaign`]: `CreateCampaign`'s engine: a contact stream cut into resumable chunk sessions.
//! - [`domain`]: validated request types and Vietnamese-aware folding; no I/O, no tonic.
//! - [`upstream`]: the REST client (envelope, token lifecycle, retries, one method per endpoint).
//! - [`catalog`]: the per-tenant script-list cache.
//! - [`cli`]: the `campaign` and `scripts` commands, clients of a running facade.
//! - [`cache`]: the single-flight keyed cache under tokens and scripts.
//! - [`status`]: THE error table, every failure to a `tonic::Status` with details.
//! - [`simulator`]: the built-in callBot REST API with fault injection (shares no product code).
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`metrics`]: the Prometheus registry (one per application) and every metric.
//! - [`telemetry`]: log setup.
//! - [`trace_context`]: W3C `traceparent` parsing, new traces and child spans.
//! - [`pb`]: generated code.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cache;
pub mod campaign;
pub mod catalog;
pub mod cli;
pub mod codec;
pub mod config;
pub mod convert;
pub mod deadline;
pub mod domain;
pub mod logwriter;
pub mod metrics;
pub mod middleware;
pub mod pb;
pub mod service;
pub mod simulator;
pub mod status;
pub mod telemetry;
pub mod trace_context;
pub mod upstream;

/// Internal entry points for the fuzz targets (`fuzz/`) and the property tests
/// (`tests/properties.rs`): the upstream envelope parser and the field-path form of a variable key.
///
/// Not part of the API and not stable; everything else those harnesses use is public anyway
/// (`domain`, `upstream::ExecuteBody`, `upstream::parse_script_list`, `status`, `pb`).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::domain::session::path_key;
    pub use crate::upstream::fuzzing::*;
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
