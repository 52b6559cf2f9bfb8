//! flashd-redis: Redis as the stock authority of a sale shared by many
//! flashd nodes (issue 16). The design, the key layout and the measured
//! cost are in `docs/cluster.md`.
//!
//! It owns the key layout of a sale in Redis ([`keys`]), the Lua scripts
//! that decide purchases, payments, cancels and timeouts in batches
//! ([`script`]), the typed inputs and outcomes ([`Buy`], [`Decision`],
//! [`Settle`], [`Settled`], [`Claim`]), the client that talks to Redis on
//! a thread of its own ([`RedisClient`]), the sales every node serves
//! (ids from one sequence, a sale's names for nodes that did not create
//! it, finding an order by its buyer, the lease on a node id: `catalog`),
//! the durability check at start ([`DurabilityReport`]), and reading a sale whole, folding engine events
//! into the same shape, and repairing Redis from them ([`SaleState`],
//! [`fold_events`]).
//!
//! What it must never do: decide anything outside Redis (the scripts are
//! the one place stock moves; a Redis that cannot be reached is an error,
//! never a guess), make a round trip per order (one script call decides a
//! batch), block a reactor thread ([`Pending::wait`] blocks: call it from a
//! worker), write the order log, or pull in an async runtime.
//!
//! Invariants, held by the scripts because Redis runs one script at a
//! time (checked by [`SaleState::check`] in the tests):
//! 1. `sold + reserved <= stock`: a unit is never sold twice.
//! 2. A buyer never holds more than the sale's per-user limit, whatever
//!    node their requests land on.
//! 3. One `(user, request_id)` yields at most one claim; a retry on any
//!    node gets that claim back.
//! 4. Claims move only `C → P`, `C → X` (buyer) or `C → T` (timeout); a
//!    cancel or timeout gives the units back exactly once, and every `C`
//!    claim is named by a due entry whose deadline is at or after its own.
//! 5. Nothing is acknowledged before Redis answered (and, with
//!    `appendfsync always`, fsynced its AOF).
//!
//! Not here: what a node does with the decisions (it logs them and answers
//! after both: `bin/src/cluster/`), `flashd reconcile` (`bin`), the
//! multi-node fault test. `docs/cluster.md` has the whole design.

mod catalog;
mod client;
mod decision;
mod durability;
mod error;
pub mod keys;
mod reconcile;
pub mod script;

pub use catalog::FIND_SALES_MAX;
pub use client::{ClientConfig, Pending, RedisClient};
pub use decision::{node_of, Buy, Claim, ClaimStatus, Decision, Settle, Settled};
pub use durability::{AppendFsync, DurabilityReport, Guarantee};
pub use error::RedisError;
pub use reconcile::{fold_events, SaleSpec, SaleState};
