use std::{
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use futures::StreamExt as _;

use super::*;
use crate::events::{
    CallOutcome, Cursor, Fact, StoredEvent,
    memory::{Bounds, Clock, Identity},
};

fn tenant(name: &str) -> TenantId {
    Arc::from(name)
}

fn clock_at(now: &Arc<AtomicU64>) -> Clock {
    let now = now.clone();
    Arc::new(move || now.load(Ordering::SeqCst))
}

/// Opens the store in `path` (waiting for a store dropped just before to let go of the lock).
async fn open(path: &Path, now: &Arc<AtomicU64>, max_events: usize, retention_s: u64) -> DiskStore {
    let bounds = Bounds { retention: Duration::from_secs(retention_s), max_events };
    for _ in 0..100 {
        match DataDir::open(path) {
            Ok(dir) => return DiskStore::open(Arc::new(dir), bounds, clock_at(now)).await.unwrap(),
            Err(StorageError::Locked(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the data dir stayed locked");
}

/// The number of keys in a partition of the data dir at `path` (the store closed).
fn on_disk(path: &Path, partition: &str) -> usize {
    let dir = DataDir::open(path).unwrap();
    dir.partition(partition).unwrap().len().unwrap()
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

fn record(session: &str, contacts: &[&str]) -> SessionRecord {
    SessionRecord {
        session_id: session.to_owned(),
        external_id: format!("ext-{session}"),
        contacts: contacts.iter().map(|c| (*c).to_owned()).collect(),
        redials: 0,
        created_at_ms: 1_000_000,
        script_id: "64915bc76a690c0edad14723".to_owned(),
        name: format!("name of {session}"),
        ..SessionRecord::default()
    }
}

fn cdr(call: &str, session: &str, phone: &str, outcome: CallOutcome) -> CallEvent {
    CallEvent { session_id: session.into(), outcome, ..CallEvent::live(call, Fact::Record, phone) }
}

async fn gone(store: DiskStore) {
    drop(store);
    // The writer's hook holds the store weakly; `open` waits for the lock anyway.
    tokio::task::yield_now().await;
}

#[tokio::test]
async fn a_restart_keeps_events_cursors_repeats_sessions_and_attribution() {
    let tmp = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_000_000));
    let store = open(tmp.path(), &now, 100, 3600).await;
    let t = tenant("t");
    store.record_session(t.clone(), record("s1", &["0912000001", "0912000002"])).await.unwrap();
    // A live state with no session: attributed to s1, the one open session holding the number.
    let ringing = stored(store.append(t.clone(), CallEvent::live("c1", Fact::Ringing, "84912000001")).await.unwrap());
    assert_eq!((&*ringing.event.session_id, ringing.event.attempt), ("s1", 1));
    let end = cdr("c1", "", "84912000001", CallOutcome::Answered);
    stored(store.append(t.clone(), end).await.unwrap());
    stored(store.append(tenant("u"), CallEvent::live("c9", Fact::Ringing, "0913")).await.unwrap());
    let mut sub = store.subscribe(filter("t"), Start::Replay).await.unwrap();
    let before = take(&mut sub, 2).await;
    drop(sub);
    let report = store.session(t.clone(), "ext-s1".to_owned()).await.unwrap().expect("known");
    let store_id = before[0].cursor.store;
    gone(store).await;

    let store = open(tmp.path(), &now, 100, 3600).await;
    // Same identity: a cursor from before resumes right after its event, no gap, no repeat.
    let mut sub = store.subscribe(filter("t"), Start::After(before[0].cursor)).await.unwrap();
    assert_eq!(take(&mut sub, 1).await, before[1..].to_vec());
    let mut all = store.subscribe(filter("t"), Start::Replay).await.unwrap();
    assert_eq!(take(&mut all, 2).await, before);
    // A repeat is a repeat; the report is the same; the external id still names the session.
    let repeat = cdr("c1", "", "84912000001", CallOutcome::Answered);
    assert_eq!(store.append(t.clone(), repeat).await.unwrap(), Appended::Duplicate);
    assert_eq!(store.session(t.clone(), "ext-s1".to_owned()).await.unwrap(), Some(report));
    assert_eq!(store.session_id_of(t.clone(), "ext-s1".to_owned()).await.unwrap().as_deref(), Some("s1"));
    // The call's later facts inherit its session and attempt; new events go on after the old.
    let hangup = stored(store.append(t.clone(), CallEvent::live("c1", Fact::Hangup, "84912000001")).await.unwrap());
    assert_eq!((&*hangup.event.session_id, hangup.event.attempt, hangup.cursor.store), ("s1", 1, store_id));
    assert!(hangup.cursor.seq > 3, "{:?}", hangup.cursor);
    assert_eq!(take(&mut sub, 1).await, vec![hangup.clone()], "the old watcher goes on live");
    // The second contact's number is still open for attribution, the first is final.
    let other = stored(store.append(t.clone(), CallEvent::live("c2", Fact::Ringing, "0912000002")).await.unwrap());
    assert_eq!(&*other.event.session_id, "s1");
    let stats = store.stats();
    assert_eq!((stats.events, stats.sessions, stats.ids_remembered), (5, 1, 5));
    assert!(stats.fsyncs_total >= 2);
}

#[tokio::test]
async fn events_max_and_the_retention_bound_the_disk_and_expired_cursors_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_000_000));
    let store = open(tmp.path(), &now, 4, 60).await;
    let t = tenant("t");
    let mut cursors = Vec::new();
    for i in 0..10 {
        let e = stored(store.append(t.clone(), CallEvent::live(&format!("c{i}"), Fact::Hangup, "0912")).await.unwrap());
        cursors.push(e.cursor);
    }
    assert_eq!(store.stats().events, 4);
    gone(store).await;
    assert_eq!(on_disk(tmp.path(), codec::EVENTS), 4, "evicted events are deleted from disk");
    assert_eq!(on_disk(tmp.path(), codec::KEYS), 8, "ids kept: twice --events-max");

    let store = open(tmp.path(), &now, 4, 60).await;
    assert_eq!(store.stats().events, 4);
    // An evicted fact whose id is still remembered is a repeat after the restart.
    let evicted = CallEvent::live("c3", Fact::Hangup, "0912");
    assert_eq!(store.append(t.clone(), evicted).await.unwrap(), Appended::Duplicate);
    // A cursor before the window expires, with the earliest one from where nothing more is lost.
    let Err(StoreError::CursorExpired { earliest }) = store.subscribe(filter("t"), Start::After(cursors[1])).await
    else {
        panic!("a cursor past the window must expire");
    };
    assert_eq!(earliest, cursors[5]);
    let mut sub = store.subscribe(filter("t"), Start::After(earliest)).await.unwrap();
    assert_eq!(take(&mut sub, 4).await.iter().map(|e| e.cursor).collect::<Vec<_>>(), cursors[6..].to_vec());
    drop(sub);
    gone(store).await;

    // Past the retention, everything leaves, from disk too; the sequence goes on.
    now.fetch_add(3_600_000, Ordering::SeqCst);
    let store = open(tmp.path(), &now, 4, 60).await;
    assert_eq!((store.stats().events, store.stats().ids_remembered), (0, 0));
    let next = stored(store.append(t.clone(), CallEvent::live("c0", Fact::Hangup, "0912")).await.unwrap());
    assert_eq!(next.cursor, Cursor { store: cursors[0].store, seq: 11 }, "a repeat no longer, a new place");
    gone(store).await;
    assert_eq!(on_disk(tmp.path(), codec::EVENTS), 1);
    assert_eq!(on_disk(tmp.path(), codec::KEYS), 1);
}

#[tokio::test]
async fn a_restart_makes_each_tenants_rings_to_size_once() {
    // Grown one push at a time, the restored rings would double up to 512 slots for 300 events
    // and leave each smaller copy to the allocator; made to size, they hold what was kept and
    // one more, and an append at the bound does not grow them.
    let tmp = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_000_000));
    let store = open(tmp.path(), &now, 300, 3600).await;
    let (t, u) = (tenant("t"), tenant("u"));
    for i in 0..290 {
        stored(store.append(t.clone(), CallEvent::live(&format!("c{i}"), Fact::Hangup, "0912")).await.unwrap());
    }
    for i in 0..10 {
        stored(store.append(u.clone(), CallEvent::live(&format!("d{i}"), Fact::Hangup, "0913")).await.unwrap());
    }
    gone(store).await;

    let store = open(tmp.path(), &now, 300, 3600).await;
    assert_eq!(store.stats().events, 300);
    let memory = &store.inner.memory;
    let (events, ids) = memory.ring_capacities(&t);
    assert!((291..300).contains(&events) && (291..300).contains(&ids), "t: {events}, {ids}");
    let (events, ids) = memory.ring_capacities(&u);
    assert!((11..20).contains(&events) && (11..20).contains(&ids), "u: {events}, {ids}");
    let before = memory.ring_capacities(&t);
    stored(store.append(t.clone(), CallEvent::live("c-next", Fact::Hangup, "0912")).await.unwrap());
    assert_eq!(store.stats().events, 300, "at the bound: the oldest left");
    assert_eq!(memory.ring_capacities(&t).0, before.0, "the append at the bound did not grow the ring");
}

