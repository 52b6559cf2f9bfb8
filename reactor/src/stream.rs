//! Long-lived streamed responses: a connection that subscribes to a topic
//! (server-sent events) and is written the topic's latest event as it
//! changes, until the topic ends or the peer goes.
//!
//! A handler turns a request into a subscription with
//! [`crate::Context::subscribe`]: the reactor writes a close-delimited
//! `200` head, stops reading requests from that connection, and from then
//! on owns it as a subscriber of a topic (a number the handler picks; the
//! reactor knows nothing of what it means). Every `poll_interval` the
//! reactor asks its handler, once per topic that has subscribers on this
//! reactor, whether the topic has an event newer than the one it holds
//! ([`crate::Handler::poll_stream`]); the handler answers with shared bytes
//! (`Arc<[u8]>`), encoded once for every subscriber of every reactor.
//!
//! Each event carries the whole state, so a subscriber that falls behind
//! needs only the latest one: nothing is queued per subscriber. The bytes
//! are written straight from the shared buffer; only the unwritten tail of
//! a partial write is copied, so a subscriber holds at most one event's
//! remainder (plus, when the topic ends, the final event). One whose
//! socket takes nothing for `stall_timeout` is dropped rather than
//! buffered for. An idle subscriber holds no buffer at all: its cost is
//! its slot in the reactor's connection slab and one entry in its topic's
//! list.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashd_protocol::date;

/// One encoded event of a topic. `id` increases with every new event of
/// the topic; `last` ends the stream once written.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    pub id: u64,
    pub bytes: Arc<[u8]>,
    pub last: bool,
}

/// The streaming settings of the network core.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Subscribers on the whole server (all reactors); a subscription past
    /// it is refused ([`SubscribeError::Full`]).
    pub max_subscribers: usize,
    /// How often each reactor asks its handler for newer events of the
    /// topics it has subscribers for (also the shortest gap between two
    /// events a subscriber can see).
    pub poll_interval: Duration,
    /// Heartbeat passes run this often; each writes a comment line to the
    /// subscribers written nothing since the last one, so proxies and
    /// clients see a live connection (a byte at least every two of these).
    pub heartbeat: Duration,
    /// A subscriber whose socket takes nothing for this long while an
    /// event waits for it is dropped.
    pub stall_timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_subscribers: 50_000,
            poll_interval: Duration::from_millis(100),
            heartbeat: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(10),
        }
    }
}

/// Why [`crate::Context::subscribe`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("the server has as many stream subscribers as it allows")]
    Full,
    /// A `HEAD` request, or a deferred request's completion: there is no
    /// connection to hand over.
    #[error("this request cannot become a stream")]
    NotHere,
}

/// The heartbeat: an SSE comment, ignored by clients.
pub(crate) const HEARTBEAT: &[u8] = b":\n\n";

/// Write the head of a close-delimited event stream. No `Content-Length`
/// and no chunking: the body is everything until the server closes
/// (RFC 9112 §6.3), so every subscriber is written the same bytes.
pub(crate) fn write_head(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: flashd\r\nDate: ");
    out.extend_from_slice(&date::current());
    out.extend_from_slice(
        b"\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
          X-Accel-Buffering: no\r\nConnection: close\r\n\r\n",
    );
}

/// What a handler asked for while answering a request, taken up by the
/// reactor once the handler returns.
pub(crate) struct Subscribe {
    pub topic: u64,
    /// The id of the last event the connection has (written now, or the
    /// client's `Last-Event-ID`).
    pub sent_id: u64,
    pub event: StreamEvent,
    /// `event` went out with the head.
    pub wrote_current: bool,
}

/// What a request's [`crate::Context`] may offer: the server-wide count
/// and its cap, and the subscription once taken.
pub(crate) struct Offer<'c> {
    pub count: &'c AtomicUsize,
    pub max: usize,
    /// The reactor's own slot, filled in place: moving a subscription out
    /// of every request's context was ~10 instructions a request.
    pub taken: &'c mut Option<Subscribe>,
}

impl Offer<'_> {
    /// Take one of the server's subscriber places, if any is left.
    pub fn reserve(&self) -> bool {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }
}

/// A connection's side of its subscription.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub topic: u64,
    /// Id of the newest event written (or queued) to it.
    pub sent_id: u64,
    /// Its index in its topic's subscriber list.
    pub slot: usize,
}

/// One topic's subscribers on one reactor.
pub(crate) struct Topic {
    pub latest: Option<StreamEvent>,
    /// Connection keys; each connection's `Subscription::slot` is its index.
    pub subs: Vec<usize>,
    /// A subscriber was left without `latest` (it could not take it, or
    /// it moved behind the cursor): the next poll starts a new pass.
    pub behind: bool,
    /// Where the write pass under way goes on (`None`: no pass).
    pub cursor: Option<usize>,
}

/// Every topic with subscribers on one reactor, and when to poll and beat.
pub(crate) struct Streams {
    pub topics: HashMap<u64, Topic>,
    pub subscribers: usize,
    /// Topics with a write pass under way.
    pub passes: usize,
    pub next_poll: Instant,
    pub next_heartbeat: Instant,
    /// Topic keys of a pass, reused so a pass allocates nothing.
    pub scratch: Vec<u64>,
    /// Connections a pass wrote to, for the reactor's after-I/O step.
    pub touched: Vec<usize>,
}

