//! The tower layer every RPC passes through, in this order (outermost first), and why:
//! 1. request id: taken from `x-request-id` or generated, so everything after (auth failures,
//!    shedding, logs, the upstream call) can carry it; echoed in the response headers; and the
//!    trace context: the caller's `traceparent` continued (or a new trace started), rewritten as
//!    the facade's own server span so that the upstream request is its child; and the metrics
//!    (started, in flight), counted here so that refused (unauthenticated, shed) calls are in
//!    the error rate too;
//! 2. caller authentication (when `--caller-tokens-file` is set): before any work is spent;
//!    health and reflection stay open so probes and tooling work;
//! 3. load shedding at `--max-concurrency`: refuses at once with UNAVAILABLE + RetryInfo instead
//!    of queueing; the permit lives in the response body, so a stream counts until it ends;
//!    health is exempt so that probes do not fail a busy replica;
//! 4. the access log: one line per RPC with method, request id, trace id, gRPC code and latency,
//!    at the end of the body, when the final code is known; `grpc_server_handled_total`, the
//!    latency histogram and the message counters are taken at the same moment.

use std::{
    collections::HashSet,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use prometheus_client::metrics::gauge::Gauge;

use http::{HeaderValue, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::{
    metrics::{MethodLabels, Metrics},
    status::{ErrorContext, FacadeError, to_status},
    trace_context::TraceParent,
};

const REQUEST_ID: &str = "x-request-id";
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
const SERVICE_PREFIX: &str = "/callbot.v1.CallBotService/";
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// When a call reached the facade; handlers anchor the caller's deadline on it.
#[derive(Debug, Clone, Copy)]
pub struct CallArrival(pub tokio::time::Instant);

/// Accepted caller tokens, kept only as SHA-256 digests and compared in constant time.
#[derive(Clone)]
pub struct CallerTokens {
    digests: Arc<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for CallerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallerTokens({} tokens)", self.digests.len())
    }
}

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CallerTokensError {
    /// The file could not be read.
    #[error("cannot read the caller tokens file: {0}")]
    Read(#[from] std::io::Error),
    /// It holds no token: nobody could call, surely a mistake.
    #[error("the caller tokens file holds no token")]
    Empty,
}

impl CallerTokens {
    /// Reads one token per line (blank lines and `#` comments skipped).
    pub fn from_file(path: &Path) -> Result<Self, CallerTokensError> {
        Self::from_text(&std::fs::read_to_string(path)?)
    }

    /// Parses the file's text.
    pub fn from_text(text: &str) -> Result<Self, CallerTokensError> {
        let digests: HashSet<[u8; 32]> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        if digests.is_empty() {
            return Err(CallerTokensError::Empty);
        }
        Ok(CallerTokens { digests: Arc::new(digests.into_iter().collect()) })
    }

    /// Whether `authorization` holds `Bearer <an accepted token>`.
    pub fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(token) = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Check every digest, so the time taken does not depend on which (if any) matched.
        self.digests.iter().fold(0u8, |found, d| found | d.ct_eq(&digest).unwrap_u8()) == 1
    }
}

/// Shared state of the layer.
#[derive(Debug)]
struct State {
    limiter: Arc<Semaphore>,
    caller_tokens: Option<CallerTokens>,
    metrics: Arc<Metrics>,
}

/// The layer (see the module doc for what it does, in order).
#[derive(Clone, Debug)]
pub struct RpcLayer {
    state: Arc<State>,
}

impl RpcLayer {
    /// `max_concurrency` RPCs in flight at most; `caller_tokens` turns caller authentication on.
    pub fn new(max_concurrency: usize, caller_tokens: Option<CallerTokens>) -> Self {
        Self::with_metrics(max_concurrency, caller_tokens, Arc::new(Metrics::new()))
    }

    /// As [`RpcLayer::new`], counting into `metrics` (the application's registry).
    pub fn with_metrics(max_concurrency: usize, caller_tokens: Option<CallerTokens>, metrics: Arc<Metrics>) -> Self {
        RpcLayer {
            state: Arc::new(State { limiter: Arc::new(Semaphore::new(max_concurrency)), caller_tokens, metrics }),
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner, state: self.state.clone() }
    }
}

/// The service the layer makes.
#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    state: Arc<State>,
}

