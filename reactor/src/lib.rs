//! flashd-reactor: the network core.
//!
//! One acceptor thread (`flashd-accept`) accepts TCP connections and hands
//! each one over a bounded lock-free ring to one of N sub-reactor threads
//! (`flashd-reactor-N`), waking it with a `mio::Waker`. Each sub-reactor owns
//! its connections outright (a slab, no locks), reads edge-triggered with a
//! per-turn budget, frames requests with `flashd-protocol`, calls its
//! [`Handler`] and writes every response of a turn with as few syscalls as
//! it can.
//!
//! A handler may answer inline or [`Context::defer`] a request and complete
//! it later from any thread through a [`Completer`]; completions come back
//! over the sub-reactor's own bounded ring.
//!
//! Invariants this crate keeps:
//! * Responses leave a connection in request order, whatever order they
//!   complete in.
//! * Everything is bounded: connections (`max_connections`, refused with a
//!   503), header and body bytes, pipelined requests in flight per
//!   connection, deferred requests per reactor (the completion ring can
//!   never overflow because a request is only deferred when a slot is
//!   reserved for its completion).
//! * A peer cannot hold a connection by trickling bytes (`header_timeout`)
//!   or by idling (`idle_timeout`).
//! * No request waits on its completion forever: past `request_timeout`
//!   the reactor answers it `503` (outcome unknown) in its place, and a
//!   completion that comes back later is recognised by its ticket and
//!   dropped, never delivered as another request's answer.
//! * An answer to `HEAD` is a head only, whoever writes it (handler,
//!   completion, timeout, framing error).
//! * A connection closed with input unread is closed gracefully (write
//!   side shut, input drained within `LINGER_TIMEOUT` and
//!   `LINGER_DRAIN_BYTES_MAX`), so the peer reads the whole answer instead
//!   of a reset.
//! * Buffers a large request or response grew are freed after it.
//!
//! A handler may also turn a request into a long-lived event stream
//! ([`Context::subscribe`]): the connection becomes a subscriber of a
//! topic, written the topic's latest event (shared bytes, encoded once) as
//! the handler reports new ones; bounded per subscriber, capped per server,
//! and a subscriber that does not read is dropped (see `stream.rs`).
//!
//! It knows nothing of sales: routes are numbers the handler picks.

mod accept;
mod completion;
mod config;
mod conn;
mod constants;
mod context;
mod pool;
mod server;
mod sockio;
mod stats;
mod stream;
mod sub;
mod timer;
mod workers;

pub use completion::{Completer, Ticket};
pub use config::ServerConfig;
pub use constants::*;
pub use context::Context;
pub use server::{Server, ServerHandle};
pub use stats::{Latency, ReactorStats, ServerStats, LATENCY_BOUNDS_NS, STATUS_CODES};
pub use stream::{StreamConfig, StreamEvent, SubscribeError};
pub use workers::{Dispatcher, WorkerPool, WorkerStats};

use flashd_protocol::Request;

/// What a sub-reactor calls for every complete request. One instance lives
/// on each sub-reactor thread (built there by the factory given to
/// [`Server::start`]), so it needs no locks for its own state.
pub trait Handler: 'static {
    /// What a deferred request's completion carries back to this reactor.
    type Deferred: Send + 'static;

    /// Answer `req` through `cx` (exactly one `respond*` call), or call
    /// [`Context::defer`] and complete it later.
    fn handle(&mut self, req: &Request<'_>, cx: &mut Context<'_>);

    /// Encode the response for a request deferred earlier; called on this
    /// reactor's thread in completion order, written in request order.
    fn complete(&mut self, deferred: Self::Deferred, cx: &mut Context<'_>);

    /// An event of `topic` newer than `have_id`, if there is one. Called
    /// every `StreamConfig::poll_interval` for each topic this reactor has
    /// subscribers of ([`Context::subscribe`]); it must be cheap, and the
    /// bytes should be shared by every caller. An event with `last` ends
    /// the topic's streams once written.
    fn poll_stream(&mut self, topic: u64, have_id: u64) -> Option<StreamEvent> {
        let _ = (topic, have_id);
        None
    }
}
