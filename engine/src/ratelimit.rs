//! Token-bucket rate limiting as GCRA (generic cell rate algorithm): one
//! 64-bit "theoretical arrival time" per bucket, updated by CAS, so the
//! whole-server bucket needs no lock and a keyed bucket costs 16 bytes, in
//! a fixed table that evicts rather than grows or refuses (see [`Keyed`]).
//!
//! Time is passed in (nanoseconds on any monotonic scale), like everywhere
//! in the engine. Rates are atomics so `SIGHUP` can change them live.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::hash::mix;

/// Keyed buckets are striped to keep lock hold times tiny.
const KEYED_STRIPES: usize = 64;
/// Buckets a key may live in: a set of this many slots, 16 bytes each, so
/// a check reads two cache lines. A key not in its set takes a free slot or
/// evicts one, so the work per check is this, whatever the crowd.
const KEYED_WAYS: usize = 8;
/// Sets per stripe. 64 × 2048 × 8 = 1M buckets, 16 MiB per keyed limiter,
/// allocated zeroed up front (pages are only backed once touched): a cap
/// on what a flood of distinct keys can cost, with no allocation on the
/// check path.
const KEYED_SETS: usize = 2048;
/// Buckets one keyed limiter holds at once.
pub const KEYED_CAPACITY: usize = KEYED_STRIPES * KEYED_SETS * KEYED_WAYS;
const _: () = assert!(KEYED_STRIPES.is_power_of_two() && KEYED_SETS.is_power_of_two());
const STRIPE_SHIFT: u32 = 64 - KEYED_STRIPES.trailing_zeros();

/// IPv4 keys live at `ffff:ffff::/32`, inside the multicast block
/// `ff00::/8`, which is never a TCP peer's address: no IPv6 /64 shares a
/// key with an IPv4 address.
const IPV4_KEY_PREFIX: u64 = 0xffff_ffff << 32;

/// The key a client address is rate-limited by.
///
/// IPv6 by its /64: the low 64 bits are the interface identifier, which
/// the host picks freely (privacy addresses, or any of the 2^64 addresses
/// routed to one site's /64), so a key that included them would give one
/// client as many buckets as it cared to use. A /64 is the smallest block
/// a site is assigned (RFC 6177, RFC 7421). An IPv4-mapped address
/// (`::ffff:a.b.c.d`, what a dual-stack socket reports for an IPv4 client)
/// is the IPv4 client it carries; IPv4 is keyed by the whole address.
pub fn ip_key(ip: IpAddr) -> u64 {
    let v4 = match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => a,
            None => return (u128::from(a) >> 64) as u64,
        },
    };
    IPV4_KEY_PREFIX | u64::from(u32::from(v4))
}

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

// Keys (user ids, /64 prefixes) are spread over stripes and sets by
// `mix`. Not secret: a client that crowds one set only evicts buckets,
// which gives their owners a fresh burst, never a refusal.

/// `[key, tat]`; `tat == 0` is a free slot (every stored arrival time is
/// at least one interval, so at least 1).
type Slot = [u64; 2];

/// A bucket per key (user, client IP), in a fixed table: each key hashes
/// to one set of `KEYED_WAYS` slots. A key not in its set takes a free
/// slot, else a bucket whose arrival time has passed (full again: the same
/// as having none, so forgetting it changes no decision), else the bucket
/// that will be full again soonest, whose owner then starts afresh a
/// little early. A crowd of more distinct keys than the table holds is
/// thereby limited a little less than it asked, never refused for the
/// crowd's sake: the global bucket still bounds the total.
pub struct Keyed {
    stripes: Box<[Mutex<Box<[Slot]>>]>,
}

impl Default for Keyed {
    fn default() -> Self {
        Keyed {
            stripes: (0..KEYED_STRIPES)
                // `vec![[0; 2]; n]` is one zeroed allocation: no page is
                // touched until a key lands on it.
                .map(|_| Mutex::new(vec![[0u64; 2]; KEYED_SETS * KEYED_WAYS].into_boxed_slice()))
                .collect(),
        }
    }
}

/// Where a key lives: (stripe, first slot of its set).
#[inline]
fn place(key: u64) -> (usize, usize) {
    let h = mix(key);
    (
        (h >> STRIPE_SHIFT) as usize,
        (h as usize & (KEYED_SETS - 1)) * KEYED_WAYS,
    )
}

