//! The console: web pages on the admin listener (`/console/`) for the people who run calls: the
//! tenant's sessions, one session live (per-contact table, outcome bar, event timeline), a
//! campaign's chunks, the scripts, and the facade's health (API.md §11, docs/console.md).
//!
//! Rights are a gRPC caller's, exactly: every page's data comes from the `CallBotService` handlers
//! themselves (`data.rs`), called with the tenant `Tenancy::resolve` gives the console user's
//! bearer token (`auth.rs`), so another tenant's session is the same "not found" as over gRPC.
//! Live pages are fed by server-sent events from `WatchCallEvents` (`live.rs`): no page polls.
//!
//! The front end is plain HTML, CSS and JavaScript (`assets/`), compiled into the binary with
//! `include_str!`: no build chain, no CDN, nothing fetched from elsewhere (works offline).
//!
//! - `auth.rs`: the login form, the server-side login table behind an HttpOnly, SameSite=Strict
//!   cookie, CSRF tokens for every form that posts;
//! - `data.rs`: the JSON the pages read (sessions, a session's report, a campaign, scripts,
//!   health), phones masked unless `--console-show-phones`;
//! - `live.rs`: the server-sent event streams of the Sessions and Session pages.

mod auth;
mod data;
mod live;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use tokio_util::sync::CancellationToken;

use crate::{events::EventStore, metrics::Metrics, service::CallBotApi, tenancy::Tenancy};

pub(crate) use auth::Logins;

/// The page shell every console page shares (the script renders the page its path names).
const INDEX_HTML: &str = include_str!("assets/index.html");
/// The login page (no script: a plain form).
const LOGIN_HTML: &str = include_str!("assets/login.html");
/// The one stylesheet.
const CONSOLE_CSS: &str = include_str!("assets/console.css");
/// The one script.
const CONSOLE_JS: &str = include_str!("assets/console.js");

/// What the console reads: the same service the gRPC callers call, and who may call it.
pub(crate) struct Console {
    /// The `CallBotService` handlers (the console's only way to the data).
    pub(crate) api: CallBotApi,
    /// Callers to tenants, as the gRPC middleware settles them.
    pub(crate) tenancy: Arc<Tenancy>,
    /// The event store, for the Health page only (whether it is up).
    pub(crate) events: Arc<dyn EventStore>,
    /// The facade's metrics, for the Health page.
    pub(crate) metrics: Arc<Metrics>,
    /// Bound of a page's upstream exchange (the Scripts page): `--upstream-timeout`.
    pub(crate) upstream_timeout: Duration,
    /// `--console-show-phones`.
    pub(crate) show_phones: bool,
    /// The logins (server-side; the cookie holds a random id only).
    pub(crate) logins: Logins,
    /// The application's shutdown signal: live streams end when the drain begins.
    pub(crate) shutdown: CancellationToken,
    /// Webhook deliveries seen at the last Health read, for the rate.
    pub(crate) deliveries: std::sync::Mutex<Option<(std::time::Instant, f64)>>,
}

/// The console's routes, under `/console`.
pub(crate) fn routes(console: Arc<Console>) -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(page))
        .route("/console/sessions/{id}", get(page))
        .route("/console/campaigns/{id}", get(page))
        .route("/console/scripts", get(page))
        .route("/console/health", get(page))
        .route("/console/assets/console.css", get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }))
        .route("/console/assets/console.js", get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }))
        .route("/console/login", get(auth::login_form).post(auth::login))
        .route("/console/logout", post(auth::logout))
        .route("/console/api/me", get(data::me))
        .route("/console/api/sessions", get(data::sessions))
        .route("/console/api/sessions/{id}", get(data::session))
        .route("/console/api/campaigns/{id}", get(data::campaign))
        .route("/console/api/scripts", get(data::scripts))
        .route("/console/api/health", get(data::health))
        .route("/console/live/sessions", get(live::sessions))
        .route("/console/live/sessions/{id}", get(live::session))
        .with_state(console)
}

/// Headers every console answer carries: nothing from elsewhere may load, the page may not be
/// framed, types are not sniffed, and nothing is cached that a logout should hide.
fn harden(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    harden(([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response())
}

/// A page: the shell, once the viewer may see the tenant's data; else the login form.
async fn page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match console.viewer(&headers) {
        Ok(_) => harden(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML).into_response()),
        Err(_) => harden(Redirect::to("/console/login").into_response()),
    }
}

/// An answer of the console's JSON: the status and `{"code", "reason", "message"}`.
fn json_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "reason": reason, "message": message });
    harden((status, axum::Json(body)).into_response())
}

/// A handler's refusal as the console's JSON: the gRPC code's HTTP counterpart and the reason
/// the status carries (the same words a gRPC caller reads).
fn status_error(status: &tonic::Status) -> Response {
    use tonic::Code;
    let http = match status.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    let reason =
        tonic_types::StatusExt::get_error_details(status).error_info().map(|i| i.reason.clone()).unwrap_or_default();
    json_error(http, &reason, status.message())
}
