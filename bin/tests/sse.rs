//! Proves the live stock stream and the dashboard's endpoints against the
//! running binary over real connections: a subscriber sees buys as events
//! that match `GET` of the sale; `Last-Event-ID` skips what the client has
//! and catches it up when it is stale; the subscriber cap answers 503 JSON
//! and is counted in `/metrics`; the stream ends with the sale (and a
//! reconnect after the end is closed at once); the dashboard's data needs
//! the admin token; the pages are served from the binary.
//! (A reader that stops reading is dropped: reactor/tests/stream.rs, where
//! events can be made large enough to fill the socket buffers quickly.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const FAST: &str = "[sse]\nmin_interval_ms = 20\nheartbeat_ms = 1000\n";

fn open_stream(addr: SocketAddr, sale: u64, last_id: Option<u64>) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let extra = last_id
        .map(|i| format!("Last-Event-ID: {i}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /api/v1/activities/{sale}/stream HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{extra}\r\n"
    )
    .unwrap();
    s
}

/// What a stream has said so far, and whether it closed.
#[derive(Default)]
struct Seen {
    text: String,
    closed: bool,
}

impl Seen {
    /// `(id, event type, data)` of every complete event.
    fn events(&self) -> Vec<(u64, String, Value)> {
        let body = self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        body.split("\n\n")
            .filter_map(|block| {
                let mut id = None;
                let mut kind = "message".to_string();
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).ok();
                    }
                }
                Some((id?, kind, data?))
            })
            .collect()
    }
}

/// Read for up to `within`, until `done` holds or the server closes.
fn read_for(s: &mut TcpStream, seen: &mut Seen, within: Duration, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 16384];
    while !done(seen) && !seen.closed && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => seen.closed = true,
            Ok(n) => seen.text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => seen.closed = true,
        }
    }
}

