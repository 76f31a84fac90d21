//! One measured scenario: a fresh simulator and facade, then the same load (`--concurrency`
//! workers, one request after the other) through the facade and straight to the simulator's REST
//! API, each timed into an HDR histogram with failures counted by code. The direct path sends the
//! exact body the facade would, so the difference between the two is the facade's.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use callbot_facade::{
    pb::{self, call_bot_service_client::CallBotServiceClient},
    testing::{NewSession, SessionLimits, execute_body, parse_script_list},
};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::{
    API_KEY, Args, CALLER_ID, Rpc, Which,
    procs::{load1, proc_cpu, proc_status, start_facade, start_simulator},
    report::Report,
};

/// Facts about one facade process, outside any load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Startup {
    pub(crate) to_serving: Duration,
    pub(crate) idle_rss_kib: u64,
}

/// One scenario: a fresh simulator and facade, then the facade path and the direct path.
pub(crate) async fn scenario(
    args: &Args,
    bin: &Path,
    clk_tck: f64,
) -> Result<(Vec<Report>, Startup), Box<dyn std::error::Error>> {
    let (mut sim, sim_addr) = start_simulator(bin, "warn").await?;
    let sim_pid = sim.id().ok_or("simulator exited")?;
    let sim_url = format!("http://{sim_addr}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(usize::MAX).tcp_nodelay(true).build()?;
    if let Some(n) = args.scripts {
        let r = http.put(format!("{sim_url}/_sim/scripts")).body(format!("{{\"generate\": {n}}}")).send().await?;
        if !r.status().is_success() {
            return Err(format!("simulator refused the scripts: {}", r.status()).into());
        }
    }
    if let Some(ms) = args.upstream_delay_ms {
        let fault = format!("{{\"path\": \"/api/\", \"delay_ms\": {ms}, \"count\": 100000000}}");
        let r = http.post(format!("{sim_url}/_sim/faults")).body(fault).send().await?;
        if !r.status().is_success() {
            return Err(format!("simulator refused the fault: {}", r.status()).into());
        }
    }
    // The direct path's token, and the script GetScript asks for (the last one: a full scan).
    let token = direct_token(&http, &sim_url).await?;
    let scripts = {
        let body = direct_get(&http, &sim_url, &token).await?;
        parse_script_list(&body).map_err(|e| format!("script list: {e}"))?
    };
    let script_id = scripts.last().map(|s| s.id.clone()).ok_or("the simulator lists no script")?;
    let work = Arc::new(Work::new(args, script_id, scripts.len())?);

    // The facade.
    let (mut facade, grpc_addr, to_serving) =
        start_facade(args.facade_bin.as_deref().unwrap_or(bin), args, &sim_url, &[]).await?;
    let facade_pid = facade.id().ok_or("facade exited")?;
    let startup = Startup { to_serving, idle_rss_kib: proc_status(facade_pid, "VmRSS:") };

    let mut reports = Vec::new();
    if args.path != Which::Direct {
        let mut channels = Vec::new();
        for _ in 0..args.connections.max(1) {
            channels.push(Channel::from_shared(format!("http://{grpc_addr}"))?.connect().await?);
        }
        let target = Target::Facade(channels);
        let mut r = measure("facade", args, &target, &work, &[facade_pid, sim_pid], clk_tck).await;
        r.facade_hwm_kib = Some(proc_status(facade_pid, "VmHWM:"));
        reports.push(r);
    }
    if args.path != Which::Facade {
        let target = Target::Direct { http: http.clone(), url: sim_url.clone(), token };
        let mut r = measure("direct", args, &target, &work, &[facade_pid, sim_pid], clk_tck).await;
        r.facade_cpu = None;
        reports.push(r);
    }
    // SIGTERM first: the facade drains and exits 0 (and a profiler wrapping it, `--bin`, writes
    // its output); killed if it is not gone within 30 s.
    let _ = std::process::Command::new("kill").arg("-TERM").arg(facade_pid.to_string()).status();
    if tokio::time::timeout(Duration::from_secs(30), facade.wait()).await.is_err() {
        let _ = facade.kill().await;
    }
    let _ = sim.kill().await;
    Ok((reports, startup))
}

/// What a worker sends, prepared once.
struct Work {
    rpc: Rpc,
    create: pb::CreateSessionRequest,
    /// The exact JSON the facade sends upstream for `create`, split around its session key.
    body_head: Bytes,
    body_tail: Bytes,
    script_id: String,
    script_count: usize,
}

impl Work {
    fn new(args: &Args, script_id: String, script_count: usize) -> Result<Self, Box<dyn std::error::Error>> {
        let create = create_request(&script_id, args.contacts);
        let limits = SessionLimits { max_contacts: 1_000_000, now: SystemTime::now() };
        let session = NewSession::parse(create.clone(), &limits).map_err(|e| format!("request invalid: {e:?}"))?;
        const MARK: &str = "@@SESSION-KEY@@";
        let json = serde_json::to_string(&execute_body(&session, MARK))?;
        let (head, tail) = json.split_once(MARK).ok_or("no key in the body")?;
        Ok(Work {
            rpc: args.rpc,
            create,
            body_head: Bytes::copy_from_slice(head.as_bytes()),
            body_tail: Bytes::copy_from_slice(tail.as_bytes()),
            script_id,
            script_count,
        })
    }
}

/// A request with `contacts` contacts (email, code, three Vietnamese variables each).
pub(crate) fn create_request(script_id: &str, contacts: usize) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: script_id.to_owned(),
        contacts: (0..contacts)
            .map(|i| pb::Contact {
                phone: format!("09123{i:05}"),
                email: format!("hoc.sinh{i}@truong.edu.vn"),
                external_contact_code: format!("HS-{i:06}"),
                variables: [
                    ("uB131frQEU".to_owned(), format!("{}.5", i % 10)),
                    ("ho_ten".to_owned(), format!("Nguyễn Văn Đức {i}")),
                    ("lop".to_owned(), "12A1".to_owned()),
                ]
                .into_iter()
                .collect(),
            })
            .collect(),
        name: "Thông báo điểm thi học kỳ I".into(),
        caller_id: CALLER_ID.into(),
        voice: pb::Voice::SouthernFemaleHonganh as i32,
        speed: Some(1),
        retry_count: Some(2),
        calls_per_round: Some(10),
        round_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        retry_interval: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
        ..Default::default()
    }
}

