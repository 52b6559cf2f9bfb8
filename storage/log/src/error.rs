use std::path::PathBuf;

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
        why: String,
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
    #[error("replaying event {lsn}: {why}")]
    Replay { lsn: u64, why: String },
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
    #[error("{path}: {why}")]
    Snapshot { path: PathBuf, why: String },
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
