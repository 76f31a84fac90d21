//! Secrets from files, kept live: the `--api-key-file`, the `--caller-tokens-file` and the
//! `--tenants-file` (with the key files it names) are read once at start, where a bad one refuses
//! to start, then re-read when what they hold changes and on SIGHUP.
//!
//! A change is a change of content, not of metadata: every poll (`--secrets-poll-interval`, 1 s)
//! compares what the files a source last read hold with the SHA-256 the last load saw. That one
//! rule covers an edit in place, a new file renamed into place, and the symlink swap of a
//! Kubernetes Secret volume (`..data` repointed at a new directory), and it is immune to
//! modification times that do not move (same second, a copied-over file keeping its mtime).
//! A file is read and hashed again only when its metadata moved: its device, inode, size,
//! modification and status-change times (`ctime`, which no tool sets back: every write and rename
//! moves it) are as they were, or it is read. Metadata vouches for a file only once its `ctime` is
//! [`SETTLED`] old when looked at (as git does for its index): a write in the same clock tick as
//! the look could leave every time as it was. So a do-not-call list of a million numbers (the
//! calling policy's files are read the same way) costs a `stat` a second, not a read and a hash.
//!
//! A reload that fails keeps the last good value whole (never half of a new one) and says so once,
//! in one log line and `callbot_config_reload_failures_total`; the same bad content is not
//! reported again at every poll. A file missing for a moment (a delete-then-write) is waited for
//! for [`MISSING_GRACE_POLLS`] polls before it counts as a failure.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::{domain::ApiKey, metrics::Metrics};

/// Polls during which a missing file is waited for before the reload counts as failed.
pub(crate) const MISSING_GRACE_POLLS: u32 = 5;

/// A value a reload may replace whole; readers take the current one, cheaply (a read lock and an
/// `Arc` clone), and keep it for the rest of their call.
pub(crate) struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<T> Live<T> {
    /// A live value starting at `value`.
    pub(crate) fn new(value: T) -> Self {
        Live(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The current value.
    pub(crate) fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `value` in place; returns the value it replaced.
    pub(crate) fn replace(&self, value: T) -> Arc<T> {
        let mut current = self.0.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *current, Arc::new(value))
    }
}

impl<T: fmt::Debug> fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Live({:?})", self.get())
    }
}

/// How old a file's status change must be for its metadata to vouch for its content.
const SETTLED: Duration = Duration::from_secs(2);

/// What a file held when read: a digest, never the content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Content([u8; 32]),
    Missing,
    Unreadable(io::ErrorKind),
}

/// A file's metadata, as far as it tells a change (device, inode, size, mtime and ctime in ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// `path`'s stamp (following symlinks), when it can vouch for the content: its `ctime` at least
/// [`SETTLED`] old. `None` on other systems than Unix: every poll reads.
#[cfg(unix)]
fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    let ctime_ns = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
    let age = i128::try_from(now).ok()?.saturating_sub(ctime_ns);
    (age > i128::try_from(settled().as_nanos()).unwrap_or(i128::MAX)).then_some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

#[cfg(not(unix))]
fn stamp(_: &Path) -> Option<Stamp> {
    None
}

#[cfg(not(test))]
fn settled() -> Duration {
    SETTLED
}

