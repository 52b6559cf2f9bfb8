//! Proves the framer's contract on byte streams: pipelined requests come out
//! whole and in order however the stream is split, and every malformed or
//! oversized input is the right typed error, never a panic.

use flashd_protocol::{Framer, HttpError, Limits, Method, Poll, HEADERS_MAX};
use proptest::prelude::*;

#[derive(Debug, PartialEq, Clone)]
struct Owned {
    method: Method,
    path: String,
    query: Option<String>,
    keep_alive: bool,
    body: Vec<u8>,
}

/// Feed `chunks` one after another into a framer the way the reactor does:
/// append to a buffer, poll until pending, drop consumed bytes.
fn drive(chunks: &[&[u8]], limits: Limits) -> Result<(Vec<Owned>, usize, bool), HttpError> {
    let mut framer = Framer::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut continues = 0;
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            let mut headers = [const { std::mem::MaybeUninit::uninit() }; HEADERS_MAX];
            match framer.poll(&buf, &mut headers, &limits)? {
                Poll::Ready(req, n) => {
                    out.push(Owned {
                        method: req.method,
                        path: req.path.to_string(),
                        query: req.query.map(str::to_string),
                        keep_alive: req.keep_alive,
                        body: req.body.to_vec(),
                    });
                    buf.drain(..n);
                }
                Poll::Pending { send_continue } => {
                    continues += send_continue as usize;
                    break;
                }
            }
        }
    }
    Ok((out, continues, buf.is_empty()))
}

fn one(bytes: &[u8]) -> Result<(Vec<Owned>, usize, bool), HttpError> {
    drive(&[bytes], Limits::default())
}

#[test]
fn three_pipelined_requests_in_one_buffer() {
    let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
    let (reqs, _, empty) = one(input).unwrap();
    assert!(empty);
    let paths: Vec<_> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
    assert_eq!(reqs[1].body, b"abc");
    assert_eq!(reqs[1].query.as_deref(), Some("q=1"));
}

#[test]
fn keep_alive_rules() {
    let cases: [(&[u8], bool); 5] = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade, Close\r\n\r\n",
            false,
        ),
    ];
    for (input, ka) in cases {
        let (reqs, _, _) = one(input).unwrap();
        assert_eq!(reqs[0].keep_alive, ka, "{}", String::from_utf8_lossy(input));
    }
}

#[test]
fn chunked_body_is_decoded() {
    let input = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /y HTTP/1.1\r\nHost: x\r\n\r\n";
    let (reqs, _, empty) = one(input).unwrap();
    assert!(empty);
    assert_eq!(reqs[0].body, b"abcde");
    assert_eq!(reqs[1].path, "/y");
}

#[test]
fn strict_length_rules() {
    let bad: [&[u8]; 6] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];
    for input in bad {
        let err = one(input).unwrap_err();
        assert_eq!(err.status(), 400, "{}", String::from_utf8_lossy(input));
    }
    // Identical duplicates are not a conflict.
    let ok = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
    assert_eq!(one(ok).unwrap().0[0].body, b"ab");
    let gzip = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
    assert_eq!(one(gzip).unwrap_err(), HttpError::NotImplemented);
}

#[test]
fn garbage_is_bad_request() {
    assert_eq!(
        one(b"\x00\x01\x02 garbage\r\n\r\n").unwrap_err().status(),
        400
    );
    assert_eq!(one(b"GET / HTTP/2.0\r\n\r\n").unwrap_err().status(), 505);
}

