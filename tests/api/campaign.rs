//! CreateCampaign end to end, and `check_variables` on CreateSession.
//!
//! Each test starts its own facade and simulator, streams a spec and contact batches through the
//! generated client, and checks the answers (chunk index, key, running total, resumed), the
//! final status (code, reason, field paths, chunk key) and what the simulator received.

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;

use super::*;

/// "Thông báo điểm thi": four dynamic variables, one of them `tên thí sinh` (with spaces).
const SCRIPT: &str = "64915bc76a690c0edad14723";
const EXECUTE_PATH: &str = "/api/call_bot/execute_by_phone";

fn spec(campaign_id: &str, chunk_size: i32) -> pb::CampaignSpec {
    pb::CampaignSpec {
        campaign_id: campaign_id.into(),
        script_id: SCRIPT.into(),
        chunk_size,
        name: "Đợt thông báo điểm".into(),
        speed: Some(1),
        ..Default::default()
    }
}

/// Contact `n` of a campaign: a distinct phone that no do-not-call rule matches.
fn contact(n: usize) -> pb::Contact {
    pb::Contact { phone: format!("09120{n:05}"), ..Default::default() }
}

fn contacts(range: std::ops::Range<usize>) -> Vec<pb::Contact> {
    range.map(contact).collect()
}

fn spec_msg(spec: pb::CampaignSpec) -> pb::CreateCampaignRequest {
    pb::CreateCampaignRequest { item: Some(pb::create_campaign_request::Item::Spec(spec)) }
}

fn batch(contacts: Vec<pb::Contact>) -> pb::CreateCampaignRequest {
    pb::CreateCampaignRequest { item: Some(pb::create_campaign_request::Item::Batch(pb::ContactBatch { contacts })) }
}

/// Streams `messages`, collects every answer and the final error, if any.
async fn run(
    app: &mut TestApp,
    messages: Vec<pb::CreateCampaignRequest>,
) -> (Vec<pb::CreateCampaignResponse>, Option<Status>) {
    collect(app.client.create_campaign(tokio_stream::iter(messages)).await).await
}

async fn collect(
    answer: Result<tonic::Response<tonic::Streaming<pb::CreateCampaignResponse>>, Status>,
) -> (Vec<pb::CreateCampaignResponse>, Option<Status>) {
    let mut stream = match answer {
        Ok(r) => r.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut got = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => got.push(m),
            Ok(None) => return (got, None),
            Err(status) => return (got, Some(status)),
        }
    }
}

/// (chunk_index, key, contacts_total, resumed) of each answer.
fn summary(answers: &[pb::CreateCampaignResponse]) -> Vec<(i64, String, i64, bool)> {
    answers
        .iter()
        .map(|a| {
            let s = a.session.as_ref().expect("session");
            (a.chunk_index, s.external_session_id.clone(), a.contacts_total, a.resumed)
        })
        .collect()
}

fn paths(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The simulator's sessions as (key, phones in order).
async fn sim_chunks(sim: &TestSim) -> Vec<(String, Vec<String>)> {
    sim.sessions()
        .await
        .iter()
        .map(|s| {
            let phones = s["body"]["contact_info"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["phone"].as_str().unwrap().to_owned())
                .collect();
            (s["ext_session_id"].as_str().unwrap_or_default().to_owned(), phones)
        })
        .collect()
}

fn phones(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| contact(n).phone).collect()
}

fn keyed(campaign: &str, chunks: &[(usize, std::ops::Range<usize>)]) -> Vec<(String, Vec<String>)> {
    chunks.iter().map(|(i, r)| (format!("{campaign}-{i}"), phones(r.clone()))).collect()
}

