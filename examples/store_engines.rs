//! Weighs three existing embedded database engines for the durable event store (issue 21, API.md §9):
//! SQLite (`rusqlite`, bundled), `redb` and `fjall`, on the store's own workload. Measurement only: the
//! product store is built on the engine this chooses (BENCHMARKS.md, "Embedded store engines (issue 21)").
//!
//! For each engine, in a temporary folder on this disk:
//! 1. Group commit: `--writers` tasks (64) deliver events through one channel to one committer thread, which
//!    takes whatever has arrived (up to 1,000) into one transaction with a durable commit (fsync), then answers
//!    each writer. Each event: a dedup check on the id index (1 delivery in 100 repeats an earlier id and must
//!    be recognized), an insert by sequence, the id -> sequence index and a per-session index.
//! 2. Retention: the same transactions delete what lies beyond the last 100,000; bytes on disk per retained
//!    event are measured as the engine leaves them, then after its compaction.
//! 3. Restart: a child process opens the store, reads the first and last sequence, then scans every retained
//!    event (what an in-memory session index would need); it reports both times and its peak RSS (VmHWM).
//! 4. Watcher latency: deliveries paced at 5,000/s; a reader thread woken after each commit reads the new
//!    events from the engine; delivery -> reader and commit -> reader, p50/p99.
//!
//! ```text
//! cargo build --release --example store_engines
//! target/release/examples/store_engines [--engine sqlite|redb|fjall|all] [--events 200000] [--runs 2]
//! ```
//!
//! Environment: STORE_ENGINES_DIR (where the temporary stores go; default the system's temporary folder),
//! STORE_ENGINES_FJALL_CACHE_MIB and STORE_ENGINES_FJALL_MEMTABLES_MIB (fjall's memory, default 16 each).

use std::collections::{HashMap, HashSet, VecDeque};
use std::error::Error;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Events kept by retention (`--events-max` default).
const RETAIN: u64 = 100_000;
/// The most deliveries one transaction (one fsync) takes.
const MAX_BATCH: usize = 1_000;
/// Paced rate and length of the watcher phase.
const WATCH_RATE: u64 = 5_000;
const WATCH_SECS: u64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Redb,
    Fjall,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "sqlite" => Some(Kind::Sqlite),
            "redb" => Some(Kind::Redb),
            "fjall" => Some(Kind::Fjall),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The event: an end-of-call record as the store would keep it (~250 bytes encoded).

/// One delivery on its way to the committer.
struct Delivery {
    id: String,
    tenant: String,
    session: String,
    /// The encoded event: what the events table holds under its sequence.
    value: Vec<u8>,
    /// The sequence given, or None for a repeat; sent after the durable commit.
    reply: oneshot::Sender<Option<u64>>,
}

/// The leading fields of an encoded event, read back by retention, restart and the watcher.
struct Header<'a> {
    id: &'a str,
    tenant: &'a str,
    session: &'a str,
    /// When the delivery was submitted (ns since the phase began): the watcher's delivery -> reader latency.
    submitted_ns: u64,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u8::try_from(s.len()).expect("field of at most 255 bytes");
    out.push(len);
    out.extend_from_slice(s.as_bytes());
}

fn take_str<'a>(b: &mut &'a [u8]) -> &'a str {
    let len = usize::from(b[0]);
    let s = std::str::from_utf8(&b[1..1 + len]).expect("utf-8 field");
    *b = &b[1 + len..];
    s
}

/// id, tenant, session, submitted, call id, phone, outcome, disposition, words, three times.
fn encode(i: u64, id: &str, tenant: &str, session: &str, submitted_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put_str(&mut out, id);
    put_str(&mut out, tenant);
    put_str(&mut out, session);
    out.extend_from_slice(&submitted_ns.to_le_bytes());
    put_str(&mut out, id.trim_end_matches("/cdr"));
    put_str(&mut out, &format!("849{:08}", mix(i) % 100_000_000));
    out.push((mix(i ^ 7) % 6) as u8);
    put_str(&mut out, "callee answered, script finished normally");
    put_str(&mut out, "interested; asked to call back next week about the offer");
    let t0: i64 = 1_780_000_000_000 + i as i64 * 37;
    for t in [t0, t0 + 4_000, t0 + 61_000] {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out
}

fn header(mut b: &[u8]) -> Header<'_> {
    let id = take_str(&mut b);
    let tenant = take_str(&mut b);
    let session = take_str(&mut b);
    let submitted_ns = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    Header { id, tenant, session, submitted_ns }
}