#[cfg(test)]
thread_local! {
    /// Tests: the settling time (a file cannot be made older), and the files read.
    static TEST_SETTLED: std::cell::Cell<Duration> = const { std::cell::Cell::new(SETTLED) };
    static TEST_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
fn settled() -> Duration {
    TEST_SETTLED.get()
}

/// Reads `path` whole and says what it held, with its stamp taken before (so that a write
/// between the two makes the stamp, not the digest, out of date: the next poll reads again).
fn look(path: &Path) -> (Seen, Option<Stamp>, io::Result<Vec<u8>>) {
    let stamp = stamp(path);
    #[cfg(test)]
    TEST_READS.set(TEST_READS.get() + 1);
    match std::fs::read(path) {
        Ok(bytes) => (Seen::Content(Sha256::digest(&bytes).into()), stamp, Ok(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Seen::Missing, None, Err(e)),
        Err(e) => (Seen::Unreadable(e.kind()), None, Err(e)),
    }
}

/// The files one load read, and what each held, so that a poll can tell whether anything changed.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    /// Each file, what it held, and the stamp that vouches for it (when settled).
    seen: Vec<(PathBuf, Seen, Option<Stamp>)>,
    /// Whether a file was missing (the load may succeed once it is back).
    missing: bool,
}

impl Inputs {
    /// Reads `path` whole as UTF-8, remembering what it held.
    pub(crate) fn read(&mut self, path: &Path) -> io::Result<String> {
        let (seen, stamp, bytes) = look(path);
        self.missing |= seen == Seen::Missing;
        self.seen.push((path.to_owned(), seen, stamp));
        String::from_utf8(bytes?).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
    }

    /// Whether every file still holds what it held when read: its stamp says so, or else its
    /// digest (a file touched but not changed is stamped anew, not read again at every poll).
    fn unchanged(&mut self) -> bool {
        self.seen.iter_mut().all(|(path, seen, stamp)| {
            if stamp.is_some() && *stamp == self::stamp(path) {
                return true;
            }
            let (now, new_stamp, _) = look(path);
            let same = now == *seen;
            if same {
                *stamp = new_stamp;
            }
            same
        })
    }
}

/// Reads an upstream key file (`--api-key-file`, a tenant's `api_key_file`): the whole file,
/// surrounding whitespace trimmed; empty, or whitespace or control characters inside the key,
/// is an error. The error names the file, never its content.
pub(crate) fn read_key(inputs: &mut Inputs, path: &Path) -> Result<ApiKey, String> {
    let text = inputs.read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if key.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(format!("{} holds whitespace or control characters inside the key", path.display()));
    }
    Ok(ApiKey::new(key))
}

/// How a load reads its files into a value, or says in one line (naming the file and the entry,
/// never a secret) why it cannot.
type Loader<T> = Box<dyn Fn(&mut Inputs) -> Result<T, String> + Send + Sync>;

/// What to do with the value a reload replaced, beside the new one (drop a rotated key's cached
/// token and scripts).
type OnReplace<T> = Box<dyn Fn(&T, &T) + Send + Sync>;

/// One live value and how to reload it.
pub(crate) struct Source<T> {
    /// Its name in logs and in the metrics' `file` label.
    what: &'static str,
    live: Live<T>,
    load: Loader<T>,
    on_replace: Option<OnReplace<T>>,
    state: Mutex<State>,
}

/// What the last load attempt saw.
struct State {
    inputs: Inputs,
    /// When a poll first found a file missing (cleared once it is back or the wait is over).
    missing_since: Option<Instant>,
    /// Load again at the next poll whatever the files hold (waiting for a missing file).
    retry: bool,
}

impl<T: Send + Sync + 'static> Source<T> {
    /// Loads the value for the first time: an error is a start-up error.
    pub(crate) fn load(
        what: &'static str,
        load: impl Fn(&mut Inputs) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let mut inputs = Inputs::default();
        let value = load(&mut inputs)?;
        let state = State { inputs, missing_since: None, retry: false };
        Ok(Source { what, live: Live::new(value), load: Box::new(load), on_replace: None, state: Mutex::new(state) })
    }

    /// Calls `f(old, new)` after each successful reload.
    pub(crate) fn on_replace(mut self, f: impl Fn(&T, &T) + Send + Sync + 'static) -> Self {
        self.on_replace = Some(Box::new(f));
        self
    }

    /// The value, as the readers see it.
    pub(crate) fn live(&self) -> Live<T> {
        self.live.clone()
    }
}

/// What a poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A new value is in place.
    Reloaded,
    /// The files could not be loaded; the last good value stays.
    Failed,
}

/// A source of any type, as the reloader drives it.
pub(crate) trait Reload: Send + Sync {
    /// Its name in logs and metrics.
    fn what(&self) -> &'static str;
    /// Loads again when the files changed (or `force`, on SIGHUP); `None` when nothing was done.
    fn poll(&self, force: bool, missing_grace: Duration) -> Option<Outcome>;
}

