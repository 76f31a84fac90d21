use std::sync::Arc;

use super::*;

#[tokio::test]
async fn a_commit_survives_a_reopen_and_commits_arriving_together_share_fsyncs() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    {
        let dir = Arc::new(DataDir::open(&path).unwrap());
        let p = dir.partition("things").unwrap();
        let commits = (0..200u32).map(|i| {
            let (dir, p) = (dir.clone(), p.clone());
            tokio::spawn(async move {
                let mut batch = Batch::new();
                batch.put(&p, i.to_be_bytes().to_vec(), b"v".to_vec());
                dir.commit(batch).await
            })
        });
        for c in futures::future::join_all(commits).await {
            c.unwrap().unwrap();
        }
        let fsyncs = dir.fsyncs();
        assert!((1..200).contains(&fsyncs), "200 commits at once share fsyncs: {fsyncs}");
        let mut batch = Batch::new();
        batch.remove(&p, 7u32.to_be_bytes().to_vec());
        dir.commit(batch).await.unwrap();
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700, "owner only");
    // Dropped: the lock is free, everything committed is there.
    let dir = DataDir::open(&path).unwrap();
    let p = dir.partition("things").unwrap();
    assert_eq!(p.len().unwrap(), 199);
    assert!(p.get(7u32.to_be_bytes()).unwrap().is_none());
    assert_eq!(p.get(8u32.to_be_bytes()).unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn a_clean_stop_leaves_tables_and_no_journal_to_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    {
        let dir = DataDir::open(&path).unwrap();
        let p = dir.partition("things").unwrap();
        let mut batch = Batch::new();
        for i in 0..100u32 {
            batch.put(&p, i.to_be_bytes().to_vec(), b"v".to_vec());
        }
        dir.commit(batch).await.unwrap();
        assert_eq!(p.segment_count(), 0, "still in the memtable (and the journal) while running");
    }
    // Stopped cleanly: the memtable was written out as a table, so the next start has it on disk
    // without rebuilding a memtable from the journal.
    let dir = DataDir::open(&path).unwrap();
    let p = dir.partition("things").unwrap();
    assert!(p.segment_count() >= 1, "the memtable was flushed at stop");
    assert_eq!(p.approximate_len(), 100);
    assert_eq!(p.len().unwrap(), 100);
}

#[tokio::test]
async fn a_second_opener_of_the_folder_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let first = DataDir::open(&path).unwrap();
    let err = DataDir::open(&path).unwrap_err();
    assert_eq!(err, StorageError::Locked(path.clone()));
    assert!(err.to_string().contains(&path.display().to_string()));
    drop(first);
    DataDir::open(&path).expect("free once the first is gone");
}

#[test]
fn a_store_that_is_not_fjalls_is_refused_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    // The store is a file (another program's).
    let path = tmp.path().join("a");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join(STORE_DIR), b"SQLite format 3\0").unwrap();
    let err = DataDir::open(&path).unwrap_err();
    assert!(matches!(err, StorageError::Open { .. }), "{err}");
    assert!(err.to_string().contains(&path.join(STORE_DIR).display().to_string()), "{err}");
    assert_eq!(std::fs::read(path.join(STORE_DIR)).unwrap(), b"SQLite format 3\0", "left as it was");
    // A store whose version marker is not fjall's.
    let path = tmp.path().join("b");
    drop(DataDir::open(&path).unwrap());
    let version = path.join(STORE_DIR).join("version");
    assert!(version.exists(), "fjall keeps a version marker");
    std::fs::write(&version, b"garbage").unwrap();
    let err = DataDir::open(&path).unwrap_err();
    assert!(matches!(err, StorageError::Open { .. }), "{err}");
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
    // The folder itself is a file.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(DataDir::open(&file).unwrap_err(), StorageError::Folder { .. }));
}

