//! The callBot REST client: one method per endpoint, a shared connection pool, the access-token
//! lifecycle (fetched on first need, cached until shortly before it expires, refreshed
//! single-flight, one refresh and one retry on a 401), retries with backoff under a budget, and
//! the whole exchange bounded by the call's deadline. It knows nothing of gRPC.

mod envelope;
mod error;
mod execute;
pub mod retry;
mod token;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::{Bytes, BytesMut};
use reqwest::{Method, StatusCode, header::HeaderMap};
use tokio::time::Instant;
use tracing::Instrument;

use envelope::{AuthPayload, Envelope, ScriptList};
pub use envelope::{ExecutePayload, Rejection, Script, ScriptVariable};
pub use error::{UpstreamError, is_duplicate_session_code};
pub use execute::{ContactInfo, ExecuteBody};
use retry::{Idempotency, RetryBudget};
use token::AccessToken;

use crate::{cache::SingleFlightCache, config::UpstreamSettings, metrics::Metrics, trace_context::TraceParent};

/// TCP connect timeout of one upstream connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest upstream body read; a bigger one is refused while it streams in.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// An upstream API key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Per-call facts the upstream exchange needs: who (key), until when (deadline), and the
/// correlation headers to forward.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The tenant key for this call.
    pub api_key: ApiKey,
    /// The whole exchange (token refresh and retries included) ends by then.
    pub deadline: Instant,
    /// Forwarded as `x-request-id`.
    pub request_id: String,
    /// Forwarded W3C trace context.
    pub traceparent: Option<String>,
    /// Forwarded W3C trace state.
    pub tracestate: Option<String>,
}

/// What `execute_by_phone` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteOutcome {
    /// The upstream session id.
    pub autocall_id: String,
    /// The script id the upstream echoed.
    pub bot_script_id: String,
    /// Contacts it refused.
    pub rejections: Vec<Rejection>,
}

/// The REST client. Cheap to share (`Arc`); one per process.
pub struct UpstreamClient {
    http: reqwest::Client,
    /// Base URL without trailing slash.
    base_url: String,
    /// Bound of one HTTP attempt of a read (writes get the whole remaining deadline).
    attempt_timeout: Duration,
    /// The endpoint URLs, parsed once: a URL parse per attempt is measurable at thousands of
    /// calls a second.
    endpoints: [(&'static str, Endpoint); 3],
    tokens: SingleFlightCache<ApiKey, AccessToken, UpstreamError>,
    budget: RetryBudget,
    serial: AtomicU64,
    /// Where attempts, retries and token fetches are counted for `/metrics`.
    metrics: Arc<Metrics>,
}

/// `base_url + path`, parsed; a base URL that does not parse is kept as text so the request
/// fails when sent, exactly as an unparsed one would.
enum Endpoint {
    Parsed(reqwest::Url),
    Text(String),
}

impl Endpoint {
    fn new(base_url: &str, path: &str) -> Self {
        let text = format!("{base_url}{path}");
        match reqwest::Url::parse(&text) {
            Ok(url) => Endpoint::Parsed(url),
            Err(_) => Endpoint::Text(text),
        }
    }
}

/// One HTTP answer, body read in full.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// An `execute_by_phone` request ready to send: the JSON body (built once; a retry sends the
/// same bytes) and the `cid` query value.
#[derive(Debug, Clone)]
pub struct EncodedExecute {
    json: Bytes,
    cid: String,
}

impl EncodedExecute {
    /// Encodes `body` (by hand: [`ExecuteBody::write_json`]) into a per-thread scratch buffer
    /// and copies it into a body of exactly its size: the body lives until the upstream answers
    /// (a second or more), and a growing buffer left up to half of it unused, 1.5 KiB of a
    /// 15-contact body, 1.5 MiB at 1,000 calls in flight (massif, BENCHMARKS.md "Third round").
    pub fn new(body: &ExecuteBody<'_>) -> Self {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let json = SCRATCH.with(|scratch| {
            // A re-entrant call (impossible: writing calls nothing of ours) gets its own buffer.
            let mut owned = Vec::new();
            let mut borrowed = scratch.try_borrow_mut().ok();
            let buf = borrowed.as_deref_mut().unwrap_or(&mut owned);
            buf.clear();
            body.write_json(buf);
            let json = Bytes::copy_from_slice(buf);
            // A huge body (thousands of contacts) does not stay pinned to the thread.
            if buf.capacity() > SCRATCH_KEEP_BYTES {
                *buf = Vec::new();
            }
            json
        });
        EncodedExecute { json, cid: body.cid.unwrap_or("").to_owned() }
    }

