//! Measures the engine's heap bytes per order, with an allocator that
//! counts this thread's live bytes, for a flash sale's shape (many buyers,
//! one order each, some paid or cancelled), and holds it to a budget.
//!
//! The figure is printed; to read it:
//! `cargo test -p flashd-engine --test memory -- --nocapture`
//! (`FLASHD_MEM_ORDERS=N` changes the number of buyers, default 1,000,000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use flashd_engine::*;

/// Live heap bytes allocated by this thread (frees on this thread
/// subtract). Each test builds and measures its engine on one thread, so
/// other tests of this binary running at the same time do not count.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // `try_with`: the allocator may run while this thread's locals are
    // being torn down; those bytes are not what is measured.
    let _ = LIVE.try_with(|c| c.set(c.get() + n));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// bookkeeping touches only a thread-local counter and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        add(l.size() as isize);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        add(l.size() as isize);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        add(-(l.size() as isize));
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        add(new as isize - l.size() as isize);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.with(|c| c.get())
}

const T0: Millis = 1_800_000_000_000;

/// Heap bytes per order of an engine holding `buyers` orders, one per
/// buyer: every fourth paid, every tenth cancelled (bench/recovery's
/// shape). Everything the engine allocated once it has a sale is counted:
/// orders, indexes, per-user records, expiry heaps, and the slack of
/// growing them.
fn bytes_per_order(buyers: u64) -> f64 {
    let e = Engine::new(EngineConfig {
        node_id: 1,
        order_ttl_ms: 60_000,
        max_activities: 16,
        hold_released_until_durable: false,
    });
    let spec = ActivitySpec {
        sku_id: "SKU-1".into(),
        name: "Phone".into(),
        price_cents: 100,
        stock: buyers,
        start_at: T0,
        end_at: T0 + 3_600_000,
        per_user_limit: 1,
    };
    e.create_activity(&spec, T0, &mut Discard).unwrap();
    let base = live();
    for u in 1..=buyers {
        let cmd = PlaceOrder {
            activity_id: 1,
            user_id: u,
            quantity: 1,
            request_id: "r",
        };
        let Ok(Placed::Created(o)) = e.place_order(&cmd, T0 + 1, &mut Discard) else {
            panic!("buyer {u} got no order");
        };
        if u % 4 == 0 {
            e.pay(u, o.id, T0 + 2, &mut Discard).unwrap();
        } else if u % 10 == 0 {
            e.cancel(u, o.id, T0 + 2, &mut Discard).unwrap();
        }
    }
    let per_order = (live() - base) as f64 / buyers as f64;
    drop(e);
    per_order
}

/// Above this the engine no longer fits the deployments it is sized for
/// (10M orders in well under 2 GiB, with a follower's second copy).
const BYTES_PER_ORDER_BUDGET: f64 = 180.0;

#[test]
fn memory_per_order_stays_within_budget() {
    let buyers: u64 = std::env::var("FLASHD_MEM_ORDERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let b = bytes_per_order(buyers);
    println!("engine heap: {b:.1} bytes per order ({buyers} buyers, one order each)");
    assert!(
        b <= BYTES_PER_ORDER_BUDGET,
        "{b:.1} bytes per order, budget {BYTES_PER_ORDER_BUDGET}"
    );
}
