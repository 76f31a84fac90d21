//! What the facade records of each call: the in-flight gauge, the gRPC messages each way
//! (counted by following the framing), and, when the final gRPC code is known (at the end of
//! the response body), `grpc_server_handled_total`, the latency histogram and one access line.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::metrics::gauge::Gauge;
use tonic::body::Body;

use super::AccessNote;
use super::{
    refusal::{grpc_status, rewrite_refusal},
    shed::Permit,
};
use crate::metrics::{MethodSeries, Metrics};

/// One call under observation, from its start to its access line.
pub(super) struct Access {
    pub(super) method: String,
    pub(super) request_id: String,
    pub(super) trace_id: String,
    /// The caller's tenant (with a tenants file), once authentication settled it.
    pub(super) tenant: Option<Arc<str>>,
    started: Instant,
    /// The gRPC code known so far (the answer's headers, then the trailers).
    code: Option<i32>,
    /// What the handler added to the line.
    note: Option<AccessNote>,
    pub(super) metrics: Arc<Metrics>,
    labels: Arc<MethodSeries>,
    _in_flight: InFlight,
}

impl Access {
    /// The call is counted as started and in flight at once, so that the calls refused before
    /// the handler (unauthenticated, shed) are in the error rate too.
    pub(super) fn start(
        metrics: &Arc<Metrics>,
        method: String,
        request_id: String,
        trace_id: String,
        started: Instant,
    ) -> Self {
        let labels = metrics.method(&method);
        metrics.rpc_started(&labels);
        let in_flight = InFlight::new(metrics.in_flight());
        Access {
            method,
            request_id,
            trace_id,
            tenant: None,
            started,
            code: None,
            note: None,
            metrics: metrics.clone(),
            labels,
            _in_flight: in_flight,
        }
    }

    /// The request body, counting the caller's messages as they stream in.
    pub(super) fn count_received(&self, body: Body) -> Body {
        Body::new(CountedBody {
            inner: body,
            framer: GrpcFramer::default(),
            metrics: self.metrics.clone(),
            labels: self.labels.clone(),
        })
    }

    /// The RPC is over: count it and write its access line. `None` = the caller went away.
    pub(super) fn finish(self, code: Option<i32>) {
        let grpc_code = code.map_or(tonic::Code::Cancelled, tonic::Code::from_i32);
        let latency = self.started.elapsed();
        self.metrics.rpc_handled(&self.labels, grpc_code, latency);
        if let Some(tenant) = &self.tenant {
            self.metrics.tenant_handled(tenant, &self.labels, grpc_code);
        }
        access_log(&self, code, latency);
    }
}

/// The answer, its body observed until it ends (see [`ObservedBody`]), holding `permit` as long.
pub(super) fn observe(mut res: Response<Body>, mut access: Access, permit: Permit) -> Response<Body> {
    access.code = grpc_status(res.headers());
    access.note = res.extensions_mut().remove::<AccessNote>();
    let (parts, body) = res.into_parts();
    let body = ObservedBody { inner: body, framer: GrpcFramer::default(), access: Some(access), _permit: permit };
    Response::from_parts(parts, Body::new(body))
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
        labels: Arc<MethodSeries>,
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

fn access_log(access: &Access, code: Option<i32>, latency: std::time::Duration) {
    let Access { method, request_id, trace_id, tenant, note, .. } = access;
    let tenant = tenant.as_deref();
    let latency_us = latency.as_micros() as u64;
    let (session_id, contacts, rejected) = match note {
        Some(n) => (Some(n.session_id.as_str()), Some(n.contacts), Some(n.rejected)),
        None => (None, None, None),
    };
    match code {
        Some(code) => {
            let name = crate::metrics::go_code_name(tonic::Code::from_i32(code));
            tracing::info!(target: "access", method, request_id, trace_id, tenant, grpc_code = %name, latency_us, session_id, contacts, rejected, "rpc")
        }
        None => {
            tracing::info!(target: "access", method, request_id, trace_id, tenant, grpc_code = "Canceled", latency_us, "rpc (caller went away)")
        }
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
        _permit: Permit,
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
                    // Rewritten before the code is read, so that the code counted and logged is
                    // the one the caller gets.
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
    use super::*;

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
}
