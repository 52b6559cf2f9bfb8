use std::path::PathBuf;

use flashd_engine::ReplayError;
use thiserror::Error;

/// A payload that does not decode (its CRC was fine: a format bug or a
/// version mismatch, not a torn write).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("payload truncated")]
    Truncated,
    #[error("payload has trailing bytes")]
    TrailingBytes,
    #[error("invalid UTF-8 in a string")]
    BadUtf8,
    #[error("invalid {0}")]
    BadEnum(&'static str),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
}

/// Why a file or record failed a check other than its checksum
/// ([`LogError::Corrupt`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Corruption {
    /// A CRC-clean payload that does not decode: a format bug or a version
    /// mismatch, not a torn write.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Order `index` of a snapshot (counted from its first) does not decode.
    #[error("order {index}: {source}")]
    Order { index: u64, source: DecodeError },
    #[error("{len} bytes, shorter than a header")]
    ShortFile { len: usize },
    #[error("header says base {header}, name says {name}")]
    BaseMismatch { header: u64, name: u64 },
    #[error("segment overlaps the previous one (starts at {base}, expected {expected})")]
    Overlap { base: u64, expected: u64 },
    #[error("record length {0} is impossible")]
    BadLength(u32),
    #[error("an order block of {0} bytes")]
    BlockLength(usize),
    /// The data ends inside a record.
    #[error("incomplete record")]
    Incomplete,
    /// Zeroes where a record should start.
    #[error("zeroed record")]
    Zeroes,
    /// A reason that names nothing but itself.
    #[error("{0}")]
    Fixed(&'static str),
    /// Damage at the end of the last segment that is not a torn write:
    /// a record with a valid checksum follows it.
    #[error(
        "{reason}; a valid record follows at offset {at}, so this is damage, not a torn write"
    )]
    ValidAfter { reason: Box<Corruption>, at: u64 },
    /// Damage at the end of the last segment whose tail could not be
    /// cheaply shown to hold no valid record (see `TAIL_SCAN_CRC_BYTES_MAX`).
    #[error("{reason}; the bytes after it cannot be cheaply shown to hold no valid record, so it is not taken for a torn write")]
    Unscanned { reason: Box<Corruption> },
}

impl Corruption {
    /// A record that [`crate::decode_record`] did not return whole (not a
    /// checksum mismatch, which has its own error).
    pub(crate) fn of_record(d: &crate::record::Decoded<'_>) -> Corruption {
        use crate::record::Decoded;
        match d {
            Decoded::Incomplete => Corruption::Incomplete,
            Decoded::Zeroes => Corruption::Zeroes,
            Decoded::BadLength(n) => Corruption::BadLength(*n),
            Decoded::Record { .. } | Decoded::Checksum { .. } => {
                Corruption::Fixed("not a damaged record")
            }
        }
    }
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: checksum mismatch at offset {offset} (expected {expected:#010x}, got {got:#010x})"
    )]
    ChecksumMismatch {
        path: PathBuf,
        offset: u64,
        expected: u32,
        got: u32,
    },
    #[error("{path}: corrupt record at offset {offset}: {why}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: Corruption,
    },
    #[error("{path}: not a flashd {what} (bad magic)")]
    BadMagic { path: PathBuf, what: &'static str },
    #[error("{path}: format version {found}, this flashd reads version {supported}")]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("log is missing events {from}..{to}: segment {path} starts at {to}")]
    MissingSegment { path: PathBuf, from: u64, to: u64 },
    #[error("snapshot {path} covers events up to {snapshot_lsn} but the log ends at {log_end}: events are missing")]
    SnapshotAhead {
        path: PathBuf,
        snapshot_lsn: u64,
        log_end: u64,
    },
    /// An event (or a snapshot) that does not apply to the engine: the
    /// log is not this engine's history.
    #[error("replaying event {lsn}: {source}")]
    Replay { lsn: u64, source: ReplayError },
    /// A failure of a backend that lives in its own crate (the Kafka
    /// producer: `flashd_kafka::KafkaLogError`), kept typed: callers that
    /// care downcast `source`.
    #[error("{backend}: {source}")]
    Backend {
        backend: &'static str,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error(
        "{path}: held by another process ({}): two processes on one directory corrupt each other's log and snapshots",
        holder(.pid)
    )]
    Locked { path: PathBuf, pid: Option<u32> },
    /// The engine a snapshot was streamed from changed while it was
    /// written (it must be one no one else mutates): the file is removed.
    #[error("{path}: {written} orders written but {counted} counted: the engine changed while it was written")]
    SnapshotChanged {
        path: PathBuf,
        written: u64,
        counted: u64,
    },
    #[error("injected fault: {0}")]
    Injected(&'static str),
}

/// Who holds a [`LogError::Locked`] lock, in words.
fn holder(pid: &Option<u32>) -> String {
    match pid {
        Some(p) => format!("pid {p}"),
        None => "pid not yet written".into(),
    }
}

impl LogError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> LogError {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}
