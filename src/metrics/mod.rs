//! Prometheus metrics, one registry per application (`app.rs`), served as text
//! on the admin listener's `/metrics`.
//!
//! Server metrics use the names and labels of go-grpc-prometheus (`grpc_server_*`), so the usual
//! dashboards and alerts work unchanged, including its Go spelling of codes (`OK`,
//! `InvalidArgument`, `Canceled`, ...). Upstream, cache and shedding metrics are `callbot_*`.
//!
//! Why a registry per application and not a process-wide recorder: the tests start many
//! applications in one process and assert exact values; a per-application registry passed down
//! keeps them independent, and the production binary (one application) loses nothing.
//!
//! Label cardinality is bounded: `grpc_service`/`grpc_method` come from the methods the server
//! registers (from the descriptor sets), anything else is `unknown`; upstream `endpoint` is one of
//! the paths in [`UPSTREAM_ENDPOINTS`]; `status` is an HTTP status or `error`.
//!
//! Every counter is present at 0 from the start for its known label values (the facade's
//! methods and every code, the upstream endpoints, the secret files, the fixed words of the
//! event metrics), so `rate()`, `increase()` and the alerts of docs/operations.md work before
//! the first increment. The standard `process_*` metrics come from [`process`].

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

mod events;
mod listeners;
mod methods;
mod policy;
pub use policy::PolicyMetrics;
mod process;
mod upstream;

pub use events::EventMetrics;
pub use listeners::ListenerMetrics;
pub use upstream::UpstreamMetrics;

use methods::known_methods;
pub use methods::{MethodLabels, RpcType, go_code_name};

/// The upstream paths the facade calls: the `endpoint` label's values.
pub const UPSTREAM_ENDPOINTS: [&str; 6] = [
    "/api/auth",
    "/api/call_bot/script/list",
    "/api/call_bot/execute_by_phone",
    "/api/v3/call-transaction/search",
    "/api/webhooks/list",
    "/api/webhooks/register",
];

/// What an upstream answer was, read as an envelope: the `outcome` label's values.
pub const UPSTREAM_OUTCOMES: [&str; 4] = ["success", "rejected", "malformed", "http_error"];

/// The secret files watched for changes: the `file` label's values.
pub const SECRET_FILES: [&str; 4] = ["api_key_file", "caller_tokens_file", "tenants_file", "webhook_secret_file"];

/// Every gRPC code, for the zero series of `grpc_server_handled_total`.
const CODES: [tonic::Code; 17] = {
    use tonic::Code::*;
    [
        Ok,
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    ]
};

/// Registers `metric` with `help` as written: prometheus-client appends a full stop itself.
fn register(registry: &mut Registry, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
    registry.register(name, help.trim_end_matches('.'), metric);
}

/// The content type of [`Metrics::render`] (OpenMetrics text, which Prometheus asks for first
/// and which the classic text parser also reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds (seconds) of both latency histograms: 5 ms to 30 s, about x2.5 apart, so an
/// SLO of 100 ms, 250 ms or 1 s falls on a bound.
const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// [`MethodLabels`] plus the final `grpc_code`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

/// `tenant`, `grpc_method`, `grpc_code`: one series per tenant of the tenants file (bounded by
/// the file, never by callers) and method and code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
    grpc_method: String,
    grpc_code: &'static str,
}

/// `file`: which secret file (`api_key_file`, `caller_tokens_file`, `tenants_file`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FileLabels {
    file: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// One method's series, each taken from its family on first use and kept: a family lookup hashes
/// the labels (three strings) under a lock, and every RPC made five of them. A series appears in
/// the exposition when first used, as with a lookup per call; the counters and histograms are
/// shared handles, so the family renders the same values.
#[derive(Debug)]
pub struct MethodSeries {
    labels: MethodLabels,
    started: OnceLock<Counter>,
    handling: OnceLock<Histogram>,
    sent: OnceLock<Counter>,
    received: OnceLock<Counter>,
    /// By gRPC code (0 to 16).
    handled: [OnceLock<Counter>; 17],
}

