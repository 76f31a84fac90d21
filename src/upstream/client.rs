//! The HTTP client of the upstream calls: hyper-util's pooled client, the one reqwest is built
//! on, with rustls (ring, the webpki roots: what reqwest's `rustls-tls` gave), used directly.
//!
//! Why not reqwest here (issue 20, BENCHMARKS.md "CreateSession vs the stack floor"): per request
//! reqwest re-parses the URL twice (its redirect layer and its response, even with redirects off),
//! clones the headers for its retry layer and wraps the call in three more futures: 28 k
//! instructions of a CreateSession's upstream request, for features the exchange does not use
//! (redirects are off, retries and timeouts are the exchange's own). The pool, the connector, the
//! HTTP/1.1 and HTTP/2 code are the same crates either way.
//!
//! What this keeps from reqwest's behaviour: a `user-agent` and `accept: */*` on every request, the
//! `Host` from the URL, the pool (idle connections kept 60 s, up to 1,024 per host), `TCP_NODELAY`,
//! a 2 s connect timeout, HTTP/2 by ALPN over TLS or by prior knowledge when configured.

use std::time::Duration;

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri,
    header::{ACCEPT, USER_AGENT},
    uri::PathAndQuery,
};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

use super::BuildError;

/// The pooled client.
#[derive(Debug, Clone)]
pub(super) struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(super) enum SendError {
    /// A header value that is not one (control characters in a key, say): nothing was sent.
    InvalidHeader(&'static str),
    /// The client's error: connecting (nothing sent) or the exchange (maybe sent).
    Client(hyper_util::client::legacy::Error),
}

impl Http {
    /// The client; `http2_prior_knowledge` speaks HTTP/2 without TLS (h2c).
    pub(super) fn new(connect_timeout: Duration, http2_prior_knowledge: bool) -> Result<Self, BuildError> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError::Http(e.to_string()))?
            .with_webpki_roots()
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            // As many idle connections as calls in flight (the default --max-concurrency): with
            // fewer, every burst of answers closes the surplus and the next burst reconnects
            // (CPU, and TIME_WAIT sockets piling up at a steady 1,000 in flight).
            .pool_max_idle_per_host(1024)
            .http2_only(http2_prior_knowledge)
            // Upstream response headers are bounded by hyper's client defaults: over HTTP/1.1 at
            // most 100 header fields within a ~400 KiB read buffer, over HTTP/2 a 16 KiB header
            // list; an answer beyond them fails as a broken connection. The body has its own cap
            // (MAX_BODY_BYTES), enforced as it streams in (`exchange.rs`).
            .build(connector);
        Ok(Http { client })
    }

    /// Sends `request`; the answer's body is left to stream.
    pub(super) async fn send(&self, request: Outgoing) -> Result<Response<Incoming>, SendError> {
        if let Some(name) = request.invalid {
            return Err(SendError::InvalidHeader(name));
        }
        let mut parts = request.uri.into_parts();
        if let Some(query) = request.query {
            let path = parts.path_and_query.as_ref().map_or("/", PathAndQuery::path);
            parts.path_and_query =
                Some(PathAndQuery::try_from(format!("{path}?{query}")).map_err(|_| SendError::InvalidHeader("query"))?);
        }
        let uri = Uri::from_parts(parts).map_err(|_| SendError::InvalidHeader("query"))?;
        let mut http = Request::new(Full::new(request.body));
        *http.method_mut() = request.method;
        *http.uri_mut() = uri;
        *http.headers_mut() = request.headers;
        self.client.request(http).await.map_err(SendError::Client)
    }
}

/// A request being built: method, the endpoint's URL, a query, headers and a body.
#[derive(Debug)]
pub(super) struct Outgoing {
    method: Method,
    uri: Uri,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    /// The first header whose value was refused.
    invalid: Option<&'static str>,
}

/// `user-agent` of every request.
static AGENT: HeaderValue = HeaderValue::from_static(concat!("callbot-facade/", env!("CARGO_PKG_VERSION")));
/// `accept` of every request (reqwest's default).
static ANY: HeaderValue = HeaderValue::from_static("*/*");

impl Outgoing {
    /// `method` to `uri`, with the headers every request carries.
    pub(super) fn new(method: Method, uri: Uri) -> Self {
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(USER_AGENT, AGENT.clone());
        headers.insert(ACCEPT, ANY.clone());
        Outgoing { method, uri, query: None, headers, body: Bytes::new(), invalid: None }
    }

    /// Appends `pairs` to the query, form-encoded (as reqwest's `query`).
    pub(super) fn query(mut self, pairs: &[(&str, &str)]) -> Self {
        let mut query = form_urlencoded::Serializer::new(self.query.take().unwrap_or_default());
        query.extend_pairs(pairs);
        self.query = Some(query.finish());
        self
    }

    /// Sets header `name` (replacing an earlier value); a value that is not a header value makes
    /// the request fail before anything is sent.
    pub(super) fn header<V>(mut self, name: &HeaderName, value: V) -> Self
    where
        V: TryInto<HeaderValue>,
    {
        match value.try_into() {
            Ok(value) => {
                self.headers.insert(name.clone(), value);
            }
            Err(_) => {
                self.invalid.get_or_insert(header_label(name));
            }
        }
        self
    }

    /// The body.
    pub(super) fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// A header's name for an error (the name only: values may be secrets).
fn header_label(name: &HeaderName) -> &'static str {
    match name.as_str() {
        "x-api-key" => "x-api-key",
        "authorization" => "authorization",
        "x-request-id" => "x-request-id",
        "traceparent" => "traceparent",
        "tracestate" => "tracestate",
        "content-type" => "content-type",
        _ => "a header",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_form_encoded_and_appended() {
        let r = Outgoing::new(Method::GET, Uri::from_static("http://h/api/auth"))
            .query(&[("apiKey", "a b&c=d/é")])
            .query(&[("page", "2")]);
        assert_eq!(r.query.as_deref(), Some("apiKey=a+b%26c%3Dd%2F%C3%A9&page=2"));
        assert_eq!(r.headers[USER_AGENT], AGENT);
        assert_eq!(r.headers[ACCEPT], "*/*");
    }

    #[test]
    fn a_value_that_is_not_a_header_value_fails_the_request_naming_the_header_only() {
        let r = Outgoing::new(Method::GET, Uri::from_static("http://h/x"))
            .header(&HeaderName::from_static("x-api-key"), "secret\nkey")
            .header(&HeaderName::from_static("x-request-id"), "fine");
        assert_eq!(r.invalid, Some("x-api-key"));
        let err = format!("{:?}", SendError::InvalidHeader(r.invalid.unwrap()));
        assert!(!err.contains("secret"), "{err}");
    }
}