impl<T: Send + Sync + 'static> Reload for Source<T> {
    fn what(&self) -> &'static str {
        self.what
    }

    fn poll(&self, force: bool, missing_grace: Duration) -> Option<Outcome> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !force && !state.retry && state.inputs.unchanged() {
            return None;
        }
        let mut inputs = Inputs::default();
        let result = (self.load)(&mut inputs);
        let missing = inputs.missing;
        state.inputs = inputs;
        match result {
            Ok(value) => {
                state.retry = false;
                state.missing_since = None;
                let old = self.live.replace(value);
                if let Some(f) = &self.on_replace {
                    f(&old, &self.live.get());
                }
                tracing::info!(file = self.what, "reloaded");
                Some(Outcome::Reloaded)
            }
            Err(error) => {
                let now = Instant::now();
                let since = *state.missing_since.get_or_insert(now);
                if missing && now.duration_since(since) < missing_grace {
                    state.retry = true;
                    tracing::debug!(file = self.what, "a file is missing; waiting for it to come back");
                    return None;
                }
                state.retry = false;
                state.missing_since = None;
                tracing::warn!(file = self.what, %error, "reload failed; keeping the last good configuration");
                Some(Outcome::Failed)
            }
        }
    }
}

/// Polls every source, and reloads them all at once on SIGHUP.
pub(crate) struct Reloader {
    sources: Vec<Arc<dyn Reload>>,
    interval: Duration,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// A reloader of nothing yet, polling every `interval`.
    pub(crate) fn new(interval: Duration, metrics: Arc<Metrics>) -> Self {
        Reloader { sources: Vec::new(), interval, metrics }
    }

    /// Adds a source.
    pub(crate) fn watch(&mut self, source: Arc<dyn Reload>) {
        self.metrics.config_reload_series(source.what());
        self.sources.push(source);
    }

    /// Whether there is anything to watch (without, no task runs and SIGHUP keeps its default).
    pub(crate) fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Polls until `stop` resolves. SIGHUP is taken over here, before the returned future first
    /// runs, so that a SIGHUP sent once the facade says it serves can never meet the default
    /// action (termination). The files are read on the blocking pool: a slow volume must not
    /// stall the calls sharing this worker thread.
    pub(crate) fn run(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let hangup = hangup_signal();
        self.poll_until(hangup, stop)
    }

    async fn poll_until(self, mut hangup: Hangup, stop: impl std::future::Future<Output = ()>) {
        let missing_grace = self.interval * MISSING_GRACE_POLLS;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut stop = std::pin::pin!(stop);
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                () = next_hangup(&mut hangup) => {
                    tracing::info!("SIGHUP received: re-reading the secret files");
                    true
                }
                () = &mut stop => return,
            };
            let sources = self.sources.clone();
            let polled = tokio::task::spawn_blocking(move || {
                sources.iter().map(|s| (s.what(), s.poll(force, missing_grace))).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (what, outcome) in polled {
                match outcome {
                    Some(Outcome::Reloaded) => self.metrics.config_reloaded(what),
                    Some(Outcome::Failed) => self.metrics.config_reload_failed(what),
                    None => {}
                }
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

/// Resolves at the next SIGHUP (never when there is no such signal).
#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    if let Some(signal) = hangup {
        if signal.recv().await.is_some() {
            return;
        }
    }
    std::future::pending::<()>().await
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: PathBuf) -> Source<String> {
        Source::load("test_file", move |inputs| {
            let text = inputs.read(&path).map_err(|e| format!("cannot read: {e}"))?;
            match text.trim() {
                "" => Err("empty".to_owned()),
                t => Ok(t.to_owned()),
            }
        })
        .unwrap()
    }

    #[test]
    fn a_change_of_content_reloads_and_a_bad_one_keeps_the_last_good_value_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "one\n").unwrap();
        let s = source(path.clone());
        let live = s.live();
        let grace = Duration::from_secs(60);
        assert_eq!(s.poll(false, grace), None, "nothing changed");
        std::fs::write(&path, "two\n").unwrap();
        assert_eq!(s.poll(false, grace), Some(Outcome::Reloaded));
        assert_eq!(*live.get(), "two");
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(s.poll(false, grace), Some(Outcome::Failed));
        assert_eq!(*live.get(), "two", "the last good value stays");
        assert_eq!(s.poll(false, grace), None, "the same bad content is reported once");
        assert_eq!(s.poll(true, grace), Some(Outcome::Failed), "SIGHUP tries again");
        // A new file renamed into place.
        let next = dir.path().join("secret.new");
        std::fs::write(&next, "three").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(s.poll(false, grace), Some(Outcome::Reloaded));
        assert_eq!(*live.get(), "three");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_swap_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("..2026_a"), dir.path().join("..2026_b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("key"), "old").unwrap();
        std::fs::write(b.join("key"), "new").unwrap();
        let data = dir.path().join("..data");
        std::os::unix::fs::symlink(&a, &data).unwrap();
        let path = dir.path().join("key");
        std::os::unix::fs::symlink("..data/key", &path).unwrap();
        let s = source(path);
        assert_eq!(*s.live().get(), "old");
        let tmp = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&b, &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        assert_eq!(s.poll(false, Duration::from_secs(60)), Some(Outcome::Reloaded));
        assert_eq!(*s.live().get(), "new");
    }

