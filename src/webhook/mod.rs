//! The webhook receiver: the provider's call states and end-of-call records in (README, "Call
//! outcomes"; docs/upstream.md §11.2), on a listener of its own (it faces the provider, not the
//! mesh), plain HTTP/1.1 and h2c.
//!
//! `POST /webhooks/callbot/<token>`:
//! - `404` for a token that is not one of ours (checked before the body is read);
//! - `413` for a body over [`MAX_BODY_BYTES`] (by its Content-Length, or while reading);
//! - `400` for a body that is no call event (not JSON, not an object, wrong field shapes);
//! - `204` once the event is stored, for a repeat too, and for a live state word the
//!   normalization table ignores;
//! - `503` when the store cannot take it (the provider may retry; nothing acknowledged is lost).
//!
//! - `directory.rs`: tenants, URL tokens, keys; `registrar.rs`: our URL registered per tenant;
//!   `resolver.rs`: the session of a record that came without one, from the call history.

pub(crate) mod directory;
pub(crate) mod registrar;
pub(crate) mod resolver;

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Path, Request, State},
    http::StatusCode,
    routing::post,
};
use http_body_util::BodyExt as _;
use tokio::net::TcpListener;

use crate::{
    domain::mask_phone,
    events::{Appended, EventStore, Fact, StoredEvent, normalize},
    metrics::Metrics,
    upstream::{Delivery, parse_delivery},
};
use directory::Directory;
use resolver::Resolver;

/// Largest body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handler needs.
pub(crate) struct Receiver {
    pub(crate) directory: Arc<Directory>,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) resolver: Resolver,
    pub(crate) metrics: Arc<Metrics>,
    /// A request's whole body within this (`--webhook-body-timeout`), or 408.
    pub(crate) body_timeout: Duration,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn deliver(State(rx): State<Arc<Receiver>>, Path(token): Path<String>, request: Request) -> StatusCode {
    let metrics = rx.metrics.events();
    let Some(tenant) = rx.directory.verify(&token) else {
        metrics.delivery("unknown", "unknown_token");
        return StatusCode::NOT_FOUND;
    };
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        metrics.delivery("unknown", "too_large");
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY_BYTES);
    let body = match tokio::time::timeout(rx.body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            metrics.delivery("unknown", "too_large");
            return StatusCode::PAYLOAD_TOO_LARGE;
        }
        Ok(Err(_)) => {
            metrics.delivery("unknown", "bad_request");
            return StatusCode::BAD_REQUEST;
        }
        Err(_) => {
            metrics.delivery("unknown", "timeout");
            return StatusCode::REQUEST_TIMEOUT;
        }
    };
    let delivery = match parse_delivery(&body) {
        Ok(d) => d,
        Err(why) => {
            tracing::info!(%tenant, error = %why, bytes = body.len(), "webhook body is no call event");
            metrics.delivery("unknown", "bad_request");
            return StatusCode::BAD_REQUEST;
        }
    };
    let kind = match &delivery {
        Delivery::Live(_) => "live",
        Delivery::Record(_) => "record",
    };
    let mut event = match normalize::normalize(delivery, now_ms()) {
        Ok(e) => e,
        Err(skipped) => {
            tracing::debug!(%tenant, ?skipped, "webhook delivery ignored");
            metrics.delivery(kind, "ignored");
            return StatusCode::NO_CONTENT;
        }
    };
    if event.fact == Fact::Record && event.session_id.is_empty() {
        if let Some(key) = rx.directory.key_of(&tenant) {
            if let Some(session) = rx.resolver.session_of(&tenant, key, &event.call_id).await {
                event.session_id = session.into();
            }
        }
    }
    let (call_id, phone, fact) = (event.call_id.clone(), mask_phone(&event.phone), event.fact);
    match rx.store.append(tenant.clone(), event).await {
        Ok(Appended::Stored(StoredEvent { event: stored, .. })) => {
            tracing::debug!(
                %tenant, call_id = %call_id, session_id = %stored.session_id, phone = %phone,
                fact = fact.as_str(), outcome = stored.outcome.as_str(), "call event stored"
            );
            metrics.delivery(kind, "stored");
            StatusCode::NO_CONTENT
        }
        Ok(Appended::Duplicate) => {
            metrics.delivery(kind, "duplicate");
            StatusCode::NO_CONTENT
        }
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "call event not stored: answering 503");
            metrics.delivery(kind, "unavailable");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// The receiver's routes.
pub(crate) fn router(receiver: Arc<Receiver>) -> Router {
    Router::new().route("/webhooks/callbot/{token}", post(deliver)).fallback(not_found).with_state(receiver)
}

/// Serves the receiver on `listener` (HTTP/1.1 and h2c) within `limits` (`crate::http_listener`:
/// the provider's side faces the internet) until `stop` resolves, letting the requests under way
/// finish.
pub(crate) async fn serve(
    listener: TcpListener,
    receiver: Arc<Receiver>,
    limits: crate::http_listener::Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    crate::http_listener::serve("webhook", listener, router(receiver), limits, stop).await;
}