/// A usable request id: printable ASCII without spaces, at most 128 bytes (anything else could
/// forge log lines or bloat them), else a new UUID.
fn request_id(value: Option<&HeaderValue>) -> HeaderValue {
    value
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string())
                .expect("a UUID is a valid header value")
        })
}

impl<S> Service<Request<Body>> for RpcService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let started = Instant::now();
        // tonic started its own grpc-timeout timer an instant ago, in the same synchronous call
        // chain: handlers measure the caller's deadline from here, so theirs ends first.
        req.extensions_mut().insert(CallArrival(tokio::time::Instant::now()));
        let id = request_id(req.headers().get(REQUEST_ID));
        req.headers_mut().insert(REQUEST_ID, id.clone());
        let id_text = id.to_str().unwrap_or_default().to_owned();
        let (caller, trace) = continue_trace(req.headers_mut());
        let trace_id = trace.trace_id_hex();
        let method = req.uri().path().to_owned();
        let is_rpc = method.starts_with(SERVICE_PREFIX);
        let metrics = self.state.metrics.clone();
        let labels = metrics.method(&method);
        metrics.rpc_started(&labels);
        let in_flight = InFlight::new(metrics.in_flight());

        let refuse = |err: FacadeError| {
            let status = to_status(&err, &ErrorContext { request_id: &id_text, external_session_id: None });
            let code = status.code();
            let mut res = status.into_http::<Body>();
            res.headers_mut().insert(REQUEST_ID, id.clone());
            metrics.rpc_handled(&labels, code, started.elapsed());
            access_log(&method, &id_text, &trace_id, Some(code as i32), started);
            res
        };

        if is_rpc {
            if let Some(tokens) = &self.state.caller_tokens {
                if !tokens.accepts(req.headers().get(http::header::AUTHORIZATION)) {
                    let res = refuse(FacadeError::CallerUnauthenticated);
                    return Box::pin(async move { Ok(res) });
                }
            }
        }
        let permit = if method.starts_with(HEALTH_PREFIX) {
            None
        } else {
            match self.state.limiter.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    metrics.shed();
                    let res = refuse(FacadeError::Overloaded);
                    return Box::pin(async move { Ok(res) });
                }
            }
        };

        // Count the caller's messages as they stream in.
        let req = req.map(|body| {
            Body::new(CountedBody {
                inner: body,
                framer: GrpcFramer::default(),
                metrics: metrics.clone(),
                labels: labels.clone(),
            })
        });
        // Everything the handler logs (upstream attempts included) carries the call's ids.
        let span = tracing::info_span!("rpc", request_id = %id_text, trace_id = %trace_id, method = %method);
        // The exported span (feature `otlp`) continues the caller's trace, as a child of its span.
        #[cfg(feature = "otlp")]
        if let Some(caller) = &caller {
            crate::telemetry::otlp::set_remote_parent(&span, caller);
        }
        #[cfg(not(feature = "otlp"))]
        let _ = caller;

        // Take the service that was driven to readiness, leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let mut res = inner.call(req).await?;
                if let Some(err) = tonic_refusal(res.headers()) {
                    res = refusal_status(&err, &id_text).into_http::<Body>();
                }
                res.headers_mut().insert(REQUEST_ID, id);
                let header_code = grpc_status(res.headers());
                let (parts, body) = res.into_parts();
                let body = ObservedBody {
                    inner: body,
                    framer: GrpcFramer::default(),
                    access: Some(Access {
                        method,
                        request_id: id_text,
                        trace_id,
                        started,
                        code: header_code,
                        metrics,
                        labels,
                        _in_flight: in_flight,
                    }),
                    _permit: permit,
                };
                Ok(Response::from_parts(parts, Body::new(body)))
            }
            .instrument(span),
        )
    }
}