    #[test]
    fn a_missing_file_is_waited_for_then_counts_as_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "one").unwrap();
        let s = source(path.clone());
        std::fs::remove_file(&path).unwrap();
        let grace = Duration::from_millis(200);
        assert_eq!(s.poll(false, grace), None, "missing for a moment: waited for");
        std::fs::write(&path, "two").unwrap();
        assert_eq!(s.poll(false, grace), Some(Outcome::Reloaded), "back: loaded, no failure");
        assert_eq!(*s.live().get(), "two");

        std::fs::remove_file(&path).unwrap();
        assert_eq!(s.poll(false, grace), None);
        std::thread::sleep(grace);
        assert_eq!(s.poll(false, grace), Some(Outcome::Failed), "still missing after the grace");
        assert_eq!(s.poll(false, grace), None, "reported once");
        assert_eq!(*s.live().get(), "two");
        std::fs::write(&path, "three").unwrap();
        assert_eq!(s.poll(false, grace), Some(Outcome::Reloaded));
    }

    #[cfg(unix)]
    #[test]
    fn a_settled_file_is_not_read_again_until_its_metadata_moves_and_same_size_same_mtime_edits_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        std::fs::write(&path, "0912345670\n").unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        // As if the file were older than the settling time. (Sleeps: ctime moves by clock ticks.)
        TEST_SETTLED.set(Duration::ZERO);
        let tick = || std::thread::sleep(Duration::from_millis(20));
        tick();
        let s = source(path.clone());
        let grace = Duration::from_secs(60);
        let reads = TEST_READS.get();
        for _ in 0..3 {
            assert_eq!(s.poll(false, grace), None);
        }
        assert_eq!(TEST_READS.get(), reads, "three polls, no read: the stamp vouched");
        // Same size, mtime set back: ctime still moves, so it is read and reloaded.
        tick();
        std::fs::write(&path, "0912345671\n").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        tick();
        assert_eq!(s.poll(false, grace), Some(Outcome::Reloaded));
        assert_eq!(*s.live().get(), "0912345671");
        // Touched, not changed: read once, then vouched for again.
        tick();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(std::time::SystemTime::now()).unwrap();
        tick();
        let reads = TEST_READS.get();
        assert_eq!(s.poll(false, grace), None);
        assert_eq!(s.poll(false, grace), None);
        assert_eq!(TEST_READS.get(), reads + 1);
        // Not settled: read at every poll (a write in the same tick must not be missed).
        TEST_SETTLED.set(SETTLED);
        std::fs::write(&path, "0912345672\n").unwrap();
        assert_eq!(s.poll(false, grace), Some(Outcome::Reloaded));
        let reads = TEST_READS.get();
        assert_eq!(s.poll(false, grace), None);
        assert_eq!(s.poll(false, grace), None);
        assert_eq!(TEST_READS.get(), reads + 2);
    }

    #[test]
    fn on_replace_sees_the_old_and_the_new_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "one").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let s = source(path.clone())
            .on_replace(move |old: &String, new: &String| log.lock().unwrap().push(format!("{old}->{new}")));
        std::fs::write(&path, "two").unwrap();
        s.poll(false, Duration::ZERO);
        assert_eq!(*seen.lock().unwrap(), ["one->two"]);
    }
}
