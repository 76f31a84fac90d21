//! The calling policy end to end (issue 23; docs/policy.md): a facade on a test clock
//! (`--policy-clock-start`) in front of the simulator, the policy file in a temporary directory.

use std::{path::Path, time::Duration};

use tonic::Code;

use super::*;

const SCRIPT: &str = "64915bc76a690c0edad14723";

/// Monday 2027-01-04, in Asia/Ho_Chi_Minh (UTC+7).
fn local(hh_mm: &str) -> String {
    format!("2027-01-04T{hh_mm}:00+07:00")
}

const PRESET: &str = "policies:
  - tenant: default
    time_zone: Asia/Ho_Chi_Minh
    require_purpose: true
    do_not_call_files: [DNC]
    advertising:
      preset: vn-decree-91
    service:
      hours: [\"08:00-17:00\"]
";

/// Writes the policy (with `DNC` replaced by the do-not-call file, which holds `dnc`) into `dir`,
/// each file replaced whole (a rename), so that the reloader never reads half a file.
fn write_policy(dir: &Path, yaml: &str, dnc: &str) -> std::path::PathBuf {
    let replace = |path: &Path, text: &str| {
        let new = path.with_extension("new");
        std::fs::write(&new, text).unwrap();
        std::fs::rename(&new, path).unwrap();
    };
    let list = dir.join("dnc.txt");
    replace(&list, dnc);
    let path = dir.join("policy.yaml");
    replace(&path, &yaml.replace("DNC", list.to_str().unwrap()));
    path
}

async fn spawn_policy(dir: &Path, clock: &str, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_with(dir, PRESET, clock, adjust).await
}

/// A facade on the policy `yaml` (its `DNC` file listing 0900000001), its clock started at `clock`.
async fn spawn_with(dir: &Path, yaml: &str, clock: &str, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let path = write_policy(dir, yaml, "# registry\n0900000001\n");
    let clock = clock.to_owned();
    spawn_app_with(SimConfig::default(), move |s| {
        s.policy.calling_policy = Some(path);
        s.policy.clock_start = Some(clock);
        s.security.secrets_poll_interval = Duration::from_millis(50);
        adjust(s);
    })
    .await
}

fn ad(phones: &[&str], key: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: SCRIPT.to_owned(),
        contacts: phones.iter().map(|p| pb::Contact { phone: (*p).to_owned(), ..Default::default() }).collect(),
        external_session_id: key.to_owned(),
        purpose: pb::CallPurpose::Advertising as i32,
        calls_per_round: Some(1),
        round_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        ..Default::default()
    }
}

fn at(rfc3339: &str) -> prost_types::Timestamp {
    let t: jiff::Timestamp = rfc3339.parse().unwrap();
    prost_types::Timestamp { seconds: t.as_second(), nanos: 0 }
}

fn rejections(s: &pb::Session) -> Vec<(String, String)> {
    s.rejected_contacts.iter().map(|r| (r.phone.clone(), r.reason.clone())).collect()
}