    /// The JSON body.
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

/// The largest scratch buffer [`EncodedExecute::new`] keeps for the next call on its thread.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

const SCRIPT_LIST: &str = "/api/call_bot/script/list";
const EXECUTE: &str = "/api/call_bot/execute_by_phone";
const AUTH: &str = "/api/auth";

impl UpstreamClient {
    /// Builds the client and its connection pool for the API at `base_url` (no trailing slash),
    /// counting attempts, retries and token fetches into `metrics`.
    pub fn new(base_url: &str, settings: &UpstreamSettings, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            // As many idle connections as calls in flight (the default --max-concurrency): with
            // fewer, every burst of answers closes the surplus and the next burst reconnects
            // (CPU, and TIME_WAIT sockets piling up at a steady 1,000 in flight).
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            // Upstream response headers are bounded by hyper's client defaults: over HTTP/1.1 at
            // most 100 header fields within a ~400 KiB read buffer, over HTTP/2 a 16 KiB header
            // list; an answer beyond them fails as a broken connection. The body has its own cap
            // (MAX_BODY_BYTES), enforced as it streams in (`send`).
            .user_agent(concat!("callbot-facade/", env!("CARGO_PKG_VERSION")));
        if settings.http2_prior_knowledge {
            http = http.http2_prior_knowledge();
        }
        let http = http.build()?;
        let endpoints = [SCRIPT_LIST, EXECUTE, AUTH].map(|path| (path, Endpoint::new(base_url, path)));
        Ok(UpstreamClient {
            endpoints,
            budget: RetryBudget::new(settings.retry_budget_percent, settings.retry_budget_min),
            http,
            base_url: base_url.to_owned(),
            attempt_timeout: settings.attempt_timeout,
            tokens: SingleFlightCache::new(),
            serial: AtomicU64::new(0),
            metrics,
        })
    }

    /// `GET /api/call_bot/script/list`: the tenant's scripts, in upstream order.
    pub async fn list_scripts(&self, ctx: &CallContext) -> Result<Vec<Script>, UpstreamError> {
        let answer = self.call_with_token(ctx, Idempotency::Read, Method::GET, SCRIPT_LIST, |request| request).await?;
        match decode::<ScriptList>(&answer)? {
            Envelope::Success(ScriptList(list)) => Ok(list),
            Envelope::Failure { code } => Err(UpstreamError::Rejected { code, http_status: answer.status.as_u16() }),
        }
    }

    /// `POST /api/call_bot/execute_by_phone?cid=`: starts a session. Retried only when the
    /// request provably never reached the application; the body (and so its session key) is
    /// the same on every attempt.
    pub async fn execute_by_phone(
        &self,
        ctx: &CallContext,
        body: &ExecuteBody<'_>,
    ) -> Result<ExecuteOutcome, UpstreamError> {
        self.execute_encoded(ctx, &EncodedExecute::new(body)).await
    }

    /// `execute_by_phone` with a body encoded beforehand, so the caller can let go of the
    /// validated request while the exchange is in flight (its JSON is all that is sent).
    pub async fn execute_encoded(
        &self,
        ctx: &CallContext,
        encoded: &EncodedExecute,
    ) -> Result<ExecuteOutcome, UpstreamError> {
        let (json, cid) = (&encoded.json, encoded.cid.as_str());
        let answer = self
            .call_with_token(ctx, Idempotency::Write, Method::POST, EXECUTE, |request| {
                request
                    .query(&[("cid", cid)])
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(json.clone())
            })
            .await?;
        match decode::<ExecutePayload>(&answer)? {
            Envelope::Success(p) if p.autocall_id.trim().is_empty() => Err(UpstreamError::Malformed {
                detail: "success without autocall_id".into(),
                http_status: answer.status.as_u16(),
            }),
            Envelope::Success(p) => {
                Ok(ExecuteOutcome { autocall_id: p.autocall_id, bot_script_id: p.bot_script_id, rejections: p.errors })
            }
            Envelope::Failure { code } => Err(UpstreamError::Rejected { code, http_status: answer.status.as_u16() }),
        }
    }

