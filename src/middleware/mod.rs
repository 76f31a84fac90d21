//! The tower layer every RPC passes through. Its concerns, in the order a call meets them
//! (outermost first), and why each sits where it sits:
//! 1. `request_id`: the request id, taken from `x-request-id` or generated, and the trace
//!    context, the caller's `traceparent` continued (or a new trace started) and rewritten as
//!    the facade's own server span so that the upstream request is its child. First, so that
//!    everything after (auth failures, shedding, logs, the upstream call) can carry them; the
//!    request id is echoed in the response headers.
//! 2. `observe`, the start: the call counted as started and in flight, right away so that the
//!    refused (unauthenticated, shed) calls are in the error rate too.
//! 3. tenancy (`crate::tenancy`): who the caller is and as which tenant it calls, in every mode
//!    (single key, caller key, tenants file), before any work is spent; health and reflection
//!    stay open so probes and tooling work. The settled [`Call`] (tenant, upstream context,
//!    deadlines) goes into the request's extensions: handlers take it from there and read no
//!    metadata. With a tenants file the tenant's name goes into the call's span and access line.
//! 4. `shed`, load shedding: callers' calls at `--max-concurrency` (UNAVAILABLE + RetryInfo at
//!    once instead of queueing), the open methods (health watches, reflection) in small pools of
//!    their own (RESOURCE_EXHAUSTED) so they never take a caller's place; the permit lives in the
//!    response body, so a stream counts until it ends; health checks are exempt so that probes do
//!    not fail a busy replica.
//! 5. `refusal`, on the way back: tonic's own refusals of the caller's bytes (oversized,
//!    undecodable) rewritten with the facade's details, in the answer's headers or in its
//!    trailers, before the final code is read, so that the code counted and logged is the one
//!    the caller gets.
//! 6. `observe`, the end: the messages counted each way, and one access line with method,
//!    request id, trace id, gRPC code and latency, at the end of the body, when the final code
//!    is known; `grpc_server_handled_total` and the latency histogram are taken at the same
//!    moment.

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
use tokio::time::Instant as Deadline;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::{
    deadline,
    metrics::Metrics,
    status::{ErrorContext, FacadeError, to_status},
    tenancy::{Tenancy, Tenant},
    trace_context::TraceParent,
    upstream::CallContext,
};

/// A `CallBotService` call as the middleware settled it, in the request's extensions: the one
/// thing handlers take from the request besides its message.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// The tenant's name (for the event store, metrics and logs).
    pub(crate) tenant: Arc<str>,
    /// What the call's upstream requests carry: the tenant's key, the bound of the whole
    /// exchange (`--upstream-timeout` from arrival, cut by the caller's deadline), the request id
    /// and the trace context.
    pub(crate) ctx: CallContext,
    /// The caller's own deadline, less a little headroom (a stream's bound).
    pub(crate) caller_deadline: Option<Deadline>,
}

/// What a handler adds to its call's access line (in the response's extensions): the session it
/// created. One line per RPC carries it, rather than a second line at `info` per call.
#[derive(Debug, Clone)]
pub(crate) struct AccessNote {
    /// The upstream's id of the session created.
    pub(crate) session_id: String,
    /// Contacts sent.
    pub(crate) contacts: usize,
    /// Contacts the upstream refused.
    pub(crate) rejected: usize,
}

/// The longest path the logs show whole: a path is the caller's to choose, and a known method's is
/// far shorter.
const LOGGED_PATH_MAX: usize = 96;

/// The path as the access line and the span show it: at most [`LOGGED_PATH_MAX`] bytes of it, the
/// rest counted, so a caller cannot write kilobytes of log per request.
fn logged_path(path: &str) -> String {
    if path.len() <= LOGGED_PATH_MAX {
        return path.to_owned();
    }
    let mut end = LOGGED_PATH_MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...({} bytes)", &path[..end], path.len())
}

/// The stream a reload may have to end when it withdraws the caller.
const WATCH_PATH: &str = "/callbot.v1.CallBotService/WatchCallEvents";

/// Shared state of the layer.
#[derive(Debug)]
struct State {
    limiter: shed::Limiter,
    tenancy: Arc<Tenancy>,
    metrics: Arc<Metrics>,
    /// Bound of a unary call's whole upstream exchange.
    upstream_timeout: std::time::Duration,
}

