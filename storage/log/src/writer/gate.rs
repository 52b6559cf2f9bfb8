//! The circuit breaker between producers and the log: the epoch commands
//! are admitted in, shut while a failure is undone, open (refusing) for
//! `unavailable` after it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use flashd_engine::Millis;

/// The circuit breaker between producers and the log.
#[derive(Default)]
pub struct Gate {
    pub(super) epoch: CachePadded<AtomicU64>,
    /// Ring entries reserved by admitted commands that have not finished
    /// pushing. While a failure is undone the writer waits for this to
    /// reach zero.
    pub(super) reserved: CachePadded<AtomicUsize>,
    /// Shut from a failure until its undo is complete.
    pub(super) shut: AtomicBool,
    /// Entries of this epoch or older are doomed (0 = none ever failed;
    /// epochs start at 1).
    failed_epoch: AtomicU64,
    pub(super) open_until_ms: AtomicU64,
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
    pub(super) fn shut(&self, why: String) {
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
    pub(super) fn reopen(&self, now: Millis, unavailable: Duration) {
        let e = self.epoch.load(Ordering::Acquire);
        debug_assert_eq!(e, self.failed_epoch.load(Ordering::Acquire));
        self.epoch.store(e + 1, Ordering::Release);
        self.open_until_ms
            .store(now.saturating_add(millis(unavailable)), Ordering::Release);
        self.shut.store(false, Ordering::SeqCst);
    }

    /// Ledger mode: replies went out already, nothing is undone; refuse new
    /// commands for `unavailable` while the writes are retried.
    pub(super) fn trip_ledger(&self, now: Millis, unavailable: Duration, why: String) {
        self.open_until_ms
            .store(now.saturating_add(millis(unavailable)), Ordering::Release);
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Release);
        self.set_reason(why);
    }

    pub(super) fn doomed(&self, epoch: u64) -> bool {
        epoch <= self.failed_epoch.load(Ordering::Acquire)
    }

    pub(super) fn close(&self) {
        self.failing.store(false, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
