//! The log sink: lines are appended to one shared buffer and a writer thread writes that buffer
//! out in batches, at most every [`BATCH_INTERVAL`] while lines keep coming.
//!
//! Why not a channel to a writer thread (tracing-appender's non-blocking writer): it allocates
//! one `Vec` per line, its receiver spins before it sleeps, and every line sent to a sleeping
//! receiver is a futex wake-up, so at one call in flight its thread wakes for every access-log
//! line; it also keeps a large queue (BENCHMARKS.md weighs the two, CPU and memory). Here a
//! caller only copies its line under a mutex held for that copy; it wakes the writer only when
//! the writer sleeps with nothing to write (the first line after a quiet spell) or when the
//! buffer passes [`WAKE_BYTES`]. While lines keep coming, the writer takes the whole buffer
//! every [`BATCH_INTERVAL`], one `write` for all of it.
//!
//! Nothing is dropped: when the buffer holds [`LIMIT_BYTES`] (the sink is stuck, e.g. a pipe
//! nobody reads), callers wait for the writer. [`LogGuard`] writes what is left when dropped.

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// While lines keep coming, the writer writes at most this often: a line reaches the sink within
/// this delay (plus the write).
pub const BATCH_INTERVAL: Duration = Duration::from_millis(10);
/// A buffer this full wakes the writer before its interval is over.
pub const WAKE_BYTES: usize = 256 * 1024;
/// A buffer this full makes callers wait for the writer (lossless backpressure).
pub const LIMIT_BYTES: usize = 8 * 1024 * 1024;

struct State {
    buf: Vec<u8>,
    /// The writer waits for the first line (it is not in its interval sleep).
    writer_idle: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes callers waiting for room.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a buffer of whole lines: keep using it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The [`MakeWriter`] handed to the `fmt` layer. Cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written every line appended before.
#[must_use = "dropping the guard stops the writer"]
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard").finish_non_exhaustive()
    }
}

/// Starts the writer thread (named `thread_name`) writing to `sink`.
pub fn spawn<W: Write + Send + 'static>(sink: W, thread_name: &str) -> io::Result<(BatchWriter, LogGuard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { buf: Vec::with_capacity(64 * 1024), writer_idle: false, stop: false }),
        work: Condvar::new(),
        room: Condvar::new(),
    });
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new().name(thread_name.to_owned()).spawn(move || run(&shared, sink))?
    };
    Ok((BatchWriter { shared: Arc::clone(&shared) }, LogGuard { shared, thread: Some(thread) }))
}

fn run<W: Write>(shared: &Shared, mut sink: W) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        let stop = {
            let mut state = shared.lock();
            while state.buf.is_empty() && !state.stop {
                state.writer_idle = true;
                state = shared.work.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            state.writer_idle = false;
            std::mem::swap(&mut state.buf, &mut spare);
            state.stop
        };
        shared.room.notify_all();
        if !spare.is_empty() {
            // A failing sink (stderr closed) cannot be reported anywhere: the lines are dropped,
            // callers never wait on it.
            let _ = sink.write_all(&spare).and_then(|()| sink.flush());
            if spare.capacity() > 4 * WAKE_BYTES {
                spare = Vec::with_capacity(64 * 1024);
            } else {
                spare.clear();
            }
        }
        if stop {
            // `stop` was read with the buffer just taken: nothing can have been appended since
            // the guard set it (the guard is dropped last), but take a last look anyway.
            let rest = std::mem::take(&mut shared.lock().buf);
            let _ = sink.write_all(&rest).and_then(|()| sink.flush());
            return;
        }
        // Let lines gather; a full buffer (or the guard) cuts the wait short.
        let state = shared.lock();
        if state.buf.len() < WAKE_BYTES && !state.stop {
            drop(shared.work.wait_timeout(state, BATCH_INTERVAL).unwrap_or_else(PoisonError::into_inner));
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One formatted event: the `fmt` layer writes a whole line with one `write_all`.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.lock();
        while state.buf.len() >= LIMIT_BYTES && !state.stop {
            state = self.shared.room.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        let was_empty = state.buf.is_empty();
        state.buf.extend_from_slice(bytes);
        let wake = (was_empty && state.writer_idle) || state.buf.len() >= WAKE_BYTES;
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { shared: &self.shared }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A sink that hands every write to the test.
    #[derive(Clone)]
    struct Recorder(Arc<Mutex<Vec<u8>>>, Arc<Mutex<usize>>);

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            *self.1.lock().unwrap() += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn recorder() -> Recorder {
        Recorder(Arc::default(), Arc::default())
    }

    #[test]
    fn every_line_of_every_thread_arrives_once_and_in_each_threads_order() {
        let sink = recorder();
        let (writer, guard) = spawn(sink.clone(), "test-log").unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let writer = writer.clone();
                s.spawn(move || {
                    for i in 0..5_000 {
                        // As the fmt layer does: the whole line in one write.
                        writer.make_writer().write_all(format!("t{t} line {i}\n").as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 20_000);
        for t in 0..4 {
            let prefix = format!("t{t} ");
            let seen: Vec<usize> = text
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(seen, (0..5_000).collect::<Vec<_>>(), "thread {t}: lost, doubled or reordered lines");
        }
        // Batched: 20,000 lines did not take 20,000 writes.
        assert!(*sink.1.lock().unwrap() < 20_000);
    }

    #[test]
    fn a_line_reaches_the_sink_without_the_guard_being_dropped() {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        struct Forward(mpsc::Sender<Vec<u8>>);
        impl Write for Forward {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                let _ = self.0.send(bytes.to_vec());
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (writer, guard) = spawn(Forward(tx), "test-log").unwrap();
        // After a quiet spell (the writer idle), and again right after a write.
        for line in ["first\n", "second\n"] {
            writer.make_writer().write_all(line.as_bytes()).unwrap();
            let got = rx.recv_timeout(Duration::from_secs(10)).expect("the line was never written");
            assert_eq!(got, line.as_bytes());
        }
        drop(guard);
    }

    #[test]
    fn a_stuck_sink_makes_callers_wait_instead_of_dropping_lines() {
        // The sink blocks until the test opens the gate (a rendezvous per write).
        let (open, gate) = mpsc::sync_channel::<()>(0);
        struct Gated(mpsc::Receiver<()>, Recorder);
        impl Write for Gated {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                let _ = self.0.recv();
                self.1.write(bytes)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = recorder();
        let (writer, guard) = spawn(Gated(gate, sink.clone()), "test-log").unwrap();
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let lines = 3 * LIMIT_BYTES / 1024;
        let (done_tx, done_rx) = mpsc::channel();
        let producer = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                for _ in 0..lines {
                    writer.make_writer().write_all(&line).unwrap();
                }
                done_tx.send(()).unwrap();
            })
        };
        // The writer is stuck on its first write, so the producer fills the buffer and waits.
        assert!(done_rx.recv_timeout(Duration::from_millis(300)).is_err(), "the producer never waited");
        assert!(writer.shared.lock().buf.len() <= LIMIT_BYTES + 1024);
        // Open the gate for good: every line arrives.
        std::thread::spawn(move || while open.send(()).is_ok() {});
        done_rx.recv_timeout(Duration::from_secs(30)).expect("the producer stayed blocked");
        producer.join().unwrap();
        drop(guard);
        assert_eq!(sink.0.lock().unwrap().len(), lines * 1024);
    }
}