enum Target {
    Facade(Vec<Channel>),
    Direct { http: reqwest::Client, url: String, token: String },
}

/// Warm up, then measure `args.duration` with `args.concurrency` workers; CPU of `pids` (facade,
/// simulator) and of this process is read before and after.
async fn measure(label: &str, args: &Args, target: &Target, work: &Arc<Work>, pids: &[u32; 2], clk_tck: f64) -> Report {
    let _ = run_workers(args, target, work, args.warmup).await;
    let load_before = load1();
    let cpu_before: Vec<f64> = pids.iter().map(|p| proc_cpu(&p.to_string(), clk_tck)).collect();
    let self_before = proc_cpu("self", clk_tck);
    let started = Instant::now();
    let (hist, errors) = run_workers(args, target, work, args.duration).await;
    let elapsed = started.elapsed();
    let cpu_after: Vec<f64> = pids.iter().map(|p| proc_cpu(&p.to_string(), clk_tck)).collect();
    let self_after = proc_cpu("self", clk_tck);
    Report {
        label: label.into(),
        requests: hist.len(),
        elapsed,
        hist,
        errors,
        facade_cpu: Some(cpu_after[0] - cpu_before[0]),
        sim_cpu: cpu_after[1] - cpu_before[1],
        self_cpu: self_after - self_before,
        facade_hwm_kib: None,
        load_before,
        load_after: load1(),
    }
}

/// `concurrency` workers, each sending one request after the other until `duration` is over;
/// every completed request's latency (µs) goes in the histogram, failures by code.
async fn run_workers(
    args: &Args,
    target: &Target,
    work: &Arc<Work>,
    duration: Duration,
) -> (Histogram<u64>, BTreeMap<String, u64>) {
    let until = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.concurrency {
        let work = work.clone();
        let client = match target {
            Target::Facade(channels) => Client::Facade(CallBotServiceClient::new(channels[i % channels.len()].clone())),
            Target::Direct { http, url, token } => {
                Client::Direct { http: http.clone(), url: url.clone(), token: token.clone() }
            }
        };
        tasks.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
            let mut errors = BTreeMap::new();
            while Instant::now() < until {
                let t = Instant::now();
                let result = client.call(&work).await;
                let us = t.elapsed().as_micros() as u64;
                match result {
                    Ok(()) => hist.saturating_record(us.max(1)),
                    Err(code) => *errors.entry(code).or_insert(0) += 1,
                }
            }
            (hist, errors)
        });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let mut errors = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (h, e) = done.expect("worker panicked");
        hist.add(h).expect("histogram bounds");
        for (k, v) in e {
            *errors.entry(k).or_insert(0) += v;
        }
    }
    (hist, errors)
}

