//! flashd-log: the order log, embedded.
//!
//! It owns the [`OrderLog`] trait and its embedded file backend (segment
//! files of CRC32C-framed records), the group-commit [`LogWriter`] with its
//! circuit breaker (which reaches the engine only through [`LogHooks`]),
//! snapshots and the follower that writes them, start-up [`recover`]y and
//! the directory lock. The Kafka backend (`flashd-kafka`) implements the
//! same trait in a crate of its own, and the sink that projects the topic
//! into MySQL (`flashd-sink`) is a separate process role.
//!
//! What it must never do: depend on librdkafka, a MySQL client or an async
//! runtime (`cargo tree -p flashd-log` shows none), or decide anything
//! about stock (the engine does; the writer only applies or reverts what
//! the engine emitted, through [`LogHooks`]).
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
//! * LSNs only grow: the writer hands out consecutive LSNs, and a backend's
//!   committed LSN never moves backwards (asserted in both).

mod codec;
pub mod dirlock;
mod error;
mod failpoint;
mod file_log;
mod follower;
mod order_log;
mod record;
mod recovery;
mod segment;
mod snapshot;
mod writer;

pub use codec::{decode_event, encode_event};
pub use dirlock::DirLock;
pub use error::{DecodeError, LogError};
pub use file_log::{FileLog, FileLogConfig};
pub use follower::{Snapshotter, SnapshotterConfig, Tail, NOT_STALLED};
pub use order_log::OrderLog;
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