/// splitmix64: deterministic ids, phones and sessions.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The id of delivery `i`: one delivery in 100 repeats the id of the one 50 before it.
fn fact_id(i: u64) -> String {
    let k = if i % 100 == 99 { i - 50 } else { i };
    format!("{:016x}-{:016x}/cdr", mix(k), mix(k ^ 0xABCD))
}

fn is_repeat(i: u64) -> bool {
    i % 100 == 99
}

fn tenant_of(i: u64) -> String {
    ["school", "clinic", "retail", "bank"][(mix(i ^ 3) % 4) as usize].to_string()
}

fn session_of(i: u64) -> String {
    let s = mix(i ^ 11) % 200;
    format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", mix(s) as u32, s, s, s, s)
}

/// The per-session index key: tenant, session, sequence.
fn session_key(tenant: &str, session: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + session.len() + 10);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(session.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

// ---------------------------------------------------------------------------------------------------------
// The engines: one durable transaction per batch, a reader for the watcher, compaction, the restart scan.

trait Store: Send {
    /// One transaction, committed durably: each delivery is checked against the id index and, when new,
    /// inserted under the next sequence; what lies beyond the last RETAIN is deleted. `out[i]` is the
    /// sequence given to `batch[i]`, None for a repeat.
    fn commit(&mut self, batch: &[Delivery], out: &mut Vec<Option<u64>>) -> Result<()>;
    /// A reader that can run on another thread while commits go on.
    fn reader(&self) -> Result<Box<dyn Reader>>;
    /// Reclaims the space retention freed; says how.
    fn compact(&mut self) -> Result<&'static str>;
}

trait Reader: Send {
    /// Events with a sequence above `after`, in order.
    fn read_after(&mut self, after: u64, out: &mut Vec<(u64, Vec<u8>)>) -> Result<()>;
}

/// Next sequence and the oldest retained, as each engine reads them when it opens.
#[derive(Clone, Copy)]
struct Bounds {
    next: u64,
    oldest: u64,
}

impl Bounds {
    fn from_first_last(first: Option<u64>, last: Option<u64>) -> Bounds {
        match (first, last) {
            (Some(f), Some(l)) => Bounds { next: l + 1, oldest: f },
            _ => Bounds { next: 1, oldest: 1 },
        }
    }
    /// The sequences retention deletes once `next - 1` is the newest.
    fn expired(&mut self) -> std::ops::Range<u64> {
        let newest = self.next - 1;
        let from = self.oldest;
        if newest >= RETAIN && newest - RETAIN >= from {
            self.oldest = newest - RETAIN + 1;
        }
        from..self.oldest
    }
}

fn open(kind: Kind, dir: &Path) -> Result<Box<dyn Store>> {
    Ok(match kind {
        Kind::Sqlite => Box::new(sqlite::Sqlite::open(dir)?),
        Kind::Redb => Box::new(redb_store::Redb::open(dir)?),
        Kind::Fjall => Box::new(fjall_store::Fjall::open(dir)?),
    })
}

/// What a restart needs before it is ready: (open + first/last sequence, full scan, events, sessions).
fn restart_scan(kind: Kind, dir: &Path) -> Result<(Duration, Duration, u64, usize)> {
    let t0 = Instant::now();
    let mut sessions: HashMap<(String, String), u32> = HashMap::new();
    let mut count = 0u64;
    let mut note = |value: &[u8]| {
        let h = header(value);
        count += 1;
        *sessions.entry((h.tenant.to_string(), h.session.to_string())).or_default() += 1;
    };
    let opened;
    match kind {
        Kind::Sqlite => {
            let store = sqlite::Sqlite::open(dir)?;
            opened = t0.elapsed();
            let mut stmt = store.conn.prepare("SELECT body FROM events ORDER BY seq")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                note(row.get_ref(0)?.as_blob()?);
            }
        }
        Kind::Redb => {
            use ::redb::ReadableTable;
            let store = redb_store::Redb::open(dir)?;
            opened = t0.elapsed();
            let tx = store.db.begin_read()?;
            let t = tx.open_table(redb_store::EVENTS)?;
            for kv in t.iter()? {
                let (_, v) = kv?;
                note(v.value());
            }
        }
        Kind::Fjall => {
            let store = fjall_store::Fjall::open(dir)?;
            opened = t0.elapsed();
            for kv in store.events.iter() {
                let (_, v) = kv?;
                note(&v);
            }
        }
    }
    Ok((opened, t0.elapsed(), count, sessions.len()))
}

