//! Log setup: `RUST_LOG` filter (default `info`), text (`text.rs`) or one JSON object per line
//! (`json.rs`), on stderr; a call's `rpc` fields lent to its lines where no span is needed (`scope.rs`).
//! Lines are formatted on the calling task and appended to a buffer that one writer thread writes
//! to stderr in batches ([`crate::logwriter`]): an RPC never waits on a `write` syscall nor wakes
//! a thread, and a burst of lines costs one syscall. When the buffer is full (8 MiB) callers wait
//! rather than drop lines; [`Telemetry::shutdown`] writes what is left.
//! Nothing logs secrets: keys and tokens are wrapped types whose `Debug` hides them, and phone
//! numbers are masked where they are logged.
//!
//! With the `otlp` cargo feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, the spans (`rpc`,
//! `upstream`, ...) are also exported over OTLP/HTTP (protobuf) with `service.name =
//! callbot-facade` (see [`otlp`]); without either, nothing is exported and nothing is started.

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter::Targets, fmt, prelude::*, registry::LookupSpan};

use crate::config::LogFormat;

mod json;
pub(crate) mod scope;
mod text;

/// What [`init`] started that must be stopped at exit: the span exporter, when there is one.
#[derive(Debug, Default)]
#[must_use = "call `shutdown` at exit, or the last lines and spans are lost"]
pub struct Telemetry {
    /// Writes the buffered log lines when dropped.
    log_writer: Option<crate::logwriter::LogGuard>,
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (the `otlp` feature is on and an endpoint is configured).
    pub fn exporting(&self) -> bool {
        #[cfg(feature = "otlp")]
        return self.provider.is_some();
        #[cfg(not(feature = "otlp"))]
        false
    }

    /// Exports the spans still buffered and stops the exporter, within 5 s (the spans a
    /// collector has not taken by then are lost). A no-op when nothing is exported.
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider {
            otlp::shutdown(provider).await;
        }
        // Last: the exporter may still log. Dropping the guard writes every queued line.
        drop(self.log_writer);
    }
}

/// Installs the global subscriber; harmless if one is already installed (tests). Call it from
/// within the Tokio runtime: the OTLP exporter sends on it.
pub fn init(format: LogFormat) -> Telemetry {
    let (filter, by_target) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let (export, mut telemetry) = export_layer();
    // Nothing but the lines needs the `rpc` span as a span: its fields are lent (`scope.rs`).
    let scoped = by_target && export.is_none();
    let (writer, guard) = match crate::logwriter::spawn(std::io::stderr(), "callbot-log") {
        Ok(started) => started,
        Err(e) => {
            // No thread to spare: the facade cannot log, and should not serve blind.
            eprintln!("callbot-facade: cannot start the log writer thread: {e}");
            std::process::exit(1);
        }
    };
    let registry = tracing_subscriber::registry().with(filter).with(export);
    let result = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .event_format(text::TextFormat { ansi: std::io::stderr().is_terminal() })
                    .fmt_fields(text::TextFields)
                    .with_writer(writer),
            )
            .try_init(),
        // Every span of the line, outermost first: `rpc` carries request_id, trace_id and method,
        // `upstream` the endpoint.
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .event_format(json::JsonFormat)
                    .fmt_fields(fmt::format::JsonFields::new())
                    .with_writer(writer),
            )
            .try_init(),
    };
    if result.is_err() {
        // Another subscriber was installed first: our exporter would never see a span.
        #[cfg(feature = "otlp")]
        if let Some(provider) = telemetry.provider {
            let _ = provider.shutdown();
        }
        return Telemetry::default();
    }
    telemetry.log_writer = Some(guard);
    scope::set_enabled(scoped);
    // Not at info: the first line at info says which upstream the facade serves (README, "Configuration").
    #[cfg(feature = "otlp")]
    if telemetry.exporting() {
        tracing::debug!("exporting spans over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT)");
    }
    telemetry
}