fn buy(addr: SocketAddr, sale: u64, user: u64) {
    let r = request(addr, &buy_req(sale, user, 1, &format!("r{user}")));
    assert_eq!(r.status, 201, "{}", r.body_str());
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let r = request(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    r.body_str()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn a_subscriber_sees_each_buy_and_the_counters_match_the_api() {
    raise_nofile();
    let f = Flashd::start(&sale_config(FAST));
    let sale = create(f.addr, 10, 1, -5, 3600);
    let mut s = open_stream(f.addr, sale, None);
    let mut seen = Seen::default();
    read_for(&mut s, &mut seen, Duration::from_secs(5), |s| {
        !s.events().is_empty()
    });
    assert!(
        seen.text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        seen.text
    );
    assert!(seen.text.contains("Content-Type: text/event-stream\r\n"));
    assert!(seen.text.contains("\r\n\r\nretry: 2000\n\n"));
    let (first_id, kind, data) = seen.events()[0].clone();
    assert_eq!(kind, "message");
    assert_eq!(data["activity_id"], sale);
    assert_eq!(data["remaining"], 10);
    assert_eq!(data["state"], "open");
    assert_eq!(metric(f.addr, "flashd_sse_subscribers"), 1);

    for user in 1..=3 {
        buy(f.addr, sale, user);
    }
    read_for(&mut s, &mut seen, Duration::from_secs(5), |s| {
        s.events().last().is_some_and(|e| e.2["remaining"] == 7)
    });
    let events = seen.events();
    let (last_id, _, last) = events.last().unwrap().clone();
    assert_eq!(last["remaining"], 7, "{}", seen.text);
    let api = activity(f.addr, sale);
    for k in ["remaining", "sold", "reserved", "state"] {
        assert_eq!(last[k], api[k], "{k}");
    }
    assert!(
        events.windows(2).all(|w| w[0].0 < w[1].0),
        "ids increase: {events:?}"
    );
    assert!(last_id > first_id);
    assert!(metric(f.addr, "flashd_sse_events_total") >= 2);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(f.addr, "flashd_sse_subscribers") != 0 {
        assert!(Instant::now() < deadline, "subscriber still counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn last_event_id_skips_what_the_client_has_and_catches_up_a_stale_one() {
    raise_nofile();
    let f = Flashd::start(&sale_config(FAST));
    let sale = create(f.addr, 10, 1, -5, 3600);
    let mut s = open_stream(f.addr, sale, None);
    let mut seen = Seen::default();
    read_for(&mut s, &mut seen, Duration::from_secs(5), |s| {
        !s.events().is_empty()
    });
    let current = seen.events()[0].0;
    drop(s);

    // Has the current event: the head, and nothing until something changes.
    let mut a = open_stream(f.addr, sale, Some(current));
    let mut sa = Seen::default();
    read_for(&mut a, &mut sa, Duration::from_millis(600), |_| false);
    assert!(sa.text.contains("retry: 2000"), "{}", sa.text);
    assert!(sa.events().is_empty(), "{}", sa.text);
    // A stale id: the current state at once.
    let mut b = open_stream(f.addr, sale, Some(current - 1));
    let mut sb = Seen::default();
    read_for(&mut b, &mut sb, Duration::from_secs(5), |s| {
        !s.events().is_empty()
    });
    assert_eq!(sb.events()[0].0, current);

    buy(f.addr, sale, 1);
    read_for(&mut a, &mut sa, Duration::from_secs(5), |s| {
        !s.events().is_empty()
    });
    let (id, _, data) = sa.events()[0].clone();
    assert!(id > current);
    assert_eq!(data["remaining"], 9);
}

#[test]
fn past_the_cap_subscribers_get_503_json() {
    raise_nofile();
    let f = Flashd::start(&sale_config(&format!("{FAST}max_subscribers = 2\n")));
    let sale = create(f.addr, 10, 1, -5, 3600);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = open_stream(f.addr, sale, None);
            let mut seen = Seen::default();
            read_for(&mut s, &mut seen, Duration::from_secs(5), |s| {
                !s.events().is_empty()
            });
            s
        })
        .collect();
    let mut third = open_stream(f.addr, sale, None);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let r = read_responses(&mut third, 1).pop().expect("an answer");
    assert_eq!(r.status, 503);
    assert_eq!(json(&r)["error"], "too_many_subscribers");
    assert_eq!(metric(f.addr, "flashd_sse_refused_total"), 1);
    assert_eq!(metric(f.addr, "flashd_sse_subscribers"), 2);
    assert_eq!(metric(f.addr, "flashd_sse_subscribers_max"), 2);
    // A sale that does not exist is a 404, not a stream.
    let r = request(
        f.addr,
        "GET /api/v1/activities/999/stream HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 404);
    drop(held);
}

#[test]
fn the_stream_ends_when_the_sale_ends() {
    raise_nofile();
    let f = Flashd::start(&sale_config(FAST));
    let sale = create(f.addr, 10, 1, -5, 2);
    let mut s = open_stream(f.addr, sale, None);
    let mut seen = Seen::default();
    read_for(&mut s, &mut seen, Duration::from_secs(10), |_| false);
    assert!(seen.closed, "the server closed the stream: {}", seen.text);
    let events = seen.events();
    let (end_id, kind, data) = events.last().unwrap().clone();
    assert_eq!(kind, "end", "{}", seen.text);
    assert_eq!(data["state"], "ended");
    assert_eq!(events[0].2["state"], "open");
    // Reconnecting with the final id: closed at once, nothing sent.
    let mut again = open_stream(f.addr, sale, Some(end_id));
    let mut seen = Seen::default();
    read_for(&mut again, &mut seen, Duration::from_secs(5), |_| false);
    assert!(seen.closed);
    assert!(seen.events().is_empty(), "{}", seen.text);
    // Without an id: the final event, then closed.
    let mut fresh = open_stream(f.addr, sale, None);
    let mut seen = Seen::default();
    read_for(&mut fresh, &mut seen, Duration::from_secs(5), |_| false);
    assert!(seen.closed);
    assert_eq!(seen.events().len(), 1);
    assert_eq!(seen.events()[0].1, "end");
}

#[test]
fn the_dashboard_data_needs_the_admin_token_and_the_pages_are_served() {
    raise_nofile();
    let f = Flashd::start(&sale_config(FAST));
    let sale = create(f.addr, 10, 1, -5, 3600);
    buy(f.addr, sale, 1);
    let r = request(f.addr, &get("/api/v1/dashboard", "wrong-token"));
    assert_eq!(r.status, 401);
    let r = request(f.addr, "GET /api/v1/dashboard HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 401);
    let r = request(f.addr, &get("/api/v1/dashboard", ADMIN));
    assert_eq!(r.status, 200, "{}", r.body_str());
    let d = json(&r);
    assert_eq!(d["orders_created"], 1);
    assert_eq!(d["sales"][0]["id"], sale);
    assert_eq!(d["sales"][0]["remaining"], 9);
    assert_eq!(d["sales"][0]["reserved"], 1);
    assert_eq!(d["rejected"]["sold_out"], 0);
    let bounds = d["latency_bounds_ns"].as_array().unwrap().len();
    let buckets = d["latency"]["place_order"].as_array().unwrap();
    assert_eq!(buckets.len(), bounds + 1);
    assert_eq!(buckets.iter().map(|b| b.as_u64().unwrap()).sum::<u64>(), 1);
    assert_eq!(d["log"]["breaker_open"], false);
    assert!(d["log"]["commits"].as_u64().unwrap() >= 2);

    for (path, marker) in [
        ("/dashboard", "flashd dashboard"),
        (&format!("/activities/{sale}") as &str, "flashd sale"),
    ] {
        let r = request(f.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert_eq!(r.status, 200);
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(r.body_str().contains(marker), "{path}");
        // Nothing is loaded from anywhere else.
        assert!(!r.body_str().contains("http://") && !r.body_str().contains("https://"));
    }
    let r = request(f.addr, "GET /activities/x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 404);
}
