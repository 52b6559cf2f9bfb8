//! Snapshots: the whole engine state at an LSN, so start-up replays only
//! the log's tail. Written atomically (temp file, fsync, rename, fsync the
//! directory); a snapshot that fails any check is skipped for an older one.

use std::io::Write;
use std::path::{Path, PathBuf};

use flashd_engine::{Engine, EngineSnapshot, Order};

use crate::codec::*;
use crate::error::LogError;
use crate::record::{decode_record, encode_record, Decoded, MAX_PAYLOAD_BYTES, RECORD_OVERHEAD};
use crate::segment::{
    check_header, header, list_segments, sync_dir, HEADER_BYTES, SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
};

/// Orders per block record: ~600 KB, under the record size limit, and
/// enough blocks in a big snapshot to share among the cores.
const ORDERS_PER_BLOCK: usize = 8192;
const _: () = assert!(ORDERS_PER_BLOCK * ORDER_BYTES <= MAX_PAYLOAD_BYTES);

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
        encode_snap_header(
            lsn,
            meta.next_activity,
            meta.last_order_id,
            meta.activities.len() as u64,
            n_ord,
            &mut p,
        );
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
            return Err(LogError::Snapshot {
                path: tmp.clone(),
                why: format!(
                    "{} orders written but {n_ord} counted: the engine changed while it was written",
                    w.orders
                ),
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

/// Suffix of a snapshot being written; renamed away when it is complete.
pub const TMP_SUFFIX: &str = ".tmp";

/// Remove snapshots a crash left half-written (`snap-*.snap.tmp`): they
/// are never read, and each can be as big as a whole snapshot. Only at
/// start, under the directory's lock ([`crate::DirLock`]), before the
/// snapshotter runs: at any other time one may be a snapshot being
/// written. Returns what was removed.
pub fn remove_stale_temps(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut removed = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(LogError::io(dir, e)),
    };
    for entry in rd {
        let path = entry.map_err(|e| LogError::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with("snap-") && name.ends_with(&format!(".snap{TMP_SUFFIX}")) {
            std::fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            tracing::info!(path = %path.display(), "removed a snapshot a crash left half-written");
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    removed.sort();
    Ok(removed)
}

/// A snapshot file's bytes, mapped rather than read: start-up then reads
/// them straight out of the page cache, without copying half a gigabyte
/// into a fresh buffer first (that copy and its page faults were a quarter
/// of start-up). Snapshots are only ever replaced by rename and removed by
/// unlink, never truncated in place, so the mapping stays valid.
///
/// Lean (the follower's load, in the background): not populated up front,
/// and each block's pages are let go once read ([`FileBytes::done_with`]),
/// so the mapping adds a block or so to the process's resident memory
/// instead of the whole file (hundreds of MB at millions of orders, on
/// top of the live engine and the follower's own).
struct FileBytes {
    ptr: *mut libc::c_void,
    len: usize,
    lean: bool,
}

// SAFETY: a read-only private mapping, never written through.
unsafe impl Send for FileBytes {}
unsafe impl Sync for FileBytes {}

impl FileBytes {
    fn open(path: &Path, lean: bool) -> Result<FileBytes, LogError> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).map_err(|e| LogError::io(path, e))?;
        let len = f.metadata().map_err(|e| LogError::io(path, e))?.len() as usize;
        if len == 0 {
            return Ok(FileBytes {
                ptr: std::ptr::null_mut(),
                len: 0,
                lean,
            });
        }
        // SAFETY: a fresh read-only mapping of a file we opened; checked
        // for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                if lean {
                    libc::MAP_PRIVATE
                } else {
                    libc::MAP_PRIVATE | libc::MAP_POPULATE
                },
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(LogError::io(path, std::io::Error::last_os_error()));
        }
        Ok(FileBytes { ptr, len, lean })
    }

    /// A lean mapping lets the pages of `[off, off + n)` go (they are read
    /// again from the page cache if touched again). Widened to whole
    /// pages: a shared edge page is at worst read twice.
    fn done_with(&self, off: usize, n: usize) {
        if !self.lean || self.len == 0 {
            return;
        }
        // SAFETY: sysconf has no memory arguments.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096);
        let start = off.min(self.len) & !(page - 1);
        let end = (off.saturating_add(n).min(self.len) + page - 1) & !(page - 1);
        if end > start {
            // SAFETY: the range lies in (whole pages of) this mapping, which
            // is private, read-only and never written: dropping its pages
            // changes no byte a reader sees (the file is not modified while
            // mapped: snapshots are replaced by rename, under the directory
            // lock), it only makes the next read fault them back in.
            unsafe {
                libc::madvise(
                    self.ptr.cast::<u8>().add(start).cast(),
                    end - start,
                    libc::MADV_DONTNEED,
                )
            };
        }
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for FileBytes {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly what `open` mapped.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

/// What precedes the orders in a snapshot.
struct Front {
    lsn: u64,
    version: u32,
    /// Sales, next sale id and last order id; no orders.
    meta: EngineSnapshot,
    n_ord: u64,
    /// Orders per engine stripe (format 2), to size the stripes up front.
    stripe_orders: Option<Vec<u32>>,
    /// Where the orders begin.
    off: usize,
}

fn record_at<'d>(path: &Path, data: &'d [u8], off: &mut usize) -> Result<(u8, &'d [u8]), LogError> {
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
        other => Err(corrupt_at(path, *off, format!("{other:?}"))),
    }
}

fn corrupt_at(path: &Path, off: usize, why: String) -> LogError {
    LogError::Corrupt {
        path: path.into(),
        offset: off as u64,
        why,
    }
}

fn read_front(path: &Path, data: &[u8]) -> Result<Front, LogError> {
    let (lsn, version) =
        check_header(path, data, SNAPSHOT_MAGIC, 1..=SNAPSHOT_VERSION, "snapshot")?;
    let mut off = HEADER_BYTES;
    let (kind, p) = record_at(path, data, &mut off)?;
    if kind != KIND_SNAP_HEADER {
        return Err(corrupt_at(
            path,
            HEADER_BYTES,
            "first record is not the snapshot header".into(),
        ));
    }
    let (hlsn, next_activity, last_order_id, n_act, n_ord) =
        decode_snap_header(p).map_err(|e| corrupt_at(path, HEADER_BYTES, e.to_string()))?;
    if hlsn != lsn {
        return Err(corrupt_at(
            path,
            HEADER_BYTES,
            "header records disagree on the LSN".into(),
        ));
    }
    let mut meta = EngineSnapshot {
        next_activity,
        last_order_id,
        ..EngineSnapshot::default()
    };
    for _ in 0..n_act {
        let at = off;
        let (kind, p) = record_at(path, data, &mut off)?;
        if kind != KIND_SNAP_ACTIVITY {
            return Err(corrupt_at(path, at, "expected a sale record".into()));
        }
        meta.activities
            .push(decode_snap_activity(p).map_err(|e| corrupt_at(path, at, e.to_string()))?);
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
                    "stripe counts of a partial length".into(),
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
        return Err(corrupt_at(path, off, "bytes after the last record".into()));
    }
    Ok((front.lsn, snap))
}

/// A block of order rows: (offset of its record, index of its first
/// order, orders in it).
type Block = (usize, usize, usize);

/// Find the blocks of `n_ord` orders from `off` by their length fields;
/// returns them and where they end.
fn index_blocks(
    path: &Path,
    data: &[u8],
    mut off: usize,
    n_ord: u64,
) -> Result<(Vec<Block>, usize), LogError> {
    let corrupt = |off: usize, why: String| corrupt_at(path, off, why);
    let mut blocks: Vec<Block> = Vec::new();
    let mut total = 0usize;
    while (total as u64) < n_ord {
        let at = off;
        let len = data
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corrupt(at, "snapshot ends before its last order".into()))?;
        if len > MAX_PAYLOAD_BYTES || off + len + RECORD_OVERHEAD > data.len() {
            // Let the record reader name the damage (length or checksum).
            return Err(match decode_record(&data[off..]) {
                Decoded::Checksum { expected, got, .. } => LogError::ChecksumMismatch {
                    path: path.into(),
                    offset: at as u64,
                    expected,
                    got,
                },
                other => corrupt(at, format!("{other:?}")),
            });
        }
        if len == 0 || len % ORDER_BYTES != 0 {
            return Err(corrupt(at, format!("an order block of {len} bytes")));
        }
        let n = len / ORDER_BYTES;
        if (total + n) as u64 > n_ord {
            return Err(corrupt(at, "more orders than the header says".into()));
        }
        blocks.push((at, total, n));
        total += n;
        off += len + RECORD_OVERHEAD;
    }
    Ok((blocks, off))
}

