//! ListSessions end to end: the sessions created here, newest first, paged, filtered by campaign
//! and creation time, each with its report's counts; one tenant never sees another's.

use tonic::Code;

use super::events::{spawn_with_receiver, wait_session_done, wait_until};
use super::*;

fn request(page_size: i32, page_token: &str, campaign_id: &str) -> pb::ListSessionsRequest {
    pb::ListSessionsRequest {
        page_size,
        page_token: page_token.into(),
        campaign_id: campaign_id.into(),
        created_after: None,
    }
}

async fn create_keyed(app: &TestApp, key: &str, name: &str, phones: &[&str]) -> pb::Session {
    let request = pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        name: name.into(),
        contacts: phones.iter().map(|p| pb::Contact { phone: (*p).into(), ..Default::default() }).collect(),
        external_session_id: key.into(),
        ..Default::default()
    };
    let session = app.client.clone().create_session(request).await.unwrap().into_inner().session.unwrap();
    // Creation times are milliseconds: keep them distinct so the order is the creation order.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    session
}

#[tokio::test]
async fn sessions_are_listed_newest_first_paged_filtered_with_their_report_counts() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let mut client = app.client.clone();
    let first = create_keyed(&app, "camp-a-0", "Nhắc lịch hẹn", &["0912345670", "0912345677"]).await;
    let second = create_keyed(&app, "camp-a-1", "", &["0912345678"]).await;
    let third = create_keyed(&app, "other-0", "", &["0912345679"]).await;
    for s in [&first, &second, &third] {
        wait_session_done(&app.sim, &s.id).await;
    }

    // Everything, newest first; the counts are GetSessionReport's.
    let all = client.list_sessions(request(0, "", "")).await.unwrap().into_inner();
    let ids: Vec<&str> = all.sessions.iter().map(|s| s.session.as_ref().unwrap().id.as_str()).collect();
    assert_eq!(ids, [third.id.as_str(), second.id.as_str(), first.id.as_str()]);
    assert!(all.next_page_token.is_empty());
    let oldest = &all.sessions[2];
    assert_eq!(oldest.name, "Nhắc lịch hẹn");
    assert_eq!(oldest.script_id, "64915bc76a690c0edad14723");
    assert_eq!(oldest.session.as_ref().unwrap().external_session_id, "camp-a-0");
    assert!(oldest.created_at.is_some());
    for summary in &all.sessions {
        let id = summary.session.as_ref().unwrap().id.clone();
        let report = client
            .get_session_report(pb::GetSessionReportRequest { session_id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (
                summary.contacts_total,
                summary.answered,
                summary.no_answer,
                summary.busy,
                summary.rejected,
                summary.failed,
                summary.in_progress,
                summary.finished
            ),
            (
                report.contacts_total,
                report.answered,
                report.no_answer,
                report.busy,
                report.rejected,
                report.failed,
                report.in_progress,
                report.finished
            ),
            "{id}"
        );
    }
    // 0 answered, 7 busy; 8 rejected; 9 failed (the simulator's table).
    assert_eq!((oldest.contacts_total, oldest.answered, oldest.busy, oldest.finished), (2, 1, 1, true));

    // Pages of one: three pages, then no token.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client.list_sessions(request(1, &token, "")).await.unwrap().into_inner();
        assert_eq!(page.sessions.len(), 1);
        seen.push(page.sessions[0].session.as_ref().unwrap().id.clone());
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);

    // A campaign: the prefix of the external session id.
    let campaign = client.list_sessions(request(0, "", "camp-a-")).await.unwrap().into_inner();
    let keys: Vec<&str> =
        campaign.sessions.iter().map(|s| s.session.as_ref().unwrap().external_session_id.as_str()).collect();
    assert_eq!(keys, ["camp-a-1", "camp-a-0"]);

    // Created after the second one's creation: the third only.
    let after = all.sessions[1].created_at;
    let newer = client
        .list_sessions(pb::ListSessionsRequest { created_after: after, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(newer.sessions.len(), 1);
    assert_eq!(newer.sessions[0].session.as_ref().unwrap().id, third.id);
}

#[tokio::test]
async fn a_bad_listing_names_every_field() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let err = app
        .client
        .clone()
        .list_sessions(pb::ListSessionsRequest {
            page_size: 501,
            page_token: "not-a-token".into(),
            campaign_id: "a b".into(),
            created_after: Some(prost_types::Timestamp { seconds: -5, nanos: 0 }),
        })
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_REQUEST");
    let details = tonic_types::StatusExt::get_error_details(&err);
    let fields: Vec<String> = details.bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["page_size", "page_token", "campaign_id", "created_after"]);
}

