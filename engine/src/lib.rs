//! flashd-engine: the sale domain, pure and deterministic.
//!
//! It owns activities (sales), the compare-and-swap stock ledger, per-user
//! holdings and limits, idempotency keys, the order lifecycle
//! (`CREATED → PAID`, `CREATED → CANCELLED` by the buyer or by payment
//! timeout), order ids and rate-limit buckets.
//!
//! What it must never do: I/O of any kind, or read a clock. Time comes in
//! with every command; events go out through an [`EventSink`].
//!
//! Invariants, held at every instant and checked by
//! [`Engine::check_invariants`] in the tests:
//! 1. `0 <= sold + reserved <= stock` for every sale (no oversell).
//! 2. A user never holds more than `per_user_limit` units of one sale, and
//!    creates at most `per_user_limit + 16` orders in it
//!    ([`max_orders_per_user_per_sale`]).
//! 3. One `(user, request_id)` yields at most one order.
//! 4. Orders move only `CREATED → PAID` or `CREATED → CANCELLED`, and every
//!    move is an [`Event`].
//! 5. [`Engine::apply`] over the logged events rebuilds the same state
//!    ([`Engine::dump`] compares equal).

mod activity;
mod clock;
mod engine;
mod event;
mod hash;
mod ids;
mod invariants;
pub mod ratelimit;
mod snapshot;
mod types;
mod users;

pub use activity::{Activity, ActivityView};
pub use clock::{format_rfc3339, rfc3339};
pub use engine::*;
pub use event::{Discard, Event, EventSink};
pub use ids::{OrderIdGen, EPOCH_MS, MAX_NODE_ID};
pub use invariants::EngineDump;
pub use snapshot::{ActivitySnapshot, EngineSnapshot};
pub use types::*;
pub use users::{Order, RequestKey, USER_STRIPES};
