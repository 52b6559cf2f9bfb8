//! The log writer: one thread, group commit.
//!
//! Producers (workers, or reactors running the engine inline) push the
//! events they applied, each stamped with the gate's epoch, and then a
//! reply entry for the request. The writer drains everything queued, writes
//! it with one `write`, makes it durable with one `fdatasync`, tells the
//! engine (cancelled units go back on sale) and only then releases the
//! replies: a `201` always follows its order's fsync.
//!
//! When a write or sync fails, the writer cuts the file back to the last
//! commit, trips the [`Gate`] (new commands get 503 for
//! `unavailable_ms`), reverts in the engine every event of the failed epoch
//! — those already queued and those still to arrive — and fails their
//! replies. Events of a later epoch were admitted after the trip and are
//! written normally: the first successful commit closes the breaker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use flashd_engine::{Engine, Event, Millis};
use std::sync::Mutex;

use crate::OrderLog;

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
    /// End of a batch: wake whoever waits.
    fn flush(&mut self) {}
}

/// The circuit breaker between producers and the log.
#[derive(Default)]
pub struct Gate {
    epoch: CachePadded<AtomicU64>,
    /// Entries of this epoch or older are doomed (0 = none ever failed;
    /// epochs start at 1).
    failed_epoch: AtomicU64,
    open_until_ms: AtomicU64,
    pub trips: AtomicU64,
    /// From a failure until the next successful write: while the door is
    /// shut, and while a probe after it is still waiting on the log.
    failing: AtomicBool,
    reason: Mutex<String>,
}

impl Gate {
    pub fn new() -> Gate {
        let g = Gate::default();
        g.epoch.store(1, Ordering::Relaxed);
        g
    }

    /// `Some(epoch)` to go ahead, `None` while the log is unavailable.
    #[inline]
    pub fn admit(&self, now: Millis) -> Option<u64> {
        if now < self.open_until_ms.load(Ordering::Acquire) {
            return None;
        }
        Some(self.epoch.load(Ordering::Acquire))
    }

    pub fn is_open(&self, now: Millis) -> bool {
        now < self.open_until_ms.load(Ordering::Acquire)
    }

    /// The last write failed and none has succeeded since.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Why the log is unavailable, if it is (or was last).
    pub fn reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn trip(&self, now: Millis, unavailable: Duration, why: String) {
        let e = self.epoch.load(Ordering::Acquire);
        self.failed_epoch.store(e, Ordering::Release);
        self.open_until_ms
            .store(now + unavailable.as_millis() as u64, Ordering::Release);
        self.epoch.store(e + 1, Ordering::Release);
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Release);
        if let Ok(mut r) = self.reason.lock() {
            *r = why;
        }
    }

    fn doomed(&self, epoch: u64) -> bool {
        epoch <= self.failed_epoch.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.failing.store(false, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
    }
}

#[derive(Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub events: AtomicU64,
    pub failures: AtomicU64,
    pub reverted: AtomicU64,
    /// Histogram of events per commit: <=1, <=4, <=16, <=64, <=256, <=1024, more.
    pub batch_hist: [AtomicU64; 7],
    /// Histogram of commit (write + fsync) time: <=100us, <=250us, <=500us,
    /// <=1ms, <=2.5ms, <=5ms, <=10ms, more.
    pub commit_hist: [AtomicU64; 8],
    pub commit_ns_sum: AtomicU64,
}

pub const BATCH_BOUNDS: [u64; 6] = [1, 4, 16, 64, 256, 1024];
pub const COMMIT_BOUNDS_US: [u64; 7] = [100, 250, 500, 1000, 2500, 5000, 10_000];

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

/// A producer's handle.
pub struct WriterHandle<R> {
    shared: Arc<Shared<R>>,
    pub gate: Arc<Gate>,
}

