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

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use flashd_engine::{Engine, Event, Millis};
use flashd_protocol::histogram::Histogram;
use std::sync::Mutex;

use crate::order_log::OrderLog;

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

/// What the writer tells the state machine whose events it logs. The log
/// knows nothing else of the engine.
pub trait LogHooks: Send + Sync + 'static {
    /// `ev` is durable now: finish what waited for that.
    fn durable(&self, ev: &Event);
    /// `ev` will never be durable: undo it. Called with no command in
    /// flight, in reverse log order.
    fn revert(&self, ev: &Event);
}

impl LogHooks for Engine {
    fn durable(&self, ev: &Event) {
        Engine::durable(self, ev)
    }
    fn revert(&self, ev: &Event) {
        Engine::revert(self, ev)
    }
}

/// Why a command was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The log cannot make anything durable now (breaker open, or a failure
    /// is being undone).
    Unavailable,
    /// The writer's ring has no room for what the command may push.
    Busy,
}

/// The circuit breaker between producers and the log.
#[derive(Default)]
pub struct Gate {
    epoch: CachePadded<AtomicU64>,
    /// Ring entries reserved by admitted commands that have not finished
    /// pushing. While a failure is undone the writer waits for this to
    /// reach zero.
    reserved: CachePadded<AtomicUsize>,
    /// Shut from a failure until its undo is complete.
    shut: AtomicBool,
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

    /// The epoch a command admitted now would carry, `None` while the log
    /// is unavailable. A probe: it reserves nothing (commands go through
    /// [`WriterHandle::admit`]).
    #[inline]
    pub fn admit(&self, now: Millis) -> Option<u64> {
        if self.is_open(now) {
            return None;
        }
        Some(self.epoch.load(Ordering::Acquire))
    }

    /// Refusing commands: a failure is being undone, or the `unavailable`
    /// window after one has not passed.
    pub fn is_open(&self, now: Millis) -> bool {
        self.shut.load(Ordering::SeqCst) || now < self.open_until_ms.load(Ordering::Acquire)
    }

    /// A failure is being undone: nothing is admitted, and memory may still
    /// hold state about to be taken back.
    pub fn is_shut(&self) -> bool {
        self.shut.load(Ordering::SeqCst)
    }

