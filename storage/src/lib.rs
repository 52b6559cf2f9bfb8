//! flashd-storage: the durable path of orders.
//!
//! It owns the [`OrderLog`] trait and its embedded file backend (segment
//! files of CRC32C-framed records), the group-commit [`LogWriter`] with its
//! circuit breaker, snapshots and the follower that writes them, and
//! start-up [`recover`]y; the production path too: the Kafka backend
//! ([`kafka`]) and the sink that projects the topic into MySQL shards
//! ([`sink`]).
//!
//! Invariants:
//! * A reply marked durable follows the `fdatasync` of every event queued
//!   before it (with `ack = durable`).
//! * The log on disk is always a prefix of what the engine applied: a
//!   failed write is cut back before anything after it is written, and the
//!   events it held are reverted in the engine.
//! * Recovery never silently drops a record that was followed by a valid
//!   one: only a torn tail of the last segment is truncated without the
//!   operator's say-so.
//! * Kafka: an abort record voids the LSN range of the failed groups before
//!   it; an event of that range is undone if it arrived before the abort
//!   and never applied if it arrives after it, or behind a later group of
//!   its partition (recovery and the sink alike); the sink's writes are
//!   idempotent and its offsets follow its rows.

mod codec;
pub mod dirlock;
mod error;
mod failpoint;
mod file_log;
mod follower;
pub mod kafka;
mod record;
mod recovery;
mod segment;
pub mod sink;
mod snapshot;
mod writer;

pub use codec::{decode_event, encode_event};
pub use dirlock::DirLock;
pub use error::{DecodeError, LogError};
pub use file_log::{FileLog, FileLogConfig};
pub use follower::{Snapshotter, SnapshotterConfig, Tail, NOT_STALLED};
pub use record::{decode_record, encode_record, Decoded};
pub use recovery::{read_range, recover, OnCorruption, Recovered, TAIL_SCAN_CRC_BYTES_MAX};
pub use segment::{list_segments, segment_name, HEADER_BYTES};
pub use snapshot::{
    latest_snapshot, latest_verified_snapshot, list_snapshots, prune, read_snapshot,
    remove_stale_temps, snapshot_name, verify_snapshot, write_engine_snapshot, write_snapshot,
    VerifiedSnapshot,
};
pub use writer::{
    Ack, Admission, Entry, Gate, LogHooks, LogWriter, Refused, Replies, WriterConfig, WriterHandle,
    WriterStats, BATCH_BOUNDS, COMMIT_BOUNDS_US,
};

use flashd_engine::Event;

/// An ordered, durable log of engine events. One writer appends; durability
/// is learnt from `commit`; readers go through [`recover`] / [`Tail`] for
/// the file backend.
pub trait OrderLog: Send {
    /// Queue a batch for writing (it may reach the OS now).
    fn append(&mut self, events: &[Event]) -> Result<(), LogError>;
    /// Make everything appended durable; returns the LSN after the last
    /// durable event.
    fn commit(&mut self) -> Result<u64, LogError>;
    /// Forget what was appended since the last successful commit.
    fn rollback(&mut self) -> Result<(), LogError>;
    /// After a rollback: what it undid may still come back on a restart
    /// (Kafka: records of the failed group may land, and the abort record
    /// that voids them is not durable yet; it goes first in the next
    /// commit). The requests of the undone group are then told that their
    /// outcome is unknown, not that nothing was changed. The file log cuts
    /// its file back at once: never.
    fn undo_pending(&self) -> bool {
        false
    }
    fn committed_lsn(&self) -> u64;
}

/// Wall-clock milliseconds (for rows the sink stamps itself).
pub(crate) fn kafka_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
