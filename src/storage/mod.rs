//! The data dir (`--data-dir`): the one folder where the facade keeps what must survive a restart,
//! opened once per process. Every durable part (the event store, `events/disk/`; later the
//! calling policy's counts) writes into its own partitions of one embedded database, fjall
//! (chosen by measurement: BENCHMARKS.md, "Embedded store engines"), through one writer.
//!
//! - The folder is created when missing (mode 0700) and held with an exclusive lock on `<dir>/LOCK` (`flock`:
//!   the kernel lets go when the process dies, even by `kill -9`): a second process on the same
//!   folder is refused at start.
//! - The database lives in `<dir>/store`. One that fjall cannot open (corrupt, another format,
//!   not a database at all) is an error naming the path; it is never replaced by an empty one.
//! - Writes go through [`DataDir::commit`] (or [`DataDir::enqueue`] then [`DataDir::durable`]):
//!   one writer thread takes every batch that has arrived, writes them as one fjall batch and
//!   fsyncs the journal once (group commit). A commit returns only once its batch is on disk.
//!   Tickets are handed out in enqueue order and become durable in that order.
//! - A write or fsync that fails stops the writer for good: every commit after it fails, and
//!   [`DataDir::healthy`] turns false (the process should be restarted; nothing acknowledged is
//!   lost, since nothing after the failure was acknowledged).
//!
//! Reading is fjall's own API on the partition handles ([`DataDir::partition`]).

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use fjall::{AbstractTree as _, Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode, Slice};
use tokio::sync::watch;

/// The database folder inside the data dir.
const STORE_DIR: &str = "store";
/// The lock file inside the data dir.
const LOCK_FILE: &str = "LOCK";
/// fjall's block cache: reads at start and by reports are served from the memory indexes, so the
/// cache serves little; bounded for the process's memory (BENCHMARKS.md, "Embedded store engines";
/// 2 and 8 MiB measured alike under deliveries: "Durable event store, tuned").
const CACHE_BYTES: u64 = 2 << 20;
/// fjall's memtables (all partitions together) before a flush to disk. Smaller (4 MiB, or 2 MiB
/// memtables) stalled deliveries for 100–500 ms at a time in fjall's write throttling.
const WRITE_BUFFER_BYTES: u64 = 8 << 20;
/// fjall's journals before it throttles writes: what a restart replays. fjall counts each
/// journal it has sealed as 32 MiB (preallocated), and sleeps 500 ms per memtable rotation once
/// the journals pass 90 % of this (at 32 MiB: one sealed journal) and 100 ms steps past it: 40 MiB
/// lets one sealed journal wait for its flush without a stall.
const JOURNAL_BYTES: u64 = 40 << 20;
/// How long a clean stop waits for the memtables to be flushed (`flush_memtables`).
const FLUSH_AT_STOP: Duration = Duration::from_secs(3);
/// fjall's "flush workers" at least: how many queued memtables one wake-up of its flusher writes
/// out (each on a thread of its own, only while there is that much to flush). fjall's default is
/// one per core, one on a one-CPU pod (`flush_workers_for`).
const FLUSH_WORKERS: usize = 4;
/// The tables a whole compaction writes (fjall's leveled compaction's own target).
const MAJOR_TARGET_BYTES: u64 = 64 << 20;
/// Operations taken into one fjall batch at most (the rest go in the next, right after).
const MAX_BATCH_OPS: usize = 64 * 1024;

/// Why the data dir cannot be opened or written. Its text is one line naming the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// Another process holds the folder.
    #[error("the data dir {0} is in use by another process (its LOCK file is held)")]
    Locked(PathBuf),
    /// The folder or its lock cannot be made or opened.
    #[error("the data dir {path} cannot be used: {why}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The operating system's reason.
        why: String,
    },
    /// The database cannot be opened (corrupt, another format or version, unreadable).
    #[error("the store {path} cannot be opened: {why}")]
    Open {
        /// The database folder.
        path: PathBuf,
        /// The engine's reason.
        why: String,
    },
    /// A write or an fsync failed: the writer has stopped.
    #[error("the store {path} cannot be written: {why}")]
    Write {
        /// The database folder.
        path: PathBuf,
        /// The engine's reason.
        why: String,
    },
}