/// Continues the caller's trace (or starts one when `traceparent` is absent or invalid, dropping
/// a `tracestate` that no longer belongs to anything) and rewrites `traceparent` as the facade's
/// own server span, the parent of every upstream request of the call.
fn continue_trace(headers: &mut http::HeaderMap) -> (Option<TraceParent>, TraceParent) {
    let incoming = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    let server_span = match incoming {
        Some(parent) => parent.child(),
        None => {
            headers.remove(TRACESTATE);
            TraceParent::new_root()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&server_span.header()) {
        headers.insert(TRACEPARENT, value);
    }
    (incoming, server_span)
}

/// Holds `callbot_grpc_in_flight` up by one while alive.
struct InFlight(Gauge);

impl InFlight {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts gRPC messages in a body by following the length-prefixed framing (1 flag byte, 4
/// length bytes, payload), whatever way the bytes are cut into frames: tonic batches several
/// messages into one frame and a large message spans several.
#[derive(Debug, Default)]
struct GrpcFramer {
    /// Prefix bytes seen of the current message.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Payload bytes still to skip.
    remaining: u64,
}

impl GrpcFramer {
    /// Feeds bytes; returns how many messages began in them.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut begun = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(data.len() as u64);
                self.remaining -= take;
                data = &data[take as usize..];
                continue;
            }
            let take = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == 5 {
                begun += 1;
                self.prefix_len = 0;
                self.remaining =
                    u64::from(u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]));
            }
        }
        begun
    }
}

pin_project! {
    /// The request body, counting the caller's messages into `grpc_server_msg_received_total`.
    struct CountedBody {
        #[pin]
        inner: Body,
        framer: GrpcFramer,
        metrics: Arc<Metrics>,
        labels: MethodLabels,
    }
}

impl HttpBody for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.metrics.msg_received(this.labels, this.framer.feed(data));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How tonic's decoder words its refusals of bytes that are not a message of the method (the
/// protobuf decode, a frame cut short, a bad compression flag): INTERNAL, as gRPC documents it.
const UNDECODABLE_PREFIXES: [&str; 3] =
    ["failed to decode Protobuf message", "Unexpected EOF decoding stream", "protocol error: received message with"];

/// Which of tonic's own refusals of the caller's bytes a status in `headers` (trailers-only
/// answer or trailers) is, if any: a message over the size limit, or bytes that do not decode.
/// tonic answers those without our details; the contract wants every failure to carry them.
fn tonic_refusal(headers: &http::HeaderMap) -> Option<FacadeError> {
    let code = grpc_status(headers)?;
    let message = headers.get("grpc-message")?.to_str().ok()?.replace("%20", " ");
    if code == tonic::Code::OutOfRange as i32 && message.contains("message length too large") {
        Some(FacadeError::MessageTooLarge)
    } else if code == tonic::Code::Internal as i32
        && !headers.contains_key("grpc-status-details-bin")
        && UNDECODABLE_PREFIXES.iter().any(|p| message.starts_with(p))
    {
        Some(FacadeError::MalformedMessage)
    } else {
        None
    }
}

/// Our status for one of tonic's refusals: RESOURCE_EXHAUSTED for an oversized message (the
/// contract's code, where tonic says OUT_OF_RANGE), INTERNAL for undecodable bytes, with details.
fn refusal_status(err: &FacadeError, request_id: &str) -> tonic::Status {
    to_status(err, &ErrorContext { request_id, external_session_id: None })
}

/// Rewrites a status carried in `headers` (trailers-only answer or trailers) when it is one of
/// tonic's refusals of the caller's bytes.
fn rewrite_refusal(headers: &mut http::HeaderMap, request_id: &str) {
    if let Some(err) = tonic_refusal(headers) {
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        let _ = refusal_status(&err, request_id).add_header(headers);
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

struct Access {
    method: String,
    request_id: String,
    trace_id: String,
    started: Instant,
    code: Option<i32>,
    metrics: Arc<Metrics>,
    labels: MethodLabels,
    _in_flight: InFlight,
}

impl Access {
    /// The RPC is over: count it and write its access line. `None` = the caller went away.
    fn finish(self, code: Option<i32>) {
        let grpc_code = code.map_or(tonic::Code::Cancelled, tonic::Code::from_i32);
        self.metrics.rpc_handled(&self.labels, grpc_code, self.started.elapsed());
        access_log(&self.method, &self.request_id, &self.trace_id, code, self.started);
    }
}

fn access_log(method: &str, request_id: &str, trace_id: &str, code: Option<i32>, started: Instant) {
    let latency_us = started.elapsed().as_micros() as u64;
    match code {
        Some(code) => {
            let name = code_name(tonic::Code::from_i32(code));
            tracing::info!(target: "access", method, request_id, trace_id, grpc_code = %name, latency_us, "rpc")
        }
        None => {
            tracing::info!(target: "access", method, request_id, trace_id, grpc_code = "Cancelled", latency_us, "rpc (caller went away)")
        }
    }
}

/// The code's name as `tonic::Code`'s `Debug` writes it, without formatting and allocating a
/// string per access line: grpc-go's names but for two spellings.
fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "Ok",
        tonic::Code::Cancelled => "Cancelled",
        other => crate::metrics::go_code_name(other),
    }
}

