//! The writer thread: drain the ring, write and commit each group, tell
//! the engine and release the replies; on a failure, undo it whole.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use flashd_engine::{Event, Millis};

use super::{Ack, Entry, Gate, LogHooks, Replies, Shared, WriterConfig, WriterStats};
use crate::order_log::OrderLog;

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

/// The writer thread's state.
pub(super) struct Worker<R, H, P> {
    pub(super) shared: Arc<Shared<R>>,
    pub(super) gate: Arc<Gate>,
    pub(super) stats: Arc<WriterStats>,
    pub(super) committed: Arc<AtomicU64>,
    pub(super) log: Box<dyn OrderLog>,
    pub(super) hooks: Arc<H>,
    pub(super) replies: P,
    pub(super) cfg: WriterConfig,
    pub(super) now_ms: fn() -> Millis,
    pub(super) batch: Vec<Entry<R>>,
    pub(super) events: Vec<Event>,
    pub(super) replies_ok: Vec<R>,
    /// Durable mode: events of a failed epoch met in the ring, to revert.
    pub(super) doomed: Vec<Event>,
    /// Ledger mode: events that failed to write, retried first.
    pub(super) retry: Vec<Event>,
    /// Ledger mode: written but not yet synced since this instant.
    pub(super) dirty_since: Option<Instant>,
    pub(super) last_write: Option<Instant>,
    pub(super) last_commit: Option<Instant>,
}

impl<R: Send + 'static, H: LogHooks, P: Replies<R>> Worker<R, H, P> {
    pub(super) fn run(mut self) {
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
        // Nothing to sync (only replies whose events an earlier commit took,
        // when the writer woke between a command's events and its reply):
        // holding them for the interval would delay a lone order by it.
        if !self.batch.iter().any(|e| matches!(e, Entry::Event { .. })) {
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