impl<R> Clone for WriterHandle<R> {
    fn clone(&self) -> Self {
        WriterHandle {
            shared: self.shared.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<R: Send + 'static> WriterHandle<R> {
    /// Room for `n` more entries? Checked before a command runs, so the
    /// pushes it makes (under engine locks) never find the ring full.
    pub fn has_room(&self, n: usize) -> bool {
        self.shared.ring.len() + n <= self.shared.ring.capacity()
    }

    pub fn push(&self, mut e: Entry<R>) {
        loop {
            match self.shared.ring.push(e) {
                Ok(()) => break,
                // Only if admission was bypassed; the writer drains without
                // taking any lock a producer could hold, so this ends.
                Err(back) => {
                    e = back;
                    std::thread::yield_now();
                }
            }
        }
        if self.shared.sleeping.load(Ordering::SeqCst)
            && !self.shared.self_waking.load(Ordering::SeqCst)
        {
            if let Some(t) = self.shared.thread.get() {
                t.unpark();
            }
        }
    }

    pub fn depth(&self) -> usize {
        self.shared.ring.len()
    }
}

/// Move queued entries into `batch` until it holds `max` or the ring is
/// empty.
fn take<R>(ring: &ArrayQueue<Entry<R>>, batch: &mut Vec<Entry<R>>, max: usize) {
    while batch.len() < max {
        match ring.pop() {
            Some(e) => batch.push(e),
            None => break,
        }
    }
}

pub struct LogWriter<R> {
    handle: WriterHandle<R>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<WriterStats>,
    pub committed_lsn: Arc<AtomicU64>,
}

impl<R: Send + 'static> LogWriter<R> {
    pub fn start(
        mut log: Box<dyn OrderLog>,
        engine: Arc<Engine>,
        mut replies: impl Replies<R>,
        cfg: WriterConfig,
        now_ms: fn() -> Millis,
    ) -> std::io::Result<LogWriter<R>> {
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
        let (sh, g, st, c) = (
            shared.clone(),
            gate.clone(),
            stats.clone(),
            committed.clone(),
        );
        let thread = std::thread::Builder::new().name("flashd-log".into()).spawn(move || {
            let _ = sh.thread.set(std::thread::current());
            let mut batch: Vec<Entry<R>> = Vec::with_capacity(cfg.batch_max);
            let mut events: Vec<Event> = Vec::with_capacity(cfg.batch_max);
            let mut replies_ok: Vec<R> = Vec::with_capacity(cfg.batch_max);
            // Ledger mode: written but not yet fsynced since this instant.
            let mut dirty_since: Option<Instant> = None;
            // Ledger mode: events that failed to write, retried first.
            let mut retry: Vec<Event> = Vec::new();
            let mut last_write: Option<Instant> = None;
            let mut last_commit: Option<Instant> = None;
            loop {
                take(&sh.ring, &mut batch, cfg.batch_max);
                if cfg.ack == Ack::Ledger {
                    if let Some(t) = dirty_since {
                        if t.elapsed() >= cfg.flush_interval || (batch.is_empty() && sh.stop.load(Ordering::Acquire)) {
                            if let Err(e) = log.commit() {
                                tracing::error!(error = %e, "log fsync failed (ledger mode): orders acknowledged since the last sync may be lost on a crash");
                                g.trip(now_ms(), cfg.unavailable, e.to_string());
                            } else {
                                c.store(log.committed_lsn(), Ordering::Release);
                                dirty_since = None;
                            }
                        }
                    }
                }
                if batch.is_empty() && retry.is_empty() {
                    if sh.stop.load(Ordering::Acquire) && sh.ring.is_empty() && dirty_since.is_none() {
                        break;
                    }
                    // Ledger mode with orders flowing: poll every
                    // millisecond instead of being woken per order.
                    let busy = cfg.ack == Ack::Ledger
                        && last_write.is_some_and(|t: Instant| t.elapsed() < Duration::from_millis(100));
                    sh.self_waking.store(busy, Ordering::SeqCst);
                    sh.sleeping.store(true, Ordering::SeqCst);
                    if sh.ring.is_empty() && !sh.stop.load(Ordering::Acquire) {
                        let wait = if busy {
                            Duration::from_millis(1)
                        } else if dirty_since.is_some() {
                            cfg.flush_interval.min(Duration::from_millis(2))
                        } else {
                            Duration::from_millis(50)
                        };
                        std::thread::park_timeout(wait);
                    }
                    sh.sleeping.store(false, Ordering::SeqCst);
                    continue;
                }
                // Pace back-to-back durable commits: wait out the rest of
                // the interval and take what arrived meanwhile into this
                // batch. Fewer, larger syncs: on the 2-core VM, syncing
                // flat out beside a busy CPU gets the whole guest
                // throttled by the host for ~15 ms of every 100 ms
                // (bench/results/2026-11-23-fsync-vm.md).
                if cfg.ack == Ack::Durable && !cfg.commit_interval.is_zero() && batch.len() < cfg.batch_max {
                    if let Some(due) = last_commit.map(|t| t + cfg.commit_interval) {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                            take(&sh.ring, &mut batch, cfg.batch_max);
                        }
                    }
                }
                let now = now_ms();
                // Split off what belongs to a failed epoch.
                let mut doomed_events: Vec<Event> = Vec::new();
                for e in batch.drain(..) {
                    match e {
                        Entry::Event { ev, epoch } => {
                            if cfg.ack == Ack::Durable && g.doomed(epoch) {
                                doomed_events.push(ev);
                            } else {
                                events.push(ev);
                            }
                        }
                        Entry::Reply { reply, epoch } => {
                            if g.doomed(epoch) {
                                replies.done(reply, false);
                            } else {
                                replies_ok.push(reply);
                            }
                        }
                    }
                }
                for ev in doomed_events.iter().rev() {
                    engine.revert(ev);
                }
                st.reverted.fetch_add(doomed_events.len() as u64, Ordering::Relaxed);
                if !retry.is_empty() {
                    retry.append(&mut events);
                    std::mem::swap(&mut retry, &mut events);
                }
                let t0 = Instant::now();
                if !events.is_empty() {
                    last_commit = Some(t0);
                }
                let result = if events.is_empty() {
                    Ok(())
                } else {
                    log.append(&events).and_then(|()| if cfg.ack == Ack::Durable { log.commit().map(|_| ()) } else { Ok(()) })
                };
                match result {
                    Ok(()) => {
                        if !events.is_empty() {
                            let ns = t0.elapsed().as_nanos() as u64;
                            st.commits.fetch_add(1, Ordering::Relaxed);
                            st.events.fetch_add(events.len() as u64, Ordering::Relaxed);
                            st.commit_ns_sum.fetch_add(ns, Ordering::Relaxed);
                            let bi = BATCH_BOUNDS.iter().position(|b| events.len() as u64 <= *b).unwrap_or(BATCH_BOUNDS.len());
                            st.batch_hist[bi].fetch_add(1, Ordering::Relaxed);
                            let ci = COMMIT_BOUNDS_US.iter().position(|b| ns / 1000 <= *b).unwrap_or(COMMIT_BOUNDS_US.len());
                            st.commit_hist[ci].fetch_add(1, Ordering::Relaxed);
                            if cfg.ack == Ack::Durable {
                                c.store(log.committed_lsn(), Ordering::Release);
                            } else {
                                last_write = Some(Instant::now());
                                if dirty_since.is_none() {
                                    dirty_since = last_write;
                                }
                            }
                        }
                        for ev in &events {
                            engine.durable(ev);
                        }
                        if (g.is_open(now) || g.is_failing()) && !events.is_empty() {
                            tracing::info!("log writes succeed again: accepting orders");
                            g.close();
                        }
                        for r in replies_ok.drain(..) {
                            replies.done(r, true);
                        }
                        events.clear();
                    }
                    Err(e) => {
                        st.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, events = events.len(), "log write failed: cutting back to the last commit, failing these orders");
                        // Shut the door first: rolling back may take a while
                        // (Kafka: the old producer settles), and whoever
                        // arrives meanwhile should get a fast 503, not wait.
                        g.trip(now, cfg.unavailable, e.to_string());
                        if let Err(e2) = log.rollback() {
                            // The file may now hold records we are about to
                            // report as failed; recovery would bring them
                            // back. Stop rather than risk that.
                            tracing::error!(error = %e2, "cannot cut the log back after a failed write; aborting");
                            std::process::abort();
                        }
                        if cfg.ack == Ack::Durable {
                            for ev in events.iter().rev() {
                                engine.revert(ev);
                            }
                            st.reverted.fetch_add(events.len() as u64, Ordering::Relaxed);
                            events.clear();
                            for r in replies_ok.drain(..) {
                                replies.done(r, false);
                            }
                        } else {
                            // Acknowledged already: keep and retry.
                            std::mem::swap(&mut retry, &mut events);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                replies.flush();
            }
            if let Err(e) = log.commit() {
                tracing::error!(error = %e, "final log sync failed");
            }
            c.store(log.committed_lsn(), Ordering::Release);
        })?;
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
