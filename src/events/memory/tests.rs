use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt as _;

use super::*;
use crate::events::CallOutcome;

fn tenant(name: &str) -> TenantId {
    Arc::from(name)
}

fn record(call: &str, session: &str, phone: &str, outcome: CallOutcome) -> CallEvent {
    CallEvent { session_id: session.into(), outcome, ..CallEvent::live(call, Fact::Record, phone) }
}

struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn store(max_events: usize, retention_s: u64) -> (MemoryStore, TestClock) {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst)) as Clock
        };
        let bounds = Bounds { retention: Duration::from_secs(retention_s), max_events };
        (MemoryStore::new(bounds, clock), TestClock(now))
    }

    fn advance_s(&self, s: u64) {
        self.0.fetch_add(s * 1000, Ordering::SeqCst);
    }
}

fn stored(a: Appended) -> StoredEvent {
    match a {
        Appended::Stored(e) => e,
        Appended::Duplicate => panic!("unexpected duplicate"),
    }
}

fn filter(t: &str) -> Filter {
    Filter { tenant: tenant(t), session_id: String::new(), phone_national: String::new() }
}

async fn take(sub: &mut Subscription, n: usize) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    for _ in 0..n {
        let next = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("an event in time");
        out.push(next.expect("open").expect("no error"));
    }
    out
}

#[tokio::test]
async fn a_fact_is_stored_once_even_after_its_event_left_the_ring() {
    let (store, _clock) = TestClock::store(4, 3600);
    let first = stored(store.append(tenant("t"), CallEvent::live("c1", Fact::Ringing, "0912")).await.unwrap());
    assert_eq!((first.cursor.seq, first.event.id()), (1, "c1/ringing".to_owned()));
    assert_eq!(
        store.append(tenant("t"), CallEvent::live("c1", Fact::Ringing, "0912")).await.unwrap(),
        Appended::Duplicate
    );
    // Another tenant's fact with the same id is another fact.
    stored(store.append(tenant("u"), CallEvent::live("c1", Fact::Ringing, "0912")).await.unwrap());
    for i in 0..5 {
        stored(store.append(tenant("t"), CallEvent::live(&format!("x{i}"), Fact::Hangup, "0912")).await.unwrap());
    }
    assert_eq!(store.stats().events, 4, "bounded by --events-max");
    assert_eq!(
        store.append(tenant("t"), CallEvent::live("c1", Fact::Ringing, "0912")).await.unwrap(),
        Appended::Duplicate
    );
    let stats = store.stats();
    assert_eq!((stats.stored_total, stats.duplicates_total, stats.evicted_total), (7, 2, 3));
}

#[tokio::test]
async fn repeats_are_recognized_for_the_retention_window_only() {
    let (store, clock) = TestClock::store(100, 60);
    stored(store.append(tenant("t"), CallEvent::live("c1", Fact::Hangup, "0912")).await.unwrap());
    clock.advance_s(59);
    assert_eq!(
        store.append(tenant("t"), CallEvent::live("c1", Fact::Hangup, "0912")).await.unwrap(),
        Appended::Duplicate
    );
    clock.advance_s(2);
    assert_eq!(store.stats().events, 1);
    let again = stored(store.append(tenant("t"), CallEvent::live("c1", Fact::Hangup, "0912")).await.unwrap());
    assert_eq!(again.cursor.seq, 2);
    assert_eq!(store.stats().events, 1, "the first one expired");
}

