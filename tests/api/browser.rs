//! The console in a real browser (headless Chromium over the DevTools protocol, `cdp.rs`): sign in
//! as one tenant, create a session through gRPC, watch its per-contact table reach every final
//! outcome without a reload, check the outcome bar's numbers against GetSessionReport, fail to see
//! another tenant's session, read no error in the browser's console, and save a screenshot
//! (`target/console-screenshot.png`; `docs/console.png` too with `CALLBOT_UPDATE_SCREENSHOT=1`).
//! Also: the viewer's time zone is shown, the first Tab reaches the skip link, and a phone-sized
//! window scrolls no page sideways.
//!
//! Chromium is Debian's package (`scripts/install-chromium.sh`). Without it the test says so and
//! passes, unless `CALLBOT_REQUIRE_BROWSER=1` (the CI sets it), where it fails.

use std::time::Duration;

use serde_json::json;

use super::{
    cdp::{Browser, chromium},
    console::{http, spawn_console},
    *,
};

/// The simulator's time scale here: calls take a second or two, so the table visibly fills in.
const WATCHABLE: f64 = 60.0;

#[tokio::test]
async fn the_console_fills_in_live_in_a_real_browser() {
    let Some(binary) = chromium() else {
        assert!(
            std::env::var("CALLBOT_REQUIRE_BROWSER").is_err(),
            "CALLBOT_REQUIRE_BROWSER is set but no chromium: run scripts/install-chromium.sh"
        );
        eprintln!("SKIPPED: no chromium on PATH (scripts/install-chromium.sh installs it)");
        return;
    };
    let (app, _dir) = spawn_console(true, |_| {}).await;
    // The simulator's calls at a pace a person (and the test) can watch.
    let client = http();
    let set = client
        .put(format!("{}/_sim/time_scale", app.sim.url))
        .json(&json!({ "time_scale": WATCHABLE }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), reqwest::StatusCode::OK);
    let base = format!("http://{}", app.admin);
    let mut browser = Browser::start(&binary, 1280, 900).await;
    browser.call("Emulation.setTimezoneOverride", json!({ "timezoneId": "Asia/Ho_Chi_Minh" })).await;

    // No token: the login form. Sign in as tenant alpha.
    browser.open(&format!("{base}/console/")).await;
    browser.wait_for("location.pathname === '/console/login'", Duration::from_secs(5)).await;
    browser
        .eval("document.getElementById('token').value = 'token-a'; document.querySelector('form').submit(); true")
        .await;
    browser
        .wait_for(
            "location.pathname === '/console/' && document.getElementById('sessions-body')",
            Duration::from_secs(10),
        )
        .await;
    browser
        .wait_for("document.getElementById('who').textContent.includes('Tenant alpha')", Duration::from_secs(5))
        .await;
    // Times are the viewer's, with the zone shown (ICU names Ho Chi Minh City's zone Asia/Saigon).
    let zone = browser.eval("document.getElementById('zone').textContent").await;
    let zone = zone.as_str().unwrap();
    assert!(zone.contains("Asia/Ho_Chi_Minh (UTC+7)") || zone.contains("Asia/Saigon (UTC+7)"), "{zone}");

    // A session of tenant beta, and one of alpha's with every final outcome (last digit: 0 answered,
    // 5 no answer twice, 6 answered on its redial, 7 busy, 8 rejected, 9 failed).
    let theirs = super::console::create_as(&app, Some("token-b"), "Của tenant B", &["0912345670"]).await;
    let phones = ["0912345670", "0912345675", "0912345676", "0912345677", "0912345678", "0912345679"];
    let mut request = tonic::Request::new(pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        name: "Nhắc lịch tiêm chủng — lớp 12A".into(),
        contacts: phones.iter().map(|p| pb::Contact { phone: (*p).into(), ..Default::default() }).collect(),
        retry_count: Some(1),
        retry_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        ..Default::default()
    });
    request.metadata_mut().insert("authorization", "Bearer token-a".parse().unwrap());
    let session = app.client.clone().create_session(request).await.unwrap().into_inner().session.unwrap().id;

    // The Sessions page shows it without a reload (its live feed).
    browser.eval("window.__notReloaded = true").await;
    browser
        .wait_for(
            &format!("document.querySelector('#sessions-body tr[data-session=\"{session}\"]')"),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(browser.eval("document.querySelectorAll('#sessions-body tr').length").await, json!(1), "alpha's only");
    // Purpose (not said) and start (at once) as words.
    let row = browser
        .eval(&format!(
            "[...document.querySelector('#sessions-body tr[data-session=\"{session}\"]').children].map(td => td.textContent)"
        ))
        .await;
    assert_eq!((&row[3], &row[5]), (&json!("–"), &json!("At once")), "{row}");

    // The Session page: its table fills in live until every contact is final.
    browser
        .eval(&format!(
            "document.querySelector('#sessions-body a[href=\"/console/sessions/{session}\"]').click(); true"
        ))
        .await;
    browser.wait_for("document.querySelectorAll('#contacts-body tr').length === 6", Duration::from_secs(10)).await;
    browser.eval("window.__notReloaded = true").await;
    browser
        .wait_for(
            "[...document.querySelectorAll('#contacts-body tr')].every(r => r.dataset.final === 'true')",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(browser.eval("window.__notReloaded === true").await, json!(true), "filled in without a reload");
    let outcomes =
        browser.eval("[...document.querySelectorAll('#contacts-body tr')].map(r => r.dataset.outcome)").await;
    assert_eq!(outcomes, json!(["answered", "no_answer", "answered", "busy", "rejected", "failed"]));
    let masked = browser.eval("document.querySelector('#contacts-body tr').dataset.phone").await;
    assert_eq!(masked, json!("*******670"), "phones masked");

    // The bar's numbers are GetSessionReport's; every segment labelled with its count as text.
    let mut as_a = tonic::Request::new(pb::GetSessionReportRequest { session_id: session.clone() });
    as_a.metadata_mut().insert("authorization", "Bearer token-a".parse().unwrap());
    let report = app.client.clone().get_session_report(as_a).await.unwrap().into_inner();
    let legend = browser
        .eval("Object.fromEntries([...document.querySelectorAll('#session-legend li')].map(li => [li.dataset.outcome, Number(li.dataset.count)]))")
        .await;
    assert_eq!(
        legend,
        json!({
            "answered": report.answered, "no_answer": report.no_answer, "busy": report.busy,
            "rejected": report.rejected, "failed": report.failed, "unknown": report.unknown,
            "in_progress": report.in_progress,
        })
    );
    let labels = browser.eval("[...document.querySelectorAll('#session-legend li')].map(li => li.textContent)").await;
    assert_eq!(
        labels,
        json!(["Answered 2", "No answer 1", "Busy 1", "Rejected 1", "Failed 1", "Unknown 0", "In progress 0"])
    );
    // Where each outcome came from, as text: the provider's webhooks here.
    let sources =
        browser.eval("[...document.querySelectorAll('#contacts-body tr')].map(r => r.children[8].textContent)").await;
    assert_eq!(sources, json!(vec!["Webhook"; 6]));
    let progress = browser.eval("document.getElementById('progress').textContent").await;
    assert!(progress.as_str().unwrap().contains("0 unknown") && progress.as_str().unwrap().contains("0 reconciled"));
    let bar = browser.eval("document.getElementById('session-bar').getAttribute('aria-label')").await;
    assert!(bar.as_str().unwrap().starts_with("Outcomes of 6 contacts: Answered 2"), "{bar}");
    assert!(
        browser.eval("document.querySelectorAll('#timeline li').length").await.as_u64().unwrap() >= 8,
        "the event timeline"
    );
    assert_eq!(browser.errors(), Vec::<String>::new(), "no error in the browser's console");

    // The screenshot for the README: the top of the page, at 3/4 scale (a small PNG).
    let png = browser.screenshot(1280, 720, 0.75).await;
    assert!(png.starts_with(b"\x89PNG"));
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshot.png");
    std::fs::write(&target, &png).unwrap();
    if std::env::var("CALLBOT_UPDATE_SCREENSHOT").is_ok() {
        std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png"), &png).unwrap();
    }

    // Keyboard: the first Tab reaches the skip link.
    browser
        .call(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyDown", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9 }),
        )
        .await;
    browser
        .call(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9 }),
        )
        .await;
    assert_eq!(browser.eval("document.activeElement.className").await, json!("skip"));

    // A phone-sized window: no page scrolls sideways (wide tables scroll in their own box).
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
        )
        .await;
    browser.wait_for("document.documentElement.scrollWidth <= window.innerWidth", Duration::from_secs(5)).await;
    browser.call("Emulation.clearDeviceMetricsOverride", json!({})).await;

    // The Health page renders its refusals by reason (none here: no calling policy), no script error.
    browser.open(&format!("{base}/console/health")).await;
    browser.wait_for("document.querySelector('#refusals p, #refusals table')", Duration::from_secs(10)).await;
    let refusals = browser.eval("document.getElementById('refusals').textContent").await;
    assert!(!refusals.as_str().unwrap().is_empty(), "{refusals}");
    assert_eq!(browser.errors(), Vec::<String>::new(), "no error on the Health page");

    // Tenant beta's session: "not found" for alpha, as over gRPC. The 404 itself is the one network
    // error the browser logs; no script error.
    let before = browser.errors().len();
    browser.open(&format!("{base}/console/sessions/{theirs}")).await;
    browser.wait_for("document.getElementById('not-found')", Duration::from_secs(10)).await;
    let text = browser.eval("document.getElementById('not-found').textContent").await;
    assert!(text.as_str().unwrap().starts_with("Session not found"), "{text}");
    let after: Vec<String> = browser.errors().into_iter().skip(before).collect();
    assert!(after.iter().all(|e| e.starts_with("network: ") && e.contains("404")), "{after:?}");
}

