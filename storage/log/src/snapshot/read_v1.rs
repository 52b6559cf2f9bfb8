//! Format 1 of the orders: one record per order (what the previous release
//! wrote). Still read, never written.

use std::path::Path;

use flashd_engine::Order;

use super::front::{corrupt_at, record_at};
use crate::codec::{decode_snap_order_v1, KIND_SNAP_ORDER};
use crate::error::{Corruption, LogError};
use crate::record::{PAYLOAD_BYTES_MAX, RECORD_OVERHEAD};

/// Format 1: one record per order. Big ones are decoded on every core.
pub(super) fn read_orders_v1(
    path: &Path,
    data: &[u8],
    mut off: usize,
    n_ord: u64,
    out: &mut Vec<Order>,
) -> Result<usize, LogError> {
    let corrupt = |off: usize, why: Corruption| corrupt_at(path, off, why);
    let next = |off: &mut usize| record_at(path, data, off);
    let offsets = order_offsets(data, off, n_ord);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(16));
    if let (Some(offsets), true) = (offsets.as_ref(), threads > 1 && n_ord >= 100_000) {
        let per = offsets.len().div_ceil(threads);
        let parts: Vec<Result<Vec<Order>, LogError>> = std::thread::scope(|sc| {
            let hs: Vec<_> = offsets
                .chunks(per)
                .map(|chunk| {
                    let (next, corrupt) = (&next, &corrupt);
                    sc.spawn(move || {
                        let mut v = Vec::with_capacity(chunk.len());
                        for &at in chunk {
                            let mut o = at;
                            let (kind, p) = next(&mut o)?;
                            if kind != KIND_SNAP_ORDER {
                                return Err(corrupt(
                                    at,
                                    Corruption::Fixed("expected an order record"),
                                ));
                            }
                            v.push(decode_snap_order_v1(p).map_err(|e| corrupt(at, e.into()))?);
                        }
                        Ok(v)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("snapshot decoder panicked"))
                .collect()
        });
        out.reserve_exact(n_ord as usize);
        for part in parts {
            out.extend(part?);
        }
        off = offsets.last().map_or(off, |&last| {
            let n = u32::from_le_bytes(data[last..last + 4].try_into().expect("4 bytes"));
            last + n as usize + RECORD_OVERHEAD
        });
    } else {
        for _ in 0..n_ord {
            let at = off;
            let (kind, p) = next(&mut off)?;
            if kind != KIND_SNAP_ORDER {
                return Err(corrupt(at, Corruption::Fixed("expected an order record")));
            }
            out.push(decode_snap_order_v1(p).map_err(|e| corrupt(at, e.into()))?);
        }
    }
    Ok(off)
}

/// Where each of `n` records starting at `off` begins, from their length
/// fields alone; `None` if the lengths run past the data or out of bounds.
fn order_offsets(data: &[u8], mut off: usize, n: u64) -> Option<Vec<usize>> {
    let mut v = Vec::with_capacity(usize::try_from(n).ok()?.min(data.len() / RECORD_OVERHEAD));
    for _ in 0..n {
        let len = u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?) as usize;
        if len > PAYLOAD_BYTES_MAX || off + len + RECORD_OVERHEAD > data.len() {
            return None;
        }
        v.push(off);
        off += len + RECORD_OVERHEAD;
    }
    Some(v)
}
