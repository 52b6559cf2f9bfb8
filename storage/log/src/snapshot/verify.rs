//! Checking a snapshot end to end before any of it is loaded, and loading
//! a checked one into an engine.

use std::path::{Path, PathBuf};

use flashd_engine::{Engine, EngineSnapshot, Order};

use super::file_bytes::FileBytes;
use super::front::{corrupt_at, read_front, Front};
use super::list::{list_snapshots, remove_stale_temps};
use super::read::{
    block_rows, decode_threads, index_blocks, on_threads, read_snapshot, split_blocks, Block,
};
use super::ORDERS_PER_BLOCK;
use crate::codec::{decode_order_row, ORDER_BYTES};
use crate::error::{Corruption, LogError};
use crate::record::RECORD_OVERHEAD;

/// A snapshot checked from end to end (every CRC, every row's enums) but
/// not yet loaded: loading it into an engine cannot then fail halfway on
/// damage, which would leave a half-loaded engine with no way back to an
/// older snapshot.
pub struct VerifiedSnapshot {
    pub path: PathBuf,
    pub lsn: u64,
    pub orders: u64,
    body: Body,
}

enum Body {
    /// Format 1, decoded whole.
    V1(EngineSnapshot),
    /// Format 2: decoded again, block by block, straight into the engine.
    V2 {
        data: FileBytes,
        front: Front,
        blocks: Vec<Block>,
    },
}

pub fn verify_snapshot(path: &Path) -> Result<VerifiedSnapshot, LogError> {
    verify(path, false)
}

/// [`verify_snapshot`] for a loader that is not in a hurry (the follower):
/// the file's pages are read as needed and let go after each block, so
/// verifying and loading hold a block of it in memory, not all of it.
pub(crate) fn verify_snapshot_lean(path: &Path) -> Result<VerifiedSnapshot, LogError> {
    verify(path, true)
}

pub(super) fn verify(path: &Path, lean: bool) -> Result<VerifiedSnapshot, LogError> {
    let data = FileBytes::open(path, lean)?;
    let front = read_front(path, &data)?;
    if front.version == 1 {
        drop(data);
        let (lsn, snap) = read_snapshot(path)?;
        return Ok(VerifiedSnapshot {
            path: path.into(),
            lsn,
            orders: snap.orders.len() as u64,
            body: Body::V1(snap),
        });
    }
    let (blocks, end) = index_blocks(path, &data, front.off, front.n_ord)?;
    if end != data.len() {
        return Err(corrupt_at(
            path,
            end,
            Corruption::Fixed("bytes after the last record"),
        ));
    }
    let parts = split_blocks(&blocks, decode_threads(front.n_ord as usize));
    let (bytes, fb): (&[u8], &FileBytes) = (&data, &data);
    on_threads(parts, |part| {
        for &(at, first, n) in part {
            let rows = block_rows(path, bytes, at)?;
            for (k, row) in rows.chunks_exact(ORDER_BYTES).enumerate() {
                // The two enum bytes: all a CRC-clean row can still get wrong.
                if row[32] > 2 || row[33] > 2 {
                    let row: &[u8; ORDER_BYTES] = row.try_into().expect("exact chunks");
                    let why = match decode_order_row(row) {
                        Err(source) => Corruption::Order {
                            index: (first + k) as u64,
                            source,
                        },
                        Ok(_) => Corruption::Fixed("bad order row"),
                    };
                    return Err(corrupt_at(path, at, why));
                }
            }
            fb.done_with(at, n * ORDER_BYTES + RECORD_OVERHEAD);
        }
        Ok(())
    })?;
    Ok(VerifiedSnapshot {
        path: path.into(),
        lsn: front.lsn,
        orders: front.n_ord,
        body: Body::V2 {
            data,
            front,
            blocks,
        },
    })
}

impl VerifiedSnapshot {
    /// Load into an empty engine: format 2 is decoded on every core, each
    /// block straight into the engine's stripes (no copy of all orders in
    /// between: at millions of orders that copy, and its page faults, were
    /// a third of start-up).
    pub fn load_into(self, engine: &Engine) -> Result<u64, LogError> {
        let lsn = self.lsn;
        let replay = |source| LogError::Replay { lsn, source };
        match self.body {
            Body::V1(snap) => engine.load(&snap).map_err(replay)?,
            Body::V2 {
                data,
                front,
                blocks,
            } => {
                engine
                    .begin_load(&front.meta, front.stripe_orders.as_deref())
                    .map_err(replay)?;
                let parts = split_blocks(&blocks, decode_threads(front.n_ord as usize));
                let (bytes, fb): (&[u8], &FileBytes) = (&data, &data);
                let path = &self.path;
                on_threads(parts, |part| {
                    let mut buf: Vec<Order> = Vec::with_capacity(ORDERS_PER_BLOCK);
                    for &(at, _, n) in part {
                        buf.clear();
                        for row in block_rows(path, bytes, at)?.chunks_exact(ORDER_BYTES) {
                            let row: &[u8; ORDER_BYTES] = row.try_into().expect("exact chunks");
                            buf.push(
                                decode_order_row(row)
                                    .map_err(|e| corrupt_at(path, at, e.into()))?,
                            );
                        }
                        engine.load_orders_part(&buf);
                        fb.done_with(at, n * ORDER_BYTES + RECORD_OVERHEAD);
                    }
                    Ok(())
                })?;
                engine.finish_load();
            }
        }
        Ok(lsn)
    }
}

/// The newest snapshot that passes every check, verified and ready to
/// load; a damaged newer one is reported and skipped. This is how start-up
/// opens the snapshot directory, so it first removes the temp files of
/// snapshots a crash interrupted ([`remove_stale_temps`]; the caller
/// holds the directory's lock and no snapshotter runs yet).
pub fn latest_verified_snapshot(dir: &Path) -> Result<Option<VerifiedSnapshot>, LogError> {
    remove_stale_temps(dir)?;
    newest_verified_snapshot(dir, false)
}

/// The newest snapshot that passes every check; touches no file. `lean`:
/// see [`verify_snapshot_lean`].
pub(crate) fn newest_verified_snapshot(
    dir: &Path,
    lean: bool,
) -> Result<Option<VerifiedSnapshot>, LogError> {
    for (_, path) in list_snapshots(dir)?.into_iter().rev() {
        match verify(&path, lean) {
            Ok(v) => return Ok(Some(v)),
            Err(e) => tracing::warn!(error = %e, "skipping a damaged snapshot"),
        }
    }
    Ok(None)
}
