//! Proves long-lived streams over real loopback sockets: a subscriber gets
//! the head and the current event at once, then each newer event the
//! handler reports (coalesced to the latest), heartbeats while idle, the
//! end of the topic closes it; the subscriber cap refuses with the
//! handler's answer; a reader that stops reading is dropped, not buffered
//! for; a client that already has the current event is not sent it again;
//! a pass over more subscribers than one turn writes to reaches them all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flashd_protocol::Request;
use flashd_reactor::{
    Context, Handler, Server, ServerConfig, ServerHandle, StreamConfig, StreamEvent, SubscribeError,
};

/// The topic's state as the test sets it: (id, payload size, last).
#[derive(Default)]
struct Topic {
    id: AtomicU64,
    size: AtomicU64,
    last: AtomicU64,
    /// Encodings made: one per id, whatever the number of subscribers.
    encoded: AtomicU64,
    cache: Mutex<Option<StreamEvent>>,
}

impl Topic {
    fn current(&self) -> StreamEvent {
        let id = self.id.load(Ordering::SeqCst);
        let mut cache = self.cache.lock().unwrap();
        if let Some(ev) = cache.as_ref().filter(|e| e.id == id) {
            return ev.clone();
        }
        self.encoded.fetch_add(1, Ordering::SeqCst);
        let size = self.size.load(Ordering::SeqCst) as usize;
        let mut bytes = format!("id: {id}\ndata: ").into_bytes();
        bytes.extend(std::iter::repeat_n(b'x', size));
        bytes.extend_from_slice(b"\n\n");
        let ev = StreamEvent {
            id,
            bytes: bytes.into(),
            last: self.last.load(Ordering::SeqCst) == 1,
        };
        *cache = Some(ev.clone());
        ev
    }
}

struct StreamHandler {
    topic: Arc<Topic>,
}

impl Handler for StreamHandler {
    type Deferred = ();

    fn handle(&mut self, req: &Request<'_>, cx: &mut Context<'_>) {
        cx.set_route(1);
        let last_id = req
            .header("last-event-id")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
        match cx.subscribe(7, last_id, self.topic.current(), b"retry: 1000\n\n") {
            Ok(()) => {}
            Err(SubscribeError::Full) => cx.respond_error(503, "full", "too many", &[]),
            Err(SubscribeError::NotHere) => cx.respond(200, "text/event-stream", &[], b""),
        }
    }

    fn complete(&mut self, _: (), _: &mut Context<'_>) {}

    fn poll_stream(&mut self, topic: u64, have_id: u64) -> Option<StreamEvent> {
        assert_eq!(topic, 7);
        let ev = self.topic.current();
        (ev.id > have_id).then_some(ev)
    }
}

fn start(stream: StreamConfig) -> (ServerHandle, Arc<Topic>) {
    let topic = Arc::new(Topic::default());
    topic.id.store(1, Ordering::SeqCst);
    topic.size.store(8, Ordering::SeqCst);
    let server = Server::<()>::bind(ServerConfig {
        sub_reactors: 2,
        stream,
        ..ServerConfig::default()
    })
    .unwrap();
    let t = topic.clone();
    let h = server
        .start(move |_| StreamHandler { topic: t.clone() })
        .unwrap();
    (h, topic)
}

fn fast() -> StreamConfig {
    StreamConfig {
        max_subscribers: 100,
        poll_interval: Duration::from_millis(10),
        heartbeat: Duration::from_millis(200),
        stall_timeout: Duration::from_millis(300),
    }
}

fn subscribe(addr: SocketAddr, last_id: Option<u64>) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let extra = last_id
        .map(|i| format!("Last-Event-ID: {i}\r\n"))
        .unwrap_or_default();
    write!(s, "GET /s HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
    s
}

/// Read until `pred` holds on what was read, or the peer closes.
fn read_until(s: &mut TcpStream, got: &mut String, pred: impl Fn(&str) -> bool) -> bool {
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pred(got) {
        if Instant::now() > deadline {
            panic!("timed out; read so far:\n{got}");
        }
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("{e}; read so far:\n{got}"),
        }
    }
    true
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_subscriber_gets_the_current_event_then_each_newer_one_until_the_end() {
    let (h, topic) = start(fast());
    let mut s = subscribe(h.local_addr(), None);
    let mut got = String::new();
    assert!(read_until(&mut s, &mut got, |g| g.contains("id: 1\n")));
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("Content-Type: text/event-stream\r\n"), "{got}");
    assert!(got.contains("Connection: close\r\n"), "{got}");
    assert!(!got.contains("Content-Length"), "close-delimited: {got}");
    assert!(got.contains("retry: 1000\n\n"));
    let stats = h.stats().clone();
    assert_eq!(stats.stream_subscribers.load(Ordering::SeqCst), 1);

    // Three changes between two polls reach the subscriber as one event:
    // each event is the whole state, so only the latest matters.
    topic.id.store(4, Ordering::SeqCst);
    assert!(read_until(&mut s, &mut got, |g| g.contains("id: 4\n")));
    assert!(!got.contains("id: 2\n") && !got.contains("id: 3\n"));

    // Idle: heartbeat comments.
    assert!(read_until(&mut s, &mut got, |g| g.contains("\n:\n\n")));

