//! The connections each client-facing HTTP listener (webhook receiver, admin) holds open now:
//! bounded by its cap, whatever slow or abandoned clients do (`crate::http_listener`).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// The listeners' metrics (part of [`super::Metrics`]).
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    connections: Family<ListenerLabels, Gauge>,
}

/// The listeners, each present from the start.
const LISTENERS: [&str; 2] = ["webhook", "admin"];

impl ListenerMetrics {
    /// Registers the series in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = ListenerMetrics::default();
        super::register(
            registry,
            "callbot_http_connections",
            "Connections a client-facing HTTP listener (webhook, admin) holds open now.",
            m.connections.clone(),
        );
        for listener in LISTENERS {
            let _ = m.connections.get_or_create(&ListenerLabels { listener });
        }
        m
    }

    /// The open-connections gauge of `listener`.
    pub fn connections(&self, listener: &'static str) -> Gauge {
        self.connections.get_or_create(&ListenerLabels { listener }).clone()
    }
}
