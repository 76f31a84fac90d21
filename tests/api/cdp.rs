//! A minimal Chrome DevTools Protocol client for the browser test: headless Chromium (Debian's
//! `chromium`, installed by scripts/install-chromium.sh) started on a free DevTools port, one
//! page target attached in flat mode, commands sent and answered over one WebSocket
//! (tokio-websockets, already in the tree through async-nats), every event kept so the test can
//! read the page's console errors.

use std::{path::PathBuf, process::Stdio, time::Duration};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The Chromium binary: `$CHROMIUM`, else `chromium` on the PATH (Debian's package).
pub fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| PathBuf::from(dir).join("chromium")).find(|p| p.is_file())
}

/// A headless browser and one attached page.
pub struct Browser {
    _child: super::Reaped,
    _profile: tempfile::TempDir,
    ws: Ws,
    session: String,
    next_id: u64,
    /// Every event received so far (method, params).
    pub events: Vec<(String, Value)>,
}

impl Browser {
    /// Starts Chromium headless at `width` × `height` and attaches to a blank page.
    pub async fn start(binary: &std::path::Path, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        let child = super::Reaped::new(child);
        // Chromium writes its port and the browser target's path to DevToolsActivePort.
        let file = profile.path().join("DevToolsActivePort");
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if text.lines().count() >= 2 {
                    break text;
                }
            }
            assert!(tokio::time::Instant::now() < until, "chromium did not open its DevTools port within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut lines = text.lines();
        let (port, path) = (lines.next().unwrap().trim(), lines.next().unwrap().trim());
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = ClientBuilder::new().uri(&url).unwrap().connect().await.expect("DevTools WebSocket");
        let mut browser =
            Browser { _child: child, _profile: profile, ws, session: String::new(), next_id: 0, events: Vec::new() };
        let target = browser.call_on(None, "Target.createTarget", json!({ "url": "about:blank" })).await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached =
            browser.call_on(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true })).await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    async fn call_on(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(message.to_string())).await.expect("send to DevTools");
        loop {
            let next = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("DevTools connection open")
                .expect("DevTools message");
            let Some(text) = next.as_text() else { continue };
            let value: Value = serde_json::from_str(text).unwrap();
            if value["id"] == json!(id) {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
            if let Some(event) = value["method"].as_str() {
                self.events.push((event.to_owned(), value["params"].clone()));
            }
        }
    }

    /// A command to the page.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call_on(Some(&session), method, params).await
    }

    /// Evaluates `expression` in the page (promises awaited); its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }))
            .await;
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page (at most `within`).
    pub async fn wait_for(&mut self, expression: &str, within: Duration) {
        let until = tokio::time::Instant::now() + within;
        loop {
            if self.eval(&format!("Boolean({expression})")).await == json!(true) {
                return;
            }
            assert!(tokio::time::Instant::now() < until, "not true within {within:?}: {expression}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Loads `url` (following redirects) and waits until the new document is complete.
    pub async fn open(&mut self, url: &str) {
        self.eval("window.__leaving = true").await;
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for("window.__leaving !== true && document.readyState === 'complete'", Duration::from_secs(15)).await;
    }

    /// The errors the page reported so far: exceptions, `console.error`, and log entries of
    /// level error (network failures included), as text.
    pub fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|(method, p)| match method.as_str() {
                "Runtime.exceptionThrown" => Some(format!("exception: {}", p["exceptionDetails"])),
                "Runtime.consoleAPICalled" if p["type"] == "error" => Some(format!("console.error: {}", p["args"])),
                "Log.entryAdded" if p["entry"]["level"] == "error" => {
                    let text = |k: &str| p["entry"][k].as_str().unwrap_or_default().to_owned();
                    Some(format!("{}: {} {}", text("source"), text("text"), text("url")))
                }
                _ => None,
            })
            .collect()
    }

    /// A PNG of the top `width` × `height` CSS pixels of the page, scaled by `scale`.
    pub async fn screenshot(&mut self, width: u32, height: u32, scale: f64) -> Vec<u8> {
        use base64::Engine as _;
        let clip = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": scale });
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png", "clip": clip })).await;
        base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap()
    }
}