/// The slot a key not in `set` takes (see [`Keyed`]).
#[inline]
fn victim(set: &[Slot], now: u64) -> usize {
    let mut best = 0;
    for (i, s) in set.iter().enumerate() {
        if s[1] <= now {
            return i;
        }
        if s[1] < set[best][1] {
            best = i;
        }
    }
    best
}

impl Keyed {
    pub fn check(&self, rate: &Rate, key: u64, now: u64) -> Result<(), u64> {
        if !rate.enabled() {
            return Ok(());
        }
        let (stripe, first) = place(key);
        let mut slots = self.stripes[stripe].lock();
        let set = &mut slots[first..first + KEYED_WAYS];
        let (i, tat) = match set.iter().position(|s| s[1] != 0 && s[0] == key) {
            Some(i) => (i, set[i][1]),
            None => (victim(set, now), 0),
        };
        let next = rate.step(tat, now)?;
        set[i] = [key, next];
        Ok(())
    }

    /// Whether `key` has a bucket now.
    #[cfg(test)]
    fn holds(&self, key: u64) -> bool {
        let (stripe, first) = place(key);
        let slots = self.stripes[stripe].lock();
        slots[first..first + KEYED_WAYS]
            .iter()
            .any(|s| s[1] != 0 && s[0] == key)
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
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_as_ipv4() {
        let k = |s: &str| ip_key(s.parse().unwrap());
        // One /64: any interface id, one bucket.
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:a1b2:c3d4:e5f6:789"));
        // Neighbouring /64s, and /64s differing only high up, do not share.
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_ne!(k("2001:db8:1:2::1"), k("3001:db8:1:2::1"));
        // A dual-stack socket's view of an IPv4 client is that client.
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
        // No IPv6 /64 of unicast space meets the IPv4 keys.
        assert_ne!(k("192.0.2.7"), k("::c000:207"));
        assert_ne!(k("0.0.0.0"), k("::"));
        assert_eq!(k("0.0.0.0") >> 32, 0xffff_ffff);
    }

    /// Keys that all land in one set of one stripe.
    fn same_set(n: usize) -> Vec<u64> {
        let home = place(1);
        let keys: Vec<u64> = (1u64..).filter(|&k| place(k) == home).take(n).collect();
        assert_eq!(keys.len(), n);
        keys
    }

    #[test]
    fn a_full_set_evicts_the_bucket_full_again_soonest() {
        let r = Rate::new(1, 1); // one a second: every checked key is busy
        let k = Keyed::default();
        let keys = same_set(KEYED_WAYS + 2);
        // Fill the set, one key per 10 ms: key 0's bucket is full again
        // first.
        for (i, &key) in keys[..KEYED_WAYS].iter().enumerate() {
            assert!(k.check(&r, key, S + i as u64 * S / 100).is_ok());
        }
        let now = S + S / 10;
        for &key in &keys[..KEYED_WAYS] {
            assert!(k.check(&r, key, now).is_err(), "all busy");
        }
        // A newcomer is admitted at once, in key 0's place.
        assert!(k.check(&r, keys[KEYED_WAYS], now).is_ok());
        assert!(!k.holds(keys[0]));
        for &key in &keys[1..=KEYED_WAYS] {
            assert!(k.holds(key));
        }
        // Once key 1's bucket is full again, it is the one that goes:
        // forgetting it changes no decision.
        let later = S + S / 100 + S; // key 1's arrival time
        assert!(k.check(&r, keys[KEYED_WAYS + 1], later).is_ok());
        assert!(!k.holds(keys[1]));
        assert!(k.holds(keys[2]));
    }

    #[test]
    fn a_table_full_of_busy_keys_never_refuses_a_newcomer() {
        // Twice as many busy keys as the table holds, then newcomers: each
        // is admitted on its first request (the old table refused every new
        // key until a bucket went idle).
        let r = Rate::new(1, 1);
        let k = Keyed::default();
        let now = 10 * S;
        for key in 0..2 * KEYED_CAPACITY as u64 {
            assert!(k.check(&r, key, now).is_ok());
        }
        for key in 0..1000u64 {
            let newcomer = u64::MAX - key;
            assert!(k.check(&r, newcomer, now).is_ok(), "newcomer {key}");
            assert!(k.check(&r, newcomer, now).is_err(), "and then limited");
        }
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