#[tokio::test]
async fn campaign_cuts_the_stream_into_chunks_keyed_campaign_id_and_index_in_arrival_order() {
    let mut app = spawn_app().await;
    // Batch boundaries (2, 4, 0, 1) do not line up with chunks of 3.
    let messages = vec![
        spec_msg(spec("c1", 3)),
        batch(contacts(0..2)),
        batch(contacts(2..6)),
        batch(vec![]),
        batch(contacts(6..7)),
    ];
    let (answers, error) = run(&mut app, messages).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        summary(&answers),
        [(0, "c1-0".into(), 3, false), (1, "c1-1".into(), 6, false), (2, "c1-2".into(), 7, false)]
    );
    let sessions = app.sim.sessions().await;
    for (answer, upstream) in answers.iter().zip(&sessions) {
        let s = answer.session.as_ref().unwrap();
        assert_eq!(s.id, upstream["autocall_id"].as_str().unwrap());
        assert_eq!(s.script_id, SCRIPT);
        assert!(s.rejected_contacts.is_empty());
        // Every chunk carries the spec's options.
        assert_eq!(upstream["body"]["name"], "Đợt thông báo điểm");
        assert_eq!(upstream["body"]["speed"], 1);
        assert_eq!(upstream["body"]["bot_script_id"], SCRIPT);
    }
    assert_eq!(sim_chunks(&app.sim).await, keyed("c1", &[(0, 0..3), (1, 3..6), (2, 6..7)]));
}

#[tokio::test]
async fn campaign_one_message_larger_than_a_chunk_and_default_chunk_size() {
    let mut app = spawn_app_with(SimConfig::default(), |s| s.service.max_contacts = 4).await;
    // chunk_size 0 = 500, capped at --max-contacts (4 here).
    let (answers, error) = run(&mut app, vec![spec_msg(spec("big", 0)), batch(contacts(0..10))]).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        summary(&answers),
        [(0, "big-0".into(), 4, false), (1, "big-1".into(), 8, false), (2, "big-2".into(), 10, false)]
    );
    assert_eq!(sim_chunks(&app.sim).await, keyed("big", &[(0, 0..4), (1, 4..8), (2, 8..10)]));
}

#[tokio::test]
async fn campaign_rerun_resumes_every_chunk_and_starts_nothing_twice() {
    let mut app = spawn_app().await;
    let messages = || vec![spec_msg(spec("again", 3)), batch(contacts(0..7))];
    let (first, error) = run(&mut app, messages()).await;
    assert!(error.is_none(), "{error:?}");
    assert!(first.iter().all(|a| !a.resumed));
    let (second, error) = run(&mut app, messages()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        summary(&second),
        [(0, "again-0".into(), 3, true), (1, "again-1".into(), 6, true), (2, "again-2".into(), 7, true)]
    );
    // A resumed chunk's upstream id is unknown (the duplicate answer carries only a code).
    assert!(second.iter().all(|a| a.session.as_ref().unwrap().id.is_empty()));
    assert_eq!(app.sim.sessions().await.len(), 3);
}

#[tokio::test]
async fn campaign_dropped_after_the_first_answer_resumes_with_each_chunk_started_exactly_once() {
    let mut app = spawn_app().await;
    let (tx, rx) = mpsc::channel(8);
    tx.send(spec_msg(spec("drop", 2))).await.unwrap();
    tx.send(batch(contacts(0..2))).await.unwrap();
    let mut answers = app.client.create_campaign(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert_eq!(first.session.unwrap().external_session_id, "drop-0");
    // The caller crashes: its call goes away mid-campaign.
    drop(answers);
    drop(tx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.sim.sessions().await.len(), 1);

    let (answers, error) = run(&mut app, vec![spec_msg(spec("drop", 2)), batch(contacts(0..7))]).await;
    assert!(error.is_none(), "{error:?}");
    let resumed: Vec<bool> = answers.iter().map(|a| a.resumed).collect();
    assert_eq!(resumed, [true, false, false, false]);
    assert_eq!(answers.last().unwrap().contacts_total, 7);
    assert_eq!(sim_chunks(&app.sim).await, keyed("drop", &[(0, 0..2), (1, 2..4), (2, 4..6), (3, 6..7)]));
}

#[tokio::test]
async fn campaign_bad_contact_fails_the_stream_with_a_global_path_after_the_chunks_already_started() {
    let mut app = spawn_app().await;
    let mut list = contacts(0..9);
    list[5].phone = "12".into();
    list[4].email = "not-an-email".into();
    let (answers, error) = run(&mut app, vec![spec_msg(spec("bad", 3)), batch(list)]).await;
    assert_eq!(summary(&answers), [(0, "bad-0".into(), 3, false)]);
    let status = error.expect("the stream fails");
    assert_status(&status, Code::InvalidArgument, "INVALID_REQUEST");
    assert_eq!(paths(&status), ["contacts[4].email", "contacts[5].phone"]);
    // The chunk that failed was never sent; the one before stays started.
    assert_eq!(sim_chunks(&app.sim).await, keyed("bad", &[(0, 0..3)]));
}

#[tokio::test]
async fn campaign_duplicate_phones_are_refused_within_a_chunk_and_allowed_across_chunks() {
    let mut app = spawn_app().await;
    // Contact 3 repeats contact 0: in different chunks of 3, both are started.
    let mut list = contacts(0..6);
    list[3].phone = list[0].phone.clone();
    let (answers, error) = run(&mut app, vec![spec_msg(spec("dup", 3)), batch(list.clone())]).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(answers.len(), 2);
    // Contact 5 repeats contact 4, in the same chunk: refused, with global paths on both sides.
    list[5].phone = list[4].phone.clone();
    let (answers, error) = run(&mut app, vec![spec_msg(spec("dup2", 3)), batch(list)]).await;
    assert_eq!(answers.len(), 1);
    let status = error.expect("refused");
    assert_status(&status, Code::InvalidArgument, "INVALID_REQUEST");
    let details = status.get_error_details();
    let violations = &details.bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "contacts[5].phone");
    assert_eq!(violations[0].description, "duplicates contacts[4].phone");
}

