//! The calling policy's series: contacts it refused, by tenant and reason, and sessions it moved
//! into the calling hours (`crate::policy`, docs/policy.md).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabels {
    tenant: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

/// The policy's metrics (part of [`super::Metrics`]).
#[derive(Debug, Clone, Default)]
pub struct PolicyMetrics {
    refused: Family<RefusedLabels, Counter>,
    deferred: Family<TenantLabels, Counter>,
}

impl PolicyMetrics {
    /// Registers the series in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = PolicyMetrics::default();
        super::register(
            registry,
            "callbot_policy_refused_contacts",
            "Contacts the calling policy did not send upstream, by tenant and reason (DO_NOT_CALL, FREQUENCY_CAP).",
            m.refused.clone(),
        );
        super::register(
            registry,
            "callbot_sessions_deferred",
            "Sessions whose start the calling policy moved into the calling hours (deferral, campaign scheduling).",
            m.deferred.clone(),
        );
        m
    }

    /// Zero series for a tenant known from the start, so that `increase()` and alerts work at once.
    pub fn tenant_series(&self, tenant: &str) {
        for reason in ["DO_NOT_CALL", "FREQUENCY_CAP"] {
            let _ = self.refused.get_or_create(&RefusedLabels { tenant: tenant.to_owned(), reason });
        }
        let _ = self.deferred.get_or_create(&TenantLabels { tenant: tenant.to_owned() });
    }

    /// `n` contacts of `tenant` refused for `reason`.
    pub fn refused(&self, tenant: &str, reason: &'static str, n: u64) {
        self.refused.get_or_create(&RefusedLabels { tenant: tenant.to_owned(), reason }).inc_by(n);
    }

    /// A session of `tenant` was moved into the hours.
    pub fn deferred(&self, tenant: &str) {
        self.deferred.get_or_create(&TenantLabels { tenant: tenant.to_owned() }).inc();
    }
}
