//! A per-thread cache of buyer tokens already verified, so that a buyer
//! who retries with the same bearer token (every buyer of a stampede does,
//! many times a second) does not pay for the full check again: ~8,900 of
//! the ~14,100 instructions of a sold-out buy, ~7,100 of them HMAC-SHA256,
//! against ~280 for a hit (callgrind, issue 17).
//!
//! Why it is safe:
//!
//! * A token gets in only after [`crate::auth::Auth`] verified it in full
//!   (signature, header, claims, `exp`/`nbf`); failures are never cached,
//!   so a forged token always costs the full check and cannot evict a
//!   valid one. Only tokens signed with the secret can take a slot.
//! * A hit needs the presented token to equal the cached one byte for
//!   byte, compared in constant time: an early-exit compare against a
//!   cached valid token would let an attacker recover it byte by byte
//!   from response times. Lengths are compared first (tokens of one shape
//!   all have the same length, which is no secret).
//! * The verified result is a function of the token and the secret alone
//!   but for time: a hit re-checks `exp`/`nbf` against the caller's clock
//!   with the same leeway as a full check (`in_time` in `auth.rs`).
//! * Entries are tagged with the [`Owner`] of the `Auth` that verified
//!   them, a process-unique number drawn when an `Auth` is built: an
//!   `Auth` built with another secret (another in-process server's, a
//!   test's) never sees them. SIGHUP does not rebuild the `Auth` today
//!   (a new secret takes a restart, which empties every table); if it
//!   ever does, the new `Auth`'s new owner keeps the old secret's tokens
//!   out without clearing any thread's table.
//!
//! Per thread rather than shared: `Auth::user` runs on every sub-reactor
//! thread, and a buyer's retries arrive on one keep-alive connection, so
//! on one reactor; a thread's own table needs no lock and no atomic.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use flashd_engine::UserId;

/// Slots per thread: 4096 buyers retrying at once on one reactor keep
/// their tokens (more evict one another and pay the full check, as all
/// did without the table), for 960 KiB per reactor thread
/// (`SLOTS * size_of::<Slot>()`, 240 bytes a slot), allocated once on the
/// thread's first buyer request. A power of two, so a hash maps to a
/// slot with a shift.
pub const SLOTS: usize = 4096;
const SLOT_BITS: u32 = SLOTS.trailing_zeros();

/// The longest token cached. Every token `Auth::issue` writes fits: a
/// 36-byte header, claims of at most 88 bytes (a 20-digit user id, `exp`
/// and `iat` of up to 11 digits), a 43-byte signature and two dots make
/// 169. Longer tokens (other issuers' extra claims) are verified every
/// time rather than make every slot larger.
pub const TOKEN_MAX: usize = 192;

/// The shortest token cached: the slot is picked from its last 8 bytes.
/// Any HS256 token is longer (its signature alone is 43 bytes).
const TOKEN_MIN: usize = 8;

/// What a full verification established about a token, apart from time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub user: UserId,
    pub exp: u64,
    pub nbf: Option<u64>,
}

/// The identity of one `Auth` (one secret): entries of another owner are
/// never served. Never 0, which marks an empty slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner(u64);

