//! Tenants by caller identity (`--tenants-file`) and secrets re-read from files: two tenants on
//! one facade, each call made with its own tenant's key (the simulator's per-key catalogues show
//! which); bearer token digests and mTLS identities (rcgen certificates with a SPIFFE URI SAN and
//! DNS SANs); every refusal's code and reason; a bad file or conflicting flags refusing to start
//! in one line; SIGHUP; a bad reload keeping the last good state; and caller tokens and keys
//! rotated under load without one failed call.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rcgen::{SanType, string::Ia5String};
use sha2::{Digest, Sha256};
use tonic::{Request, metadata::MetadataValue};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use super::{
    tls::{Pki, tls_channel},
    *,
};

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");

/// The poll interval of these tests (production: 1 s): a change is seen within a few of them.
const POLL: Duration = Duration::from_millis(50);

/// A script every tenant's catalogue has (what the load loops call).
const SHARED: &str = "shared-1";

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn bearer(token: &str) -> String {
    format!("bearer_sha256: {}", sha256_hex(token))
}

/// A catalogue of `own` plus the shared script, as the simulator's JSON.
fn catalogue(own: &str) -> String {
    format!(
        r#"[{{"id":"{own}","name":"Kịch bản {own}","variables":[]}},{{"id":"{SHARED}","name":"Chung","variables":[]}}]"#
    )
}

/// A tenants file: each tenant's name, key file and caller entries.
fn tenants_yaml(tenants: &[(&str, PathBuf, Vec<String>)]) -> String {
    let mut out = String::from("tenants:\n");
    for (name, key_file, callers) in tenants {
        out.push_str(&format!("  - name: {name}\n    api_key_file: {}\n", key_file.display()));
        if callers.is_empty() {
            out.push_str("    callers: []\n");
        } else {
            out.push_str("    callers:\n");
            for c in callers {
                out.push_str(&format!("      - {c}\n"));
            }
        }
    }
    out
}

/// A directory of secret files, each written whole and renamed into place, as operators do.
struct Secrets {
    dir: tempfile::TempDir,
}

impl Secrets {
    fn new() -> Self {
        Secrets { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path(name)).unwrap();
    }
}

/// A Kubernetes Secret volume: `<name>` -> `..data/<name>`, `..data` -> a directory per version;
/// an update writes a new directory and repoints `..data` in one rename.
#[cfg(unix)]
struct SecretVolume {
    dir: tempfile::TempDir,
    version: u32,
}

#[cfg(unix)]
impl SecretVolume {
    fn new(files: &[(&str, &str)]) -> Self {
        let mut volume = SecretVolume { dir: tempfile::tempdir().unwrap(), version: 0 };
        volume.publish(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.path(name)).unwrap();
        }
        volume
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn publish(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir(self.path(&version)).unwrap();
        for (name, text) in files {
            std::fs::write(self.path(&version).join(name), text).unwrap();
        }
        std::os::unix::fs::symlink(&version, self.path("..data_tmp")).unwrap();
        std::fs::rename(self.path("..data_tmp"), self.path("..data")).unwrap();
    }
}

/// Who a call says it is.
#[derive(Debug, Clone, Default)]
struct As {
    authorization: Option<String>,
    tenant: Option<String>,
    api_key: Option<String>,
}

impl As {
    fn token(token: &str) -> Self {
        As { authorization: Some(format!("Bearer {token}")), ..As::default() }
    }
    fn tenant(mut self, name: &str) -> Self {
        self.tenant = Some(name.to_owned());
        self
    }
    fn api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_owned());
        self
    }
    fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        let md = req.metadata_mut();
        for (key, value) in
            [("authorization", &self.authorization), ("x-callbot-tenant", &self.tenant), ("x-api-key", &self.api_key)]
        {
            if let Some(value) = value {
                md.insert(key, MetadataValue::try_from(value.as_str()).unwrap());
            }
        }
        req
    }
}

type Client = CallBotServiceClient<Channel>;

async fn list_ids(client: &mut Client, who: &As) -> Result<Vec<String>, Status> {
    let mut stream = client.list_scripts(who.request(pb::ListScriptsRequest::default())).await?.into_inner();
    let mut ids = Vec::new();
    while let Some(msg) = stream.message().await? {
        ids.push(msg.script.expect("script").id);
    }
    Ok(ids)
}

