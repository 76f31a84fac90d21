//! The callBot REST client: one method per endpoint, each in its own file beside its payloads,
//! over one shared exchange, and the whole exchange bounded by the call's deadline. It knows
//! nothing of gRPC.
//!
//! # Layout
//! - `exchange.rs`: what every endpoint shares: the token and the request, one refresh on a
//!   401, retries under the budget, the body under the size cap, the envelope decoded.
//! - `auth.rs`: `GET /api/auth` and the access token's lifecycle (fetched on first need, cached
//!   until shortly before it expires, refreshed single-flight).
//! - `scripts.rs`: `GET /api/call_bot/script/list` and the script payloads.
//! - `execute.rs`: `POST /api/call_bot/execute_by_phone`, its body and its answer.
//! - `calls.rs`: what the provider POSTs to a webhook (live states, end-of-call records) and
//!   `POST /api/v3/call-transaction/search`, the call history.
//! - `webhooks.rs`: `GET /api/webhooks/list`, `POST /api/webhooks/register`.
//! - `client.rs`: the HTTP client (hyper-util's pooled client with rustls) and the request builder.
//! - `envelope.rs`: the JSON envelope every answer comes in, and the lenient field readers.
//! - `error.rs`: [`UpstreamError`]; `retry.rs`: what may be retried, the backoff and the budget.

mod auth;
mod calls;
mod client;
pub(crate) mod envelope;
mod error;
mod exchange;
mod execute;
pub mod retry;
mod scripts;
mod webhooks;

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use tokio::time::Instant;

pub use auth::AuthPayload;
pub use calls::{CallRecord, Delivery, HistoryQuery, LiveState, SEARCH_PAGE_SIZE, parse_delivery};
pub use error::{UpstreamError, is_duplicate_session_code};
pub use execute::{ContactInfo, EncodedExecute, ExecuteBody, ExecuteOutcome, ExecutePayload, Rejection};
pub use scripts::{Script, ScriptList, ScriptVariable, parse_script_list};

use auth::AccessToken;
use client::Http;
use exchange::Endpoint;
use retry::RetryBudget;

pub use crate::domain::ApiKey;
use crate::{cache::SingleFlightCache, config::UpstreamSettings, metrics::Metrics, trace_context::TraceParent};

/// TCP connect timeout of one upstream connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Per-call facts the upstream exchange needs: who (key), until when (deadline), and the
/// correlation headers to forward.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The tenant key for this call.
    pub api_key: ApiKey,
    /// The whole exchange (token refresh and retries included) ends by then.
    pub deadline: Instant,
    /// Forwarded as `x-request-id`.
    pub request_id: String,
    /// The call's span: each upstream attempt is sent as a child of it (W3C `traceparent`).
    pub traceparent: Option<TraceParent>,
    /// Forwarded W3C trace state.
    pub tracestate: Option<String>,
}

/// What is told each key the provider issued a token for.
type KeyAccepted = Box<dyn Fn(&ApiKey) + Send + Sync>;

/// Why [`UpstreamClient::new`] could not build a client: a start-up error, never a call's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The base URL followed by an endpoint path is not a URL. The text is the parser's reason
    /// only: the URL itself may carry credentials.
    #[error("the upstream base URL is not a valid URL ({0})")]
    BadUrl(String),
    /// The HTTP client itself could not be built (its TLS backend).
    #[error("{0}")]
    Http(String),
}

/// The REST client. Cheap to share (`Arc`); one per process.
pub struct UpstreamClient {
    /// The connection pool every endpoint shares.
    http: Http,
    /// Bound of one HTTP attempt of a read (writes get the whole remaining deadline).
    attempt_timeout: Duration,
    /// Each endpoint's URL, parsed once.
    endpoints: Endpoints,
    /// The access token of each API key, fetched at most once at a time (`auth.rs`).
    tokens: SingleFlightCache<ApiKey, AccessToken, UpstreamError>,
    /// Caps retries to a share of recent requests, so an outage is not amplified.
    budget: RetryBudget,
    /// Numbers the tokens fetched, so a 401 drops only the token it answered.
    serial: AtomicU64,
    /// Where attempts, retries and token fetches are counted for `/metrics`.
    metrics: Arc<Metrics>,
    /// Told each key the provider issued a token for (tenancy remembers callers' own keys then).
    key_accepted: std::sync::OnceLock<KeyAccepted>,
}

/// One named field per endpoint: an endpoint without a URL does not compile, and a base URL
/// that does not parse fails [`UpstreamClient::new`] rather than every call.
struct Endpoints {
    auth: Endpoint,
    script_list: Endpoint,
    execute: Endpoint,
    search: Endpoint,
    webhook_list: Endpoint,
    webhook_register: Endpoint,
}

impl Endpoints {
    fn new(base_url: &str) -> Result<Self, BuildError> {
        Ok(Endpoints {
            auth: Endpoint::new(base_url, auth::PATH)?,
            script_list: Endpoint::new(base_url, scripts::PATH)?,
            execute: Endpoint::new(base_url, execute::PATH)?,
            search: Endpoint::new(base_url, calls::SEARCH_PATH)?,
            webhook_list: Endpoint::new(base_url, webhooks::LIST_PATH)?,
            webhook_register: Endpoint::new(base_url, webhooks::REGISTER_PATH)?,
        })
    }
}

impl UpstreamClient {
    /// Builds the client and its connection pool for the API at `base_url` (no trailing slash),
    /// counting attempts, retries and token fetches into `metrics`.
    pub fn new(base_url: &str, settings: &UpstreamSettings, metrics: Arc<Metrics>) -> Result<Self, BuildError> {
        let endpoints = Endpoints::new(base_url)?;
        let http = Http::new(CONNECT_TIMEOUT, settings.http2_prior_knowledge)?;
        Ok(UpstreamClient {
            http,
            attempt_timeout: settings.attempt_timeout,
            endpoints,
            tokens: SingleFlightCache::new(),
            budget: RetryBudget::new(settings.retry_budget_percent, settings.retry_budget_min),
            serial: AtomicU64::new(0),
            metrics,
            key_accepted: std::sync::OnceLock::new(),
        })
    }

    /// Sets what is told each key the provider issued a token for (once; later calls are ignored).
    pub(crate) fn on_key_accepted(&self, hook: impl Fn(&ApiKey) + Send + Sync + 'static) {
        let _ = self.key_accepted.set(Box::new(hook));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn a_base_url_that_does_not_parse_fails_at_start_up() {
        let settings = Settings::for_tests().upstream;
        let metrics = || Arc::new(Metrics::new());
        assert!(UpstreamClient::new("http://127.0.0.1:8080", &settings, metrics()).is_ok());
        assert!(UpstreamClient::new("https://api.example.com/prefix", &settings, metrics()).is_ok());
        for bad in ["http://[::1", "http://host:99999", "no-scheme", ""] {
            let err = UpstreamClient::new(bad, &settings, metrics()).err().expect(bad);
            assert!(matches!(err, BuildError::BadUrl(_)), "{bad}: {err:?}");
        }
        let secret = "http://user:s3cret@[::1";
        let err = UpstreamClient::new(secret, &settings, metrics()).err().expect("bad URL");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
