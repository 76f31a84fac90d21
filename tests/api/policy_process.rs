//! The calling policy on the binary across a crash (issue 23, docs/policy.md): a facade process on a
//! data dir (`--events-store disk`: the counts and the added do-not-call numbers in its database)
//! admits a number and lists another, is killed with `kill -9`, and the next process on the same data
//! dir refuses both. Then a bad policy file under the running process: one log line, the last good rules.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use tonic::Code;

use super::events::free_addr;
use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");
const SCRIPT: &str = "64915bc76a690c0edad14723";

/// One facade process at a time on `data_dir` with the policy file, its ports kept across restarts.
struct Facade {
    child: Option<Reaped>,
    args: Vec<String>,
    grpc: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Facade {
    fn new(data_dir: &Path, policy: &Path, upstream: &str, log: PathBuf) -> Facade {
        let (grpc, admin, hook) = (free_addr(), free_addr(), free_addr());
        let args = [
            ("--listen", grpc.to_string()),
            ("--admin-listen", admin.to_string()),
            ("--webhook-listen", hook.to_string()),
            ("--webhook-secret", "policy-process-test-webhook-secret-0123".to_owned()),
            ("--upstream-url", upstream.to_owned()),
            ("--caller-auth", "mesh".to_owned()),
            ("--api-key", TEST_KEY.to_owned()),
            ("--events-store", "disk".to_owned()),
            ("--data-dir", data_dir.display().to_string()),
            ("--calling-policy", policy.display().to_string()),
            ("--secrets-poll-interval", "50ms".to_owned()),
        ];
        let args = args.into_iter().flat_map(|(flag, value)| [flag.to_owned(), value]).collect();
        Facade { child: None, args, grpc, admin, log }
    }

    /// Starts a process with its policy clock at `clock` and waits until it is ready (20 s at most).
    async fn spawn(&mut self, clock: &str) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            .args(["--policy-clock-start", clock])
            .env_clear()
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(Reaped::new(child));
        let ready = format!("http://{}/readyz", self.admin);
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                panic!("the facade exited ({status}): {}", self.log());
            }
            if reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(tokio::time::Instant::now() < until, "not ready within 20 s: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no drain, no flush on the way out.
    fn sigkill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }

    async fn client(&self) -> CallBotServiceClient<Channel> {
        CallBotServiceClient::new(
            Channel::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.unwrap(),
        )
    }

    async fn metric(&self, series: &str) -> f64 {
        let page = reqwest::get(format!("http://{}/metrics", self.admin)).await.unwrap().text().await.unwrap();
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series}"))
    }
}

fn ad(phones: &[&str], key: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: SCRIPT.to_owned(),
        contacts: phones.iter().map(|p| pb::Contact { phone: (*p).to_owned(), ..Default::default() }).collect(),
        external_session_id: key.to_owned(),
        purpose: pb::CallPurpose::Advertising as i32,
        ..Default::default()
    }
}

fn policy(dnc: &Path, zone: &str) -> String {
    format!(
        "policies:\n  - tenant: default\n    time_zone: {zone}\n    do_not_call_files: [{}]\n    \
         advertising: {{preset: vn-decree-91}}\n",
        dnc.display()
    )
}

/// Replaces `path` whole (a rename), so that the reloader never reads half a file.
fn replace(path: &Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[tokio::test]
async fn a_process_killed_with_sigkill_leaves_its_counts_and_added_numbers_to_the_next_one() {
    let sim = TestSim::start(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dnc = dir.path().join("dnc.txt");
    replace(&dnc, "# registry\n");
    let policy_path = dir.path().join("policy.yaml");
    replace(&policy_path, &policy(&dnc, "Asia/Ho_Chi_Minh"));
    let mut facade = Facade::new(&dir.path().join("data"), &policy_path, &sim.url, dir.path().join("facade.log"));

    // Monday 10:00 local (03:00 UTC): the number is admitted, another is listed by AddDoNotCall.
    facade.spawn("2027-01-04T10:00:00+07:00").await;
    let mut client = facade.client().await;
    let s = client.create_session(ad(&["0912345678"], "before")).await.unwrap().into_inner().session.unwrap();
    assert!(s.rejected_contacts.is_empty(), "{s:?}");
    let added = client
        .add_do_not_call(pb::AddDoNotCallRequest { phones: vec!["+84912345670".into()], reason: "asked".into() })
        .await
        .unwrap();
    assert_eq!(added.into_inner().added, 1);
    facade.sigkill();

    // The next process, an hour later by its clock: the number is over the cap until 24 h after the
    // first call, the listed number is refused, a third number goes.
    facade.spawn("2027-01-04T11:00:00+07:00").await;
    let mut client = facade.client().await;
    let s = client.create_session(ad(&["0912345678", "0912345670", "0912345671"], "after")).await.unwrap();
    let s = s.into_inner().session.unwrap();
    let refused: Vec<(&str, &str)> =
        s.rejected_contacts.iter().map(|r| (r.phone.as_str(), r.reason.as_str())).collect();
    assert_eq!(refused, [("0912345678", "FREQUENCY_CAP"), ("0912345670", "DO_NOT_CALL")]);
    let first_call = 1_799_031_600; // 2027-01-04T03:00:00Z
    let after = s.rejected_contacts[0].callable_after.expect("callable_after").seconds;
    assert!((first_call + 86_400..first_call + 86_400 + 30).contains(&after), "callable_after {after}");
    let err = client.create_session(ad(&["0912345678"], "again")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "NO_CALLABLE_CONTACTS");
    let sent = sim.sessions().await;
    assert_eq!(sent.len(), 2, "the refused numbers were not sent");
    assert_eq!(sent[1]["body"]["contact_info"].as_array().unwrap().len(), 1);

    // A bad policy file under the running process: one warning naming the file and the entry,
    // counted, and the last good rules still refuse the number.
    replace(&policy_path, &policy(&dnc, "Asia/Saigon_Typo"));
    let failures = "callbot_config_reload_failures_total{file=\"calling_policy\"}";
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while facade.metric(failures).await < 1.0 {
        assert!(tokio::time::Instant::now() < until, "the bad file was not counted: {}", facade.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The log writer is asynchronous: the line may follow the count by a moment.
    while !facade.log().contains("reload failed") {
        assert!(tokio::time::Instant::now() < until, "no warning: {}", facade.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = facade.log();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("reload failed")).collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains("calling_policy") && warned[0].contains("Asia/Saigon_Typo"), "{}", warned[0]);
    let err = client.create_session(ad(&["0912345678"], "after-bad")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "NO_CALLABLE_CONTACTS");
    facade.sigkill();
}
