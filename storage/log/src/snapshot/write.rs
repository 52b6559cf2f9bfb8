//! Writing a snapshot, streamed: a block of orders at a time, into a temp
//! file renamed into place once complete (and synced, with `fsync`).

use std::io::Write;
use std::path::{Path, PathBuf};

use flashd_engine::{Engine, EngineSnapshot, Order};

use super::list::{snapshot_name, TMP_SUFFIX};
use super::ORDERS_PER_BLOCK;
use crate::codec::{
    encode_order_row, encode_snap_activity, encode_snap_header, SnapHeader, KIND_SNAP_ACTIVITY,
    KIND_SNAP_HEADER, KIND_SNAP_ORDERS, KIND_SNAP_STRIPES, ORDER_BYTES,
};
use crate::error::LogError;
use crate::record::{encode_record, RECORD_OVERHEAD};
use crate::segment::{header, sync_dir, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};

/// Bytes of small records (header, sales, stripe counts) gathered before
/// a write: one syscall for the lot in the usual case. A block of orders
/// (about 600 KB) is written on its own as soon as it is full.
const WRITE_BUF_BYTES: usize = 64 * 1024;

/// Write a snapshot of `engine` at `lsn`, streamed: sales first, then the
/// orders stripe by stripe, each block encoded and written as it fills.
/// Memory is a block and its record (about 1.2 MB) plus an index per order
/// of one stripe, whatever the number of orders. `engine` must be one no
/// one else mutates (the follower's), so its parts agree with each other.
pub fn write_engine_snapshot(
    dir: &Path,
    lsn: u64,
    engine: &Engine,
    fsync: bool,
) -> Result<PathBuf, LogError> {
    let (meta, counts) = engine.export_meta();
    write_streamed(dir, lsn, &meta, &counts, fsync, &mut |emit| {
        engine.for_each_order(emit)
    })
}

/// Write `snap` as a snapshot at `lsn` (same bytes as
/// [`write_engine_snapshot`] of the engine it was exported from).
pub fn write_snapshot(
    dir: &Path,
    lsn: u64,
    snap: &EngineSnapshot,
    fsync: bool,
) -> Result<PathBuf, LogError> {
    let mut counts = vec![0u32; flashd_engine::USER_STRIPES];
    for o in &snap.orders {
        counts[Engine::stripe_of(o.user_id)] += 1;
    }
    write_streamed(dir, lsn, snap, &counts, fsync, &mut |emit| {
        snap.orders.iter().try_for_each(emit)
    })
}

/// Something that calls `emit` once per order, in snapshot order, and
/// stops at its first error.
type OrderSource<'a> =
    dyn FnMut(&mut dyn FnMut(&Order) -> Result<(), LogError>) -> Result<(), LogError> + 'a;

/// The snapshot file being written: its temp path, and what it has taken.
struct Streamer {
    file: std::fs::File,
    tmp: PathBuf,
    /// Encoded records not yet written.
    out: Vec<u8>,
    /// Rows of the block being filled.
    block: Vec<u8>,
    rows: usize,
    orders: u64,
}

impl Streamer {
    fn record(&mut self, kind: u8, payload: &[u8]) -> Result<(), LogError> {
        encode_record(&mut self.out, kind, payload);
        if self.out.len() >= WRITE_BUF_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LogError> {
        self.file
            .write_all(&self.out)
            .map_err(|e| LogError::io(&self.tmp, e))?;
        self.out.clear();
        Ok(())
    }

    fn order(&mut self, o: &Order) -> Result<(), LogError> {
        encode_order_row(o, &mut self.block);
        self.rows += 1;
        self.orders += 1;
        if self.rows == ORDERS_PER_BLOCK {
            self.end_block()?;
        }
        Ok(())
    }

    fn end_block(&mut self) -> Result<(), LogError> {
        if self.rows > 0 {
            let block = std::mem::take(&mut self.block);
            let r = self.record(KIND_SNAP_ORDERS, &block);
            self.block = block;
            self.block.clear();
            self.rows = 0;
            r?;
        }
        Ok(())
    }
}

fn write_streamed(
    dir: &Path,
    lsn: u64,
    meta: &EngineSnapshot,
    stripe_orders: &[u32],
    fsync: bool,
    orders: &mut OrderSource<'_>,
) -> Result<PathBuf, LogError> {
    let path = dir.join(snapshot_name(lsn));
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", snapshot_name(lsn)));
    let file = std::fs::File::create(&tmp).map_err(|e| LogError::io(&tmp, e))?;
    let mut w = Streamer {
        file,
        tmp: tmp.clone(),
        out: Vec::with_capacity(WRITE_BUF_BYTES + ORDERS_PER_BLOCK * ORDER_BYTES + RECORD_OVERHEAD),
        block: Vec::with_capacity(ORDERS_PER_BLOCK * ORDER_BYTES),
        rows: 0,
        orders: 0,
    };
    let n_ord: u64 = stripe_orders.iter().map(|&c| u64::from(c)).sum();
    let written = (|| {
        w.out
            .extend_from_slice(&header(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, lsn));
        let mut p = Vec::with_capacity(256);
        let h = SnapHeader {
            lsn,
            next_activity: meta.next_activity,
            last_order_id: meta.last_order_id,
            activities: meta.activities.len() as u64,
            orders: n_ord,
        };
        encode_snap_header(&h, &mut p);
        w.record(KIND_SNAP_HEADER, &p)?;
        for a in &meta.activities {
            p.clear();
            encode_snap_activity(a, &mut p);
            w.record(KIND_SNAP_ACTIVITY, &p)?;
        }
        // Orders per stripe, so a loader sizes every stripe once up front.
        p.clear();
        for c in stripe_orders {
            p.extend_from_slice(&c.to_le_bytes());
        }
        w.record(KIND_SNAP_STRIPES, &p)?;
        orders(&mut |o| w.order(o))?;
        w.end_block()?;
        w.flush()?;
        // The header promised `n_ord` orders; a reader would refuse a file
        // that disagrees, so do not leave one behind.
        if w.orders != n_ord {
            return Err(LogError::SnapshotChanged {
                path: tmp.clone(),
                written: w.orders,
                counted: n_ord,
            });
        }
        if fsync {
            w.file.sync_all().map_err(|e| LogError::io(&tmp, e))?;
        }
        Ok(())
    })();
    drop(w);
    if let Err(e) = written {
        // Best effort: a leftover is removed at the next start anyway.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(path)
}