mod sqlite {
    use super::*;
    use rusqlite::{Connection, params};

    pub struct Sqlite {
        pub conn: Connection,
        path: PathBuf,
        bounds: Bounds,
    }

    /// WAL, synchronous=FULL: each commit fsyncs the WAL before it returns (NORMAL would sync only at
    /// checkpoints, so a power cut could lose commits already answered). Checkpoints (every 1,000 WAL pages,
    /// the default) fsync the WAL and then the database file.
    fn connect(path: &Path) -> Result<Connection> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(conn)
    }

    impl Sqlite {
        pub fn open(dir: &Path) -> Result<Sqlite> {
            let path = dir.join("events.sqlite");
            let conn = connect(&path)?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS events (
                     seq INTEGER PRIMARY KEY,
                     id TEXT NOT NULL UNIQUE,
                     tenant TEXT NOT NULL,
                     session TEXT NOT NULL,
                     body BLOB NOT NULL);
                 CREATE INDEX IF NOT EXISTS events_session ON events (tenant, session, seq);",
            )?;
            let (first, last): (Option<i64>, Option<i64>) =
                conn.query_row("SELECT min(seq), max(seq) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let bounds = Bounds::from_first_last(first.map(|v| v as u64), last.map(|v| v as u64));
            Ok(Sqlite { conn, path, bounds })
        }
    }

    impl Store for Sqlite {
        fn commit(&mut self, batch: &[Delivery], out: &mut Vec<Option<u64>>) -> Result<()> {
            let tx = self.conn.transaction()?;
            {
                // The UNIQUE index on id is the dedup check: a repeat inserts nothing.
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO events (seq, id, tenant, session, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for d in batch {
                    let seq = self.bounds.next;
                    if ins.execute(params![seq as i64, d.id, d.tenant, d.session, d.value])? == 1 {
                        self.bounds.next += 1;
                        out.push(Some(seq));
                    } else {
                        out.push(None);
                    }
                }
                let expired = self.bounds.expired();
                if !expired.is_empty() {
                    tx.prepare_cached("DELETE FROM events WHERE seq < ?1")?.execute([expired.end as i64])?;
                }
            }
            tx.commit()?;
            Ok(())
        }

        fn reader(&self) -> Result<Box<dyn Reader>> {
            Ok(Box::new(SqliteReader(connect(&self.path)?)))
        }

        fn compact(&mut self) -> Result<&'static str> {
            self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            self.conn.execute_batch("VACUUM")?;
            self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok("PRAGMA wal_checkpoint(TRUNCATE); VACUUM; checkpoint again")
        }
    }

    struct SqliteReader(Connection);

    impl Reader for SqliteReader {
        fn read_after(&mut self, after: u64, out: &mut Vec<(u64, Vec<u8>)>) -> Result<()> {
            let mut stmt = self.0.prepare_cached("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq")?;
            let mut rows = stmt.query([after as i64])?;
            while let Some(row) = rows.next()? {
                out.push((row.get::<_, i64>(0)? as u64, row.get(1)?));
            }
            Ok(())
        }
    }
}

mod redb_store {
    use super::*;
    use ::redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
    use std::sync::Arc;

    pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
    const IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
    const SESSIONS: TableDefinition<&[u8], ()> = TableDefinition::new("sessions");

    pub struct Redb {
        pub db: Arc<Database>,
        bounds: Bounds,
    }

    impl Redb {
        pub fn open(dir: &Path) -> Result<Redb> {
            // The page cache is bounded (the default is 1 GiB): the store must fit in 64 MiB of RSS.
            let db = Database::builder().set_cache_size(16 << 20).create(dir.join("events.redb"))?;
            let tx = db.begin_write()?;
            tx.open_table(EVENTS)?;
            tx.open_table(IDS)?;
            tx.open_table(SESSIONS)?;
            tx.commit()?;
            let rx = db.begin_read()?;
            let t = rx.open_table(EVENTS)?;
            let first = t.first()?.map(|(k, _)| k.value());
            let last = t.last()?.map(|(k, _)| k.value());
            let _ = t.len()?;
            drop(t);
            drop(rx);
            Ok(Redb { db: Arc::new(db), bounds: Bounds::from_first_last(first, last) })
        }
    }

