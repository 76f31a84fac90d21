//! A self-contained simulator of the provider's callBot REST API, with fault injection, for tests and demos.
//!
//! It shares no code with the rest of the crate (its own types, its own validation) so that it can never mask
//! a product bug. It serves, over HTTP/1.1 and h2c:
//!
//! - `GET /api/auth?apiKey=<key>`: JWT-shaped tokens with an expiry;
//! - `GET /api/call_bot/script/list`: a Vietnamese script catalogue (`catalogue.rs`);
//! - `POST /api/call_bot/execute_by_phone?cid=<cid>`: validated like the real API; accepted sessions are
//!   recorded. Contacts on the simulated do-not-call list (last three digits `999`) are rejected per contact
//!   with `number_dnc`, malformed phones with `phone_invalid`, without failing the call. The accepted
//!   contacts are then **called**, in scaled time (`dialer.rs`), with an outcome decided by the number's last
//!   digit (the table in `calls.rs`), and each call's live states and CDR are POSTed to the key's `call`
//!   webhook (`delivery.rs`);
//! - `GET /api/webhooks/list`, `POST /api/webhooks/register`, `POST /api/webhooks/destroy?hook_type=call`:
//!   webhook registration per API key (`webhooks.rs`);
//! - `POST /api/v3/call-transaction/search?page=&size=`: the history of the ended calls (`history.rs`);
//! - `/_sim/*` control endpoints: `GET /_sim/sessions`, `GET /_sim/calls` (`?session=`, `?api_key=`: every call
//!   placed and each session's progress, `calls.rs`), `GET /_sim/stats`, `POST|GET|DELETE /_sim/faults`,
//!   `POST|GET|DELETE /_sim/webhook_faults` (`webhook_faults.rs`), `PUT|GET /_sim/time_scale`
//!   (`{"time_scale": X}`, simulated seconds per real second, finite and > 0; default `--time-scale`, 10),
//!   `PUT /_sim/scripts` (`?api_key=K`: a catalogue seen by that API key only), `POST /_sim/reset` (also
//!   forgets hooks, calls and webhook faults, and stops the calls in progress).
//!
//! Every JSON answer of the API paths uses the upstream envelope
//! (`{"instance_id":"sim","instance_version":"1.2.164","key_enabled":false,"status_code":9999|-9999,"payload":...}`);
//! business errors are HTTP 200 with status_code -9999. Fault injection (`POST /_sim/faults`) is documented in
//! `faults.rs`; it applies to every API path, the webhook and history paths included.
//! `/_sim/stats` counts requests per API path (`auth_calls`, `script_list_calls`, `execute_calls`,
//! `webhook_list_calls`, `webhook_register_calls`, `webhook_destroy_calls`, `history_search_calls`), and
//! `sessions_total`, `unauthorized`, `padding_bytes_sent`, `calls_placed`, `webhook_deliveries` (POST attempts),
//! `webhook_delivered`, `webhook_failed_attempts`, `webhook_given_up`, `webhook_lost` (deliveries a `lose` fault
//! took) and `calls_never_ended` (calls a `never_ends` fault held open).

mod admin;
mod api;
#[cfg(test)]
mod call_tests;
mod calls;
mod catalogue;
mod clock;
mod delivery;
mod dialer;
mod faults;
mod history;
mod state;
#[cfg(test)]
mod tests;
mod webhook_faults;
mod webhooks;

/// Streams one HTTP/2 connection may have open at once.
const SIM_MAX_CONCURRENT_STREAMS: u32 = 10_000;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::response::Response;
use axum::routing::{get, post, put};
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt as _;

use api::Faulted;
use faults::{Fault, is_admin_path};
use state::Sim;

/// Largest request body the simulator reads (bytes).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// How long `run` waits for open connections to finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Simulator configuration.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Accepted API keys; `None` accepts any non-empty key.
    pub api_keys: Option<Vec<String>>,
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    /// Simulated seconds per real second for the calls placed (finite, > 0; otherwise the default is used).
    pub time_scale: f64,
}

/// The default time scale: 10 simulated seconds per real second.
pub const DEFAULT_TIME_SCALE: f64 = 10.0;

impl Default for SimConfig {
    /// Any non-empty key accepted; tokens valid 24 hours; time scale [`DEFAULT_TIME_SCALE`].
    fn default() -> Self {
        Self { api_keys: None, token_ttl: Duration::from_secs(24 * 3600), time_scale: DEFAULT_TIME_SCALE }
    }
}

