//! Which request ids a sale may have seen: a lock-free Bloom filter of the
//! request keys of every order ever created in the sale.
//!
//! It exists so a purchase can be refused *before* its buyer's token is
//! checked when the refusal reveals nothing and cannot be wrong: on a
//! sold-out or ended sale, a purchase whose request id the sale has never
//! seen cannot be a retry, so the engine's answer for it is the same for
//! every buyer (`Engine::public_refusal`). A stampede on a sold-out sale
//! then costs no HMAC.
//!
//! Invariant: once an order is created (live, replayed or loaded from a
//! snapshot), [`RequestFilter::may_hold`] is true for its key from then on.
//! Bits are only ever set, never cleared, so a false answer is always
//! right and a true one may be wrong (the full path then decides). The
//! live path notes the key *before* the stock CAS that creates the order:
//! a reader that sees the stock that order took (an acquire load of
//! `remaining`) also sees its bit.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::users::RequestKey;

/// Bits kept per unit of stock at creation: with two probes, about 5 %
/// false positives once every unit has been ordered once (each false
/// positive only costs that purchase a token check).
const BITS_PER_UNIT: u64 = 16;

/// Smallest filter (512 bytes): a tiny sale still filters well.
const WORDS_MIN: u64 = 64;

/// Largest filter (512 KiB, 4 Mi bits): a sale of millions of units keeps
/// filtering (more false positives, never a wrong answer) without a
/// sale's creation allocating without bound.
const WORDS_MAX: u64 = 1 << 16;

pub(crate) struct RequestFilter {
    words: Box<[AtomicU64]>,
    /// `bits - 1`: the filter's size is a power of two.
    mask: u64,
}

impl std::fmt::Debug for RequestFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestFilter({} bits)", self.mask + 1)
    }
}

impl RequestFilter {
    /// A filter sized for a sale that opens with `stock` units.
    pub(crate) fn for_stock(stock: u64) -> RequestFilter {
        let words = stock
            .saturating_mul(BITS_PER_UNIT)
            .div_ceil(64)
            .clamp(WORDS_MIN, WORDS_MAX)
            .next_power_of_two();
        debug_assert!(words <= WORDS_MAX);
        RequestFilter {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            mask: words * 64 - 1,
        }
    }

    /// The two bit positions of a key (its XXH3-128 halves: uniform).
    #[inline]
    fn probes(&self, key: RequestKey) -> [u64; 2] {
        [key.0[0] & self.mask, key.0[1] & self.mask]
    }

    /// Remember `key`. Relaxed: the caller's following release (the stock
    /// CAS, or the end of start-up) publishes it.
    #[inline]
    pub(crate) fn note(&self, key: RequestKey) {
        for bit in self.probes(key) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
    }

    /// False: no order of this sale was ever created with `key`. True: one
    /// may have been.
    #[inline]
    pub(crate) fn may_hold(&self, key: RequestKey) -> bool {
        self.probes(key).iter().all(|&bit| {
            self.words[(bit / 64) as usize].load(Ordering::Acquire) & (1 << (bit % 64)) != 0
        })
    }

    /// Bytes this filter holds (for the memory bound's test).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noted_key_is_always_held() {
        let f = RequestFilter::for_stock(1_000);
        let keys: Vec<_> = (0..5_000)
            .map(|i| RequestKey::of(&format!("req-{i}")))
            .collect();
        for k in &keys {
            f.note(*k);
        }
        assert!(keys.iter().all(|k| f.may_hold(*k)));
    }

    #[test]
    fn unseen_keys_mostly_pass_at_the_sized_load() {
        // Every unit ordered once: the false positive rate stays small.
        let stock = 10_000;
        let f = RequestFilter::for_stock(stock);
        for i in 0..stock {
            f.note(RequestKey::of(&format!("seen-{i}")));
        }
        let fp = (0..100_000)
            .filter(|i| f.may_hold(RequestKey::of(&format!("new-{i}"))))
            .count();
        assert!(fp < 8_000, "{fp} false positives in 100,000");
        // And an empty filter holds nothing.
        let e = RequestFilter::for_stock(stock);
        assert!(!(0..1_000).any(|i| e.may_hold(RequestKey::of(&format!("x{i}")))));
    }

    #[test]
    fn size_is_bounded_both_ways() {
        assert_eq!(RequestFilter::for_stock(0).bytes(), 512);
        assert_eq!(RequestFilter::for_stock(1).bytes(), 512);
        assert_eq!(RequestFilter::for_stock(10_000).bytes(), 32 * 1024);
        assert_eq!(
            RequestFilter::for_stock(crate::limits::STOCK_MAX).bytes(),
            512 * 1024
        );
    }
}
