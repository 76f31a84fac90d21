//! ListSessions end to end: the sessions created here, newest first, paged, filtered by campaign
//! and creation time, each with its report's counts; one tenant never sees another's.

use tonic::Code;

use super::events::{spawn_with_receiver, wait_session_done};
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
