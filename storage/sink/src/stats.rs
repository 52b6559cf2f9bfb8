//! What `/metrics` shows of the sink: counters and gauges the sink's
//! threads update, read by whoever renders them.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Mutex;

use flashd_protocol::histogram::Histogram;

/// Bounds of [`SinkStats::batch_hist`]: records per batch.
pub const SINK_BATCH_BOUNDS: [u64; 6] = [1, 16, 64, 256, 1024, 4096];

/// What `/metrics` shows of the sink.
pub struct SinkStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    /// Records per batch written (bounds [`SINK_BATCH_BOUNDS`]; its sum is
    /// the records written, as `events`).
    pub batch_hist: Histogram<6>,
    pub rows: Vec<AtomicU64>,
    /// Records in the topic not yet written (sum over partitions).
    pub lag: AtomicI64,
    pub retries: AtomicU64,
    pub write_ns_sum: AtomicU64,
    pub mysql_up: AtomicBool,
    pub last_error: Mutex<String>,
    /// Records parked in `flashd_poison` (a write error that would recur
    /// forever, or bytes that do not decode).
    pub poison: AtomicU64,
    /// Events not applied because an abort voids them or they arrived
    /// behind a higher LSN of their partition.
    pub voided: AtomicU64,
    /// Partitions assigned to this member now.
    pub assigned: AtomicU64,
    /// Times this member left and rejoined its group because the group
    /// was stuck (see [`crate::UNASSIGNED_REJOIN`]).
    pub rejoins: AtomicU64,
    /// Times this member dropped its consumer for a fresh one because it
    /// held partitions with records waiting and read nothing (see
    /// [`crate::STUCK_RESTART`]).
    pub restarts: AtomicU64,
}

impl SinkStats {
    pub(crate) fn new(shards: usize) -> SinkStats {
        SinkStats {
            events: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_hist: Histogram::new(SINK_BATCH_BOUNDS),
            rows: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            lag: AtomicI64::new(0),
            retries: AtomicU64::new(0),
            write_ns_sum: AtomicU64::new(0),
            mysql_up: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
            poison: AtomicU64::new(0),
            voided: AtomicU64::new(0),
            assigned: AtomicU64::new(0),
            rejoins: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }
}
