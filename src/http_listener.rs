//! The listeners that face clients we do not control: the HTTP/1.1 + h2c server of the webhook
//! receiver (the provider, hence the internet) and the admin endpoints, and the first-bytes bound
//! the gRPC listener shares.
//!
//! What a slow, abandoned or hostile client can hold, and for how long:
//! - **a connection that never starts**: the first bytes (an HTTP/1.1 request line, the HTTP/2
//!   preface, a TLS ClientHello) must arrive within [`FirstBytes`]' bound, or it is dropped;
//! - **headers that never end**: HTTP/1.1 request headers must be whole within the header timeout
//!   (hyper's `header_read_timeout`, with a timer);
//! - **a body that never ends**: the handlers that read one bound it (the receiver answers 408);
//! - **many connections**: at most `max_connections` are served at once; more wait in the kernel's
//!   listen backlog and take no file descriptor of ours, so the gRPC API and the health checks
//!   keep theirs whatever happens here.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Sleep,
};

/// Bytes a client must send before [`FirstBytes`]' deadline: the HTTP/2 preface's length, more than
/// any HTTP/1.1 request line's start and less than any TLS ClientHello.
const FIRST_BYTES: usize = 24;

/// How long the connections under way get to finish once the listener stops.
const DRAIN: Duration = Duration::from_secs(5);

/// A connection that must send its first [`FIRST_BYTES`] bytes within a bound, or read fails with
/// `TimedOut` (and the server drops it). Everything else passes through.
pub(crate) struct FirstBytes<IO> {
    inner: IO,
    /// Set until the first bytes arrived.
    deadline: Option<Pin<Box<Sleep>>>,
    seen: usize,
}

impl<IO> FirstBytes<IO> {
    /// Wraps a freshly accepted connection.
    pub(crate) fn new(inner: IO, within: Duration) -> Self {
        FirstBytes { inner, deadline: Some(Box::pin(tokio::time::sleep(within))), seen: 0 }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytes<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let this = &mut *self;
        if let Some(deadline) = this.deadline.as_mut() {
            this.seen += buf.filled().len() - before;
            if this.seen >= FIRST_BYTES {
                this.deadline = None;
            } else if polled.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request within the bound")));
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytes<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for FirstBytes<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// What a listener allows its clients.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// First bytes and whole HTTP/1.1 request headers within this.
    pub(crate) header_timeout: Duration,
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// The connections open now (`callbot_http_connections{listener}`).
    pub(crate) open: prometheus_client::metrics::gauge::Gauge,
}

/// Serves `router` on `listener` (HTTP/1.1 and h2c) within `limits` until `stop` resolves; then
/// stops accepting and lets the requests under way finish (a few seconds at most).
pub(crate) async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        // A place first: beyond the cap, connections wait in the backlog, unaccepted.
        let place = tokio::select! {
            place = places.clone().acquire_owned() => match place { Ok(p) => p, Err(_) => break },
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(FirstBytes::new(stream, limits.header_timeout));
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
        let open = limits.open.clone();
        open.inc();
        tokio::spawn(async move {
            let _ = connection.await;
            open.dec();
            drop(place);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::debug!(listener = name, "connections still open at the end of the drain: dropped");
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_first_bytes_must_come_within_the_bound_then_anything_goes() {
        let (client, server) = tokio::io::duplex(64);
        let mut slow = FirstBytes::new(server, Duration::from_millis(50));
        let mut buf = [0u8; 64];
        let err = slow.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut prompt = FirstBytes::new(server, Duration::from_millis(50));
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut got = 0;
        while got < FIRST_BYTES {
            got += prompt.read(&mut buf[got..]).await.unwrap();
        }
        // Past the bound, a quiet connection is not dropped.
        tokio::time::sleep(Duration::from_millis(80)).await;
        client.write_all(b"later").await.unwrap();
        assert_eq!(prompt.read(&mut buf).await.unwrap(), 5);
    }
}
