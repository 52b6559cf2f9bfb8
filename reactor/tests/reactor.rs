//! Proves the network core over real loopback sockets: pipelining order
//! (also when deferred requests complete out of order), framing errors,
//! limits, timeouts (deferred requests' too, and their late completions),
//! HEAD answers without bodies, graceful close with input unread, buffers
//! given back, connection caps and graceful shutdown.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use flashd_protocol::{parse_head_response, parse_response, Limits, ParsedResponse, Request};
use flashd_reactor::{
    Completer, Context, Handler, Server, ServerConfig, ServerHandle, ServerStats, Ticket,
};

/// `/fast` answers inline; `/slow?MS` is deferred to a thread that sleeps MS
/// milliseconds, so responses complete out of order; `/big?N` answers N
/// bytes.
struct TestHandler {
    completer: Completer<String>,
}

impl Handler for TestHandler {
    type Deferred = String;

    fn handle(&mut self, req: &Request<'_>, cx: &mut Context<'_>) {
        cx.set_route(1);
        match req.path {
            "/slow" => {
                let ms: u64 = req.query.and_then(|q| q.parse().ok()).unwrap_or(10);
                let Some(t): Option<Ticket> = cx.defer() else {
                    return cx.respond_error(503, "overloaded", "busy", &[("Retry-After", "1")]);
                };
                let completer = self.completer.clone();
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(ms));
                    completer.complete(t, format!("slow {ms}"));
                });
            }
            "/big" => {
                let n: usize = req.query.and_then(|q| q.parse().ok()).unwrap_or(0);
                cx.respond(200, "text/plain", &[], &vec![b'b'; n]);
            }
            _ => {
                let body = format!("{} {}", req.path, req.body.len());
                cx.respond(200, "text/plain", &[], body.as_bytes());
            }
        }
    }

    fn complete(&mut self, d: String, cx: &mut Context<'_>) {
        cx.respond(200, "text/plain", &[], d.as_bytes());
    }
}

fn start(cfg: ServerConfig) -> ServerHandle {
    let server = Server::<String>::bind(cfg).unwrap();
    let completer = server.completer();
    server
        .start(move |_| TestHandler {
            completer: completer.clone(),
        })
        .unwrap()
}

