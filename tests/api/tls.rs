//! TLS and mTLS with certificates generated per test (rcgen): server-only TLS refuses plaintext
//! and unknown servers' clients; with `--tls-client-ca` a client needs a certificate from that CA;
//! the binary refuses to start on unusable certificate or key files.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use super::*;

/// A certificate authority: its PEM certificate and what signs with it.
pub(super) struct Ca {
    pub(super) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub(super) fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A client certificate and its key (PEM) with exactly these subject alternative names
    /// (URI SANs for SPIFFE IDs, DNS SANs), for the tenants tests.
    pub(super) fn client_with_sans(&self, sans: Vec<SanType>) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "tenant client");
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf certificate and its key (PEM), for these names, for a server or a client.
    pub(super) fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("client"));
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The files a TLS facade is started with.
pub(super) struct Pki {
    dir: tempfile::TempDir,
    pub(super) ca: Ca,
}

impl Pki {
    pub(super) fn new() -> Pki {
        let pki = Pki { dir: tempfile::tempdir().unwrap(), ca: Ca::new("callbot test CA") };
        let (cert, key) = pki.ca.leaf(&["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        pki.write("server.pem", &cert);
        pki.write("server.key", &key);
        pki.write("ca.pem", &pki.ca.pem);
        pki
    }

    pub(super) fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    pub(super) fn tls_files(&self, mtls: bool) -> callbot_facade::config::TlsFiles {
        callbot_facade::config::TlsFiles {
            cert: Some(self.path("server.pem")),
            key: Some(self.path("server.key")),
            client_ca: mtls.then(|| self.path("ca.pem")),
        }
    }
}

/// A TLS facade in front of its own simulator; stopped when dropped.
struct TlsApp {
    addr: SocketAddr,
    _sim: TestSim,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TlsApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn spawn_tls_app(pki: &Pki, mtls: bool) -> TlsApp {
    let sim = TestSim::start(SimConfig::default()).await;
    let mut settings = test_settings(&sim.url);
    settings.security.tls = pki.tls_files(mtls);
    let app = Application::build(settings).await.expect("build with TLS");
    let addr = app.grpc_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TlsApp { addr, _sim: sim, stop: Some(tx) }
}

/// A TLS channel trusting `ca_pem`, presenting `identity` when given.
pub(super) async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// A health check over `channel` (whatever fails: the connection or the call).
async fn health(channel: Result<Channel, String>) -> Result<ServingStatus, String> {
    let mut client = HealthClient::new(channel?);
    let answer = client.check(HealthCheckRequest { service: String::new() }).await.map_err(|e| format!("{e:?}"))?;
    Ok(answer.into_inner().status())
}

/// A real RPC: GetScript of a script the simulator has.
async fn get_script(channel: Channel) -> Result<pb::Script, Status> {
    let mut client = CallBotServiceClient::new(channel);
    let answer = client.get_script(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() }).await?;
    Ok(answer.into_inner().script.expect("script"))
}

#[tokio::test]
async fn server_tls_serves_a_client_that_trusts_its_ca_and_no_one_else() {
    let pki = Pki::new();
    let app = spawn_tls_app(&pki, false).await;

    let channel = tls_channel(app.addr, &pki.ca.pem, None).await.expect("TLS client with the CA connects");
    assert_eq!(health(Ok(channel.clone())).await, Ok(ServingStatus::Serving));
    assert_eq!(get_script(channel).await.unwrap().id, "64915bc76a690c0edad14723");

    // Plaintext h2c against the TLS port: no answer.
    let plaintext = async {
        let channel = Channel::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string());
        health(channel).await
    };
    let got = tokio::time::timeout(Duration::from_secs(10), plaintext).await.expect("plaintext attempt ends");
    assert!(got.is_err(), "plaintext client must fail against TLS: {got:?}");

    // A client that does not trust the server's CA refuses the server.
    let stranger = Ca::new("some other CA");
    let got = health(tls_channel(app.addr, &stranger.pem, None).await).await;
    let err = got.expect_err("an untrusted server certificate must fail");
    assert!(err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_configured_ca() {
    let pki = Pki::new();
    let app = spawn_tls_app(&pki, true).await;
    let (good_cert, good_key) = pki.ca.leaf(&["payments-service"], ExtendedKeyUsagePurpose::ClientAuth);
    let rogue_ca = Ca::new("rogue CA");
    let (rogue_cert, rogue_key) = rogue_ca.leaf(&["payments-service"], ExtendedKeyUsagePurpose::ClientAuth);

    // No client certificate: refused by the server's handshake (TLS 1.3 alert
    // certificate_required), even for health: mTLS guards the connection, not the method.
    let err = health(tls_channel(app.addr, &pki.ca.pem, None).await).await.expect_err("no client certificate");
    assert!(err.contains("CertificateRequired"), "{err}");

    // A client certificate from another CA: refused (alert unknown_ca), for health and a real RPC.
    let err = health(tls_channel(app.addr, &pki.ca.pem, Some((&rogue_cert, &rogue_key))).await)
        .await
        .expect_err("a certificate from the wrong CA");
    assert!(err.contains("UnknownCA"), "{err}");
    let rogue = tls_channel(app.addr, &pki.ca.pem, Some((&rogue_cert, &rogue_key))).await;
    let err = match rogue {
        Err(connect_error) => connect_error,
        Ok(channel) => format!("{:?}", get_script(channel).await.expect_err("no RPC with a rogue certificate")),
    };
    assert!(err.contains("UnknownCA"), "{err}");

    // A client certificate from the configured CA: served, health and a real RPC.
    let channel = tls_channel(app.addr, &pki.ca.pem, Some((&good_cert, &good_key))).await.expect("mTLS connects");
    assert_eq!(health(Ok(channel.clone())).await, Ok(ServingStatus::Serving));
    let script = get_script(channel).await.unwrap();
    assert_eq!(script.id, "64915bc76a690c0edad14723");
    assert!(!script.name.is_empty());
}

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");

/// Runs the binary with these TLS files; returns (success, stderr).
fn run_with_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("CALLBOT_EVENTS_STORE", "memory")
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env_remove("CALLBOT_UPSTREAM_URL")
        .env_remove("CALLBOT_TLS_CLIENT_CA")
        .env("RUST_LOG", "info");
    if let Some(ca) = client_ca {
        cmd.arg("--tls-client-ca").arg(ca);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_binary_refuses_to_start_with_unusable_tls_files() {
    let pki = Pki::new();
    pki.write("garbage.pem", "this is not a certificate\n");
    pki.write("garbage.key", "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
    let (server, key) = (pki.path("server.pem"), pki.path("server.key"));
    let (garbage_cert, garbage_key, missing) =
        (pki.path("garbage.pem"), pki.path("garbage.key"), pki.path("does-not-exist.pem"));
    let cases: [(&Path, &Path, Option<&Path>, &str); 6] = [
        (&missing, &key, None, "cannot read the certificate"),
        (&server, &missing, None, "cannot read the private key"),
        (&server, &key, Some(&missing), "cannot read the client CA"),
        (&garbage_cert, &key, None, "unusable certificate"),
        (&server, &garbage_key, None, "unusable certificate"),
        (&server, &key, Some(&garbage_cert), "unusable certificate"),
    ];
    for (cert, key, client_ca, want) in cases {
        let (ok, stderr) = run_with_tls(cert, key, client_ca);
        let case = format!("{}, {}, {client_ca:?}", cert.display(), key.display());
        assert!(!ok, "{case}: should not start");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{case}: one line, got: {stderr}");
        assert!(stderr.starts_with("callbot-facade: TLS configuration: "), "{case}: {stderr}");
        assert!(stderr.contains(want), "{case}: want {want:?} in {stderr}");
        assert!(!stderr.contains("panicked"), "{case}: {stderr}");
    }
}

/// The upstream over HTTPS: the client speaks TLS to it and checks its certificate against the
/// public roots. An upstream whose certificate chains to a private CA (here a TLS facade, with
/// its own CA) is refused in the handshake: nothing was sent, so the call is UPSTREAM_UNAVAILABLE
/// (a CreateSession too: never reached, not outcome unknown), and no message names the key.
#[tokio::test]
async fn an_https_upstream_with_an_untrusted_certificate_is_never_reached() {
    let pki = Pki::new();
    let upstream = spawn_tls_app(&pki, false).await;
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.url = Some(format!("https://localhost:{}", upstream.addr.port()));
    })
    .await;
    let err = app
        .client
        .clone()
        .get_script(pb::GetScriptRequest { script_id: "64915bc76a690c0edad14723".into() })
        .await
        .unwrap_err();
    assert_status(&err, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    let request = pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: vec![pb::Contact { phone: "0912345678".into(), ..Default::default() }],
        ..Default::default()
    };
    let err = app.client.clone().create_session(request).await.unwrap_err();
    assert_status(&err, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    assert!(!format!("{err:?}").contains(TEST_KEY), "{err:?}");
}
