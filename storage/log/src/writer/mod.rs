//! The log writer: one thread, group commit.
//!
//! Producers (workers, or reactors running the engine inline) are admitted
//! through [`WriterHandle::admit`], which reserves ring room for everything
//! the command may push and stamps it with the gate's epoch. They push the
//! events they applied and then a reply entry for the request. The writer
//! drains everything queued, writes it with one `write`, makes it durable
//! with one `fdatasync` (or one produce round trip), tells the engine
//! through [`LogHooks::durable`] (cancelled units go back on sale) and only
//! then releases the replies: a `201` always follows its order's commit.
//!
//! When a write or commit fails (durable mode), the writer shuts the
//! [`Gate`] *before anything else*: no command is admitted until the
//! failure is wholly undone. It waits until every command admitted before
//! the shut has pushed all it will push (admissions are counted), reverts
//! in the engine every event of the failed epoch — the failed group, those
//! still queued — fails their replies, cuts the log back, and only then
//! opens the door again after `unavailable_ms`, counted from the end of the
//! undo. So no request is ever admitted against state that an undo in
//! progress will take back: a retried buy cannot be answered with an order
//! that is then removed, a retried pay cannot see `PAID` that reverts, and
//! no order can be logged on a sale whose creation is being undone.
//!
//! Never wait for the log while holding engine locks: admission reserves
//! the ring room first, so a push under a stripe lock never finds the ring
//! full, and the writer takes engine locks (to revert) only once no
//! admitted command is left running.
//!
//! Files: this one (configuration, what producers push, the hooks and
//! [`LogWriter`], which starts and stops the thread), `gate` (the breaker),
//! `handle` (admission and pushing), `stats` (`/metrics` counters and
//! histograms), `worker` (the writer thread).

mod gate;
mod handle;
mod stats;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use flashd_engine::{Event, Millis};

use crate::order_log::OrderLog;

pub use gate::Gate;
pub use handle::{Admission, Refused, WriterHandle};
pub use stats::{WriterStats, BATCH_EVENTS_BOUNDS, COMMIT_NS_BOUNDS};
use worker::Worker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Reply after the events are durable (the default).
    Durable,
    /// Reply at once; write behind, fsync every `flush_interval`.
    Ledger,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub ring_capacity: usize,
    pub batch_max: usize,
    pub unavailable: Duration,
    pub ack: Ack,
    pub flush_interval: Duration,
    /// Durable mode: the least time from one commit's start to the next
    /// (0: commit as soon as the last one ends). Only back-to-back commits
    /// are held back, so a lone order never waits for it.
    pub commit_interval: Duration,
}

pub enum Entry<R> {
    Event { ev: Event, epoch: u64 },
    Reply { reply: R, epoch: u64 },
}

/// Where replies go once their fate is known. Called on the writer thread.
pub trait Replies<R>: Send + 'static {
    fn done(&mut self, reply: R, durable: bool);
    /// The reply's command was undone, but the undo is not durable yet
    /// ([`crate::OrderLog::undo_pending`]): a crash now could bring it
    /// back, so its outcome is unknown to the client.
    fn unknown(&mut self, reply: R) {
        self.done(reply, false)
    }
    /// End of a batch: wake whoever waits.
    fn flush(&mut self) {}
}

/// What the writer tells the state machine whose events it logs: all the
/// log knows of it. The service implements it over the engine
/// (`bin/src/durable.rs`); the log never names the engine's type.
pub trait LogHooks: Send + Sync + 'static {
    /// `ev` is durable now: finish what waited for that.
    fn durable(&self, ev: &Event);
    /// `ev` will never be durable: undo it. Called with no command in
    /// flight, in reverse log order.
    fn revert(&self, ev: &Event);
}

struct Shared<R> {
    ring: ArrayQueue<Entry<R>>,
    sleeping: CachePadded<AtomicBool>,
    /// The writer will wake by itself within a millisecond: producers need
    /// not unpark it. Ledger mode under load: nobody waits on the write, and
    /// waking the writer for every order cost the reactor sharing its CPU a
    /// context switch per order (and its p99).
    self_waking: CachePadded<AtomicBool>,
    stop: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

pub struct LogWriter<R> {
    handle: WriterHandle<R>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<WriterStats>,
    pub committed_lsn: Arc<AtomicU64>,
}

impl<R: Send + 'static> LogWriter<R> {
    pub fn start<H: LogHooks>(
        log: Box<dyn OrderLog>,
        hooks: Arc<H>,
        replies: impl Replies<R>,
        cfg: WriterConfig,
        now_ms: fn() -> Millis,
    ) -> std::io::Result<LogWriter<R>> {
        assert!(cfg.ring_capacity >= 1 && cfg.batch_max >= 1);
        let shared = Arc::new(Shared {
            ring: ArrayQueue::new(cfg.ring_capacity),
            sleeping: CachePadded::new(AtomicBool::new(false)),
            self_waking: CachePadded::new(AtomicBool::new(false)),
            stop: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
        });
        let gate = Arc::new(Gate::new());
        let stats = Arc::new(WriterStats::default());
        let committed = Arc::new(AtomicU64::new(log.committed_lsn()));
        let worker = Worker {
            batch: Vec::with_capacity(cfg.batch_max),
            events: Vec::with_capacity(cfg.batch_max),
            replies_ok: Vec::with_capacity(cfg.batch_max),
            doomed: Vec::new(),
            retry: Vec::new(),
            dirty_since: None,
            last_write: None,
            last_commit: None,
            shared: shared.clone(),
            gate: gate.clone(),
            stats: stats.clone(),
            committed: committed.clone(),
            log,
            hooks,
            replies,
            cfg,
            now_ms,
        };
        let thread = std::thread::Builder::new()
            .name("flashd-log".into())
            .spawn(move || worker.run())?;
        Ok(LogWriter {
            handle: WriterHandle { shared, gate },
            thread: Some(thread),
            stats,
            committed_lsn: committed,
        })
    }

    pub fn handle(&self) -> WriterHandle<R> {
        self.handle.clone()
    }

    /// Write and sync everything queued, then stop. Producers must be gone.
    pub fn stop(mut self) {
        self.handle.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.handle.shared.thread.get() {
            t.unpark();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
