//! Who views the console, with a gRPC caller's rights: without caller authentication the console
//! is open like the API (the `default` tenant, or the configured key's); with caller tokens or a
//! tenants file, a login form takes a bearer token, which `Tenancy::resolve` must accept exactly as
//! for a gRPC call, and a cookie then names the login.
//!
//! The cookie holds a random 128-bit id of a login kept here (the token never leaves the process
//! again): a forged or stale cookie names no login and is refused. The token is resolved again on
//! every request, so a reload that withdraws it ends the login too. Cookies are HttpOnly,
//! SameSite=Strict, scoped to `/console` (the admin listener serves plain HTTP: no `Secure`).
//! Every form that posts carries a CSRF token compared in constant time: the login form's is
//! bound to a cookie (double submit), the logout form's to the login.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    Form,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use std::sync::Arc;
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;

use super::{Console, LOGIN_HTML, harden};
use crate::{middleware::Call, tenancy::Tenant, upstream::CallContext};

/// The login cookie's name.
pub(crate) const LOGIN_COOKIE: &str = "callbot_console";
/// The login form's CSRF cookie's name.
const CSRF_COOKIE: &str = "callbot_console_csrf";
/// How long a login lasts.
const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);
/// Logins kept at most; past it the oldest goes (a flood of logins costs bounded memory).
const MAX_LOGINS: usize = 10_000;
/// The longest bearer token the form takes (the gRPC metadata bound is larger; tokens are short).
const MAX_TOKEN: usize = 4096;

/// One login: the token it presented (resolved again on every request), its CSRF token, and
/// the signal that ends its live streams at logout.
struct Login {
    token: String,
    csrf: String,
    since: Instant,
    ended: CancellationToken,
}

/// The logins, by the random id their cookie holds.
#[derive(Default)]
pub(crate) struct Logins(Mutex<HashMap<String, Login>>);

impl Logins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Login>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, token: String) -> (String, String) {
        let (id, csrf) = (random_hex(), random_hex());
        let mut logins = self.lock();
        logins.retain(|_, l| l.since.elapsed() < LOGIN_TTL);
        if logins.len() >= MAX_LOGINS {
            if let Some(oldest) = logins.iter().min_by_key(|(_, l)| l.since).map(|(k, _)| k.clone()) {
                if let Some(gone) = logins.remove(&oldest) {
                    gone.ended.cancel();
                }
            }
        }
        let ended = CancellationToken::new();
        logins.insert(id.clone(), Login { token, csrf: csrf.clone(), since: Instant::now(), ended });
        (id, csrf)
    }

    /// The token, CSRF token and end signal of the login `id` names, when it is one and has not
    /// expired.
    fn get(&self, id: &str) -> Option<(String, String, CancellationToken)> {
        let logins = self.lock();
        logins
            .get(id)
            .filter(|l| l.since.elapsed() < LOGIN_TTL)
            .map(|l| (l.token.clone(), l.csrf.clone(), l.ended.clone()))
    }

    /// Ends the login `id` names, and its live streams.
    fn remove(&self, id: &str) {
        if let Some(gone) = self.lock().remove(id) {
            gone.ended.cancel();
        }
    }
}

/// 128 random bits as 32 hex digits.
fn random_hex() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Who is viewing: the tenant the console acts as, and the login's CSRF token when logged in.
#[derive(Clone)]
pub(crate) struct Viewer {
    pub(crate) tenant: Tenant,
    /// The bearer token the login presented (none when the console is open).
    token: Option<String>,
    /// The logout form's CSRF token (none when the console is open).
    pub(crate) csrf: Option<String>,
    /// Cancelled at logout (never when the console is open): live streams end with it.
    pub(crate) ended: CancellationToken,
}

/// Why a viewer may not see the tenant's data: not logged in, or the token is no longer accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotLoggedIn;

