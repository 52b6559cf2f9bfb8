//! Segment files: `{base_lsn:020}.seg`, a header, then records. The base
//! LSN is the sequence number of the first event in the file, so names sort
//! in log order and a gap between files is visible from the names alone.

use std::path::{Path, PathBuf};

use crate::error::{Corruption, LogError};

pub const SEGMENT_MAGIC: &[u8; 8] = b"FLSHDLOG";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"FLSHDSNP";
/// Segment files' format.
pub const FORMAT_VERSION: u32 = 1;
/// Snapshot files' format. 2: orders in fixed-width blocks, request ids as
/// their hash. 1 (records per order, request id strings) is still read, so
/// an upgrade starts from the snapshot it finds.
pub const SNAPSHOT_VERSION: u32 = 2;
/// magic 8 + version 4 + base lsn 8 + crc 4.
pub const HEADER_BYTES: usize = 24;

pub fn segment_name(base_lsn: u64) -> String {
    format!("{base_lsn:020}.seg")
}

pub fn header(magic: &[u8; 8], version: u32, base_lsn: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..20].copy_from_slice(&base_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Check a header whose version must be in `versions`; returns the base
/// LSN and the version.
pub fn check_header(
    path: &Path,
    buf: &[u8],
    magic: &[u8; 8],
    versions: std::ops::RangeInclusive<u32>,
    what: &'static str,
) -> Result<(u64, u32), LogError> {
    if buf.len() < HEADER_BYTES {
        return Err(LogError::Corrupt {
            path: path.into(),
            offset: 0,
            why: Corruption::ShortFile { len: buf.len() },
        });
    }
    if &buf[..8] != magic {
        return Err(LogError::BadMagic {
            path: path.into(),
            what,
        });
    }
    let version = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    if !versions.contains(&version) {
        return Err(LogError::Version {
            path: path.into(),
            found: version,
            supported: *versions.end(),
        });
    }
    let expected = u32::from_le_bytes(buf[20..24].try_into().expect("4 bytes"));
    let got = crc32c::crc32c(&buf[..20]);
    if expected != got {
        return Err(LogError::ChecksumMismatch {
            path: path.into(),
            offset: 0,
            expected,
            got,
        });
    }
    Ok((
        u64::from_le_bytes(buf[12..20].try_into().expect("8 bytes")),
        version,
    ))
}

/// Segments in `dir`, sorted by base LSN. Files that are not segments are
/// ignored; a `.seg` file whose name is not a number is an error.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LogError::io(dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".seg") {
            let base = stem.parse::<u64>().map_err(|_| LogError::Corrupt {
                path: path.clone(),
                offset: 0,
                why: Corruption::Fixed("segment name is not an LSN"),
            })?;
            out.push((base, path));
        }
    }
    out.sort();
    Ok(out)
}

/// fsync a directory so a created, renamed or removed entry is durable.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}