/// A measurement, run by hand (BENCHMARKS.md, "The console"): the time from a webhook's 204 to the
/// session page's per-contact table changing in the browser. The simulator's deliveries go through a
/// relay (its hook re-registered to it) that forwards each to the facade's receiver and notes when
/// the 204 came back; the page notes each change of its table (a MutationObserver, `Date.now()`);
/// each delivery is paired with the first change after its 204. One contact is dialled at a time,
/// so deliveries are far apart compared to the latency.
///
/// `cargo test --release --test api console_latency -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn console_latency() {
    use std::sync::{Arc, Mutex};
    let binary = chromium().expect("chromium (scripts/install-chromium.sh)");
    let (app, _) = spawn_console(false, |_| {}).await;
    let client = http();
    // The relay: the simulator posts here; each delivery goes on to the facade.
    let hook = app.webhook.clone().expect("the receiver is on");
    let receiver = hook.split("/webhooks/").next().unwrap().to_owned();
    let delivered: Arc<Mutex<Vec<u64>>> = Arc::default();
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("http://{}", relay.local_addr().unwrap());
    let router = axum::Router::new().fallback({
        let (delivered, client, receiver) = (delivered.clone(), client.clone(), receiver.clone());
        move |uri: axum::http::Uri, body: axum::body::Bytes| {
            let (delivered, client, receiver) = (delivered.clone(), client.clone(), receiver.clone());
            async move {
                let answer = client
                    .post(format!("{receiver}{}", uri.path()))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                if answer.status() == reqwest::StatusCode::NO_CONTENT {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                    delivered.lock().unwrap().push(now.as_millis() as u64);
                }
                axum::http::StatusCode::from_u16(answer.status().as_u16()).unwrap()
            }
        }
    });
    tokio::spawn(async move { axum::serve(relay, router).await.unwrap() });
    let relayed = hook.replacen(&receiver, &relay_url, 1);
    let register = app.sim.as_client(TEST_KEY, reqwest::Method::POST, "/api/webhooks/register").await;
    let answer = register.json(&json!({ "webhook": { "type": "call", "url": relayed } })).send().await.unwrap();
    assert!(answer.status().is_success());
    let set = client
        .put(format!("{}/_sim/time_scale", app.sim.url))
        .json(&json!({ "time_scale": 20.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), reqwest::StatusCode::OK);

    let mut browser = Browser::start(&binary, 1280, 900).await;
    let phones: Vec<String> = (0..40).map(|i| format!("09123456{:02}", i * 10 % 100 + i / 10)).collect();
    let session = app
        .client
        .clone()
        .create_session(pb::CreateSessionRequest {
            script_id: "64915bc76a690c0edad14723".into(),
            contacts: phones.iter().map(|p| pb::Contact { phone: p.clone(), ..Default::default() }).collect(),
            calls_per_round: Some(1),
            round_interval: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .id;
    browser.open(&format!("http://{}/console/sessions/{session}", app.admin)).await;
    browser.wait_for("document.querySelectorAll('#contacts-body tr').length === 40", Duration::from_secs(10)).await;
    let since = browser
        .eval(
            "window.__changes = []; new MutationObserver(() => window.__changes.push(Date.now()))\
             .observe(document.getElementById('contacts-body'), { subtree: true, characterData: true, childList: true }); Date.now()",
        )
        .await
        .as_u64()
        .unwrap();
    browser
        .wait_for(
            "[...document.querySelectorAll('#contacts-body tr')].every(r => r.dataset.final === 'true')",
            Duration::from_secs(300),
        )
        .await;
    let changes: Vec<u64> = serde_json::from_value(browser.eval("window.__changes").await).unwrap();
    let deliveries: Vec<u64> = delivered.lock().unwrap().iter().copied().filter(|t| *t >= since).collect();
    let mut latencies: Vec<u64> =
        deliveries.iter().filter_map(|d| changes.iter().find(|c| **c >= *d).map(|c| c - d)).collect();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "console latency, webhook 204 -> table row changed: {} deliveries, p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies.last().unwrap()
    );
    assert!(latencies.len() >= 80, "{} deliveries paired", latencies.len());
}
