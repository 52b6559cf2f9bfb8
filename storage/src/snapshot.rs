//! Snapshots: the whole engine state at an LSN, so start-up replays only
//! the log's tail. Written atomically (temp file, fsync, rename, fsync the
//! directory); a snapshot that fails any check is skipped for an older one.

use std::io::Write;
use std::path::{Path, PathBuf};

use flashd_engine::{EngineSnapshot, Order};

use crate::codec::*;
use crate::error::LogError;
use crate::record::{decode_record, encode_record, Decoded, MAX_PAYLOAD_BYTES, RECORD_OVERHEAD};
use crate::segment::{check_header, header, list_segments, sync_dir, HEADER_BYTES, SNAPSHOT_MAGIC};

pub fn snapshot_name(lsn: u64) -> String {
    format!("snap-{lsn:020}.snap")
}

pub fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LogError::io(dir, e)),
    };
    for entry in rd {
        let path = entry.map_err(|e| LogError::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(lsn) = name
            .strip_prefix("snap-")
            .and_then(|r| r.strip_suffix(".snap"))
            .and_then(|n| n.parse().ok())
        {
            out.push((lsn, path));
        }
    }
    out.sort();
    Ok(out)
}

pub fn write_snapshot(
    dir: &Path,
    lsn: u64,
    snap: &EngineSnapshot,
    fsync: bool,
) -> Result<PathBuf, LogError> {
    let mut buf = Vec::with_capacity(64 + snap.orders.len() * 96);
    buf.extend_from_slice(&header(SNAPSHOT_MAGIC, lsn));
    let mut p = Vec::with_capacity(256);
    encode_snap_header(
        lsn,
        snap.next_activity,
        snap.last_order_id,
        snap.activities.len() as u64,
        snap.orders.len() as u64,
        &mut p,
    );
    encode_record(&mut buf, KIND_SNAP_HEADER, &p);
    for a in &snap.activities {
        p.clear();
        encode_snap_activity(a, &mut p);
        encode_record(&mut buf, KIND_SNAP_ACTIVITY, &p);
    }
    for o in &snap.orders {
        p.clear();
        encode_snap_order(o, &mut p);
        encode_record(&mut buf, KIND_SNAP_ORDER, &p);
    }
    let path = dir.join(snapshot_name(lsn));
    let tmp = dir.join(format!("{}.tmp", snapshot_name(lsn)));
    let mut f = std::fs::File::create(&tmp).map_err(|e| LogError::io(&tmp, e))?;
    f.write_all(&buf).map_err(|e| LogError::io(&tmp, e))?;
    if fsync {
        f.sync_all().map_err(|e| LogError::io(&tmp, e))?;
    }
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(path)
}