/// Blocks shared among up to `threads` threads, about the same number of
/// orders each, whole blocks only.
fn split_blocks(blocks: &[Block], threads: usize) -> Vec<&[Block]> {
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

fn decode_threads(n_ord: usize) -> usize {
    if n_ord >= 100_000 {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
    } else {
        1
    }
}

/// One block's rows, after its CRC and kind are checked.
fn block_rows<'d>(path: &Path, data: &'d [u8], at: usize) -> Result<&'d [u8], LogError> {
    let mut off = at;
    let (kind, payload) = record_at(path, data, &mut off)?;
    if kind != KIND_SNAP_ORDERS {
        return Err(corrupt_at(path, at, "expected a block of orders".into()));
    }
    Ok(payload)
}

/// Run `f` over the jobs on their own threads (inline for one job); the
/// first error in job order wins.
fn on_threads<T, F>(jobs: Vec<T>, f: F) -> Result<(), LogError>
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

fn verify(path: &Path, lean: bool) -> Result<VerifiedSnapshot, LogError> {
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
        return Err(corrupt_at(path, end, "bytes after the last record".into()));
    }
    let parts = split_blocks(&blocks, decode_threads(front.n_ord as usize));
    let (bytes, fb): (&[u8], &FileBytes) = (&data, &data);
    on_threads(parts, |part| {
        for &(at, _, n) in part {
            let rows = block_rows(path, bytes, at)?;
            for (k, row) in rows.chunks_exact(ORDER_BYTES).enumerate() {
                // The two enum bytes: all a CRC-clean row can still get wrong.
                if row[32] > 2 || row[33] > 2 {
                    let row: &[u8; ORDER_BYTES] = row.try_into().expect("exact chunks");
                    let e = decode_order_row(row)
                        .err()
                        .map_or_else(|| "bad row".to_string(), |e| e.to_string());
                    return Err(corrupt_at(path, at, format!("order row {k}: {e}")));
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
        let replay = |e: flashd_engine::ReplayError| LogError::Replay { lsn, why: e.0 };
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
                                    .map_err(|e| corrupt_at(path, at, e.to_string()))?,
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
                let o = decode_order_row(row)
                    .map_err(|e| corrupt_at(path, at, format!("order {}: {e}", first + k)))?;
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

/// Format 1: one record per order. Big ones are decoded on every core.
fn read_orders_v1(
    path: &Path,
    data: &[u8],
    mut off: usize,
    n_ord: u64,
    out: &mut Vec<Order>,
) -> Result<usize, LogError> {
    let corrupt = |off: usize, why: String| corrupt_at(path, off, why);
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
                                return Err(corrupt(at, "expected an order record".into()));
                            }
                            v.push(
                                decode_snap_order_v1(p).map_err(|e| corrupt(at, e.to_string()))?,
                            );
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
                return Err(corrupt(at, "expected an order record".into()));
            }
            out.push(decode_snap_order_v1(p).map_err(|e| corrupt(at, e.to_string()))?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use flashd_engine::{ActivitySnapshot, ActivitySpec, CancelReason, OrderStatus, RequestKey};

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flashd-snap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A format-1 snapshot as the previous release wrote it, byte by byte.
    fn v1_file(lsn: u64, act: &ActivitySnapshot, orders: &[(Order, &str)]) -> Vec<u8> {
        let mut buf = header(SNAPSHOT_MAGIC, 1, lsn).to_vec();
        let mut p = Vec::new();
        encode_snap_header(lsn, 2, 99, 1, orders.len() as u64, &mut p);
        encode_record(&mut buf, KIND_SNAP_HEADER, &p);
        p.clear();
        encode_snap_activity(act, &mut p);
        encode_record(&mut buf, KIND_SNAP_ACTIVITY, &p);
        for (o, rid) in orders {
            p.clear();
            p.extend_from_slice(&o.id.to_le_bytes());
            p.extend_from_slice(&o.activity_id.to_le_bytes());
            p.extend_from_slice(&o.user_id.to_le_bytes());
            p.extend_from_slice(&o.quantity.to_le_bytes());
            p.extend_from_slice(&o.amount_cents.to_le_bytes());
            p.push(o.status as u8);
            p.extend_from_slice(&(rid.len() as u16).to_le_bytes());
            p.extend_from_slice(rid.as_bytes());
            p.extend_from_slice(&o.created_at.to_le_bytes());
            p.extend_from_slice(&o.expires_at.to_le_bytes());
            p.extend_from_slice(&o.updated_at.to_le_bytes());
            p.push(match o.cancel_reason {
                None => 0,
                Some(CancelReason::User) => 1,
                Some(CancelReason::Timeout) => 2,
            });
            encode_record(&mut buf, KIND_SNAP_ORDER, &p);
        }
        buf
    }

    /// Resident file-backed memory of this process, in bytes.
    fn rss_file() -> usize {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb: usize = s
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    #[test]
    fn a_lean_load_keeps_a_block_of_the_file_resident_not_the_file() {
        let d = tmpdir("lean");
        let orders: Vec<Order> = (1..=200_000u64)
            .map(|id| Order {
                id,
                activity_id: 1,
                user_id: id * 3,
                quantity: 1,
                amount_cents: 5,
                status: OrderStatus::Created,
                request_key: RequestKey::of(&id.to_string()),
                created_at: 1,
                expires_at: 2,
                updated_at: 1,
                cancel_reason: None,
            })
            .collect();
        let e = Engine::new(flashd_engine::EngineConfig::default());
        e.load(&EngineSnapshot {
            next_activity: 1,
            last_order_id: 200_000,
            activities: vec![],
            orders,
        })
        .unwrap();
        let want = e.export();
        let p = write_engine_snapshot(&d, 9, &e, false).unwrap();
        let file = std::fs::metadata(&p).unwrap().len() as usize;
        // Populated: the whole file is resident while it is held.
        let before = rss_file();
        let full = verify(&p, false).unwrap();
        let full_rss = rss_file().saturating_sub(before);
        drop(full);
        assert!(full_rss >= file * 3 / 4, "{full_rss} of {file}");
        // Lean: verified and loaded with at most a few blocks resident.
        let before = rss_file();
        let v = verify(&p, true).unwrap();
        let lean_rss = rss_file().saturating_sub(before);
        let f = Engine::new(flashd_engine::EngineConfig::default());
        v.load_into(&f).unwrap();
        assert!(lean_rss <= file / 4, "{lean_rss} of {file}");
        assert!(f.export() == want, "a lean load differs");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_format_1_snapshot_still_loads_and_a_future_one_is_refused() {
        let d = tmpdir("v1");
        let act = ActivitySnapshot {
            id: 1,
            spec: ActivitySpec {
                sku_id: "S".into(),
                name: "N".into(),
                price_cents: 5,
                stock: 10,
                start_at: 0,
                end_at: 100,
                per_user_limit: 2,
            },
            created_at: 0,
            remaining: 8,
            sold: 1,
            reserved: 1,
            void: false,
        };
        let order = |id, user, status, reason, rid: &str| Order {
            id,
            activity_id: 1,
            user_id: user,
            quantity: 1,
            amount_cents: 5,
            status,
            request_key: RequestKey::of(rid),
            created_at: 1,
            expires_at: 50,
            updated_at: 2,
            cancel_reason: reason,
        };
        let orders = [
            (order(98, 7, OrderStatus::Paid, None, "a-1"), "a-1"),
            (order(99, 8, OrderStatus::Created, None, "b-1"), "b-1"),
            (
                order(
                    97,
                    8,
                    OrderStatus::Cancelled,
                    Some(CancelReason::User),
                    "b-0",
                ),
                "b-0",
            ),
        ];
        let p = d.join(snapshot_name(42));
        std::fs::write(&p, v1_file(42, &act, &orders)).unwrap();
        let (lsn, snap) = read_snapshot(&p).unwrap();
        assert_eq!(lsn, 42);
        assert_eq!((snap.next_activity, snap.last_order_id), (2, 99));
        assert_eq!(snap.activities, vec![act.clone()]);
        let want: Vec<Order> = orders.iter().map(|(o, _)| *o).collect();
        assert_eq!(snap.orders, want);

        // Written again, it is format 2 and reads back the same.
        let p2 = write_snapshot(&d, 43, &snap, false).unwrap();
        let data = std::fs::read(&p2).unwrap();
        assert_eq!(u32::from_le_bytes(data[8..12].try_into().unwrap()), 2);
        assert_eq!(read_snapshot(&p2).unwrap().1, snap);

        // A version from the future: refused, naming both versions.
        let mut future = data.clone();
        future[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c::crc32c(&future[..20]);
        future[20..24].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&p2, &future).unwrap();
        match read_snapshot(&p2) {
            Err(LogError::Version {
                found, supported, ..
            }) => assert_eq!((found, supported), (3, 2)),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn blocks_that_do_not_add_up_are_refused_with_their_offset() {
        let d = tmpdir("blocks");
        let o = Order {
            id: 1,
            activity_id: 1,
            user_id: 1,
            quantity: 1,
            amount_cents: 1,
            status: OrderStatus::Created,
            request_key: RequestKey::of("r"),
            created_at: 0,
            expires_at: 0,
            updated_at: 0,
            cancel_reason: None,
        };
        let snap = EngineSnapshot {
            next_activity: 1,
            last_order_id: 3,
            activities: vec![],
            orders: (1..=3).map(|id| Order { id, ..o }).collect(),
        };
        let p = write_snapshot(&d, 5, &snap, false).unwrap();
        let good = std::fs::read(&p).unwrap();
        // The header promises one more order than the blocks hold.
        let mut data = good[..HEADER_BYTES].to_vec();
        let mut h = Vec::new();
        encode_snap_header(5, 1, 3, 0, 4, &mut h);
        encode_record(&mut data, KIND_SNAP_HEADER, &h);
        let first_block = HEADER_BYTES + h.len() + RECORD_OVERHEAD;
        data.extend_from_slice(&good[first_block..]);
        std::fs::write(&p, &data).unwrap();
        match read_snapshot(&p) {
            Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset as usize, data.len()),
            other => panic!("{other:?}"),
        }
        // A block whose length is not a whole number of rows.
        let mut data = good.clone();
        let mut rows = Vec::new();
        for o in &snap.orders {
            encode_order_row(o, &mut rows);
        }
        rows.pop();
        data.truncate(first_block);
        encode_record(&mut data, KIND_SNAP_ORDERS, &rows);
        std::fs::write(&p, &data).unwrap();
        match read_snapshot(&p) {
            Err(LogError::Corrupt { offset, why, .. }) => {
                assert_eq!(offset as usize, first_block, "{why}")
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
