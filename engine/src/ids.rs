//! Order ids: 64-bit, unique per node, ordered by time (snowflake layout).
//! The one place that knows the bit layout: build ids with [`OrderIdGen`],
//! read one's creation time with [`order_created_ms`], bound a time range
//! of ids with [`order_id_floor`].
//!
//! `| 41 bits ms since EPOCH | 10 bits node | 12 bits sequence |`
//! 41 bits of milliseconds last 69 years from 2024; 4096 ids per ms per
//! node. When a millisecond's sequence is used up, ids borrow from the next
//! millisecond rather than wait, so generation never blocks; they stay
//! unique and increasing.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::types::{Millis, OrderId};

/// 2024-01-01T00:00:00Z.
pub const EPOCH_MS: Millis = 1_704_067_200_000;
/// Bits of the node id.
pub const NODE_BITS: u32 = 10;
/// Bits of the per-millisecond sequence.
pub const SEQ_BITS: u32 = 12;
/// Where the milliseconds start: an id's time is `id >> ID_TIME_SHIFT`
/// milliseconds after [`EPOCH_MS`].
pub const ID_TIME_SHIFT: u32 = NODE_BITS + SEQ_BITS;
/// Largest node id (`engine.node_id`).
pub const NODE_ID_MAX: u16 = (1 << NODE_BITS) - 1;

const _: () = assert!(ID_TIME_SHIFT == 22, "the sink's stored ids use this layout");

/// When the order with id `id` was created (ms since the Unix epoch), to
/// the millisecond (an id borrowed from the next millisecond under a burst
/// reads as that one).
#[inline]
pub const fn order_created_ms(id: OrderId) -> Millis {
    (id >> ID_TIME_SHIFT) + EPOCH_MS
}

/// The smallest id an order created at `ms` or later can have (a time
/// before [`EPOCH_MS`] counts as the epoch).
#[inline]
pub const fn order_id_floor(ms: Millis) -> OrderId {
    ms.saturating_sub(EPOCH_MS) << ID_TIME_SHIFT
}

/// The node that created the order with id `id`.
#[cfg(test)]
const fn order_node(id: OrderId) -> u16 {
    ((id >> SEQ_BITS) & NODE_ID_MAX as u64) as u16
}

pub struct OrderIdGen {
    node: u64,
    /// Last id handed out (or seen in replay).
    last: AtomicU64,
}

impl OrderIdGen {
    pub fn new(node: u16) -> Self {
        assert!(node <= NODE_ID_MAX, "node id out of range");
        OrderIdGen {
            node: node as u64,
            last: AtomicU64::new(0),
        }
    }

    pub fn next(&self, now: Millis) -> OrderId {
        let floor = order_id_floor(now) | (self.node << SEQ_BITS);
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            // Same node: keep its node bits, bump the sequence (carrying into
            // the time bits when a millisecond is exhausted).
            let candidate = if cur >= floor { self.bump(cur) } else { floor };
            match self.last.compare_exchange_weak(
                cur,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return candidate,
                Err(v) => cur = v,
            }
        }
    }

    fn bump(&self, id: OrderId) -> OrderId {
        let seq_mask = (1u64 << SEQ_BITS) - 1;
        if id & seq_mask == seq_mask {
            // Next millisecond, sequence 0, same node.
            let ms = (id >> ID_TIME_SHIFT) + 1;
            (ms << ID_TIME_SHIFT) | (self.node << SEQ_BITS)
        } else {
            id + 1
        }
    }

    /// Replay: never hand out an id at or below one already used.
    pub fn observe(&self, id: OrderId) {
        self.last.fetch_max(id, Ordering::Relaxed);
    }

    /// The last id handed out or observed.
    pub fn last(&self) -> OrderId {
        self.last.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_increasing_and_carry_node_and_time() {
        let g = OrderIdGen::new(7);
        let now = EPOCH_MS + 1_000_000;
        let mut prev = 0;
        for _ in 0..10_000 {
            let id = g.next(now);
            assert!(id > prev);
            assert_eq!(order_node(id), 7);
            prev = id;
        }
        // 10,000 ids in one ms borrowed two more milliseconds.
        assert_eq!(order_created_ms(prev), now + 2);
        // The clock moving on gives an id at the new time.
        let later = g.next(now + 10);
        assert_eq!(order_created_ms(later), now + 10);
        // A clock going backwards never repeats an id.
        assert!(g.next(now) > later);
    }

    #[test]
    fn the_layout_reads_back() {
        let ms = EPOCH_MS + 123_456_789;
        let id = order_id_floor(ms) | (5 << SEQ_BITS) | 77;
        assert_eq!(order_created_ms(id), ms);
        assert_eq!(order_node(id), 5);
        assert_eq!(order_id_floor(ms), (ms - EPOCH_MS) << 22);
        assert_eq!(order_id_floor(0), 0, "before the epoch is the epoch");
        assert_eq!(order_created_ms(0), EPOCH_MS);
        // A generated id is at or above the floor of its time.
        let g = OrderIdGen::new(NODE_ID_MAX);
        let id = g.next(ms);
        assert!(id >= order_id_floor(ms) && id < order_id_floor(ms + 1));
        assert_eq!(order_node(id), NODE_ID_MAX);
    }

    #[test]
    fn concurrent_ids_are_unique() {
        let g = std::sync::Arc::new(OrderIdGen::new(1));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..20_000)
                        .map(|_| g.next(EPOCH_MS + 5))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
