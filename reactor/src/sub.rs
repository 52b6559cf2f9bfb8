//! The sub-reactor: one thread, one epoll instance, the connections it owns.

use std::io::{self, Read};
use std::mem;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashd_protocol::{
    date, is_head_request, ConnectionHeader, Head, HttpError, Method, Poll as Framed, Request,
    ResponseEncoder, HEADERS_MAX,
};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::completion::Mailbox;
use crate::config::ServerConfig;
use crate::conn::{Conn, Outbox, Parked};
use crate::constants::*;
use crate::context::{Context, Place};
use crate::pool::BufPool;
use crate::sockio;
use crate::stats::{ReactorStats, ServerStats};
use crate::stream::{self, Offer, Streams, Subscribe, Subscription};
use crate::timer::{TimerKey, Wheel};
use crate::Handler;

pub(crate) const WAKER: Token = Token(usize::MAX);

pub(crate) struct SubReactor<H: Handler> {
    pub id: usize,
    pub poll: Poll,
    pub boxes: Arc<[Mailbox<H::Deferred>]>,
    pub stats: Arc<ServerStats>,
    pub cfg: ServerConfig,
    pub shutdown: Arc<AtomicBool>,
    pub handler: H,
}

/// Everything but the handler and the poll, so the handler can be borrowed
/// alongside.
struct State {
    id: usize,
    conns: Slab<Conn>,
    pool: BufPool,
    wheel: Wheel,
    next_gen: u32,
    ready: Vec<usize>,
    dirty: Vec<usize>,
    deferred_in_flight: usize,
    draining: Option<Instant>,
    cfg: ServerConfig,
    max_request_bytes: usize,
    now: Instant,
    stats: Arc<ServerStats>,
    streams: Streams,
    /// Inline answers of this turn waiting for their latency: (route,
    /// status). One clock read at the turn's end records them all
    /// ([`State::record_turn`]).
    unclocked: Vec<(u16, u16)>,
}

/// Inline answers kept for one clock read at most: past this many in one
/// turn they are recorded at once (the vector never grows past its first
/// allocation, so the hot path allocates nothing).
const UNCLOCKED_MAX: usize = 4096;

impl<H: Handler> SubReactor<H> {
    pub fn run(self) {
        let SubReactor {
            id,
            mut poll,
            boxes,
            stats,
            cfg,
            shutdown,
            mut handler,
        } = self;
        let me = &boxes[id];
        let rstats: &ReactorStats = &stats.reactors[id];
        let now = Instant::now();
        let mut st = State {
            id,
            conns: Slab::with_capacity(1024),
            pool: BufPool::default(),
            wheel: Wheel::new(now),
            next_gen: 0,
            ready: Vec::new(),
            dirty: Vec::new(),
            deferred_in_flight: 0,
            draining: None,
            max_request_bytes: cfg.limits.max_header_bytes + cfg.limits.max_body_bytes + 4096,
            streams: Streams::new(now, &cfg.stream),
            cfg,
            now,
            stats: stats.clone(),
            unclocked: Vec::with_capacity(UNCLOCKED_MAX),
        };
        let mut events = Events::with_capacity(EVENTS_PER_TURN);
        let mut expired: Vec<TimerKey> = Vec::new();
        rstats.running.store(true, Ordering::Release);
        loop {
            let mut timeout = if !st.ready.is_empty() {
                Duration::ZERO
            } else if !st.wheel.is_empty() || st.draining.is_some() {
                TIMER_TICK
            } else {
                POLL_WAIT_MAX
            };
            if st.streams.passes > 0 {
                // A write pass is under way: go on with it after this turn.
                timeout = Duration::ZERO;
            } else if st.streams.subscribers > 0 {
                // Awake for the next stream poll or heartbeat, no sooner.
                let next = st.streams.next_poll.min(st.streams.next_heartbeat);
                timeout = timeout.min(next.saturating_duration_since(st.now));
            }
            if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(reactor = id, error = %e, "epoll failed; reactor stops");
                break;
            }
            rstats.turns.inc();
            date::refresh();
            st.now = Instant::now();

            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let k = ev.token().0;
                if ev.is_writable() {
                    st.flush(k);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    if let Some(c) = st.conns.get_mut(k) {
                        c.drained = false;
                    }
                    st.drive(k, &mut handler, rstats);
                } else if ev.is_writable() {
                    // Writing may have lifted backpressure on reading.
                    st.resume_if_wanted(k);
                }
                st.after_io(k, rstats);
            }

            // Cleared before draining so a producer that pushes after our
            // last pop is guaranteed to wake us again.
            me.wake_pending.store(false, Ordering::Release);
            st.take_sockets(me, &poll, rstats);
            st.take_completions(me, &mut handler, rstats);

