//! Every operator command against a secured facade: a tenants file (bearer token digests and
//! mTLS identities) behind TLS that requires a client certificate.

use std::{path::PathBuf, process::Stdio, time::Duration};

use rcgen::{SanType, string::Ia5String};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{tls::Pki, *};

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");
const SCRIPT: &str = "64915bc76a690c0edad14723";
const SPIFFE: &str = "spiffe://cluster.local/ns/grades/sa/notifier";
const TOKEN: &str = "school-token-7f3a";

struct Secured {
    _app: TestApp,
    pki: Pki,
    server: String,
}

impl Secured {
    /// The binary with `args`, the CA and the client certificate named `client` (`.pem`, `.key`).
    fn command(&self, client: &str, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(BIN);
        c.args(args);
        if !args.contains(&"--server") {
            c.arg("--server").arg(&self.server);
        }
        c.arg("--ca-cert")
            .arg(self.pki.path("ca.pem"))
            .arg("--client-cert")
            .arg(self.pki.path(&format!("{client}.pem")))
            .arg("--client-key")
            .arg(self.pki.path(&format!("{client}.key")))
            .env_remove("CALLBOT_SERVER")
            .env_remove("CALLBOT_TOKEN")
            .env_remove("CALLBOT_TOKEN_FILE");
        c
    }

    async fn run(&self, client: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            self.command(client, args).envs(env.iter().copied()).output(),
        )
        .await
        .unwrap()
        .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

/// A facade with mTLS and one tenant, `school`, reached by the bearer token or the SPIFFE ID.
async fn secured(scheme_less: bool) -> Secured {
    let pki = Pki::new();
    let dir = pki.path("");
    std::fs::write(dir.join("school.key"), "school-key").unwrap();
    let digest: String = Sha256::digest(TOKEN.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let yaml = format!(
        "tenants:\n  - name: school\n    api_key_file: {}\n    callers:\n      - bearer_sha256: {digest}\n      - spiffe: {SPIFFE}\n",
        dir.join("school.key").display()
    );
    std::fs::write(dir.join("tenants.yaml"), yaml).unwrap();
    let uri = |s: &str| SanType::URI(Ia5String::try_from(s).unwrap());
    let dns = |s: &str| SanType::DnsName(Ia5String::try_from(s).unwrap());
    for (name, sans) in [("listed", vec![uri(SPIFFE)]), ("stranger", vec![dns("stranger.svc")])] {
        let (cert, key) = pki.ca.client_with_sans(sans);
        std::fs::write(pki.path(&format!("{name}.pem")), cert).unwrap();
        std::fs::write(pki.path(&format!("{name}.key")), key).unwrap();
    }
    let tls = pki.tls_files(true);
    let tenants: PathBuf = dir.join("tenants.yaml");
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.api_key = None;
        s.security.tenants_file = Some(tenants);
        s.security.tls = tls;
    })
    .await;
    let port = app.addr.port();
    let server = if scheme_less { format!("localhost:{port}") } else { format!("https://localhost:{port}") };
    Secured { _app: app, pki, server }
}

#[tokio::test]
async fn cli_every_command_works_against_a_tenants_file_and_mtls() {
    let s = secured(false).await;
    // The certificate's SPIFFE ID names the tenant: no token needed.
    let (code, out, err) = s.run("listed", &["scripts"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("14 script(s)"), "{out}");
    // A certificate the tenants file does not list, and no token: refused, and said so.
    let (code, _, err) = s.run("stranger", &["scripts"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("Unauthenticated (CALLER_UNAUTHENTICATED)"), "{err}");
    // The same with the token: --token, CALLBOT_TOKEN, --token-file.
    let (code, out, err) = s.run("stranger", &["scripts", "--token", TOKEN], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("14 script(s)"), "{out}");

    let csv = s.pki.path("contacts.csv");
    std::fs::write(&csv, "phone,tên thí sinh,uB131frQEU,Kp7wZq2LmX,r9TdVh4sNa\n0912345001,An,1,2,3\n").unwrap();
    let token_file = s.pki.path("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (code, out, err) = s
        .run(
            "stranger",
            &["campaign", "--script", SCRIPT, "--csv", csv.to_str().unwrap(), "--campaign-id", "secured"],
            &[("CALLBOT_TOKEN_FILE", token_file.to_str().unwrap())],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let ids = out.lines().find_map(|l| l.strip_prefix("session ids (for report --session and watch --session): "));
    let session = ids.unwrap_or_else(|| panic!("no session ids in {out}")).to_owned();

    // This facade keeps no call events (no webhook receiver): the report is authorized and
    // finds nothing, where no token is refused.
    let (code, _, err) = s.run("stranger", &["report", "--session", &session], &[("CALLBOT_TOKEN", TOKEN)]).await;
    assert_eq!(code, 1);
    assert!(err.contains("NotFound (SESSION_NOT_FOUND)"), "{err}");
    let (code, _, err) = s.run("stranger", &["report", "--session", &session], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("CALLER_UNAUTHENTICATED"), "{err}");

    // watch: the stream opens (authorized) and says so on stderr; Ctrl-C ends it.
    let mut child = s
        .command("stranger", &["watch", "--session", &session])
        .env("CALLBOT_TOKEN", TOKEN)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap();
    assert_eq!(first.as_deref(), Some(format!("watching session {session} (Ctrl-C to stop)").as_str()));
    child.kill().await.unwrap();
    let (code, _, err) = s.run("stranger", &["watch", "--session", &session], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("CALLER_UNAUTHENTICATED") && !err.contains("watching"), "{err}");
}

#[tokio::test]
async fn cli_tls_flags_and_token_refusals() {
    let s = secured(true).await;
    // HOST:PORT with --ca-cert: TLS.
    let (code, out, err) = s.run("listed", &["scripts"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("14 script(s)"), "{out}");
    // The token file must exist, and it is named when it does not.
    let (code, _, err) = s.run("listed", &["scripts", "--token-file", "/nonexistent/token"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("--token-file: cannot read /nonexistent/token"), "{err}");
    // --token and --token-file: one or the other, named by clap.
    let (code, _, err) = s.run("listed", &["scripts", "--token", "a", "--token-file", "b"], &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("'--token <TOKEN>' cannot be used with '--token-file <FILE>'"), "{err}");
    // A secret is never echoed.
    let (code, _, err) = s.run("stranger", &["scripts", "--token", "wrong-secret-token"], &[]).await;
    assert_eq!(code, 1);
    assert!(!err.contains("wrong-secret-token"), "{err}");
    // Plain http:// with a client certificate: refused before connecting.
    let plain = s.server.replace("localhost", "http://localhost");
    let (code, _, err) = s.run("listed", &["scripts", "--server", &plain], &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--ca-cert and --client-cert need TLS: use an https:// URL"), "{err}");
}