impl MethodSeries {
    fn new(labels: MethodLabels) -> Self {
        MethodSeries {
            labels,
            started: OnceLock::new(),
            handling: OnceLock::new(),
            sent: OnceLock::new(),
            received: OnceLock::new(),
            handled: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl std::ops::Deref for MethodSeries {
    type Target = MethodLabels;
    fn deref(&self) -> &MethodLabels {
        &self.labels
    }
}

/// Every metric the facade exports, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    methods: HashMap<String, Arc<MethodSeries>>,
    unknown_method: Arc<MethodSeries>,
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling_seconds: HistogramFamily<MethodLabels>,
    msg_sent: Family<MethodLabels, Counter>,
    msg_received: Family<MethodLabels, Counter>,
    in_flight: Gauge,
    upstream: UpstreamMetrics,
    cache_hits: Counter,
    cache_misses: Counter,
    shed: Counter,
    tenant_handled: Family<TenantLabels, Counter>,
    config_reloads: Family<FileLabels, Counter>,
    config_reload_failures: Family<FileLabels, Counter>,
    events: EventMetrics,
    listeners: ListenerMetrics,
    policy: policy::PolicyMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (at zero) and `callbot_build_info` set.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let started = Family::<MethodLabels, Counter>::default();
        register(&mut registry, "grpc_server_started", "RPCs started on the server.", started.clone());
        let handled = Family::<HandledLabels, Counter>::default();
        register(
            &mut registry,
            "grpc_server_handled",
            "RPCs completed on the server, whatever the outcome (shed and refused calls included).",
            handled.clone(),
        );
        let handling_seconds: HistogramFamily<MethodLabels> = Family::new_with_constructor(latency_histogram);
        register(
            &mut registry,
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its last byte (a whole stream for streaming RPCs).",
            handling_seconds.clone(),
        );
        let msg_sent = Family::<MethodLabels, Counter>::default();
        register(&mut registry, "grpc_server_msg_sent", "gRPC messages sent by the server.", msg_sent.clone());
        let msg_received = Family::<MethodLabels, Counter>::default();
        register(
            &mut registry,
            "grpc_server_msg_received",
            "gRPC messages received by the server.",
            msg_received.clone(),
        );
        let in_flight = Gauge::default();
        register(
            &mut registry,
            "callbot_grpc_in_flight",
            "RPCs being handled now (streams count until they end).",
            in_flight.clone(),
        );
        let upstream = UpstreamMetrics::register(&mut registry);
        let cache_hits = Counter::default();
        register(
            &mut registry,
            "callbot_script_cache_hits",
            "Script-list lookups served from the cache.",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        register(
            &mut registry,
            "callbot_script_cache_misses",
            "Script-list lookups that fetched from the upstream (all of them when the cache is off).",
            cache_misses.clone(),
        );
        let shed = Counter::default();
        register(&mut registry, "callbot_shed", "RPCs refused at --max-concurrency.", shed.clone());
        let tenant_handled = Family::<TenantLabels, Counter>::default();
        register(
            &mut registry,
            "callbot_tenant_handled",
            "CallBotService RPCs completed, by the caller's tenant (with --tenants-file), method and code.",
            tenant_handled.clone(),
        );
        let config_reloads = Family::<FileLabels, Counter>::default();
        register(
            &mut registry,
            "callbot_config_reloads",
            "Secret files re-read and put in force after a change or a SIGHUP.",
            config_reloads.clone(),
        );
        let config_reload_failures = Family::<FileLabels, Counter>::default();
        register(
            &mut registry,
            "callbot_config_reload_failures",
            "Secret files that changed but could not be used; the last good configuration stays in force.",
            config_reload_failures.clone(),
        );
        let events = EventMetrics::register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector));
        let listeners = ListenerMetrics::register(&mut registry);
        let policy = policy::PolicyMetrics::register(&mut registry);
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        register(&mut registry, "callbot_build_info", "Always 1; the version is in the label.", build_info);

        let methods = known_methods();
        // Zero series for the facade's own methods, so rate() and absent() work from the start.
        for labels in methods.values().filter(|l| l.grpc_service.starts_with("callbot.")) {
            let _ = started.get_or_create(labels);
            let _ = handling_seconds.get_or_create(labels);
            let _ = msg_sent.get_or_create(labels);
            let _ = msg_received.get_or_create(labels);
            for code in CODES {
                let _ = handled.get_or_create(&HandledLabels {
                    grpc_type: labels.grpc_type,
                    grpc_service: labels.grpc_service.clone(),
                    grpc_method: labels.grpc_method.clone(),
                    grpc_code: go_code_name(code),
                });
            }
        }
        for file in SECRET_FILES {
            let _ = config_reloads.get_or_create(&FileLabels { file });
            let _ = config_reload_failures.get_or_create(&FileLabels { file });
        }
        let methods = methods.into_iter().map(|(path, labels)| (path, Arc::new(MethodSeries::new(labels)))).collect();
        let unknown_method = Arc::new(MethodSeries::new(MethodLabels {
            grpc_type: RpcType::Unary.label(),
            grpc_service: "unknown".into(),
            grpc_method: "unknown".into(),
        }));
        Metrics {
            registry,
            methods,
            unknown_method,
            started,
            handled,
            handling_seconds,
            msg_sent,
            msg_received,
            in_flight,
            upstream,
            cache_hits,
            cache_misses,
            shed,
            tenant_handled,
            config_reloads,
            config_reload_failures,
            events,
            listeners,
            policy,
        }
    }

