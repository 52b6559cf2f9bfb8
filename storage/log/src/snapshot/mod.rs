//! Snapshots: the whole engine state at an LSN, so start-up replays only
//! the log's tail. Written atomically (temp file, fsync, rename, fsync the
//! directory); a snapshot that fails any check is skipped for an older one.
//!
//! One concept per file:
//! * [`list`]: names (`snap-<lsn>.snap`), listing, stale temp files.
//! * [`write`]: streaming an engine (or an export) into a new snapshot.
//! * [`file_bytes`]: a snapshot file mapped into memory (lean or populated).
//! * [`front`]: what precedes the orders (header, sales, stripe counts),
//!   shared by both formats.
//! * [`read`]: format 2 (blocks of fixed-width rows), decoded on every core.
//! * [`read_v1`]: format 1 (one record per order), still read, never written.
//! * [`verify`]: check a snapshot end to end before loading it.
//! * [`prune`]: keep the newest snapshots and the segments they still need.
//!
//! File layout: the common header ([`crate::HEADER_BYTES`]), then CRC-framed
//! records: the snapshot header ([`crate::codec::SnapHeader`]), one record per
//! sale, the orders per engine stripe (format 2), then the orders.

mod file_bytes;
mod front;
mod list;
mod prune;
mod read;
mod read_v1;
mod verify;
mod write;

#[cfg(test)]
mod tests;

use crate::codec::ORDER_BYTES;
use crate::record::PAYLOAD_BYTES_MAX;

pub use list::{list_snapshots, remove_stale_temps, snapshot_name};
pub use prune::prune;
pub use read::read_snapshot;
pub use verify::{latest_verified_snapshot, verify_snapshot, VerifiedSnapshot};
pub(crate) use verify::{newest_verified_snapshot, verify_snapshot_lean};
pub use write::{write_engine_snapshot, write_snapshot};

/// Orders per block record: ~600 KB, under the record size limit, and
/// enough blocks in a big snapshot to share among the cores.
const ORDERS_PER_BLOCK: usize = 8192;
const _: () = assert!(ORDERS_PER_BLOCK * ORDER_BYTES <= PAYLOAD_BYTES_MAX);
