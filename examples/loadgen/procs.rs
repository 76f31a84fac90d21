//! The child processes a run measures (`callbot-facade simulate` and the facade, or whatever
//! `--facade-bin` names in its place), and what `/proc` says about them: CPU time, RSS, the load
//! average.

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::{API_KEY, Args};

/// Starts `bin simulate` on a free port (its logs at `log_level`, discarded) and waits until it
/// accepts connections; killed when the handle is dropped.
pub(crate) async fn start_simulator(
    bin: &Path,
    log_level: &str,
) -> Result<(Child, SocketAddr), Box<dyn std::error::Error>> {
    let addr = free_addr()?;
    let mut sim = Command::new(bin)
        .args(["simulate", "--listen", &addr.to_string()])
        .env("RUST_LOG", log_level)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_tcp(addr, &mut sim).await?;
    Ok((sim, addr))
}

/// Starts `program` as the facade in front of `sim_url` (free ports, `extra` flags then
/// `--facade-arg`s, logs per `--facade-log-level`/`--facade-log`) and waits for SERVING; returns
/// it, its gRPC address and the time from spawn to SERVING. Killed when the handle is dropped.
pub(crate) async fn start_facade(
    program: &Path,
    args: &Args,
    sim_url: &str,
    extra: &[&str],
) -> Result<(Child, SocketAddr, Duration), Box<dyn std::error::Error>> {
    let grpc_addr = free_addr()?;
    let admin_addr = free_addr()?;
    let log = match &args.facade_log {
        Some(p) => Stdio::from(std::fs::File::create(p)?),
        None => Stdio::null(),
    };
    let started = Instant::now();
    let mut facade = Command::new(program)
        .args(["--listen", &grpc_addr.to_string(), "--admin-listen", &admin_addr.to_string()])
        .args(["--upstream-url", sim_url, "--api-key", API_KEY, "--caller-auth", "mesh"])
        .args(extra)
        .args(&args.facade_args)
        // No data dir in the current folder (a --events-store in --facade-args wins: flags over env).
        .env("CALLBOT_EVENTS_STORE", "memory")
        .env("RUST_LOG", &args.facade_log_level)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    wait_serving(grpc_addr, &mut facade).await?;
    Ok((facade, grpc_addr, started.elapsed()))
}

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> std::io::Result<SocketAddr> {
    StdListener::bind("127.0.0.1:0")?.local_addr()
}

async fn wait_tcp(addr: SocketAddr, child: &mut Child) -> Result<(), Box<dyn std::error::Error>> {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            return Err(format!("child exited: {status}").into());
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!("nothing listening on {addr} after 10 s").into())
}

/// Polls `grpc.health.v1.Health/Check` until it answers SERVING.
async fn wait_serving(addr: SocketAddr, child: &mut Child) -> Result<(), Box<dyn std::error::Error>> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let until = Instant::now() + Duration::from_secs(10);
    let endpoint = Channel::from_shared(format!("http://{addr}"))?;
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            return Err(format!("facade exited: {status}").into());
        }
        if let Ok(channel) = endpoint.connect().await {
            let mut health = HealthClient::new(channel);
            loop {
                match health.check(HealthCheckRequest { service: String::new() }).await {
                    Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
                    _ if Instant::now() >= until => break,
                    _ => tokio::time::sleep(Duration::from_micros(200)).await,
                }
            }
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Err("the facade did not report SERVING within 10 s".into())
}

/// utime + stime of a process, in seconds (`pid` may be `self`).
pub(crate) fn proc_cpu(pid: &str, clk_tck: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces) start at field 3, "state".
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / clk_tck
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in KiB.
pub(crate) fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// The 1-minute load average.
pub(crate) fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ; 100 on Linux).
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