    impl Store for Redb {
        fn commit(&mut self, batch: &[Delivery], out: &mut Vec<Option<u64>>) -> Result<()> {
            let mut tx = self.db.begin_write()?;
            // Immediate: commit() returns once the data and the new root are fsynced (one-phase commit with
            // checksums, redb's default).
            tx.set_durability(Durability::Immediate);
            {
                let mut events = tx.open_table(EVENTS)?;
                let mut ids = tx.open_table(IDS)?;
                let mut sessions = tx.open_table(SESSIONS)?;
                for d in batch {
                    if ids.get(d.id.as_str())?.is_some() {
                        out.push(None);
                        continue;
                    }
                    let seq = self.bounds.next;
                    self.bounds.next += 1;
                    ids.insert(d.id.as_str(), seq)?;
                    events.insert(seq, d.value.as_slice())?;
                    sessions.insert(session_key(&d.tenant, &d.session, seq).as_slice(), ())?;
                    out.push(Some(seq));
                }
                for seq in self.bounds.expired() {
                    let old = events.remove(seq)?.map(|v| v.value().to_vec());
                    if let Some(old) = old {
                        let h = header(&old);
                        ids.remove(h.id)?;
                        sessions.remove(session_key(h.tenant, h.session, seq).as_slice())?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        }

        fn reader(&self) -> Result<Box<dyn Reader>> {
            Ok(Box::new(RedbReader(Arc::clone(&self.db))))
        }

        fn compact(&mut self) -> Result<&'static str> {
            let db = Arc::get_mut(&mut self.db).ok_or("a reader still holds the database")?;
            while db.compact()? {}
            Ok("Database::compact() until it has nothing left to do")
        }
    }

    struct RedbReader(Arc<Database>);

    impl Reader for RedbReader {
        fn read_after(&mut self, after: u64, out: &mut Vec<(u64, Vec<u8>)>) -> Result<()> {
            let tx = self.0.begin_read()?;
            let t = tx.open_table(EVENTS)?;
            for kv in t.range(after + 1..)? {
                let (k, v) = kv?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(())
        }
    }
}

mod fjall_store {
    use super::*;
    use ::fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

    pub struct Fjall {
        keyspace: Keyspace,
        pub events: PartitionHandle,
        ids: PartitionHandle,
        sessions: PartitionHandle,
        bounds: Bounds,
    }

    impl Fjall {
        pub fn open(dir: &Path) -> Result<Fjall> {
            // Bounded memory (defaults: 32 MiB block cache, 64 MiB of memtables, 512 MiB of journals, which
            // a restart replays): the store must fit in 64 MiB of RSS and restart in 2 s.
            let keyspace = Config::new(dir.join("events.fjall"))
                .cache_size(mib_from_env("STORE_ENGINES_FJALL_CACHE_MIB", 16) << 20)
                .max_write_buffer_size(mib_from_env("STORE_ENGINES_FJALL_MEMTABLES_MIB", 16) << 20)
                .max_journaling_size(32 << 20)
                .open()?;
            let events = keyspace.open_partition("events", PartitionCreateOptions::default())?;
            let ids = keyspace.open_partition("ids", PartitionCreateOptions::default())?;
            let sessions = keyspace.open_partition("sessions", PartitionCreateOptions::default())?;
            let seq_of = |k: &[u8]| u64::from_be_bytes(k.try_into().expect("8-byte key"));
            let first = events.first_key_value()?.map(|(k, _)| seq_of(&k));
            let last = events.last_key_value()?.map(|(k, _)| seq_of(&k));
            Ok(Fjall { keyspace, events, ids, sessions, bounds: Bounds::from_first_last(first, last) })
        }
    }

    impl Store for Fjall {
        fn commit(&mut self, batch: &[Delivery], out: &mut Vec<Option<u64>>) -> Result<()> {
            // SyncAll: the batch is written to the journal and fsynced before commit() returns.
            let mut b = self.keyspace.batch().durability(Some(PersistMode::SyncAll));
            // A batch is not visible to reads before its commit: repeats within it are caught here.
            let mut fresh: HashSet<&str> = HashSet::with_capacity(batch.len());
            for d in batch {
                if !fresh.insert(d.id.as_str()) || self.ids.contains_key(d.id.as_bytes())? {
                    out.push(None);
                    continue;
                }
                let seq = self.bounds.next;
                self.bounds.next += 1;
                b.insert(&self.ids, d.id.as_bytes(), &seq.to_be_bytes()[..]);
                b.insert(&self.events, &seq.to_be_bytes()[..], d.value.as_slice());
                b.insert(&self.sessions, session_key(&d.tenant, &d.session, seq), &[][..]);
                out.push(Some(seq));
            }
            for seq in self.bounds.expired() {
                if let Some(old) = self.events.get(seq.to_be_bytes())? {
                    let h = header(&old);
                    b.remove(&self.ids, h.id.as_bytes());
                    b.remove(&self.sessions, session_key(h.tenant, h.session, seq));
                    b.remove(&self.events, &seq.to_be_bytes()[..]);
                }
            }
            b.commit()?;
            Ok(())
        }

        fn reader(&self) -> Result<Box<dyn Reader>> {
            Ok(Box::new(FjallReader(self.events.clone())))
        }

        fn compact(&mut self) -> Result<&'static str> {
            for p in [&self.events, &self.ids, &self.sessions] {
                p.rotate_memtable_and_wait()?;
                p.major_compact()?;
            }
            self.keyspace.persist(PersistMode::SyncAll)?;
            Ok("per partition: rotate_memtable_and_wait() (flush), major_compact()")
        }
    }

    struct FjallReader(PartitionHandle);

    impl Reader for FjallReader {
        fn read_after(&mut self, after: u64, out: &mut Vec<(u64, Vec<u8>)>) -> Result<()> {
            for kv in self.0.range((after + 1).to_be_bytes()..) {
                let (k, v) = kv?;
                out.push((u64::from_be_bytes(k[..].try_into().expect("8-byte key")), v.to_vec()));
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The committer: one thread, one transaction (one fsync) per batch of whatever has arrived.

/// After each commit: the newest sequence and when the commit returned.
type Committed = (u64, Instant);

struct CommitterStats {
    commits: u64,
    accepted: u64,
    repeats: u64,
}

fn committer(
    mut store: Box<dyn Store>,
    mut rx: mpsc::Receiver<Delivery>,
    notify: Option<std_mpsc::Sender<Committed>>,
) -> Result<(Box<dyn Store>, CommitterStats)> {
    let mut stats = CommitterStats { commits: 0, accepted: 0, repeats: 0 };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut out = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        out.clear();
        store.commit(&batch, &mut out)?;
        stats.commits += 1;
        let mut newest = 0;
        for (d, seq) in batch.drain(..).zip(out.iter()) {
            match seq {
                Some(s) => {
                    stats.accepted += 1;
                    newest = *s;
                }
                None => stats.repeats += 1,
            }
            let _ = d.reply.send(*seq);
        }
        if let (Some(n), true) = (&notify, newest > 0) {
            let _ = n.send((newest, Instant::now()));
        }
    }
    Ok((store, stats))
}

fn delivery(i: u64, epoch: Instant) -> (Delivery, oneshot::Receiver<Option<u64>>) {
    let id = fact_id(i);
    let tenant = tenant_of(i);
    let session = session_of(i);
    let submitted_ns = epoch.elapsed().as_nanos() as u64;
    let value = encode(i, &id, &tenant, &session, submitted_ns);
    let (reply, rx) = oneshot::channel();
    (Delivery { id, tenant, session, value, reply }, rx)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1_000.0
}

// ---------------------------------------------------------------------------------------------------------
// The phases.

struct Throughput {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    commits: u64,
    accepted: u64,
    repeats: u64,
    mean_batch: f64,
}

/// Phase 1 and 2: `events` deliveries from `writers` closed-loop writers through the group committer.
fn phase_throughput(
    rt: &tokio::runtime::Runtime,
    store: Box<dyn Store>,
    events: u64,
    writers: u64,
) -> Result<(Box<dyn Store>, Throughput)> {
    let (tx, rx) = mpsc::channel::<Delivery>(4 * MAX_BATCH);
    let handle = std::thread::spawn(move || committer(store, rx, None));
    let epoch = Instant::now();
    let hists = rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let mut h = hist();
                let mut i = w;
                while i < events {
                    let start = Instant::now();
                    let (d, reply) = delivery(i, epoch);
                    tx.send(d).await.expect("committer alive");
                    reply.await.expect("committer answers");
                    h.record(start.elapsed().as_micros() as u64).expect("in range");
                    i += writers;
                }
                h
            }));
        }
        drop(tx);
        let mut all = hist();
        for t in tasks {
            all.add(t.await.expect("writer task")).expect("same bounds");
        }
        all
    });
    let elapsed = epoch.elapsed();
    let (store, stats) = handle.join().expect("committer thread")?;
    let expected_repeats = (0..events).filter(|i| is_repeat(*i)).count() as u64;
    assert_eq!(stats.repeats, expected_repeats, "every repeat recognized, no new event taken for one");
    Ok((
        store,
        Throughput {
            per_sec: events as f64 / elapsed.as_secs_f64(),
            p50_ms: ms(&hists, 0.5),
            p99_ms: ms(&hists, 0.99),
            commits: stats.commits,
            accepted: stats.accepted,
            repeats: stats.repeats,
            mean_batch: events as f64 / stats.commits as f64,
        },
    ))
}