/// The axum router of every simulator path.
fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/api/auth", get(api::auth))
        .route("/api/call_bot/script/list", get(api::script_list))
        .route("/api/call_bot/execute_by_phone", post(api::execute))
        .route("/api/webhooks/list", get(webhooks::list))
        .route("/api/webhooks/register", post(webhooks::register))
        .route("/api/webhooks/destroy", post(webhooks::destroy))
        .route("/api/v3/call-transaction/search", post(history::search))
        .route("/_sim/calls", get(admin::calls))
        .route("/_sim/time_scale", put(admin::put_time_scale).get(admin::get_time_scale))
        .route(
            "/_sim/webhook_faults",
            post(admin::add_webhook_faults).get(admin::list_webhook_faults).delete(admin::clear_webhook_faults),
        )
        .route("/_sim/sessions", get(admin::sessions))
        .route("/_sim/stats", get(admin::stats))
        .route("/_sim/faults", post(admin::add_faults).get(admin::list_faults).delete(admin::clear_faults))
        .route("/_sim/scripts", put(admin::put_scripts))
        .route("/_sim/reset", post(admin::reset))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(sim)
}

async fn not_found() -> Response {
    let mut resp = api::fail("not_found", "Not found");
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

/// Count a request on one of the API paths.
fn count_request(sim: &Sim, path: &str) {
    let counter = match path {
        "/api/auth" => &sim.stats.auth_calls,
        "/api/call_bot/script/list" => &sim.stats.script_list_calls,
        "/api/call_bot/execute_by_phone" => &sim.stats.execute_calls,
        "/api/webhooks/list" => &sim.stats.webhook_list_calls,
        "/api/webhooks/register" => &sim.stats.webhook_register_calls,
        "/api/webhooks/destroy" => &sim.stats.webhook_destroy_calls,
        "/api/v3/call-transaction/search" => &sim.stats.history_search_calls,
        _ => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn call_router(router: Router, req: Request<Incoming>) -> Response {
    match router.oneshot(req.map(Body::new)).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// The canned answer of a fault with `status`, `error` and/or `body`.
fn canned_response(sim: &Sim, fault: &Fault) -> Response {
    let status = fault.status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    if status == StatusCode::UNAUTHORIZED {
        sim.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
    }
    let body = match (fault.body_bytes(), &fault.error) {
        (Some(body), _) => body,
        (None, Some(code)) => api::fail_body(code, "Simulated error"),
        (None, None) => api::fail_body(
            &format!("http_{}", status.as_u16()),
            status.canonical_reason().unwrap_or("Simulated HTTP status"),
        ),
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let ct = fault
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/json; charset=utf-8"));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    resp
}

/// Answer 200 with the first half of `resp`'s body (or of a generic success envelope when `resp` is not a
/// success), then fail the body stream so that the connection is aborted mid-body.
async fn truncated(resp: Response) -> Response {
    let ok = resp.status() == StatusCode::OK;
    let full: Bytes = match axum::body::to_bytes(resp.into_body(), usize::MAX).await {
        Ok(b) if ok && b.len() >= 2 => b,
        _ => Bytes::from(api::ok_envelope_raw(b"{}")),
    };
    let half = full.slice(..full.len() / 2);
    // Pause between the half and the error so that hyper flushes the head and the half body first.
    let abort = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "simulated truncation"))
    };
    let stream = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::io::Error>(half) }),
        futures::stream::once(abort),
    );
    let mut out = Response::new(Body::from_stream(stream));
    out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    out.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
    out
}

/// The normal answer's status and headers, then an abort before the first body byte (after a pause, so
/// that hyper flushes the head first).
fn aborted_after_headers(resp: Response) -> Response {
    let (mut parts, _body) = resp.into_parts();
    let abort = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err::<Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "simulated reset after headers"))
    };
    // A declared length makes the break unmistakable over HTTP/1.1 too.
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("64"));
    Response::from_parts(parts, Body::from_stream(futures::stream::once(abort)))
}

/// Size of each piece of `body_size` padding.
const PAD_CHUNK: usize = 64 * 1024;