#[tokio::test]
async fn live_states_are_attributed_to_the_one_open_session_holding_the_number() {
    let (store, _clock) = TestClock::store(100, 3600);
    let rec = |s: &str, contacts: &[&str], redials| SessionRecord {
        session_id: s.into(),
        external_id: String::new(),
        contacts: contacts.iter().map(|c| (*c).to_owned()).collect(),
        redials,
        created_at_ms: 0,
        script_id: String::new(),
        name: String::new(),
        ..SessionRecord::default()
    };
    store.record_session(tenant("t"), rec("s1", &["0912345670", "0912345675"], 1)).await.unwrap();
    store.record_session(tenant("t"), rec("s2", &["0912345675"], 0)).await.unwrap();
    // Exactly one open session holds ...670 (written internationally by the provider).
    let e = stored(store.append(tenant("t"), CallEvent::live("a", Fact::Ringing, "84912345670")).await.unwrap());
    assert_eq!((&*e.event.session_id, e.event.attempt), ("s1", 1));
    // Two hold ...675: not attributed.
    let e = stored(store.append(tenant("t"), CallEvent::live("b", Fact::Ringing, "0912345675")).await.unwrap());
    assert_eq!(&*e.event.session_id, "");
    // Another tenant's number is never attributed to this tenant's session.
    let e = stored(store.append(tenant("u"), CallEvent::live("z", Fact::Ringing, "0912345670")).await.unwrap());
    assert_eq!(&*e.event.session_id, "");
    // The record names the session; the call's later facts inherit it.
    let e = stored(store.append(tenant("t"), record("b", "s2", "0912345675", CallOutcome::NoAnswer)).await.unwrap());
    assert_eq!((&*e.event.session_id, e.event.attempt), ("s2", 1));
    let e = stored(store.append(tenant("t"), CallEvent::live("b", Fact::Hangup, "0912345675")).await.unwrap());
    assert_eq!(&*e.event.session_id, "s2");
    // s2's contact is final (no redials): ...675 now has one open session, s1.
    let e = stored(store.append(tenant("t"), CallEvent::live("b2", Fact::Ringing, "0912345675")).await.unwrap());
    assert_eq!((&*e.event.session_id, e.event.attempt), ("s1", 1));
    // The report's facts: the record, and every event of the session's calls.
    let facts = store.session(tenant("t"), "s2".into()).await.unwrap().expect("known");
    assert_eq!(facts.record.as_ref().map(|r| r.contacts.len()), Some(1));
    let ids: Vec<String> = facts.events.iter().map(|e| e.event.id()).collect();
    assert_eq!(ids, ["b/ringing", "b/cdr", "b/hangup"], "the unattributed ringing belongs to the call");
    assert_eq!(store.session(tenant("t"), "nope".into()).await.unwrap(), None);
    assert_eq!(store.session(tenant("u"), "s2".into()).await.unwrap(), None, "tenants apart");
}

#[tokio::test]
async fn subscriptions_replay_resume_and_go_live_without_gap_or_repeat() {
    let (store, _clock) = TestClock::store(100, 3600);
    for i in 0..5 {
        stored(store.append(tenant("t"), CallEvent::live(&format!("c{i}"), Fact::Hangup, "0912")).await.unwrap());
        stored(store.append(tenant("u"), CallEvent::live(&format!("c{i}"), Fact::Hangup, "0912")).await.unwrap());
    }
    let mut all = store.subscribe(filter("t"), Start::Replay).await.unwrap();
    let first = take(&mut all, 5).await;
    assert!(first.iter().all(|e| e.event.call_id.starts_with('c')));
    let seqs: Vec<u64> = first.iter().map(|e| e.cursor.seq).collect();
    assert_eq!(seqs, [1, 3, 5, 7, 9], "only t's, in store order");
    let mut resumed = store.subscribe(filter("t"), Start::After(first[2].cursor)).await.unwrap();
    let mut live_only = store.subscribe(filter("t"), Start::Live).await.unwrap();
    stored(store.append(tenant("t"), CallEvent::live("new", Fact::Ringing, "0912")).await.unwrap());
    let got: Vec<String> = take(&mut resumed, 3).await.iter().map(|e| e.event.id()).collect();
    assert_eq!(got, ["c3/hangup", "c4/hangup", "new/ringing"]);
    assert_eq!(take(&mut live_only, 1).await[0].event.id(), "new/ringing");
    assert_eq!(take(&mut all, 1).await[0].event.id(), "new/ringing");
    // A cursor of this store past its end is "live from here".
    let future = Cursor { store: store.id(), seq: 1_000 };
    let mut ahead = store.subscribe(filter("t"), Start::After(future)).await.unwrap();
    stored(store.append(tenant("t"), CallEvent::live("later", Fact::Ringing, "0912")).await.unwrap());
    assert_eq!(take(&mut ahead, 1).await[0].event.id(), "later/ringing");
}