pub fn read_snapshot(path: &Path) -> Result<(u64, EngineSnapshot), LogError> {
    let data = std::fs::read(path).map_err(|e| LogError::io(path, e))?;
    let lsn = check_header(path, &data, SNAPSHOT_MAGIC, "snapshot")?;
    let mut off = HEADER_BYTES;
    let corrupt = |off: usize, why: String| LogError::Corrupt {
        path: path.into(),
        offset: off as u64,
        why,
    };
    let next = |off: &mut usize| -> Result<(u8, &[u8]), LogError> {
        match decode_record(&data[*off..]) {
            Decoded::Record { kind, payload, len } => {
                let at = *off;
                *off += len;
                let _ = at;
                Ok((kind, payload))
            }
            Decoded::Checksum { expected, got, .. } => Err(LogError::ChecksumMismatch {
                path: path.into(),
                offset: *off as u64,
                expected,
                got,
            }),
            other => Err(corrupt(*off, format!("{other:?}"))),
        }
    };
    let (kind, p) = next(&mut off)?;
    if kind != KIND_SNAP_HEADER {
        return Err(corrupt(
            HEADER_BYTES,
            "first record is not the snapshot header".into(),
        ));
    }
    let (hlsn, next_activity, last_order_id, n_act, n_ord) =
        decode_snap_header(p).map_err(|e| corrupt(HEADER_BYTES, e.to_string()))?;
    if hlsn != lsn {
        return Err(corrupt(
            HEADER_BYTES,
            "header records disagree on the LSN".into(),
        ));
    }
    let mut snap = EngineSnapshot {
        next_activity,
        last_order_id,
        ..EngineSnapshot::default()
    };
    for _ in 0..n_act {
        let at = off;
        let (kind, p) = next(&mut off)?;
        if kind != KIND_SNAP_ACTIVITY {
            return Err(corrupt(at, "expected a sale record".into()));
        }
        snap.activities
            .push(decode_snap_activity(p).map_err(|e| corrupt(at, e.to_string()))?);
    }
    // Orders: millions of them at start-up. Find each record's offset
    // from the length fields (cheap), then check CRCs and decode on every
    // core. Lengths that do not add up fall back to the one-by-one reader,
    // which names the exact damage.
    let offsets = order_offsets(&data, off, n_ord);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(16));
    if let (Some(offsets), true) = (offsets.as_ref(), threads > 1 && n_ord >= 100_000) {
        let per = offsets.len().div_ceil(threads);
        let parts: Vec<Result<Vec<Order>, LogError>> = std::thread::scope(|sc| {
            let hs: Vec<_> = offsets
                .chunks(per)
                .map(|chunk| {
                    let next = &next;
                    sc.spawn(move || {
                        let mut v = Vec::with_capacity(chunk.len());
                        for &at in chunk {
                            let mut o = at;
                            let (kind, p) = next(&mut o)?;
                            if kind != KIND_SNAP_ORDER {
                                return Err(corrupt(at, "expected an order record".into()));
                            }
                            v.push(decode_snap_order(p).map_err(|e| corrupt(at, e.to_string()))?);
                        }
                        Ok(v)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("snapshot decoder panicked"))
                .collect()
        });
        snap.orders.reserve_exact(n_ord as usize);
        for part in parts {
            snap.orders.extend(part?);
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
                return Err(corrupt(at, "expected an order record".into()));
            }
            snap.orders
                .push(decode_snap_order(p).map_err(|e| corrupt(at, e.to_string()))?);
        }
    }
    if off != data.len() {
        return Err(corrupt(off, "bytes after the last record".into()));
    }
    Ok((lsn, snap))
}

/// Where each of `n` records starting at `off` begins, from their length
/// fields alone; `None` if the lengths run past the data or out of bounds.
fn order_offsets(data: &[u8], mut off: usize, n: u64) -> Option<Vec<usize>> {
    let mut v = Vec::with_capacity(usize::try_from(n).ok()?.min(data.len() / RECORD_OVERHEAD));
    for _ in 0..n {
        let len = u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?) as usize;
        if len > MAX_PAYLOAD_BYTES || off + len + RECORD_OVERHEAD > data.len() {
            return None;
        }
        v.push(off);
        off += len + RECORD_OVERHEAD;
    }
    Some(v)
}

/// The newest snapshot that passes every check; a damaged newer one is
/// reported and skipped.
pub fn latest_snapshot(dir: &Path) -> Result<Option<(PathBuf, u64, EngineSnapshot)>, LogError> {
    for (_, path) in list_snapshots(dir)?.into_iter().rev() {
        match read_snapshot(&path) {
            Ok((lsn, snap)) => return Ok(Some((path, lsn, snap))),
            Err(e) => tracing::warn!(error = %e, "skipping a damaged snapshot"),
        }
    }
    Ok(None)
}

/// Keep the newest `keep` snapshots; delete segments wholly before the
/// oldest kept one, except the last `retain_segments` of those.
pub fn prune(dir: &Path, keep: usize, retain_segments: usize) -> Result<(), LogError> {
    let snaps = list_snapshots(dir)?;
    if snaps.len() > keep {
        for (_, p) in &snaps[..snaps.len() - keep] {
            std::fs::remove_file(p).map_err(|e| LogError::io(p, e))?;
        }
    }
    let snaps = list_snapshots(dir)?;
    let Some((oldest, _)) = snaps.first() else {
        return Ok(());
    };
    let segs = list_segments(dir)?;
    // Segment i ends where segment i+1 begins.
    let covered: Vec<&PathBuf> = segs
        .windows(2)
        .filter(|w| w[1].0 <= *oldest)
        .map(|w| &w[0].1)
        .collect();
    if covered.len() > retain_segments {
        for p in &covered[..covered.len() - retain_segments] {
            std::fs::remove_file(p).map_err(|e| LogError::io(*p, e))?;
        }
        sync_dir(dir)?;
    }
    Ok(())
}