fn cfg() -> ServerConfig {
    ServerConfig {
        sub_reactors: 2,
        ..ServerConfig::default()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Read until `n` responses are parsed (or the peer closes).
fn read_responses(s: &mut TcpStream, n: usize) -> Vec<ParsedResponse> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    while out.len() < n {
        while let Some((r, used)) = parse_response(&buf).unwrap() {
            buf.drain(..used);
            out.push(r);
            if out.len() == n {
                return out;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    out
}

/// True if the server closed the connection (EOF) within the read timeout.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn three_requests_in_one_write_answered_in_order() {
    let h = start(cfg());
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    let r = read_responses(&mut s, 3);
    let bodies: Vec<_> = r.iter().map(|r| r.body_str().to_string()).collect();
    assert_eq!(bodies, ["/a 0", "/b 0", "/c 2"]);
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn deferred_responses_keep_request_order() {
    let h = start(cfg());
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /slow?150 HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\nGET /slow?10 HTTP/1.1\r\nHost: x\r\n\r\nGET /fast2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 4);
    let bodies: Vec<_> = r.iter().map(|r| r.body_str().to_string()).collect();
    assert_eq!(bodies, ["slow 150", "/fast 0", "slow 10", "/fast2 0"]);
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn one_byte_writes_are_answered() {
    let h = start(cfg());
    let mut s = connect(h.local_addr());
    let req = b"POST /bytes HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    for b in req.iter() {
        s.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_micros(200));
    }
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].body_str(), "/bytes 5");
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn garbage_is_400_and_closes() {
    let h = start(cfg());
    let mut s = connect(h.local_addr());
    s.write_all(b"\x16\x03\x01 this is not http\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 400);
    assert_eq!(r[0].header("connection"), Some("close"));
    let v: serde_json::Value = serde_json::from_slice(&r[0].body).unwrap();
    assert_eq!(v["error"], "bad_request");
    assert!(closed(&mut s));
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn http10_and_connection_close_close() {
    let h = start(cfg());
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /x HTTP/1.0\r\n\r\n").unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 200);
    assert!(closed(&mut s));

    let mut s = connect(h.local_addr());
    s.write_all(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /y HTTP/1.0\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 2);
    assert_eq!(r[0].header("connection"), Some("keep-alive"));
    assert_eq!(r[1].body_str(), "/y 0");
    assert!(closed(&mut s));

    let mut s = connect(h.local_addr());
    // Requests after the `Connection: close` one are not served.
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 2);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].header("connection"), Some("close"));
    assert!(closed(&mut s));
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn header_and_body_limits() {
    let h = start(cfg());
    let mut s = connect(h.local_addr());
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    while req.len() < 40 * 1024 {
        req.extend_from_slice(
            b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    req.extend_from_slice(b"\r\n");
    let _ = s.write_all(&req);
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 431);

    // 413 arrives although not one body byte was sent.
    let mut s = connect(h.local_addr());
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 413);
    assert!(closed(&mut s));

    let mut s = connect(h.local_addr());
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc")
        .unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 400);
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn expect_100_continue() {
    let h = start(cfg());
    let mut s = connect(h.local_addr());
    s.write_all(
        b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 100);
    s.write_all(b"body").unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!((r[0].status, r[0].body_str()), (200, "/e 4"));
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn trickled_headers_cut_at_header_timeout_and_idle_closed_at_idle_timeout() {
    let h = start(ServerConfig {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..cfg()
    });
    // Slowloris: a header line every 100 ms never completes the head.
    let mut s = connect(h.local_addr());
    let t0 = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        let _ = s.write_all(b"X-Slow: 1\r\n");
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "slowloris was never cut off"
        );
    }
    let cut = t0.elapsed();
    assert!(
        cut >= Duration::from_millis(290) && cut < Duration::from_millis(1000),
        "{cut:?}"
    );
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // Idle keep-alive connection: closed at idle_timeout after its response.
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    read_responses(&mut s, 1);
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(closed(&mut s));
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(580) && idle < Duration::from_millis(1500),
        "{idle:?}"
    );
    let st = h.stats();
    assert!(
        st.reactors
            .iter()
            .map(|r| r.header_timeouts.get())
            .sum::<u64>()
            >= 1
    );
    assert!(
        st.reactors
            .iter()
            .map(|r| r.idle_timeouts.get())
            .sum::<u64>()
            >= 1
    );
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn connections_over_the_cap_are_refused_politely() {
    let h = start(ServerConfig {
        max_connections: 3,
        ..cfg()
    });
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(h.local_addr())).collect();
    // Make sure all three are registered before the fourth arrives.
    for s in held.iter_mut() {
        s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_responses(s, 1)[0].status, 200);
    }
    let mut s = connect(h.local_addr());
    let _ = s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 503);
    assert_eq!(r[0].header("retry-after"), Some("1"));
    assert_eq!(h.stats().refused.get(), 1);
    // Existing connections are unaffected; after one closes, a new one fits.
    held.pop().unwrap().shutdown(Shutdown::Both).unwrap();
    thread::sleep(Duration::from_millis(100));
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].status, 200);
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn shutdown_finishes_in_flight_then_stops() {
    let h = start(cfg());
    let addr = h.local_addr();
    let mut busy = connect(addr);
    busy.write_all(b"GET /slow?300 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut idle = connect(addr);
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_responses(&mut idle, 1);
    thread::sleep(Duration::from_millis(50));
    h.shutdown();
    // The idle connection is closed at once, the busy one gets its answer
    // (marked close) and then is closed.
    assert!(closed(&mut idle));
    let r = read_responses(&mut busy, 1);
    assert_eq!(r[0].body_str(), "slow 300");
    assert_eq!(r[0].header("connection"), Some("close"));
    assert!(closed(&mut busy));
    h.join().unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener still open after shutdown"
    );
}

