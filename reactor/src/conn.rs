//! One client connection as its sub-reactor sees it.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use flashd_protocol::Framer;
use mio::net::TcpStream;

/// A response slot in a connection's pipeline, in request order.
pub(crate) enum Parked {
    /// Deferred to another thread; not answered yet.
    Pending,
    /// Answered, but an earlier request is still pending.
    Ready(Vec<u8>),
}

/// Responses owed to one connection, in request order.
pub(crate) struct Outbox {
    /// Encoded responses not yet written; `wbuf[wpos..]` is pending.
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    /// Sequence number the next response slot gets.
    pub next_seq: u32,
    /// Sequence number of `parked[0]`.
    pub head_seq: u32,
    /// Response slots behind a still-pending one. Empty in the common case,
    /// in which responses go straight into `wbuf`.
    pub parked: VecDeque<Parked>,
    /// Requests deferred and not yet completed.
    pub deferred: u32,
}

impl Outbox {
    pub fn unwritten(&self) -> usize {
        self.wbuf.len() - self.wpos
    }
}

pub(crate) struct Conn {
    pub sock: TcpStream,
    pub peer: IpAddr,
    pub gen: u32,
    /// Read buffer, held only while it has unprocessed bytes (capacity 0
    /// otherwise); `rbuf[rstart..rend]` is unconsumed input.
    pub rbuf: Vec<u8>,
    pub rstart: usize,
    pub rend: usize,
    pub framer: Framer,
    /// The response side, split off so a handler can write while the
    /// request still borrows the read buffer.
    pub out: Outbox,
    /// Stop reading; close once everything queued is written.
    pub close_after_flush: bool,
    pub read_closed: bool,
    /// A socket error: close at the next opportunity.
    pub dead: bool,
    /// Stopped reading before the socket was drained (budget or
    /// backpressure): must be revisited without a new readiness event.
    pub read_wanted: bool,
    pub in_ready_list: bool,
    /// When the request being received began (header timeout clock).
    pub request_started: Option<Instant>,
    /// Last read or write progress (idle timeout clock).
    pub last_active: Instant,
    pub timer_armed: bool,
}

impl Conn {
    pub fn new(sock: TcpStream, peer: IpAddr, gen: u32, now: Instant) -> Self {
        Conn {
            sock,
            peer,
            gen,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            framer: Framer::new(),
            out: Outbox {
                wbuf: Vec::new(),
                wpos: 0,
                next_seq: 0,
                head_seq: 0,
                parked: VecDeque::new(),
                deferred: 0,
            },
            close_after_flush: false,
            read_closed: false,
            dead: false,
            read_wanted: false,
            in_ready_list: false,
            // The first request is on the header clock from accept, so a
            // connection that never sends a byte is cut off like a slow one.
            request_started: Some(now),
            last_active: now,
            timer_armed: false,
        }
    }

    pub fn unwritten(&self) -> usize {
        self.out.unwritten()
    }

    pub fn has_input(&self) -> bool {
        self.rstart < self.rend
    }

    /// Too much is queued on this connection to accept more requests.
    pub fn backpressured(&self, depth_max: usize, high_water: usize) -> bool {
        self.out.parked.len() >= depth_max || self.unwritten() > high_water
    }

    /// Nothing received, queued or owed: safe to close at shutdown.
    pub fn quiescent(&self) -> bool {
        self.out.deferred == 0
            && self.out.parked.is_empty()
            && self.unwritten() == 0
            && !self.has_input()
            && !self.framer.mid_request()
    }

    pub fn deadline(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
        if self.out.deferred > 0 {
            // Waiting on our own workers, not on the peer.
            return None;
        }
        if let Some(t) = self.request_started {
            if self.has_input() || self.unwritten() == 0 {
                return Some(t + header_timeout);
            }
        }
        Some(self.last_active + idle_timeout)
    }
}