struct Watch {
    delivered: u64,
    ack_p50: f64,
    ack_p99: f64,
    deliver_p50: f64,
    deliver_p99: f64,
    commit_p50: f64,
    commit_p99: f64,
    commits: u64,
}

/// Phase 4: deliveries paced at WATCH_RATE/s; a reader thread, woken after each commit, reads the new events
/// from the engine (not from the committer's memory).
fn phase_watch(rt: &tokio::runtime::Runtime, store: Box<dyn Store>, first_new: u64) -> Result<(Box<dyn Store>, Watch)> {
    let total = WATCH_RATE * WATCH_SECS;
    let mut reader = store.reader()?;
    let (tx, rx) = mpsc::channel::<Delivery>(4 * MAX_BATCH);
    let (ntx, nrx) = std_mpsc::channel::<Committed>();
    let handle = std::thread::spawn(move || committer(store, rx, Some(ntx)));
    let epoch = Instant::now();
    let watcher = std::thread::spawn(move || -> Result<(Histogram<u64>, Histogram<u64>, u64)> {
        let mut deliver = hist();
        let mut commit = hist();
        let mut cursor = first_new - 1;
        let mut pending: VecDeque<Committed> = VecDeque::new();
        let mut buf = Vec::new();
        let mut seen = 0u64;
        while let Ok(n) = nrx.recv() {
            pending.push_back(n);
            while let Ok(n) = nrx.try_recv() {
                pending.push_back(n);
            }
            buf.clear();
            reader.read_after(cursor, &mut buf)?;
            let now = Instant::now();
            for (seq, value) in &buf {
                assert_eq!(*seq, cursor + 1, "no gap, no repeat");
                cursor = *seq;
                seen += 1;
                let h = header(value);
                let at = now.duration_since(epoch).as_nanos() as u64;
                deliver.record(at.saturating_sub(h.submitted_ns) / 1_000).expect("in range");
                while pending.front().is_some_and(|(last, _)| *last < *seq) {
                    pending.pop_front();
                }
                if let Some((_, committed_at)) = pending.front() {
                    commit.record(now.duration_since(*committed_at).as_micros() as u64).expect("in range");
                }
            }
        }
        Ok((deliver, commit, seen))
    });
    let (acks, base) = rt.block_on(async {
        let interval = Duration::from_nanos(1_000_000_000 / WATCH_RATE);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        // Ids past those of phase 1, so none repeats.
        let base = 10_000_000u64;
        for k in 0..total {
            tokio::time::sleep_until(start + interval * k as u32).await;
            let tx = tx.clone();
            let i = base + k * 100; // never `i % 100 == 99`: no repeat here
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let (d, reply) = delivery(i, epoch);
                tx.send(d).await.expect("committer alive");
                reply.await.expect("committer answers");
                t.elapsed().as_micros() as u64
            }));
        }
        drop(tx);
        let mut acks = hist();
        for t in tasks {
            acks.record(t.await.expect("delivery task")).expect("in range");
        }
        (acks, base)
    });
    let _ = base;
    let (store, stats) = handle.join().expect("committer thread")?;
    let (deliver, commit, seen) = watcher.join().expect("watcher thread")?;
    assert_eq!(seen, total, "the watcher saw every delivery");
    Ok((
        store,
        Watch {
            delivered: seen,
            ack_p50: ms(&acks, 0.5),
            ack_p99: ms(&acks, 0.99),
            deliver_p50: ms(&deliver, 0.5),
            deliver_p99: ms(&deliver, 0.99),
            commit_p50: ms(&commit, 0.5),
            commit_p99: ms(&commit, 0.99),
            commits: stats.commits,
        },
    ))
}

