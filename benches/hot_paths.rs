//! Criterion micro benches of the facade's per-call CPU work, each isolated from the network:
//!
//! - `create_session/*`: a 15-contact `CreateSessionRequest` validated (`NewSession::parse`) and
//!   turned into the upstream JSON (`EncodedExecute`, the hand-written writer; `serde_json` beside
//!   it for comparison), i.e. everything CreateSession
//!   does before and after its one HTTP exchange;
//! - `script_list/*`: a `script/list` answer (envelope + payload) parsed by the facade's own parser
//!   for 1, 1,000 and 10,000 scripts, and the proto conversion of 1,000;
//! - `fold/*`: the Vietnamese diacritic folding of `name_contains` filtering;
//! - `status/*`: the error table, `status::to_status`, for the common rows.
//!
//! `cargo bench --bench hot_paths`; CI only compiles them (`cargo bench --no-run`). Results and
//! budgets: BENCHMARKS.md. These are measurements, never assertions.

use std::{collections::BTreeMap, hint::black_box, time::SystemTime};

use callbot_facade::{
    pb,
    testing::{
        self, EncodedExecute, ErrorContext, FacadeError, FieldViolation, NewSession, SessionLimits, UpstreamError,
        ValidationError, execute_body, parse_script_list, script_to_pb, to_status,
    },
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

/// A realistic request: 15 contacts, each with an email, a code and three Vietnamese variables.
fn create_request(contacts: usize) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        script_id: "64915bc76a690c0edad14723".into(),
        contacts: (0..contacts)
            .map(|i| pb::Contact {
                phone: format!("09123{i:05}"),
                email: format!("hoc.sinh{i}@truong.edu.vn"),
                external_contact_code: format!("HS-{i:06}"),
                variables: BTreeMap::from([
                    ("uB131frQEU".to_owned(), format!("{}.5", i % 10)),
                    ("ho_ten".to_owned(), format!("Nguyễn Văn Đức {i}")),
                    ("lop".to_owned(), "12A1".to_owned()),
                ]),
            })
            .collect(),
        name: "Thông báo điểm thi học kỳ I".into(),
        caller_id: "19001234".into(),
        voice: pb::Voice::SouthernFemaleHonganh as i32,
        speed: Some(1),
        retry_count: Some(2),
        calls_per_round: Some(10),
        round_interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        retry_interval: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
        start_time: None,
        external_session_id: String::new(),
        auto_pause: false,
        check_variables: false,
        purpose: 0,
        defer_to_calling_hours: false,
        validate_only: false,
    }
}