#[tokio::test]
async fn campaign_stream_shape_and_spec_errors_are_invalid_argument_before_any_upstream_call() {
    let mut app = spawn_app_with(SimConfig::default(), |s| s.service.max_contacts = 3).await;
    let mut bad_spec = spec("", 4);
    bad_spec.script_id = "has space".into();
    bad_spec.voice = 99;
    let rows: Vec<(&str, Vec<pb::CreateCampaignRequest>, &[&str])> = vec![
        ("empty stream", vec![], &["spec"]),
        ("batch before the spec", vec![batch(contacts(0..1)), spec_msg(spec("s", 1))], &["spec"]),
        ("second spec", vec![spec_msg(spec("s", 1)), spec_msg(spec("s", 1)), batch(contacts(0..1))], &["spec"]),
        ("message without item", vec![spec_msg(spec("s", 1)), pb::CreateCampaignRequest { item: None }], &["item"]),
        ("spec but no contact", vec![spec_msg(spec("s", 1)), batch(vec![])], &["contacts"]),
        (
            "every spec rule at once",
            vec![spec_msg(bad_spec), batch(contacts(0..1))],
            &["spec.campaign_id", "spec.script_id", "spec.voice", "spec.chunk_size"],
        ),
        ("campaign_id over 100", vec![spec_msg(spec(&"c".repeat(101), 1))], &["spec.campaign_id"]),
        ("chunk_size negative", vec![spec_msg(spec("s", -1))], &["spec.chunk_size"]),
    ];
    for (label, messages, want) in rows {
        let (answers, error) = run(&mut app, messages).await;
        assert!(answers.is_empty(), "{label}");
        let status = error.unwrap_or_else(|| panic!("{label}: accepted"));
        assert_status(&status, Code::InvalidArgument, "INVALID_REQUEST");
        assert_eq!(paths(&status), *want, "{label}");
    }
    assert_eq!(app.sim.stats().await["execute_calls"], 0);
}