    /// The whole exchange of one callBot call under the deadline: token, request, one refresh
    /// and retry on 401, retries of retryable failures.
    async fn call_with_token<F>(
        &self,
        ctx: &CallContext,
        kind: Idempotency,
        method: Method,
        path: &'static str,
        build: F,
    ) -> Result<Answer, UpstreamError>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        let span = tracing::debug_span!("upstream", endpoint = path);
        let exchange = async {
            let mut refreshed = false;
            loop {
                let token = match self.token(ctx).await {
                    Ok(token) => token,
                    // The call's own request has not been sent yet: for a write, a connection
                    // lost while fetching the token leaves no outcome unknown (nothing started),
                    // so it is reported as the upstream being unreachable.
                    Err(UpstreamError::ConnectionLost { detail }) if kind == Idempotency::Write => {
                        return Err(UpstreamError::Connect { detail });
                    }
                    Err(e) => return Err(e),
                };
                let answer = self
                    .with_retries(ctx, kind, path, || {
                        build(self.request(method.clone(), path))
                            .header("x-api-key", ctx.api_key.expose())
                            .header(reqwest::header::AUTHORIZATION, token.header.clone())
                    })
                    .await?;
                if answer.status == StatusCode::UNAUTHORIZED && !refreshed {
                    // The token was refused (expired or revoked early): drop exactly that token,
                    // fetch a new one (single-flight) and try once more. A 401 means the request
                    // was not acted on, so this is safe for writes too.
                    tracing::debug!("upstream answered 401; refreshing the access token once");
                    let serial = token.serial;
                    self.tokens.invalidate_if(&ctx.api_key, |t| t.serial == serial);
                    refreshed = true;
                    continue;
                }
                return Ok(answer);
            }
        };
        // Past the deadline the exchange (and its HTTP request) is dropped. Inline rather than
        // through an `async fn` wrapper, which kept the exchange's state twice (its argument and
        // the timer's copy): about a kilobyte more per call in flight.
        tokio::time::timeout_at(ctx.deadline, exchange.instrument(span))
            .await
            .unwrap_or(Err(UpstreamError::DeadlineExceeded))
    }

    /// A request to one of the endpoints.
    fn request(&self, method: Method, path: &'static str) -> reqwest::RequestBuilder {
        match self.endpoints.iter().find(|(p, _)| *p == path).map(|(_, e)| e) {
            Some(Endpoint::Parsed(url)) => self.http.request(method, url.clone()),
            Some(Endpoint::Text(text)) => self.http.request(method, text.as_str()),
            None => self.http.request(method, format!("{}{}", self.base_url, path)),
        }
    }

    /// A valid access token for the call's key, fetched at most once at a time per key.
    async fn token(&self, ctx: &CallContext) -> Result<AccessToken, UpstreamError> {
        // The fetch is boxed: it runs about once a day per key, and unboxed its state would be
        // part of every call's future (memory per call in flight).
        self.tokens
            .get_or_fetch(&ctx.api_key, || {
                Box::pin(async {
                    self.metrics.token_refresh();
                    let answer = self
                        .with_retries(ctx, Idempotency::Read, AUTH, || {
                            self.request(Method::GET, AUTH).query(&[("apiKey", ctx.api_key.expose())])
                        })
                        .await?;
                    if answer.status == StatusCode::UNAUTHORIZED {
                        return Err(http_error(&answer));
                    }
                    let token = match decode::<AuthPayload>(&answer)? {
                        Envelope::Success(p) => p.access_token,
                        Envelope::Failure { code } => {
                            return Err(UpstreamError::Rejected { code, http_status: answer.status.as_u16() });
                        }
                    };
                    let header = token::bearer_header(&token).filter(|_| !token.is_empty()).ok_or_else(|| {
                        UpstreamError::Malformed {
                            detail: "access token missing or not header-safe".into(),
                            http_status: answer.status.as_u16(),
                        }
                    })?;
                    let lifetime = token::lifetime(&token, SystemTime::now());
                    let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::debug!(serial, lifetime_s = lifetime.as_secs(), "fetched an access token");
                    Ok((AccessToken { header, serial }, Instant::now() + lifetime))
                })
            })
            .await
    }