/// Bytes of every file under `dir`: (apparent length, allocated blocks).
fn dir_size(dir: &Path) -> Result<(u64, u64)> {
    let mut len = 0;
    let mut alloc = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (l, a) = dir_size(&entry.path())?;
            len += l;
            alloc += a;
        } else {
            len += meta.len();
            alloc += meta.blocks() * 512;
        }
    }
    Ok((len, alloc))
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .unwrap_or(0)
}

/// The restart phase, in a child process so that its peak RSS is its own.
fn restart_child(kind: Kind, dir: &Path) -> Result<()> {
    let (opened, ready, events, sessions) = restart_scan(kind, dir)?;
    println!(
        "RESTART open_ms={:.1} ready_ms={:.1} events={} sessions={} hwm_kib={} rss_kib={}",
        opened.as_secs_f64() * 1e3,
        ready.as_secs_f64() * 1e3,
        events,
        sessions,
        status_kib("VmHWM:"),
        status_kib("VmRSS:"),
    );
    Ok(())
}

struct Restart {
    open_ms: f64,
    ready_ms: f64,
    events: u64,
    hwm_mib: f64,
}

fn run_restart(kind: Kind, dir: &Path) -> Result<Restart> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--restart-child", kind.name()])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        return Err(format!("restart child failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let line = text.lines().find(|l| l.starts_with("RESTART")).ok_or("no RESTART line")?;
    let field = |name: &str| -> Result<f64> {
        let v = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
            .ok_or_else(|| format!("no {name} in {line}"))?;
        Ok(v.parse::<f64>()?)
    };
    Ok(Restart {
        open_ms: field("open_ms")?,
        ready_ms: field("ready_ms")?,
        events: field("events")? as u64,
        hwm_mib: field("hwm_kib")? / 1024.0,
    })
}