#[test]
fn a_data_dir_dropped_from_its_own_hook_writes_what_was_queued_then_frees_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let dir = Arc::new(DataDir::open(&path).unwrap());
    // The hook holds the data dir's last handle once the test lets go of its own, then drops it:
    // on the writer thread, which cannot join itself.
    let last = Arc::new(std::sync::Mutex::new(Some(dir.clone())));
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let (held, dropped) = (last.clone(), Arc::new(AtomicU64::new(0)));
    let seen = dropped.clone();
    dir.on_durable(Box::new(move |progress| {
        assert!(progress.is_ok());
        if let Some(dir) = held.lock().unwrap().take() {
            wait.lock().unwrap().recv().unwrap();
            assert_eq!(Arc::strong_count(&dir), 1, "the hook holds the last handle");
            drop(dir);
            seen.store(1, Ordering::SeqCst);
        }
    }));
    let p = dir.partition("things").unwrap();
    let mut first = Batch::new();
    first.put(&p, b"a".to_vec(), b"1".to_vec());
    dir.enqueue(first);
    let mut second = Batch::new();
    second.put(&p, b"b".to_vec(), b"2".to_vec());
    dir.enqueue(second);
    drop((p, dir));
    go.send(()).unwrap();
    // The lock is free once the writer has stopped; everything queued is on disk.
    let reopened = (0..500)
        .find_map(|_| match DataDir::open(&path) {
            Ok(dir) => Some(dir),
            Err(StorageError::Locked(_)) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            }
            Err(e) => panic!("{e}"),
        })
        .expect("the lock is let go of");
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    let p = reopened.partition("things").unwrap();
    assert_eq!(p.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(p.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
}

/// A crash while flushes lag leaves sealed journals. fjall 2.11 replays each into a memtable
/// queued for flushing and wakes its flusher once per partition with queued memtables; each
/// wake-up writes out at most its "flush workers" of them. With more queued than that (three
/// here, against fjall's default of one per core, two on CI), one stayed queued with nobody to
/// wake for it, holding more than the write buffer's limit: the first write then waited for the
/// write buffer to drain, for ever, and the process never became ready.
#[test]
fn a_restart_after_a_crash_with_flushes_lagging_takes_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    std::fs::create_dir_all(&path).unwrap();
    {
        // The crash's state, made directly: no flusher at all, three memtables of one partition
        // sealed, each larger than the data dir's write buffer (8 MiB), and no flush at the end.
        let keyspace = Config::new(path.join(STORE_DIR))
            .flush_workers(0)
            .max_write_buffer_size(u64::MAX)
            .max_journaling_size(u64::MAX)
            .open()
            .unwrap();
        let p = keyspace.open_partition("things", PartitionCreateOptions::default()).unwrap();
        let value = vec![b'v'; 1024];
        for round in 0..3u32 {
            for i in 0..9_000u32 {
                p.insert([round.to_be_bytes(), i.to_be_bytes()].concat(), value.as_slice()).unwrap();
            }
            assert!(p.rotate_memtable().unwrap());
        }
        keyspace.persist(PersistMode::SyncAll).unwrap();
        assert_eq!(p.segment_count(), 0, "nothing flushed");
    }
    // Started again, it takes a write and a commit. On a thread of its own: without the fix the
    // write never returns (and the data dir could not be dropped), so the test fails, not hangs.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dir = DataDir::open(&path).unwrap();
        let p = dir.partition("things").unwrap();
        let mut batch = Batch::new();
        batch.put(&p, b"after".to_vec(), b"1".to_vec());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(dir.commit(batch)).unwrap();
        let found = p.get(b"after").unwrap().map(|v| v.to_vec());
        done.send((found, p.len().unwrap())).unwrap();
    });
    let (found, len) = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("a write after the restart never finished: a replayed memtable was never flushed");
    assert_eq!(found.as_deref(), Some(&b"1"[..]));
    assert_eq!(len, 27_001, "everything replayed, and the write after");
}
