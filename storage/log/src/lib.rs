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
//! * LSNs only grow: a backend gives each appended event the next LSN,
//!   its committed LSN never moves back (a rollback returns to it, never
//!   below), and in durable mode each group starts where the last one
//!   ended and moves the committed LSN by at least its events (asserted in
//!   [`LogWriter`], [`FileLog`] and `flashd_kafka::KafkaLog`).
//!
//! Where things are: `order_log` (the trait), `file_log` and `segment`
//! (the file backend), `record` and `codec` (framing and payloads),
//! `writer/` (group commit: configuration, gate, handle, stats, worker),
//! `follower` (the snapshotter), `tail` ([`Tail`], reading the committed
//! log), `snapshot/` (one file per concept: names, writing, the mapped
//! file, reading either format, verifying, pruning), `recovery` (start-up
//! replay and the damage policy), `dirlock`, `failpoint` (test-only fault
//! injection).

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
mod tail;
mod writer;

pub use codec::{decode_event, encode_event};
pub use dirlock::DirLock;
pub use error::{Corruption, DecodeError, LogError};
pub use file_log::{FileLog, FileLogConfig};
pub use follower::{Snapshotter, SnapshotterConfig, NOT_STALLED};
pub use order_log::OrderLog;
pub use record::{decode_record, encode_record, Decoded};
pub use recovery::{recover, OnCorruption, Recovered};
pub use segment::{list_segments, segment_name, HEADER_BYTES};
pub use snapshot::{
    latest_verified_snapshot, list_snapshots, prune, read_snapshot, remove_stale_temps,
    snapshot_name, verify_snapshot, write_engine_snapshot, write_snapshot, VerifiedSnapshot,
};
pub use tail::Tail;
pub use writer::{
    Ack, Admission, Entry, Gate, LogHooks, LogWriter, Refused, Replies, WriterConfig, WriterHandle,
    WriterStats, BATCH_EVENTS_BOUNDS, COMMIT_NS_BOUNDS,
};