fn run_engine(rt: &tokio::runtime::Runtime, kind: Kind, events: u64, writers: u64, run: u32) -> Result<()> {
    let tmp = tempfile::Builder::new().prefix(&format!("store-engines-{}-", kind.name())).tempdir_in(scratch())?;
    let dir = tmp.path();
    let label = format!("{} run {}", kind.name(), run);

    let (store, tp) = phase_throughput(rt, open(kind, dir)?, events, writers)?;
    drop(store);
    let (len, alloc) = dir_size(dir)?;
    println!(
        "{label}: {:.0} deliveries/s ({events} deliveries, {} writers; {} new, {} repeats recognized), \
         writer latency p50 {:.2} ms p99 {:.2} ms, {} durable commits (mean {:.1} deliveries each)",
        tp.per_sec, writers, tp.accepted, tp.repeats, tp.p50_ms, tp.p99_ms, tp.commits, tp.mean_batch
    );
    println!(
        "{label}: peak RSS after the throughput phase (the harness included; alone with --engine): {:.1} MiB",
        status_kib("VmHWM:") as f64 / 1024.0
    );
    let retained = tp.accepted.min(RETAIN);
    println!(
        "{label}: on disk as left: {len} bytes ({alloc} allocated) = {:.0} B/event ({:.0} allocated) for {retained} retained",
        len as f64 / retained as f64,
        alloc as f64 / retained as f64
    );

    let r = run_restart(kind, dir)?;
    println!(
        "{label}: restart: open + first/last sequence {:.1} ms, ready (all {} events scanned) {:.1} ms, peak RSS {:.1} MiB",
        r.open_ms, r.events, r.ready_ms, r.hwm_mib
    );

    let mut store = open(kind, dir)?;
    let t = Instant::now();
    let how = store.compact()?;
    let took = t.elapsed();
    let (clen, calloc) = dir_size(dir)?;
    println!(
        "{label}: after compaction ({how}, {:.2} s): {clen} bytes ({calloc} allocated) = {:.0} B/event ({:.0} allocated)",
        took.as_secs_f64(),
        clen as f64 / retained as f64,
        calloc as f64 / retained as f64
    );

    // Reopened for the watcher: fjall 2.11 halts writes for good after rotate_memtable_and_wait() in the
    // compaction above (its write-buffer count stays over the limit; seen here), a reopen counts afresh.
    drop(store);
    let store = open(kind, dir)?;
    let first_new = tp.accepted + 1;
    let (store, w) = phase_watch(rt, store, first_new)?;
    drop(store);
    println!(
        "{label}: watcher at {WATCH_RATE}/s paced ({} events, {} commits): delivery -> reader p50 {:.2} ms p99 {:.2} ms; \
         commit -> reader p50 {:.3} ms p99 {:.3} ms; delivery -> 204 p50 {:.2} ms p99 {:.2} ms",
        w.delivered, w.commits, w.deliver_p50, w.deliver_p99, w.commit_p50, w.commit_p99, w.ack_p50, w.ack_p99
    );
    println!(
        "{label}: this process's peak RSS so far (all phases, the harness included; alone with --engine): {:.1} MiB",
        status_kib("VmHWM:") as f64 / 1024.0
    );
    println!(
        "ROW | {} | {run} | {:.0} | {:.2} / {:.2} | {} | {:.0} | {:.0} | {:.0} / {:.0} | {:.2} / {:.2} | {:.3} / {:.3} | {:.1} |",
        kind.name(),
        tp.per_sec,
        tp.p50_ms,
        tp.p99_ms,
        tp.commits,
        alloc as f64 / retained as f64,
        calloc as f64 / retained as f64,
        r.open_ms,
        r.ready_ms,
        w.deliver_p50,
        w.deliver_p99,
        w.commit_p50,
        w.commit_p99,
        r.hwm_mib
    );
    Ok(())
}

