//! callbot-facade: a gRPC facade in front of a call-center provider's callBot REST API.
//!
//! Callers speak gRPC (`callbot.v1.CallBotService`); the facade validates, calls the REST API
//! with a cached access token, retries what is safe to retry, and answers with rich gRPC errors.
//!
//! # Layout
//! Public, for the binary and the tests:
//! - [`config`]: ONE nested settings tree from flags and environment, each default once.
//! - [`app`]: binds listeners, assembles services and layers, serves until stopped.
//! - [`pb`]: generated code.
//! - [`simulator`]: the built-in callBot REST API with fault injection (shares no product code).
//! - [`cli`]: the `campaign` and `scripts` commands, clients of a running facade.
//! - [`telemetry`]: log setup.
//! - [`testing`]: the few internals the tests, property tests, fuzz targets, benches and the load
//!   generator drive directly.
//!
//! Internal (`pub(crate)`):
//! - `service/`: the `CallBotService` handlers, one file per RPC family: validate, call, convert.
//! - `campaign`: `CreateCampaign`'s engine: a contact stream cut into resumable chunk sessions.
//! - `convert`: pb ⇄ domain ⇄ upstream conversions. `deadline`: the caller's deadline.
//! - `middleware/`: request id and trace, caller auth, load shedding, metrics and access log,
//!   tonic's refusals rewritten (one tower layer; `mod.rs` gives the order and why).
//! - `domain/`: validated request types and Vietnamese-aware folding; no I/O, no tonic.
//! - `upstream/`: the REST client, one module per endpoint over one exchange.
//! - `status`: THE error table, every failure to a `tonic::Status` with details.
//! - `catalog`, `cache`: the per-tenant script-list cache on a single-flight keyed cache.
//! - `logwriter`: the log sink (lines batched to stderr by one thread, lossless).
//! - `codec`: the gRPC codec. `metrics`, `admin`: the Prometheus registry and the admin endpoints.
//! - `console`: the web pages on the admin listener (`/console/`), with a gRPC caller's rights.
//! - `trace_context`: W3C `traceparent` parsing, new traces and child spans.
//! - `admission`: the calling policy applied to one session on its way upstream.
//! - `policy/`: the calling policy (hours, frequency caps, do-not-call), pure rules over a clock and
//!   the counts kept by the store.
//! - `tenancy/`: who a call runs as (caller tokens, caller keys, the tenants file), once per RPC
//!   in the middleware; the secret files kept live.
//! - `storage/`: the data dir (`--data-dir`): its lock, the embedded database (fjall) and the
//!   group-commit writer every durable part writes through.
//! - `reload`: secrets from files kept live: re-read on a change of content and on SIGHUP, the
//!   last good value kept when a new one is bad.
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod admission;
pub mod app;
pub(crate) mod cache;
pub(crate) mod campaign;
pub(crate) mod catalog;
pub mod cli;
pub(crate) mod codec;
pub mod config;
pub(crate) mod console;
pub(crate) mod convert;
pub(crate) mod deadline;
pub(crate) mod domain;
pub(crate) mod events;
pub(crate) mod http_listener;
pub(crate) mod logwriter;
pub(crate) mod metrics;
pub(crate) mod middleware;
pub mod pb;
pub(crate) mod policy;
pub(crate) mod reload;
pub(crate) mod service;
pub mod simulator;
pub(crate) mod status;
pub(crate) mod storage;
pub mod telemetry;
pub(crate) mod tenancy;
pub(crate) mod trace_context;
pub(crate) mod upstream;
pub(crate) mod webhook;

/// The internals that harnesses outside the crate drive directly, in one place: the
/// integration tests (`tests/api`: the campaign engine against a simulator), the property tests
/// (`tests/properties.rs`), the fuzz targets (`fuzz/`), the criterion benches
/// (`benches/hot_paths.rs`) and the load generator (`examples/`). They measure or check the very
/// code the facade runs. Not a stable API: it changes with the code.
pub mod testing {
    pub use crate::campaign::CampaignRun;
    pub use crate::convert::{execute_body, script_to_pb};
    pub use crate::domain::session::path_key;
    pub use crate::domain::{
        CampaignPlan, FieldViolation, NewSession, SessionLimits, ValidationError, fold, is_valid_phone, mask_phone,
        matches, validate_contacts, validate_script_id,
    };
    pub use crate::events::SessionLog;
    pub use crate::events::attribution::IndexBench;
    pub use crate::metrics::Metrics;
    pub use crate::policy::Policy;
    pub use crate::status::{ErrorContext, FacadeError, to_status};
    pub use crate::upstream::envelope::{Envelope, ONE_PASS_MIN_BYTES, ShapeError, failure_code, parse};
    pub use crate::upstream::{
        AuthPayload, CallContext, ContactInfo, EncodedExecute, ExecuteBody, ExecutePayload, Script, ScriptList,
        ScriptVariable, UpstreamClient, UpstreamError, parse_script_list,
    };
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
