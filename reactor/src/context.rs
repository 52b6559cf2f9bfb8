use std::net::IpAddr;
use std::time::Instant;

use flashd_protocol::{ConnectionHeader, Head, ResponseEncoder};

use crate::completion::Ticket;
use crate::stream::{self, Offer, StreamEvent, Subscribe, SubscribeError};

/// What a handler sees of the reactor while answering one request.
pub struct Context<'c> {
    pub(crate) out: &'c mut Vec<u8>,
    pub(crate) peer: IpAddr,
    pub(crate) connection: ConnectionHeader,
    /// Where a deferred answer goes back to: set for a request that may
    /// be deferred (the completion ring has room), `None` when it may not
    /// and in a completion. The [`Ticket`] itself is built by
    /// [`Context::defer`] from this and the fields below: building it
    /// for every request, deferred or not, was ~12 of a pipelined
    /// `/healthz`'s instructions (callgrind, issue 17).
    pub(crate) defer_to: Option<Place>,
    pub(crate) deferred: bool,
    pub(crate) route: u16,
    pub(crate) status: u16,
    pub(crate) now: Instant,
    pub(crate) reactor: usize,
    /// Answering a `HEAD` request: head only, with the GET's length.
    pub(crate) omit_body: bool,
    /// The connection may become a stream (a request being handled, not
    /// a completion).
    pub(crate) stream: Option<Offer<'c>>,
    /// The handler's tag for this request (0 until set).
    pub(crate) tag: u64,
}

/// A request's place on its reactor: its connection (slab key and
/// generation) and its sequence number among the connection's answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    pub(crate) key: u32,
    pub(crate) gen: u32,
    pub(crate) seq: u32,
}

impl<'c> Context<'c> {
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// Index of the sub-reactor running this handler.
    pub fn reactor(&self) -> usize {
        self.reactor
    }

    /// Time taken once for this event-loop turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn connection(&self) -> ConnectionHeader {
        self.connection
    }

    /// True when answering a `HEAD` request: whatever the handler responds,
    /// only the head goes out (with the body's length), so a handler may
    /// answer HEAD exactly as it answers GET.
    pub fn head_only(&self) -> bool {
        self.omit_body
    }

    /// Route number for metrics (1..ROUTES_MAX; 0 means unrouted).
    pub fn set_route(&mut self, route: u16) {
        self.route = route;
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The route number set for this request (0: none).
    pub fn route(&self) -> u16 {
        self.route
    }

    /// Tag this request with a word of the handler's own, handed back in
    /// the `Context` of its completion if it is deferred ([`Context::tag`]).
    pub fn set_tag(&mut self, tag: u64) {
        self.tag = tag;
    }

    /// The tag set by [`Context::set_tag`]: in a completion, the one set
    /// when the request was handled.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    pub fn respond(
        &mut self,
        status: u16,
        content_type: &'static str,
        extra: &[(&'static str, &str)],
        body: &[u8],
    ) {
        debug_assert_eq!(self.status, 0, "two responses to one request");
        self.status = status;
        let head = Head {
            status,
            content_type,
            connection: self.connection,
            extra,
            omit_body: self.omit_body,
        };
        ResponseEncoder::write(self.out, &head, body);
    }

    pub fn respond_json(&mut self, status: u16, body: &[u8]) {
        self.respond(status, "application/json", &[], body);
    }

    pub fn respond_error(
        &mut self,
        status: u16,
        code: &str,
        message: &str,
        extra: &[(&'static str, &str)],
    ) {
        debug_assert_eq!(self.status, 0, "two responses to one request");
        self.status = status;
        let head = Head {
            status,
            content_type: "application/json",
            connection: self.connection,
            extra,
            omit_body: self.omit_body,
        };
        ResponseEncoder::write_error(self.out, &head, code, message);
    }

    /// Take responsibility for answering later. `None` when this reactor
    /// already has as many deferred requests as its completion ring holds:
    /// answer now (503) instead.
    pub fn defer(&mut self) -> Option<Ticket> {
        let at = self.defer_to.take()?;
        self.deferred = true;
        Some(Ticket {
            reactor: self.reactor as u32,
            key: at.key,
            gen: at.gen,
            seq: at.seq,
            connection: self.connection,
            route: self.route,
            started: self.now,
            omit_body: self.omit_body,
            tag: self.tag,
        })
    }

    /// Answer with an event stream and hand the connection over to the
    /// reactor as a subscriber of `topic` (see [`crate::StreamEvent`]):
    /// the `200` head and `prelude` are written now, then `current` unless
    /// the client already has it (`last_id`, from `Last-Event-ID`); later
    /// events come from [`crate::Handler::poll_stream`]. The connection
    /// reads no more requests and closes when the stream ends.
    ///
    /// `Err` writes nothing: the handler answers instead (`503` when the
    /// server has `max_subscribers` already).
    pub fn subscribe(
        &mut self,
        topic: u64,
        last_id: Option<u64>,
        current: StreamEvent,
        prelude: &[u8],
    ) -> Result<(), SubscribeError> {
        debug_assert_eq!(self.status, 0, "two responses to one request");
        if self.omit_body {
            return Err(SubscribeError::NotHere);
        }
        let Some(offer) = self.stream.as_mut() else {
            return Err(SubscribeError::NotHere);
        };
        if !offer.reserve() {
            return Err(SubscribeError::Full);
        }
        self.status = 200;
        stream::write_head(self.out);
        self.out.extend_from_slice(prelude);
        // Any id but the current one is stale (or never issued): the
        // client gets the current state at once.
        let wrote_current = last_id != Some(current.id);
        if wrote_current {
            self.out.extend_from_slice(&current.bytes);
        }
        *offer.taken = Some(Subscribe {
            topic,
            sent_id: current.id,
            event: current,
            wrote_current,
        });
        Ok(())
    }

    /// Give back a ticket from [`Context::defer`] that could not be handed
    /// on (a full worker ring): the request is answered now after all.
    pub fn undefer(&mut self, ticket: Ticket) {
        self.defer_to = Some(Place {
            key: ticket.key,
            gen: ticket.gen,
            seq: ticket.seq,
        });
        self.deferred = false;
    }
}