    /// Sends a request (rebuilt per attempt) until it succeeds, fails for good, or the attempts,
    /// the budget or the deadline run out. HTTP error statuses other than retryable ones are
    /// returned as answers for the caller to interpret (401 needs the token logic).
    async fn with_retries(
        &self,
        ctx: &CallContext,
        kind: Idempotency,
        path: &'static str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer, UpstreamError> {
        self.budget.record_request();
        let mut attempt = 1;
        loop {
            let remaining = ctx.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(UpstreamError::DeadlineExceeded);
            }
            let attempt_timeout = match kind {
                Idempotency::Read => remaining.min(self.attempt_timeout),
                Idempotency::Write => remaining,
            };
            let mut request = build().timeout(attempt_timeout).header("x-request-id", &ctx.request_id);
            // Each attempt is a client span: a child of the call's span (same trace, new span id).
            if let Some(tp) = ctx.traceparent.as_deref().and_then(TraceParent::parse) {
                request = request.header("traceparent", tp.child().header());
                if let Some(ts) = &ctx.tracestate {
                    request = request.header("tracestate", ts);
                }
            }
            let started = std::time::Instant::now();
            // Sent here, not inside `receive`: an `async fn` keeps its arguments for its whole
            // life, and a request builder is a few hundred bytes per call in flight.
            let result = match Self::receive(request.send()).await {
                // The attempt was cut by the call's own deadline, not by the per-attempt bound.
                Err(UpstreamError::AttemptTimeout) if attempt_timeout >= remaining => {
                    Err(UpstreamError::DeadlineExceeded)
                }
                other => other,
            };
            let status = result.as_ref().ok().map(|a| a.status.as_u16());
            self.metrics.upstream_attempt(path, status, started.elapsed());
            let err = match result {
                Ok(answer) => {
                    let (status, latency_us) = (answer.status.as_u16(), started.elapsed().as_micros() as u64);
                    // Failures are worth a line at the default level; successes only when debugging.
                    if answer.status.is_success() {
                        tracing::debug!(endpoint = path, status, attempt, latency_us, "upstream answered");
                    } else {
                        tracing::info!(endpoint = path, status, attempt, latency_us, "upstream answered");
                    }
                    if answer.status.is_success() || answer.status == StatusCode::UNAUTHORIZED {
                        return Ok(answer);
                    }
                    let err = http_error(&answer);
                    if !retry::is_retryable(kind, &err) {
                        return Ok(answer);
                    }
                    err
                }
                Err(err) => {
                    tracing::info!(endpoint = path, status = "error", attempt, error = %err, "upstream attempt failed");
                    if !retry::is_retryable(kind, &err) {
                        return Err(err);
                    }
                    err
                }
            };
            if attempt >= retry::MAX_ATTEMPTS {
                return Err(err);
            }
            let retry_after = match &err {
                UpstreamError::Http { retry_after, .. } => *retry_after,
                _ => None,
            };
            let wait = retry::backoff(attempt, retry_after);
            if Instant::now() + wait >= ctx.deadline {
                return Err(err);
            }
            if !self.budget.try_retry() {
                self.metrics.upstream_retry_refused(path);
                tracing::debug!(endpoint = path, "retry budget spent; not retrying");
                return Err(err);
            }
            self.metrics.upstream_retry(path);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One HTTP attempt (sent), with the body streamed in under the size cap.
    async fn receive(
        pending: impl std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
    ) -> Result<Answer, UpstreamError> {
        let mut response = pending.await.map_err(UpstreamError::from_reqwest)?;
        let status = response.status();
        if response.content_length().is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err(UpstreamError::Malformed {
                detail: "body over the size cap".into(),
                http_status: status.as_u16(),
            });
        }
        let headers = std::mem::take(response.headers_mut());
        // Most answers arrive in one chunk: keep it as is and copy only when a second one comes.
        let mut first: Option<Bytes> = None;
        let mut body = BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let have = first.as_ref().map_or(0, Bytes::len) + body.len();
                    if have + chunk.len() > MAX_BODY_BYTES {
                        return Err(UpstreamError::Malformed {
                            detail: "body over the size cap".into(),
                            http_status: status.as_u16(),
                        });
                    }
                    match first.take() {
                        None if body.is_empty() => first = Some(chunk),
                        None => body.extend_from_slice(&chunk),
                        Some(earlier) => {
                            let hint = response.content_length().map_or(0, |l| l as usize).min(MAX_BODY_BYTES);
                            body.reserve(hint.max(earlier.len() + chunk.len()));
                            body.extend_from_slice(&earlier);
                            body.extend_from_slice(&chunk);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(UpstreamError::AttemptTimeout),
                Err(_) => {
                    // The headers came but the body broke off: a truncated answer.
                    return Err(UpstreamError::Malformed {
                        detail: "body truncated (connection closed mid-body)".into(),
                        http_status: status.as_u16(),
                    });
                }
            }
        }
        let body = match first {
            Some(only) => only,
            None => body.freeze(),
        };
        Ok(Answer { status, headers, body })
    }
}