            if !st.ready.is_empty() {
                let ready = mem::take(&mut st.ready);
                for &k in &ready {
                    if let Some(c) = st.conns.get_mut(k) {
                        c.in_ready_list = false;
                    } else {
                        continue;
                    }
                    st.drive(k, &mut handler, rstats);
                    st.after_io(k, rstats);
                }
                let mut ready = ready;
                ready.clear();
                if st.ready.is_empty() {
                    st.ready = ready;
                }
            }
            st.record_turn(rstats);

            st.wheel.expire(st.now, &mut expired);
            for (k, gen) in expired.drain(..) {
                st.on_timer(k, gen, rstats);
            }
            if st.streams.subscribers > 0 {
                if st.now >= st.streams.next_poll {
                    st.poll_streams(&mut handler);
                }
                if st.streams.passes > 0 {
                    st.write_streams(rstats);
                }
                if st.now >= st.streams.next_heartbeat {
                    st.heartbeat(rstats);
                }
            }

            if st.draining.is_none() && shutdown.load(Ordering::Acquire) {
                st.begin_drain(rstats);
            }
            if let Some(deadline) = st.draining {
                if st.conns.is_empty() {
                    break;
                }
                if st.now >= deadline {
                    tracing::warn!(
                        reactor = id,
                        open = st.conns.len(),
                        "grace period over; closing"
                    );
                    let keys: Vec<usize> = st.conns.iter().map(|(k, _)| k).collect();
                    for k in keys {
                        st.close(k);
                    }
                    break;
                }
            }
        }
        // Sockets still queued by the acceptor are closed unserved.
        while let Some((s, _)) = me.sockets.pop() {
            drop(s);
            stats.open.fetch_sub(1, Ordering::Relaxed);
        }
        rstats.running.store(false, Ordering::Release);
    }
}

impl State {
    /// Record the latency of the turn's inline answers: from the turn's
    /// start to now, one clock read for all of them.
    fn record_turn(&mut self, rstats: &ReactorStats) {
        if self.unclocked.is_empty() {
            return;
        }
        rstats.record_all(&mut self.unclocked, self.now.elapsed());
    }

    fn take_sockets<D>(&mut self, me: &Mailbox<D>, poll: &Poll, rstats: &ReactorStats) {
        while let Some((mut sock, addr)) = me.sockets.pop() {
            let entry = self.conns.vacant_entry();
            let k = entry.key();
            if let Err(e) = poll.registry().register(
                &mut sock,
                Token(k),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(error = %e, "register failed");
                continue;
            }
            let gen = self.next_gen;
            self.next_gen = self.next_gen.wrapping_add(1);
            entry.insert(Conn::new(sock, addr.ip(), gen, self.now));
            if self.draining.is_some() {
                self.close(k);
                continue;
            }
            self.after_io(k, rstats);
        }
    }

    /// Process buffered requests, then read and process until the socket is
    /// drained, the budget is spent, or backpressure stops us.
    fn drive<H: Handler>(&mut self, k: usize, handler: &mut H, rstats: &ReactorStats) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        c.read_wanted = false;
        if c.linger_until.is_some() || c.stream.is_some() {
            // Nothing a lingering connection or a subscriber sends is
            // read as a request: drained and dropped, within bounds.
            self.linger_read(k);
            let c = &mut self.conns[k];
            if c.stream.is_some() && c.rbuf.capacity() > 0 {
                // A subscriber holds no read buffer between reads.
                let b = mem::take(&mut c.rbuf);
                recycle_read(&mut self.pool, b, &self.stats.reactors[self.id]);
            }
            return;
        }
        self.process(k, handler, rstats);
        let mut budget = READS_PER_TURN;
        loop {
            let c = &mut self.conns[k];
            // Drained: nothing to read until the next readiness event (a
            // completion that frees a pipeline slot comes here too; its
            // read was 0.27 of a recvfrom per durable buy, all EAGAIN).
            if c.dead || c.read_closed || c.close_after_flush || c.drained || c.stream.is_some() {
                break;
            }
            if c.backpressured(PIPELINE_DEPTH_MAX, WRITE_HIGH_WATER_BYTES) {
                c.read_wanted = true;
                break;
            }
            if budget == 0 {
                c.read_wanted = true;
                break;
            }
            budget -= 1;
            if c.rbuf.is_empty() {
                c.rbuf = self.pool.take_read(READ_BUF_BYTES);
                c.rstart = 0;
                c.rend = 0;
            }
            if c.rend == c.rbuf.len() {
                if c.rstart > 0 {
                    c.rbuf.copy_within(c.rstart..c.rend, 0);
                    c.rend -= c.rstart;
                    c.rstart = 0;
                } else if c.rbuf.len() < self.max_request_bytes {
                    let n = (c.rbuf.len() * 2).min(self.max_request_bytes);
                    c.rbuf.resize(n, 0);
                } else {
                    // A request this large is refused by the framer's limits
                    // unless chunk framing inflated it; either way too large.
                    Self::emit_error(
                        c,
                        &mut self.pool,
                        HttpError::PayloadTooLarge,
                        rstats,
                        self.now,
                    );
                    break;
                }
            }
            let space = c.rbuf.len() - c.rend;
            match sockio::recv(c.sock.as_raw_fd(), &mut c.rbuf[c.rend..]) {
                Ok(0) => {
                    c.read_closed = true;
                    break;
                }
                Ok(n) => {
                    c.rend += n;
                    c.last_active = self.now;
                    // A short read drained the socket (epoll(7)): skip the
                    // extra read that would only say WouldBlock.
                    c.drained = n < space;
                    self.process(k, handler, rstats);
                    if n < space {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.dead = true;
                    break;
                }
            }
        }
        self.flush(k);
    }