/// One line of an error's text (engines may print several).
pub(crate) fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes to commit together: puts and removes in partitions of the data dir, applied in order.
#[derive(Default)]
pub struct Batch {
    ops: Vec<(PartitionHandle, Slice, Option<Slice>)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Sets `key` to `value` in `partition`.
    pub fn put(&mut self, partition: &PartitionHandle, key: impl Into<Slice>, value: impl Into<Slice>) {
        self.ops.push((partition.clone(), key.into(), Some(value.into())));
    }

    /// Removes `key` from `partition` (nothing when absent).
    pub fn remove(&mut self, partition: &PartitionHandle, key: impl Into<Slice>) {
        self.ops.push((partition.clone(), key.into(), None));
    }
}

/// A place in the writer's queue: durable once the writer has fsynced through it.
pub type Ticket = u64;

/// What the writer has made durable, and whether it stopped.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every ticket up to this one is on disk.
    through: Ticket,
    /// Set when a write failed (the writer stopped).
    failed: Option<StorageError>,
}

/// The queue between committers and the writer thread.
struct Queue {
    ops: Vec<(PartitionHandle, Slice, Option<Slice>)>,
    /// The last ticket handed out.
    last: Ticket,
    closed: bool,
    /// The writer sleeps on `wake` (a committer wakes it; else it takes what is queued when it
    /// comes back from its fsync: no wake-up, no system call per commit).
    asleep: bool,
}

/// Called on the writer thread after each group commit: `Ok(through)` once every ticket up to
/// `through` is on disk, `Err` once when the writer stops on a failure. It must be quick (the next
/// group waits for it) and must not wait on the writer.
pub type DurableHook = Box<dyn Fn(Result<Ticket, &StorageError>) + Send + Sync>;

struct Writer {
    queue: Mutex<Queue>,
    wake: Condvar,
    durable: watch::Sender<Durable>,
    hooks: Mutex<Vec<DurableHook>>,
    fsyncs: AtomicU64,
    /// The data dir's lock: held while the data dir or its writer thread is alive (the writer
    /// outlives the data dir when its last handle is dropped from a hook).
    _lock: File,
}

impl Writer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn call_hooks(&self, progress: Result<Ticket, &StorageError>) {
        for hook in self.hooks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            hook(progress);
        }
    }

    /// The writer thread: takes what has arrived, one fjall batch, one fsync, then says so.
    /// Commits what is queued until the data dir is closed; `true` when it stopped because it
    /// was closed (not because a write failed).
    fn run(&self, keyspace: &Keyspace, path: &Path) -> bool {
        loop {
            let (ops, through) = {
                let mut q = self.lock();
                while q.ops.is_empty() && !q.closed {
                    q.asleep = true;
                    q = self.wake.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
                    q.asleep = false;
                }
                if q.ops.is_empty() {
                    return true;
                }
                (std::mem::take(&mut q.ops), q.last)
            };
            let mut result = Ok(());
            for chunk in ops.chunks(MAX_BATCH_OPS) {
                let mut batch = keyspace.batch().durability(Some(PersistMode::SyncData));
                for (partition, key, value) in chunk {
                    match value {
                        Some(v) => batch.insert(partition, key.clone(), v.clone()),
                        None => batch.remove(partition, key.clone()),
                    }
                }
                // SyncData: the batch is in the journal and the journal fdatasynced when commit
                // returns: its data and what reading it back needs (size, blocks), not its times.
                result = batch.commit();
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
                if result.is_err() {
                    break;
                }
            }
            match result {
                Ok(()) => {
                    // The hooks first: what they make visible is so before any committer returns.
                    self.call_hooks(Ok(through));
                    self.durable.send_modify(|d| d.through = d.through.max(through));
                }
                Err(e) => {
                    let error = StorageError::Write { path: path.to_owned(), why: one_line(e) };
                    tracing::error!(error = %error, "the store's writer stopped: every write from now on fails");
                    self.call_hooks(Err(&error));
                    self.durable.send_modify(|d| d.failed = Some(error));
                    return false;
                }
            }
        }
    }
}