async fn get_script(client: &mut Client, who: &As, id: &str) -> Result<pb::Script, Status> {
    let req = who.request(pb::GetScriptRequest { script_id: id.into() });
    Ok(client.get_script(req).await?.into_inner().script.expect("script"))
}

async fn create_session(client: &mut Client, who: &As, script: &str) -> Result<pb::Session, Status> {
    let req = who.request(pb::CreateSessionRequest {
        script_id: script.into(),
        contacts: vec![pb::Contact { phone: "0912345678".into(), ..Default::default() }],
        ..Default::default()
    });
    Ok(client.create_session(req).await?.into_inner().session.expect("session"))
}

/// A facade with this tenants file (no key of its own), polling it every [`POLL`].
async fn spawn_tenants(sim: SimConfig, tenants_file: &Path) -> TestApp {
    spawn_app_with(sim, |s| {
        s.upstream.api_key = None;
        s.security.tenants_file = Some(tenants_file.to_owned());
        s.security.secrets_poll_interval = POLL;
    })
    .await
}

/// The value of one series, `name{labels}` exactly as rendered.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap()
}

/// Scrapes until `series` reads `want`; returns the last scrape.
async fn wait_for_series(app: &TestApp, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(app).await;
        if value(&text, series) == Some(want) || Instant::now() > deadline {
            assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retries `check` until it holds (a reload is seen within a few polls), for at most 5 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reload_series(name: &str, file: &str) -> String {
    format!(r#"callbot_config_{name}_total{{file="{file}"}}"#)
}

#[tokio::test]
async fn two_tenants_by_bearer_digest_each_call_with_their_own_key() {
    let secrets = Secrets::new();
    secrets.write("school.key", "school-key\n");
    secrets.write("clinic.key", "  clinic-key");
    secrets.write(
        "tenants.yaml",
        &tenants_yaml(&[
            ("school", secrets.path("school.key"), vec![bearer("school-token")]),
            ("clinic", secrets.path("clinic.key"), vec![bearer("clinic-token"), bearer("clinic-token-2")]),
        ]),
    );
    let sim = SimConfig { api_keys: Some(vec!["school-key".into(), "clinic-key".into()]), ..SimConfig::default() };
    let mut app = spawn_tenants(sim, &secrets.path("tenants.yaml")).await;
    app.sim.set_scripts_for("school-key", &catalogue("s-1")).await;
    app.sim.set_scripts_for("clinic-key", &catalogue("c-1")).await;

    let (school, clinic) = (As::token("school-token"), As::token("clinic-token"));
    assert_eq!(list_ids(&mut app.client, &school).await.unwrap(), ["s-1", SHARED]);
    assert_eq!(list_ids(&mut app.client, &clinic).await.unwrap(), ["c-1", SHARED]);
    assert_eq!(list_ids(&mut app.client, &As::token("clinic-token-2")).await.unwrap(), ["c-1", SHARED]);
    // One tenant cannot read another's script; each reads its own.
    let err = get_script(&mut app.client, &clinic, "s-1").await.unwrap_err();
    assert_status(&err, Code::NotFound, "SCRIPT_NOT_FOUND");
    assert_eq!(get_script(&mut app.client, &school, "s-1").await.unwrap().id, "s-1");
    // Sessions go out under each tenant's key (the simulator checks the script per key too).
    create_session(&mut app.client, &school, "s-1").await.unwrap();
    create_session(&mut app.client, &clinic, "c-1").await.unwrap();
    let sessions = app.sim.sessions().await;
    assert_eq!(sessions.len(), 2);
    assert_ne!(sessions[0]["api_key_id"], sessions[1]["api_key_id"]);
    assert_eq!(app.sim.stats().await["unauthorized"], 0, "never a token with another tenant's key");

    // The metrics carry the tenant's name, never its key.
    let series = |tenant: &str, method: &str| {
        format!(r#"callbot_tenant_handled_total{{tenant="{tenant}",grpc_method="{method}",grpc_code="OK"}}"#)
    };
    let text = wait_for_series(&app, &series("clinic", "ListScripts"), 2.0).await;
    assert_eq!(value(&text, &series("school", "ListScripts")), Some(1.0), "{text}");
    assert_eq!(value(&text, &series("school", "CreateSession")), Some(1.0), "{text}");
    assert!(!text.contains("school-key") && !text.contains("clinic-key"), "{text}");
    assert_eq!(value(&text, &reload_series("reload_failures", "tenants_file")), Some(0.0), "{text}");
}

#[tokio::test]
async fn every_refusal_has_its_code_and_reason_and_reaches_no_upstream() {
    let secrets = Secrets::new();
    secrets.write("school.key", "school-key");
    secrets.write("clinic.key", "clinic-key");
    secrets.write(
        "tenants.yaml",
        &tenants_yaml(&[
            ("school", secrets.path("school.key"), vec![bearer("school-token")]),
            ("clinic", secrets.path("clinic.key"), vec![bearer("clinic-token")]),
        ]),
    );
    let mut app = spawn_tenants(SimConfig::default(), &secrets.path("tenants.yaml")).await;
    let school = As::token("school-token");
    let rows: Vec<(As, Code, &str)> = vec![
        (As::default(), Code::Unauthenticated, "CALLER_UNAUTHENTICATED"),
        (As::token("not-listed"), Code::Unauthenticated, "CALLER_UNAUTHENTICATED"),
        (As::token(&sha256_hex("school-token")), Code::Unauthenticated, "CALLER_UNAUTHENTICATED"),
        (
            As { authorization: Some("Basic c2Nob29sLXRva2Vu".into()), ..As::default() },
            Code::Unauthenticated,
            "CALLER_UNAUTHENTICATED",
        ),
        // Who the caller is comes first: an unknown caller naming a tenant or sending a key.
        (As::default().tenant("school"), Code::Unauthenticated, "CALLER_UNAUTHENTICATED"),
        (As::default().api_key("school-key"), Code::Unauthenticated, "CALLER_UNAUTHENTICATED"),
        (school.clone().tenant("clinic"), Code::PermissionDenied, "TENANT_NOT_ALLOWED"),
        (school.clone().tenant("no-such-tenant"), Code::PermissionDenied, "TENANT_NOT_ALLOWED"),
        (school.clone().api_key("school-key"), Code::PermissionDenied, "CALLER_API_KEY_NOT_ALLOWED"),
        (school.clone().api_key("clinic-key"), Code::PermissionDenied, "CALLER_API_KEY_NOT_ALLOWED"),
        (school.clone().tenant("school").api_key("x"), Code::PermissionDenied, "CALLER_API_KEY_NOT_ALLOWED"),
    ];
    for (who, code, reason) in rows {
        let case = format!("{who:?}");
        assert_status(&list_ids(&mut app.client, &who).await.expect_err(&case), code, reason);
        assert_status(&get_script(&mut app.client, &who, SHARED).await.expect_err(&case), code, reason);
        assert_status(&create_session(&mut app.client, &who, SHARED).await.expect_err(&case), code, reason);
    }
    let stats = app.sim.stats().await;
    for counter in ["auth_calls", "script_list_calls", "execute_calls"] {
        assert_eq!(stats[counter], 0, "{counter}: {stats}");
    }

    // Naming its own tenant is fine, and an empty x-api-key is no key.
    let own = school.clone().tenant("school").api_key("");
    assert!(!list_ids(&mut app.client, &own).await.unwrap().is_empty());
    // Health stays open without any identity.
    let mut health = HealthClient::new(app.channel().await);
    let got = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(got.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn mtls_identities_choose_the_tenant() {
    const SPIFFE: &str = "spiffe://cluster.local/ns/grades/sa/notifier";
    let pki = Pki::new();
    let secrets = Secrets::new();
    secrets.write("school.key", "school-key");
    secrets.write("clinic.key", "clinic-key");
    secrets.write(
        "tenants.yaml",
        &tenants_yaml(&[
            ("school", secrets.path("school.key"), vec![format!("spiffe: {SPIFFE}")]),
            ("clinic", secrets.path("clinic.key"), vec!["dns: reminder.clinic.svc".into(), bearer("clinic-token")]),
        ]),
    );
    let sim = TestSim::start(SimConfig::default()).await;
    sim.set_scripts_for("school-key", &catalogue("s-1")).await;
    sim.set_scripts_for("clinic-key", &catalogue("c-1")).await;
    let mut settings = test_settings(&sim.url);
    settings.upstream.api_key = None;
    settings.security.tenants_file = Some(secrets.path("tenants.yaml"));
    settings.security.tls = pki.tls_files(true);
    let app = Application::build(settings).await.expect("build with mTLS and tenants");
    let addr = app.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let client = |sans: Vec<SanType>| {
        let (cert, key) = pki.ca.client_with_sans(sans);
        let ca = pki.ca.pem.clone();
        async move { CallBotServiceClient::new(tls_channel(addr, &ca, Some((&cert, &key))).await.expect("mTLS connects")) }
    };
    let uri = |s: &str| SanType::URI(Ia5String::try_from(s).unwrap());
    let dns = |s: &str| SanType::DnsName(Ia5String::try_from(s).unwrap());

    // A SPIFFE ID (URI SAN) and a DNS SAN (compared case-insensitively) each choose their tenant.
    let mut school = client(vec![uri(SPIFFE)]).await;
    assert_eq!(list_ids(&mut school, &As::default()).await.unwrap(), ["s-1", SHARED]);
    assert_eq!(list_ids(&mut school, &As::default().tenant("school")).await.unwrap(), ["s-1", SHARED]);
    let mut clinic = client(vec![dns("other.example"), dns("Reminder.Clinic.SVC")]).await;
    assert_eq!(list_ids(&mut clinic, &As::default()).await.unwrap(), ["c-1", SHARED]);
    create_session(&mut clinic, &As::default(), "c-1").await.unwrap();

    // A certificate from the CA whose names are not listed: not a caller.
    let mut stranger = client(vec![dns("stranger.svc"), uri("spiffe://cluster.local/ns/other/sa/x")]).await;
    let err = list_ids(&mut stranger, &As::default()).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "CALLER_UNAUTHENTICATED");

    // The school's certificate naming the clinic: refused.
    let err = list_ids(&mut school, &As::default().tenant("clinic")).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
    // A bearer token that is not listed is never overlooked because the certificate is.
    let err = list_ids(&mut school, &As::token("not-listed")).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "CALLER_UNAUTHENTICATED");
    // Identities of two tenants at once: the caller must name one of them.
    let both = As::token("clinic-token");
    let err = list_ids(&mut school, &both).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
    assert_eq!(list_ids(&mut school, &both.clone().tenant("clinic")).await.unwrap(), ["c-1", SHARED]);
    assert_eq!(list_ids(&mut school, &both.tenant("school")).await.unwrap(), ["s-1", SHARED]);
    let _ = stop.send(());
}

/// Runs the binary with these arguments and environment; returns (success, stderr).
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .env("CALLBOT_EVENTS_STORE", "memory");
    for var in [
        "CALLBOT_API_KEY",
        "CALLBOT_API_KEY_FILE",
        "CALLBOT_TENANTS_FILE",
        "CALLBOT_CALLER_TOKENS_FILE",
        "CALLBOT_ALLOW_CALLER_API_KEY",
        "CALLBOT_UPSTREAM_URL",
        "CALLBOT_TEST_UNSET_TENANT_KEY",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_binary_refuses_a_bad_tenants_file_or_a_conflicting_flag_in_one_line() {
    let secrets = Secrets::new();
    secrets.write("key", "SECRETKEYCONTENT42");
    secrets.write(
        "bad.yaml",
        "tenants:\n  - name: a\n    api_key_file: key\n  - name: b\n    api_key_file: key\n    callers:\n      - dns: b.svc\n      - bearer_sha256: not-a-digest\n",
    );
    secrets.write("unset.yaml", "tenants:\n  - name: a\n    api_key_env: CALLBOT_TEST_UNSET_TENANT_KEY\n");
    secrets.write("good.yaml", "tenants:\n  - name: a\n    api_key_file: key\n");
    let paths: Vec<String> =
        ["bad.yaml", "unset.yaml", "good.yaml", "key"].iter().map(|f| secrets.path(f).display().to_string()).collect();
    let [bad, unset, good, key] = [paths[0].as_str(), paths[1].as_str(), paths[2].as_str(), paths[3].as_str()];
    let conflict = "--tenants-file (CALLBOT_TENANTS_FILE) cannot be used with";
    /// Arguments, environment, and what the one line must say.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, String);
    let cases: Vec<Case> = vec![
        (vec!["--tenants-file", bad], vec![], "tenants[1].callers[1]: bearer_sha256 must be 64 hex digits".into()),
        (
            vec!["--tenants-file", unset],
            vec![],
            "tenants[0].api_key_env: CALLBOT_TEST_UNSET_TENANT_KEY is not set".into(),
        ),
        (vec!["--tenants-file", good, "--api-key", "k"], vec![], format!("{conflict} --api-key (CALLBOT_API_KEY)")),
        (
            vec!["--tenants-file", good],
            vec![("CALLBOT_API_KEY", "k")],
            format!("{conflict} --api-key (CALLBOT_API_KEY)"),
        ),
        (
            vec!["--tenants-file", good, "--caller-tokens-file", key],
            vec![],
            format!("{conflict} --caller-tokens-file (CALLBOT_CALLER_TOKENS_FILE)"),
        ),
        (
            vec![],
            vec![("CALLBOT_TENANTS_FILE", good), ("CALLBOT_ALLOW_CALLER_API_KEY", "true")],
            format!("{conflict} --allow-caller-api-key (CALLBOT_ALLOW_CALLER_API_KEY)"),
        ),
        (
            vec!["--api-key-file", key, "--api-key", "k"],
            vec![],
            "--api-key-file (CALLBOT_API_KEY_FILE) cannot be used with --api-key (CALLBOT_API_KEY)".into(),
        ),
        (
            vec!["--api-key-file", "/nonexistent/callbot.key"],
            vec![],
            "--api-key-file: cannot read /nonexistent/callbot.key".into(),
        ),
    ];
    for (args, env, want) in cases {
        let (ok, stderr) = run_binary(&args, &env);
        let case = format!("{args:?} {env:?}");
        assert!(!ok, "{case}: should not start");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{case}: one line, got: {stderr}");
        assert!(stderr.starts_with("callbot-facade: "), "{case}: {stderr}");
        assert!(stderr.contains(&want), "{case}: want {want:?} in {stderr}");
        assert!(!stderr.contains("SECRETKEYCONTENT42") && !stderr.contains("panicked"), "{case}: {stderr}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_binary_reads_keys_from_the_environment_and_reloads_on_sighup() {
    let secrets = Secrets::new();
    let yaml = |token: &str| {
        format!(
            "tenants:\n  - name: school\n    api_key_env: CALLBOT_TEST_SCHOOL_KEY\n    callers:\n      - {}\n",
            bearer(token)
        )
    };
    secrets.write("tenants.yaml", &yaml("token-1"));
    let tenants = secrets.path("tenants.yaml");
    let mut child = Reaped::new(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"])
            .env("CALLBOT_EVENTS_STORE", "memory")
            .arg("--tenants-file")
            .arg(&tenants)
            // Never polled during the test: only SIGHUP can make it re-read the file.
            .args(["--secrets-poll-interval", "1h"])
            .env("CALLBOT_TEST_SCHOOL_KEY", "SCHOOLKEYFROMENV42")
            .env("RUST_LOG", "info")
            .env_remove("CALLBOT_UPSTREAM_URL")
            .env_remove("CALLBOT_API_KEY")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut rx = crate::lines_of(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    let port = loop {
        let line =
            tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("a log line").expect("running");
        let serving = serde_json::from_str::<Value>(&line).ok().filter(|v| v["message"] == "serving");
        lines.push(line);
        if let Some(v) = serving {
            break v["grpc"].as_str().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let mut client = CallBotServiceClient::new(channel);
    assert!(!list_ids(&mut client, &As::token("token-1")).await.unwrap().is_empty());

    secrets.write("tenants.yaml", &yaml("token-2"));
    let status = Command::new("kill").arg("-HUP").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    eventually("the SIGHUP reload lets token-2 in", || {
        let mut client = client.clone();
        async move { list_ids(&mut client, &As::token("token-2")).await.is_ok() }
    })
    .await;
    let err = list_ids(&mut client, &As::token("token-1")).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "CALLER_UNAUTHENTICATED");

    // The log says so: the signal, then the reload (the reader thread may lag the process).
    while !lines.iter().any(|l| l.contains("\"reloaded\"")) {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(line)) => lines.push(line),
            _ => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let all = lines.join("\n");
    assert!(all.contains("SIGHUP received"), "{all}");
    assert!(all.contains("\"reloaded\""), "{all}");
    // Access lines carry the tenant's name (the key never appears anywhere).
    let access = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "rpc" && v["method"].as_str().is_some_and(|m| m.ends_with("/ListScripts")));
    assert_eq!(access.as_ref().map(|v| &v["tenant"]), Some(&Value::from("school")), "{all}");
    assert!(!all.contains("SCHOOLKEYFROMENV42"), "{all}");
}

/// A stream of calls, `tasks` loops of CreateSession and GetScript of the shared script, each
/// with the current caller token, until stopped: every failure is kept.
struct Load {
    token: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    /// Calls finished per loop, so that a token switch can wait for the calls begun before it.
    done: Arc<Vec<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(client: &Client, tasks: usize, token: &str) -> Load {
        let token = Arc::new(Mutex::new(token.to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let done: Arc<Vec<AtomicU64>> = Arc::new((0..tasks).map(|_| AtomicU64::new(0)).collect());
        let tasks = (0..tasks)
            .map(|i| {
                let (mut client, token, stop, done) = (client.clone(), token.clone(), stop.clone(), done.clone());
                tokio::spawn(async move {
                    let (mut ok, mut failures) = (0u64, Vec::new());
                    let mut n = i;
                    while !stop.load(Ordering::SeqCst) {
                        let current = token.lock().unwrap().clone();
                        let who = As::token(&current);
                        let result = if n % 2 == 0 {
                            create_session(&mut client, &who, SHARED).await.map(|_| ())
                        } else {
                            get_script(&mut client, &who, SHARED).await.map(|_| ())
                        };
                        match result {
                            Ok(()) => ok += 1,
                            Err(e) => failures.push(format!("{current}: {e:?}")),
                        }
                        n += 1;
                        done[i].fetch_add(1, Ordering::SeqCst);
                    }
                    (ok, failures)
                })
            })
            .collect();
        Load { token, stop, done, tasks }
    }

    /// Switches the callers to `token`; returns once every call begun with the old one is over.
    async fn switch_token(&self, token: &str) {
        *self.token.lock().unwrap() = token.to_owned();
        let seen: Vec<u64> = self.done.iter().map(|d| d.load(Ordering::SeqCst)).collect();
        eventually("every loop finished its call with the old token", || {
            let done = self.done.clone();
            let seen = seen.clone();
            async move { done.iter().zip(&seen).all(|(d, s)| d.load(Ordering::SeqCst) > *s) }
        })
        .await;
    }

    /// Stops the loops: (calls that succeeded, the failures).
    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut ok, mut failures) = (0, Vec::new());
        for task in self.tasks {
            let (n, f) = task.await.unwrap();
            ok += n;
            failures.extend(f);
        }
        (ok, failures)
    }
}

/// Rotates the caller token `token-old` -> `token-new` the way it is done without a failed
/// call: the new one listed beside the old, the callers switched, the old one removed; returns
/// once the old one is refused. `list` writes the file for the tokens given.
async fn rotate_caller_token(app: &TestApp, load: &Load, list: impl Fn(&[&str])) {
    list(&["token-old", "token-new"]);
    eventually("the new token is accepted", || {
        let mut client = app.client.clone();
        async move { get_script(&mut client, &As::token("token-new"), SHARED).await.is_ok() }
    })
    .await;
    load.switch_token("token-new").await;
    list(&["token-new"]);
    eventually("the old token is refused", || {
        let mut client = app.client.clone();
        async move {
            let err = get_script(&mut client, &As::token("token-old"), SHARED).await.err();
            err.is_some_and(|e| e.code() == Code::Unauthenticated && reason(&e) == "CALLER_UNAUTHENTICATED")
        }
    })
    .await;
}

/// Waits until the calls see the catalogue of `key-new` (its own script appears).
async fn wait_for_the_new_key(app: &TestApp) {
    eventually("calls use the new key", || {
        let mut client = app.client.clone();
        async move { get_script(&mut client, &As::token("token-new"), "new-only").await.is_ok() }
    })
    .await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_tenant_caller_token_and_key_under_load_fails_no_call() {
    let mut keys = SecretVolume::new(&[("school.key", "key-old")]);
    let secrets = Secrets::new();
    let key_file = keys.path("school.key");
    let write_tenants = |tokens: &[&str]| {
        let callers = tokens.iter().map(|t| bearer(t)).collect::<Vec<_>>();
        secrets.write("tenants.yaml", &tenants_yaml(&[("school", key_file.clone(), callers)]));
    };
    write_tenants(&["token-old"]);
    let app = spawn_tenants(SimConfig::default(), &secrets.path("tenants.yaml")).await;
    app.sim.set_scripts_for("key-old", &catalogue("old-only")).await;
    app.sim.set_scripts_for("key-new", &catalogue("new-only")).await;

    let load = Load::start(&app.client, 8, "token-old");
    tokio::time::sleep(Duration::from_millis(300)).await;
    rotate_caller_token(&app, &load, write_tenants).await;
    // The tenant's key, swapped as Kubernetes updates a mounted Secret.
    let auth_calls = app.sim.stats().await["auth_calls"].as_u64().unwrap();
    keys.publish(&[("school.key", "key-new")]);
    wait_for_the_new_key(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failures) = load.stop().await;

    assert!(failures.is_empty(), "{} calls failed with a valid credential: {failures:?}", failures.len());
    assert!(ok >= 40, "only {ok} calls");
    let stats = app.sim.stats().await;
    assert!(stats["auth_calls"].as_u64().unwrap() > auth_calls, "the new key got a token of its own: {stats}");
    assert_eq!(stats["unauthorized"], 0, "{stats}");
    let sessions = app.sim.sessions().await;
    let (first, last) = (&sessions[0]["api_key_id"], &sessions[sessions.len() - 1]["api_key_id"]);
    assert_ne!(first, last, "sessions after the rotation go out with the new key");
    let text = scrape(&app).await;
    assert_eq!(value(&text, &reload_series("reload_failures", "tenants_file")), Some(0.0), "{text}");
    assert!(value(&text, &reload_series("reloads", "tenants_file")).unwrap() >= 3.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_caller_tokens_file_and_the_api_key_file_under_load_fails_no_call() {
    let secrets = Secrets::new();
    secrets.write("tokens", "token-old\n");
    secrets.write("api.key", "key-old\n");
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.api_key = None;
        s.upstream.api_key_file = Some(secrets.path("api.key"));
        s.security.caller_tokens_file = Some(secrets.path("tokens"));
        s.security.secrets_poll_interval = POLL;
    })
    .await;
    app.sim.set_scripts_for("key-old", &catalogue("old-only")).await;
    app.sim.set_scripts_for("key-new", &catalogue("new-only")).await;

    let load = Load::start(&app.client, 8, "token-old");
    tokio::time::sleep(Duration::from_millis(300)).await;
    rotate_caller_token(&app, &load, |tokens: &[&str]| secrets.write("tokens", &format!("{}\n", tokens.join("\n"))))
        .await;
    let auth_calls = app.sim.stats().await["auth_calls"].as_u64().unwrap();
    secrets.write("api.key", "key-new\n");
    wait_for_the_new_key(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failures) = load.stop().await;

    assert!(failures.is_empty(), "{} calls failed with a valid credential: {failures:?}", failures.len());
    assert!(ok >= 40, "only {ok} calls");
    let stats = app.sim.stats().await;
    assert!(stats["auth_calls"].as_u64().unwrap() > auth_calls, "the new key got a token of its own: {stats}");
    let text = scrape(&app).await;
    assert_eq!(value(&text, &reload_series("reloads", "api_key_file")), Some(1.0), "{text}");
    assert!(value(&text, &reload_series("reloads", "caller_tokens_file")).unwrap() >= 2.0, "{text}");
    assert_eq!(value(&text, &reload_series("reload_failures", "caller_tokens_file")), Some(0.0), "{text}");
}

#[tokio::test]
async fn a_bad_reload_keeps_the_last_good_state_and_says_so() {
    let secrets = Secrets::new();
    secrets.write("school.key", "school-key");
    let good = |token: &str| tenants_yaml(&[("school", secrets.path("school.key"), vec![bearer(token)])]);
    secrets.write("tenants.yaml", &good("token-1"));
    let mut app = spawn_tenants(SimConfig::default(), &secrets.path("tenants.yaml")).await;
    let failures = reload_series("reload_failures", "tenants_file");
    get_script(&mut app.client, &As::token("token-1"), "64915bc76a690c0edad14723").await.unwrap();

    // A bad new file (token-2 listed, but an entry is malformed): the old state stays whole.
    let bad = format!("{}      - dns: '*.wildcard'\n", good("token-2"));
    secrets.write("tenants.yaml", &bad);
    wait_for_series(&app, &failures, 1.0).await;
    get_script(&mut app.client, &As::token("token-1"), "64915bc76a690c0edad14723").await.unwrap();
    let err = get_script(&mut app.client, &As::token("token-2"), "64915bc76a690c0edad14723").await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "CALLER_UNAUTHENTICATED");

    // A file missing for a moment (deleted, then written again) is no failure.
    std::fs::remove_file(secrets.path("tenants.yaml")).unwrap();
    tokio::time::sleep(POLL * 2).await;
    secrets.write("tenants.yaml", &good("token-2"));
    eventually("token-2 is let in", || {
        let mut client = app.client.clone();
        async move { get_script(&mut client, &As::token("token-2"), "64915bc76a690c0edad14723").await.is_ok() }
    })
    .await;
    let text = scrape(&app).await;
    assert_eq!(value(&text, &failures), Some(1.0), "{text}");
    assert_eq!(value(&text, &reload_series("reloads", "tenants_file")), Some(1.0), "{text}");

    // A key file that goes and stays gone: a failure, and the last good key stays in use.
    std::fs::remove_file(secrets.path("school.key")).unwrap();
    secrets.write("tenants.yaml", &good("token-3"));
    wait_for_series(&app, &failures, 2.0).await;
    get_script(&mut app.client, &As::token("token-2"), "64915bc76a690c0edad14723").await.unwrap();
}

#[tokio::test]
async fn a_reload_that_removes_a_caller_ends_its_open_watch_streams_and_no_one_elses() {
    let secrets = Secrets::new();
    secrets.write("a.key", "key-a\n");
    secrets.write("b.key", "key-b\n");
    let file = |a_tokens: &[&str]| {
        tenants_yaml(&[
            ("school", secrets.path("a.key"), a_tokens.iter().map(|t| bearer(t)).collect()),
            ("clinic", secrets.path("b.key"), vec![bearer("token-b")]),
        ])
    };
    secrets.write("tenants.yaml", &file(&["token-a", "token-a2"]));
    let app = spawn_tenants(SimConfig::default(), &secrets.path("tenants.yaml")).await;
    let watch = |who: As| {
        let mut client = app.client.clone();
        async move {
            let request = who.request(pb::WatchCallEventsRequest { from_start: true, ..Default::default() });
            client.watch_call_events(request).await.unwrap().into_inner()
        }
    };
    let mut revoked = watch(As::token("token-a")).await;
    let mut kept = watch(As::token("token-a2")).await;
    let mut other = watch(As::token("token-b")).await;
    // token-a leaves the file; token-a2 stays with the same tenant.
    secrets.write("tenants.yaml", &file(&["token-a2"]));
    let err = tokio::time::timeout(Duration::from_secs(5), revoked.message()).await.expect("ended").unwrap_err();
    assert_status(&err, Code::Unauthenticated, "CALLER_REVOKED");
    // The others stay open.
    for stream in [&mut kept, &mut other] {
        assert!(tokio::time::timeout(Duration::from_millis(300), stream.message()).await.is_err(), "still open");
    }
    // And the revoked token opens nothing new.
    let mut client = app.client.clone();
    let request = As::token("token-a").request(pb::WatchCallEventsRequest { from_start: true, ..Default::default() });
    assert_status(
        &client.watch_call_events(request).await.unwrap_err(),
        Code::Unauthenticated,
        "CALLER_UNAUTHENTICATED",
    );
}