    /// Answer every complete request in the read buffer, in order.
    fn process<H: Handler>(&mut self, k: usize, handler: &mut H, rstats: &ReactorStats) {
        let draining = self.draining.is_some();
        let can_defer = self.deferred_in_flight < self.cfg.completion_ring;
        let limits = self.cfg.limits;
        let now = self.now;
        let id = self.id;
        let c = &mut self.conns[k];
        let pool = &mut self.pool;
        let mut deferred_now = 0usize;
        let mut subscribed: Option<Subscribe> = None;
        // Requests answered inline wait for one clock read at the turn's
        // end (`record_turn`): their latency is counted from the turn's
        // start (epoll's return) to its end, never less than the truth. A
        // read per request was ~60 instructions of a pipelined `/healthz`,
        // and one per connection ~160 of a `GET` of a sale.
        let unclocked = &mut self.unclocked;
        loop {
            if c.close_after_flush
                || c.dead
                || c.backpressured(PIPELINE_DEPTH_MAX, WRITE_HIGH_WATER_BYTES)
            {
                break;
            }
            if !c.has_input() {
                if !c.rbuf.is_empty() && !c.framer.mid_request() {
                    recycle_read(pool, mem::take(&mut c.rbuf), rstats);
                    c.rstart = 0;
                    c.rend = 0;
                    c.framer.shrink();
                }
                break;
            }
            // Uninitialised slots: httparse writes the ones it uses, and
            // building 64 empty headers per request was 2 KiB of stores.
            let mut headers = [const { std::mem::MaybeUninit::uninit() }; HEADERS_MAX];
            let Conn {
                rbuf,
                rstart,
                rend,
                framer,
                out: outbox,
                peer,
                gen,
                ..
            } = c;
            match framer.poll(&rbuf[*rstart..*rend], &mut headers, &limits) {
                Ok(Framed::Ready(req, n)) => {
                    let omit_body = req.method == Method::Head;
                    let connection = if !req.keep_alive || draining {
                        ConnectionHeader::Close
                    } else if req.minor_version == 0 {
                        ConnectionHeader::KeepAlive
                    } else {
                        ConnectionHeader::Omit
                    };
                    let may_defer = can_defer
                        && self.deferred_in_flight + deferred_now < self.cfg.completion_ring;
                    let offer = Offer {
                        count: &self.stats.stream_subscribers,
                        max: self.cfg.stream.max_subscribers,
                        taken: &mut subscribed,
                    };
                    let answer = Self::dispatch(
                        outbox, *peer, *gen, pool, handler, &req, connection, omit_body, may_defer,
                        id, k, now, rstats, offer,
                    );
                    match answer {
                        // Deferred: answered later through a completion.
                        None => deferred_now += 1,
                        Some((route, status)) => {
                            if unclocked.len() == UNCLOCKED_MAX {
                                rstats.record_all(unclocked, now.elapsed());
                            }
                            unclocked.push((route, status));
                        }
                    }
                    c.rstart += n;
                    c.request_started = None;
                    if connection == ConnectionHeader::Close {
                        c.close_after_flush = true;
                    }
                    if subscribed.is_some() {
                        // A stream: the rest of the input is not requests.
                        c.close_after_flush = false;
                        c.rstart = c.rend;
                        break;
                    }
                }
                Ok(Framed::Pending { send_continue }) => {
                    if send_continue {
                        let out = Self::slot(outbox, pool);
                        ResponseEncoder::write_continue(out);
                        Self::commit_slot(outbox);
                    }
                    if c.request_started.is_none() {
                        c.request_started = Some(now);
                    }
                    break;
                }
                Err(e) => {
                    Self::emit_error(c, pool, e, rstats, now);
                    break;
                }
            }
        }
        // The request that grew the read buffer is done: keep a normal one.
        if c.rbuf.len() > READ_BUF_BYTES {
            if let Some(big) = c.shrink_read_buf(|| pool.take_read(READ_BUF_BYTES)) {
                drop(big);
                rstats.buffers_released.inc();
            }
        }
        self.deferred_in_flight += deferred_now;
        rstats
            .deferred_in_flight
            .store(self.deferred_in_flight, Ordering::Relaxed);
        if let Some(sub) = subscribed {
            self.start_stream(k, sub, rstats);
        }
    }
}