#[tokio::test]
async fn the_preset_at_seven_fifty_nine_eight_and_four_fifty_nine() {
    let dir = tempfile::tempdir().unwrap();
    // 07:59: outside, with the next opening.
    let mut app = spawn_policy(dir.path(), &local("07:59"), |_| {}).await;
    let err = app.client.create_session(ad(&["0912345678"], "a")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "OUTSIDE_CALLING_HOURS");
    assert_eq!(meta(&err, "next_opening").as_deref(), Some("2027-01-04T01:00:00Z"));
    assert!(app.sim.sessions().await.is_empty(), "nothing was sent");
    // Deferred: send_time is the opening, and start_time says so.
    let mut req = ad(&["0912345678"], "b");
    req.defer_to_calling_hours = true;
    let s = app.client.create_session(req).await.unwrap().into_inner().session.unwrap();
    assert_eq!(s.start_time, Some(at("2027-01-04T01:00:00Z")));
    let sent = app.sim.sessions().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["body"]["send_time"], serde_json::json!(1_799_024_400_000_i64), "{}", sent[0]);
    drop(app);

    // 08:00: open.
    let mut app = spawn_policy(dir.path(), &local("08:00"), |_| {}).await;
    let s = app.client.create_session(ad(&["0912345678"], "c")).await.unwrap().into_inner().session.unwrap();
    assert!(!s.id.is_empty() && s.rejected_contacts.is_empty() && s.start_time.is_none(), "{s:?}");
    drop(app);

    // 16:58: two contacts at one a minute end by 17:00 (the clock runs, so give it a minute of
    // slack); three would pass 17:00.
    let mut app = spawn_policy(dir.path(), &local("16:57"), |_| {}).await;
    let err = app.client.create_session(ad(&["0912000001", "0912000002", "0912000003"], "d")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "CALLING_WINDOW_TOO_SHORT");
    assert_eq!(meta(&err, "max_contacts").as_deref(), Some("2"));
    app.client.create_session(ad(&["0912000001", "0912000002"], "e")).await.unwrap();
    assert_eq!(app.sim.sessions().await.len(), 1);
}

/// Friday 2027-01-08 and Saturday 2027-01-09, in Asia/Ho_Chi_Minh.
fn friday(hh_mm: &str) -> String {
    format!("2027-01-08T{hh_mm}:00+07:00")
}
fn saturday(hh_mm: &str) -> String {
    format!("2027-01-09T{hh_mm}:00+07:00")
}

/// Tuesday 2027-01-05 08:00 local, the opening after Monday's 17:00, in milliseconds.
const TUESDAY_0800_MS: i64 = 1_799_110_800_000;

/// `n` advertising contacts (0914000000 + `first` …) at the default pacing (15 a round, a round
/// every 30 s: up to 15 contacts dial for 30 s), `retries` redials 0 s apart (a pass of 30 s each).
fn paced(first: u32, n: u32, retries: i32, key: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: SCRIPT.to_owned(),
        contacts: (first..first + n)
            .map(|i| pb::Contact { phone: format!("0914{i:06}"), ..Default::default() })
            .collect(),
        external_session_id: key.to_owned(),
        purpose: pb::CallPurpose::Advertising as i32,
        retry_count: Some(retries),
        retry_interval: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        ..Default::default()
    }
}

