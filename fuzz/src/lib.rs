//! Helpers shared by flashd's fuzz targets: how an input is cut into the
//! reads a socket would deliver, how a "framed" input becomes a segment or
//! snapshot file with valid checksums (so the fuzzer reaches the decoders
//! behind the CRC instead of dying on it), and scratch directories.

use std::path::{Path, PathBuf};

/// Segment and snapshot files' magic numbers and versions, as
/// flashd-storage writes them (its `segment` module is private; these are
/// the on-disk format, so a change there must change here too, and the
/// committed seeds made by `make_seeds` with the real writer say so).
pub const SEGMENT_MAGIC: &[u8; 8] = b"FLSHDLOG";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"FLSHDSNP";
pub const SEGMENT_VERSION: u32 = 1;

/// A file header: magic, version, base LSN, CRC32C of those 20 bytes.
pub fn file_header(magic: &[u8; 8], version: u32, base: u64) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..20].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads the input as a socket would deliver it: `cuts` gives the sizes of
/// successive reads (each 1..=256 bytes, from one byte of the schedule
/// each, reused cyclically; an empty schedule means one byte per read).
pub struct Splits<'a> {
    cuts: &'a [u8],
    i: usize,
}

impl<'a> Splits<'a> {
    pub fn new(cuts: &'a [u8]) -> Self {
        Splits { cuts, i: 0 }
    }

    /// Size of the next read.
    pub fn next_len(&mut self) -> usize {
        if self.cuts.is_empty() {
            return 1;
        }
        let n = self.cuts[self.i % self.cuts.len()] as usize + 1;
        self.i += 1;
        n
    }
}

/// One item of a framed input.
#[derive(Debug)]
pub enum Item<'a> {
    /// A record of this kind and payload, framed with a valid CRC.
    Record(u8, &'a [u8]),
    /// Raw bytes (damage, zeroes, a torn tail), written as they are.
    Raw(&'a [u8]),
    /// End this file and start another (for segments: the next segment;
    /// `Some(base)` names its base LSN, `None` continues the LSNs).
    NewFile(Option<u64>),
}

/// Kind byte that means "raw bytes follow" in a framed input.
pub const ITEM_RAW: u8 = 0xFF;
/// Kind byte that means "start a new file".
pub const ITEM_NEW_FILE: u8 = 0xFE;

/// Parse a framed input: items of `kind u8 | len u16 LE | len bytes`
/// (a length past the end takes what is left). Kind 0xFF is raw bytes,
/// 0xFE a new file (len 8: its base LSN; otherwise continue the LSNs).
pub fn items(mut data: &[u8]) -> Vec<Item<'_>> {
    let mut out = Vec::new();
    while data.len() >= 3 {
        let kind = data[0];
        let len = u16::from_le_bytes([data[1], data[2]]) as usize;
        let rest = &data[3..];
        let len = len.min(rest.len());
        let (body, next) = rest.split_at(len);
        out.push(match kind {
            ITEM_RAW => Item::Raw(body),
            ITEM_NEW_FILE => Item::NewFile(<[u8; 8]>::try_from(body).ok().map(u64::from_le_bytes)),
            k => Item::Record(k, body),
        });
        data = next;
    }
    out
}

/// Append an item in the framed-input format (for seeds).
pub fn push_item(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let len = u16::try_from(body.len()).expect("seed items fit a u16 length");
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
}

/// A scratch directory of this process, emptied on creation and removed
/// on drop. In /dev/shm when it exists: the targets write a file per run.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("flashd-fuzz-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Every file's name and bytes, sorted: to see whether a reader
    /// changed anything.
    pub fn contents(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&self.0)
            .expect("read the scratch directory")
            .map(|e| {
                let p = e.expect("a directory entry").path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap_or_default())
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