/// Give a read buffer back to the pool, or free it if a large request grew
/// it past the size the pool hands out (it would pin the extra for the
/// life of the reactor).
fn recycle_read(pool: &mut BufPool, b: Vec<u8>, rstats: &ReactorStats) {
    if b.len() <= READ_BUF_BYTES {
        pool.give_read(b);
    } else {
        rstats.buffers_released.inc();
    }
}

/// Give a write buffer back to the pool, or free it if a large response
/// grew it past `WRITE_BUF_KEEP_BYTES`.
fn recycle_write(pool: &mut BufPool, b: Vec<u8>, rstats: &ReactorStats) {
    if b.capacity() <= WRITE_BUF_KEEP_BYTES {
        pool.give(b);
    } else {
        rstats.buffers_released.inc();
    }
}

impl State {
    /// Where the next response goes: straight into the write buffer when no
    /// earlier response is outstanding, else a parked buffer.
    #[inline]
    fn slot<'a>(c: &'a mut Outbox, pool: &mut BufPool) -> &'a mut Vec<u8> {
        // The common case inline (a call was ~16 instructions of a
        // pipelined `/healthz`), the rest out of line.
        if c.parked.is_empty() && c.wbuf.capacity() != 0 {
            return &mut c.wbuf;
        }
        Self::slot_slow(c, pool)
    }

    #[cold]
    #[inline(never)]
    fn slot_slow<'a>(c: &'a mut Outbox, pool: &mut BufPool) -> &'a mut Vec<u8> {
        if c.parked.is_empty() {
            if c.wbuf.capacity() == 0 {
                c.wbuf = pool.take();
                c.wpos = 0;
            }
            &mut c.wbuf
        } else {
            c.parked.push_back(Parked::Ready(pool.take()));
            match c.parked.back_mut() {
                Some(Parked::Ready(b)) => b,
                _ => unreachable!(),
            }
        }
    }

    /// Account for a slot filled by `slot` (not deferred).
    fn commit_slot(c: &mut Outbox) {
        c.next_seq = c.next_seq.wrapping_add(1);
        if c.parked.is_empty() {
            c.head_seq = c.next_seq;
        }
    }

    /// Run the handler on one request: `(route, status)` of an answer
    /// written now (the caller records it), `None` when it was deferred.
    #[allow(clippy::too_many_arguments)] // the pieces of one request's context, borrowed apart
    fn dispatch<H: Handler>(
        c: &mut Outbox,
        peer: std::net::IpAddr,
        gen: u32,
        pool: &mut BufPool,
        handler: &mut H,
        req: &Request<'_>,
        connection: ConnectionHeader,
        omit_body: bool,
        may_defer: bool,
        reactor: usize,
        key: usize,
        now: Instant,
        rstats: &ReactorStats,
        offer: Offer<'_>,
    ) -> Option<(u16, u16)> {
        let seq = c.next_seq;
        let defer_to = may_defer.then_some(Place {
            key: key as u32,
            gen,
            seq,
        });
        let parked_before = !c.parked.is_empty();
        let out = Self::slot(c, pool);
        let mut cx = Context {
            out,
            peer,
            connection,
            defer_to,
            deferred: false,
            route: 0,
            status: 0,
            now,
            reactor,
            omit_body,
            stream: Some(offer),
            tag: 0,
        };
        handler.handle(req, &mut cx);
        let (deferred, route, status) = (cx.deferred, cx.route, cx.status);
        debug_assert!(
            !(deferred && cx.stream.as_ref().is_some_and(|o| o.taken.is_some())),
            "a deferred stream"
        );
        if !deferred && status == 0 {
            cx.respond_error(500, "internal", "handler produced no response", &[]);
        }
        let status = if status == 0 { 500 } else { status };
        if deferred {
            if parked_before {
                // Replace the parked buffer `slot` pushed with a pending mark.
                if let Some(Parked::Ready(b)) = c.parked.pop_back() {
                    recycle_write(pool, b, rstats);
                }
            }
            c.parked.push_back(Parked::Pending {
                since: now,
                route,
                connection,
                omit_body,
            });
            if !parked_before {
                c.head_seq = seq;
            }
            c.next_seq = c.next_seq.wrapping_add(1);
            c.deferred += 1;
            None
        } else {
            Self::commit_slot(c);
            Some((route, status))
        }
    }

    /// Answer a protocol error in order and close after it.
    fn emit_error(
        c: &mut Conn,
        pool: &mut BufPool,
        e: HttpError,
        rstats: &ReactorStats,
        now: Instant,
    ) {
        // A refused HEAD request gets its error without a body too.
        let head = Head {
            omit_body: is_head_request(&c.rbuf[c.rstart..c.rend]),
            ..Head::json(e.status(), ConnectionHeader::Close)
        };
        let out = Self::slot(&mut c.out, pool);
        ResponseEncoder::write_error(out, &head, e.code(), e.message());
        Self::commit_slot(&mut c.out);
        c.close_after_flush = true;
        rstats.protocol_errors.inc();
        rstats.record(0, e.status(), now.elapsed());
    }

    fn take_completions<H: Handler>(
        &mut self,
        me: &Mailbox<H::Deferred>,
        handler: &mut H,
        rstats: &ReactorStats,
    ) {
        let mut n = 0usize;
        while let Some((t, d)) = me.completions.pop() {
            n += 1;
            self.deferred_in_flight -= 1;
            let k = t.key as usize;
            let Some(c) = self.conns.get_mut(k).filter(|c| c.gen == t.gen) else {
                continue; // the connection went away meanwhile
            };
            let idx = t.seq.wrapping_sub(c.out.head_seq) as usize;
            if !matches!(c.out.parked.get(idx), Some(Parked::Pending { .. })) {
                // Answered 503 at its deadline: its slot is gone and
                // `head_seq` has moved past it, so its offset is out of
                // range (it would take 2^32 requests on this connection
                // meanwhile to alias a live slot). Dropped unsent.
                rstats.late_completions.inc();
                continue;
            }
            c.out.deferred -= 1;
            let (peer, now, id) = (c.peer, self.now, self.id);
            // Dispatched before shutdown began, answered after: the client
            // must learn that this connection is going away.
            let connection = if self.draining.is_some() {
                ConnectionHeader::Close
            } else {
                t.connection
            };
            let run = |out: &mut Vec<u8>, handler: &mut H| {
                let mut cx = Context {
                    out,
                    peer,
                    connection,
                    defer_to: None,
                    deferred: false,
                    route: t.route,
                    status: 0,
                    now,
                    reactor: id,
                    omit_body: t.omit_body,
                    stream: None,
                    tag: t.tag,
                };
                handler.complete(d, &mut cx);
                if cx.status == 0 {
                    cx.respond_error(500, "internal", "handler produced no response", &[]);
                }
                rstats.record(cx.route, cx.status, t.started.elapsed());
            };
            if idx == 0 {
                if c.out.wbuf.capacity() == 0 {
                    c.out.wbuf = self.pool.take();
                    c.out.wpos = 0;
                }
                run(&mut c.out.wbuf, handler);
                Self::pop_head(&mut c.out, &mut self.pool, rstats);
            } else {
                let mut b = self.pool.take();
                run(&mut b, handler);
                c.out.parked[idx] = Parked::Ready(b);
            }
            if !c.in_ready_list {
                self.dirty.push(k);
                c.in_ready_list = true;
            }
        }
        if n > 0 {
            rstats
                .deferred_in_flight
                .store(self.deferred_in_flight, Ordering::Relaxed);
            let dirty = mem::take(&mut self.dirty);
            for &k in &dirty {
                if let Some(c) = self.conns.get_mut(k) {
                    c.in_ready_list = false;
                    // A freed pipeline slot may let buffered requests run.
                    c.read_wanted = true;
                }
                self.flush(k);
                self.after_io(k, rstats);
            }
            let mut dirty = dirty;
            dirty.clear();
            self.dirty = dirty;
        }
    }

    /// Write what is queued with one syscall where the kernel takes it all.
    fn flush(&mut self, k: usize) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        while c.out.wpos < c.out.wbuf.len() && !c.dead {
            match sockio::send(c.sock.as_raw_fd(), &c.out.wbuf[c.out.wpos..]) {
                Ok(0) => c.dead = true,
                Ok(n) => {
                    let partial = c.out.wpos + n < c.out.wbuf.len();
                    c.out.wpos += n;
                    c.last_active = self.now;
                    if partial {
                        break; // socket buffer full: wait for writable
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => c.dead = true,
            }
        }
        if c.out.wpos == c.out.wbuf.len() && c.out.wbuf.capacity() > 0 {
            let rstats = &self.stats.reactors[self.id];
            recycle_write(&mut self.pool, mem::take(&mut c.out.wbuf), rstats);
            c.out.wpos = 0;
        }
    }

    /// The front slot (pending, now answered into `wbuf`) is done: drop it
    /// and move the answers that were waiting behind it into `wbuf`.
    fn pop_head(out: &mut Outbox, pool: &mut BufPool, rstats: &ReactorStats) {
        debug_assert!(matches!(out.parked.front(), Some(Parked::Pending { .. })));
        out.parked.pop_front();
        out.head_seq = out.head_seq.wrapping_add(1);
        while let Some(Parked::Ready(_)) = out.parked.front() {
            if let Some(Parked::Ready(b)) = out.parked.pop_front() {
                out.wbuf.extend_from_slice(&b);
                recycle_write(pool, b, rstats);
            }
            out.head_seq = out.head_seq.wrapping_add(1);
        }
    }

    /// The oldest deferred request on `k` has passed `request_timeout`:
    /// answer it `503` in its place in the pipeline, so the client is not
    /// left hanging and later answers are not held behind it. Its
    /// completion, if it ever comes, is dropped (see `take_completions`).
    fn expire_request(&mut self, k: usize, rstats: &ReactorStats) {
        let draining = self.draining.is_some();
        let c = &mut self.conns[k];
        let Some(Parked::Pending {
            since,
            route,
            connection,
            omit_body,
        }) = c.out.parked.front()
        else {
            debug_assert!(false, "request timeout without a pending request");
            return;
        };
        let (since, route, omit_body) = (*since, *route, *omit_body);
        let connection = if draining {
            ConnectionHeader::Close
        } else {
            *connection
        };
        if c.out.wbuf.capacity() == 0 {
            c.out.wbuf = self.pool.take();
            c.out.wpos = 0;
        }
        let head = Head {
            status: 503,
            content_type: "application/json",
            connection,
            extra: &[("Retry-After", "1")],
            omit_body,
        };
        ResponseEncoder::write_error(
            &mut c.out.wbuf,
            &head,
            "timeout",
            "the request was not completed in time; its outcome is unknown: \
             retry it with the same request_id",
        );
        c.out.deferred -= 1;
        Self::pop_head(&mut c.out, &mut self.pool, rstats);
        rstats.request_timeouts.inc();
        rstats.record(route, 503, self.now.saturating_duration_since(since));
    }

    /// Start closing `k` gracefully: the answer is all written; shut the
    /// write side (the peer reads it, then EOF), drop what input we hold,
    /// and drain the rest until the peer closes or the bounds are hit.
    fn begin_linger(&mut self, k: usize, rstats: &ReactorStats) {
        let c = &mut self.conns[k];
        // Counted before the FIN goes out, so a peer that sees it can see
        // the count.
        rstats.lingering_closes.inc();
        if c.sock.shutdown(std::net::Shutdown::Write).is_err() {
            c.dead = true;
            return;
        }
        c.linger_until = Some(self.now + LINGER_TIMEOUT);
        c.rstart = 0;
        c.rend = 0;
        // Whatever the peer sent before our answer may still be waiting,
        // and no new readiness edge will report it.
        self.linger_read(k);
    }

    /// Read and drop input on a lingering connection.
    fn linger_read(&mut self, k: usize) {
        let c = &mut self.conns[k];
        if c.rbuf.is_empty() {
            c.rbuf = self.pool.take_read(READ_BUF_BYTES);
        }
        for _ in 0..READS_PER_TURN {
            match c.sock.read(&mut c.rbuf) {
                Ok(0) => {
                    c.read_closed = true;
                    return;
                }
                Ok(n) => {
                    c.lingered_bytes += n;
                    if c.lingered_bytes > LINGER_DRAIN_BYTES_MAX {
                        c.dead = true;
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.dead = true;
                    return;
                }
            }
        }
        // Budget spent with more to read: come back next turn.
        c.read_wanted = true;
    }

    fn resume_if_wanted(&mut self, k: usize) {
        if let Some(c) = self.conns.get_mut(k) {
            if c.read_wanted && !c.in_ready_list {
                c.in_ready_list = true;
                self.ready.push(k);
            }
        }
    }

    /// After any I/O on a connection: close it, schedule more reading, or
    /// arm its timer.
    fn after_io(&mut self, k: usize, rstats: &ReactorStats) {
        let draining = self.draining.is_some();
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        let flushed = c.unwritten() == 0 && c.out.parked.is_empty();
        if flushed
            && c.close_after_flush
            && c.linger_until.is_none()
            && !c.dead
            && !c.read_closed
            && (c.has_input() || c.framer.mid_request())
        {
            // Input left unread: closing now would reset the connection
            // under the answer we just wrote.
            self.begin_linger(k, rstats);
        }
        let c = &mut self.conns[k];
        let done = c.dead
            || (flushed && c.close_after_flush && c.linger_until.is_none())
            || (flushed && c.read_closed)
            || (draining && c.quiescent());
        if done {
            self.close(k);
            return;
        }
        if c.read_wanted
            && !c.in_ready_list
            && !c.backpressured(PIPELINE_DEPTH_MAX, WRITE_HIGH_WATER_BYTES)
        {
            c.in_ready_list = true;
            self.ready.push(k);
        }
        let d = c.deadline(
            self.cfg.header_timeout,
            self.cfg.idle_timeout,
            self.cfg.request_timeout,
            self.cfg.stream.stall_timeout,
        );
        if let Some(d) = d {
            // An entry at or before `d` re-checks when it fires; a later one
            // would be too late (the deadline moved earlier).
            if !matches!(c.timer_at, Some(t) if t <= d) {
                c.timer_at = Some(d);
                self.wheel.schedule(d, (k, c.gen));
            }
        }
    }

    fn on_timer(&mut self, k: usize, gen: u32, rstats: &ReactorStats) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(k).filter(|c| c.gen == gen) else {
            return;
        };
        let deadline = c.deadline(
            self.cfg.header_timeout,
            self.cfg.idle_timeout,
            self.cfg.request_timeout,
            self.cfg.stream.stall_timeout,
        );
        // Every entry that fires is due (the wheel holds back early ones);
        // one at or before now means the tracked entry is spent.
        let live = c.timer_at.filter(|t| *t > now);
        let Some(deadline) = deadline else {
            c.timer_at = live;
            return;
        };
        if deadline > now {
            // Not yet: make sure an entry will fire by then.
            if !matches!(live, Some(t) if t <= deadline) {
                c.timer_at = Some(deadline);
                self.wheel.schedule(deadline, (k, gen));
            } else {
                c.timer_at = live;
            }
            return;
        }
        c.timer_at = live;
        if c.linger_until.is_some() {
            // The peer had its time to read the answer and close.
            self.close(k);
            return;
        }
        if c.out.deferred > 0 {
            self.expire_request(k, rstats);
            self.flush(k);
            self.after_io(k, rstats);
            return;
        }
        if c.stream.is_some() {
            // An event has waited `stall_timeout` for a reader that does
            // not read: dropped rather than buffered for.
            rstats.stream_slow_drops.inc();
            self.close(k);
            return;
        }
        if c.close_after_flush {
            // A closing answer is queued and the peer has not taken it.
            rstats.idle_timeouts.inc();
        } else if c.request_started.is_some()
            && (c.has_input() || c.framer.mid_request())
            && c.out.parked.is_empty()
        {
            // A request began but never finished: say so, once, and close
            // gracefully (its unread rest must not turn into a reset).
            rstats.header_timeouts.inc();
            Self::emit_error(c, &mut self.pool, HttpError::RequestTimeout, rstats, now);
            self.flush(k);
            self.after_io(k, rstats);
            return;
        } else if c.request_started.is_some() && c.unwritten() == 0 {
            rstats.header_timeouts.inc();
        } else {
            rstats.idle_timeouts.inc();
        }
        self.close(k);
    }

    fn begin_drain(&mut self, rstats: &ReactorStats) {
        self.draining = Some(self.now + self.cfg.shutdown_grace);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.after_io(k, rstats);
        }
    }

    /// Connection `k` has just been answered with a stream head: make it a
    /// subscriber of its topic.
    fn start_stream(&mut self, k: usize, sub: Subscribe, rstats: &ReactorStats) {
        let last = sub.event.last && sub.sent_id == sub.event.id;
        let slot = self.streams.add(k, sub.topic, sub.event);
        let c = &mut self.conns[k];
        c.stream = Some(Subscription {
            topic: sub.topic,
            sent_id: sub.sent_id,
            slot,
        });
        c.close_after_flush = last;
        // No requests are read from it again: its read buffer goes back.
        if c.rbuf.capacity() > 0 {
            recycle_read(&mut self.pool, mem::take(&mut c.rbuf), rstats);
        }
        c.rstart = 0;
        c.rend = 0;
        if sub.wrote_current {
            rstats.stream_events.inc();
        }
    }

    /// Ask the handler for newer events of every topic with subscribers
    /// here. A topic with a newer event, or with subscribers left behind
    /// by the last pass, starts a write pass over its subscribers (from the
    /// first again if one was under way: every one needs the newest).
    fn poll_streams<H: Handler>(&mut self, handler: &mut H) {
        self.streams.next_poll = self.now + self.cfg.stream.poll_interval;
        let mut keys = mem::take(&mut self.streams.scratch);
        keys.clear();
        keys.extend(self.streams.topics.keys().copied());
        for &topic in &keys {
            let Some(t) = self.streams.topics.get_mut(&topic) else {
                continue;
            };
            let have = t.latest.as_ref().map_or(0, |l| l.id);
            let newer = match handler.poll_stream(topic, have) {
                Some(ev) if ev.id > have => {
                    t.latest = Some(ev);
                    true
                }
                _ => false,
            };
            if newer || t.behind {
                t.behind = false;
                if t.cursor.replace(0).is_none() {
                    self.streams.passes += 1;
                }
            }
        }
        self.streams.scratch = keys;
    }

    /// Carry the write passes under way on by at most
    /// `STREAM_WRITES_PER_TURN` writes: a pass over 10^4 subscribers is
    /// spread over turns, so the requests of this reactor are served in
    /// between instead of waiting behind all of it.
    fn write_streams(&mut self, rstats: &ReactorStats) {
        let mut keys = mem::take(&mut self.streams.scratch);
        keys.clear();
        keys.extend(
            self.streams
                .topics
                .iter()
                .filter(|(_, t)| t.cursor.is_some())
                .map(|(k, _)| *k),
        );
        let mut budget = STREAM_WRITES_PER_TURN;
        for &topic in &keys {
            budget = self.write_topic(topic, budget, rstats);
            if budget == 0 {
                break;
            }
        }
        self.streams.scratch = keys;
        let mut touched = mem::take(&mut self.streams.touched);
        for &k in &touched {
            self.after_io(k, rstats);
        }
        touched.clear();
        self.streams.touched = touched;
    }

    /// Write `topic`'s latest event to its subscribers from the pass's
    /// cursor on, while `budget` lasts; returns what is left of it. One
    /// that cannot take it now (still taking an earlier event or answer)
    /// is left behind for the next poll: it needs only the latest, so
    /// nothing is queued for it.
    fn write_topic(&mut self, topic: u64, mut budget: usize, rstats: &ReactorStats) -> usize {
        let Some(t) = self.streams.topics.get_mut(&topic) else {
            return budget;
        };
        let (Some(ev), Some(mut i)) = (t.latest.clone(), t.cursor) else {
            return budget;
        };
        while i < t.subs.len() {
            if budget == 0 {
                t.cursor = Some(i);
                return 0;
            }
            let k = t.subs[i];
            i += 1;
            let Some(c) = self.conns.get_mut(k) else {
                continue;
            };
            let Some(s) = c.stream.as_mut() else {
                continue;
            };
            if s.sent_id >= ev.id || c.dead {
                continue;
            }
            if !c.out.parked.is_empty() || (c.out.unwritten() > 0 && !ev.last) {
                t.behind = true;
                continue;
            }
            budget -= 1;
            if c.out.unwritten() > 0 {
                // The final event goes behind the remainder it waits on:
                // at most two events held, and the stream ends after.
                c.out.wbuf.extend_from_slice(&ev.bytes);
            } else {
                if c.out.wbuf.capacity() > 0 {
                    recycle_write(&mut self.pool, mem::take(&mut c.out.wbuf), rstats);
                }
                c.out.wpos = 0;
                if stream::write_shared(&mut c.sock, &mut c.out.wbuf, &ev.bytes).is_err() {
                    c.dead = true;
                } else {
                    c.last_active = self.now;
                }
            }
            s.sent_id = ev.id;
            if ev.last {
                c.close_after_flush = true;
            }
            rstats.stream_events.inc();
            self.streams.touched.push(k);
        }
        t.cursor = None;
        self.streams.passes -= 1;
        budget
    }

    /// A comment to every subscriber that has been written nothing for a
    /// heartbeat interval, so idle streams stay visibly alive through
    /// proxies and client timeouts (during a sale the events do that, and
    /// no heartbeat is written).
    fn heartbeat(&mut self, rstats: &ReactorStats) {
        let interval = self.cfg.stream.heartbeat;
        self.streams.next_heartbeat = self.now + interval;
        for t in self.streams.topics.values() {
            for &k in &t.subs {
                let Some(c) = self.conns.get_mut(k) else {
                    continue;
                };
                if c.out.unwritten() > 0
                    || !c.out.parked.is_empty()
                    || c.dead
                    || c.last_active + interval > self.now
                {
                    continue;
                }
                if stream::write_shared(&mut c.sock, &mut c.out.wbuf, stream::HEARTBEAT).is_err() {
                    c.dead = true;
                } else {
                    c.last_active = self.now;
                    rstats.stream_heartbeats.inc();
                }
                self.streams.touched.push(k);
            }
        }
        let mut touched = mem::take(&mut self.streams.touched);
        for &k in &touched {
            self.after_io(k, rstats);
        }
        touched.clear();
        self.streams.touched = touched;
    }

    fn close(&mut self, k: usize) {
        let c = self.conns.remove(k);
        if let Some(sub) = &c.stream {
            if let Some(moved) = self.streams.remove(sub.topic, sub.slot) {
                if let Some(s) = self.conns.get_mut(moved).and_then(|m| m.stream.as_mut()) {
                    s.slot = sub.slot;
                }
            }
            self.stats.stream_subscribers.fetch_sub(1, Ordering::AcqRel);
        }
        let rstats = &self.stats.reactors[self.id];
        if c.rbuf.capacity() > 0 {
            recycle_read(&mut self.pool, c.rbuf, rstats);
        }
        if c.out.wbuf.capacity() > 0 {
            recycle_write(&mut self.pool, c.out.wbuf, rstats);
        }
        for p in c.out.parked {
            if let Parked::Ready(b) = p {
                recycle_write(&mut self.pool, b, rstats);
            }
        }
        // Dropping the stream closes the fd, which also removes it from epoll.
        drop(c.sock);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 point 14: a buffer a large request or response grew is
    /// freed, not pooled at its grown size to be handed out again.
    #[test]
    fn grown_buffers_are_freed_not_pooled() {
        let stats = ReactorStats::default();
        let mut pool = BufPool::default();
        recycle_read(&mut pool, vec![0; 4 * READ_BUF_BYTES], &stats);
        assert_eq!(pool.take_read(READ_BUF_BYTES).capacity(), READ_BUF_BYTES);
        recycle_write(
            &mut pool,
            Vec::with_capacity(WRITE_BUF_KEEP_BYTES + 1),
            &stats,
        );
        assert!(pool.take().capacity() <= WRITE_BUF_KEEP_BYTES);
        assert_eq!(stats.buffers_released.get(), 2);
        // Normal ones are reused.
        let b = Vec::with_capacity(4096);
        let p = b.as_ptr();
        recycle_write(&mut pool, b, &stats);
        let again = pool.take();
        assert_eq!(again.as_ptr(), p);
        assert_eq!(stats.buffers_released.get(), 2);
    }
}