impl Owner {
    /// A number no other `Auth` of this process has: a 64-bit counter
    /// does not wrap.
    pub fn new() -> Owner {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Owner(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for Owner {
    fn default() -> Owner {
        Owner::new()
    }
}

/// One token and what it verified to: 240 bytes (a test holds it to
/// that, the figure `SLOTS`'s memory cost is counted with).
#[derive(Clone, Copy)]
struct Slot {
    /// 0: empty.
    owner: u64,
    verified: Verified,
    len: usize,
    token: [u8; TOKEN_MAX],
}

const EMPTY: Slot = Slot {
    owner: 0,
    verified: Verified {
        user: 0,
        exp: 0,
        nbf: None,
    },
    len: 0,
    token: [0; TOKEN_MAX],
};

/// How this thread's table has been used (tests and benchmarks read it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Answered from the table (in time or not).
    pub hits: u64,
    /// Verified in full (whether or not it then got in).
    pub misses: u64,
    /// Cacheable tokens that got in (over an empty or another slot).
    pub inserts: u64,
}

struct Table {
    slots: Box<[Slot]>,
    counts: Counts,
}

thread_local! {
    /// Allocated on the thread's first lookup: threads that never check a
    /// buyer's token (workers, the log writer) pay nothing.
    static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
}

/// The slot of a token: its last 8 bytes, multiplied (Fibonacci hashing)
/// and the top bits taken. For any token that can be in the table those
/// bytes are its HMAC-SHA256 signature's, which nobody without the secret
/// can choose: they spread over the slots like a keyed hash would, and
/// cannot be aimed at one buyer's slot. A presented token of any shape
/// only picks which slot is compared.
pub(crate) fn slot_of(token: &[u8]) -> usize {
    let tail = &token[token.len() - 8..];
    let w = u64::from_le_bytes(tail.try_into().unwrap_or([0; 8]));
    (w.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOT_BITS)) as usize
}

fn cacheable(token: &[u8]) -> bool {
    (TOKEN_MIN..=TOKEN_MAX).contains(&token.len())
}

/// What `token` verified to when `owner` last checked it on this thread,
/// or else the result of `verify` (a full check), kept when it is `Ok`
/// (the slot's previous token, if any, is forgotten: direct-mapped).
/// `verify` runs outside the table's borrow, and a thread whose table is
/// already torn down (exiting) just verifies: this never panics.
pub fn get_or_verify<E>(
    owner: Owner,
    token: &[u8],
    verify: impl FnOnce() -> Result<Verified, E>,
) -> Result<Verified, E> {
    if !cacheable(token) {
        return verify();
    }
    let i = slot_of(token);
    match TABLE.try_with(|t| lookup(&mut t.borrow_mut(), i, owner, token)) {
        Ok(Some(v)) => return Ok(v),
        Ok(None) => {}
        Err(_) => return verify(),
    }
    let v = verify()?;
    // Cannot fail where the lookup just succeeded.
    let _ = TABLE.try_with(|t| keep(&mut t.borrow_mut(), i, owner, token, v));
    Ok(v)
}

fn table(t: &mut Option<Table>) -> &mut Table {
    t.get_or_insert_with(|| Table {
        slots: vec![EMPTY; SLOTS].into_boxed_slice(),
        counts: Counts::default(),
    })
}

fn lookup(t: &mut Option<Table>, i: usize, owner: Owner, token: &[u8]) -> Option<Verified> {
    let t = table(t);
    let s = &t.slots[i];
    if s.owner == owner.0 && s.len == token.len() && same(&s.token[..s.len], token) {
        t.counts.hits += 1;
        return Some(s.verified);
    }
    t.counts.misses += 1;
    None
}

fn keep(t: &mut Option<Table>, i: usize, owner: Owner, token: &[u8], v: Verified) {
    let t = table(t);
    let s = &mut t.slots[i];
    s.owner = owner.0;
    s.verified = v;
    s.len = token.len();
    s.token[..token.len()].copy_from_slice(token);
    t.counts.inserts += 1;
}

/// Constant time in the content: `a` and `b` have equal lengths here.
/// ring's routine is the one its own `hmac::verify` compares tags with (a
/// C loop OR-ing the XOR of every byte, with no early exit); ring marks it
/// deprecated as a public API, not as unsound.
#[allow(deprecated)]
fn same(a: &[u8], b: &[u8]) -> bool {
    ring::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// This thread's counts (zeros before its first lookup).
pub fn thread_counts() -> Counts {
    TABLE.with(|t| t.borrow().as_ref().map(|t| t.counts).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(user: UserId) -> Verified {
        Verified {
            user,
            exp: 100,
            nbf: None,
        }
    }

    #[test]
    fn a_token_verified_once_is_then_served_from_the_table() {
        let o = Owner::new();
        let tok = b"header.payload.signature-bytes-0001";
        let before = thread_counts();
        let mut calls = 0;
        for _ in 0..3 {
            let r: Result<_, ()> = get_or_verify(o, tok, || {
                calls += 1;
                Ok(v(7))
            });
            assert_eq!(r, Ok(v(7)));
        }
        assert_eq!(calls, 1);
        let after = thread_counts();
        assert_eq!(after.hits - before.hits, 2);
        assert_eq!(after.misses - before.misses, 1);
    }

    #[test]
    fn failures_are_never_kept() {
        let o = Owner::new();
        let tok = b"header.payload.signature-bytes-0002";
        for _ in 0..3 {
            assert_eq!(
                get_or_verify(o, tok, || Err::<Verified, _>("bad")),
                Err("bad")
            );
        }
        let mut calls = 0;
        let r: Result<_, ()> = get_or_verify(o, tok, || {
            calls += 1;
            Ok(v(8))
        });
        assert_eq!((r, calls), (Ok(v(8)), 1));
    }

    #[test]
    fn another_owner_never_sees_an_entry() {
        let (a, b) = (Owner::new(), Owner::new());
        assert_ne!(a, b);
        let tok = b"header.payload.signature-bytes-0003";
        let _: Result<_, ()> = get_or_verify(a, tok, || Ok(v(9)));
        let r = get_or_verify(b, tok, || Err::<Verified, _>("other secret"));
        assert_eq!(r, Err("other secret"));
    }

    /// Two tokens of one slot: the second evicts the first, which is then
    /// verified in full again.
    #[test]
    fn a_slot_holds_the_latest_token() {
        let o = Owner::new();
        let mut a = b"header.payload.signature-bytes-0004-xxxxxxxx".to_vec();
        // Same last 8 bytes: same slot, different token.
        let mut b = a.clone();
        b[0] = b'H';
        let n = a.len();
        assert_eq!(slot_of(&a), slot_of(&b));
        let _: Result<_, ()> = get_or_verify(o, &a, || Ok(v(1)));
        let _: Result<_, ()> = get_or_verify(o, &b, || Ok(v(2)));
        let mut calls = 0;
        let r: Result<_, ()> = get_or_verify(o, &a, || {
            calls += 1;
            Ok(v(1))
        });
        assert_eq!((r, calls), (Ok(v(1)), 1));
        // And a token that differs from a cached one only in a byte that
        // does not pick the slot is no hit.
        a[n - 9] ^= 1;
        let r = get_or_verify(o, &a, || Err::<Verified, _>("verified in full"));
        assert_eq!(r, Err("verified in full"));
    }

    #[test]
    fn tokens_outside_the_bounds_are_never_kept() {
        let o = Owner::new();
        for len in [0, 1, TOKEN_MIN - 1, TOKEN_MAX + 1, 4 * TOKEN_MAX] {
            let tok = vec![b'a'; len];
            for _ in 0..2 {
                let before = thread_counts();
                let mut calls = 0;
                let _: Result<_, ()> = get_or_verify(o, &tok, || {
                    calls += 1;
                    Ok(v(3))
                });
                assert_eq!(calls, 1, "{len}");
                assert_eq!(thread_counts().inserts, before.inserts, "{len}");
            }
        }
        // The bounds themselves are kept.
        for len in [TOKEN_MIN, TOKEN_MAX] {
            let tok = vec![b'b'; len];
            let _: Result<_, ()> = get_or_verify(o, &tok, || Ok(v(4)));
            let r = get_or_verify(o, &tok, || Err::<Verified, _>("not kept"));
            assert_eq!(r, Ok(v(4)), "{len}");
        }
    }

    #[test]
    fn a_slot_is_240_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 240);
    }

    #[test]
    fn slots_spread_over_the_table() {
        // 4096 different signatures-like tails land in many slots.
        let mut used = vec![false; SLOTS];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..SLOTS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let tail = seed.to_le_bytes();
            used[slot_of(&tail)] = true;
        }
        // Random throws fill ~63% of the slots.
        assert!(used.iter().filter(|&&u| u).count() > SLOTS / 2);
    }
}
