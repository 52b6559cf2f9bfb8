//! The wall clock, behind a trait so a test can drive time.
//!
//! [`SystemClock`] is the only place in this crate that reads
//! `SystemTime::now()` (its `turn_ms` is the protocol's per-turn cache of
//! the same clock, which the `Date` header uses). Everything that needs wall-clock milliseconds (a
//! worker batch, an inline request, token expiry, the sweeper, `/metrics`)
//! takes them from the [`Clock`] in [`crate::app::Shared`], read once per
//! batch or per request and passed down. [`FakeClock`] is set by hand.

use std::sync::atomic::{AtomicU64, Ordering};

use flashd_engine::Millis;

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> Millis;

    /// "Now" as of the start of this thread's event-loop turn, where the
    /// clock caches one (a sub-reactor refreshes it every turn; reading it
    /// saves a clock read per request). For what may be as old as a turn
    /// (a sale's state in a `GET`); commands take [`Clock::now_ms`].
    fn turn_ms(&self) -> Millis {
        self.now_ms()
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The wall clock without a `Clock` object (the CLI, and the log
    /// writer, which takes a plain function).
    pub fn now() -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
            .unwrap_or(0)
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_ms(&self) -> Millis {
        SystemClock::now()
    }

    #[inline]
    fn turn_ms(&self) -> Millis {
        flashd_protocol::date::turn_millis()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct FakeClock {
    ms: AtomicU64,
}

impl FakeClock {
    pub fn new(ms: Millis) -> FakeClock {
        FakeClock {
            ms: AtomicU64::new(ms),
        }
    }

    pub fn set(&self, ms: Millis) {
        self.ms.store(ms, Ordering::Release);
    }

    pub fn advance(&self, by_ms: Millis) {
        self.ms.fetch_add(by_ms, Ordering::AcqRel);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> Millis {
        self.ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told() {
        let c = FakeClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(500);
        assert_eq!(c.now_ms(), 1_500);
        c.set(7);
        assert_eq!(c.now_ms(), 7);
        assert!(SystemClock.now_ms() > 1_600_000_000_000);
    }
}