/// The disk's own floor: appends of one 256-byte record, each followed by fdatasync, as a group commit of
/// one would do at best. `64 / p50` bounds the deliveries/s of 64 closed-loop writers.
fn fsync_floor() -> Result<()> {
    use std::io::Write;
    let tmp = tempfile::Builder::new().prefix("store-engines-fsync-").tempdir_in(scratch())?;
    let mut f = std::fs::File::create(tmp.path().join("floor"))?;
    let mut h = hist();
    for _ in 0..2_000 {
        let t = Instant::now();
        f.write_all(&[7u8; 256])?;
        f.sync_data()?;
        h.record(t.elapsed().as_micros() as u64).expect("in range");
    }
    println!("fsync floor (2,000 x append 256 B + fdatasync): p50 {:.2} ms p99 {:.2} ms", ms(&h, 0.5), ms(&h, 0.99));
    Ok(())
}

/// A size in MiB from the environment (fjall's cache and memtables, to weigh memory against speed).
fn mib_from_env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Where the temporary stores go: STORE_ENGINES_DIR, else the system's temporary folder.
fn scratch() -> PathBuf {
    std::env::var_os("STORE_ENGINES_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--restart-child") {
        let kind = Kind::parse(&args[1]).ok_or("unknown engine")?;
        return restart_child(kind, Path::new(&args[2]));
    }
    let mut engines = vec![Kind::Sqlite, Kind::Redb, Kind::Fjall];
    let mut events = 200_000u64;
    let mut writers = 64u64;
    let mut runs = 2u32;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--engine" if v == "all" => {}
            "--engine" => engines = vec![Kind::parse(v).ok_or("engine: sqlite|redb|fjall|all")?],
            "--events" => events = v.parse()?,
            "--writers" => writers = v.parse()?,
            "--runs" => runs = v.parse()?,
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    println!(
        "ROW | engine | run | deliveries/s | writer p50 / p99 ms | commits | B/event on disk as left | B/event after compaction | \
         open / ready ms | delivery->reader p50 / p99 ms | commit->reader p50 / p99 ms | restart peak RSS MiB |"
    );
    for run in 1..=runs {
        fsync_floor()?;
        for kind in &engines {
            run_engine(&rt, *kind, events, writers, run)?;
        }
    }
    Ok(())
}
