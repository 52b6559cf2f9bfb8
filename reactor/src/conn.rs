//! One client connection as its sub-reactor sees it.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use flashd_protocol::{ConnectionHeader, Framer};
use mio::net::TcpStream;

use crate::constants::READ_BUF_BYTES;
use crate::stream::Subscription;

/// A response slot in a connection's pipeline, in request order.
pub(crate) enum Parked {
    /// Deferred to another thread; not answered yet. Carries what the
    /// reactor needs to answer it itself (`503`) if its completion does not
    /// come back within `request_timeout`.
    Pending {
        since: Instant,
        route: u16,
        connection: ConnectionHeader,
        omit_body: bool,
    },
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
    /// in which responses go straight into `wbuf`. When not empty, the
    /// front is always `Pending` (a ready answer with nothing pending before
    /// it goes to `wbuf`), and it is the oldest request still owed.
    pub parked: VecDeque<Parked>,
    /// Requests deferred and not yet completed.
    pub deferred: u32,
}

impl Outbox {
    pub fn unwritten(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// When the oldest deferred request was dispatched.
    pub fn oldest_pending(&self) -> Option<Instant> {
        match self.parked.front() {
            Some(Parked::Pending { since, .. }) => Some(*since),
            _ => None,
        }
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
    /// The last read found the socket empty (a short read or WouldBlock)
    /// and no readiness event came since: edge-triggered epoll reports any
    /// new input, so reading before then would only say WouldBlock.
    pub drained: bool,
    /// When the request being received began (header timeout clock).
    pub request_started: Option<Instant>,
    /// Last read or write progress (idle timeout clock).
    pub last_active: Instant,
    /// When this connection's earliest live timer entry fires; `None` when
    /// it has none. A deadline earlier than this needs a new entry.
    pub timer_at: Option<Instant>,
    /// Closing gracefully: the answer is written and the write side shut;
    /// input is read and dropped until the peer closes, this deadline, or
    /// `LINGER_DRAIN_BYTES_MAX`.
    pub linger_until: Option<Instant>,
    pub lingered_bytes: usize,
    /// A stream subscriber: no more requests are read; events are written
    /// until the topic ends or the peer goes.
    pub stream: Option<Subscription>,
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
            drained: false,
            // The first request is on the header clock from accept, so a
            // connection that never sends a byte is cut off like a slow one.
            request_started: Some(now),
            last_active: now,
            timer_at: None,
            linger_until: None,
            lingered_bytes: 0,
            stream: None,
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

    /// After the request that needed it, a read buffer grown past its
    /// normal size is swapped for a normal one when what is left in it
    /// fits: a connection does not keep its largest buffer for life.
    /// Returns the big buffer for the caller to free.
    pub fn shrink_read_buf(&mut self, fresh: impl FnOnce() -> Vec<u8>) -> Option<Vec<u8>> {
        let left = self.rend - self.rstart;
        if self.rbuf.len() <= READ_BUF_BYTES || left > READ_BUF_BYTES || left == 0 {
            return None;
        }
        let mut small = fresh();
        debug_assert_eq!(small.len(), READ_BUF_BYTES);
        small[..left].copy_from_slice(&self.rbuf[self.rstart..self.rend]);
        self.rstart = 0;
        self.rend = left;
        Some(std::mem::replace(&mut self.rbuf, small))
    }

    /// When something must happen on this connection if nothing else does
    /// first.
    pub fn deadline(
        &self,
        header_timeout: Duration,
        idle_timeout: Duration,
        request_timeout: Duration,
        stall_timeout: Duration,
    ) -> Option<Instant> {
        if let Some(t) = self.linger_until {
            return Some(t);
        }
        if self.out.deferred > 0 {
            // Waiting on our own workers, not on the peer: the oldest
            // deferred request's deadline (the front of the pipeline).
            return self.out.oldest_pending().map(|t| t + request_timeout);
        }
        if self.stream.is_some() {
            // A subscriber is idle by design (heartbeats keep it alive);
            // its only deadline is the stall clock while bytes wait.
            return (self.unwritten() > 0).then(|| self.last_active + stall_timeout);
        }
        if let Some(t) = self.request_started {
            if self.has_input() || self.unwritten() == 0 {
                return Some(t + header_timeout);
            }
        }
        Some(self.last_active + idle_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (Conn, std::net::TcpListener) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let c = Conn::new(
            TcpStream::from_std(s),
            "127.0.0.1".parse().unwrap(),
            0,
            Instant::now(),
        );
        (c, l)
    }

    /// Issue 14 point 14: once the large request is consumed, what is left
    /// moves to a normal-size buffer and the grown one is handed back.
    #[test]
    fn a_grown_read_buffer_shrinks_once_its_request_is_consumed() {
        let (mut c, _l) = conn();
        c.rbuf = vec![0; 4 * READ_BUF_BYTES];
        c.rbuf[3 * READ_BUF_BYTES..3 * READ_BUF_BYTES + 5].copy_from_slice(b"GET /");
        // The large request still being read: nothing happens.
        c.rstart = 0;
        c.rend = 3 * READ_BUF_BYTES + 5;
        assert!(c.shrink_read_buf(|| vec![0; READ_BUF_BYTES]).is_none());
        // Consumed, 5 bytes of the next request left: swapped.
        c.rstart = 3 * READ_BUF_BYTES;
        let big = c.shrink_read_buf(|| vec![0; READ_BUF_BYTES]).unwrap();
        assert_eq!(big.len(), 4 * READ_BUF_BYTES);
        assert_eq!(c.rbuf.capacity(), READ_BUF_BYTES);
        assert_eq!(&c.rbuf[c.rstart..c.rend], b"GET /");
        // A normal buffer is left alone.
        assert!(c.shrink_read_buf(|| vec![0; READ_BUF_BYTES]).is_none());
    }

    /// The oldest deferred request sets the deadline; a lingering close
    /// overrides everything.
    #[test]
    fn deadline_follows_the_oldest_pending_request_and_linger() {
        let (mut c, _l) = conn();
        let t0 = Instant::now();
        let (h, i, r) = (
            Duration::from_secs(5),
            Duration::from_secs(60),
            Duration::from_secs(10),
        );
        for (since, n) in [(t0, 0u32), (t0 + Duration::from_secs(1), 1)] {
            c.out.parked.push_back(Parked::Pending {
                since,
                route: 0,
                connection: ConnectionHeader::Omit,
                omit_body: false,
            });
            c.out.deferred = n + 1;
        }
        assert_eq!(c.deadline(h, i, r, r), Some(t0 + r));
        c.linger_until = Some(t0 + Duration::from_millis(1));
        assert_eq!(c.deadline(h, i, r, r), Some(t0 + Duration::from_millis(1)));
    }
}