/// The money edge: at 16:59 (the clock runs from 16:59:00) a session whose dialling ends by 17:00
/// goes; one that would dial past 17:00, by more rounds or by a redial, is refused with how many would
/// fit, or deferred to the next day's 08:00 (send_time upstream). At 17:00 exactly the hours are closed.
#[tokio::test]
async fn at_four_fifty_nine_only_dialling_that_ends_by_five_goes_and_five_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_policy(dir.path(), &local("16:59"), |_| {}).await;
    // One contact: one round of 30 s, ends about 16:59:30.
    let s = app.client.create_session(paced(0, 1, 0, "one")).await.unwrap().into_inner().session.unwrap();
    assert!(s.rejected_contacts.is_empty() && s.start_time.is_none(), "{s:?}");
    let sent = app.sim.sessions().await;
    assert_eq!(sent.len(), 1);
    assert!(sent[0]["body"].get("send_time").is_none_or(|t| t.is_null()), "sent now: {}", sent[0]);
    // Sixteen contacts: two rounds, 60 s from 16:59:00.x, past 17:00; one round (15) fits.
    let err = app.client.create_session(paced(10, 16, 0, "more")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "CALLING_WINDOW_TOO_SHORT");
    assert_eq!(meta(&err, "max_contacts").as_deref(), Some("15"));
    // One contact with one redial (service: the hours without the preset's one call a day): two
    // passes, 60 s, past 17:00; not even one contact fits.
    let retry =
        |key: &str| pb::CreateSessionRequest { purpose: pb::CallPurpose::Service as i32, ..paced(30, 1, 1, key) };
    let err = app.client.create_session(retry("retry")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "CALLING_WINDOW_TOO_SHORT");
    assert_eq!(meta(&err, "max_contacts").as_deref(), Some("0"));
    assert_eq!(app.sim.sessions().await.len(), 1, "nothing refused was sent");
    // Both deferred: to Tuesday 08:00, sent with that send_time.
    for (mut req, contacts) in [(paced(10, 16, 0, "more-later"), 16), (retry("retry-later"), 1)] {
        req.defer_to_calling_hours = true;
        let key = req.external_session_id.clone();
        let s = app.client.create_session(req).await.unwrap().into_inner().session.unwrap();
        assert_eq!(s.start_time, Some(prost_types::Timestamp { seconds: TUESDAY_0800_MS / 1000, nanos: 0 }), "{key}");
        assert!(s.rejected_contacts.is_empty(), "{key}: {s:?}");
        let sent = app.sim.sessions().await;
        let last = &sent.last().unwrap()["body"];
        assert_eq!(last["send_time"], serde_json::json!(TUESDAY_0800_MS), "{key}: {last}");
        assert_eq!(last["contact_info"].as_array().unwrap().len(), contacts, "{key}: {last}");
    }
    assert_eq!(app.sim.sessions().await.len(), 3);
    // Under the preset a redial is two planned calls, over its one a day whenever it starts.
    let mut req = paced(40, 1, 1, "ad-retry-later");
    req.defer_to_calling_hours = true;
    let err = app.client.create_session(req).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "NO_CALLABLE_CONTACTS");
    assert_eq!(app.sim.sessions().await.len(), 3);

    // To the second, with the caller's start_time (the clock does not move it): a 30 s round from
    // 16:59:30 ends at 17:00:00 and goes; from 16:59:31 it would end at 17:00:01; 17:00:00 is closed.
    let starting = |first: u32, t: &str| pb::CreateSessionRequest { start_time: Some(at(t)), ..paced(first, 1, 0, t) };
    let s = app.client.create_session(starting(60, "2027-01-04T16:59:30+07:00")).await.unwrap().into_inner();
    assert_eq!(s.session.unwrap().start_time, Some(at("2027-01-04T16:59:30+07:00")));
    let sent = app.sim.sessions().await;
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[3]["body"]["send_time"], serde_json::json!(at("2027-01-04T16:59:30+07:00").seconds * 1000));
    let err = app.client.create_session(starting(61, "2027-01-04T16:59:31+07:00")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "CALLING_WINDOW_TOO_SHORT");
    assert_eq!(meta(&err, "max_contacts").as_deref(), Some("0"));
    let err = app.client.create_session(starting(62, "2027-01-04T17:00:00+07:00")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "OUTSIDE_CALLING_HOURS");
    assert_eq!(meta(&err, "next_opening").as_deref(), Some("2027-01-05T01:00:00Z"));
    assert_eq!(app.sim.sessions().await.len(), 4);
    drop(app);

    // 17:00:00 exactly: closed (the window is [08:00, 17:00)), the next opening Tuesday 08:00.
    let mut app = spawn_policy(dir.path(), &local("17:00"), |_| {}).await;
    let err = app.client.create_session(paced(50, 1, 0, "five")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "OUTSIDE_CALLING_HOURS");
    assert_eq!(meta(&err, "next_opening").as_deref(), Some("2027-01-05T01:00:00Z"));
    assert!(app.sim.sessions().await.is_empty());
}