type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// The `RUST_LOG` filter (`info` when unset or empty). Directives of targets and levels only (the
/// usual case) make a static filter: tracing's `EnvFilter` takes a lock shared by every thread
/// each time any span is entered or left (to track spans its span directives name), several
/// times per RPC, whether or not a directive names a span. Span and field directives (`[...]`,
/// `{...}`), or anything the static parser refuses, get `EnvFilter`, which understands them and
/// says what it ignores.
/// Also says whether the filter is the static one (no span directives: nothing filters by span).
fn log_filter(rust_log: Option<&str>) -> (BoxedLayer<Registry>, bool) {
    let directives = rust_log.map(str::trim).filter(|d| !d.is_empty()).unwrap_or("info");
    if !directives.contains(['[', '{']) {
        if let Ok(targets) = directives.parse::<Targets>() {
            return (Box::new(targets), true);
        }
    }
    (Box::new(EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"))), false)
}

#[cfg(not(feature = "otlp"))]
fn export_layer<S>() -> (Option<BoxedLayer<S>>, Telemetry)
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    (None, Telemetry::default())
}

#[cfg(feature = "otlp")]
fn export_layer<S>() -> (Option<BoxedLayer<S>>, Telemetry)
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set(otlp::ENDPOINT_ENV) && !set(otlp::TRACES_ENDPOINT_ENV) {
        return (None, Telemetry::default());
    }
    match otlp::provider(None) {
        Ok(provider) => {
            (Some(Box::new(otlp::layer(&provider))), Telemetry { provider: Some(provider), ..Telemetry::default() })
        }
        Err(e) => {
            // Logs are not set up yet; the facade still serves without the export.
            eprintln!("callbot-facade: OTLP span export disabled: {e}");
            (None, Telemetry::default())
        }
    }
}

/// The OTLP/HTTP span export (only with the `otlp` feature).
#[cfg(feature = "otlp")]
pub mod otlp {
    use std::time::Duration;

    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
    use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
    use tracing::Subscriber;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::{Layer, registry::LookupSpan};

    use crate::trace_context::TraceParent;

    /// The switch: export only when it (or [`TRACES_ENDPOINT_ENV`]) is set; the exporter
    /// appends `/v1/traces` to it.
    pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    /// The full URL of the traces endpoint; wins over [`ENDPOINT_ENV`], as the spec says.
    pub const TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    /// `service.name` of every exported span.
    pub const SERVICE_NAME: &str = "callbot-facade";
    /// Bound on one export request (`OTEL_EXPORTER_OTLP_TIMEOUT` does not reach a custom client).
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Bound on the flush at exit.
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

    /// A tracer provider exporting over OTLP/HTTP (protobuf) in batches, to `traces_url` (the
    /// full URL, `.../v1/traces`) or else to the endpoint of the `OTEL_EXPORTER_OTLP_*`
    /// variables. Must be called within a Tokio runtime.
    pub fn provider(traces_url: Option<&str>) -> Result<SdkTracerProvider, Box<dyn std::error::Error + Send + Sync>> {
        let client = OnRuntime::current()?;
        let mut exporter = SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
        if let Some(url) = traces_url {
            exporter = exporter.with_endpoint(url);
        }
        let exporter = exporter.with_http_client(client).build()?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(SERVICE_NAME).build())
            .build())
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
    pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME))
    }

    /// Makes the exported `span` a child of the caller's span `parent` (a remote parent: same
    /// trace id, `parent`'s span id as parent span id, its sampled flag). Must be called before
    /// the span is first entered; returns whether it took (false without an exporting layer).
    pub fn set_remote_parent(span: &tracing::Span, parent: &TraceParent) -> bool {
        let context = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(context)).is_ok()
    }

    /// Flushes and stops `provider` off the async threads (the batch processor blocks while
    /// its last export runs on the runtime).
    pub async fn shutdown(provider: SdkTracerProvider) {
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)).await;
        if let Ok(Err(e)) = stopped {
            tracing::warn!(error = %e, "OTLP span export: shutdown failed");
        }
    }

    /// An [`HttpClient`] on the facade's own reqwest (no second HTTP stack), whose requests run
    /// on the Tokio runtime: the SDK's batch processor exports from a plain thread of its own.
    #[derive(Debug)]
    struct OnRuntime {
        client: reqwest::Client,
        runtime: tokio::runtime::Handle,
    }

    impl OnRuntime {
        fn current() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
            let runtime = tokio::runtime::Handle::try_current()?;
            let client = reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build()?;
            Ok(OnRuntime { client, runtime })
        }
    }

    #[async_trait::async_trait]
    impl HttpClient for OnRuntime {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let client = self.client.clone();
            let exchange = async move {
                let response = client.execute(reqwest::Request::try_from(request)?).await?;
                let mut builder = Response::builder().status(response.status());
                if let Some(headers) = builder.headers_mut() {
                    *headers = response.headers().clone();
                }
                Ok::<_, HttpError>(builder.body(response.bytes().await?)?)
            };
            self.runtime.spawn(exchange).await?
        }
    }
}

/// What the format tests' fmt layer writes.
#[cfg(test)]
mod test_writer {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    /// Collects every write.
    #[derive(Clone, Default)]
    pub(super) struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Lines {
        /// All written so far.
        pub(super) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }
}

#[cfg(test)]
mod filter_tests {
    use tracing::Level;
    use tracing_subscriber::prelude::*;

    use super::log_filter;

