//! Benchmark, not a test: streams a generated campaign (default 1,000,000 contacts, chunks of
//! 500) through a facade running as its own process in front of a simulator process, then
//! prints the time taken and the facade's peak resident memory (`VmHWM` of
//! `/proc/<pid>/status`), next to its peak before the campaign. Constant memory means the peak
//! barely moves whatever the contact count.
//!
//! ```sh
//! cargo build --release && cargo run --release --example campaign_memory -- [CONTACTS] [CHUNK] [BIN]
//! ```
//! `BIN` defaults to `target/release/callbot-facade`. Linux only (reads `/proc`).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use callbot_facade::pb::{self, call_bot_service_client::CallBotServiceClient, create_campaign_request::Item};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Contacts per request message.
const BATCH: usize = 1_000;

/// Kills the child when dropped, so an early error leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A `kB` line of `/proc/<pid>/status`, in MiB.
fn proc_status_mib(pid: u32, key: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn connect(url: &str) -> CallBotServiceClient<Channel> {
    for _ in 0..100 {
        if let Ok(channel) = Channel::from_shared(url.to_owned()).expect("url").connect().await {
            return CallBotServiceClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the facade did not come up at {url}");
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let contacts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let chunk: i32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let bin = args.next().unwrap_or_else(|| "target/release/callbot-facade".into());

    let sim_port = free_port();
    let _sim = Guard(
        Command::new(&bin)
            .args(["simulate", "--listen", &format!("127.0.0.1:{sim_port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulator"),
    );
    let port = free_port();
    let facade = Guard(
        Command::new(&bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", "127.0.0.1:0"])
            .args([
                "--upstream-url",
                &format!("http://127.0.0.1:{sim_port}"),
                "--api-key",
                "bench-key",
                "--caller-auth",
                "mesh",
            ])
            .env("CALLBOT_EVENTS_STORE", "memory")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the facade"),
    );
    let pid = facade.0.id();
    let mut client = connect(&format!("http://127.0.0.1:{port}")).await;
    let idle = proc_status_mib(pid, "VmHWM:");

    let (tx, rx) = mpsc::channel(4);
    let spec = pb::CampaignSpec {
        campaign_id: format!("bench-{}", std::process::id()),
        script_id: "64915bc76a690c0edad14723".into(),
        chunk_size: chunk,
        ..Default::default()
    };
    tx.send(pb::CreateCampaignRequest { item: Some(Item::Spec(spec)) }).await.expect("spec");
    tokio::spawn(async move {
        let mut next = 0usize;
        while next < contacts {
            let end = (next + BATCH).min(contacts);
            let batch = (next..end)
                .map(|i| pb::Contact {
                    phone: format!("09{i:08}"),
                    variables: [("tên thí sinh".to_owned(), format!("Nguyễn Văn {i}"))].into_iter().collect(),
                    ..Default::default()
                })
                .collect();
            let message = pb::CreateCampaignRequest { item: Some(Item::Batch(pb::ContactBatch { contacts: batch })) };
            if tx.send(message).await.is_err() {
                return;
            }
            next = end;
        }
    });

    let started = Instant::now();
    let mut answers = client.create_campaign(ReceiverStream::new(rx)).await.expect("call").into_inner();
    let (mut chunks, mut total, mut peak_seen) = (0u64, 0i64, idle);
    while let Some(answer) = answers.message().await.expect("answer") {
        chunks += 1;
        total = answer.contacts_total;
        if chunks % 200 == 0 {
            peak_seen = peak_seen.max(proc_status_mib(pid, "VmRSS:"));
            eprintln!("{total} contacts, {:.1} s, facade RSS {:.1} MiB", started.elapsed().as_secs_f64(), peak_seen);
        }
    }
    let elapsed = started.elapsed();
    let peak = proc_status_mib(pid, "VmHWM:");
    println!("contacts:            {total}");
    println!("chunks (sessions):   {chunks} of {chunk}");
    println!(
        "time:                {:.1} s ({:.0} contacts/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!("facade VmHWM idle:   {idle:.1} MiB");
    println!("facade VmHWM after:  {peak:.1} MiB");
}
