//! The console's live feeds: server-sent events fed by `WatchCallEvents` (the store's
//! subscription, as a gRPC watcher gets it), so a page changes within a moment of a webhook and
//! nothing polls.
//!
//! - `/console/live/sessions/<id>`: the session's report at once, then for every batch of its
//!   events (replayed from the start, then live) the events (`events`) and the report they lead to
//!   (`report`), computed by `GetSessionReport` itself so the page's numbers are the API's;
//! - `/console/live/sessions?campaign=&script=&after_ms=`: the Sessions page's list (`sessions`) at
//!   once and again after each batch of the tenant's events.
//!
//! Events that arrive together go out together: a batch is the first event and every one waiting
//! behind it (at most [`MAX_BATCH`]). After a quiet spell the first event goes out at once; while
//! events keep coming a feed computes at most one report per [`SESSION_PACE`] (Session) or one
//! list per [`SESSIONS_PACE`] (Sessions), so a busy tenant costs each viewer a bounded amount. Each feed is one spawned task writing into a small
//! channel; it stops when the viewer goes away or logs out, the facade drains, or a reload
//! withdraws the viewer's token (the watch stream then ends, as a gRPC watcher's does).

use std::{convert::Infallible, sync::Arc, time::Duration};

use tokio::time::Instant;

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{FutureExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Console,
    auth::Viewer,
    data::{SessionFilter, event_json, report_json, sessions_page},
    harden, json_error, status_error,
};
use crate::{
    pb::{self, call_bot_service_server::CallBotService},
    service::CallBotApi,
};

/// Events in one batch at most.
const MAX_BATCH: usize = 500;
/// Reports a Session page's feed computes at most: one per this long.
const SESSION_PACE: Duration = Duration::from_millis(200);
/// Lists a Sessions page's feed computes at most: one per this long (a list is up to 100 reports).
const SESSIONS_PACE: Duration = Duration::from_millis(500);
/// Server-sent events buffered per viewer.
const BUFFER: usize = 16;

type Tx = mpsc::Sender<Result<Event, Infallible>>;

/// The stream `WatchCallEvents` answers with.
type Watch = <CallBotApi as CallBotService>::WatchCallEventsStream;

fn sse(rx: mpsc::Receiver<Result<Event, Infallible>>) -> Response {
    harden(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()).into_response())
}

fn event(name: &str, data: &Value) -> Result<Event, Infallible> {
    Ok(Event::default().event(name).data(data.to_string()))
}

/// The next batch of a watch stream: at least one event (waiting for it), then, once `pace` has
/// passed since `last` (the previous batch's time, updated), those waiting by then; `None` when the
/// stream ended. The pace bounds what a busy tenant costs per viewer (one report or list per
/// pace) without delaying the first event after a quiet spell.
async fn batch(stream: &mut Watch, last: &mut Instant, pace: Duration) -> Option<Vec<pb::CallEvent>> {
    let first = stream.next().await?.ok()?.event?;
    let mut out = vec![first];
    tokio::time::sleep_until(*last + pace).await;
    *last = Instant::now();
    while out.len() < MAX_BATCH {
        let Some(next) = stream.next().now_or_never() else { break };
        match next {
            Some(Ok(pb::WatchCallEventsResponse { event: Some(e) })) => out.push(e),
            Some(Ok(_)) => {}
            // The stream ends (drain, revoked, expired): this batch still goes out.
            Some(Err(_)) | None => break,
        }
    }
    Some(out)
}

/// A watch stream as the viewer's tenant (ending when a reload withdraws the viewer's token).
async fn watch(
    console: &Arc<Console>,
    viewer: &Viewer,
    request: pb::WatchCallEventsRequest,
) -> Result<Watch, tonic::Status> {
    let request = console.revocable(viewer, console.call(viewer, request));
    Ok(console.api.watch_call_events(request).await?.into_inner())
}

/// `GET /console/live/sessions/<id>`.
pub(super) async fn session(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Ok(viewer) = console.viewer(&headers) else {
        return json_error(axum::http::StatusCode::UNAUTHORIZED, "CONSOLE_LOGIN_REQUIRED", "sign in at /console/login");
    };
    let report = |console: Arc<Console>, viewer: Viewer, id: String| async move {
        let request = console.call(&viewer, pb::GetSessionReportRequest { session_id: id });
        console.api.get_session_report(request).await.map(|r| report_json(&console, r.get_ref()))
    };
    // The session must be the viewer's: the same "not found" as GetSessionReport's.
    let first = match report(console.clone(), viewer.clone(), id.clone()).await {
        Ok(first) => first,
        Err(status) => return status_error(&status),
    };
    let request = pb::WatchCallEventsRequest { session_id: id.clone(), from_start: true, ..Default::default() };
    let mut stream = match watch(&console, &viewer, request).await {
        Ok(stream) => stream,
        Err(status) => return status_error(&status),
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        if tx.send(event("report", &first)).await.is_err() {
            return;
        }
        let mut last = Instant::now().checked_sub(SESSION_PACE).unwrap_or_else(Instant::now);
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                () = console.shutdown.cancelled() => return,
                () = viewer.ended.cancelled() => return,
                next = batch(&mut stream, &mut last, SESSION_PACE) => next,
            };
            let Some(events) = next else { return };
            let events: Vec<Value> = events.iter().map(|e| event_json(&console, e)).collect();
            if send(&tx, "events", &json!(events)).await.is_err() {
                return;
            }
            match report(console.clone(), viewer.clone(), id.clone()).await {
                Ok(r) => {
                    if send(&tx, "report", &r).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    sse(rx)
}

async fn send(tx: &Tx, name: &str, data: &Value) -> Result<(), ()> {
    tx.send(event(name, data)).await.map_err(|_| ())
}

/// `GET /console/live/sessions?campaign=&script=&after_ms=`.
pub(super) async fn sessions(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filter): Query<SessionFilter>,
) -> Response {
    let Ok(viewer) = console.viewer(&headers) else {
        return json_error(axum::http::StatusCode::UNAUTHORIZED, "CONSOLE_LOGIN_REQUIRED", "sign in at /console/login");
    };
    let first = match sessions_page(&console, &viewer, &filter).await {
        Ok(first) => first,
        Err(status) => return status_error(&status),
    };
    let mut stream = match watch(&console, &viewer, pb::WatchCallEventsRequest::default()).await {
        Ok(stream) => stream,
        Err(status) => return status_error(&status),
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        if tx.send(event("sessions", &first)).await.is_err() {
            return;
        }
        let mut last = Instant::now();
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                () = console.shutdown.cancelled() => return,
                () = viewer.ended.cancelled() => return,
                next = batch(&mut stream, &mut last, SESSIONS_PACE) => next,
            };
            if next.is_none() {
                return;
            }
            match sessions_page(&console, &viewer, &filter).await {
                Ok(page) => {
                    if send(&tx, "sessions", &page).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    sse(rx)
}
