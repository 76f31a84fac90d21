//! Who a call is: its request id (the caller's when sane, else a new one), its place in the W3C
//! trace (the caller's `traceparent` continued, or a new trace), its arrival time, and the `rpc`
//! span that carries those ids through everything the handler logs.

use std::{future::Future, pin::Pin, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tracing::{Instrument, Level};

use crate::{
    telemetry::scope::{CallFields, InCall},
    trace_context::TraceParent,
};

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A call's ids, as [`identify`] settled them.
pub(super) struct Identity {
    /// The request id, as echoed in the response headers.
    pub(super) header: HeaderValue,
    /// The same, as text for the logs and the error details.
    pub(super) text: String,
    /// The facade's server span's trace id (the caller's trace id when it sent one).
    pub(super) trace_id: String,
    /// The caller's span, when it sent a valid `traceparent`.
    pub(super) caller: Option<TraceParent>,
    /// The facade's server span: the parent of every upstream request of the call.
    pub(super) server_span: TraceParent,
    /// When the call reached the facade: tonic started its own grpc-timeout timer an instant
    /// before, in the same synchronous call chain, so the caller's deadline measured from here
    /// ends first.
    pub(super) arrival: tokio::time::Instant,
}

/// Stamps `req` with its arrival time (`arrival`, read once for the whole call), its request id and the facade's server span (so that
/// the handler and the upstream requests see them) and returns those ids.
pub(super) fn identify<B>(req: &mut Request<B>, arrival: std::time::Instant) -> Identity {
    let arrival = tokio::time::Instant::from_std(arrival);
    let header = request_id(req.headers().get(&REQUEST_ID));
    req.headers_mut().insert(REQUEST_ID.clone(), header.clone());
    let text = header.to_str().unwrap_or_default().to_owned();
    let (caller, server_span) = continue_trace(req.headers_mut());
    Identity { header, text, trace_id: server_span.trace_id_hex(), caller, server_span, arrival }
}

/// The caller's `tracestate`, when kept: forwarded with the call's upstream requests (with the
/// facade's server span as their parent).
pub(super) fn forwarded_tracestate(headers: &HeaderMap) -> Option<String> {
    headers.get(&TRACESTATE).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Echoes the request id in the response headers, so the caller can quote it.
pub(super) fn echo<B>(res: &mut Response<B>, id: HeaderValue) {
    res.headers_mut().insert(REQUEST_ID.clone(), id);
}

/// What carries the call's ids on everything its handler logs.
pub(super) enum RpcScope {
    /// The `rpc` span: what the JSON lines, span directives in `RUST_LOG` and the OTLP export need.
    Span(tracing::Span),
    /// The same fields lent to the thread while the call is polled, for the text lines alone
    /// (`telemetry::scope`).
    Lent(CallFields),
}

impl RpcScope {
    /// `call` under this scope.
    pub(super) fn wrap<F>(self, call: F) -> Pin<Box<dyn Future<Output = F::Output> + Send>>
    where
        F: Future + Send + 'static,
    {
        match self {
            RpcScope::Span(span) => Box::pin(call.instrument(span)),
            RpcScope::Lent(fields) => Box::pin(InCall::new(call, fields)),
        }
    }
}

/// The scope of the call: everything the handler logs (upstream attempts included) carries the
/// call's ids, and the exported span (feature `otlp`) continues the caller's trace, as a child
/// of its span. `tenant` (with a tenants file) is the caller's tenant's name, never its key.
pub(super) fn rpc_scope(
    request_id: &str,
    trace_id: &str,
    method: &str,
    tenant: Option<&Arc<str>>,
    caller: Option<&TraceParent>,
) -> RpcScope {
    if crate::telemetry::scope::enabled() {
        // Lent only where the span would have been enabled (the filter is by target and level).
        if !tracing::enabled!(Level::INFO) {
            return RpcScope::Span(tracing::Span::none());
        }
        return RpcScope::Lent(CallFields {
            request_id: request_id.to_owned(),
            trace_id: trace_id.to_owned(),
            method: method.to_owned(),
            tenant: tenant.cloned(),
        });
    }
    let tenant = tenant.map(|t| &**t);
    let span = tracing::info_span!("rpc", request_id = %request_id, trace_id = %trace_id, method = %method, tenant);
    #[cfg(feature = "otlp")]
    if let Some(caller) = caller {
        crate::telemetry::otlp::set_remote_parent(&span, caller);
    }
    #[cfg(not(feature = "otlp"))]
    let _ = caller;
    RpcScope::Span(span)
}

/// A usable request id: printable ASCII without spaces, at most 128 bytes (anything else could
/// forge log lines or bloat them), else a new UUID.
fn request_id(value: Option<&HeaderValue>) -> HeaderValue {
    value
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)))
        .cloned()
        .unwrap_or_else(|| {
            let mut text = uuid::Uuid::encode_buffer();
            let text =
                uuid::Builder::from_random_bytes(rand::random()).into_uuid().hyphenated().encode_lower(&mut text);
            HeaderValue::from_str(text).expect("a UUID is a valid header value")
        })
}

/// Continues the caller's trace (or starts one when `traceparent` is absent or invalid, dropping
/// a `tracestate` that no longer belongs to anything) and rewrites `traceparent` as the facade's
/// own server span, the parent of every upstream request of the call.
fn continue_trace(headers: &mut HeaderMap) -> (Option<TraceParent>, TraceParent) {
    let incoming = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    let server_span = match incoming {
        Some(parent) => parent.child(),
        None => {
            headers.remove(&TRACESTATE);
            TraceParent::new_root()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&server_span.header()) {
        headers.insert(TRACEPARENT.clone(), value);
    }
    (incoming, server_span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_is_continued_or_started() {
        let mut h = http::HeaderMap::new();
        h.insert(
            TRACEPARENT.clone(),
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        h.insert(TRACESTATE.clone(), HeaderValue::from_static("vendor=1"));
        let span = continue_trace(&mut h).1;
        assert_eq!(span.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(span.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(span.flags, 0);
        assert_eq!(h[&TRACEPARENT], span.header().as_str());
        assert_eq!(h[&TRACESTATE], "vendor=1");

        for bad in [None, Some("00-zz-00f067aa0ba902b7-01")] {
            let mut h = http::HeaderMap::new();
            if let Some(bad) = bad {
                h.insert(TRACEPARENT.clone(), HeaderValue::from_static(bad));
            }
            h.insert(TRACESTATE.clone(), HeaderValue::from_static("vendor=1"));
            let span = continue_trace(&mut h).1;
            assert_eq!(h[&TRACEPARENT], span.header().as_str());
            assert!(h.get(&TRACESTATE).is_none(), "a tracestate without a valid parent is dropped");
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
