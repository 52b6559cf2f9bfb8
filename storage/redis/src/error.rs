//! Why a call to Redis gave no decision. Every variant names the thing at
//! fault (the address, the operation, the sale); none is a guess: the
//! caller answers `503` and the buyer retries with the same request id.

use std::time::Duration;

use flashd_engine::ActivityId;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL does not name a Redis.
    #[error("redis url {url:?}: {source}")]
    Url {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// No connection could be made (refused, unreachable, or not within
    /// the timeout).
    #[error("redis at {addr}: cannot connect: {source}")]
    Connect {
        addr: String,
        #[source]
        source: redis::RedisError,
    },
    /// No answer within the configured timeout (in the queue, on the
    /// wire, or in Redis).
    #[error("redis at {addr}: {op} got no answer within {timeout:?}")]
    Timeout {
        addr: String,
        op: &'static str,
        timeout: Duration,
    },
    /// The command failed: a dropped connection, or an error Redis
    /// answered. Whether a decision was made is unknown: a retry with the
    /// same request id finds out.
    #[error("redis at {addr}: {op} failed: {source}")]
    Command {
        addr: String,
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    /// The client's queue is full: the caller is sending faster than
    /// Redis answers.
    #[error("redis client: queue of {capacity} full, {op} refused")]
    Busy { op: &'static str, capacity: usize },
    /// The client's thread has stopped.
    #[error("redis client: its thread is gone ({op})")]
    Closed { op: &'static str },
    /// Redis answered something the scripts never return.
    #[error("redis: {op} answered something unexpected: {what}")]
    Protocol { op: &'static str, what: String },
    /// A sale of this id exists in Redis with another spec.
    #[error("redis: sale {sale} exists with another spec ({what})")]
    SaleConflict { sale: ActivityId, what: String },
    /// The events given to a repair do not make a sale.
    #[error("repair of sale {sale}: {what}")]
    Repair { sale: ActivityId, what: String },
}

impl RedisError {
    pub(crate) fn protocol(op: &'static str, what: String) -> RedisError {
        RedisError::Protocol { op, what }
    }

    /// Whether a script this call sent may have run (and decided) though
    /// no answer came back: the caller must then tell its client the
    /// outcome is unknown, never that nothing changed. Only a call that
    /// provably never reached Redis is `false`: a connection that could
    /// not be made, a full queue, a bad URL, or a refusal made before
    /// sending (a conflicting sale, a repair's own check). A timeout may
    /// have fired while the script ran; a dropped connection, an unexpected
    /// answer or a client thread that died may follow a script that ran.
    pub fn may_have_decided(&self) -> bool {
        match self {
            RedisError::Timeout { .. }
            | RedisError::Command { .. }
            | RedisError::Closed { .. }
            | RedisError::Protocol { .. } => true,
            RedisError::Url { .. }
            | RedisError::Connect { .. }
            | RedisError::Busy { .. }
            | RedisError::SaleConflict { .. }
            | RedisError::Repair { .. } => false,
        }
    }

    /// Whether the error says Redis could not be reached or did not answer
    /// in time (as opposed to a bad answer or a full queue).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RedisError::Connect { .. } | RedisError::Timeout { .. } | RedisError::Command { .. }
        )
    }
}
