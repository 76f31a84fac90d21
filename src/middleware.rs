//! The tower layer every RPC passes through, in this order (outermost first), and why:
//! 1. request id: taken from `x-request-id` or generated, so everything after (auth failures,
//!    shedding, logs, the upstream call) can carry it; echoed in the response headers;
//! 2. caller authentication (when `--caller-tokens-file` is set): before any work is spent;
//!    health and reflection stay open so probes and tooling work;
//! 3. load shedding at `--max-concurrency`: refuses at once with UNAVAILABLE + RetryInfo instead
//!    of queueing; the permit lives in the response body, so a stream counts until it ends;
//!    health is exempt so that probes do not fail a busy replica;
//! 4. the access log: one line per RPC with method, gRPC code and latency, at the end of the body.

use std::{
    collections::HashSet,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::status::{ErrorContext, FacadeError, to_status};

const REQUEST_ID: &str = "x-request-id";
const SERVICE_PREFIX: &str = "/callbot.v1.CallBotService/";
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

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
}

/// The layer (see the module doc for what it does, in order).
#[derive(Clone, Debug)]
pub struct RpcLayer {
    state: Arc<State>,
}

impl RpcLayer {
    /// `max_concurrency` RPCs in flight at most; `caller_tokens` turns caller authentication on.
    pub fn new(max_concurrency: usize, caller_tokens: Option<CallerTokens>) -> Self {
        RpcLayer { state: Arc::new(State { limiter: Arc::new(Semaphore::new(max_concurrency)), caller_tokens }) }
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
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid header value")
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
        let id = request_id(req.headers().get(REQUEST_ID));
        req.headers_mut().insert(REQUEST_ID, id.clone());
        let id_text = id.to_str().unwrap_or_default().to_owned();
        let method = req.uri().path().to_owned();
        let is_rpc = method.starts_with(SERVICE_PREFIX);

        let refuse = |err: FacadeError| {
            let status = to_status(&err, &ErrorContext { request_id: &id_text, external_session_id: None });
            let code = status.code() as i32;
            let mut res = status.into_http::<Body>();
            res.headers_mut().insert(REQUEST_ID, id.clone());
            access_log(&method, &id_text, Some(code), started);
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
                    let res = refuse(FacadeError::Overloaded);
                    return Box::pin(async move { Ok(res) });
                }
            }
        };

        // Take the service that was driven to readiness, leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut res = inner.call(req).await?;
            if is_oversized_message(res.headers()) {
                res = too_large_status(&id_text).into_http::<Body>();
            }
            res.headers_mut().insert(REQUEST_ID, id);
            let header_code = grpc_status(res.headers());
            let (parts, body) = res.into_parts();
            let body = ObservedBody {
                inner: body,
                access: Some(Access { method, request_id: id_text, started, code: header_code }),
                _permit: permit,
            };
            Ok(Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// A trailers-only answer of tonic's decoder refusing a message over the size limit.
fn is_oversized_message(headers: &http::HeaderMap) -> bool {
    grpc_status(headers) == Some(tonic::Code::OutOfRange as i32)
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("message length too large") || m.contains("message%20length%20too%20large"))
}

/// tonic answers OUT_OF_RANGE for a message over --max-message-bytes; the contract says
/// RESOURCE_EXHAUSTED, with our details.
fn too_large_status(request_id: &str) -> tonic::Status {
    to_status(&FacadeError::MessageTooLarge, &ErrorContext { request_id, external_session_id: None })
}

/// Rewrites a status carried in `headers` (trailers-only answer or trailers) when it is tonic's
/// refusal of an oversized message.
fn rewrite_oversized(headers: &mut http::HeaderMap, request_id: &str) {
    if is_oversized_message(headers) {
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        let _ = too_large_status(request_id).add_header(headers);
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

struct Access {
    method: String,
    request_id: String,
    started: Instant,
    code: Option<i32>,
}

fn access_log(method: &str, request_id: &str, code: Option<i32>, started: Instant) {
    let latency_us = started.elapsed().as_micros() as u64;
    match code {
        Some(code) => {
            let name = format!("{:?}", tonic::Code::from_i32(code));
            tracing::info!(target: "access", method, request_id, grpc_code = %name, latency_us, "rpc")
        }
        None => {
            tracing::info!(target: "access", method, request_id, grpc_code = "Cancelled", latency_us, "rpc (caller went away)")
        }
    }
}

pin_project! {
    /// The response body, holding the concurrency permit until the RPC ends and logging the
    /// access line with the final gRPC code (from the trailers, or the headers when trailers-only).
    struct ObservedBody {
        #[pin]
        inner: Body,
        access: Option<Access>,
        _permit: Option<OwnedSemaphorePermit>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(a) = this.project().access.take() {
                // Dropped before the end: the caller went away (or the call was aborted).
                let code = a.code;
                access_log(&a.method, &a.request_id, code, a.started);
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
                if let (Some(trailers), Some(a)) = (frame.trailers_mut(), this.access.as_mut()) {
                    rewrite_oversized(trailers, &a.request_id);
                    a.code = grpc_status(trailers).or(a.code);
                }
            }
            Poll::Ready(None) => {
                if let Some(a) = this.access.take() {
                    access_log(&a.method, &a.request_id, a.code.or(Some(0)), a.started);
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
