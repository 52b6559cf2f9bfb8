//! Proves the network core over real loopback sockets: pipelining order
//! (also when deferred requests complete out of order), framing errors,
//! limits, timeouts, connection caps and graceful shutdown.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use flashd_protocol::{parse_response, ParsedResponse, Request};
use flashd_reactor::{Completer, Context, Handler, Server, ServerConfig, ServerHandle, Ticket};

/// `/fast` answers inline; `/slow?MS` is deferred to a thread that sleeps MS
/// milliseconds, so responses complete out of order.
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
    s.write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
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
    s.write_all(b"GET /slow?150 HTTP/1.1\r\n\r\nGET /fast HTTP/1.1\r\n\r\nGET /slow?10 HTTP/1.1\r\n\r\nGET /fast2 HTTP/1.1\r\n\r\n")
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
    s.write_all(b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\n\r\n")
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
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
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
    s.write_all(b"POST /up HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 413);
    assert!(closed(&mut s));

    let mut s = connect(h.local_addr());
    s.write_all(b"POST /up HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc")
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
    s.write_all(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
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
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
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
    s.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
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
        s.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_responses(s, 1)[0].status, 200);
    }
    let mut s = connect(h.local_addr());
    let _ = s.write_all(b"GET /x HTTP/1.1\r\n\r\n");
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].status, 503);
    assert_eq!(r[0].header("retry-after"), Some("1"));
    assert_eq!(h.stats().refused.get(), 1);
    // Existing connections are unaffected; after one closes, a new one fits.
    held.pop().unwrap().shutdown(Shutdown::Both).unwrap();
    thread::sleep(Duration::from_millis(100));
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /again HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].status, 200);
    h.shutdown();
    h.join().unwrap();
}

#[test]
fn shutdown_finishes_in_flight_then_stops() {
    let h = start(cfg());
    let addr = h.local_addr();
    let mut busy = connect(addr);
    busy.write_all(b"GET /slow?300 HTTP/1.1\r\n\r\n").unwrap();
    let mut idle = connect(addr);
    idle.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
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
    s.write_all(b"GET /slow?200 HTTP/1.1\r\n\r\nGET /slow?200 HTTP/1.1\r\n\r\nGET /slow?200 HTTP/1.1\r\n\r\nGET /fast HTTP/1.1\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 4);
    let st: Vec<u16> = r.iter().map(|r| r.status).collect();
    assert_eq!(st, [200, 200, 503, 200]);
    h.shutdown();
    h.join().unwrap();
}