/// The preset names no days (Decree 91 limits hours, not days): Saturday 10:00 is open. A purpose
/// with `days` and `blackout_dates` skips the weekend and the blackout date, both for
/// OUTSIDE_CALLING_HOURS's next_opening and for a deferral from Friday 16:59.
#[tokio::test]
async fn weekends_are_open_under_the_preset_and_closed_with_days_and_a_blackout_date_skipped() {
    const WEEKDAYS: &str = "policies:
  - tenant: default
    time_zone: Asia/Ho_Chi_Minh
    do_not_call_files: [DNC]
    advertising:
      preset: vn-decree-91
    service:
      hours: [\"08:00-17:00\"]
      days: [mon, tue, wed, thu, fri]
      blackout_dates: [\"2027-01-11\"]
";
    // Tuesday 2027-01-12 08:00 local: after Saturday, Sunday and Monday the 11th (blackout).
    const NEXT: &str = "2027-01-12T01:00:00Z";
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_with(dir.path(), WEEKDAYS, &saturday("10:00"), |_| {}).await;
    let s = app.client.create_session(paced(0, 1, 0, "sat-ad")).await.unwrap().into_inner().session.unwrap();
    assert!(s.start_time.is_none() && s.rejected_contacts.is_empty(), "{s:?}");
    let mut service = paced(1, 1, 0, "sat-service");
    service.purpose = pb::CallPurpose::Service as i32;
    let err = app.client.create_session(service).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "OUTSIDE_CALLING_HOURS");
    assert_eq!(meta(&err, "next_opening").as_deref(), Some(NEXT));
    assert_eq!(app.sim.sessions().await.len(), 1);
    drop(app);

    let mut app = spawn_with(dir.path(), WEEKDAYS, &friday("16:59"), |_| {}).await;
    let mut service = paced(2, 16, 0, "fri-service");
    service.purpose = pb::CallPurpose::Service as i32;
    service.defer_to_calling_hours = true;
    let s = app.client.create_session(service).await.unwrap().into_inner().session.unwrap();
    assert_eq!(s.start_time, Some(at(NEXT)));
    let sent = app.sim.sessions().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["body"]["send_time"], serde_json::json!(at(NEXT).seconds * 1000), "{}", sent[0]);
}

#[tokio::test]
async fn purpose_is_required_and_do_not_call_is_refused_per_contact() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_policy(dir.path(), &local("10:00"), |_| {}).await;
    let mut req = ad(&["0912345678"], "a");
    req.purpose = 0;
    let err = app.client.create_session(req).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_REQUEST");
    let fields: Vec<String> =
        err.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["purpose"]);

    // The file lists 0900000001; +84900000001 is the same number.
    let s = app.client.create_session(ad(&["+84900000001", "0912345678"], "b")).await.unwrap().into_inner();
    let s = s.session.unwrap();
    assert_eq!(rejections(&s), [("+84900000001".to_owned(), "DO_NOT_CALL".to_owned())]);
    let sent = app.sim.sessions().await;
    assert_eq!(sent[0]["body"]["contact_info"].as_array().unwrap().len(), 1, "the listed number was not sent");
    let err = app.client.create_session(ad(&["84900000001"], "c")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "NO_CALLABLE_CONTACTS");

    let text = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("callbot_policy_refused_contacts_total{tenant=\"default\",reason=\"DO_NOT_CALL\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn the_cap_refuses_the_second_session_and_an_upstream_refusal_releases() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_policy(dir.path(), &local("10:00"), |_| {}).await;
    app.client.create_session(ad(&["0912345678"], "first")).await.unwrap();
    // Two hours later (by start_time), the same number in another session: refused until 24 h
    // after the first; the other contact goes.
    let mut second = ad(&["0912345678", "0912345679"], "second");
    second.start_time = Some(at(&local("12:00")));
    let s = app.client.create_session(second).await.unwrap().into_inner().session.unwrap();
    assert_eq!(rejections(&s), [("0912345678".to_owned(), "FREQUENCY_CAP".to_owned())]);
    let after = s.rejected_contacts[0].callable_after.unwrap();
    let first_start = at(&local("10:00")).seconds;
    assert!((first_start + 86_400..first_start + 86_400 + 30).contains(&after.seconds), "{after:?}");
    assert_eq!(s.start_time, Some(at(&local("12:00"))));
    // The same key again (a retry of "first") is not a second call: the upstream says duplicate.
    let err = app.client.create_session(ad(&["0912345678"], "first")).await.unwrap_err();
    assert_status(&err, Code::AlreadyExists, "SESSION_ALREADY_EXISTS");

    // The upstream refuses a session: its reservation is released, the next session goes.
    app.sim.fault(serde_json::json!({"path": "/api/call_bot/execute_by_phone", "error": "limit_service"})).await;
    let err = app.client.create_session(ad(&["0977777777"], "refused")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "UPSTREAM_PLAN_LIMIT");
    let s = app.client.create_session(ad(&["0977777777"], "after")).await.unwrap().into_inner().session.unwrap();
    assert!(s.rejected_contacts.is_empty(), "{s:?}");
}

