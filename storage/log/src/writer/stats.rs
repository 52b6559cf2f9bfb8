//! What the writer has done, for `/metrics`.

use std::sync::atomic::AtomicU64;

use flashd_protocol::histogram::Histogram;

/// What the writer has done, for `/metrics`. Counters are relaxed: each is
/// exact, but two read together may be a commit apart.
pub struct WriterStats {
    pub commits: AtomicU64,
    pub events: AtomicU64,
    pub failures: AtomicU64,
    pub reverted: AtomicU64,
    /// Events per group commit (a count; bounds [`BATCH_EVENTS_BOUNDS`]).
    /// Its sum is the events made durable.
    pub batch_events: Histogram<6>,
    /// Time of a group commit (write + fsync, or one produce round trip),
    /// in nanoseconds (bounds [`COMMIT_NS_BOUNDS`]): expose with scale 1e-9
    /// for seconds.
    pub commit_ns: Histogram<7>,
    /// Wall-clock ms at which the writer started its current piece of work
    /// (a commit, or undoing a failure); 0 while it waits for work. The
    /// watchdog stops pinging when this is older than any commit may take.
    pub busy_since_ms: AtomicU64,
}

/// Bounds of [`WriterStats::batch_events`]: events per commit.
pub const BATCH_EVENTS_BOUNDS: [u64; 6] = [1, 4, 16, 64, 256, 1024];
/// Bounds of [`WriterStats::commit_ns`]: 100 µs to 10 ms, in nanoseconds.
pub const COMMIT_NS_BOUNDS: [u64; 7] = [
    100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

impl Default for WriterStats {
    fn default() -> WriterStats {
        WriterStats {
            commits: AtomicU64::new(0),
            events: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            reverted: AtomicU64::new(0),
            batch_events: Histogram::new(BATCH_EVENTS_BOUNDS),
            commit_ns: Histogram::new(COMMIT_NS_BOUNDS),
            busy_since_ms: AtomicU64::new(0),
        }
    }
}