/// The layer (see the module doc for what it does, in order).
#[derive(Clone, Debug)]
pub struct RpcLayer {
    state: Arc<State>,
}

impl RpcLayer {
    /// `max_concurrency` RPCs in flight at most; `tenancy` says who may call (and as which
    /// tenant); a unary call's upstream exchange is bounded by `upstream_timeout`; everything is
    /// counted into `metrics` (the application's registry).
    pub(crate) fn new(
        max_concurrency: usize,
        tenancy: Arc<Tenancy>,
        upstream_timeout: std::time::Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limiter = shed::Limiter::new(max_concurrency);
        RpcLayer { state: Arc::new(State { limiter, tenancy, metrics, upstream_timeout }) }
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
        let ids = request_id::identify(&mut req, started);
        // 2. Counted as started and in flight.
        let mut access =
            observe::Access::start(&self.state.metrics, logged_path(req.uri().path()), ids.text, ids.trace_id, started);
        // 3. Who calls, as which tenant; the call settled for its handler.
        let tenant = match self.state.tenancy.resolve(&req) {
            Ok(tenant) => tenant,
            Err(err) => {
                let res = refuse(err, ids.header, access);
                return Box::pin(async move { Ok(res) });
            }
        };
        let mut tenant_name = None;
        if let Some(tenant) = tenant {
            if self.state.tenancy.names_callers() {
                tenant_name = Some(tenant.name.clone());
            }
            if req.uri().path() == WATCH_PATH {
                // A stream outlives a reload: it re-checks its caller after each (`tenancy`).
                if let Some(revocable) = self.state.tenancy.revocable(&req, &tenant.name) {
                    req.extensions_mut().insert(revocable);
                }
            }
            let call = self.settle(&req, tenant, access.request_id.clone(), ids.arrival, ids.server_span);
            req.extensions_mut().insert(call);
        }
        access.tenant = tenant_name.clone();
        // 4. Load shedding.
        let permit = match self.state.limiter.admit(req.uri().path()) {
            Ok(permit) => permit,
            Err(refused) => {
                access.metrics.shed();
                let err = match refused {
                    shed::Refused::Callers => FacadeError::Overloaded,
                    shed::Refused::Open => FacadeError::OpenStreamsExhausted,
                };
                let res = refuse(err, ids.header, access);
                return Box::pin(async move { Ok(res) });
            }
        };

        // The caller's messages counted as they stream in (`observe`), and the call's span.
        let req = req.map(|body| access.count_received(body));
        let scope = request_id::rpc_scope(
            &access.request_id,
            &access.trace_id,
            &access.method,
            tenant_name.as_ref(),
            ids.caller.as_ref(),
        );

        // Take the service that was driven to readiness, leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let id = ids.header;
        scope.wrap(async move {
            let mut res = inner.call(req).await?;
            // 5. tonic's refusals in a trailers-only answer (those in trailers: `observe`).
            refusal::rewrite_answer(&mut res, &access.request_id);
            request_id::echo(&mut res, id);
            // 6. The answer observed until its body ends.
            Ok(observe::observe(res, access, permit))
        })
    }
}

impl<S> RpcService<S> {
    /// The call as its handler takes it.
    fn settle<B>(
        &self,
        req: &Request<B>,
        tenant: Tenant,
        request_id: String,
        arrival: Deadline,
        server_span: TraceParent,
    ) -> Call {
        let caller_deadline = deadline::caller(arrival, req.headers());
        let ctx = CallContext {
            api_key: tenant.key,
            deadline: deadline::for_call(arrival, caller_deadline, self.state.upstream_timeout),
            request_id,
            traceparent: Some(server_span),
            tracestate: request_id::forwarded_tracestate(req.headers()),
        };
        Call { tenant: tenant.name, ctx, caller_deadline }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_logged_cut() {
        assert_eq!(logged_path("/callbot.v1.CallBotService/GetScript"), "/callbot.v1.CallBotService/GetScript");
        let long = format!("/{}", "a".repeat(16 * 1024));
        let logged = logged_path(&long);
        assert!(logged.len() < 130 && logged.ends_with("...(16385 bytes)"), "{logged}");
        let wide = format!("/{}", "đ".repeat(100));
        assert!(logged_path(&wide).starts_with("/đđ"));
    }
}