/// fjall's flush workers for opening `store`: at least [`FLUSH_WORKERS`], and at least as many as
/// the journals left in it.
///
/// At start fjall 2.11 replays each journal sealed before a crash into a memtable queued for
/// flushing, then wakes its flusher once per partition holding any, and each wake-up writes out
/// at most "flush workers" memtables. A partition with more queued than that (three sealed
/// journals against two workers) kept one queued with nobody to wake for it; once the queued
/// memtables held more than the write buffer's limit, the first write waited for the buffer to
/// drain, for ever (`storage::tests::a_restart_after_a_crash_with_flushes_lagging_takes_writes`).
/// A partition holds at most one queued memtable per sealed journal, so with a worker per
/// journal the wake-ups at start flush them all.
fn flush_workers_for(store: &Path) -> usize {
    let journals = std::fs::read_dir(store.join("journals")).map(Iterator::count).unwrap_or(0);
    journals.clamp(FLUSH_WORKERS, 256)
}

/// Writes every partition's memtable out as a table when the writer stops cleanly, so that the
/// next start replays no journal into memory (up to 16 MiB of memtables, and the time to rebuild
/// them). Bounded by [`FLUSH_AT_STOP`]: the journals keep everything whether or not the flush
/// finishes, so a stop never waits longer for it (after a `kill -9` the next start replays them).
fn flush_memtables(keyspace: &Keyspace, store: &Path) {
    let started = std::time::Instant::now();
    let mut rotated = Vec::new();
    for name in keyspace.list_partitions() {
        let partition = match keyspace.open_partition(&name, PartitionCreateOptions::default()) {
            Ok(p) => p,
            Err(e) => return warn_not_flushed(store, &one_line(e)),
        };
        let before = partition.flushes_completed();
        match partition.rotate_memtable() {
            Ok(true) => rotated.push((partition, before)),
            Ok(false) => {}
            Err(e) => return warn_not_flushed(store, &one_line(e)),
        }
    }
    while rotated.iter().any(|(p, before)| p.flushes_completed() <= *before) {
        if started.elapsed() >= FLUSH_AT_STOP {
            return warn_not_flushed(store, "it took too long");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn warn_not_flushed(store: &Path, why: &str) {
    tracing::warn!(store = %store.display(), why, "the store's memtables were not all flushed at stop: the next start replays its journals");
}

/// Whole compactions asked for ([`DataDir::compact`]), done one at a time on a thread of their own
/// (one takes a few hundred milliseconds for a store at the default bounds; the writer and
/// fjall's own compactions go on meanwhile).
#[derive(Default)]
struct Compactions {
    /// The partitions waiting, the first one under way; closed: the data dir is stopping.
    queue: Mutex<(Vec<PartitionHandle>, bool)>,
    wake: Condvar,
    done: AtomicU64,
}

impl Compactions {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<PartitionHandle>, bool)> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn request(&self, partition: &PartitionHandle) {
        let mut q = self.lock();
        if !q.1 && !q.0.iter().any(|p| p.name == partition.name) {
            q.0.push(partition.clone());
            self.wake.notify_one();
        }
    }

    /// No compaction starts from now on (the one under way finishes).
    fn close(&self) {
        self.lock().1 = true;
        self.wake.notify_one();
    }

    fn run(&self, keyspace: &Keyspace, store: &Path) {
        loop {
            let partition = {
                let mut q = self.lock();
                loop {
                    if q.1 {
                        return;
                    }
                    if let Some(p) = q.0.first() {
                        break p.clone();
                    }
                    q = self.wake.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            let started = std::time::Instant::now();
            let before = partition.disk_space();
            // Every version older than now may go (fjall's own `major_compact` keeps those newer
            // than its snapshot watermark, which trails by up to 100 writes and 250 ms, and then
            // drops a tombstone over a value it kept: the value came back, a deleted event
            // stored again). Nothing here reads through snapshots: reads are point look-ups, and
            // scans only at start, before any compaction is asked for.
            match partition.tree.major_compact(MAJOR_TARGET_BYTES, keyspace.instant()) {
                Ok(()) => {
                    self.done.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        partition = %partition.name,
                        bytes_before = before,
                        bytes_after = partition.disk_space(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "store partition compacted"
                    );
                }
                // Not fatal: nothing is lost, the tombstones only stay longer; asked again later.
                Err(e) => {
                    tracing::warn!(store = %store.display(), partition = %partition.name, error = %one_line(e), "a compaction of the store failed")
                }
            }
            self.lock().0.retain(|p| p.name != partition.name);
        }
    }
}

/// The data dir, open: its lock held, its database open, its writer running. Dropping it stops
/// the writer (after what is queued) and lets go of the lock.
pub struct DataDir {
    path: PathBuf,
    store: PathBuf,
    keyspace: Keyspace,
    writer: Arc<Writer>,
    compactions: Arc<Compactions>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir").field("path", &self.path).finish_non_exhaustive()
    }
}

impl DataDir {
    /// Opens `path`: creates it when missing, takes its lock (refused when another process holds
    /// it), opens the database in it (refused when the engine cannot), starts the writer.
    pub fn open(path: &Path) -> Result<DataDir, StorageError> {
        let folder = |e: std::io::Error| StorageError::Folder { path: path.to_owned(), why: one_line(e) };
        // Owner only: it holds phone numbers and call ids (docs/security.md).
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(path)
            .map_err(folder)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path.join(LOCK_FILE))
            .map_err(folder)?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(StorageError::Locked(path.to_owned())),
            Err(e) => return Err(folder(e.into())),
        }
        let store = path.join(STORE_DIR);
        let open = |why: String| StorageError::Open { path: store.clone(), why };
        if store.exists() && !store.is_dir() {
            return Err(open("not a folder (another program's file?)".to_owned()));
        }
        let keyspace = Config::new(&store)
            .flush_workers(flush_workers_for(&store))
            .cache_size(CACHE_BYTES)
            .max_write_buffer_size(WRITE_BUFFER_BYTES)
            .max_journaling_size(JOURNAL_BYTES)
            .open()
            .map_err(|e| open(one_line(e)))?;
        let writer = Arc::new(Writer {
            queue: Mutex::new(Queue { ops: Vec::new(), last: 0, closed: false, asleep: false }),
            wake: Condvar::new(),
            durable: watch::Sender::new(Durable::default()),
            hooks: Mutex::new(Vec::new()),
            fsyncs: AtomicU64::new(0),
            _lock: lock,
        });
        let compactions = Arc::new(Compactions::default());
        let compactor = {
            let (compactions, keyspace, store) = (compactions.clone(), keyspace.clone(), store.clone());
            std::thread::Builder::new()
                .name("callbot-store-compact".to_owned())
                .spawn(move || compactions.run(&keyspace, &store))
                .map_err(|e| open(one_line(e)))?
        };
        let thread = {
            let (writer, keyspace, store, to_close) =
                (writer.clone(), keyspace.clone(), store.clone(), compactions.clone());
            std::thread::Builder::new()
                .name("callbot-store-writer".to_owned())
                .spawn(move || {
                    if writer.run(&keyspace, &store) {
                        flush_memtables(&keyspace, &store);
                    }
                    // A compaction under way finishes before the lock goes: another process must
                    // not open the folder while this one still writes tables into it.
                    to_close.close();
                    let _ = compactor.join();
                    // The database first, then the lock (in the writer).
                    drop(keyspace);
                    drop(writer);
                })
                .map_err(|e| {
                    // The compaction thread ends by itself, with nothing asked of it.
                    compactions.close();
                    open(one_line(e))
                })?
        };
        Ok(DataDir { path: path.to_owned(), store, keyspace, writer, compactions, thread: Some(thread) })
    }

    /// The database, for a durable part that writes its own partitions and fsyncs itself (the
    /// calling policy's counts, `policy/fjall.rs`): one engine, one lock, one folder.
    pub fn keyspace(&self) -> Keyspace {
        self.keyspace.clone()
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database folder inside it (for messages).
    pub fn store_path(&self) -> &Path {
        &self.store
    }

    /// The partition `name` (created when missing). Each durable part keeps its own.
    pub fn partition(&self, name: &str) -> Result<PartitionHandle, StorageError> {
        self.keyspace
            .open_partition(name, PartitionCreateOptions::default())
            .map_err(|e| StorageError::Open { path: self.store.clone(), why: one_line(e) })
    }

    /// Queues `batch` for the writer and returns at once with its ticket (tickets are in the
    /// order of the calls). Callers that must order their batches with their own state call
    /// this under their own lock, then wait with [`DataDir::durable`] outside it.
    pub fn enqueue(&self, batch: Batch) -> Ticket {
        let mut q = self.writer.lock();
        q.ops.extend(batch.ops);
        q.last += 1;
        let ticket = q.last;
        let wake = std::mem::take(&mut q.asleep);
        drop(q);
        if wake {
            self.writer.wake.notify_one();
        }
        ticket
    }

    /// The last ticket handed out: once it is durable, so is everything queued so far.
    pub fn last_ticket(&self) -> Ticket {
        self.writer.lock().last
    }

    /// Returns once `ticket`'s batch is on disk; an error when the writer stopped first.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StorageError> {
        let mut rx = self.writer.durable.subscribe();
        loop {
            {
                let d = rx.borrow_and_update();
                if d.through >= ticket {
                    return Ok(());
                }
                if let Some(e) = &d.failed {
                    return Err(e.clone());
                }
            }
            if rx.changed().await.is_err() {
                return Err(StorageError::Write { path: self.store.clone(), why: "the writer is gone".to_owned() });
            }
        }
    }

    /// Writes `batch` and returns once it is on disk (sharing its fsync with the batches that
    /// arrived meanwhile).
    pub async fn commit(&self, batch: Batch) -> Result<(), StorageError> {
        let ticket = self.enqueue(batch);
        self.durable(ticket).await
    }

    /// Has `hook` called on the writer thread after each group commit from now on (what a
    /// reader that must see only durable writes follows, with no task in between). A hook that
    /// holds the data dir must hold it weakly: the writer holds its hooks until it stops.
    pub fn on_durable(&self, hook: DurableHook) {
        self.writer.hooks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(hook);
    }

    /// Has `partition` compacted whole, on the data dir's compaction thread, soon (a request for
    /// a partition already waiting is the same request). What a part that deletes calls once it
    /// has deleted a lot: fjall 2.11 drops a deletion's tombstone only when a compaction writes
    /// into the last of its seven levels, which a store of this size never reaches by itself, so
    /// the tombstones of everything ever deleted would stay, on disk and in every scan at start
    /// (BENCHMARKS.md, "Eighth session"). Compacting whole writes into the last level.
    pub fn compact(&self, partition: &PartitionHandle) {
        self.compactions.request(partition);
    }

    /// Whole compactions done since the process started.
    pub fn compactions(&self) -> u64 {
        self.compactions.done.load(Ordering::Relaxed)
    }

    /// Group commits (fsyncs) made since the process started (`callbot_event_store_fsyncs_total`).
    pub fn fsyncs(&self) -> u64 {
        self.writer.fsyncs.load(Ordering::Relaxed)
    }

    /// Bytes the database takes on disk (journals included).
    pub fn disk_space(&self) -> u64 {
        self.keyspace.disk_space()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        self.writer.lock().closed = true;
        self.writer.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // Dropped from a hook (its owner's last handle went there): the writer stops by
            // itself after what is queued, then lets go of the lock; it cannot wait for itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests;
