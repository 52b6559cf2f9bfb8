//! The fast head reader (`flashd_protocol::head`) against httparse, the
//! parser whose answer counts: whenever the fast path reads a head,
//! httparse (flashd's settings, the same number of header slots) must
//! read the same bytes as `Complete`, with the same method, target,
//! version, headers and length. Inputs are built from a grammar of
//! request heads whose pieces are often wrong in the ways that matter for
//! framing (bare CR or LF, obs-text, spaces around ':', unknown methods,
//! truncation), so both the accepting and the giving-up paths are hit.

use std::mem::MaybeUninit;

use flashd_protocol::head;
use flashd_protocol::Method;
use proptest::prelude::*;

type Parsed = (String, String, u8, Vec<(String, Vec<u8>)>, usize);

fn fast(buf: &[u8], slots: usize) -> Option<(Method, Parsed)> {
    let mut s = vec![MaybeUninit::uninit(); slots];
    head::parse(buf, &mut s).ok().map(|h| {
        (
            h.method,
            (
                h.method.as_str().to_string(),
                h.target.to_string(),
                h.minor_version,
                h.headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                h.len,
            ),
        )
    })
}

/// httparse's reading, if `Complete`.
fn reference(buf: &[u8], slots: usize) -> Option<Parsed> {
    let mut s = vec![MaybeUninit::uninit(); slots];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut s) {
        Ok(httparse::Status::Complete(n)) => Some((
            req.method?.to_string(),
            req.path?.to_string(),
            req.version?,
            req.headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
            n,
        )),
        _ => None,
    }
}

fn agree(buf: &[u8], slots: usize) -> Result<bool, TestCaseError> {
    let Some((method, got)) = fast(buf, slots) else {
        return Ok(false);
    };
    let want = reference(buf, slots);
    prop_assert!(
        want.is_some(),
        "fast path read a head httparse does not: {:?}",
        String::from_utf8_lossy(buf)
    );
    let want = want.unwrap_or_default();
    // The method as flashd names it (httparse gives the token).
    prop_assert_eq!(method.as_str(), want.0.as_str());
    prop_assert_eq!(got, want, "{:?}", String::from_utf8_lossy(buf));
    Ok(true)
}

fn pick(options: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(options).prop_map(|b| b.to_vec())
}

fn bytes_from(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(proptest::sample::select(alphabet), 0..max)
}

const EOL: &[&[u8]] = &[b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""];

fn header() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            4 => pick(&[b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"X-Request-Id"]),
            1 => bytes_from(b"aB-_: \t\x80\x7f!", 5),
        ],
        pick(&[b":", b":", b":", b" :", b"", b"::"]),
        pick(&[b"", b" ", b" ", b"\t", b"  \t"]),
        prop_oneof![
            4 => bytes_from(b"az09:/.-_ ", 12),
            1 => bytes_from(b"a \t\x80\xff\x7f\x00\r\n:", 8),
        ],
        pick(&[b"", b"", b" ", b"\t "]),
        pick(EOL),
    )
        .prop_map(|(n, c, w, v, t, e)| [n, c, w, v, t, e].concat())
}

fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        pick(&[
            b"GET", b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"get", b"GETX", b"", b"\r\nGET",
        ]),
        pick(&[b" ", b" ", b" ", b"  ", b"\t"]),
        prop_oneof![
            4 => bytes_from(b"/az09?=&%.-", 16).prop_map(|t| [b"/".to_vec(), t].concat()),
            1 => bytes_from(b"/a?#\x80\xc3\xa9 \t\x7f\"<*", 10),
        ],
        pick(&[b" ", b" ", b" ", b"  ", b""]),
        pick(&[
            b"HTTP/1.1",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/1.2",
            b"HTTP/2.0",
            b"http/1.1",
            b"",
        ]),
        pick(EOL),
        proptest::collection::vec(header(), 0..6),
        pick(EOL),
        pick(&[b"", b"", b"GET / HTTP/1.1\r\n", b"body"]),
    )
        .prop_map(|(m, s1, t, s2, v, e, hs, end, rest)| {
            [m, s1, t, s2, v, e, hs.concat(), end, rest].concat()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn fast_head_agrees_with_httparse(buf in head_bytes(), slots in 0usize..8, cut in any::<prop::sample::Index>(), truncate in any::<bool>()) {
        let buf = if truncate { buf[..cut.index(buf.len() + 1)].to_vec() } else { buf };
        agree(&buf, slots)?;
    }

    #[test]
    fn fast_head_agrees_on_arbitrary_bytes(buf in proptest::collection::vec(any::<u8>(), 0..96), slots in 0usize..4) {
        let mut b = b"GET /x HTTP/1.1\r\n".to_vec();
        b.extend_from_slice(&buf);
        agree(&b, slots)?;
        agree(&buf, slots)?;
    }
}

/// The grammar above reaches the accepting path, so the property is not
/// vacuous: the heads a flash sale's clients send are all read fast.
#[test]
fn the_common_heads_take_the_fast_path() {
    for req in [
        &b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"[..],
        b"GET /api/v1/activities/7 HTTP/1.1\r\nHost: shop\r\nUser-Agent: x/1\r\nAccept: */*\r\n\r\n",
        b"POST /api/v1/activities/7/orders HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer a.b.c\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        b"HEAD / HTTP/1.0\r\n\r\n",
    ] {
        assert!(agree(req, 8).expect("agrees"), "{:?}", String::from_utf8_lossy(req));
    }
}

#[test]
fn reads_the_common_shape() {
    let req = b"GET /healthz HTTP/1.1\r\nHost: a:1\r\nX-Y:  v w \t\r\nE:\r\n\r\nrest";
    let (m, (_, t, v, hs, len)) = fast(req, 8).expect("common shape");
    assert_eq!((m, t.as_str(), v), (Method::Get, "/healthz", 1));
    assert_eq!(
        hs,
        vec![
            ("Host".to_string(), b"a:1".to_vec()),
            ("X-Y".to_string(), b"v w".to_vec()),
            ("E".to_string(), b"".to_vec()),
        ]
    );
    assert_eq!(len, req.len() - 4);
    assert!(agree(req, 8).expect("agrees"));
}

#[test]
fn gives_up_on_anything_else() {
    for req in [
        &b"GET /healthz HTTP/1.1\r\nHost: a\r\n"[..],  // partial
        b"GET /healthz HTTP/1.1\nHost: a\r\n\r\n",     // bare LF
        b"GET /h\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", // non-ASCII target
        b"GET /h HTTP/1.1\r\nHost: \xff\r\n\r\n",      // obs-text value
        b"get /h HTTP/1.1\r\nHost: a\r\n\r\n",         // unknown method
        b"\r\nGET /h HTTP/1.1\r\nHost: a\r\n\r\n",     // leading empty line
        b"GET  /h HTTP/1.1\r\nHost: a\r\n\r\n",        // two spaces
        b"GET /h HTTP/1.2\r\nHost: a\r\n\r\n",         // version
        b"GET /h HTTP/1.1\r\nHost : a\r\n\r\n",        // space before ':'
        b"GET /h HTTP/1.1\r\n Host: a\r\n\r\n",        // folded / leading space
        b"GET /h HTTP/1.1\r\nHost: a\rb\r\n\r\n",      // bare CR
        b"GET /h HTTP/1.1\r\nHost: a\r\n\rx",          // bad end
    ] {
        assert!(fast(req, 8).is_none(), "{:?}", String::from_utf8_lossy(req));
    }
}

#[test]
fn more_headers_than_slots_is_given_up() {
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..9 {
        req.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    assert!(fast(&req, 8).is_none());
}
