//! The gRPC side of assembly: the server's TLS (checked at start), reflection, and the router:
//! health, reflection and `CallBotService` behind the facade's layer (`middleware`).

use std::{future::Future, time::Duration};

use futures::StreamExt;

use tokio::net::TcpListener;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tower::layer::util::{Identity as NoLayer, Stack};

use super::{AppError, MAX_HEADER_LIST_BYTES};
use crate::{
    config::Settings,
    http_listener::FirstBytes,
    middleware::RpcLayer,
    pb::{self, call_bot_service_server::CallBotServiceServer},
    service::CallBotApi,
};

/// The gRPC router as built: every service behind the facade's layer.
pub(super) type GrpcRouter = Router<Stack<RpcLayer, NoLayer>>;

/// Largest message the facade encodes (a script list page, a report).
const MAX_ENCODING_BYTES: usize = 16 * 1024 * 1024;

/// HTTP/2 PING every so often on every connection; a peer that does not answer within
/// [`KEEPALIVE_TIMEOUT`] is gone and its connection (and streams) closed.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the TLS files and checks that they make a usable server configuration now, at start-up,
/// so that a missing, unreadable or garbage file stops the process with one line saying which
/// (rather than surfacing later as an opaque transport error).
/// The handshake must end within `handshake`, as a plaintext connection's first bytes must come
/// (`--webhook-header-timeout`, one bound for every listener): half-open connections hold no
/// descriptor for long.
pub(super) fn server_tls(
    files: &crate::config::TlsFiles,
    handshake: Duration,
) -> Result<Option<ServerTlsConfig>, AppError> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Ok(None);
    };
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| AppError::Tls(format!("cannot read the {what} {}: {e}", p.display())))
    };
    let (cert, key) = (read("certificate", cert)?, read("private key", key)?);
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).timeout(handshake);
    if let Some(ca) = &files.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
    }
    // tonic parses the PEM files only when the server is built: do it once here, for the error.
    Server::builder().tls_config(config.clone()).map_err(|e| {
        let cause = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_else(|| e.to_string());
        AppError::Tls(format!("unusable certificate, key or client CA ({cause})"))
    })?;
    Ok(Some(config))
}

/// Health, reflection (our contract, health, and the google.rpc error details, so grpcurl
/// decodes them; v1 for current tools, v1alpha for grpcurl 1.8) and the service, behind `layer`.
pub(super) fn router(
    settings: &Settings,
    tls: Option<ServerTlsConfig>,
    layer: RpcLayer,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    api: CallBotApi,
) -> Result<GrpcRouter, AppError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| AppError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| AppError::Reflection(e.to_string()))?;
    let callbot = CallBotServiceServer::new(api)
        .max_decoding_message_size(settings.server.max_message_bytes as usize)
        .max_encoding_message_size(MAX_ENCODING_BYTES);
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(AppError::Serve)?;
    }
    Ok(builder
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
        .max_concurrent_streams(Some(settings.server.grpc_max_streams_per_connection))
        .http2_keepalive_interval(Some(KEEPALIVE_EVERY))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(layer)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(callbot))
}

/// Serves `router` on `listener` until `stop` resolves; then it stops accepting and ends when
/// the calls in flight have. Each connection must send its first bytes (the HTTP/2 preface, or a
/// TLS ClientHello) within `first_bytes` (`FirstBytes`).
pub(super) fn serve(
    router: GrpcRouter,
    listener: TcpListener,
    first_bytes: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = Result<(), tonic::transport::Error>> {
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |accepted| accepted.map(|stream| FirstBytes::new(stream, first_bytes)));
    router.serve_with_incoming_shutdown(incoming, stop)
}