/// The calling policy of `tests/api/policy.rs` (Decree 91 for advertising, 08:00-17:00 for
/// service, 0900000001 on the do-not-call list), in `dir`.
fn policy_file(dir: &std::path::Path) -> std::path::PathBuf {
    let dnc = dir.join("dnc.txt");
    std::fs::write(&dnc, "0900000001\n").unwrap();
    let path = dir.join("policy.yaml");
    let yaml = format!(
        "policies:\n  - tenant: default\n    time_zone: Asia/Ho_Chi_Minh\n    do_not_call_files: [{}]\n    \
         advertising:\n      preset: vn-decree-91\n    service:\n      hours: [\"08:00-17:00\"]\n",
        dnc.display()
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn timestamp(rfc3339: &str) -> prost_types::Timestamp {
    let t: jiff::Timestamp = rfc3339.parse().unwrap();
    prost_types::Timestamp { seconds: t.as_second(), nanos: 0 }
}

fn policed(key: &str, purpose: pb::CallPurpose, phones: &[&str]) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: phones.iter().map(|p| pb::Contact { phone: (*p).into(), ..Default::default() }).collect(),
        external_session_id: key.into(),
        purpose: purpose as i32,
        calls_per_round: Some(1),
        round_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        ..Default::default()
    }
}

fn refused(s: &pb::SessionSummary) -> Vec<(&str, i64)> {
    s.refused_contacts.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

/// Creates, through `client`, a deferred advertising session with a policy and an upstream
/// refusal, a service session at the caller's start, an advertising session over the frequency
/// cap (the policy of [`policy_file`], its clock at 07:59 local); their ids, oldest first.
async fn create_policed(client: &mut CallBotServiceClient<tonic::transport::Channel>) -> [String; 3] {
    // 0900000001: on the policy's list; 0912345999: the simulator's do-not-call (its "number_dnc").
    let mut deferred =
        policed("ad-deferred", pb::CallPurpose::Advertising, &["+84900000001", "0912345999", "0912345678"]);
    deferred.defer_to_calling_hours = true;
    let a = client.create_session(deferred).await.unwrap().into_inner().session.unwrap();
    assert_eq!(a.start_time, Some(timestamp("2027-01-04T01:00:00Z")), "deferred to 08:00 local");
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let mut service = policed("service", pb::CallPurpose::Service, &["0912345680"]);
    service.start_time = Some(timestamp("2027-01-04T03:00:00Z"));
    let b = client.create_session(service).await.unwrap().into_inner().session.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let mut capped = policed("ad-capped", pb::CallPurpose::Advertising, &["0912345678", "0912345681"]);
    capped.start_time = Some(timestamp("2027-01-04T04:00:00Z"));
    let c = client.create_session(capped).await.unwrap().into_inner().session.unwrap();
    let reasons: Vec<&str> = c.rejected_contacts.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons, ["FREQUENCY_CAP"]);
    [a.id, b.id, c.id]
}

