//! Proves a snapshot is written streamed: the heap it takes beyond the
//! engine is a buffer, not a copy of the orders (counted by a global
//! allocator that tracks the peak), and the file is byte for byte the one
//! the whole-state writer makes, and reads back to the same state.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use flashd_engine::*;
use flashd_log::*;

/// Live heap bytes, and the most seen since the last reset.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const T0: Millis = 1_800_000_000_000;
/// Enough orders that a copy of them (about 100 bytes each, plus 74 of
/// encoded row) dwarfs the writer's buffers.
const ORDERS: u64 = 300_000;
/// What streaming may take: a block of rows and its record (about 1.2
/// MB), a write buffer, an index per order of one stripe, the sales.
const STREAM_BYTES_MAX: usize = 4 << 20;

fn engine_with_orders(n: u64) -> Engine {
    let e = Engine::new(EngineConfig::default());
    e.apply(&Event::ActivityCreated {
        id: 1,
        sku_id: "S".into(),
        name: "N".into(),
        price_cents: 5,
        stock: n * 2,
        start_at: T0,
        end_at: T0 + 3_600_000,
        per_user_limit: 2,
        created_at: T0,
    })
    .unwrap();
    for i in 1..=n {
        e.apply(&Event::OrderCreated {
            order_id: i,
            activity_id: 1,
            user_id: i * 7 + 1,
            quantity: 1,
            amount_cents: 5,
            request_id: format!("r{i}").into(),
            created_at: T0 + i,
            expires_at: T0 + 3_600_000,
        })
        .unwrap();
        if i % 4 == 0 {
            e.apply(&Event::OrderPaid {
                order_id: i,
                activity_id: 1,
                user_id: i * 7 + 1,
                quantity: 1,
                at: T0 + i + 1,
            })
            .unwrap();
        }
    }
    e
}

#[test]
fn a_snapshot_is_written_in_a_bounded_buffer_and_matches_the_whole_state() {
    let dir: PathBuf = std::env::temp_dir().join(format!("flashd-stream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let e = engine_with_orders(ORDERS);

    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let streamed = write_engine_snapshot(&dir, 7, &e, false).unwrap();
    let took = PEAK.load(Ordering::Relaxed) - base;
    assert!(
        took <= STREAM_BYTES_MAX,
        "writing {ORDERS} orders took {took} bytes of heap beyond the engine"
    );

    // Same bytes as the whole-state writer, and the same state back.
    let snap = e.export();
    assert_eq!(snap.orders.len() as u64, ORDERS);
    let bytes = std::fs::read(&streamed).unwrap();
    let whole_dir = dir.join("whole");
    std::fs::create_dir_all(&whole_dir).unwrap();
    let whole = write_snapshot(&whole_dir, 7, &snap, false).unwrap();
    assert!(
        bytes == std::fs::read(&whole).unwrap(),
        "streamed file differs"
    );
    let (lsn, back) = read_snapshot(&streamed).unwrap();
    assert_eq!(lsn, 7);
    assert!(back == snap, "snapshot read back differs from the engine");
    let f = Engine::new(EngineConfig::default());
    verify_snapshot(&streamed).unwrap().load_into(&f).unwrap();
    assert!(f.export() == snap, "loaded engine differs");
    let _ = std::fs::remove_dir_all(&dir);
}
