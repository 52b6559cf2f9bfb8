//! The one interface every log backend implements: append, commit,
//! roll back. The group commit ([`crate::LogWriter`]) drives it.

use crate::error::LogError;
use flashd_engine::Event;

/// An ordered, durable log of engine events. One writer appends; durability
/// is learnt from `commit`; readers go through [`crate::recover`] / [`crate::Tail`] for
/// the file backend.
pub trait OrderLog: Send {
    /// Queue a batch for writing (it may reach the OS now).
    fn append(&mut self, events: &[Event]) -> Result<(), LogError>;
    /// Make everything appended durable; returns the LSN after the last
    /// durable event.
    fn commit(&mut self) -> Result<u64, LogError>;
    /// Forget what was appended since the last successful commit.
    fn rollback(&mut self) -> Result<(), LogError>;
    /// After a rollback: what it undid may still come back on a restart
    /// (Kafka: records of the failed group may land, and the abort record
    /// that voids them is not durable yet; it goes first in the next
    /// commit). The requests of the undone group are then told that their
    /// outcome is unknown, not that nothing was changed. The file log cuts
    /// its file back at once: never.
    fn undo_pending(&self) -> bool {
        false
    }
    fn committed_lsn(&self) -> u64;
}