/// The listing of the sessions of [`create_policed`]: newest first, each with its purpose, start
/// and refusals by reason.
fn check_policed(list: &pb::ListSessionsResponse, [a, b, c]: &[String; 3]) {
    let ids: Vec<&str> = list.sessions.iter().map(|s| s.session.as_ref().unwrap().id.as_str()).collect();
    assert_eq!(ids, [c.as_str(), b.as_str(), a.as_str()]);
    let [capped, service, deferred] = &list.sessions[..] else { unreachable!() };
    assert_eq!(deferred.purpose(), pb::CallPurpose::Advertising);
    assert_eq!(deferred.session.as_ref().unwrap().start_time, Some(timestamp("2027-01-04T01:00:00Z")));
    assert_eq!(refused(deferred), [("DO_NOT_CALL", 1), ("number_dnc", 1)]);
    assert_eq!(deferred.contacts_total, 1, "the refused contacts are not dialled");
    assert_eq!(service.purpose(), pb::CallPurpose::Service);
    assert_eq!(service.session.as_ref().unwrap().start_time, Some(timestamp("2027-01-04T03:00:00Z")));
    assert!(service.refused_contacts.is_empty());
    assert_eq!(capped.purpose(), pb::CallPurpose::Advertising);
    assert_eq!(capped.session.as_ref().unwrap().start_time, Some(timestamp("2027-01-04T04:00:00Z")));
    assert_eq!(refused(capped), [("FREQUENCY_CAP", 1)]);
    assert_eq!(capped.contacts_total, 1);
}

/// Purpose, start and refusals by reason, as each session was created, on the disk store, and
/// again after a restart.
#[tokio::test]
async fn a_listing_says_purpose_start_and_the_contacts_refused_by_reason_and_keeps_them_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(dir.path());
    let data = dir.path().join("data");
    let settings = |s: &mut Settings| {
        s.policy.calling_policy = Some(policy.clone());
        // Monday 2027-01-04 07:59 in Ho Chi Minh City: before the calling hours.
        s.policy.clock_start = Some("2027-01-04T07:59:00+07:00".into());
        s.events.store = callbot_facade::config::EventsStoreKind::Disk;
        s.events.data_dir = data.clone();
    };
    let (mut app, _) = spawn_with_receiver(settings).await;
    let mut client = app.client.clone();
    let ids = create_policed(&mut client).await;
    check_policed(&client.list_sessions(request(0, "", "")).await.unwrap().into_inner(), &ids);
    drop(client);
    app.shutdown();
    app.done.take().unwrap().await.unwrap().unwrap();

    // The disk store kept them: a new facade on the same data dir lists the same.
    let (app, _) = spawn_with_receiver(settings).await;
    check_policed(&app.client.clone().list_sessions(request(0, "", "")).await.unwrap().into_inner(), &ids);
}

/// The same on JetStream: created on one replica, listed by the other (the records went through
/// the stream).
#[tokio::test]
async fn on_jetstream_another_replica_lists_purpose_start_and_refusals() {
    let nats = super::nats::Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(dir.path());
    let settings = |s: &mut Settings| {
        s.policy.calling_policy = Some(policy.clone());
        s.policy.clock_start = Some("2027-01-04T07:59:00+07:00".into());
        s.events.nats_url = Some(nats.url());
    };
    let (a, _) = spawn_with_receiver(settings).await;
    let (b, _) = spawn_with_receiver(settings).await;
    let ids = create_policed(&mut a.client.clone()).await;
    let list = || async { b.client.clone().list_sessions(request(0, "", "")).await.unwrap().into_inner() };
    wait_until(|| async { list().await.sessions.len() == 3 }).await;
    check_policed(&list().await, &ids);
}

/// A session created without purpose or start: unspecified, no start, nothing refused.
#[tokio::test]
async fn a_session_without_policy_lists_no_purpose_no_start_and_no_refusals() {
    let (app, _) = spawn_with_receiver(|_| {}).await;
    let s = create_keyed(&app, "plain-0", "", &["0912345670"]).await;
    let list = app.client.clone().list_sessions(request(0, "", "")).await.unwrap().into_inner();
    let summary = &list.sessions[0];
    assert_eq!(summary.session.as_ref().unwrap().id, s.id);
    assert_eq!(summary.purpose(), pb::CallPurpose::Unspecified);
    assert_eq!(summary.session.as_ref().unwrap().start_time, None);
    assert!(summary.refused_contacts.is_empty());
}
