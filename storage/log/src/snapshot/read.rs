//! Reading a snapshot whole ([`read_snapshot`]): format 2's blocks of
//! fixed-width rows are found by their length fields, then CRC-checked and
//! decoded on every core; format 1 goes to [`super::read_v1`]. The block
//! helpers here are shared with [`super::verify`].

use std::path::Path;

use flashd_engine::{EngineSnapshot, Order};

use super::file_bytes::FileBytes;
use super::front::{corrupt_at, read_front, record_at};
use super::read_v1::read_orders_v1;
use crate::codec::{decode_order_row, KIND_SNAP_ORDERS, ORDER_BYTES};
use crate::error::{Corruption, LogError};
use crate::record::{decode_record, Decoded, PAYLOAD_BYTES_MAX, RECORD_OVERHEAD};

pub fn read_snapshot(path: &Path) -> Result<(u64, EngineSnapshot), LogError> {
    let data = FileBytes::open(path, false)?;
    let data: &[u8] = &data;
    let front = read_front(path, data)?;
    let mut snap = front.meta;
    let off = if front.version == 1 {
        read_orders_v1(path, data, front.off, front.n_ord, &mut snap.orders)?
    } else {
        read_order_blocks(path, data, front.off, front.n_ord, &mut snap.orders)?
    };
    if off != data.len() {
        return Err(corrupt_at(
            path,
            off,
            Corruption::Fixed("bytes after the last record"),
        ));
    }
    Ok((front.lsn, snap))
}

/// A block of order rows: (offset of its record, index of its first
/// order, orders in it).
pub(super) type Block = (usize, usize, usize);

/// Find the blocks of `n_ord` orders from `off` by their length fields;
/// returns them and where they end.
pub(super) fn index_blocks(
    path: &Path,
    data: &[u8],
    mut off: usize,
    n_ord: u64,
) -> Result<(Vec<Block>, usize), LogError> {
    let corrupt = |off: usize, why: Corruption| corrupt_at(path, off, why);
    let mut blocks: Vec<Block> = Vec::new();
    let mut total = 0usize;
    while (total as u64) < n_ord {
        let at = off;
        let len = data
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corrupt(at, Corruption::Fixed("snapshot ends before its last order")))?;
        if len > PAYLOAD_BYTES_MAX || off + len + RECORD_OVERHEAD > data.len() {
            // Let the record reader name the damage (length or checksum).
            return Err(match decode_record(&data[off..]) {
                Decoded::Checksum { expected, got, .. } => LogError::ChecksumMismatch {
                    path: path.into(),
                    offset: at as u64,
                    expected,
                    got,
                },
                other => corrupt(at, Corruption::of_record(&other)),
            });
        }
        if len == 0 || len % ORDER_BYTES != 0 {
            return Err(corrupt(at, Corruption::BlockLength(len)));
        }
        let n = len / ORDER_BYTES;
        if (total + n) as u64 > n_ord {
            return Err(corrupt(
                at,
                Corruption::Fixed("more orders than the header says"),
            ));
        }
        blocks.push((at, total, n));
        total += n;
        off += len + RECORD_OVERHEAD;
    }
    Ok((blocks, off))
}

/// Blocks shared among up to `threads` threads, about the same number of
/// orders each, whole blocks only.
pub(super) fn split_blocks(blocks: &[Block], threads: usize) -> Vec<&[Block]> {
    let total: usize = blocks.iter().map(|b| b.2).sum();
    let per = total.div_ceil(threads.max(1)).max(1);
    let mut parts = Vec::new();
    let mut rest = blocks;
    while !rest.is_empty() {
        let start = rest[0].1;
        let k = rest
            .iter()
            .position(|b| b.1 >= start + per)
            .unwrap_or(rest.len());
        parts.push(&rest[..k]);
        rest = &rest[k..];
    }
    parts
}

pub(super) fn decode_threads(n_ord: usize) -> usize {
    if n_ord >= 100_000 {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
    } else {
        1
    }
}

/// One block's rows, after its CRC and kind are checked.
pub(super) fn block_rows<'d>(path: &Path, data: &'d [u8], at: usize) -> Result<&'d [u8], LogError> {
    let mut off = at;
    let (kind, payload) = record_at(path, data, &mut off)?;
    if kind != KIND_SNAP_ORDERS {
        return Err(corrupt_at(
            path,
            at,
            Corruption::Fixed("expected a block of orders"),
        ));
    }
    Ok(payload)
}

/// Run `f` over the jobs on their own threads (inline for one job); the
/// first error in job order wins.
pub(super) fn on_threads<T, F>(jobs: Vec<T>, f: F) -> Result<(), LogError>
where
    T: Send,
    F: Fn(T) -> Result<(), LogError> + Sync,
{
    if jobs.len() <= 1 {
        return jobs.into_iter().try_for_each(f);
    }
    let results: Vec<Result<(), LogError>> = std::thread::scope(|sc| {
        let hs: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let f = &f;
                sc.spawn(move || f(job))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("snapshot reader panicked"))
            .collect()
    });
    results.into_iter().collect()
}

/// Format 2: blocks of fixed-width rows. The blocks are found from their
/// length fields (a few hundred for millions of orders), then CRC-checked
/// and decoded on every core straight into their place in `out`.
fn read_order_blocks(
    path: &Path,
    data: &[u8],
    off: usize,
    n_ord: u64,
    out: &mut Vec<Order>,
) -> Result<usize, LogError> {
    let (blocks, end) = index_blocks(path, data, off, n_ord)?;
    let n_ord = blocks.iter().map(|b| b.2).sum::<usize>();
    out.clear();
    out.reserve_exact(n_ord);
    let parts = split_blocks(&blocks, decode_threads(n_ord));
    // Each part decodes into its own stretch of the output's spare room.
    let mut spare = &mut out.spare_capacity_mut()[..n_ord];
    let mut jobs = Vec::with_capacity(parts.len());
    for part in parts {
        let count: usize = part.iter().map(|b| b.2).sum();
        let (mine, later) = spare.split_at_mut(count);
        spare = later;
        jobs.push((part, mine));
    }
    on_threads(jobs, |(part, dst)| {
        let base = part.first().map_or(0, |b| b.1);
        for &(at, first, _) in part {
            for (k, row) in block_rows(path, data, at)?
                .chunks_exact(ORDER_BYTES)
                .enumerate()
            {
                let row: &[u8; ORDER_BYTES] = row.try_into().expect("exact chunks");
                let o = decode_order_row(row).map_err(|source| {
                    let index = (first + k) as u64;
                    corrupt_at(path, at, Corruption::Order { index, source })
                })?;
                dst[first - base + k].write(o);
            }
        }
        Ok(())
    })?;
    // SAFETY: every part succeeded, so each of the `n_ord` slots was
    // written exactly once (the blocks tile 0..n_ord); `Order` is `Copy`,
    // so nothing could leak on the error paths above.
    unsafe { out.set_len(n_ord) };
    Ok(end)
}