#[test]
fn deferral_limit_answers_503_not_overflow() {
    let h = start(ServerConfig {
        completion_ring: 2,
        sub_reactors: 1,
        ..cfg()
    });
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /slow?200 HTTP/1.1\r\nHost: x\r\n\r\nGET /slow?200 HTTP/1.1\r\nHost: x\r\n\r\nGET /slow?200 HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 4);
    let st: Vec<u16> = r.iter().map(|r| r.status).collect();
    assert_eq!(st, [200, 200, 503, 200]);
    h.shutdown();
    h.join().unwrap();
}

/// Read one response per entry of `head`, in order; `true` marks the answer
/// to a HEAD request (no body follows whatever its Content-Length says).
/// Returns them and whatever bytes came after the last one before EOF.
fn read_mixed(s: &mut TcpStream, head: &[bool]) -> (Vec<ParsedResponse>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        while out.len() < head.len() {
            let parsed = if head[out.len()] {
                parse_head_response(&buf)
            } else {
                parse_response(&buf)
            };
            match parsed.unwrap() {
                Some((r, used)) => {
                    buf.drain(..used);
                    out.push(r);
                }
                None => break,
            }
        }
        if out.len() == head.len() {
            return (out, buf);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return (out, buf),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

fn sum(stats: &ServerStats, f: impl Fn(&flashd_reactor::ReactorStats) -> u64) -> u64 {
    stats.reactors.iter().map(|r| f(r)).sum()
}

/// Wait up to `limit` for `cond`.
fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// RFC 9110 §9.3.2: a HEAD answer is the GET's head, Content-Length
/// included, and no body: inline, deferred, behind a deferred one, and for
/// an error. A body would be read as the next response, so the GETs after
/// each HEAD on the same connection prove nothing was left in the stream.
#[test]
fn head_answers_carry_no_body_inline_deferred_and_errors() {
    let h = start(cfg());
    let mut s = connect(h.local_addr());
    s.write_all(
        b"HEAD /fast HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /fast HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /slow?60 HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /fast HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /slow?5 HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /big?100000 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let (r, _) = read_mixed(&mut s, &[true, false, true, true, false, true, false]);
    let got: Vec<(u16, Option<&str>, &str)> = r
        .iter()
        .map(|r| (r.status, r.header("content-length"), r.body_str()))
        .collect();
    assert_eq!(
        got,
        [
            (200, Some("7"), ""),
            (200, Some("7"), "/fast 0"),
            (200, Some("7"), ""),
            (200, Some("7"), ""),
            (200, Some("6"), "slow 5"),
            (200, Some("100000"), ""),
            (200, Some("8"), "/after 0"),
        ]
    );

    // A refused HEAD request: the error's head, its length, no body, then
    // the connection closes with nothing more in the stream.
    let mut s = connect(h.local_addr());
    s.write_all(b"HEAD /x HTTP/1.1\r\n\r\n").unwrap();
    let (r, rest) = read_mixed(&mut s, &[true]);
    assert_eq!(r[0].status, 400);
    assert!(
        r[0].header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );
    assert_eq!(r[0].header("connection"), Some("close"));
    let mut tail = rest;
    let _ = s.read_to_end(&mut tail);
    assert!(tail.is_empty(), "{}", String::from_utf8_lossy(&tail));
    h.shutdown();
    h.join().unwrap();
}

/// Issue 14 point 2: a deferred request gets its answer within
/// request_timeout even if its completion never comes in time: 503, JSON
/// error "timeout", Retry-After, in its place in the pipeline. Its late
/// completion is dropped, and it arrives while a later deferred request on
/// the same connection is pending: that one still gets its own answer.
#[test]
fn a_deferred_request_past_request_timeout_is_503_and_its_late_completion_is_dropped() {
    let h = start(ServerConfig {
        sub_reactors: 1,
        request_timeout: Duration::from_millis(500),
        ..cfg()
    });
    let mut s = connect(h.local_addr());
    let t0 = Instant::now();
    s.write_all(
        b"GET /slow?1200 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /fast HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /slow?1200 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /slow?20 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let (r, _) = read_mixed(&mut s, &[false, false, true, false]);
    let answered = t0.elapsed();
    assert!(
        answered >= Duration::from_millis(490) && answered < Duration::from_millis(1100),
        "answered after {answered:?}"
    );
    assert_eq!(r[0].status, 503);
    assert_eq!(r[0].header("retry-after"), Some("1"));
    let v: serde_json::Value = serde_json::from_slice(&r[0].body).unwrap();
    assert_eq!(v["error"], "timeout");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("unknown") && msg.contains("request_id"),
        "{msg}"
    );
    assert_eq!((r[1].status, r[1].body_str()), (200, "/fast 0"));
    // The HEAD one timed out too: the same 503 head, no body.
    assert_eq!((r[2].status, r[2].body_str()), (503, ""));
    assert_eq!((r[3].status, r[3].body_str()), (200, "slow 20"));

    // At ~900 ms a new deferred request; the two late completions come back
    // at ~1200 ms while it is pending; it completes at ~1300 ms.
    thread::sleep(Duration::from_millis(900).saturating_sub(t0.elapsed()));
    s.write_all(b"GET /slow?400 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!((r[0].status, r[0].body_str()), (200, "slow 400"));
    s.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!((r[0].status, r[0].body_str()), (200, "/fast 0"));

    let st = h.stats().clone();
    assert_eq!(sum(&st, |r| r.request_timeouts.get()), 2);
    assert!(eventually(Duration::from_secs(3), || sum(&st, |r| r
        .late_completions
        .get())
        == 2));
    assert!(eventually(Duration::from_secs(1), || st.reactors[0]
        .deferred_in_flight
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0));
    h.shutdown();
    h.join().unwrap();
}

/// A request that starts on a keep-alive connection after an earlier one
/// was answered is on the header clock, not the (longer) idle clock: the
/// timer follows a deadline that moves earlier.
#[test]
fn header_timeout_holds_for_later_requests_on_a_keep_alive_connection() {
    let h = start(ServerConfig {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(4),
        ..cfg()
    });
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].status, 200);
    // Past the first request's header deadline, so the only timer entry
    // left is the idle one.
    thread::sleep(Duration::from_millis(600));
    let t0 = Instant::now();
    s.write_all(b"GET /y HTTP/1.1\r\nHost: x\r\n").unwrap();
    let r = read_responses(&mut s, 1);
    let cut = t0.elapsed();
    assert_eq!(r[0].status, 408);
    assert!(
        cut >= Duration::from_millis(290) && cut < Duration::from_millis(1500),
        "{cut:?}"
    );
    h.shutdown();
    h.join().unwrap();
}

/// An error answered while the client is still sending (413 on a declared
/// body): the server shuts its write side and drains instead of closing
/// with input unread (a reset), so the client finishes sending, reads the
/// whole answer, then sees EOF.
#[test]
fn an_error_with_input_unread_closes_gracefully() {
    let h = start(cfg());
    let mut s = connect(h.local_addr());
    let mut req = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n".to_vec();
    req.extend_from_slice(&vec![b'u'; 512 * 1024]);
    s.write_all(&req)
        .expect("the server reset the connection while the client was sending");
    let r = read_responses(&mut s, 1);
    assert_eq!(r.len(), 1, "the answer was lost");
    assert_eq!(r[0].status, 413);
    assert!(closed(&mut s));
    assert!(sum(h.stats(), |r| r.lingering_closes.get()) >= 1);
    drop(s);
    let st = h.stats().clone();
    assert!(eventually(Duration::from_secs(1), || st
        .open
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0));
    h.shutdown();
    h.join().unwrap();
}

/// The same when the answer is still on its way: a large response, then an
/// error, while the client keeps sending and reads only later. Closing with
/// input unread would reset the connection and the kernel would drop what
/// it had not yet sent; lingering delivers every byte, then EOF.
#[test]
fn an_error_behind_a_large_response_is_delivered_whole() {
    const BIG: usize = 4 * 1024 * 1024;
    let h = start(cfg());
    for _ in 0..3 {
        let mut s = connect(h.local_addr());
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let mut req = format!("GET /big?{BIG} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
            req.extend_from_slice(b"BAD\r\n\r\n");
            let _ = w.write_all(&req);
            let junk = vec![b'j'; 16 * 1024];
            for _ in 0..16 {
                if w.write_all(&junk).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        thread::sleep(Duration::from_millis(100));
        let mut all = Vec::new();
        let mut chunk = [0u8; 65536];
        let end = loop {
            match s.read(&mut chunk) {
                Ok(0) => break "eof".to_string(),
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) => break format!("{e}"),
            }
        };
        writer.join().unwrap();
        let (big, used) = parse_response(&all)
            .unwrap()
            .expect("the large answer was cut");
        assert_eq!(big.body.len(), BIG);
        let bad = parse_response(&all[used..]).unwrap();
        assert_eq!(
            bad.map(|(r, _)| r.status),
            Some(400),
            "stream ended with {end}"
        );
        assert_eq!(end, "eof");
    }
    h.shutdown();
    h.join().unwrap();
}

/// Lingering is bounded: a peer that never closes is closed at
/// LINGER_TIMEOUT; one that keeps sending is closed after
/// LINGER_DRAIN_BYTES_MAX, well before.
#[test]
fn lingering_is_bounded_in_time_and_bytes() {
    use flashd_reactor::{LINGER_DRAIN_BYTES_MAX, LINGER_TIMEOUT};
    use std::sync::atomic::Ordering::Relaxed;
    let h = start(ServerConfig {
        sub_reactors: 1,
        ..cfg()
    });
    let st = h.stats().clone();
    let mut s = connect(h.local_addr());
    let t0 = Instant::now();
    s.write_all(b"GET /x HTTP/1.1\r\n\r\nleft unread").unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 400);
    assert!(closed(&mut s), "no FIN after the answer");
    // The peer keeps its side open: the server holds on, then gives up.
    thread::sleep(LINGER_TIMEOUT / 2);
    assert_eq!(st.open.load(Relaxed), 1);
    assert!(eventually(LINGER_TIMEOUT * 2, || st.open.load(Relaxed) == 0));
    let gone = t0.elapsed();
    assert!(
        gone >= LINGER_TIMEOUT - Duration::from_millis(50),
        "{gone:?}"
    );
    drop(s);

    let s = connect(h.local_addr());
    let mut w = s.try_clone().unwrap();
    let t0 = Instant::now();
    let writer = thread::spawn(move || {
        let _ = w.write_all(b"GET /x HTTP/1.1\r\n\r\n");
        let junk = vec![b'j'; 64 * 1024];
        let mut sent = 0;
        while sent < 4 * LINGER_DRAIN_BYTES_MAX && w.write_all(&junk).is_ok() {
            sent += junk.len();
        }
    });
    assert!(eventually(LINGER_TIMEOUT, || st.open.load(Relaxed) == 0));
    assert!(t0.elapsed() < LINGER_TIMEOUT, "{:?}", t0.elapsed());
    writer.join().unwrap();
    drop(s);
    h.shutdown();
    h.join().unwrap();
}

/// Issue 14 point 14: a large request body or response grows the
/// connection's buffers; after that request they are freed, not kept for
/// the connection's life or pooled at their grown size.
#[test]
fn large_buffers_are_given_back_after_their_request() {
    let h = start(ServerConfig {
        sub_reactors: 1,
        limits: Limits {
            max_body_bytes: 256 * 1024,
            ..Limits::default()
        },
        ..cfg()
    });
    let st = h.stats().clone();
    let released = || sum(&st, |r| r.buffers_released.get());
    let mut s = connect(h.local_addr());
    let mut req = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n".to_vec();
    req.extend_from_slice(&vec![b'u'; 200_000]);
    // A small request pipelined behind it keeps the read buffer in use.
    req.extend_from_slice(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(&req).unwrap();
    let r = read_responses(&mut s, 2);
    assert_eq!(r[0].body_str(), "/up 200000");
    assert_eq!(r[1].body_str(), "/small 0");
    assert!(eventually(Duration::from_secs(1), || released() >= 1));
    let before = released();
    s.write_all(b"GET /big?300000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].body.len(), 300_000);
    assert!(eventually(Duration::from_secs(1), || released() > before));
    // Ordinary requests release nothing.
    let before = released();
    for _ in 0..20 {
        s.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        read_responses(&mut s, 1);
    }
    assert_eq!(released(), before);
    h.shutdown();
    h.join().unwrap();
}