    /// The calling policy's metrics.
    pub fn policy(&self) -> &PolicyMetrics {
        &self.policy
    }

    /// The call-event metrics.
    pub fn events(&self) -> &EventMetrics {
        &self.events
    }

    /// The client-facing HTTP listeners' metrics.
    pub fn listeners(&self) -> &ListenerMetrics {
        &self.listeners
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The series of an HTTP/2 path `/package.Service/Method`; unregistered paths share one
    /// `unknown` method, so callers cannot grow the label set.
    pub fn method(&self, path: &str) -> Arc<MethodSeries> {
        self.methods.get(path).unwrap_or(&self.unknown_method).clone()
    }

    /// An RPC started.
    pub fn rpc_started(&self, method: &MethodSeries) {
        method.started.get_or_init(|| self.started.get_or_create(&method.labels).clone()).inc();
    }

    /// An RPC ended with `code` after `elapsed`.
    pub fn rpc_handled(&self, method: &MethodSeries, code: tonic::Code, elapsed: Duration) {
        let handled = method.handled[code as usize].get_or_init(|| {
            let labels = HandledLabels {
                grpc_type: method.grpc_type,
                grpc_service: method.grpc_service.clone(),
                grpc_method: method.grpc_method.clone(),
                grpc_code: go_code_name(code),
            };
            self.handled.get_or_create(&labels).clone()
        });
        handled.inc();
        let handling = method.handling.get_or_init(|| self.handling_seconds.get_or_create(&method.labels).clone());
        handling.observe(elapsed.as_secs_f64());
    }

    /// `n` messages sent on an RPC.
    pub fn msg_sent(&self, method: &MethodSeries, n: u64) {
        if n > 0 {
            method.sent.get_or_init(|| self.msg_sent.get_or_create(&method.labels).clone()).inc_by(n);
        }
    }

    /// `n` messages received on an RPC.
    pub fn msg_received(&self, method: &MethodSeries, n: u64) {
        if n > 0 {
            method.received.get_or_init(|| self.msg_received.get_or_create(&method.labels).clone()).inc_by(n);
        }
    }

    /// The in-flight gauge (the middleware holds it up for the life of each RPC).
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The upstream client's metrics.
    pub fn upstream(&self) -> &UpstreamMetrics {
        &self.upstream
    }

    /// A script-list lookup was served from the cache (`true`) or fetched (`false`).
    pub fn script_cache(&self, hit: bool) {
        if hit {
            self.cache_hits.inc()
        } else {
            self.cache_misses.inc()
        };
    }

    /// An RPC was shed at the concurrency limit.
    pub fn shed(&self) {
        self.shed.inc();
    }

    /// An RPC of `tenant` ended with `code`.
    pub fn tenant_handled(&self, tenant: &str, method: &MethodLabels, code: tonic::Code) {
        let labels = TenantLabels {
            tenant: tenant.to_owned(),
            grpc_method: method.grpc_method.clone(),
            grpc_code: go_code_name(code),
        };
        self.tenant_handled.get_or_create(&labels).inc();
    }

    /// Zero series for a watched file, so that `increase()` and alerts work from the start.
    pub fn config_reload_series(&self, file: &'static str) {
        let _ = self.config_reloads.get_or_create(&FileLabels { file });
        let _ = self.config_reload_failures.get_or_create(&FileLabels { file });
    }

    /// A secret file was re-read and is in force.
    pub fn config_reloaded(&self, file: &'static str) {
        self.config_reloads.get_or_create(&FileLabels { file }).inc();
    }

    /// A secret file changed but could not be used.
    pub fn config_reload_failed(&self, file: &'static str) {
        self.config_reload_failures.get_or_create(&FileLabels { file }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_typed_from_the_descriptors_and_unknown_paths_collapse() {
        let m = Metrics::new();
        let rows = [
            ("/callbot.v1.CallBotService/ListScripts", "server_stream", "callbot.v1.CallBotService", "ListScripts"),
            ("/callbot.v1.CallBotService/GetScript", "unary", "callbot.v1.CallBotService", "GetScript"),
            ("/callbot.v1.CallBotService/CreateSession", "unary", "callbot.v1.CallBotService", "CreateSession"),
            ("/grpc.health.v1.Health/Check", "unary", "grpc.health.v1.Health", "Check"),
            ("/grpc.health.v1.Health/Watch", "server_stream", "grpc.health.v1.Health", "Watch"),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "bidi_stream",
                "grpc.reflection.v1.ServerReflection",
                "ServerReflectionInfo",
            ),
            ("/evil.Service/Random123", "unary", "unknown", "unknown"),
            ("/", "unary", "unknown", "unknown"),
        ];
        for (path, kind, service, method) in rows {
            let l = m.method(path);
            assert_eq!(
                (l.grpc_type, l.grpc_service.as_str(), l.grpc_method.as_str()),
                (kind, service, method),
                "{path}"
            );
        }
    }

    #[test]
    fn render_has_the_go_grpc_prometheus_names() {
        let m = Metrics::new();
        let get = m.method("/callbot.v1.CallBotService/GetScript");
        m.rpc_started(&get);
        m.rpc_handled(&get, tonic::Code::InvalidArgument, Duration::from_millis(3));
        m.upstream().attempt("/api/auth", None, Duration::from_millis(1));
        let text = m.render();
        for want in [
            r#"grpc_server_started_total{grpc_type="unary",grpc_service="callbot.v1.CallBotService",grpc_method="GetScript"} 1"#,
            r#"grpc_server_handled_total{grpc_type="unary",grpc_service="callbot.v1.CallBotService",grpc_method="GetScript",grpc_code="InvalidArgument"} 1"#,
            r#"grpc_server_handling_seconds_bucket{le="0.005",grpc_type="unary""#,
            r#"callbot_upstream_requests_total{endpoint="/api/auth",status="error"} 1"#,
            r#"callbot_build_info{version=""#,
            "callbot_grpc_in_flight 0",
            "callbot_shed_total 0",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }

    #[test]
    fn go_code_names() {
        assert_eq!(go_code_name(tonic::Code::Ok), "OK");
        assert_eq!(go_code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(go_code_name(tonic::Code::Unauthenticated), "Unauthenticated");
    }
}
