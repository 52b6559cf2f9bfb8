//! Proves issue 14 point 7 on the real `flashd` binary over loopback: HEAD
//! on every GET route is the GET's head without a body (checked by
//! pipelining the GET behind it), framing that could smuggle a request is
//! refused and closes the connection with nothing answered after it, and a
//! refused body still being sent gets its answer whole (graceful close).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use flashd_protocol::parse_head_response;

/// Read one answer per entry of `head` (true: the answer to a HEAD), then
/// whatever else the server sent before closing or going quiet.
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

/// Everything the server sends until it closes (or the read times out).
fn rest(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

#[test]
fn head_on_every_get_route_is_the_get_head_without_a_body() {
    let f = Flashd::start(&sale_config(""));
    let id = create(f.addr, 10, 1, -60, 3600);
    let auth = format!("Authorization: Bearer {}\r\n", token(42));
    let cases: Vec<(String, &str, u16)> = vec![
        ("/healthz".into(), "", 200),
        ("/readyz".into(), "", 200),
        (format!("/api/v1/activities/{id}"), "", 200),
        ("/api/v1/activities/999".into(), "", 404),
        ("/api/v1/orders/999".into(), auth.as_str(), 404),
        ("/api/v1/orders/999".into(), "", 401),
        ("/metrics".into(), "", 200),
        ("/nope".into(), "", 404),
        // The admin's list of sales: no token, 401, still no body.
        ("/api/v1/activities".into(), "", 401),
        // POST-only: 405 whose Allow does not list HEAD, still no body.
        (format!("/api/v1/activities/{id}/stock"), "", 405),
    ];
    let mut s = f.connect();
    for (path, extra, status) in &cases {
        let req = format!(
            "HEAD {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\nGET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let (r, _) = read_mixed(&mut s, &[true, false]);
        assert_eq!(r.len(), 2, "{path}: connection closed");
        let (head, get) = (&r[0], &r[1]);
        assert_eq!((head.status, get.status), (*status, *status), "{path}");
        assert!(head.body.is_empty());
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        let len: usize = head.header("content-length").unwrap().parse().unwrap();
        if path == "/metrics" {
            // Counters move between the two scrapes; the length is real.
            assert!(len > 1000, "{len}");
        } else {
            assert_eq!(len, get.body.len(), "{path}: {}", get.body_str());
        }
        if *status == 405 {
            assert_eq!(head.header("allow"), Some("POST"));
        }
    }
    // Nothing was left in the stream: the next answer is the right one.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_responses(&mut s, 1);
    assert_eq!(r[0].body_str(), r#"{"status":"ok"}"#);
}

/// Each refused message is followed in the same write by a request that a
/// desynchronised server would answer; flashd answers 400 (or 501) once and
/// closes, so nothing behind it is ever served.
#[test]
fn smuggling_attempts_are_refused_and_nothing_behind_them_is_served() {
    let f = Flashd::start("");
    let smuggled = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let cases: [(&str, &str, u16); 9] = [
        (
            "CL.TE",
            "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "TE.CL",
            "POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "TE: xchunked",
            "POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "TE: chunked, identity",
            "POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "TE: gzip, chunked",
            "POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        ("no Host", "GET /healthz HTTP/1.1\r\n\r\n", 400),
        (
            "two Hosts",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        (
            "bare LF",
            "GET /healthz HTTP/1.1\r\nHost: t\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "bad chunk extension",
            "POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;a\"b\r\nZ\r\n0\r\n\r\n",
            400,
        ),
    ];
    for (name, bad, status) in cases {
        let mut s = f.connect();
        s.write_all(format!("{bad}{smuggled}").as_bytes()).unwrap();
        let r = read_responses(&mut s, 1);
        assert_eq!(r.len(), 1, "{name}: no answer");
        assert_eq!(r[0].status, status, "{name}: {}", r[0].body_str());
        assert_eq!(r[0].header("connection"), Some("close"), "{name}");
        let (after, closed) = rest(&mut s);
        assert!(
            after.is_empty(),
            "{name}: answered after the refusal: {}",
            String::from_utf8_lossy(&after)
        );
        assert!(closed, "{name}: connection left open");
    }
    assert_eq!(f.get("/healthz").status, 200);
}

/// A body refused as too large while the client is still sending it: the
/// client finishes writing, reads the 413 whole, then sees EOF (not a
/// reset); /metrics counts the graceful close.
#[test]
fn a_refused_body_still_being_sent_gets_its_answer_whole() {
    let f = Flashd::start("");
    let mut s = f.connect();
    let mut req =
        b"POST /api/v1/activities HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n"
            .to_vec();
    req.extend_from_slice(&vec![b'x'; 512 * 1024]);
    s.write_all(&req)
        .expect("reset while the client was still sending");
    let r = read_responses(&mut s, 1);
    assert_eq!(r.len(), 1, "the answer was lost");
    assert_eq!(r[0].status, 413);
    let (after, closed) = rest(&mut s);
    assert!(after.is_empty() && closed);
    let m = f.get("/metrics");
    let text = m.body_str();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(value("flashd_lingering_closes_total") >= 1);
    for name in [
        "flashd_request_timeouts_total",
        "flashd_late_completions_total",
        "flashd_buffers_released_total",
    ] {
        value(name);
    }
}