impl Streams {
    pub fn new(now: Instant, cfg: &StreamConfig) -> Streams {
        Streams {
            topics: HashMap::new(),
            subscribers: 0,
            passes: 0,
            next_poll: now + cfg.poll_interval,
            next_heartbeat: now + cfg.heartbeat,
            scratch: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Register connection `key`; returns its slot in the topic. The
    /// topic's latest event becomes `event` unless it already holds a
    /// newer one.
    pub fn add(&mut self, key: usize, topic: u64, event: StreamEvent) -> usize {
        let t = self.topics.entry(topic).or_insert_with(|| Topic {
            latest: None,
            subs: Vec::new(),
            behind: false,
            cursor: None,
        });
        if t.latest.as_ref().is_none_or(|l| l.id < event.id) {
            t.latest = Some(event);
        }
        t.subs.push(key);
        self.subscribers += 1;
        t.subs.len() - 1
    }

    /// Unregister the subscription in `slot` of `topic`; returns the key
    /// of the connection moved into that slot, whose `slot` must change.
    pub fn remove(&mut self, topic: u64, slot: usize) -> Option<usize> {
        let t = self.topics.get_mut(&topic)?;
        debug_assert!(slot < t.subs.len());
        t.subs.swap_remove(slot);
        self.subscribers -= 1;
        let moved = t.subs.get(slot).copied();
        if t.cursor.is_some_and(|c| slot < c) && moved.is_some() {
            // The last subscriber moved to where the pass has been: it
            // may have missed it.
            t.behind = true;
        }
        if t.subs.is_empty() {
            if t.cursor.is_some() {
                self.passes -= 1;
            }
            self.topics.remove(&topic);
        }
        moved
    }
}

/// Write `bytes` to `sock` from the shared buffer; what the socket does not
/// take now is copied into `wbuf` (the only per-subscriber copy). `Err`
/// means the connection is dead.
pub(crate) fn write_shared(
    sock: &mut mio::net::TcpStream,
    wbuf: &mut Vec<u8>,
    bytes: &[u8],
) -> io::Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        match sock.write(&bytes[at..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if at < bytes.len() {
        // The exact size: a stalled subscriber pins no more than this.
        wbuf.reserve_exact(bytes.len() - at);
        wbuf.extend_from_slice(&bytes[at..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u64) -> StreamEvent {
        StreamEvent {
            id,
            bytes: Arc::from(format!("id: {id}\n\n").into_bytes()),
            last: false,
        }
    }

    /// A topic keeps the newest event it was offered, whichever subscriber
    /// brought it; slots stay dense as subscribers leave.
    #[test]
    fn topics_keep_the_newest_event_and_dense_slots() {
        let now = Instant::now();
        let mut s = Streams::new(now, &StreamConfig::default());
        assert_eq!(s.add(10, 7, ev(5)), 0);
        assert_eq!(s.add(11, 7, ev(3)), 1);
        assert_eq!(s.topics[&7].latest.as_ref().unwrap().id, 5);
        assert_eq!(s.add(12, 7, ev(9)), 2);
        assert_eq!(s.topics[&7].latest.as_ref().unwrap().id, 9);
        assert_eq!(s.subscribers, 3);
        // Removing slot 0 moves the last (key 12) into it.
        assert_eq!(s.remove(7, 0), Some(12));
        assert_eq!(s.topics[&7].subs, [12, 11]);
        assert_eq!(s.remove(7, 1), None);
        assert_eq!(s.remove(7, 0), None);
        assert!(s.topics.is_empty(), "an empty topic is forgotten");
        assert_eq!(s.subscribers, 0);
    }

    /// A subscriber the pass has not reached, moved into a slot it has
    /// passed, is not lost: the topic is marked for a new pass. A topic
    /// that empties mid-pass ends its pass.
    #[test]
    fn a_subscriber_moved_behind_the_cursor_gets_a_new_pass() {
        let mut s = Streams::new(Instant::now(), &StreamConfig::default());
        for k in 0..4 {
            s.add(k, 7, ev(1));
        }
        s.topics.get_mut(&7).unwrap().cursor = Some(2);
        s.passes = 1;
        // Slot 3 (not reached) leaves: nothing moves behind the cursor.
        assert_eq!(s.remove(7, 3), None);
        assert!(!s.topics[&7].behind);
        // Slot 0 leaves: key 2 (not reached) moves into slot 0 (passed).
        assert_eq!(s.remove(7, 0), Some(2));
        assert!(s.topics[&7].behind);
        assert_eq!(s.remove(7, 0), Some(1));
        assert_eq!(s.remove(7, 0), None);
        assert!(s.topics.is_empty());
        assert_eq!(s.passes, 0);
    }

    /// The cap is exact across threads: places are taken by CAS.
    #[test]
    fn the_cap_is_exact() {
        let count = AtomicUsize::new(0);
        let mut taken = None;
        let offer = Offer {
            count: &count,
            max: 3,
            taken: &mut taken,
        };
        let got = (0..5).filter(|_| offer.reserve()).count();
        assert_eq!(got, 3);
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }

    /// What the socket does not take is kept, exactly; what it takes is
    /// never copied.
    #[test]
    fn a_partial_write_keeps_only_the_tail() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_nonblocking(true).unwrap();
        let (_peer, _) = l.accept().unwrap();
        let mut sock = mio::net::TcpStream::from_std(c);
        let mut wbuf = Vec::new();
        write_shared(&mut sock, &mut wbuf, b"small").unwrap();
        assert!(wbuf.is_empty());
        // The peer never reads: sooner or later the socket is full.
        let big = vec![b'x'; 1 << 20];
        let mut kept = 0;
        for _ in 0..64 {
            write_shared(&mut sock, &mut wbuf, &big).unwrap();
            if !wbuf.is_empty() {
                kept = wbuf.len();
                break;
            }
        }
        assert!(kept > 0 && kept <= big.len(), "{kept}");
        assert_eq!(wbuf.capacity(), kept, "no slack kept for a stalled peer");
    }
}
