//! The console over HTTP (API.md §11): each page's data is what the gRPC API answers, phones
//! masked unless `--console-show-phones`; with caller authentication on, no token means the
//! login form, a forged cookie is refused, forms carry CSRF tokens, and tenant A never sees
//! tenant B's session (the same "not found" as GetSessionReport).

use std::path::PathBuf;

use reqwest::{StatusCode, header, redirect::Policy};
use serde_json::Value;

use super::events::{FAST, free_addr, wait_session_done, wait_until};
use super::*;

const SCRIPT: &str = "64915bc76a690c0edad14723";

/// A facade with its receiver on (sessions are recorded), optionally two tenants by bearer token
/// (`token-a` acts for `alpha`, `token-b` for `beta`), adjusted further by `adjust`.
pub async fn spawn_console(tenants: bool, adjust: impl FnOnce(&mut Settings)) -> (TestApp, Option<tempfile::TempDir>) {
    let hook = free_addr();
    let sim = TestSim::start(SimConfig { time_scale: FAST, ..SimConfig::default() }).await;
    let mut settings = test_settings(&sim.url);
    settings.events.webhook_listen = Some(hook);
    settings.events.webhook_secret = Some(ApiKey::new("test-webhook-secret"));
    settings.events.webhook_public_url = Some(format!("http://{hook}"));
    let dir = tenants.then(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| -> PathBuf { dir.path().join(n) };
        std::fs::write(path("alpha.key"), "alpha-key").unwrap();
        std::fs::write(path("beta.key"), "beta-key").unwrap();
        let sha = |t: &str| -> String {
            use sha2::Digest as _;
            sha2::Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
        };
        let yaml = format!(
            "tenants:\n  - name: alpha\n    api_key_file: {}\n    callers:\n      - bearer_sha256: {}\n  - name: beta\n    api_key_file: {}\n    callers:\n      - bearer_sha256: {}\n",
            path("alpha.key").display(),
            sha("token-a"),
            path("beta.key").display(),
            sha("token-b"),
        );
        std::fs::write(path("tenants.yaml"), yaml).unwrap();
        settings.upstream.api_key = None;
        settings.security.tenants_file = Some(path("tenants.yaml"));
        dir
    });
    adjust(&mut settings);
    let registrations = if tenants { 2 } else { 1 };
    let app = start(settings, sim).await;
    wait_until(|| async {
        let v: Value = reqwest::get(format!("{}/_sim/stats", app.sim.url)).await.unwrap().json().await.unwrap();
        v["webhook_register_calls"].as_u64() == Some(registrations)
    })
    .await;
    (app, dir)
}

/// An HTTP client that does not follow redirects (the tests look at them).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

/// A session of these numbers, as the caller `token` (none: no authorization).
pub async fn create_as(app: &TestApp, token: Option<&str>, name: &str, phones: &[&str]) -> String {
    let mut request = tonic::Request::new(pb::CreateSessionRequest {
        script_id: SCRIPT.into(),
        name: name.into(),
        contacts: phones.iter().map(|p| pb::Contact { phone: (*p).into(), ..Default::default() }).collect(),
        ..Default::default()
    });
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    app.client.clone().create_session(request).await.unwrap().into_inner().session.unwrap().id
}