#[tokio::test]
async fn campaign_upstream_error_fails_the_stream_with_the_chunk_key_after_earlier_answers() {
    let mut app = spawn_app().await;
    let (tx, rx) = mpsc::channel(8);
    tx.send(spec_msg(spec("up", 2))).await.unwrap();
    tx.send(batch(contacts(0..2))).await.unwrap();
    let mut answers = app.client.create_campaign(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert_eq!(first.chunk_index, 0);
    app.sim.fault(json!({"path": EXECUTE_PATH, "error": "balance_is_not_enough"})).await;
    tx.send(batch(contacts(2..6))).await.unwrap();
    drop(tx);
    let status = answers.message().await.expect_err("chunk 1 fails");
    assert_status(&status, Code::FailedPrecondition, "UPSTREAM_INSUFFICIENT_BALANCE");
    assert_eq!(meta(&status, "external_session_id").as_deref(), Some("up-1"));
    assert_eq!(meta(&status, "upstream_code").as_deref(), Some("balance_is_not_enough"));
    // Nothing after the failed chunk was tried.
    assert_eq!(app.sim.stats().await["execute_calls"], 2);
    assert_eq!(sim_chunks(&app.sim).await, keyed("up", &[(0, 0..2)]));
}

#[tokio::test]
async fn campaign_upstream_rejections_are_reported_per_chunk() {
    let mut app = spawn_app().await;
    let mut list = contacts(0..4);
    list[3].phone = "0912000999".into(); // on the simulator's do-not-call list
    let (answers, error) = run(&mut app, vec![spec_msg(spec("dnc", 2)), batch(list)]).await;
    assert!(error.is_none(), "{error:?}");
    let rejected: Vec<Vec<(String, String)>> = answers
        .iter()
        .map(|a| {
            a.session.as_ref().unwrap().rejected_contacts.iter().map(|r| (r.phone.clone(), r.reason.clone())).collect()
        })
        .collect();
    assert_eq!(rejected, [vec![], vec![("0912000999".to_owned(), "number_dnc".to_owned())]]);
}

#[tokio::test]
async fn campaign_deadline_bounds_the_whole_stream() {
    let mut app = spawn_app().await;
    let (tx, rx) = mpsc::channel(8);
    tx.send(spec_msg(spec("late", 2))).await.unwrap();
    tx.send(batch(contacts(0..2))).await.unwrap();
    let mut request = Request::new(ReceiverStream::new(rx));
    request.set_timeout(Duration::from_millis(1000));
    let started = std::time::Instant::now();
    let mut answers = app.client.create_campaign(request).await.unwrap().into_inner();
    assert_eq!(answers.message().await.unwrap().unwrap().chunk_index, 0);
    // The caller keeps its side open and sends nothing more: the deadline ends the stream.
    let status = answers.message().await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    drop(tx);
}

fn filled(n: usize) -> pb::Contact {
    let mut c = contact(n);
    c.variables = [("tên thí sinh", "Nguyễn Văn Ánh"), ("uB131frQEU", "9.5"), ("Kp7wZq2LmX", "8"), ("r9TdVh4sNa", "7")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    c
}

#[tokio::test]
async fn campaign_check_variables_reports_missing_and_unknown_keys_with_global_paths() {
    let mut app = spawn_app().await;
    let mut checked = spec("vars", 2);
    checked.check_variables = true;
    let mut list: Vec<pb::Contact> = (0..4).map(filled).collect();
    list[3].variables.remove("uB131frQEU");
    list[3].variables.insert("ghi chú".into(), "x".into());
    list[2].variables.insert("Kp7wZq2LmX".into(), "  ".into());
    let (answers, error) = run(&mut app, vec![spec_msg(checked.clone()), batch(list)]).await;
    assert_eq!(answers.len(), 1);
    let status = error.expect("refused");
    assert_status(&status, Code::InvalidArgument, "INVALID_REQUEST");
    assert_eq!(
        paths(&status),
        ["contacts[2].variables[Kp7wZq2LmX]", "contacts[3].variables[uB131frQEU]", "contacts[3].variables[ghi chú]"]
    );
    // All filled: accepted, the spaced key travels byte for byte.
    checked.campaign_id = "vars-ok".into();
    let (answers, error) = run(&mut app, vec![spec_msg(checked.clone()), batch((0..3).map(filled).collect())]).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(answers.len(), 2);
    let last = app.sim.sessions().await.pop().unwrap();
    assert_eq!(last["body"]["contact_info"][0]["mapping_variables"]["tên thí sinh"], "Nguyễn Văn Ánh");
    // Unknown script: NOT_FOUND before anything is read or sent.
    checked.script_id = "000000000000000000000000".into();
    let (answers, error) = run(&mut app, vec![spec_msg(checked), batch(vec![filled(0)])]).await;
    assert!(answers.is_empty());
    assert_status(&error.unwrap(), Code::NotFound, "SCRIPT_NOT_FOUND");
}

#[tokio::test]
async fn create_session_check_variables_missing_unknown_ok_and_unknown_script() {
    let mut app = spawn_app().await;
    let request = |contacts: Vec<pb::Contact>, check: bool| pb::CreateSessionRequest {
        script_id: SCRIPT.into(),
        contacts,
        check_variables: check,
        ..Default::default()
    };
    let mut missing = filled(0);
    missing.variables.remove("tên thí sinh");
    let mut unknown = filled(1);
    unknown.variables.insert("diem".into(), "9".into());
    let status = app.client.create_session(request(vec![missing.clone(), unknown], true)).await.unwrap_err();
    assert_status(&status, Code::InvalidArgument, "INVALID_REQUEST");
    assert_eq!(paths(&status), ["contacts[0].variables[tên thí sinh]", "contacts[1].variables[diem]"]);
    assert_eq!(app.sim.stats().await["execute_calls"], 0);

    app.client.create_session(request(vec![filled(0), filled(1)], true)).await.expect("all filled");
    // Off (the default): the upstream decides, as before.
    app.client.create_session(request(vec![missing], false)).await.expect("not checked");

    let mut req = request(vec![filled(0)], true);
    req.script_id = "000000000000000000000000".into();
    let status = app.client.create_session(req.clone()).await.unwrap_err();
    assert_status(&status, Code::NotFound, "SCRIPT_NOT_FOUND");
    // Validation still comes first, without I/O.
    req.contacts[0].phone = "x".into();
    let status = app.client.create_session(req).await.unwrap_err();
    assert_eq!(paths(&status), ["contacts[0].phone"]);
    assert_eq!(app.sim.sessions().await.len(), 2);
}

/// The engine alone, fed by a stream that counts what it was asked for: a caller that stops
/// reading answers stops the reading of contacts (nothing is buffered ahead).
#[tokio::test]
async fn campaign_engine_reads_no_contact_ahead_of_a_caller_that_stops_reading() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use callbot_facade::{
        config::Settings,
        testing::{CallContext, CampaignPlan, CampaignRun, Metrics, UpstreamClient},
    };
    use futures::StreamExt;

    let sim = TestSim::start(SimConfig::default()).await;
    let settings = Settings::for_tests();
    let upstream = Arc::new(UpstreamClient::new(&sim.url, &settings.upstream, Arc::new(Metrics::new())).unwrap());
    let plan = CampaignPlan::parse(spec("bp", 2), 10, std::time::SystemTime::now()).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    // 100 messages of one contact each, counted as they are pulled.
    let incoming = futures::stream::iter(0..100).map(move |n| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(batch(vec![contact(n)]))
    });
    let run = CampaignRun {
        upstream,
        plan,
        variables: None,
        ctx: CallContext {
            api_key: ApiKey::new(TEST_KEY),
            deadline: tokio::time::Instant::now(),
            request_id: "bp".into(),
            traceparent: None,
            tracestate: None,
        },
        stream_deadline: None,
        upstream_timeout: Duration::from_secs(5),
        sessions: callbot_facade::testing::SessionLog::none(),
        policy: callbot_facade::testing::Policy::unrestricted(),
        metrics: Arc::new(Metrics::new()),
        tenant: "default".into(),
    };
    // Room for one answer, and nobody reads it.
    let (tx, mut rx) = mpsc::channel(1);
    let task = tokio::spawn(run.run(Box::pin(incoming), tx));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Chunk 0 answered into the channel, chunk 1 started and waiting for room: 4 contacts read.
    assert_eq!(pulled.load(Ordering::SeqCst), 4);
    assert_eq!(sim.sessions().await.len(), 2);
    // Reading again lets it go on to the end.
    let mut answers = 0;
    while let Some(answer) = rx.recv().await {
        answer.unwrap();
        answers += 1;
    }
    task.await.unwrap();
    assert_eq!(answers, 50);
    assert_eq!(pulled.load(Ordering::SeqCst), 100);
}
