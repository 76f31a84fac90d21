//! The one integration test binary: the facade and its simulator on port 0, a generated tonic
//! client, and assertions on codes, reasons, details and what reached the upstream.

mod binary;
mod browser;
mod campaign;
mod cdp;
mod cli;
mod cli_errors;
mod cli_events;
mod cli_help;
mod cli_secured;
mod console;
mod create_session;
mod disk_store;
mod docs_commands;
mod drain;
mod events;
mod fault_matrix;
mod hostile;
mod layout;
mod list_sessions;
mod metrics_docs;
mod nats;
mod nats_processes;
mod ops;
mod policy;
mod policy_process;
mod reads;
mod reconcile;
mod server;
mod tenants;
mod tls;
mod webhooks;

use std::{net::SocketAddr, time::Duration};

use callbot_facade::{
    app::Application,
    config::{ApiKey, Settings},
    pb::{self, call_bot_service_client::CallBotServiceClient},
    simulator::{self, SimConfig},
};
use serde_json::Value;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

/// A child process (the binary under test) killed and reaped when dropped, so a failing test
/// leaves no facade running behind it.
pub struct Reaped(std::process::Child);

impl Reaped {
    /// Guards `child`.
    pub fn new(child: std::process::Child) -> Self {
        Reaped(child)
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Sends each line of `pipe` (a child's stderr or stdout) to `tx` as it comes, from a thread of
/// its own, until the pipe ends or nobody listens.
pub fn forward_lines(pipe: impl std::io::Read + Send + 'static, tx: tokio::sync::mpsc::UnboundedSender<String>) {
    use std::io::BufRead;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// The lines of `pipe` as they come ([`forward_lines`]).
pub fn lines_of(pipe: impl std::io::Read + Send + 'static) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    forward_lines(pipe, tx);
    rx
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The API key the test facade is configured with.
pub const TEST_KEY: &str = "test-key";

/// A running simulator.
pub struct TestSim {
    /// Its base URL.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: reqwest::Client,
}

impl TestSim {
    /// Starts a simulator on a free loopback port.
    pub async fn start(config: SimConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(simulator::run(listener, config, async move {
            let _ = rx.await;
        }));
        TestSim { url, stop: Some(tx), http: reqwest::Client::new() }
    }

    /// A handle on a simulator another `TestSim` runs (dropping it stops nothing).
    pub fn detached(url: &str) -> Self {
        TestSim { url: url.to_owned(), stop: None, http: reqwest::Client::new() }
    }

    /// A request straight to the simulator's REST API, as another client of the provider would
    /// send it: a token fetched for `key`, then `x-api-key` and the bearer.
    pub async fn as_client(&self, key: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let auth: Value =
            self.http.get(format!("{}/api/auth?apiKey={key}", self.url)).send().await.unwrap().json().await.unwrap();
        let token = auth["payload"]["access_token"].as_str().expect("a token").to_owned();
        self.http.request(method, format!("{}{path}", self.url)).header("x-api-key", key).bearer_auth(token)
    }

    /// Sessions the simulator accepted, in arrival order.
    pub async fn sessions(&self) -> Vec<Value> {
        let v: Value = self.http.get(format!("{}/_sim/sessions", self.url)).send().await.unwrap().json().await.unwrap();
        v.as_array().cloned().unwrap_or_default()
    }

    /// Request counters.
    pub async fn stats(&self) -> Value {
        self.http.get(format!("{}/_sim/stats", self.url)).send().await.unwrap().json().await.unwrap()
    }

    /// Queues faults (one object or an array).
    pub async fn fault(&self, fault: Value) {
        let r = self.http.post(format!("{}/_sim/faults", self.url)).json(&fault).send().await.unwrap();
        assert!(r.status().is_success(), "fault refused: {}", r.text().await.unwrap_or_default());
    }

    /// Replaces the script catalogue with this raw JSON text (an array) or `{"generate": N}`.
    pub async fn set_scripts(&self, raw_json: &str) {
        self.put_scripts(&format!("{}/_sim/scripts", self.url), raw_json).await;
    }

    /// Replaces the catalogue that `api_key` alone sees (other keys keep the shared one).
    pub async fn set_scripts_for(&self, api_key: &str, raw_json: &str) {
        self.put_scripts(&format!("{}/_sim/scripts?api_key={api_key}", self.url), raw_json).await;
    }

    async fn put_scripts(&self, url: &str, raw_json: &str) {
        let r = self
            .http
            .put(url)
            .header("content-type", "application/json")
            .body(raw_json.to_owned())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "scripts refused: {}", r.text().await.unwrap_or_default());
    }
}

impl Drop for TestSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A running facade in front of its own simulator.
pub struct TestApp {
    /// The gRPC address.
    pub addr: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    /// The simulator behind it (when it has one).
    pub sim: TestSim,
    /// A connected client.
    pub client: CallBotServiceClient<Channel>,
    /// The configured tenant's webhook URL (token included), when the receiver is on.
    pub webhook: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Resolves when the facade has stopped.
    pub done: Option<tokio::task::JoinHandle<Result<(), callbot_facade::app::AppError>>>,
}

impl TestApp {
    /// Starts the shutdown (as SIGTERM would).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// A fresh channel to the facade.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Default test settings: loopback port 0, short timeouts, caching off (so each test sees the
/// upstream), pointed at `sim`.
pub fn test_settings(sim_url: &str) -> Settings {
    let mut s = Settings::for_tests();
    s.upstream.url = Some(sim_url.to_owned());
    s.upstream.api_key = Some(ApiKey::new(TEST_KEY));
    s.service.script_cache_ttl = Duration::ZERO;
    s.upstream.timeout = Duration::from_secs(5);
    s.upstream.attempt_timeout = Duration::from_secs(2);
    s.server.shutdown_grace = Duration::from_secs(5);
    s
}

/// A facade with default test settings in front of a default simulator.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(SimConfig::default(), |_| {}).await
}

/// A facade in front of a simulator with `sim_config`, settings adjusted by `adjust`.
pub async fn spawn_app_with(sim_config: SimConfig, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let sim = TestSim::start(sim_config).await;
    let mut settings = test_settings(&sim.url);
    adjust(&mut settings);
    start(settings, sim).await
}

/// Starts a facade with exactly these settings (the simulator is kept alive beside it).
pub async fn start(settings: Settings, sim: TestSim) -> TestApp {
    let app = Application::build(settings).await.expect("build");
    let addr = app.grpc_addr();
    let admin = app.admin_addr();
    let webhook = app.webhook_url();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connect");
    TestApp { addr, admin, sim, client: CallBotServiceClient::new(channel), webhook, stop: Some(tx), done: Some(done) }
}

/// The `ErrorInfo` reason of a status (panics when absent: every error must carry one).
pub fn reason(status: &Status) -> String {
    let details = status.get_error_details();
    let info = details.error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "callbot.v1");
    info.reason.clone()
}

/// An `ErrorInfo` metadata entry.
pub fn meta(status: &Status, key: &str) -> Option<String> {
    status.get_error_details().error_info().and_then(|i| i.metadata.get(key).cloned())
}

/// Asserts code and reason, and that every status has a request id.
pub fn assert_status(status: &Status, code: Code, want_reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(status), want_reason, "{status:?}");
    let details = status.get_error_details();
    let rid = details.request_info().map(|r| r.request_id.clone()).unwrap_or_default();
    assert!(!rid.is_empty(), "no RequestInfo in {status:?}");
}

/// Whether the status carries `RetryInfo`.
pub fn has_retry_info(status: &Status) -> bool {
    status.get_error_details().retry_info().is_some()
}

/// Collects a ListScripts stream.
pub async fn list(client: &mut CallBotServiceClient<Channel>, filter: &str) -> Result<Vec<pb::Script>, Status> {
    let mut stream =
        client.list_scripts(pb::ListScriptsRequest { name_contains: filter.to_owned() }).await?.into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await? {
        out.push(msg.script.expect("script"));
    }
    Ok(out)
}