fn create_session(c: &mut Criterion) {
    let mut g = c.benchmark_group("create_session");
    let request = create_request(15);
    let limits = SessionLimits { max_contacts: 10_000, now: SystemTime::now() };
    let key = "0b8a9a4e-2f8e-4c8e-9a57-3c1f0e5d6a7b";
    g.bench_function("parse_15_contacts", |b| {
        b.iter_batched(
            || request.clone(),
            |req| black_box(NewSession::parse(req, &limits).unwrap()),
            BatchSize::SmallInput,
        )
    });
    let session = NewSession::parse(request.clone(), &limits).unwrap();
    g.bench_function("serialize_15_contacts", |b| {
        b.iter(|| black_box(EncodedExecute::new(&execute_body(black_box(&session), key))))
    });
    g.bench_function("serialize_15_contacts_serde_json", |b| {
        b.iter(|| black_box(serde_json::to_vec(&execute_body(black_box(&session), key)).unwrap()))
    });
    g.bench_function("parse_and_serialize_15_contacts", |b| {
        b.iter_batched(
            || request.clone(),
            |req| {
                let session = NewSession::parse(req, &limits).unwrap();
                black_box(EncodedExecute::new(&execute_body(&session, key)))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A `script/list` answer shaped like the simulator's generated catalogue.
fn script_list_body(n: usize) -> Vec<u8> {
    let scripts: Vec<_> = (0..n)
        .map(|i| {
            let vars: Vec<_> = (0..(i % 5) + 1)
                .map(|j| {
                    json!({
                        "field_name": format!("Biến {j}"),
                        "field_code": format!("g{:05x}v{j:03}", i % 0x10_0000),
                        "field_value": "",
                        "field_type": if j % 2 == 0 { "single_text" } else { "" },
                        "type": if j % 2 == 0 { "CONTACT" } else { "" },
                        "is_dynamic_attribute": j % 3 != 2,
                    })
                })
                .collect();
            json!({"id": format!("6600000000000000{i:08x}"), "name": format!("Kịch bản thử nghiệm số {}", i + 1), "variables": vars})
        })
        .collect();
    serde_json::to_vec(&json!({
        "instance_id": "sim",
        "instance_version": "1.2.164",
        "key_enabled": false,
        "status_code": 9999,
        "payload": scripts,
    }))
    .unwrap()
}

fn script_list(c: &mut Criterion) {
    let mut g = c.benchmark_group("script_list");
    for n in [1usize, 1_000, 10_000] {
        let body = script_list_body(n);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::new("parse", n), &body, |b, body| {
            b.iter(|| black_box(parse_script_list(black_box(body)).unwrap()))
        });
    }
    let scripts = parse_script_list(&script_list_body(1_000)).unwrap();
    g.throughput(Throughput::Elements(scripts.len() as u64));
    g.bench_function("to_pb/1000", |b| {
        b.iter(|| {
            for s in &scripts {
                black_box(script_to_pb(s));
            }
        })
    });
    g.finish();
}

fn fold(c: &mut Criterion) {
    let mut g = c.benchmark_group("fold");
    for (name, text) in [
        ("ascii", "Nhac no hoc phi thang 10"),
        ("vietnamese", "Thông báo ĐIỂM thi học kỳ I – Trường THPT Nguyễn Văn Đức"),
    ] {
        g.bench_function(BenchmarkId::new("fold", name), |b| b.iter(|| black_box(testing::fold(black_box(text)))));
    }
    let needle = testing::fold("điểm thi");
    g.bench_function("matches/vietnamese", |b| {
        b.iter(|| black_box(testing::matches(black_box("Thông báo ĐIỂM thi học kỳ I"), &needle)))
    });
    g.finish();
}

fn status(c: &mut Criterion) {
    // to_status logs the cause once; with no subscriber installed that costs a level check only.
    let mut g = c.benchmark_group("status");
    let ctx = ErrorContext { request_id: "4d1c1f0e-8c55-4f57-9a49-2b8f3f0b6a11", external_session_id: None };
    let write_ctx = ErrorContext { external_session_id: Some("0b8a9a4e-2f8e-4c8e-9a57-3c1f0e5d6a7b"), ..ctx };
    let invalid = FacadeError::Invalid(ValidationError {
        violations: (0..3)
            .map(|i| FieldViolation {
                field: format!("contacts[{i}].phone"),
                description: "must be an optional + then 8 to 15 digits".into(),
            })
            .collect(),
    });
    let rejected =
        FacadeError::Upstream(UpstreamError::Rejected { code: "limit_word_session".into(), http_status: 200 });
    let unavailable =
        FacadeError::Upstream(UpstreamError::Http { status: 503, retry_after: None, upstream_code: None });
    for (name, err, ctx) in [
        ("invalid_3_violations", &invalid, &ctx),
        ("upstream_rejected", &rejected, &write_ctx),
        ("upstream_503", &unavailable, &ctx),
        ("not_found", &FacadeError::ScriptNotFound, &ctx),
    ] {
        g.bench_function(name, |b| b.iter(|| black_box(to_status(black_box(err), ctx))));
    }
    g.finish();
}

/// Recording a session of 15 contacts in the attribution index held full (200,000 contacts, the
/// default `--events-max` of 100,000 x 2: 13,333 sessions), so each also pushes the oldest out:
/// what a CreateSession adds with the webhook receiver on (BENCHMARKS.md, "Fourth session").
/// The record's strings are made in the batch set-up, not timed; making it ready (one text, the sorted
/// contacts) is.
fn attribution(c: &mut Criterion) {
    let mut g = c.benchmark_group("attribution");
    g.throughput(Throughput::Elements(1));
    for (name, same) in [("same_numbers", true), ("distinct_numbers", false)] {
        let mut index = testing::IndexBench::new(200_000);
        let mut n = 0u64;
        let mut next = move || {
            n += 1;
            let contacts: Vec<String> =
                (0..15u64).map(|i| format!("09{:08}", if same { i } else { (n * 15 + i) % 100_000_000 })).collect();
            (format!("session-{n:012}"), contacts)
        };
        while index.sessions() < 13_333 {
            let (id, contacts) = next();
            index.record(&id, contacts);
        }
        g.bench_function(BenchmarkId::new("record_15_at_the_bound", name), |b| {
            b.iter_batched(&mut next, |(id, contacts)| index.record(&id, contacts), BatchSize::SmallInput)
        });
    }
}

criterion_group!(benches, create_session, script_list, fold, status, attribution);
criterion_main!(benches);