#[tokio::test]
async fn cursors_from_elsewhere_or_past_the_window_are_expired_with_the_earliest() {
    let (store, _clock) = TestClock::store(3, 3600);
    for i in 0..6 {
        stored(store.append(tenant("t"), CallEvent::live(&format!("c{i}"), Fact::Hangup, "0912")).await.unwrap());
    }
    // Retained: 4, 5, 6. Earliest cursor = 3 (resume after it: 4 comes first).
    let earliest = Cursor { store: store.id(), seq: 3 };
    for cursor in [Cursor { store: store.id() ^ 1, seq: 5 }, Cursor { store: store.id(), seq: 1 }] {
        match store.subscribe(filter("t"), Start::After(cursor)).await {
            Err(StoreError::CursorExpired { earliest: e }) => assert_eq!(e, earliest),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
    let mut from_earliest = store.subscribe(filter("t"), Start::After(earliest)).await.unwrap();
    assert_eq!(take(&mut from_earliest, 1).await[0].cursor.seq, 4);
    // A reader that falls out of the window ends with the error, never with a silent gap.
    let mut slow = store.subscribe(filter("t"), Start::After(Cursor { store: store.id(), seq: 4 })).await.unwrap();
    for i in 0..10 {
        stored(store.append(tenant("t"), CallEvent::live(&format!("d{i}"), Fact::Hangup, "0912")).await.unwrap());
    }
    match slow.next().await {
        Some(Err(StoreError::CursorExpired { earliest })) => assert_eq!(earliest.seq, 13),
        other => panic!("{other:?}"),
    }
    assert!(slow.next().await.is_none());
}

#[tokio::test]
async fn filters_by_session_and_number() {
    let (store, _clock) = TestClock::store(100, 3600);
    stored(store.append(tenant("t"), record("a", "s1", "0912345670", CallOutcome::Answered)).await.unwrap());
    stored(store.append(tenant("t"), record("b", "s2", "84912345671", CallOutcome::Busy)).await.unwrap());
    stored(store.append(tenant("t"), record("c", "s1", "+84912345671", CallOutcome::Failed)).await.unwrap());
    let by_session = Filter { session_id: "s1".into(), ..filter("t") };
    let mut s = store.subscribe(by_session, Start::Replay).await.unwrap();
    let ids: Vec<String> = take(&mut s, 2).await.iter().map(|e| e.event.id()).collect();
    assert_eq!(ids, ["a/cdr", "c/cdr"]);
    let by_number = Filter { phone_national: "0912345671".into(), ..filter("t") };
    let mut s = store.subscribe(by_number, Start::Replay).await.unwrap();
    let ids: Vec<String> = take(&mut s, 2).await.iter().map(|e| e.event.id()).collect();
    assert_eq!(ids, ["b/cdr", "c/cdr"]);
}

#[test]
fn the_ring_grows_by_a_quarter_not_double() {
    let mut ring: VecDeque<u64> = VecDeque::new();
    for i in 0..100_000 {
        reserve_gently(&mut ring, 100_000);
        ring.push_back(i);
    }
    assert!(ring.capacity() <= 100_000 * 5 / 4 + 256, "{}", ring.capacity());
}

#[tokio::test]
async fn a_closed_subscription_leaves_no_waiter_behind() {
    let (store, _clock) = TestClock::store(100, 3600);
    let a = store.subscribe(Filter { session_id: "s1".into(), ..filter("t") }, Start::Live).await.unwrap();
    let b = store.subscribe(filter("t"), Start::Live).await.unwrap();
    assert_eq!(store.shared.lock().waiters.len(), 2);
    drop(a);
    drop(b);
    assert!(store.shared.lock().waiters.is_empty());
    // A watcher of one session is woken by its session's events (and not starved by others').
    let mut one = store.subscribe(Filter { session_id: "s1".into(), ..filter("t") }, Start::Live).await.unwrap();
    for i in 0..3 {
        stored(store.append(tenant("t"), record(&format!("o{i}"), "other", "0912", CallOutcome::Busy)).await.unwrap());
    }
    stored(store.append(tenant("t"), record("mine", "s1", "0912", CallOutcome::Busy)).await.unwrap());
    assert_eq!(take(&mut one, 1).await[0].event.id(), "mine/cdr");
}

#[tokio::test]
async fn one_tenants_flood_evicts_only_its_own_events_and_ids() {
    let (store, _clock) = TestClock::store(100, 3600);
    // A quiet tenant's calls, and a watcher that has read them.
    for i in 0..10 {
        store
            .append(tenant("quiet"), record(&format!("q{i}"), "s-q", "0912000001", CallOutcome::Answered))
            .await
            .unwrap();
    }
    let mut quiet = store.subscribe(filter("quiet"), Start::Replay).await.unwrap();
    let read = take(&mut quiet, 10).await;
    let last_quiet = read.last().unwrap().cursor;
    let flood_start = store.subscribe(filter("loud"), Start::Live).await.unwrap();
    drop(flood_start);
    // A loud tenant posts ten times the store's bound.
    let mut first_loud = None;
    for i in 0..1000 {
        let e = stored(
            store
                .append(tenant("loud"), record(&format!("l{i}"), "s-l", "0912000002", CallOutcome::Busy))
                .await
                .unwrap(),
        );
        first_loud.get_or_insert(e.cursor);
    }
    assert_eq!(store.stats().events, 100, "the bound holds");
    // The quiet tenant's events, report and ids are all still there.
    let facts = store.session(tenant("quiet"), "s-q".into()).await.unwrap().expect("its session");
    assert_eq!(facts.events.len(), 10);
    for i in 0..10 {
        let again = store.append(tenant("quiet"), record(&format!("q{i}"), "s-q", "0912000001", CallOutcome::Answered));
        assert_eq!(again.await.unwrap(), Appended::Duplicate, "q{i} is still recognized");
    }
    // Its cursor resumes with no gap, and its live watcher sees its next event right after.
    let mut resumed = store.subscribe(filter("quiet"), Start::After(last_quiet)).await.unwrap();
    store.append(tenant("quiet"), record("q10", "s-q", "0912000001", CallOutcome::Answered)).await.unwrap();
    assert_eq!(take(&mut resumed, 1).await[0].event.call_id.as_ref(), "q10");
    assert_eq!(take(&mut quiet, 1).await[0].event.call_id.as_ref(), "q10");
    // The loud tenant lost its own oldest: a cursor from its start is expired, with the earliest.
    let err = match store.subscribe(filter("loud"), Start::After(first_loud.unwrap())).await {
        Err(StoreError::CursorExpired { earliest }) => earliest,
        other => panic!("expected CursorExpired, got {:?}", other.map(|_| ())),
    };
    let rest = take(&mut store.subscribe(filter("loud"), Start::After(err)).await.unwrap(), 89).await;
    assert_eq!(rest.last().unwrap().event.call_id.as_ref(), "l999", "the loud tenant keeps its newest");
}

#[tokio::test]
async fn sessions_are_listed_newest_first_per_tenant_with_the_events_of_their_calls() {
    let (store, _clock) = TestClock::store(100, 3600);
    let rec = |s: &str, key: &str, at: u64, phone: &str| SessionRecord {
        session_id: s.into(),
        external_id: key.into(),
        contacts: vec![phone.to_owned()],
        redials: 0,
        created_at_ms: at,
        script_id: "sc".into(),
        name: String::new(),
        ..SessionRecord::default()
    };
    store.record_session(tenant("t"), rec("s1", "camp-0", 10, "0912345670")).await.unwrap();
    store.record_session(tenant("t"), rec("s2", "camp-1", 30, "0912345671")).await.unwrap();
    store.record_session(tenant("t"), rec("s3", "solo", 20, "0912345672")).await.unwrap();
    store.record_session(tenant("u"), rec("s9", "camp-0", 40, "0912345670")).await.unwrap();
    // s1's call: a live state attributed by its number, then the record naming the session.
    store.append(tenant("t"), CallEvent::live("c1", Fact::Ringing, "0912345670")).await.unwrap();
    store.append(tenant("t"), record("c1", "s1", "0912345670", CallOutcome::Answered)).await.unwrap();
    let list = |query: SessionQuery| {
        let store = store.clone();
        async move {
            store
                .list_sessions(tenant("t"), query)
                .await
                .unwrap()
                .into_iter()
                .map(|f| (f.record.unwrap().session_id, f.events.len()))
                .collect::<Vec<_>>()
        }
    };
    let all = SessionQuery { limit: 10, ..SessionQuery::default() };
    let owned = |v: &[(&str, usize)]| v.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect::<Vec<_>>();
    assert_eq!(list(all.clone()).await, owned(&[("s2", 0), ("s3", 0), ("s1", 2)]), "newest first, t's only");
    assert_eq!(list(SessionQuery { limit: 2, ..all.clone() }).await, owned(&[("s2", 0), ("s3", 0)]));
    let after_s3 = SessionQuery { before: Some((20, "s3".into())), ..all.clone() };
    assert_eq!(list(after_s3).await, owned(&[("s1", 2)]), "the page after s3");
    let campaign = SessionQuery { external_prefix: "camp-".into(), ..all.clone() };
    assert_eq!(list(campaign).await, owned(&[("s2", 0), ("s1", 2)]));
    let recent = SessionQuery { created_after_ms: Some(10), ..all };
    assert_eq!(list(recent).await, owned(&[("s2", 0), ("s3", 0)]), "strictly after");
    let theirs = store.list_sessions(tenant("u"), SessionQuery { limit: 10, ..SessionQuery::default() }).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert!(
        store
            .list_sessions(tenant("v"), SessionQuery { limit: 10, ..SessionQuery::default() })
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_session_queued_for_the_index_is_seen_by_every_reader_and_the_bound_holds_after_each_batch() {
    let (store, _clock) = TestClock::store(100, 3600);
    let t = tenant("t");
    let session = |i: usize| SessionRecord {
        session_id: format!("s{i}"),
        external_id: format!("order-{i}"),
        contacts: vec![format!("09{i:08}")],
        created_at_ms: 1,
        ..SessionRecord::default()
    };
    // Fewer than a batch: all still queued, and each reader sees them.
    for i in 0..3 {
        store.record_session(t.clone(), session(i)).await.unwrap();
    }
    assert!(!store.shared.pending.lock().unwrap().is_empty(), "queued, not yet in the index");
    let facts = store.session(t.clone(), "order-1".into()).await.unwrap().expect("found by the caller's id");
    assert_eq!(facts.record, Some(session(1)));
    assert!(store.shared.pending.lock().unwrap().is_empty(), "the reader put them in");
    store.record_session(t.clone(), session(3)).await.unwrap();
    assert_eq!(store.session_id_of(t.clone(), "order-3".into()).await.unwrap().as_deref(), Some("s3"));
    store.record_session(t.clone(), session(4)).await.unwrap();
    let page = store.list_sessions(t.clone(), SessionQuery { limit: 10, ..SessionQuery::default() }).await.unwrap();
    assert_eq!(page.len(), 5);
    store.record_session(t.clone(), session(5)).await.unwrap();
    assert_eq!(store.unfinished_sessions(2).await.unwrap().len(), 6);
    store.record_session(t.clone(), session(6)).await.unwrap();
    // A live state (no session id) is attributed to the queued session holding its number.
    let live = stored(store.append(t.clone(), CallEvent::live("c6", Fact::Ringing, "84900000006")).await.unwrap());
    assert_eq!((&*live.event.session_id, &*live.event.contact_phone, live.event.attempt), ("s6", "0900000006", 1));
    store.record_session(t.clone(), session(7)).await.unwrap();
    assert_eq!(store.stats().sessions, 8);
    // Many batches over the bound (200 contacts for 100 events): the index stays within it.
    for i in 8..(8 + 10 * RECORD_BATCH) {
        store.record_session(t.clone(), session(i)).await.unwrap();
        let held = store.shared.lock_only().attribution.sessions();
        assert!(held <= 200, "{held} sessions held after {i}");
    }
    assert_eq!(store.stats().sessions, 200);
    assert!(store.session(t.clone(), "s0".into()).await.unwrap().is_none(), "the oldest went");
    assert!(store.session(t, format!("s{}", 7 + 10 * RECORD_BATCH)).await.unwrap().is_some());
}
