//! The floor of the chosen stack: a gRPC server (tonic, prost, the same proto) whose
//! CreateSession does nothing of ours: no validation, no JSON written from the request, no
//! middleware, no spans, no logs, no metrics, no retries, no deadline. It decodes the request
//! with tonic-prost's own codec (`ProstCodec`, what tonic does before any handler runs; not the
//! facade's direct decoder, `src/codec/`, which the generated server uses and which is the
//! facade's own work), posts a pre-encoded upstream body with
//! reqwest (the same pool settings as the facade), reads the envelope's `autocall_id` with a
//! substring search and answers. The body is the facade's own encoding of the first request,
//! made once; each call only splices in a fresh `ext_session_id` (the upstream refuses a repeated
//! one).
//!
//! What it costs per call is what the mandated stack costs before the facade does any work: the
//! lower bound of the CPU and latency budgets in BENCHMARKS.md. It is a measuring tool, not a
//! product: run it in the facade's place under the load generator, which starts it with the
//! facade's flags (`--listen`, `--upstream-url`, `--api-key`; the others are ignored):
//!
//! ```sh
//! cargo build --release --bin callbot-facade --example stack_floor
//! cat > /tmp/floor.sh <<'SH'
//! #!/bin/sh
//! if [ "$1" = simulate ]; then exec target/release/callbot-facade "$@"; fi
//! exec target/release/examples/stack_floor "$@"
//! SH
//! chmod +x /tmp/floor.sh
//! cargo run --release --example loadgen -- --bin /tmp/floor.sh --rpc create-session --concurrency 64
//! ```

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use callbot_facade::{
    pb,
    testing::{EncodedExecute, NewSession, SessionLimits, execute_body},
};
use futures::future::BoxFuture;
use tonic::{Request, Response, Status, transport::Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Floor {
    http: reqwest::Client,
    /// `.../execute_by_phone?cid=`, the caller id of the first request appended to it.
    base_url: String,
    api_key: String,
    bearer: String,
    /// The body before and after the session key, from the first request.
    template: OnceLock<Result<Template, Status>>,
    serial: AtomicU64,
}

/// The upstream URL and the body before and after the session key.
struct Template {
    url: reqwest::Url,
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// Stands for the session key in the template.
const KEY_MARK: &str = "floor-key-mark";

impl Floor {
    /// The facade's encoding of `request` with [`KEY_MARK`] as the key, cut around the mark.
    fn template(&self, request: pb::CreateSessionRequest) -> Result<Template, Status> {
        let url = reqwest::Url::parse_with_params(&self.base_url, &[("cid", &request.caller_id)])
            .map_err(|_| Status::internal("bad upstream URL"))?;
        let limits = SessionLimits { max_contacts: 10_000, now: SystemTime::now() };
        let session = NewSession::parse(request, &limits).map_err(|_| Status::invalid_argument("invalid request"))?;
        let encoded = EncodedExecute::new(&execute_body(&session, KEY_MARK));
        let json = encoded.json();
        let at = json
            .windows(KEY_MARK.len())
            .position(|w| w == KEY_MARK.as_bytes())
            .ok_or_else(|| Status::internal("no key"))?;
        Ok(Template { url, head: json[..at].to_vec(), tail: json[at + KEY_MARK.len()..].to_vec() })
    }
}

impl Floor {
    /// CreateSession: the upstream call with the pre-encoded body, the answer's id.
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        // Decoded by prost already; only the first request is read (for the template).
        let request = request.into_inner();
        let script_id = request.script_id.clone();
        let Template { url, head, tail } =
            self.template.get_or_init(|| self.template(request)).as_ref().map_err(Clone::clone)?;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let key = format!("floor-{}-{serial}", std::process::id());
        let mut body = Vec::with_capacity(head.len() + key.len() + tail.len());
        body.extend_from_slice(head);
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(tail);
        let answer = self
            .http
            .post(url.clone())
            .header("x-api-key", &self.api_key)
            .header(reqwest::header::AUTHORIZATION, &self.bearer)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|_| Status::unavailable("upstream"))?
            .bytes()
            .await
            .map_err(|_| Status::unavailable("upstream"))?;
        let id = string_after(&answer, b"\"autocall_id\":\"").ok_or_else(|| Status::internal("no autocall_id"))?;
        Ok(Response::new(pb::CreateSessionResponse {
            session: Some(pb::Session {
                id,
                script_id,
                external_session_id: key,
                rejected_contacts: Vec::new(),
                start_time: None,
            }),
        }))
    }
}

const CREATE_SESSION: &str = "/callbot.v1.CallBotService/CreateSession";

/// The service: CreateSession decoded and encoded by `tonic_prost::ProstCodec` through tonic's
/// own unary server (as generated code does, with the default limits), every other method
/// `UNIMPLEMENTED`.
#[derive(Clone)]
struct FloorService(Arc<Floor>);

impl tonic::server::NamedService for FloorService {
    const NAME: &'static str = "callbot.v1.CallBotService";
}

impl tower::Service<http::Request<tonic::body::Body>> for FloorService {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let floor = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != CREATE_SESSION {
                return Ok(Status::unimplemented("the stack floor serves CreateSession only").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(CreateSession(floor), req).await)
        })
    }
}

struct CreateSession(Arc<Floor>);

impl tonic::server::UnaryService<pb::CreateSessionRequest> for CreateSession {
    type Response = pb::CreateSessionResponse;
    type Future = BoxFuture<'static, Result<Response<pb::CreateSessionResponse>, Status>>;

    fn call(&mut self, request: Request<pb::CreateSessionRequest>) -> Self::Future {
        let floor = self.0.clone();
        Box::pin(async move { floor.create_session(request).await })
    }
}

/// The JSON string that follows `key` in `body` (no escapes: the simulator's ids have none).
fn string_after(body: &[u8], key: &[u8]) -> Option<String> {
    let start = body.windows(key.len()).position(|w| w == key)? + key.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    String::from_utf8(body[start..start + len].to_vec()).ok()
}

/// The value of `--name value` or `--name=value`.
fn flag(args: &[String], name: &str) -> Option<String> {
    let prefixed = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix(&prefixed) {
        Some(v) => Some(v.to_owned()),
        None if a == name => args.get(i + 1).cloned(),
        None => None,
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = flag(&args, "--listen").unwrap_or_else(|| "127.0.0.1:50051".into()).parse()?;
    let base = flag(&args, "--upstream-url").ok_or("--upstream-url is required")?;
    let api_key = flag(&args, "--api-key").ok_or("--api-key is required")?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    // One token for the whole run.
    let auth = http.get(format!("{base}/api/auth")).query(&[("apiKey", &api_key)]).send().await?.bytes().await?;
    let token = string_after(&auth, b"\"access_token\":\"").ok_or("no access_token in the auth answer")?;
    let floor = Floor {
        base_url: format!("{base}/api/call_bot/execute_by_phone"),
        http,
        bearer: format!("Bearer {token}"),
        api_key,
        template: OnceLock::new(),
        serial: AtomicU64::new(0),
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<FloorService>().await;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop = Arc::new(tokio::sync::Notify::new());
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
        }
        on_signal.notify_one();
    });
    Server::builder()
        .add_service(health)
        .add_service(FloorService(Arc::new(floor)))
        .serve_with_incoming_shutdown(incoming, stop.notified())
        .await?;
    Ok(())
}
