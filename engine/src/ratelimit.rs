//! Token-bucket rate limiting as GCRA (generic cell rate algorithm): one
//! 64-bit "theoretical arrival time" per bucket, updated by CAS, so the
//! whole-server bucket needs no lock and a keyed bucket costs 16 bytes.
//!
//! Time is passed in (nanoseconds on any monotonic scale), like everywhere
//! in the engine. Rates are atomics so `SIGHUP` can change them live.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// Keyed buckets are striped to keep lock hold times tiny.
const KEYED_STRIPES: usize = 64;
/// Per-stripe entries before idle buckets are evicted. 64 × 16384 ≈ 1M
/// keys at most, ~32 MB: a cap on what a flood of distinct IPs can cost.
const KEYED_STRIPE_CAP: usize = 16 * 1024;

/// Rate and burst of one kind of bucket; `rps == 0` disables it.
#[derive(Debug, Default)]
pub struct Rate {
    /// Nanoseconds between tokens (0 = unlimited).
    interval_ns: AtomicU64,
    /// How far ahead of now the arrival time may run: (burst - 1) tokens.
    tolerance_ns: AtomicU64,
}

impl Rate {
    pub fn new(rps: u64, burst: u64) -> Rate {
        let r = Rate::default();
        r.set(rps, burst);
        r
    }

    pub fn set(&self, rps: u64, burst: u64) {
        let interval = 1_000_000_000u64.checked_div(rps).map_or(0, |i| i.max(1));
        self.interval_ns.store(interval, Ordering::Relaxed);
        self.tolerance_ns
            .store(interval.saturating_mul(burst.max(1) - 1), Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.interval_ns.load(Ordering::Relaxed) != 0
    }

    /// One GCRA step on `tat`: `Ok` to admit, `Err(ns)` to wait.
    fn step(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let interval = self.interval_ns.load(Ordering::Relaxed);
        let tolerance = self.tolerance_ns.load(Ordering::Relaxed);
        let start = tat.max(now);
        if start - now > tolerance {
            return Err(start - now - tolerance);
        }
        Ok(start + interval)
    }
}

/// One bucket shared by all threads.
#[derive(Debug, Default)]
pub struct Bucket {
    tat: AtomicU64,
}

impl Bucket {
    pub fn check(&self, rate: &Rate, now: u64) -> Result<(), u64> {
        if !rate.enabled() {
            return Ok(());
        }
        let mut cur = self.tat.load(Ordering::Relaxed);
        loop {
            let next = rate.step(cur, now)?;
            match self
                .tat
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(v) => cur = v,
            }
        }
    }
}

/// A bucket per key (user, client IP), memory-bounded.
pub struct Keyed {
    stripes: Box<[Mutex<FxHashMap<u64, u64>>]>,
}

impl Default for Keyed {
    fn default() -> Self {
        Keyed {
            stripes: (0..KEYED_STRIPES)
                .map(|_| Mutex::new(FxHashMap::default()))
                .collect(),
        }
    }
}

impl Keyed {
    pub fn check(&self, rate: &Rate, key: u64, now: u64) -> Result<(), u64> {
        if !rate.enabled() {
            return Ok(());
        }
        let i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % KEYED_STRIPES;
        let mut m = self.stripes[i].lock();
        if m.len() >= KEYED_STRIPE_CAP && !m.contains_key(&key) {
            // A bucket whose arrival time has passed is full again: the same
            // as having no entry, so dropping it changes no decision.
            m.retain(|_, tat| *tat > now);
            if m.len() >= KEYED_STRIPE_CAP {
                // Still full of active keys (a flood of distinct ones):
                // refuse new keys rather than grow without bound.
                return Err(rate.interval_ns.load(Ordering::Relaxed));
            }
        }
        let tat = m.get(&key).copied().unwrap_or(0);
        let next = rate.step(tat, now)?;
        m.insert(key, next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_rate() {
        let r = Rate::new(10, 5);
        let b = Bucket::default();
        let t0 = 100 * S;
        for _ in 0..5 {
            assert!(b.check(&r, t0).is_ok());
        }
        let wait = b.check(&r, t0).unwrap_err();
        assert!(wait > 0 && wait <= S / 10, "{wait}");
        // One token every 100 ms.
        assert!(b.check(&r, t0 + S / 10).is_ok());
        assert!(b.check(&r, t0 + S / 10).is_err());
        // After a quiet second the burst is back.
        for _ in 0..5 {
            assert!(b.check(&r, t0 + 3 * S).is_ok());
        }
    }

    #[test]
    fn zero_disables_and_rates_change_live() {
        let r = Rate::new(0, 0);
        let b = Bucket::default();
        for _ in 0..10_000 {
            assert!(b.check(&r, 5).is_ok());
        }
        r.set(1, 1);
        assert!(b.check(&r, 10 * S).is_ok());
        assert!(b.check(&r, 10 * S).is_err());
    }

    #[test]
    fn keys_are_independent() {
        let r = Rate::new(1, 2);
        let k = Keyed::default();
        assert!(k.check(&r, 1, S).is_ok());
        assert!(k.check(&r, 1, S).is_ok());
        assert!(k.check(&r, 1, S).is_err());
        assert!(k.check(&r, 2, S).is_ok());
    }
}