async fn get_json(client: &reqwest::Client, url: String, cookie: Option<&str>) -> (StatusCode, Value) {
    let mut request = client.get(url);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `name=value` of a Set-Cookie header named `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response.headers().get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let pair = v.split(';').next()?;
        let (k, value) = pair.split_once('=')?;
        (k == name).then(|| (pair.to_owned(), v.to_owned())).filter(|_| !value.is_empty())
    })
}

/// Logs in as `token`: the form's CSRF cookie and field, then the post; the login cookie.
pub async fn login(client: &reqwest::Client, admin: SocketAddr, token: &str) -> Result<String, StatusCode> {
    let form = client.get(format!("http://{admin}/console/login")).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let (csrf_cookie, attributes) = set_cookie(&form, "callbot_console_csrf").expect("a CSRF cookie");
    assert!(attributes.contains("HttpOnly") && attributes.contains("SameSite=Strict"), "{attributes}");
    let html = form.text().await.unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    assert_eq!(csrf_cookie, format!("callbot_console_csrf={csrf}"));
    let answer = client
        .post(format!("http://{admin}/console/login"))
        .header(header::COOKIE, &csrf_cookie)
        .form(&[("token", token), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    if answer.status() != StatusCode::SEE_OTHER {
        return Err(answer.status());
    }
    let (cookie, attributes) = set_cookie(&answer, "callbot_console").expect("a login cookie");
    assert!(attributes.contains("HttpOnly") && attributes.contains("SameSite=Strict"), "{attributes}");
    assert!(attributes.contains("Path=/console"), "{attributes}");
    Ok(cookie)
}

#[tokio::test]
async fn an_open_console_shows_what_the_grpc_api_answers_with_phones_masked() {
    let (app, _) = spawn_console(false, |_| {}).await;
    let client = http();
    let base = format!("http://{}", app.admin);
    // The pages: one shell, its assets compiled in, nothing from elsewhere.
    for path in ["/console/", "/console/sessions/x", "/console/campaigns/x", "/console/scripts", "/console/health"] {
        let page = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        let html = page.text().await.unwrap();
        assert!(html.contains("<meta charset=\"utf-8\">") && !html.contains("http://") && !html.contains("https://"));
    }
    let mut weight = 0;
    for asset in ["console.css", "console.js"] {
        let body = client.get(format!("{base}/console/assets/{asset}")).send().await.unwrap().text().await.unwrap();
        assert!(!body.contains("http://") && !body.contains("https://"), "{asset} loads nothing from elsewhere");
        weight += body.len();
    }
    assert!(weight < 150 * 1024, "page weight {weight}");

    let session = create_as(&app, None, "Nhắc lịch hẹn", &["0912345670", "0912345677", "0912345678"]).await;
    wait_session_done(&app.sim, &session).await;
    let report = app
        .client
        .clone()
        .get_session_report(pb::GetSessionReportRequest { session_id: session.clone() })
        .await
        .unwrap()
        .into_inner();

    // Sessions: ListSessions's, with the report's counts.
    let (status, list) = get_json(&client, format!("{base}/console/api/sessions"), None).await;
    assert_eq!(status, StatusCode::OK);
    let row = &list["sessions"][0];
    assert_eq!(row["id"], session.as_str());
    assert_eq!(row["name"], "Nhắc lịch hẹn");
    assert_eq!(row["contacts_total"], 3);
    assert_eq!(row["counts"]["answered"], report.answered);
    assert_eq!(row["counts"]["busy"], report.busy);
    assert_eq!(row["counts"]["rejected"], report.rejected);
    assert_eq!(row["finished"], true);

    // Session: GetSessionReport's, phones masked.
    let (status, page) = get_json(&client, format!("{base}/console/api/sessions/{session}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let phones: Vec<&str> = page["contacts"].as_array().unwrap().iter().map(|c| c["phone"].as_str().unwrap()).collect();
    assert_eq!(phones, ["*******670", "*******677", "*******678"]);
    let outcomes: Vec<&str> =
        page["contacts"].as_array().unwrap().iter().map(|c| c["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["answered", "busy", "rejected"]);
    assert_eq!(page["counts"]["answered"], report.answered);

    // Unknown: the same reason as GetSessionReport's.
    let (status, err) = get_json(&client, format!("{base}/console/api/sessions/nope"), None).await;
    assert_eq!((status, err["reason"].as_str()), (StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")));

    // Scripts: diacritics folded, as ListScripts's name_contains.
    let (_, scripts) = get_json(&client, format!("{base}/console/api/scripts?q=DIEM%20thi"), None).await;
    let ids: Vec<&str> = scripts["scripts"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&SCRIPT), "{scripts}");
    assert!(
        scripts["scripts"].as_array().unwrap().iter().all(|s| s["name"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("thi"))
    );

    // Health: the upstream answered, the store is up, the deliveries counted.
    let (_, health) = get_json(&client, format!("{base}/console/api/health"), None).await;
    assert_eq!(health["upstream"]["reachable"], true);
    assert_eq!(health["event_store_up"], true);
    assert!(health["webhook_deliveries_total"].as_f64().unwrap() >= 8.0, "{health}");

    // The open console needs no login: the form sends back to the pages.
    let login = client.get(format!("{base}/console/login")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);

    // The session's live feed starts with its report.
    let mut live = client.get(format!("{base}/console/live/sessions/{session}")).send().await.unwrap();
    assert_eq!(live.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk =
            tokio::time::timeout(std::time::Duration::from_secs(5), live.chunk()).await.unwrap().unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: report\ndata: {"), "{text}");
}

#[tokio::test]
async fn show_phones_shows_them_whole() {
    let (app, _) = spawn_console(false, |s| s.server.console_show_phones = true).await;
    let session = create_as(&app, None, "", &["0912345670"]).await;
    let (_, page) = get_json(&http(), format!("http://{}/console/api/sessions/{session}", app.admin), None).await;
    assert_eq!(page["contacts"][0]["phone"], "0912345670");
}

#[tokio::test]
async fn with_tenants_a_login_sees_its_own_tenant_only_and_forged_cookies_are_refused() {
    let (app, _dir) = spawn_console(true, |_| {}).await;
    let client = http();
    let base = format!("http://{}", app.admin);
    let a = create_as(&app, Some("token-a"), "A", &["0912345670"]).await;
    let b = create_as(&app, Some("token-b"), "B", &["0912345677"]).await;

    // No token: the pages send to the login form, the data is refused.
    let page = client.get(format!("{base}/console/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()[header::LOCATION], "/console/login");
    let (status, err) = get_json(&client, format!("{base}/console/api/sessions"), None).await;
    assert_eq!((status, err["reason"].as_str()), (StatusCode::UNAUTHORIZED, Some("CONSOLE_LOGIN_REQUIRED")));
    let live = client.get(format!("{base}/console/live/sessions/{a}")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::UNAUTHORIZED);

    // A token the facade does not accept, and a form without its CSRF cookie, start no login.
    assert_eq!(login(&client, app.admin, "token-x").await, Err(StatusCode::UNAUTHORIZED));
    let forged = client
        .post(format!("{base}/console/login"))
        .form(&[("token", "token-a"), ("csrf", "0123456789abcdef0123456789abcdef")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&forged, "callbot_console").is_none());

    // Tenant A: its session, never B's (the same "not found" as over gRPC).
    let cookie_a = login(&client, app.admin, "token-a").await.unwrap();
    let (status, list) = get_json(&client, format!("{base}/console/api/sessions"), Some(&cookie_a)).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [a.as_str()]);
    let (status, _) = get_json(&client, format!("{base}/console/api/sessions/{a}"), Some(&cookie_a)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = get_json(&client, format!("{base}/console/api/sessions/{b}"), Some(&cookie_a)).await;
    assert_eq!((status, err["reason"].as_str()), (StatusCode::NOT_FOUND, Some("SESSION_NOT_FOUND")));
    let mut as_a = tonic::Request::new(pb::GetSessionReportRequest { session_id: b.clone() });
    as_a.metadata_mut().insert("authorization", "Bearer token-a".parse().unwrap());
    let grpc = app.client.clone().get_session_report(as_a).await.unwrap_err();
    assert_eq!(reason(&grpc), "SESSION_NOT_FOUND");
    assert_eq!(err["message"], grpc.message(), "the console's not found is gRPC's");
    let live =
        client.get(format!("{base}/console/live/sessions/{b}")).header(header::COOKIE, &cookie_a).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::NOT_FOUND);
    let (_, me) = get_json(&client, format!("{base}/console/api/me"), Some(&cookie_a)).await;
    assert_eq!((me["tenant"].as_str(), me["login"].as_bool()), (Some("alpha"), Some(true)));

    // Tenant B sees B's only.
    let cookie_b = login(&client, app.admin, "token-b").await.unwrap();
    let (_, list) = get_json(&client, format!("{base}/console/api/sessions"), Some(&cookie_b)).await;
    assert_eq!(list["sessions"][0]["id"], b.as_str());
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);

    // A forged cookie (a well-formed id no login has) is no login.
    let forged = "callbot_console=00112233445566778899aabbccddeeff";
    let (status, _) = get_json(&client, format!("{base}/console/api/sessions"), Some(forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let page = client.get(format!("{base}/console/")).header(header::COOKIE, forged).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);

    // Logout posts the login's CSRF token; a wrong one changes nothing.
    let mut stream =
        client.get(format!("{base}/console/live/sessions/{a}")).header(header::COOKIE, &cookie_a).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let wrong = client
        .post(format!("{base}/console/logout"))
        .header(header::COOKIE, &cookie_a)
        .form(&[("csrf", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let (status, _) = get_json(&client, format!("{base}/console/api/sessions"), Some(&cookie_a)).await;
    assert_eq!(status, StatusCode::OK);
    let out = client
        .post(format!("{base}/console/logout"))
        .header(header::COOKIE, &cookie_a)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let (status, _) = get_json(&client, format!("{base}/console/api/sessions"), Some(&cookie_a)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the login is over");
    // Its live stream ends too.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while stream.chunk().await.ok().flatten().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the live stream ended at logout");
    // A GET changes nothing: logging out takes a post.
    let get = client.get(format!("{base}/console/logout")).header(header::COOKIE, &cookie_b).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = get_json(&client, format!("{base}/console/api/sessions"), Some(&cookie_b)).await;
    assert_eq!(status, StatusCode::OK);
}

/// The Campaign page's contacts accepted and refused by reason (the calling policy's and the
/// provider's, summed over its chunks), each chunk's purpose and start on the Sessions page, and
/// the Health page's policy refusals by reason: the viewer's tenant's.
#[tokio::test]
async fn the_campaign_page_shows_contacts_refused_by_reason_and_health_the_policy_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let dnc = dir.path().join("dnc.txt");
    std::fs::write(&dnc, "0900000001\n").unwrap();
    let policy = dir.path().join("policy.yaml");
    let yaml = format!(
        "policies:\n  - tenant: default\n    time_zone: Asia/Ho_Chi_Minh\n    do_not_call_files: [{}]\n    \
         advertising:\n      preset: vn-decree-91\n",
        dnc.display()
    );
    std::fs::write(&policy, yaml).unwrap();
    let (app, _) = spawn_console(false, |s| {
        s.policy.calling_policy = Some(policy.clone());
        // Monday 2027-01-04, 10:00 in Ho Chi Minh City: within the calling hours.
        s.policy.clock_start = Some("2027-01-04T10:00:00+07:00".into());
    })
    .await;
    let phones = ["0912345670", "0900000001", "0912345677", "0912345999", "0912345678", "+84900000001"];
    let spec = pb::CampaignSpec {
        campaign_id: "reminders".into(),
        script_id: SCRIPT.into(),
        chunk_size: 3,
        purpose: pb::CallPurpose::Advertising as i32,
        calls_per_round: Some(3),
        ..Default::default()
    };
    let contacts = phones.iter().map(|p| pb::Contact { phone: (*p).into(), ..Default::default() }).collect();
    let messages = vec![
        pb::CreateCampaignRequest { item: Some(pb::create_campaign_request::Item::Spec(spec)) },
        pb::CreateCampaignRequest {
            item: Some(pb::create_campaign_request::Item::Batch(pb::ContactBatch { contacts })),
        },
    ];
    let mut answers = app.client.clone().create_campaign(tokio_stream::iter(messages)).await.unwrap().into_inner();
    let mut refused = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        for r in answer.session.unwrap().rejected_contacts {
            refused.push((r.phone, r.reason));
        }
    }
    refused.sort();
    let want = [("+84900000001", "DO_NOT_CALL"), ("0900000001", "DO_NOT_CALL"), ("0912345999", "number_dnc")];
    assert_eq!(refused, want.map(|(p, r)| (p.to_owned(), r.to_owned())), "the gRPC answers");

    let client = http();
    let base = format!("http://{}", app.admin);
    let (status, campaign) = get_json(&client, format!("{base}/console/api/campaigns/reminders"), None).await;
    assert_eq!(status, StatusCode::OK, "{campaign}");
    assert_eq!(campaign["chunks"].as_array().unwrap().len(), 2);
    assert_eq!(campaign["contacts_total"], 3, "accepted: six less the three refused");
    assert_eq!(campaign["contacts_refused"], 3);
    assert_eq!(campaign["refused_by_reason"], serde_json::json!({"DO_NOT_CALL": 2, "number_dnc": 1}));
    let chunk_refusals: Vec<&Value> = campaign["chunks"].as_array().unwrap().iter().map(|c| &c["refused"]).collect();
    assert_eq!(
        chunk_refusals,
        [&serde_json::json!({"DO_NOT_CALL": 1}), &serde_json::json!({"DO_NOT_CALL": 1, "number_dnc": 1})]
    );

    // Sessions: each chunk's purpose; no start (they dial at once) and the unknown count.
    let (_, list) = get_json(&client, format!("{base}/console/api/sessions?campaign=reminders-"), None).await;
    for row in list["sessions"].as_array().unwrap() {
        assert_eq!(row["purpose"], "advertising", "{row}");
        assert_eq!(row["start_ms"], Value::Null, "{row}");
        assert_eq!(row["counts"]["unknown"], 0, "{row}");
    }

    // Health: the policy's refusals of this tenant, by reason (not the provider's).
    let (_, health) = get_json(&client, format!("{base}/console/api/health"), None).await;
    assert_eq!(health["refusals_by_reason"], serde_json::json!({"DO_NOT_CALL": 2.0, "FREQUENCY_CAP": 0.0}), "{health}");
    // The page that shows them is served, and its script renders the table from that field.
    let js = client.get(format!("{base}/console/assets/console.js")).send().await.unwrap().text().await.unwrap();
    assert!(js.contains("h.refusals_by_reason") && js.contains("c.refused_by_reason"));
}

/// A contact whose outcome came from the call history (every webhook lost) says so on the
/// Session page (`source`), with the reconciled count; the Sessions page has the same count.
#[tokio::test]
async fn a_reconciled_contact_shows_source_history_and_the_reconciled_count() {
    let (app, _) = spawn_console(false, |s| s.events.reconcile_after = std::time::Duration::from_secs(1)).await;
    let lose = reqwest::Client::new()
        .post(format!("{}/_sim/webhook_faults", app.sim.url))
        .json(&serde_json::json!({"kind": "lose", "rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(lose.status(), StatusCode::OK);
    let session = create_as(&app, None, "", &["0912345670", "0912345677"]).await;
    wait_session_done(&app.sim, &session).await;
    let client = http();
    let base = format!("http://{}", app.admin);
    wait_until(|| async {
        let (_, page) = get_json(&client, format!("{base}/console/api/sessions/{session}"), None).await;
        page["finished"] == true
    })
    .await;
    let (_, page) = get_json(&client, format!("{base}/console/api/sessions/{session}"), None).await;
    let sources: Vec<&str> =
        page["contacts"].as_array().unwrap().iter().map(|c| c["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["history", "history"], "{page}");
    assert_eq!((page["reconciled"].as_i64(), page["counts"]["unknown"].as_i64()), (Some(2), Some(0)));
    let (_, list) = get_json(&client, format!("{base}/console/api/sessions"), None).await;
    assert_eq!(list["sessions"][0]["reconciled"], 2);

    // With the webhooks back, a contact learned from a webhook says so.
    let clear = reqwest::Client::new().delete(format!("{}/_sim/webhook_faults", app.sim.url)).send().await.unwrap();
    assert_eq!(clear.status(), StatusCode::OK);
    let direct = create_as(&app, None, "", &["0912345678"]).await;
    wait_session_done(&app.sim, &direct).await;
    wait_until(|| async {
        let (_, page) = get_json(&client, format!("{base}/console/api/sessions/{direct}"), None).await;
        page["finished"] == true
    })
    .await;
    let (_, page) = get_json(&client, format!("{base}/console/api/sessions/{direct}"), None).await;
    assert_eq!((page["contacts"][0]["source"].as_str(), page["reconciled"].as_i64()), (Some("webhook"), Some(0)));
}

/// The Health page's refusals are the viewer's tenant's: beta does not see alpha's.
#[tokio::test]
async fn health_shows_the_policy_refusals_of_the_viewers_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let dnc = dir.path().join("dnc.txt");
    std::fs::write(&dnc, "0900000001\n").unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!("policies:\n  - tenant: alpha\n    time_zone: UTC\n    do_not_call_files: [{}]\n", dnc.display()),
    )
    .unwrap();
    let (app, _tenants) = spawn_console(true, |s| s.policy.calling_policy = Some(policy.clone())).await;
    create_as(&app, Some("token-a"), "", &["0900000001", "0912345670"]).await;
    let client = http();
    let base = format!("http://{}", app.admin);
    let refusals = |cookie: String| {
        let client = client.clone();
        let url = format!("{base}/console/api/health");
        async move { get_json(&client, url, Some(&cookie)).await.1["refusals_by_reason"].clone() }
    };
    let alpha = refusals(login(&client, app.admin, "token-a").await.unwrap()).await;
    assert_eq!(alpha["DO_NOT_CALL"], 1.0, "{alpha}");
    let beta = refusals(login(&client, app.admin, "token-b").await.unwrap()).await;
    assert!(beta.get("DO_NOT_CALL").is_none_or(|n| n == 0.0), "alpha's refusals are not beta's: {beta}");
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"callbot_policy_refused_contacts_total{tenant="alpha",reason="DO_NOT_CALL"} 1"#),
        "{metrics}"
    );
}
