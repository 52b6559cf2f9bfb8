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
//!    ([`sale_user_orders_max`]).
//! 3. One `(user, request_id)` yields at most one order.
//! 4. Orders move only `CREATED → PAID` or `CREATED → CANCELLED`, and every
//!    move is an [`Event`].
//! 5. [`Engine::apply`] over the logged events rebuilds the same state
//!    ([`Engine::dump`] compares equal).
//!
//! Where things are, one concept per file:
//! * `engine.rs`: the [`Engine`] and its live commands (create a sale,
//!   buy, pay, cancel, expire, read an order); `sale_change.rs`: an
//!   admin's changes of a sale (add stock, move or end its window) and
//!   their rules ([`window_change`]);
//! * `transition.rs`: the one function that changes order state, undoing
//!   an event, finishing one once durable; debug checks of every move;
//! * [`fold`]: how each event moves a sale's counters, and undoing it:
//!   pure arithmetic shared with whoever projects the log;
//! * `replay.rs`: rebuilding state from the log (one event, or a batch on
//!   every core); `snapshot.rs`: exporting and loading the whole state;
//! * `invariants.rs`: checking the invariants above; [`Engine::dump`];
//! * `activity.rs`: a sale and its atomic counters;
//!   `request_filter.rs`: which request ids a sale may have seen (so
//!   public refusals skip the token); `users.rs`: per-user
//!   state in locked stripes (orders, indexes, holdings);
//! * [`limits`]: every bound, with its reason; `spec.rs`: the engine's
//!   configuration and a sale's spec; `view.rs`: what commands take and
//!   answer; `error.rs`: why an event or snapshot does not apply;
//! * `event.rs`: the events; `ids.rs`: the order id layout; `types.rs`:
//!   ids, statuses and refusals; [`ratelimit`]: token buckets.

mod activity;
mod engine;
mod error;
mod event;
pub mod fold;
mod hash;
mod ids;
mod invariants;
pub mod limits;
pub mod ratelimit;
mod record;
mod replay;
mod request_filter;
mod sale_change;
mod snapshot;
mod spec;
mod transition;
mod types;
mod users;
mod view;

pub use activity::{Activity, ActivityView};
pub use engine::Engine;
pub use error::ReplayError;
pub use event::{Discard, Event, EventKind, EventSink};
pub use fold::Counters;
pub use ids::{order_created_ms, order_id_floor, EPOCH_MS, NODE_ID_MAX};
pub use invariants::{ActivityDump, EngineDump};
pub use limits::*;
pub use record::Recorded;
pub use sale_change::{window_change, WindowDecision};
pub use snapshot::{ActivitySnapshot, EngineSnapshot};
pub use spec::{ActivitySpec, EngineConfig, InvalidSpec};
pub use types::*;
pub use users::{Order, RequestKey, USER_STRIPES};
pub use view::{OrderView, PlaceOrder, Placed};