#[tokio::test]
async fn validate_only_sends_nothing_and_counts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_policy(dir.path(), &local("07:30"), |_| {}).await;
    for key in ["v1", "v2"] {
        let mut req = ad(&["0900000001", "0912345678"], key);
        req.validate_only = true;
        req.defer_to_calling_hours = true;
        let s = app.client.create_session(req).await.unwrap().into_inner().session.unwrap();
        assert_eq!(s.id, "");
        assert_eq!(rejections(&s), [("0900000001".to_owned(), "DO_NOT_CALL".to_owned())]);
        assert_eq!(s.start_time, Some(at(&local("08:00"))));
    }
    let mut req = ad(&["0912345678"], "v3");
    req.validate_only = true;
    let err = app.client.create_session(req).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "OUTSIDE_CALLING_HOURS");
    assert!(app.sim.sessions().await.is_empty(), "validate_only sent nothing");
    assert_eq!(app.sim.stats().await["execute_calls"], 0);
    // Nothing was counted: the real session is admitted.
    let mut req = ad(&["0912345678"], "real");
    req.defer_to_calling_hours = true;
    let s = app.client.create_session(req).await.unwrap().into_inner().session.unwrap();
    assert!(s.rejected_contacts.is_empty());
    assert_eq!(app.sim.sessions().await.len(), 1);
}

