//! The exchange every endpoint shares: a token and the request, one token refresh on a 401,
//! retries of what is safe to retry under the budget, the body streamed in under the size cap,
//! and the envelope decoded into a payload, a failure code or an error. The endpoint files
//! (`auth.rs`, `scripts.rs`, `execute.rs`) only say what to send and what the payload means.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{
    Method, StatusCode, Uri,
    header::{AUTHORIZATION, HeaderMap, HeaderName},
};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;
use tracing::Instrument;

use super::{
    BuildError, CallContext, UpstreamClient, UpstreamError,
    client::{Outgoing, SendError},
    envelope::{self, Envelope},
    retry::{self, Idempotency},
};

/// The names of the headers every request carries, as constants (not parsed per request).
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Largest upstream body read; a bigger one is refused while it streams in.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One endpoint: its path, which names it in metrics and spans, and its URL, parsed once (a URL
/// parse per attempt is measurable at thousands of calls a second).
pub(super) struct Endpoint {
    path: &'static str,
    uri: Uri,
}

impl Endpoint {
    /// `base_url + path`, or why it is not an http(s) URL.
    pub(super) fn new(base_url: &str, path: &'static str) -> Result<Self, BuildError> {
        let text = format!("{base_url}{path}");
        // Checked as a URL first (the clearer message), then taken as the request's URI.
        let url = url::Url::parse(&text).map_err(|e| BuildError::BadUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(BuildError::BadUrl(format!("{}: not an http(s) URL with a host", url.scheme())));
        }
        let uri = Uri::try_from(url.as_str()).map_err(|e| BuildError::BadUrl(e.to_string()))?;
        Ok(Endpoint { path, uri })
    }
}

/// One HTTP answer, body read in full.
pub(super) struct Answer {
    /// The endpoint's path, for the envelope outcome's metric.
    endpoint: &'static str,
    pub(super) status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl UpstreamClient {
    /// The whole exchange of one callBot call under the deadline: token, request, one refresh
    /// and retry on 401, retries of retryable failures.
    pub(super) async fn call_with_token<F>(
        &self,
        ctx: &CallContext,
        kind: Idempotency,
        method: Method,
        endpoint: &Endpoint,
        build: F,
    ) -> Result<Answer, UpstreamError>
    where
        F: Fn(Outgoing) -> Outgoing,
    {
        let span = tracing::debug_span!("upstream", endpoint = endpoint.path);
        let exchange = async {
            let mut refreshed = false;
            loop {
                // Bounded by the deadline here, and each attempt below by its own timer (a
                // write's runs to the deadline; the backoff never sleeps past it): one timer per
                // call on the common path (a cached token never waits), not one more around the
                // whole exchange.
                let token = tokio::time::timeout_at(ctx.deadline, self.token(ctx))
                    .await
                    .unwrap_or(Err(UpstreamError::DeadlineExceeded));
                let token = match token {
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
                    .with_retries(ctx, kind, endpoint, || {
                        build(self.request(method.clone(), endpoint))
                            .header(&X_API_KEY, ctx.api_key.expose())
                            .header(&AUTHORIZATION, token.header.clone())
                    })
                    .await?;
                if answer.status == StatusCode::UNAUTHORIZED && !refreshed {
                    // The token was refused (expired or revoked early): drop exactly that token,
                    // fetch a new one (single-flight) and try once more. A 401 means the request
                    // was not acted on, so this is safe for writes too.
                    tracing::debug!("upstream answered 401; refreshing the access token once");
                    self.forget_token(ctx, &token);
                    refreshed = true;
                    continue;
                }
                return Ok(answer);
            }
        };
        exchange.instrument(span).await
    }

    /// A request to `endpoint`.
    pub(super) fn request(&self, method: Method, endpoint: &Endpoint) -> Outgoing {
        Outgoing::new(method, endpoint.uri.clone())
    }

    /// Sends a request (rebuilt per attempt) until it succeeds, fails for good, or the attempts,
    /// the budget or the deadline run out. HTTP error statuses other than retryable ones are
    /// returned as answers for the caller to interpret (401 needs the token logic).
    pub(super) async fn with_retries(
        &self,
        ctx: &CallContext,
        kind: Idempotency,
        endpoint: &Endpoint,
        build: impl Fn() -> Outgoing,
    ) -> Result<Answer, UpstreamError> {
        let path = endpoint.path;
        self.budget.record_request();
        let mut attempt = 1;
        loop {
            // One clock read per attempt: the time left, the attempt's timer and its latency.
            let now = Instant::now();
            let remaining = ctx.deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                return Err(UpstreamError::DeadlineExceeded);
            }
            let attempt_timeout = match kind {
                Idempotency::Read => remaining.min(self.attempt_timeout),
                Idempotency::Write => remaining,
            };
            let mut request = build().header(&X_REQUEST_ID, &ctx.request_id);
            // Each attempt is a client span: a child of the call's span (same trace, new span id).
            if let Some(tp) = ctx.traceparent {
                request = request.header(&TRACEPARENT, tp.child().header());
                if let Some(ts) = &ctx.tracestate {
                    request = request.header(&TRACESTATE, ts);
                }
            }
            // Sent here, not inside `receive`: an `async fn` keeps its arguments for its whole
            // life, and a request is a few hundred bytes per call in flight. The attempt's bound
            // covers the answer's body too.
            let sent = receive(path, self.http.send(request));
            let result = match tokio::time::timeout_at(now + attempt_timeout, sent)
                .await
                .unwrap_or(Err(UpstreamError::AttemptTimeout))
            {
                // The attempt was cut by the call's own deadline, not by the per-attempt bound.
                Err(UpstreamError::AttemptTimeout) if attempt_timeout >= remaining => {
                    Err(UpstreamError::DeadlineExceeded)
                }
                other => other,
            };
            let status = result.as_ref().ok().map(|a| a.status.as_u16());
            let latency = now.elapsed();
            self.metrics.upstream().attempt(path, status, latency);
            let err = match result {
                Ok(answer) => {
                    let (status, latency_us) = (answer.status.as_u16(), latency.as_micros() as u64);
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
                self.metrics.upstream().retry_refused(path);
                tracing::debug!(endpoint = path, "retry budget spent; not retrying");
                return Err(err);
            }
            self.metrics.upstream().retry(path);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// One HTTP attempt (sent), with the body streamed in under the size cap.
async fn receive(
    endpoint: &'static str,
    pending: impl std::future::Future<Output = Result<http::Response<Incoming>, SendError>>,
) -> Result<Answer, UpstreamError> {
    let response = pending.await.map_err(UpstreamError::from_send)?;
    let status = response.status();
    let (parts, mut incoming) = response.into_parts();
    let content_length = incoming.size_hint().exact();
    if content_length.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(UpstreamError::Malformed { detail: "body over the size cap".into(), http_status: status.as_u16() });
    }
    let headers = parts.headers;
    // Most answers arrive in one chunk: keep it as is and copy only when a second one comes.
    let mut first: Option<Bytes> = None;
    let mut body = BytesMut::new();
    loop {
        match incoming.frame().await {
            Some(Ok(frame)) => {
                // Trailers (HTTP/2) carry nothing the exchange reads.
                let Ok(chunk) = frame.into_data() else { continue };
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
                        let hint = content_length.map_or(0, |l| l as usize).min(MAX_BODY_BYTES);
                        body.reserve(hint.max(earlier.len() + chunk.len()));
                        body.extend_from_slice(&earlier);
                        body.extend_from_slice(&chunk);
                    }
                }
            }
            None => break,
            Some(Err(_)) => {
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
    Ok(Answer { endpoint, status, headers, body })
}

/// An answer with a non-success status as an error.
pub(super) fn http_error(answer: &Answer) -> UpstreamError {
    UpstreamError::Http {
        status: answer.status.as_u16(),
        retry_after: retry_after(&answer.headers),
        upstream_code: envelope::failure_code(&answer.body),
    }
}

impl UpstreamClient {
    /// [`decode`], counted by what the answer was (`callbot_upstream_answers_total`): an
    /// upstream refusal comes with HTTP 200, so the HTTP status alone does not show it.
    pub(super) fn decode<'a, T: serde::Deserialize<'a>>(
        &self,
        answer: &'a Answer,
    ) -> Result<Envelope<T>, UpstreamError> {
        let result = decode(answer);
        let outcome = match &result {
            Ok(Envelope::Success(_)) => "success",
            Ok(Envelope::Failure { .. }) => "rejected",
            Err(UpstreamError::Malformed { .. }) => "malformed",
            Err(_) => "http_error",
        };
        self.metrics.upstream().answer(answer.endpoint, outcome);
        result
    }
}

/// A success status parsed as an envelope; any other status becomes its HTTP error.
pub(super) fn decode<'a, T: serde::Deserialize<'a>>(answer: &'a Answer) -> Result<Envelope<T>, UpstreamError> {
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
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs.min(3600))),
        Err(_) if !value.is_empty() => Some(Duration::from_secs(1)),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::scripts::ScriptList;

    /// What `decode` made of an answer, in short.
    #[derive(Debug, PartialEq, Eq)]
    enum Read {
        Success,
        Failure(String),
        Malformed(u16),
        Http(u16, Option<String>),
    }

    #[test]
    fn decode_table() {
        use Read::*;
        let failure = r#"{"status_code":-9999,"payload":{"error":"data_is_required"}}"#;
        let code = || Some("data_is_required".to_owned());
        let rows: Vec<(u16, &str, Read)> = vec![
            (200, r#"{"status_code":9999,"payload":[]}"#, Success),
            (200, failure, Failure("data_is_required".into())),
            (200, "<html>502</html>", Malformed(200)),
            // Not an object: malformed, never a failure read by position.
            (200, "[-9999]", Malformed(200)),
            (200, r#"[9999,[{"id":"a"}]]"#, Malformed(200)),
            (200, r#""-9999""#, Malformed(200)),
            (200, "-9999", Malformed(200)),
            (200, "true", Malformed(200)),
            (200, "null", Malformed(200)),
            // A 4xx carrying a failure envelope is a business error; any other body leaves the
            // HTTP status to speak, as an HTML page does.
            (400, failure, Failure("data_is_required".into())),
            (400, "<html>400</html>", Http(400, None)),
            (400, "[-9999]", Http(400, None)),
            (422, r#"["-9999",{"error":"data_is_required"}]"#, Http(422, None)),
            (400, "null", Http(400, None)),
            (403, failure, Http(403, code())),
            (503, failure, Http(503, code())),
            (503, "[-9999]", Http(503, None)),
        ];
        for (status, body, want) in rows {
            let status = StatusCode::from_u16(status).unwrap();
            let answer = Answer { endpoint: "/test", status, headers: HeaderMap::new(), body: Bytes::from(body) };
            let got = match decode::<ScriptList>(&answer) {
                Ok(Envelope::Success(_)) => Success,
                Ok(Envelope::Failure { code }) => Failure(code),
                Err(UpstreamError::Malformed { http_status, .. }) => Malformed(http_status),
                Err(UpstreamError::Http { status, upstream_code, .. }) => Http(status, upstream_code),
                Err(other) => panic!("{status} {body}: {other:?}"),
            };
            assert_eq!(got, want, "{status} {body}");
        }
    }

    #[test]
    fn retry_after_table() {
        let rows: [(Option<&str>, Option<Duration>); 6] = [
            (None, None),
            (Some("7"), Some(Duration::from_secs(7))),
            (Some(" 0 "), Some(Duration::ZERO)),
            (Some("999999"), Some(Duration::from_secs(3600))),
            (Some("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::from_secs(1))),
            (Some(""), None),
        ];
        for (value, want) in rows {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(http::header::RETRY_AFTER, v.parse().unwrap());
            }
            assert_eq!(retry_after(&headers), want, "{value:?}");
        }
    }
}