    // The last event ends the stream: the server closes after it.
    topic.last.store(1, Ordering::SeqCst);
    topic.id.store(5, Ordering::SeqCst);
    assert!(!read_until(&mut s, &mut got, |_| false), "closed");
    assert!(got.ends_with("id: 5\ndata: xxxxxxxx\n\n"), "{got}");
    wait_for("the subscriber to be uncounted", || {
        stats.stream_subscribers.load(Ordering::SeqCst) == 0
    });
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn last_event_id_skips_what_the_client_has_and_many_share_one_encoding() {
    let (h, topic) = start(fast());
    topic.id.store(9, Ordering::SeqCst);
    // Has 9 already: the head, and nothing until 10.
    let mut a = subscribe(h.local_addr(), Some(9));
    // Has an older one: 9 at once.
    let mut b = subscribe(h.local_addr(), Some(3));
    let (mut ga, mut gb) = (String::new(), String::new());
    assert!(read_until(&mut b, &mut gb, |g| g.contains("id: 9\n")));
    assert!(read_until(&mut a, &mut ga, |g| g.contains("retry: 1000\n\n")));
    let mut others: Vec<TcpStream> = (0..20).map(|_| subscribe(h.local_addr(), None)).collect();
    for s in &mut others {
        let mut g = String::new();
        assert!(read_until(s, &mut g, |g| g.contains("id: 9\n")));
    }
    let encoded = topic.encoded.load(Ordering::SeqCst);
    topic.id.store(10, Ordering::SeqCst);
    assert!(read_until(&mut a, &mut ga, |g| g.contains("id: 10\n")));
    assert!(!ga.contains("id: 9\n"), "{ga}");
    for s in &mut others {
        let mut g = String::new();
        assert!(read_until(s, &mut g, |g| g.contains("id: 10\n")));
    }
    assert_eq!(
        topic.encoded.load(Ordering::SeqCst),
        encoded + 1,
        "one encoding of event 10 for 22 subscribers on 2 reactors"
    );
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn past_the_cap_the_handler_answers_and_a_place_frees_on_close() {
    let (h, _topic) = start(StreamConfig {
        max_subscribers: 2,
        ..fast()
    });
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        let mut s = subscribe(h.local_addr(), None);
        let mut g = String::new();
        assert!(read_until(&mut s, &mut g, |g| g.contains("id: 1\n")));
        held.push(s);
    }
    let mut third = subscribe(h.local_addr(), None);
    let mut g = String::new();
    read_until(&mut third, &mut g, |g| g.contains("\"full\""));
    assert!(g.starts_with("HTTP/1.1 503"), "{g}");
    drop(held.pop());
    let stats = h.stats().clone();
    wait_for("a freed place", || {
        stats.stream_subscribers.load(Ordering::SeqCst) == 1
    });
    let mut again = subscribe(h.local_addr(), None);
    let mut g = String::new();
    assert!(read_until(&mut again, &mut g, |g| g.contains("id: 1\n")));
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn a_reader_that_stops_reading_is_dropped_not_buffered_for() {
    let (h, topic) = start(fast());
    // Events of 256 KiB fill the socket buffers within a few events.
    topic.size.store(256 * 1024, Ordering::SeqCst);
    topic.id.store(2, Ordering::SeqCst);
    let s = subscribe(h.local_addr(), None);
    s.set_nonblocking(true).unwrap();
    let stats = h.stats().clone();
    wait_for("the subscriber", || {
        stats.stream_subscribers.load(Ordering::SeqCst) == 1
    });
    for id in 3..40 {
        topic.id.store(id, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(15));
    }
    wait_for("the slow reader to be dropped", || {
        stats.stream_subscribers.load(Ordering::SeqCst) == 0
    });
    let drops: u64 = stats
        .reactors
        .iter()
        .map(|r| r.stream_slow_drops.get())
        .sum();
    assert_eq!(drops, 1);
    // It was written far fewer events than were published: the rest were
    // skipped while it was behind, never queued.
    let events: u64 = stats.reactors.iter().map(|r| r.stream_events.get()).sum();
    assert!(events < 20, "{events}");
    drop(s);
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn head_is_answered_without_a_stream() {
    let (h, _topic) = start(fast());
    let mut s = TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"HEAD /s HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut g = String::new();
    read_until(&mut s, &mut g, |g| g.contains("\r\n\r\n"));
    assert!(g.starts_with("HTTP/1.1 200"), "{g}");
    assert_eq!(h.stats().stream_subscribers.load(Ordering::SeqCst), 0);
    h.shutdown();
    h.join().unwrap();
}

/// More subscribers than one turn writes to (`STREAM_WRITES_PER_TURN`):
/// the pass goes on over several turns and every subscriber gets the event.
#[test]
fn a_pass_larger_than_a_turn_reaches_every_subscriber() {
    let n = flashd_reactor::STREAM_WRITES_PER_TURN + 200;
    let (h, topic) = start(StreamConfig {
        max_subscribers: n,
        ..fast()
    });
    let mut subs: Vec<TcpStream> = (0..n).map(|_| subscribe(h.local_addr(), None)).collect();
    let stats = h.stats().clone();
    wait_for("every subscriber", || {
        stats.stream_subscribers.load(Ordering::SeqCst) == n
    });
    topic.id.store(2, Ordering::SeqCst);
    for s in &mut subs {
        let mut g = String::new();
        assert!(read_until(s, &mut g, |g| g.contains("id: 2\n")));
    }
    h.shutdown();
    h.join().unwrap();
}