    /// What `rust_log` lets through: upstream at debug and trace, hyper at info and warn, and an
    /// event at debug inside an `rpc` span.
    fn passes(rust_log: Option<&str>) -> [bool; 5] {
        let subscriber = tracing_subscriber::registry().with(log_filter(rust_log).0);
        tracing::subscriber::with_default(subscriber, || {
            let in_rpc =
                tracing::info_span!("rpc").in_scope(|| tracing::enabled!(target: "callbot_facade::x", Level::DEBUG));
            [
                tracing::enabled!(target: "callbot_facade::upstream", Level::DEBUG),
                tracing::enabled!(target: "callbot_facade::upstream", Level::TRACE),
                tracing::enabled!(target: "hyper::proto", Level::INFO),
                tracing::enabled!(target: "hyper::proto", Level::WARN),
                in_rpc,
            ]
        })
    }

    #[test]
    fn rust_log_filters_by_target_and_level_and_span_directives_still_work() {
        // Targets and levels (the static filter).
        assert_eq!(passes(None), [false, false, true, true, false], "info by default");
        assert_eq!(passes(Some("  ")), [false, false, true, true, false]);
        assert_eq!(passes(Some("warn,callbot_facade::upstream=debug")), [true, false, false, true, false]);
        assert_eq!(passes(Some("callbot_facade=trace,hyper=off")), [true, true, false, false, true]);
        assert_eq!(passes(Some("callbot_facade")), [true, true, false, false, true], "a bare target: every level");
        // A span directive (EnvFilter): debug inside `rpc` spans only.
        assert_eq!(passes(Some("info,[rpc]=debug")), [false, false, true, true, true]);
        // Not a filter at all: info, as before.
        assert_eq!(passes(Some("callbot_facade=loud")), [false, false, true, true, false]);
        // Only targets and levels make the static filter (the `rpc` fields may then be lent).
        for (rust_log, by_target) in [(None, true), (Some("warn,hyper=off"), true), (Some("info,[rpc]=debug"), false)] {
            assert_eq!(log_filter(rust_log).1, by_target, "{rust_log:?}");
        }
    }
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{Router, body::Bytes, extract::State, routing::post};
    use tracing_subscriber::prelude::*;

    use super::otlp;
    use crate::trace_context::TraceParent;

    /// A fake OTLP/HTTP collector: counts the export requests and keeps their bodies.
    #[derive(Clone, Default)]
    struct Collector {
        requests: Arc<AtomicUsize>,
        bodies: Arc<std::sync::Mutex<Vec<Bytes>>>,
    }

    impl Collector {
        async fn start() -> (Self, String) {
            let collector = Collector::default();
            let app = Router::new()
                .route(
                    "/v1/traces",
                    post(|State(c): State<Collector>, body: Bytes| async move {
                        c.requests.fetch_add(1, Ordering::SeqCst);
                        c.bodies.lock().unwrap().push(body);
                        // An empty ExportTraceServiceResponse.
                        ([(http::header::CONTENT_TYPE, "application/x-protobuf")], Bytes::new())
                    }),
                )
                .with_state(collector.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (collector, url)
        }

        fn received(&self) -> Vec<u8> {
            self.bodies.lock().unwrap().concat()
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spans_reach_the_collector_on_shutdown_as_children_of_the_callers_span() {
        let (collector, url) = Collector::start().await;
        let provider = otlp::provider(Some(&url)).unwrap();
        let caller = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let subscriber = tracing_subscriber::registry().with(otlp::layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", method = "/callbot.v1.CallBotService/ListScripts");
            assert!(otlp::set_remote_parent(&span, &caller));
            span.in_scope(|| tracing::info!("inside the call"));
        });
        // Batched: nothing is sent before the flush (the batch delay is 5 s).
        otlp::shutdown(provider).await;

        assert!(collector.requests.load(Ordering::SeqCst) >= 1, "no export request reached the collector");
        let body = collector.received();
        // Protobuf keeps bytes and strings verbatim: the resource, the span, its trace id (the
        // caller's) and its parent span id (the caller's span).
        assert!(contains(&body, b"callbot-facade"), "service.name missing");
        assert!(contains(&body, b"/callbot.v1.CallBotService/ListScripts"), "span attribute missing");
        assert!(contains(&body, &caller.trace_id), "the caller's trace id is not continued");
        assert!(contains(&body, &caller.span_id), "the caller's span is not the parent");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_an_endpoint_nothing_is_started() {
        // The switch is OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT; the tests never set it.
        if std::env::var_os(otlp::ENDPOINT_ENV).is_none() && std::env::var_os(otlp::TRACES_ENDPOINT_ENV).is_none() {
            let (layer, telemetry) = super::export_layer::<tracing_subscriber::Registry>();
            assert!(layer.is_none());
            assert!(!telemetry.exporting());
            telemetry.shutdown().await;
        }
    }
}