#[tokio::test]
async fn a_store_with_events_but_no_identity_or_of_another_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_000_000));
    let store = open(tmp.path(), &now, 10, 60).await;
    stored(store.append(tenant("t"), CallEvent::live("c", Fact::Hangup, "0912")).await.unwrap());
    gone(store).await;
    let bounds = Bounds { retention: Duration::from_secs(60), max_events: 10 };
    for (value, says) in
        [(None, "no identity"), (Some(&br#"{"format":9,"id":1,"epoch_ms":1,"seed":1}"#[..]), "format 9")]
    {
        {
            let dir = DataDir::open(tmp.path()).unwrap();
            let meta = dir.partition(codec::META).unwrap();
            let mut batch = Batch::new();
            match value {
                Some(v) => batch.put(&meta, codec::IDENTITY_KEY.to_vec(), v.to_vec()),
                None => batch.remove(&meta, codec::IDENTITY_KEY.to_vec()),
            }
            dir.commit(batch).await.unwrap();
        }
        let dir = Arc::new(DataDir::open(tmp.path()).unwrap());
        let Err(err) = DiskStore::open(dir, bounds, clock_at(&now)).await else { panic!("opened") };
        let text = err.to_string();
        assert!(text.contains(says) && text.contains(&tmp.path().display().to_string()), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}

/// A journal that only hands out tickets: nothing is durable until the test says so.
struct Pending(AtomicU64);

impl Journal for Pending {
    fn submit(&self, _: Vec<Change>) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[tokio::test]
async fn watchers_and_reports_see_an_event_only_once_it_is_durable() {
    let now = Arc::new(AtomicU64::new(1_000_000));
    let bounds = Bounds { retention: Duration::from_secs(60), max_events: 10 };
    let identity = Identity { id: 7, epoch_ms: 1_000_000, seed: 1 };
    let memory =
        MemoryStore::with_journal(bounds, clock_at(&now), identity, Some(Arc::new(Pending(AtomicU64::new(0)))));
    memory.restored(1);
    let t = tenant("t");
    let mut live = memory.subscribe(filter("t"), Start::Live).await.unwrap();
    let (first, ticket) = memory.append_journaled(t.clone(), cdr("c1", "s1", "0912", CallOutcome::Busy));
    let first = stored(first);
    assert_eq!(ticket, Some(1));
    let mut replay = memory.subscribe(filter("t"), Start::Replay).await.unwrap();
    for sub in [&mut live, &mut replay] {
        assert!(tokio::time::timeout(Duration::from_millis(100), sub.next()).await.is_err(), "not durable yet");
    }
    assert_eq!(memory.session(t.clone(), "s1".to_owned()).await.unwrap(), None, "no report of it either");
    memory.made_durable(first.cursor.seq);
    assert_eq!(take(&mut live, 1).await, vec![first.clone()]);
    assert_eq!(take(&mut replay, 1).await, vec![first.clone()]);
    assert_eq!(memory.session(t, "s1".to_owned()).await.unwrap().map(|f| f.events), Some(vec![first]));
}

/// Waits (a few seconds at most) until the store has made `n` whole compactions.
async fn compactions(store: &DiskStore, n: u64) {
    for _ in 0..500 {
        if store.stats().compactions_total >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} compactions, not {n}", store.stats().compactions_total);
}

/// Entries (tombstones counted) in a partition of an open store.
fn held(store: &DiskStore, partition: &str) -> usize {
    store.inner.dir.partition(partition).unwrap().approximate_len()
}

#[tokio::test]
async fn deletions_are_compacted_away_so_the_disk_and_the_start_follow_the_bound_not_the_deliveries() {
    let tmp = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_000_000));
    let store = open(tmp.path(), &now, 50, 3600).await;
    let t = tenant("t");
    for i in 0..2_000 {
        stored(store.append(t.clone(), CallEvent::live(&format!("c{i}"), Fact::Hangup, "0912")).await.unwrap());
    }
    // 1,950 events and 1,900 fact ids deleted at bounds of 50 and 100: asked for once every 100.
    compactions(&store, 1).await;
    gone(store).await;
    // Stopped: the memtables went to a table, with a tombstone for each deletion (fjall keeps
    // them until a compaction writes into its last level, which it would not do by itself here).
    let store = open(tmp.path(), &now, 50, 3600).await;
    assert_eq!((store.stats().events, store.stats().ids_remembered), (50, 100));
    // The start found ~3,900 tombstones for 150 entries read: it compacts them away.
    compactions(&store, 2).await;
    for _ in 0..500 {
        if held(&store, codec::EVENTS) <= 50 && held(&store, codec::KEYS) <= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((held(&store, codec::EVENTS), held(&store, codec::KEYS)), (50, 100), "only what is kept");
    // Nothing kept was lost: the newest 50 events, in order, and the ids for repeats.
    let mut all = store.subscribe(filter("t"), Start::Replay).await.unwrap();
    let kept = take(&mut all, 50).await;
    assert_eq!(kept.first().map(|e| e.cursor.seq), Some(1_951));
    let evicted_but_remembered = CallEvent::live("c1920", Fact::Hangup, "0912");
    assert_eq!(store.append(t.clone(), evicted_but_remembered).await.unwrap(), Appended::Duplicate);
}
