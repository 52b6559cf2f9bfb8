//! Proves the per-key rate limiter keys IPv6 clients by their /64 (two
//! addresses of one /64 share a bucket, two /64s do not) and never
//! allocates on the check path, even while a flood of new keys evicts: an
//! allocator that counts this thread's allocations watches the checks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;

use flashd_engine::ratelimit::{ip_key, Keyed, Rate, KEYED_CAPACITY};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: this thread's locals may be gone while it exits.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// bookkeeping touches only a thread-local counter and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count();
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

const S: u64 = 1_000_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn addresses_of_one_64_share_a_bucket_and_64s_do_not() {
    let r = Rate::new(1, 2);
    let k = Keyed::default();
    let now = 5 * S;
    // A client rotating its interface id inside its /64 gets two requests
    // (the burst), not two per address.
    assert!(k.check(&r, ip_key(ip("2001:db8:0:1::a")), now).is_ok());
    assert!(k.check(&r, ip_key(ip("2001:db8:0:1::b")), now).is_ok());
    assert!(k
        .check(&r, ip_key(ip("2001:db8:0:1:dead:beef:0:1")), now)
        .is_err());
    // The next /64 is someone else.
    assert!(k.check(&r, ip_key(ip("2001:db8:0:2::a")), now).is_ok());
    // An IPv4 client seen through a dual-stack socket is that IPv4 client.
    assert!(k.check(&r, ip_key(ip("192.0.2.1")), now).is_ok());
    assert!(k.check(&r, ip_key(ip("::ffff:192.0.2.1")), now).is_ok());
    assert!(k.check(&r, ip_key(ip("192.0.2.1")), now).is_err());
}

#[test]
fn checking_never_allocates_even_while_evicting() {
    let r = Rate::new(100, 10);
    let k = Keyed::default();
    let before = allocs();
    let mut admitted = 0u64;
    // Known keys, new keys, and more distinct keys than the table holds
    // (every check past the first KEYED_CAPACITY evicts).
    for i in 0..(KEYED_CAPACITY as u64 + 100_000) {
        let key = ip_key(IpAddr::V6(
            (0x2001_0db8_u128 << 96 | (i as u128) << 64).into(),
        ));
        admitted += k.check(&r, key, S + i).is_ok() as u64;
        admitted += k.check(&r, 7, S + i).is_ok() as u64;
    }
    assert_eq!(allocs() - before, 0, "allocations on the check path");
    assert!(admitted > KEYED_CAPACITY as u64);
}