impl Console {
    /// The tenant `token` (none: no `authorization`) calls as, by the gRPC rules.
    fn resolve(&self, token: Option<&str>) -> Option<Tenant> {
        let mut probe = http::Request::builder().uri("/callbot.v1.CallBotService/ListSessions");
        if let Some(token) = token {
            probe = probe.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let probe = probe.body(()).ok()?;
        self.tenancy.resolve(&probe).ok().flatten()
    }

    /// The viewer of a request: the open console's tenant, or the login its cookie names, whose
    /// token the tenancy still accepts.
    pub(crate) fn viewer(&self, headers: &HeaderMap) -> Result<Viewer, NotLoggedIn> {
        if !self.tenancy.authenticates_callers() {
            let tenant = self.resolve(None).ok_or(NotLoggedIn)?;
            return Ok(Viewer { tenant, token: None, csrf: None, ended: CancellationToken::new() });
        }
        let id = cookie(headers, LOGIN_COOKIE).ok_or(NotLoggedIn)?;
        let (token, csrf, ended) = self.logins.get(id).ok_or(NotLoggedIn)?;
        let tenant = self.resolve(Some(&token)).ok_or(NotLoggedIn)?;
        Ok(Viewer { tenant, token: Some(token), csrf: Some(csrf), ended })
    }

    /// A request to a `CallBotService` handler as the viewer's tenant, settled as the middleware
    /// settles a gRPC call (the page's bound: `--upstream-timeout`).
    pub(crate) fn call<T>(&self, viewer: &Viewer, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let ctx = CallContext {
            api_key: viewer.tenant.key.clone(),
            deadline: tokio::time::Instant::now() + self.upstream_timeout,
            request_id: uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string(),
            traceparent: None,
            tracestate: None,
        };
        request.extensions_mut().insert(Call { tenant: viewer.tenant.name.clone(), ctx, caller_deadline: None });
        request
    }

    /// A stream request that ends when a reload withdraws the viewer's token (as a gRPC watch).
    pub(crate) fn revocable<T>(self: &Arc<Self>, viewer: &Viewer, mut request: tonic::Request<T>) -> tonic::Request<T> {
        let mut probe = http::Request::builder().uri("/callbot.v1.CallBotService/WatchCallEvents");
        if let Some(token) = &viewer.token {
            probe = probe.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Ok(probe) = probe.body(()) {
            if let Some(revocable) = self.tenancy.revocable(&probe, &viewer.tenant.name) {
                request.extensions_mut().insert(revocable);
            }
        }
        request
    }
}

fn cookie_header(name: &str, value: &str, max_age: Option<u64>) -> String {
    let age = max_age.map_or_else(String::new, |s| format!("; Max-Age={s}"));
    format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict{age}")
}

/// The login page with `message` (escaped) and a fresh CSRF token, bound to a cookie.
fn login_page(status: StatusCode, message: &str) -> Response {
    let csrf = random_hex();
    let note = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message))
    };
    let html = LOGIN_HTML.replace("{{csrf}}", &csrf).replace("{{message}}", &note);
    harden(
        (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
                (header::SET_COOKIE, cookie_header(CSRF_COOKIE, &csrf, Some(3600))),
            ],
            html,
        )
            .into_response(),
    )
}

/// HTML-escapes text for an element's content.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `GET /console/login`: the form, or the console itself when it asks for no token.
pub(super) async fn login_form(State(console): State<Arc<Console>>) -> Response {
    if !console.tenancy.authenticates_callers() {
        return harden(Redirect::to("/console/").into_response());
    }
    login_page(StatusCode::OK, "")
}

/// The login form's fields.
#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /console/login`: a token the tenancy accepts starts a login.
pub(super) async fn login(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !console.tenancy.authenticates_callers() {
        return harden(Redirect::to("/console/").to_owned().into_response());
    }
    let bound = cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    if form.csrf.is_empty() || !equal(bound, &form.csrf) {
        return login_page(StatusCode::FORBIDDEN, "The form expired: please sign in again.");
    }
    let token = form.token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN || console.resolve(Some(token)).is_none() {
        return login_page(StatusCode::UNAUTHORIZED, "That token is not accepted by this facade.");
    }
    let (id, _) = console.logins.add(token.to_owned());
    let mut response = Redirect::to("/console/").into_response();
    let h = response.headers_mut();
    if let Ok(v) = cookie_header(LOGIN_COOKIE, &id, Some(LOGIN_TTL.as_secs())).parse() {
        h.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = cookie_header(CSRF_COOKIE, "", Some(0)).parse() {
        h.append(header::SET_COOKIE, v);
    }
    harden(response)
}

/// The logout form's field.
#[derive(serde::Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/logout`: ends the login its cookie names, when the form carries its CSRF token.
pub(super) async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let Some(id) = cookie(&headers, LOGIN_COOKIE) else {
        return harden(Redirect::to("/console/login").into_response());
    };
    match console.logins.get(id) {
        Some((_, csrf, _)) if equal(&csrf, &form.csrf) => console.logins.remove(id),
        Some(_) => {
            return super::json_error(
                StatusCode::FORBIDDEN,
                "CSRF_TOKEN_MISMATCH",
                "the form's token is not this login's",
            );
        }
        None => {}
    }
    let mut response = Redirect::to("/console/login").into_response();
    if let Ok(v) = cookie_header(LOGIN_COOKIE, "", Some(0)).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    harden(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_from_every_header_and_compared_whole() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; callbot_console=abc".parse().unwrap());
        headers.append(header::COOKIE, "callbot_console_csrf=xyz".parse().unwrap());
        assert_eq!(cookie(&headers, LOGIN_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "callbot"), None);
        assert!(equal("abc", "abc"));
        assert!(!equal("abc", "abd") && !equal("abc", "ab"));
    }

    #[test]
    fn a_login_is_found_by_its_id_only_and_ends() {
        let logins = Logins::default();
        let (id, csrf) = logins.add("t0ken".into());
        assert_eq!(id.len(), 32);
        let (token, got_csrf, ended) = logins.get(&id).unwrap();
        assert_eq!((token.as_str(), got_csrf), ("t0ken", csrf));
        assert!(logins.get(&random_hex()).is_none(), "a made-up id names no login");
        logins.remove(&id);
        assert!(logins.get(&id).is_none());
        assert!(ended.is_cancelled(), "its live streams end");
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        let c = cookie_header(LOGIN_COOKIE, "v", Some(60));
        assert_eq!(c, "callbot_console=v; Path=/console; HttpOnly; SameSite=Strict; Max-Age=60");
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }
}