/// Reshapes `resp`'s body as the fault says: dribbled in `body_chunks` pieces `body_chunk_delay_ms` apart (the
/// first with the head),
/// then padded with spaces up to `body_size` bytes, streamed (the padding is one shared 64 KiB buffer).
async fn reshaped(sim: &Arc<Sim>, resp: Response, fault: &Fault) -> Response {
    use futures::StreamExt as _;
    let (mut parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    let pieces: Vec<Bytes> = match fault.body_chunk_delay_ms {
        None => vec![body.clone()],
        Some(_) => {
            let n = fault.body_chunks.unwrap_or(4).max(1) as usize;
            let step = body.len().div_ceil(n).max(1);
            (0..body.len()).step_by(step).map(|at| body.slice(at..(at + step).min(body.len()))).collect()
        }
    };
    // The first piece goes out with the head at once; each next one after the pause.
    let delay = fault.body_chunk_delay_ms.map(Duration::from_millis);
    let head = futures::stream::iter(pieces.into_iter().enumerate()).then(move |(i, piece)| async move {
        if let Some(d) = delay.filter(|_| i > 0) {
            tokio::time::sleep(d).await;
        }
        Ok::<_, std::io::Error>(piece)
    });
    let padding = fault.body_size.map_or(0, |size| size.saturating_sub(body.len() as u64));
    let pad = Bytes::from(vec![b' '; PAD_CHUNK]);
    let sim = Arc::clone(sim);
    let tail = futures::stream::unfold(padding, move |left| {
        let (pad, sim) = (pad.clone(), Arc::clone(&sim));
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(PAD_CHUNK as u64) as usize;
            sim.stats.padding_bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            Some((Ok::<_, std::io::Error>(pad.slice(..n)), left - n as u64))
        }
    });
    Response::from_parts(parts, Body::from_stream(head.chain(tail)))
}

/// Handle one request: count it, apply the next matching fault, else route it normally.
async fn handle(sim: Arc<Sim>, router: Router, mut req: Request<Incoming>) -> Result<Response, std::io::Error> {
    let path = req.uri().path().to_owned();
    count_request(&sim, &path);
    let fault = if is_admin_path(&path) { None } else { sim.take_fault(&path) };
    let Some(fault) = fault else {
        return Ok(call_router(router, req).await);
    };
    tracing::debug!(path, ?fault, "simulator: applying fault");
    if let Some(ms) = fault.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if fault.expire_tokens {
        sim.expire_tokens();
    }
    let retry_after = fault.retry_after_value().and_then(|v| HeaderValue::from_str(&v).ok());
    let mut resp = if fault.drop {
        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "simulated connection drop"));
    } else if fault.truncate {
        req.extensions_mut().insert(Faulted);
        truncated(call_router(router, req).await).await
    } else if fault.abort_after_headers {
        req.extensions_mut().insert(Faulted);
        aborted_after_headers(call_router(router, req).await)
    } else if fault.canned() {
        canned_response(&sim, &fault)
    } else {
        let mut resp = call_router(router, req).await;
        if let Some(ct) = fault.content_type.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        resp
    };
    if fault.reshapes_body() && !fault.truncate && !fault.abort_after_headers {
        resp = reshaped(&sim, resp, &fault).await;
    }
    if let Some(ra) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, ra);
    }
    Ok(resp)
}

/// Serve the simulator on an already-bound listener until `shutdown` resolves.
///
/// Connections are served with HTTP/1.1 or h2c (auto-detected). On shutdown the listener stops accepting,
/// open connections are asked to close gracefully and are given a few seconds to finish.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sim = Arc::new(Sim::new(config));
    let router = router(Arc::clone(&sim));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut conns = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "simulator listening");
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "simulator: accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let sim = Arc::clone(&sim);
                let router = router.clone();
                let mut stop = stop_rx.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        handle(Arc::clone(&sim), router.clone(), req)
                    });
                    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    // Over HTTP/2 a client may keep thousands of calls in flight on one connection
                    // (hyper's default would queue all but 200 of them at the client).
                    builder.http2().max_concurrent_streams(SIM_MAX_CONCURRENT_STREAMS);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        res = conn.as_mut() => {
                            if let Err(e) = res {
                                tracing::debug!(error = %e, "simulator: connection ended with error");
                            }
                        }
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    sim.clock.stop_calls();
    let _ = stop_tx.send(());
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::debug!("simulator: aborting connections still open after shutdown");
    }
    Ok(())
}