    /// The last write failed and none has succeeded since.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Why the log is unavailable, if it is (or was last).
    pub fn reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Ring entries reserved by commands in flight.
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Acquire)
    }

    fn set_reason(&self, why: String) {
        if let Ok(mut r) = self.reason.lock() {
            *r = why;
        }
    }

    /// Durable mode: refuse every command from now until [`Gate::reopen`],
    /// and doom every entry admitted so far.
    fn shut(&self, why: String) {
        // SeqCst pairs with admit's reserve-then-check: a producer that
        // finds the gate not shut has its reservation seen by the writer's
        // wait below.
        self.shut.store(true, Ordering::SeqCst);
        self.failed_epoch
            .store(self.epoch.load(Ordering::Acquire), Ordering::Release);
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Release);
        self.set_reason(why);
    }

    /// The undo is complete: new commands carry a fresh epoch, admitted
    /// once `unavailable` has passed from `now`.
    fn reopen(&self, now: Millis, unavailable: Duration) {
        let e = self.epoch.load(Ordering::Acquire);
        debug_assert_eq!(e, self.failed_epoch.load(Ordering::Acquire));
        self.epoch.store(e + 1, Ordering::Release);
        self.open_until_ms
            .store(now.saturating_add(millis(unavailable)), Ordering::Release);
        self.shut.store(false, Ordering::SeqCst);
    }

    /// Ledger mode: replies went out already, nothing is undone; refuse new
    /// commands for `unavailable` while the writes are retried.
    fn trip_ledger(&self, now: Millis, unavailable: Duration, why: String) {
        self.open_until_ms
            .store(now.saturating_add(millis(unavailable)), Ordering::Release);
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Release);
        self.set_reason(why);
    }

    fn doomed(&self, epoch: u64) -> bool {
        epoch <= self.failed_epoch.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.failing.store(false, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the writer has done, for `/metrics`. Counters are relaxed: each is
/// exact, but two read together may be a commit apart.
pub struct WriterStats {
    pub commits: AtomicU64,
    pub events: AtomicU64,
    pub failures: AtomicU64,
    pub reverted: AtomicU64,
    /// Events per group commit (a count; bounds [`BATCH_EVENTS_BOUNDS`]).
    /// Its sum is the events made durable.
    pub batch_events: Histogram<6>,
    /// Time of a group commit (write + fsync, or one produce round trip),
    /// in nanoseconds (bounds [`COMMIT_NS_BOUNDS`]): expose with scale 1e-9
    /// for seconds.
    pub commit_ns: Histogram<7>,
    /// Wall-clock ms at which the writer started its current piece of work
    /// (a commit, or undoing a failure); 0 while it waits for work. The
    /// watchdog stops pinging when this is older than any commit may take.
    pub busy_since_ms: AtomicU64,
}

/// Bounds of [`WriterStats::batch_events`]: events per commit.
pub const BATCH_EVENTS_BOUNDS: [u64; 6] = [1, 4, 16, 64, 256, 1024];
/// Bounds of [`WriterStats::commit_ns`]: 100 µs to 10 ms, in nanoseconds.
pub const COMMIT_NS_BOUNDS: [u64; 7] = [
    100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

impl Default for WriterStats {
    fn default() -> WriterStats {
        WriterStats {
            commits: AtomicU64::new(0),
            events: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            reverted: AtomicU64::new(0),
            batch_events: Histogram::new(BATCH_EVENTS_BOUNDS),
            commit_ns: Histogram::new(COMMIT_NS_BOUNDS),
            busy_since_ms: AtomicU64::new(0),
        }
    }
}

/// Idle writer: longest sleep before looking at the ring again (a missed
/// unpark costs at most this).
const IDLE_PARK: Duration = Duration::from_millis(50);
/// Ledger mode under a steady stream: poll this often instead of being
/// woken per order.
const LEDGER_POLL: Duration = Duration::from_millis(1);
/// Ledger mode: a stream counts as steady while the last write is younger
/// than this.
const LEDGER_STEADY: Duration = Duration::from_millis(100);
/// Ledger mode: pause before retrying writes that failed.
const LEDGER_RETRY_PAUSE: Duration = Duration::from_millis(50);

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

/// An admitted command: ring room for `entries` pushes is reserved until
/// it is dropped, and while it lives a failure's undo waits for it. Hold it
/// only while applying and pushing; never wait on anything while holding
/// it.
pub struct Admission<'a, R: Send + 'static> {
    handle: &'a WriterHandle<R>,
    entries: usize,
    pushed: usize,
    epoch: u64,
}

impl<R: Send + 'static> Admission<'_, R> {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Queue an event this command applied.
    pub fn event(&mut self, ev: Event) {
        let epoch = self.epoch;
        self.push(Entry::Event { ev, epoch });
    }

    /// Queue the command's reply, released once everything queued before
    /// it is durable (or failed).
    pub fn reply(&mut self, reply: R) {
        let epoch = self.epoch;
        self.push(Entry::Reply { reply, epoch });
    }

    fn push(&mut self, e: Entry<R>) {
        assert!(
            self.pushed < self.entries,
            "a command pushed more than the {} entries it reserved",
            self.entries
        );
        self.pushed += 1;
        self.handle.push(e);
    }
}

impl<R: Send + 'static> Drop for Admission<'_, R> {
    fn drop(&mut self) {
        self.handle
            .gate
            .reserved
            .fetch_sub(self.entries, Ordering::SeqCst);
    }
}

impl<R: Send + 'static> WriterHandle<R> {
    /// Admit a command that may push up to `entries` entries: `Err` while
    /// the log is unavailable or its ring has no room for them. The room is
    /// reserved, so the command's pushes (made under engine locks) never
    /// wait.
    #[inline]
    pub fn admit(&self, now: Millis, entries: usize) -> Result<Admission<'_, R>, Refused> {
        let g = &*self.gate;
        // Cheap refusal first: while the breaker is open nothing touches
        // the shared counter.
        if now < g.open_until_ms.load(Ordering::Acquire) {
            return Err(Refused::Unavailable);
        }
        // Reserve, then look: see Gate::shut for the pairing.
        let reserved = g.reserved.fetch_add(entries, Ordering::SeqCst) + entries;
        let mut a = Admission {
            handle: self,
            entries,
            pushed: 0,
            epoch: 0,
        };
        if g.shut.load(Ordering::SeqCst) {
            return Err(Refused::Unavailable);
        }
        // Counting the reservations of commands that already pushed twice
        // only errs on the safe side.
        if self.shared.ring.len() + reserved > self.shared.ring.capacity() {
            return Err(Refused::Busy);
        }
        a.epoch = g.epoch.load(Ordering::Acquire);
        Ok(a)
    }

    /// Push outside an admission (tests, and entries whose room the caller
    /// accounts for itself). Waits while the ring is full, which only an
    /// unadmitted producer can meet.
    pub fn push(&self, mut e: Entry<R>) {
        loop {
            match self.shared.ring.push(e) {
                Ok(()) => break,
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

    pub fn capacity(&self) -> usize {
        self.shared.ring.capacity()
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

/// The writer thread's state.
struct Worker<R, H, P> {
    shared: Arc<Shared<R>>,
    gate: Arc<Gate>,
    stats: Arc<WriterStats>,
    committed: Arc<AtomicU64>,
    log: Box<dyn OrderLog>,
    hooks: Arc<H>,
    replies: P,
    cfg: WriterConfig,
    now_ms: fn() -> Millis,
    batch: Vec<Entry<R>>,
    events: Vec<Event>,
    replies_ok: Vec<R>,
    /// Durable mode: events of a failed epoch met in the ring, to revert.
    doomed: Vec<Event>,
    /// Ledger mode: events that failed to write, retried first.
    retry: Vec<Event>,
    /// Ledger mode: written but not yet synced since this instant.
    dirty_since: Option<Instant>,
    last_write: Option<Instant>,
    last_commit: Option<Instant>,
}

impl<R: Send + 'static, H: LogHooks, P: Replies<R>> Worker<R, H, P> {
    fn run(mut self) {
        let _ = self.shared.thread.set(std::thread::current());
        loop {
            take(&self.shared.ring, &mut self.batch, self.cfg.batch_max);
            if self.cfg.ack == Ack::Ledger {
                self.ledger_sync_if_due();
            }
            if self.batch.is_empty() && self.retry.is_empty() {
                if self.shared.stop.load(Ordering::Acquire)
                    && self.shared.ring.is_empty()
                    && self.dirty_since.is_none()
                {
                    break;
                }
                self.idle();
                continue;
            }
            self.pace();
            self.stats
                .busy_since_ms
                .store((self.now_ms)().max(1), Ordering::Release);
            self.sort_batch();
            self.write_batch();
            self.stats.busy_since_ms.store(0, Ordering::Release);
            self.replies.flush();
        }
        if let Err(e) = self.log.commit() {
            tracing::error!(error = %e, "final log sync failed");
        }
        self.committed
            .store(self.log.committed_lsn(), Ordering::Release);
    }

    /// Ledger mode: sync what was written once `flush_interval` has passed
    /// (or at stop).
    fn ledger_sync_if_due(&mut self) {
        let Some(t) = self.dirty_since else { return };
        let stopping = self.batch.is_empty() && self.shared.stop.load(Ordering::Acquire);
        if t.elapsed() < self.cfg.flush_interval && !stopping {
            return;
        }
        match self.log.commit() {
            Err(e) => {
                tracing::error!(error = %e, "log fsync failed (ledger mode): orders acknowledged since the last sync may be lost on a crash");
                self.gate
                    .trip_ledger((self.now_ms)(), self.cfg.unavailable, e.to_string());
            }
            Ok(_) => {
                self.publish_committed();
                self.dirty_since = None;
            }
        }
    }

    fn idle(&mut self) {
        let sh = &self.shared;
        // Ledger mode with orders flowing: poll every millisecond instead
        // of being woken per order.
        let busy = self.cfg.ack == Ack::Ledger
            && self.last_write.is_some_and(|t| t.elapsed() < LEDGER_STEADY);
        sh.self_waking.store(busy, Ordering::SeqCst);
        sh.sleeping.store(true, Ordering::SeqCst);
        if sh.ring.is_empty() && !sh.stop.load(Ordering::Acquire) {
            let wait = if busy {
                LEDGER_POLL
            } else if self.dirty_since.is_some() {
                self.cfg.flush_interval.min(Duration::from_millis(2))
            } else {
                IDLE_PARK
            };
            std::thread::park_timeout(wait);
        }
        sh.sleeping.store(false, Ordering::SeqCst);
    }

    /// Pace back-to-back durable commits: wait out the rest of the interval
    /// and take what arrived meanwhile into this batch. Fewer, larger
    /// syncs: on the 2-core VM, syncing flat out beside a busy CPU gets the
    /// whole guest throttled by the host for ~15 ms of every 100 ms
    /// (bench/results/2026-11-23-fsync-vm.md).
    fn pace(&mut self) {
        let cfg = &self.cfg;
        if cfg.ack != Ack::Durable
            || cfg.commit_interval.is_zero()
            || self.batch.len() >= cfg.batch_max
        {
            return;
        }
        if let Some(due) = self.last_commit.map(|t| t + cfg.commit_interval) {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
                take(&self.shared.ring, &mut self.batch, cfg.batch_max);
            }
        }
    }

    /// Split the batch into events to write, replies to release after the
    /// commit, and what belongs to a failed epoch (an unadmitted straggler:
    /// admitted commands of a failed epoch are undone with the failure).
    fn sort_batch(&mut self) {
        for e in self.batch.drain(..) {
            match e {
                Entry::Event { ev, epoch } => {
                    if self.cfg.ack == Ack::Durable && self.gate.doomed(epoch) {
                        self.doomed.push(ev);
                    } else {
                        self.events.push(ev);
                    }
                }
                Entry::Reply { reply, epoch } => {
                    if self.gate.doomed(epoch) {
                        self.replies.done(reply, false);
                    } else {
                        self.replies_ok.push(reply);
                    }
                }
            }
        }
        for ev in self.doomed.iter().rev() {
            self.hooks.revert(ev);
        }
        self.stats
            .reverted
            .fetch_add(self.doomed.len() as u64, Ordering::Relaxed);
        self.doomed.clear();
        if !self.retry.is_empty() {
            self.retry.append(&mut self.events);
            std::mem::swap(&mut self.retry, &mut self.events);
        }
    }

    fn write_batch(&mut self) {
        let t0 = Instant::now();
        if !self.events.is_empty() {
            self.last_commit = Some(t0);
        }
        let result = if self.events.is_empty() {
            Ok(())
        } else {
            let durable = self.cfg.ack == Ack::Durable;
            // Durable mode: a group starts where the last one ended (every
            // commit and every undo is published before the next group).
            assert!(
                !durable || self.log.committed_lsn() == self.committed.load(Ordering::Acquire),
                "a group starts at LSN {} but the last one ended at {}",
                self.log.committed_lsn(),
                self.committed.load(Ordering::Acquire)
            );
            self.log.append(&self.events).and_then(|()| {
                if durable {
                    self.log.commit().map(|_| ())
                } else {
                    Ok(())
                }
            })
        };
        match result {
            Ok(()) => self.written(t0),
            Err(e) if self.cfg.ack == Ack::Durable => self.undo_failure(e.to_string()),
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, events = self.events.len(), "log write failed (ledger mode): keeping the events to retry");
                self.gate
                    .trip_ledger((self.now_ms)(), self.cfg.unavailable, e.to_string());
                self.cut_back();
                // Acknowledged already: keep and retry.
                std::mem::swap(&mut self.retry, &mut self.events);
                std::thread::sleep(LEDGER_RETRY_PAUSE);
            }
        }
    }

    fn written(&mut self, t0: Instant) {
        let n = self.events.len();
        if n > 0 {
            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let st = &self.stats;
            st.commits.fetch_add(1, Ordering::Relaxed);
            st.events.fetch_add(n as u64, Ordering::Relaxed);
            st.batch_events.observe(n as u64);
            st.commit_ns.observe(ns);
            if self.cfg.ack == Ack::Durable {
                let before = self.committed.load(Ordering::Acquire);
                self.publish_committed();
                // Each event of the group has its own LSN (a backend may
                // add records of its own: Kafka's aborts).
                let after = self.committed.load(Ordering::Acquire);
                assert!(
                    after - before >= n as u64,
                    "a group of {n} events moved the committed LSN from {before} to {after}"
                );
            } else {
                self.last_write = Some(Instant::now());
                if self.dirty_since.is_none() {
                    self.dirty_since = self.last_write;
                }
            }
            for ev in &self.events {
                self.hooks.durable(ev);
            }
            if self.gate.is_failing() {
                tracing::info!("log writes succeed again: accepting orders");
                self.gate.close();
            }
        }
        for r in self.replies_ok.drain(..) {
            self.replies.done(r, true);
        }
        self.events.clear();
    }

    /// Durable mode, a write or commit failed: shut the door, wait for
    /// every admitted command to finish pushing, revert everything of the
    /// failed epoch and fail its replies, cut the log back, and only then
    /// reopen (after `unavailable`, counted from now).
    fn undo_failure(&mut self, why: String) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %why, events = self.events.len(), "log write failed: undoing these orders and everything queued behind them");
        self.gate.shut(why);
        // Every command admitted before the shut carries the failed epoch;
        // wait until each has pushed all it will, taking what it pushes so
        // the ring never fills. No command waits on the writer meanwhile:
        // their room was reserved at admission.
        let mut queued: Vec<Entry<R>> = Vec::new();
        loop {
            let in_flight = self.gate.reserved();
            take(&self.shared.ring, &mut queued, usize::MAX);
            if in_flight == 0 {
                take(&self.shared.ring, &mut queued, usize::MAX);
                break;
            }
            std::thread::yield_now();
        }
        // Events: the failed group, then the ring in order; reverted newest
        // first.
        for e in queued {
            match e {
                Entry::Event { ev, epoch } => {
                    debug_assert!(self.gate.doomed(epoch), "an entry admitted after the shut");
                    self.events.push(ev);
                }
                Entry::Reply { reply, .. } => self.replies_ok.push(reply),
            }
        }
        for ev in self.events.iter().rev() {
            self.hooks.revert(ev);
        }
        self.stats
            .reverted
            .fetch_add(self.events.len() as u64, Ordering::Relaxed);
        self.events.clear();
        self.cut_back();
        // A rollback may itself have made records durable (Kafka: the
        // abort records that void the failed group).
        self.publish_committed();
        self.gate.reopen((self.now_ms)(), self.cfg.unavailable);
        // Told only now: a client that hears its 503 and reads at once
        // finds the undo complete (memory holds only what is durable).
        // While the undo itself is not durable, a crash could bring the
        // group back: "nothing was changed" would then be a lie.
        let pending = self.log.undo_pending();
        if pending {
            tracing::warn!("the undo of the failed group is not durable yet: its requests are told the outcome is unknown");
        }
        for r in self.replies_ok.drain(..) {
            if pending {
                self.replies.unknown(r);
            } else {
                self.replies.done(r, false);
            }
        }
    }

    /// Forget what was appended since the last commit.
    fn cut_back(&mut self) {
        if let Err(e) = self.log.rollback() {
            // The log may now hold records we reported as failed; recovery
            // would bring them back. Stop rather than risk that.
            tracing::error!(error = %e, "cannot cut the log back after a failed write; aborting");
            std::process::abort();
        }
    }

    /// Publish the log's committed LSN; it never goes back.
    fn publish_committed(&self) {
        let lsn = self.log.committed_lsn();
        let before = self.committed.swap(lsn, Ordering::AcqRel);
        assert!(
            lsn >= before,
            "the committed LSN went back from {before} to {lsn}"
        );
    }
}
