//! The way back: deferred requests complete from any thread into their
//! reactor's bounded ring, with one wake-up per burst rather than per
//! completion.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use flashd_protocol::ConnectionHeader;
use mio::net::TcpStream;
use mio::Waker;

/// Identifies one deferred request: which reactor, which connection (slab
/// key plus generation, so a completion for a connection that has since
/// closed and whose slot was reused is recognised and dropped), and its
/// place in the connection's response order (so a completion that comes
/// back after its request was answered `503` at `request_timeout` is
/// recognised and dropped too, never taken for a later request's).
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    pub(crate) reactor: u32,
    pub(crate) key: u32,
    pub(crate) gen: u32,
    pub(crate) seq: u32,
    pub(crate) connection: ConnectionHeader,
    pub(crate) route: u16,
    pub(crate) started: Instant,
    /// The request was `HEAD`: its completion is answered head only.
    pub(crate) omit_body: bool,
    /// The handler's own word about the request ([`crate::Context::set_tag`]),
    /// handed back with its completion: what it needs again to answer
    /// (flashd: the request id), without a table of its own.
    pub(crate) tag: u64,
}

impl Ticket {
    pub fn reactor(&self) -> usize {
        self.reactor as usize
    }
    /// The `Connection` header the eventual response must carry.
    pub fn connection(&self) -> ConnectionHeader {
        self.connection
    }
    /// When the request was dispatched.
    pub fn started(&self) -> Instant {
        self.started
    }
}

pub(crate) struct Mailbox<D> {
    pub completions: ArrayQueue<(Ticket, D)>,
    pub sockets: ArrayQueue<(TcpStream, std::net::SocketAddr)>,
    pub waker: Waker,
    pub wake_pending: CachePadded<AtomicBool>,
}

impl<D> Mailbox<D> {
    pub fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // A failed wake means the eventfd is gone, i.e. the reactor has
            // exited: nothing left to wake.
            let _ = self.waker.wake();
        }
    }
}

/// Cloneable, `Send` handle for completing deferred requests.
pub struct Completer<D> {
    pub(crate) boxes: Arc<[Mailbox<D>]>,
}

impl<D> Clone for Completer<D> {
    fn clone(&self) -> Self {
        Completer {
            boxes: self.boxes.clone(),
        }
    }
}

impl<D: Send + 'static> Completer<D> {
    /// Hand a completion to the ticket's reactor and wake it.
    pub fn complete(&self, ticket: Ticket, d: D) {
        self.push(ticket, d);
        self.boxes[ticket.reactor as usize].wake();
    }

    /// Queue without waking; call [`Completer::wake`] once for a batch.
    pub fn push(&self, ticket: Ticket, d: D) {
        let mb = &self.boxes[ticket.reactor as usize];
        // Cannot fail: a request is deferred only after a slot in this ring
        // was reserved for it (see Context::defer).
        if mb.completions.push((ticket, d)).is_err() {
            panic!("completion ring overflow: deferral accounting is broken");
        }
    }

    pub fn wake(&self, reactor: usize) {
        self.boxes[reactor].wake();
    }

    pub fn reactors(&self) -> usize {
        self.boxes.len()
    }
}