/// The envelope parser's entry points, re-exported by [`crate::fuzzing`] for the fuzz targets and
/// the property tests; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::envelope::{AuthPayload, Envelope, ONE_PASS_MIN_BYTES, ScriptList, ShapeError, failure_code, parse};
}

/// Parses the body of a successful `script/list` answer (envelope, then payload) exactly as
/// [`UpstreamClient::list_scripts`] does once the HTTP exchange is over.
///
/// Not part of the API: it exists so the criterion benches and the load generator's direct REST
/// path measure the very parser the facade runs, without a network in between.
#[doc(hidden)]
pub fn parse_script_list(body: &[u8]) -> Result<Vec<Script>, UpstreamError> {
    match envelope::parse::<ScriptList>(body)
        .map_err(|e| UpstreamError::Malformed { detail: e.0, http_status: StatusCode::OK.as_u16() })?
    {
        Envelope::Success(ScriptList(list)) => Ok(list),
        Envelope::Failure { code } => Err(UpstreamError::Rejected { code, http_status: StatusCode::OK.as_u16() }),
    }
}

/// An answer with a non-success status as an error.
fn http_error(answer: &Answer) -> UpstreamError {
    UpstreamError::Http {
        status: answer.status.as_u16(),
        retry_after: retry_after(&answer.headers),
        upstream_code: envelope::failure_code(&answer.body),
    }
}

/// A success status parsed as an envelope; any other status becomes its HTTP error.
fn decode<'a, T: serde::Deserialize<'a>>(answer: &'a Answer) -> Result<Envelope<T>, UpstreamError> {
    if !answer.status.is_success() {
        // 4xx that carry a -9999 envelope are business errors; the rest are HTTP errors.
        if answer.status.is_client_error() && !matches!(answer.status.as_u16(), 401 | 403 | 404 | 429) {
            if let Some(code) = envelope::failure_code(&answer.body) {
                return Ok(Envelope::Failure { code });
            }
        }
        return Err(http_error(answer));
    }
    envelope::parse::<T>(&answer.body)
        .map_err(|e| UpstreamError::Malformed { detail: e.0, http_status: answer.status.as_u16() })
}

/// `Retry-After` in seconds (an HTTP date is read as "soon": 1 s).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs.min(3600))),
        Err(_) if !value.is_empty() => Some(Duration::from_secs(1)),
        Err(_) => None,
    }
}
