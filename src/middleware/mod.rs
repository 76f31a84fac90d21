//! The tower layer every RPC passes through. Its concerns, in the order a call meets them
//! (outermost first), and why each sits where it sits:
//! 1. `request_id`: the request id, taken from `x-request-id` or generated, and the trace
//!    context, the caller's `traceparent` continued (or a new trace started) and rewritten as
//!    the facade's own server span so that the upstream request is its child. First, so that
//!    everything after (auth failures, shedding, logs, the upstream call) can carry them; the
//!    request id is echoed in the response headers.
//! 2. `observe`, the start: the call counted as started and in flight, right away so that the
//!    refused (unauthenticated, shed) calls are in the error rate too.
//! 3. `auth`, caller authentication (with `--caller-tokens-file` or `--tenants-file`): before any
//!    work is spent; health and reflection stay open so probes and tooling work. With a tenants
//!    file it also settles the caller's tenant, which goes into the request's extensions (the
//!    handlers take its key from there), the call's span and its access line.
//! 4. `shed`, load shedding at `--max-concurrency`: refuses at once with UNAVAILABLE +
//!    RetryInfo instead of queueing; the permit lives in the response body, so a stream counts
//!    until it ends; health is exempt so that probes do not fail a busy replica.
//! 5. `refusal`, on the way back: tonic's own refusals of the caller's bytes (oversized,
//!    undecodable) rewritten with the facade's details, in the answer's headers or in its
//!    trailers, before the final code is read, so that the code counted and logged is the one
//!    the caller gets.
//! 6. `observe`, the end: the messages counted each way, and one access line with method,
//!    request id, trace id, gRPC code and latency, at the end of the body, when the final code
//!    is known; `grpc_server_handled_total` and the latency histogram are taken at the same
//!    moment.

mod auth;
mod observe;
mod refusal;
mod request_id;
mod shed;

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;

pub use auth::{CallerTokens, CallerTokensError, Callers};

use crate::{
    metrics::Metrics,
    status::{ErrorContext, FacadeError, to_status},
};

/// Shared state of the layer.
#[derive(Debug)]
struct State {
    limiter: shed::Limiter,
    callers: Callers,
    metrics: Arc<Metrics>,
}

/// The layer (see the module doc for what it does, in order).
#[derive(Clone, Debug)]
pub struct RpcLayer {
    state: Arc<State>,
}

impl RpcLayer {
    /// `max_concurrency` RPCs in flight at most; `callers` says who may call (and as which
    /// tenant); everything is counted into `metrics` (the application's registry).
    pub fn new(max_concurrency: usize, callers: Callers, metrics: Arc<Metrics>) -> Self {
        RpcLayer { state: Arc::new(State { limiter: shed::Limiter::new(max_concurrency), callers, metrics }) }
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
        // 1. Request id and trace context.
        let ids = request_id::identify(&mut req);
        // 2. Counted as started and in flight.
        let mut access =
            observe::Access::start(&self.state.metrics, req.uri().path().to_owned(), ids.text, ids.trace_id, started);
        // 3. Caller authentication, and the caller's tenant.
        let tenant = match auth::authorize(&self.state.callers, &req) {
            Ok(tenant) => tenant,
            Err(err) => {
                let res = refuse(err, ids.header, access);
                return Box::pin(async move { Ok(res) });
            }
        };
        let tenant_name = tenant.as_ref().map(|t| t.name.clone());
        if let Some(tenant) = tenant {
            req.extensions_mut().insert(tenant);
        }
        access.tenant = tenant_name.clone();
        // 4. Load shedding.
        let Some(permit) = self.state.limiter.admit(req.uri().path()) else {
            access.metrics.shed();
            let res = refuse(FacadeError::Overloaded, ids.header, access);
            return Box::pin(async move { Ok(res) });
        };

        // The caller's messages counted as they stream in (`observe`), and the call's span.
        let req = req.map(|body| access.count_received(body));
        let span = request_id::rpc_span(
            &access.request_id,
            &access.trace_id,
            &access.method,
            tenant_name.as_deref(),
            ids.caller.as_ref(),
        );

        // Take the service that was driven to readiness, leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let id = ids.header;
        Box::pin(
            async move {
                let mut res = inner.call(req).await?;
                // 5. tonic's refusals in a trailers-only answer (those in trailers: `observe`).
                refusal::rewrite_answer(&mut res, &access.request_id);
                request_id::echo(&mut res, id);
                // 6. The answer observed until its body ends.
                Ok(observe::observe(res, access, permit))
            }
            .instrument(span),
        )
    }
}

/// Answers at once with `err`, the request id echoed, and counts and logs the call as over.
fn refuse(err: FacadeError, id: HeaderValue, access: observe::Access) -> Response<Body> {
    let status = to_status(&err, &ErrorContext { request_id: &access.request_id, external_session_id: None });
    let code = status.code();
    let mut res = status.into_http::<Body>();
    request_id::echo(&mut res, id);
    access.finish(Some(code as i32));
    res
}