#[tokio::test]
async fn add_do_not_call_and_a_changed_file_refuse_on_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_policy(dir.path(), &local("10:00"), |_| {}).await;
    let added = app
        .client
        .add_do_not_call(pb::AddDoNotCallRequest { phones: vec!["+84912345678".into()], reason: "asked".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.added, 1);
    let mut req = ad(&["0912345678", "0912345679"], "a");
    req.purpose = pb::CallPurpose::Service as i32;
    let s = app.client.create_session(req.clone()).await.unwrap().into_inner().session.unwrap();
    assert_eq!(rejections(&s), [("0912345678".to_owned(), "DO_NOT_CALL".to_owned())]);
    let removed =
        app.client.remove_do_not_call(pb::RemoveDoNotCallRequest { phones: vec!["0912345678".into()] }).await.unwrap();
    assert_eq!(removed.into_inner().removed, 1);
    // The file changes: the number it now lists is refused once the reload took.
    write_policy(dir.path(), PRESET, "0912345679\n");
    let mut refused = false;
    for i in 0..100 {
        req.external_session_id = format!("b{i}");
        let s = app.client.create_session(req.clone()).await.unwrap().into_inner().session.unwrap();
        if rejections(&s) == [("0912345679".to_owned(), "DO_NOT_CALL".to_owned())] {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the changed do-not-call file was not applied");
    let bad =
        app.client.add_do_not_call(pb::AddDoNotCallRequest { phones: vec!["call me".into()], ..Default::default() });
    assert_status(&bad.await.unwrap_err(), Code::InvalidArgument, "INVALID_REQUEST");
}

/// One series' value on the facade's /metrics.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let page = reqwest::get(format!("http://{}/metrics", app.admin)).await.unwrap().text().await.unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {page}"))
}

/// Waits (5 s at most) until `series` reaches `value`.
async fn metric_reaches(app: &TestApp, series: &str, value: f64) {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while metric(app, series).await < value {
        assert!(tokio::time::Instant::now() < until, "{series} did not reach {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const RELOADS: &str = "callbot_config_reloads_total{file=\"calling_policy\"}";
const RELOAD_FAILURES: &str = "callbot_config_reload_failures_total{file=\"calling_policy\"}";

/// The policy file changed while the facade runs: a tenant's cap raised, then its hours narrowed, each in
/// force for the next request once the reloader took it (50 ms polls); then a bad file (an unknown time
/// zone, with hours that would admit the call): counted as a failure, and the next requests still follow the
/// last good file.
#[tokio::test]
async fn a_changed_policy_file_applies_to_the_next_request_and_a_bad_one_keeps_the_last_good_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_policy(dir.path(), &local("10:00"), |_| {}).await;
    assert_eq!(metric(&app, RELOADS).await, 0.0);
    assert_eq!(metric(&app, RELOAD_FAILURES).await, 0.0);
    app.client.create_session(ad(&["0912345678"], "first")).await.unwrap();
    let err = app.client.create_session(ad(&["0912345678"], "second")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "NO_CALLABLE_CONTACTS");

    // Two advertising calls a day for this tenant: the second session goes.
    let two_a_day = PRESET.replace("preset: vn-decree-91", "preset: vn-decree-91\n      max_calls_per_number: 2");
    write_policy(dir.path(), &two_a_day, "# registry\n0900000001\n");
    metric_reaches(&app, RELOADS, 1.0).await;
    let s = app.client.create_session(ad(&["0912345678"], "second")).await.unwrap().into_inner().session.unwrap();
    assert!(s.rejected_contacts.is_empty(), "{s:?}");
    let err = app.client.create_session(ad(&["0912345678"], "third")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "NO_CALLABLE_CONTACTS");

    // Advertising narrowed to 08:00-09:00: at 10:00 it is closed until tomorrow's 08:00.
    let narrowed = two_a_day.replace("preset: vn-decree-91", "preset: vn-decree-91\n      hours: [\"08:00-09:00\"]");
    write_policy(dir.path(), &narrowed, "# registry\n0900000001\n");
    metric_reaches(&app, RELOADS, 2.0).await;
    let err = app.client.create_session(ad(&["0912000001"], "narrowed")).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "OUTSIDE_CALLING_HOURS");
    assert_eq!(meta(&err, "next_opening").as_deref(), Some("2027-01-05T01:00:00Z"));

    // A bad file that would open the hours again: refused, counted, the narrowed rules stay.
    let bad = PRESET.replace("Asia/Ho_Chi_Minh", "Asia/Saigon_Typo");
    write_policy(dir.path(), &bad, "# registry\n0900000001\n");
    metric_reaches(&app, RELOAD_FAILURES, 1.0).await;
    for key in ["after-bad-1", "after-bad-2"] {
        let err = app.client.create_session(ad(&["0912000001"], key)).await.unwrap_err();
        assert_status(&err, Code::FailedPrecondition, "OUTSIDE_CALLING_HOURS");
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    // The same bad content is counted once, not at every poll; the last good file's count stays.
    assert_eq!(metric(&app, RELOAD_FAILURES).await, 1.0);
    assert_eq!(metric(&app, RELOADS).await, 2.0);
    assert_eq!(app.sim.sessions().await.len(), 2);
}

#[tokio::test]
async fn a_bad_policy_file_refuses_to_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), &PRESET.replace("Asia/Ho_Chi_Minh", "Asia/Saigon_Typo"), "");
    let sim = TestSim::start(SimConfig::default()).await;
    let mut settings = test_settings(&sim.url);
    settings.policy.calling_policy = Some(path);
    let err = Application::build(settings).await.err().expect("refused");
    let err = err.to_string();
    assert!(err.ends_with("policies[0] (default).time_zone: \"Asia/Saigon_Typo\" is not an IANA zone"), "{err}");
    assert!(!err.contains('\n'));
}

/// The disk event store on `data_dir`: the policy keeps its counts in the same database.
fn on_disk(s: &mut Settings, data_dir: std::path::PathBuf) {
    s.events.store = callbot_facade::config::EventsStoreKind::Disk;
    s.events.data_dir = data_dir;
}

#[tokio::test]
async fn a_restart_keeps_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_dir = data.clone();
    let mut app = spawn_policy(dir.path(), &local("10:00"), move |s| on_disk(s, data_dir)).await;
    app.client.create_session(ad(&["0912345678"], "before")).await.unwrap();
    app.client
        .add_do_not_call(pb::AddDoNotCallRequest { phones: vec!["0912345670".into()], ..Default::default() })
        .await
        .unwrap();
    app.shutdown();
    app.done.take().unwrap().await.unwrap().unwrap();
    let mut app = spawn_policy(dir.path(), &local("11:00"), move |s| on_disk(s, data)).await;
    let s = app.client.create_session(ad(&["0912345678", "0912345670", "0912345671"], "after")).await.unwrap();
    let s = s.into_inner().session.unwrap();
    assert_eq!(
        rejections(&s),
        [("0912345678".to_owned(), "FREQUENCY_CAP".to_owned()), ("0912345670".to_owned(), "DO_NOT_CALL".to_owned())]
    );
}