#[test]
fn oversized_headers_are_431_even_before_the_head_ends() {
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    while big.len() < 40 * 1024 {
        big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(one(&big).unwrap_err(), HttpError::HeadersTooLarge);
    big.extend_from_slice(b"\r\n");
    assert_eq!(one(&big).unwrap_err(), HttpError::HeadersTooLarge);
    let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..(HEADERS_MAX + 1) {
        many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(one(&many).unwrap_err(), HttpError::HeadersTooLarge);
}

#[test]
fn declared_huge_body_is_413_before_body_bytes() {
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n";
    assert_eq!(one(head).unwrap_err(), HttpError::PayloadTooLarge);
    let chunk = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5F5E100\r\n";
    assert_eq!(one(chunk).unwrap_err(), HttpError::PayloadTooLarge);
}

#[test]
fn expect_continue_is_signalled_once() {
    let head: &[u8] =
        b"POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    let (reqs, continues, _) = drive(&[head, b"ab", b"cd"], Limits::default()).unwrap();
    assert_eq!(continues, 1);
    assert_eq!(reqs[0].body, b"abcd");
    let bad = b"POST /x HTTP/1.1\r\nHost: x\r\nExpect: something\r\nContent-Length: 4\r\n\r\n";
    assert_eq!(one(bad).unwrap_err(), HttpError::ExpectationFailed);
}

#[test]
fn absolute_form_target() {
    let (reqs, _, _) =
        one(b"GET http://example.com/healthz?x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(reqs[0].path, "/healthz");
    assert_eq!(
        one(b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap_err()
            .status(),
        400
    );
}

fn stream() -> Vec<u8> {
    let body = br#"{"quantity":1,"request_id":"r-1"}"#;
    let mut s = Vec::new();
    s.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    s.extend_from_slice(
        format!(
            "POST /api/v1/activities/7/orders HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    s.extend_from_slice(body);
    s.extend_from_slice(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n1;x=y\r\ne\r\n0\r\nT: v\r\n\r\n");
    s.extend_from_slice(b"GET /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    s
}

proptest! {
    /// Any split of a valid pipelined stream yields exactly the requests of
    /// the unsplit stream.
    #[test]
    fn any_split_gives_the_same_requests(cuts in proptest::collection::vec(0usize..400, 0..12)) {
        let s = stream();
        let whole = one(&s).unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (s.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut prev = 0;
        for c in cuts { pieces.push(&s[prev..c]); prev = c; }
        pieces.push(&s[prev..]);
        let split = drive(&pieces, Limits::default()).unwrap();
        prop_assert_eq!(whole.0, split.0);
        prop_assert!(split.2);
    }

    /// Arbitrary bytes never panic the framer, and what it accepts it
    /// consumes exactly.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), split in 0usize..600) {
        let split = split.min(bytes.len());
        let _ = drive(&[&bytes[..split], &bytes[split..]], Limits { max_header_bytes: 256, max_body_bytes: 64 });
    }
}

/// Every two-way split point of the stream, exhaustively (proptest samples;
/// this covers all of them).
#[test]
fn every_single_split_point() {
    let s = stream();
    let whole = one(&s).unwrap();
    for i in 0..=s.len() {
        let split = drive(&[&s[..i], &s[i..]], Limits::default()).unwrap();
        assert_eq!(whole.0, split.0, "split at {i}");
    }
    let bytes: Vec<&[u8]> = s.chunks(1).collect();
    assert_eq!(drive(&bytes, Limits::default()).unwrap().0, whole.0);
}

/// Issue 14 point 14: a connection that once took a large chunked body does
/// not keep that body's buffer: it is back to the kept size as soon as the
/// next request is polled, or when the reactor calls `shrink` between
/// requests.
#[test]
fn a_large_chunked_body_does_not_pin_its_buffer() {
    use flashd_protocol::BODY_BUF_KEEP_BYTES;
    let limits = Limits::default();
    let data = vec![b'z'; 60_000];
    let mut big = b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    big.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    big.extend_from_slice(&data);
    big.extend_from_slice(b"\r\n0\r\n\r\n");
    let small = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n";

    for between in [false, true] {
        let mut framer = Framer::new();
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; HEADERS_MAX];
        match framer.poll(&big, &mut headers, &limits).unwrap() {
            Poll::Ready(req, n) => {
                assert_eq!(req.body.len(), data.len());
                assert_eq!(n, big.len());
            }
            other => panic!("{other:?}"),
        }
        assert!(framer.buffer_capacity() >= data.len());
        if between {
            framer.shrink();
            assert!(framer.buffer_capacity() <= BODY_BUF_KEEP_BYTES);
        }
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; HEADERS_MAX];
        assert!(matches!(
            framer.poll(small, &mut headers, &limits).unwrap(),
            Poll::Ready(_, _)
        ));
        assert!(
            framer.buffer_capacity() <= BODY_BUF_KEEP_BYTES,
            "{} bytes kept",
            framer.buffer_capacity()
        );
    }
}
