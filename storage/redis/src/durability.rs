//! What Redis keeps of what it decided, checked at start: `appendonly` and
//! `appendfsync` (`CONFIG GET`).
//!
//! The guarantee "nothing a client heard `201` for is lost when Redis is
//! killed with -9" needs `appendonly yes` and `appendfsync always` (every
//! write fsynced to the AOF before the reply). `everysec` loses up to the
//! last second of decisions, `no` whatever the OS had not flushed, and no
//! AOF everything since the last RDB save. A lost decision is a unit sold
//! twice: the log still holds the order Redis forgot.

use std::fmt;

use crate::client::Session;
use crate::error::RedisError;

/// Redis's `appendfsync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendFsync {
    Always,
    EverySec,
    No,
    /// A value this crate does not know.
    Other(String),
}

/// What a Redis crash may lose, from its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// `appendonly yes`, `appendfsync always`: nothing acknowledged.
    NothingAcknowledgedLost,
    /// `appendfsync everysec`: up to about a second of decisions.
    UpToOneSecond,
    /// `appendfsync no`: whatever the OS had not written back.
    UpToOsFlush,
    /// `appendonly no`: everything since the last snapshot (RDB), if any.
    NoAppendOnlyFile,
}

/// Redis's durability settings as it reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurabilityReport {
    pub appendonly: bool,
    pub appendfsync: AppendFsync,
}

impl DurabilityReport {
    /// From the values of `appendonly` and `appendfsync`.
    pub fn from_settings(appendonly: &str, appendfsync: &str) -> DurabilityReport {
        DurabilityReport {
            appendonly: appendonly.eq_ignore_ascii_case("yes"),
            appendfsync: match appendfsync.to_ascii_lowercase().as_str() {
                "always" => AppendFsync::Always,
                "everysec" => AppendFsync::EverySec,
                "no" => AppendFsync::No,
                other => AppendFsync::Other(other.to_owned()),
            },
        }
    }

    pub fn guarantee(&self) -> Guarantee {
        match (self.appendonly, &self.appendfsync) {
            (false, _) => Guarantee::NoAppendOnlyFile,
            (true, AppendFsync::Always) => Guarantee::NothingAcknowledgedLost,
            (true, AppendFsync::EverySec) => Guarantee::UpToOneSecond,
            (true, AppendFsync::No | AppendFsync::Other(_)) => Guarantee::UpToOsFlush,
        }
    }

    /// Whether a Redis killed with -9 keeps every decision it answered.
    pub fn is_durable(&self) -> bool {
        self.guarantee() == Guarantee::NothingAcknowledgedLost
    }
}

impl fmt::Display for DurabilityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fsync = match &self.appendfsync {
            AppendFsync::Always => "always",
            AppendFsync::EverySec => "everysec",
            AppendFsync::No => "no",
            AppendFsync::Other(s) => s.as_str(),
        };
        let onoff = if self.appendonly { "yes" } else { "no" };
        let what = match self.guarantee() {
            Guarantee::NothingAcknowledgedLost => {
                "every decision is fsynced before its answer: a crash loses none"
            }
            Guarantee::UpToOneSecond => {
                "a crash may lose up to the last second of decisions (units sold twice); set appendfsync always"
            }
            Guarantee::UpToOsFlush => {
                "a crash may lose what the OS had not flushed (units sold twice); set appendfsync always"
            }
            Guarantee::NoAppendOnlyFile => {
                "no append-only file: a crash loses every decision since the last snapshot; set appendonly yes, appendfsync always"
            }
        };
        write!(f, "appendonly {onoff}, appendfsync {fsync}: {what}")
    }
}

/// `CONFIG GET appendonly` and `appendfsync`.
pub(crate) fn check(s: &mut Session) -> Result<DurabilityReport, RedisError> {
    let get = |s: &mut Session, name: &str| -> Result<String, RedisError> {
        let pair: Vec<String> = s.query("durability", redis::cmd("CONFIG").arg("GET").arg(name))?;
        match pair.as_slice() {
            [_, v] => Ok(v.clone()),
            _ => Err(RedisError::protocol(
                "durability",
                format!("CONFIG GET {name} answered {pair:?}"),
            )),
        }
    };
    let appendonly = get(s, "appendonly")?;
    let appendfsync = get(s, "appendfsync")?;
    Ok(DurabilityReport::from_settings(&appendonly, &appendfsync))
}