#[tokio::test]
async fn a_25000_contact_campaign_is_scheduled_within_the_hours_over_two_days_and_its_rerun_starts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_policy(dir.path(), &local("08:00"), |s| s.service.max_contacts = 500).await;
    let spec = pb::CampaignSpec {
        campaign_id: "tet-2027".into(),
        script_id: SCRIPT.into(),
        purpose: pb::CallPurpose::Service as i32,
        schedule_within_calling_hours: true,
        start_time: Some(at(&local("08:00"))),
        chunk_size: 500,
        ..Default::default()
    };
    let messages = || {
        let mut m =
            vec![pb::CreateCampaignRequest { item: Some(pb::create_campaign_request::Item::Spec(spec.clone())) }];
        for b in 0..25 {
            let contacts = (0..1000)
                .map(|i| pb::Contact { phone: format!("0913{:06}", b * 1000 + i), ..Default::default() })
                .collect();
            m.push(pb::CreateCampaignRequest {
                item: Some(pb::create_campaign_request::Item::Batch(pb::ContactBatch { contacts })),
            });
        }
        m
    };
    let run = |answers: Vec<pb::CreateCampaignResponse>| -> Vec<(i64, bool)> {
        answers
            .iter()
            .map(|a| {
                let s = a.session.as_ref().unwrap();
                (s.start_time.unwrap().seconds, a.resumed)
            })
            .collect()
    };
    let answers: Vec<_> = collect_stream(&mut app, messages()).await;
    let first = run(answers);
    assert_eq!(first.len(), 50);
    // 500 contacts at the default pacing (15 a round, a round every 30 s) dial for 17 minutes.
    let chunk = 17 * 60;
    let monday = at(&local("08:00")).seconds;
    let tuesday = monday + 86_400;
    for (i, (start, resumed)) in first.iter().enumerate() {
        assert!(!resumed);
        let (day, k) = if i < 31 { (monday, i as i64) } else { (tuesday, i as i64 - 31) };
        assert_eq!(*start, day + k * chunk, "chunk {i}");
        assert!(start + chunk <= day + 9 * 3600, "chunk {i} ends by 17:00");
    }
    let sent = app.sim.sessions().await;
    assert_eq!(sent.len(), 50);
    assert_eq!(sent[31]["body"]["send_time"], serde_json::json!(tuesday * 1000));
    // The re-run: the same schedule, every chunk resumed, nothing started twice.
    let again = run(collect_stream(&mut app, messages()).await);
    assert_eq!(again.iter().map(|(s, _)| *s).collect::<Vec<_>>(), first.iter().map(|(s, _)| *s).collect::<Vec<_>>());
    assert!(again.iter().all(|(_, resumed)| *resumed));
    assert_eq!(app.sim.sessions().await.len(), 50);
}

