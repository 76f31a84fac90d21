//! The upstream client's metrics: HTTP attempts by endpoint and status, their duration, retries
//! and retries refused by the budget, answers by what their envelope said, token fetches. Every
//! endpoint's series are present at zero from the start.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::{HistogramFamily, UPSTREAM_ENDPOINTS, UPSTREAM_OUTCOMES, latency_histogram, register};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointOutcomeLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointStatusLabels {
    endpoint: &'static str,
    status: String,
}

/// The upstream client's metrics (part of [`super::Metrics`]).
#[derive(Clone)]
pub struct UpstreamMetrics {
    requests: Family<EndpointStatusLabels, Counter>,
    duration: HistogramFamily<EndpointLabels>,
    retries: Family<EndpointLabels, Counter>,
    retries_refused: Family<EndpointLabels, Counter>,
    answers: Family<EndpointOutcomeLabels, Counter>,
    token_refreshes: Counter,
}

impl std::fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamMetrics")
    }
}

impl UpstreamMetrics {
    /// Registers every series in `registry`, each endpoint's at zero.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = UpstreamMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
            retries_refused: Family::default(),
            answers: Family::default(),
            token_refreshes: Counter::default(),
        };
        register(
            registry,
            "callbot_upstream_requests",
            "HTTP attempts to the callBot API, by endpoint and HTTP status (`error` when no answer came).",
            m.requests.clone(),
        );
        register(
            registry,
            "callbot_upstream_request_duration_seconds",
            "Duration of one HTTP attempt to the callBot API, body included.",
            m.duration.clone(),
        );
        register(
            registry,
            "callbot_upstream_retries",
            "Upstream attempts retried after a retryable failure.",
            m.retries.clone(),
        );
        register(
            registry,
            "callbot_upstream_retries_refused",
            "Retryable upstream failures not retried because the retry budget was spent.",
            m.retries_refused.clone(),
        );
        register(
            registry,
            "callbot_upstream_answers",
            "Upstream answers by endpoint and what they said (success; rejected: a refusal in the envelope, HTTP 200 or 4xx; malformed; http_error: an error status without an envelope).",
            m.answers.clone(),
        );
        register(
            registry,
            "callbot_upstream_token_refreshes",
            "Access-token fetches (first use, expiry, or a 401).",
            m.token_refreshes.clone(),
        );
        for endpoint in UPSTREAM_ENDPOINTS {
            let _ = m.duration.get_or_create(&EndpointLabels { endpoint });
            let _ = m.retries.get_or_create(&EndpointLabels { endpoint });
            let _ = m.retries_refused.get_or_create(&EndpointLabels { endpoint });
            for outcome in UPSTREAM_OUTCOMES {
                let _ = m.answers.get_or_create(&EndpointOutcomeLabels { endpoint, outcome });
            }
        }
        m
    }

    /// One HTTP attempt ended: `status` is the HTTP status, `None` when no answer came.
    pub fn attempt(&self, endpoint: &'static str, status: Option<u16>, elapsed: Duration) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.requests.get_or_create(&EndpointStatusLabels { endpoint, status }).inc();
        self.duration.get_or_create(&EndpointLabels { endpoint }).observe(elapsed.as_secs_f64());
    }

    /// An upstream attempt is about to be retried.
    pub fn retry(&self, endpoint: &'static str) {
        self.retries.get_or_create(&EndpointLabels { endpoint }).inc();
    }

    /// A retryable failure is not retried: the retry budget is spent.
    pub fn retry_refused(&self, endpoint: &'static str) {
        self.retries_refused.get_or_create(&EndpointLabels { endpoint }).inc();
    }

    /// An upstream answer was read: `outcome` is one of [`UPSTREAM_OUTCOMES`].
    pub fn answer(&self, endpoint: &'static str, outcome: &'static str) {
        self.answers.get_or_create(&EndpointOutcomeLabels { endpoint, outcome }).inc();
    }

    /// An access token is being fetched.
    pub fn token_refresh(&self) {
        self.token_refreshes.inc();
    }
}