pin_project! {
    /// The response body, holding the concurrency permit until the RPC ends, counting the
    /// messages sent, and, at the end, counting the RPC and logging its access line with the
    /// final gRPC code (from the trailers, or the headers when trailers-only).
    struct ObservedBody {
        #[pin]
        inner: Body,
        framer: GrpcFramer,
        access: Option<Access>,
        _permit: Option<OwnedSemaphorePermit>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(a) = this.project().access.take() {
                // Dropped before the end: the caller went away (or the call was aborted).
                let code = a.code;
                a.finish(code);
            }
        }
    }
}

impl HttpBody for ObservedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut polled = this.inner.poll_frame(cx);
        match &mut polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(a)) = (frame.data_ref(), this.access.as_ref()) {
                    a.metrics.msg_sent(&a.labels, this.framer.feed(data));
                }
                if let (Some(trailers), Some(a)) = (frame.trailers_mut(), this.access.as_mut()) {
                    rewrite_refusal(trailers, &a.request_id);
                    a.code = grpc_status(trailers).or(a.code);
                }
            }
            Poll::Ready(None) => {
                if let Some(a) = this.access.take() {
                    let code = a.code.or(Some(0));
                    a.finish(code);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn code_names_are_the_debug_names() {
        for n in 0..=16 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(super::code_name(code), format!("{code:?}"));
        }
    }

    use super::*;

    #[test]
    fn caller_tokens_accept_only_listed_bearers() {
        let tokens = CallerTokens::from_text("# ops\n\nalpha\n  beta  \n").unwrap();
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(tokens.accepts(Some(&h("Bearer alpha"))));
        assert!(tokens.accepts(Some(&h("Bearer beta"))));
        assert!(!tokens.accepts(Some(&h("Bearer gamma"))));
        assert!(!tokens.accepts(Some(&h("alpha"))));
        assert!(!tokens.accepts(Some(&h("Basic alpha"))));
        assert!(!tokens.accepts(None));
        assert!(matches!(CallerTokens::from_text("# nothing\n\n"), Err(CallerTokensError::Empty)));
        assert!(!format!("{tokens:?}").contains("alpha"));
    }

    #[test]
    fn the_framer_counts_messages_however_the_bytes_are_cut() {
        let message = |len: u32| {
            let mut m = vec![0u8];
            m.extend_from_slice(&len.to_be_bytes());
            m.extend(std::iter::repeat_n(7u8, len as usize));
            m
        };
        let stream: Vec<u8> = [message(3), message(0), message(300), message(1)].concat();
        for cut in [1, 2, 4, 5, 6, 7, 64, 1000] {
            let mut framer = GrpcFramer::default();
            let total: u64 = stream.chunks(cut).map(|c| framer.feed(c)).sum();
            assert_eq!(total, 4, "chunks of {cut}");
            assert_eq!((framer.prefix_len, framer.remaining), (0, 0));
        }
    }

    #[test]
    fn trace_context_is_continued_or_started() {
        let mut h = http::HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let span = continue_trace(&mut h).1;
        assert_eq!(span.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(span.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(span.flags, 0);
        assert_eq!(h[TRACEPARENT], span.header().as_str());
        assert_eq!(h[TRACESTATE], "vendor=1");

        for bad in [None, Some("00-zz-00f067aa0ba902b7-01")] {
            let mut h = http::HeaderMap::new();
            if let Some(bad) = bad {
                h.insert(TRACEPARENT, HeaderValue::from_static(bad));
            }
            h.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
            let span = continue_trace(&mut h).1;
            assert_eq!(h[TRACEPARENT], span.header().as_str());
            assert!(h.get(TRACESTATE).is_none(), "a tracestate without a valid parent is dropped");
        }
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_replaced_otherwise() {
        let keep = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&keep)), keep);
        for bad in ["", "has space", &"x".repeat(129)] {
            let v = HeaderValue::from_str(bad).unwrap();
            let got = request_id(Some(&v));
            assert_ne!(got, v);
            assert_eq!(got.len(), 36);
        }
        assert_eq!(request_id(None).len(), 36);
    }
}