async fn collect_stream(
    app: &mut TestApp,
    messages: Vec<pb::CreateCampaignRequest>,
) -> Vec<pb::CreateCampaignResponse> {
    let mut stream = app.client.create_campaign(tokio_stream::iter(messages)).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        out.push(m);
    }
    out
}

#[tokio::test]
async fn two_replicas_on_one_jetstream_admit_one_of_fifty_racers_and_share_added_numbers() {
    let nats = super::nats::Nats::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = nats.url();
    let a = spawn_policy(dir_a.path(), &local("10:00"), |s| s.events.nats_url = Some(url.clone())).await;
    let b = spawn_policy(dir_b.path(), &local("10:00"), |s| s.events.nats_url = Some(url.clone())).await;
    let racers = (0..50).map(|i| {
        let mut client = if i % 2 == 0 { a.client.clone() } else { b.client.clone() };
        async move { client.create_session(ad(&["0912345678"], &format!("race-{i}"))).await }
    });
    let answers = futures::future::join_all(racers).await;
    let admitted = answers.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 1, "exactly one of 50 racers is admitted");
    for err in answers.iter().filter_map(|r| r.as_ref().err()) {
        assert_status(err, Code::FailedPrecondition, "NO_CALLABLE_CONTACTS");
    }
    assert_eq!(a.sim.sessions().await.len() + b.sim.sessions().await.len(), 1);

    // "Stop calling me" on A is refused by B within a second.
    let mut a_client = a.client.clone();
    a_client
        .add_do_not_call(pb::AddDoNotCallRequest { phones: vec!["0912345670".into()], ..Default::default() })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut b_client = b.client.clone();
    let mut req = ad(&["0912345670", "0912345671"], "b-0");
    req.purpose = pb::CallPurpose::Service as i32;
    loop {
        let s = b_client.create_session(req.clone()).await.unwrap().into_inner().session.unwrap();
        if rejections(&s) == [("0912345670".to_owned(), "DO_NOT_CALL".to_owned())] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "replica B still calls a number A listed");
        req.external_session_id = format!("b-{}", started.elapsed().as_micros());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn campaign_dry_run_prints_the_verdict_per_chunk_and_calls_no_one() {
    let dir = tempfile::tempdir().unwrap();
    // 16:40 local: chunk 0 (two contacts, one round of 30 s at the default pacing) dials now,
    // chunk 1 (with a do-not-call number) after it.
    let app = spawn_policy(dir.path(), &local("16:40"), |_| {}).await;
    let csv = dir.path().join("contacts.csv");
    std::fs::write(&csv, "phone\n0912345678\n0912345679\n0900000001\n0912345680\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_callbot-facade"))
        .args(["campaign", "--script", SCRIPT, "--csv", csv.to_str().unwrap(), "--chunk-size", "2"])
        .args(["--purpose", "advertising", "--schedule-within-calling-hours", "--dry-run"])
        .args(["--server", &format!("http://{}", app.addr)])
        .env_remove("CALLBOT_SERVER")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("dry run: nothing is sent upstream and nothing is counted"), "{stdout}");
    assert!(stdout.contains("chunk 0: 2/2 contacts would dial from 2027-01-04T09:40:"), "{stdout}");
    assert!(stdout.contains("chunk 1: 1/2 contacts would dial from 2027-01-04T09:40:3"), "{stdout}");
    assert!(stdout.contains("1 DO_NOT_CALL"), "{stdout}");
    assert!(app.sim.sessions().await.is_empty(), "the dry run called no one");
}
