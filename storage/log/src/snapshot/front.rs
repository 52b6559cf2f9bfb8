//! What precedes the orders in a snapshot of either format: the file
//! header, the snapshot header record, the sales and (format 2) the
//! orders per stripe; and reading one record with its damage named.

use std::path::Path;

use flashd_engine::EngineSnapshot;

use crate::codec::{
    decode_snap_activity, decode_snap_header, KIND_SNAP_ACTIVITY, KIND_SNAP_HEADER,
    KIND_SNAP_STRIPES,
};
use crate::error::{Corruption, LogError};
use crate::record::{decode_record, Decoded};
use crate::segment::{check_header, HEADER_BYTES, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};

/// What precedes the orders in a snapshot.
pub(super) struct Front {
    pub(super) lsn: u64,
    pub(super) version: u32,
    /// Sales, next sale id and last order id; no orders.
    pub(super) meta: EngineSnapshot,
    pub(super) n_ord: u64,
    /// Orders per engine stripe (format 2), to size the stripes up front.
    pub(super) stripe_orders: Option<Vec<u32>>,
    /// Where the orders begin.
    pub(super) off: usize,
}

pub(super) fn record_at<'d>(
    path: &Path,
    data: &'d [u8],
    off: &mut usize,
) -> Result<(u8, &'d [u8]), LogError> {
    match decode_record(&data[*off..]) {
        Decoded::Record { kind, payload, len } => {
            *off += len;
            Ok((kind, payload))
        }
        Decoded::Checksum { expected, got, .. } => Err(LogError::ChecksumMismatch {
            path: path.into(),
            offset: *off as u64,
            expected,
            got,
        }),
        other => Err(corrupt_at(path, *off, Corruption::of_record(&other))),
    }
}

pub(super) fn corrupt_at(path: &Path, off: usize, why: Corruption) -> LogError {
    LogError::Corrupt {
        path: path.into(),
        offset: off as u64,
        why,
    }
}

pub(super) fn read_front(path: &Path, data: &[u8]) -> Result<Front, LogError> {
    let (lsn, version) =
        check_header(path, data, SNAPSHOT_MAGIC, 1..=SNAPSHOT_VERSION, "snapshot")?;
    let mut off = HEADER_BYTES;
    let (kind, p) = record_at(path, data, &mut off)?;
    if kind != KIND_SNAP_HEADER {
        return Err(corrupt_at(
            path,
            HEADER_BYTES,
            Corruption::Fixed("first record is not the snapshot header"),
        ));
    }
    let h = decode_snap_header(p).map_err(|e| corrupt_at(path, HEADER_BYTES, e.into()))?;
    if h.lsn != lsn {
        return Err(corrupt_at(
            path,
            HEADER_BYTES,
            Corruption::Fixed("header records disagree on the LSN"),
        ));
    }
    let mut meta = EngineSnapshot {
        next_activity: h.next_activity,
        last_order_id: h.last_order_id,
        ..EngineSnapshot::default()
    };
    let n_ord = h.orders;
    for _ in 0..h.activities {
        let at = off;
        let (kind, p) = record_at(path, data, &mut off)?;
        if kind != KIND_SNAP_ACTIVITY {
            return Err(corrupt_at(
                path,
                at,
                Corruption::Fixed("expected a sale record"),
            ));
        }
        meta.activities
            .push(decode_snap_activity(p).map_err(|e| corrupt_at(path, at, e.into()))?);
    }
    let mut stripe_orders = None;
    if version >= 2 && off < data.len() {
        let at = off;
        let mut probe = off;
        if let Ok((KIND_SNAP_STRIPES, p)) = record_at(path, data, &mut probe) {
            if p.len() % 4 != 0 {
                return Err(corrupt_at(
                    path,
                    at,
                    Corruption::Fixed("stripe counts of a partial length"),
                ));
            }
            stripe_orders = Some(
                p.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect::<Vec<u32>>(),
            )
            // A sizing hint only: one that does not add up to the orders (which
            // the blocks prove) is dropped, or it could reserve room for billions.
            .filter(|c| c.iter().map(|&n| u64::from(n)).sum::<u64>() == n_ord);
            off = probe;
        }
    }
    Ok(Front {
        lsn,
        version,
        meta,
        n_ord,
        stripe_orders,
        off,
    })
}