enum Client {
    Facade(CallBotServiceClient<Channel>),
    Direct { http: reqwest::Client, url: String, token: String },
}

impl Client {
    /// One request; `Err` names the failure (gRPC code, HTTP status or envelope code).
    async fn call(&self, work: &Work) -> Result<(), String> {
        match self {
            Client::Facade(client) => {
                let mut client = client.clone();
                let code = |s: tonic::Status| format!("{:?}", s.code());
                match work.rpc {
                    Rpc::CreateSession => {
                        let r = client.create_session(work.create.clone()).await.map_err(code)?;
                        let session = r.into_inner().session.ok_or("no_session")?;
                        if session.id.is_empty() {
                            return Err("no_session_id".into());
                        }
                    }
                    Rpc::GetScript => {
                        let r = client
                            .get_script(pb::GetScriptRequest { script_id: work.script_id.clone() })
                            .await
                            .map_err(code)?;
                        r.into_inner().script.ok_or("no_script")?;
                    }
                    Rpc::ListScripts => {
                        let mut stream = client
                            .list_scripts(pb::ListScriptsRequest { name_contains: String::new() })
                            .await
                            .map_err(code)?
                            .into_inner();
                        let mut n = 0;
                        while stream.message().await.map_err(code)?.is_some() {
                            n += 1;
                        }
                        if n != work.script_count {
                            return Err("short_stream".into());
                        }
                    }
                }
                Ok(())
            }
            Client::Direct { http, url, token } => match work.rpc {
                Rpc::CreateSession => {
                    let key = uuid::Uuid::new_v4().to_string();
                    let mut body = Vec::with_capacity(work.body_head.len() + key.len() + work.body_tail.len());
                    body.extend_from_slice(&work.body_head);
                    body.extend_from_slice(key.as_bytes());
                    body.extend_from_slice(&work.body_tail);
                    let r = http
                        .post(format!("{url}/api/call_bot/execute_by_phone"))
                        .query(&[("cid", CALLER_ID)])
                        .header("x-api-key", API_KEY)
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| format!("io:{}", e.without_url()))?;
                    if !r.status().is_success() {
                        return Err(format!("http_{}", r.status().as_u16()));
                    }
                    let body = r.bytes().await.map_err(|_| "io_body".to_owned())?;
                    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| "json".to_owned())?;
                    if v["status_code"] != 9999 || v["payload"]["autocall_id"].as_str().is_none_or(str::is_empty) {
                        return Err(format!("envelope_{}", v["payload"]["error"].as_str().unwrap_or("?")));
                    }
                    Ok(())
                }
                Rpc::GetScript | Rpc::ListScripts => {
                    let body = direct_get(http, url, token).await?;
                    let scripts = parse_script_list(&body).map_err(|e| format!("parse:{e}"))?;
                    if work.rpc == Rpc::GetScript {
                        scripts.iter().find(|s| s.id == work.script_id).ok_or("not_found")?;
                    } else if scripts.len() != work.script_count {
                        return Err("short_list".into());
                    }
                    Ok(())
                }
            },
        }
    }
}

pub(crate) async fn direct_token(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = http
        .get(format!("{url}/api/auth"))
        .query(&[("apiKey", API_KEY)])
        .send()
        .await
        .map_err(|e| format!("auth: {e}"))?;
    let v: serde_json::Value = r.json().await.map_err(|e| format!("auth: {e}"))?;
    v["payload"]["access_token"].as_str().map(str::to_owned).ok_or_else(|| "auth: no token".into())
}

pub(crate) async fn direct_get(http: &reqwest::Client, url: &str, token: &str) -> Result<Bytes, String> {
    let r = http
        .get(format!("{url}/api/call_bot/script/list"))
        .header("x-api-key", API_KEY)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .map_err(|e| format!("io:{}", e.without_url()))?;
    if !r.status().is_success() {
        return Err(format!("http_{}", r.status().as_u16()));
    }
    r.bytes().await.map_err(|_| "io_body".into())
}
