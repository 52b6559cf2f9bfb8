//! Incremental request framing.
//!
//! The reactor keeps one [`Framer`] per connection and calls [`Framer::poll`]
//! with every byte not yet consumed. The head is re-parsed by httparse on
//! each call (it is a few hundred bytes and parsing it is cheaper than
//! keeping borrowed state across reads); only chunked decoding and the
//! `100 Continue` flag are carried from call to call.

use crate::bytes_eq::{bytes_eq, eq_token_ci};
use crate::chunked::ChunkedDecoder;
use crate::error::HttpError;
use crate::head;
use crate::limits::{Limits, BODY_BUF_KEEP_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other,
}

impl Method {
    fn from_str(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// One complete request, borrowed from the connection's read buffer.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    /// Path without the query string; always starts with `/` (or is `*`).
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the connection may stay open after this request.
    pub keep_alive: bool,
    pub headers: &'a [httparse::Header<'a>],
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// First header with this name (ASCII case-insensitive): `name` in
    /// lowercase letters, digits and `-`, as flashd spells every header
    /// it reads.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| eq_token_ci(h.name.as_bytes(), name.as_bytes()))
            .map(|h| h.value)
    }
}

/// Result of one [`Framer::poll`].
#[derive(Debug)]
pub enum Poll<'a> {
    /// A whole request, and how many bytes of the buffer it used.
    Ready(Request<'a>, usize),
    /// Need more bytes. `send_continue`: the client asked for
    /// `100 Continue` and should get it now (returned once per request).
    Pending { send_continue: bool },
}

#[derive(Debug, Default)]
pub struct Framer {
    chunked: Option<ChunkedDecoder>,
    /// Decoded chunked body of the request being read.
    body: Vec<u8>,
    continue_sent: bool,
    /// The last `Host` value this connection sent that passed
    /// [`valid_host`].
    host: HostMemo,
}

/// Longest `Host` value remembered: `[IPv6]:port` and most names fit; a
/// longer one is checked every time.
const HOST_MEMO_BYTES: usize = 62;

/// A `Host` value already found valid. A keep-alive client sends the same
/// one on every request, and comparing it is cheaper than checking it
/// again (~120 instructions on every request of a `GET`).
#[derive(Debug)]
struct HostMemo {
    len: u8,
    bytes: [u8; HOST_MEMO_BYTES],
}

impl Default for HostMemo {
    fn default() -> Self {
        // Length 0 holds the empty value, which is valid (RFC 9110 §7.2).
        HostMemo {
            len: 0,
            bytes: [0; HOST_MEMO_BYTES],
        }
    }
}

impl HostMemo {
    /// `valid_host(v)`, remembering the last valid value.
    #[inline]
    fn check(&mut self, v: &[u8]) -> bool {
        if bytes_eq(v, &self.bytes[..self.len as usize]) {
            return true;
        }
        if !valid_host(v) {
            return false;
        }
        if v.len() <= HOST_MEMO_BYTES {
            self.bytes[..v.len()].copy_from_slice(v);
            self.len = v.len() as u8;
        }
        true
    }
}

enum BodyKind {
    Length(usize),
    Chunked,
}

impl Framer {
    pub fn new() -> Self {
        Framer::default()
    }

    /// True while a request is partly received (used for timeouts).
    pub fn mid_request(&self) -> bool {
        self.chunked.is_some() || self.continue_sent
    }

    /// Give back a decoded-body buffer that an earlier large chunked request
    /// grew past [`BODY_BUF_KEEP_BYTES`]. The reactor calls it whenever the
    /// connection has nothing buffered; it costs a comparison otherwise.
    pub fn shrink(&mut self) {
        if self.chunked.is_none() && self.body.capacity() > BODY_BUF_KEEP_BYTES {
            self.body.clear();
            self.body.shrink_to(BODY_BUF_KEEP_BYTES);
        }
    }

    /// Bytes this framer holds for decoded bodies (for tests and metrics).
    pub fn buffer_capacity(&self) -> usize {
        self.body.capacity()
    }

    pub fn poll<'a>(
        &'a mut self,
        buf: &'a [u8],
        headers: &'a mut [std::mem::MaybeUninit<httparse::Header<'a>>],
        limits: &Limits,
    ) -> Result<Poll<'a>, HttpError> {
        if self.chunked.is_none() {
            self.body.clear();
            self.shrink();
        }
        // The common shape first (see `head`): it either reads the head the
        // way httparse would or hands the slots back for httparse.
        let (method, target, minor_version, headers, head_len): (
            Method,
            &'a str,
            u8,
            &'a [httparse::Header<'a>],
            usize,
        ) = match head::parse(buf, headers) {
            Ok(h) => {
                if h.len > limits.max_header_bytes {
                    return Err(HttpError::HeadersTooLarge);
                }
                (h.method, h.target, h.minor_version, h.headers, h.len)
            }
            Err(headers) => {
                let mut req = httparse::Request::new(&mut []);
                let head_len = match req.parse_with_uninit_headers(buf, headers) {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) => {
                        if buf.len() > limits.max_header_bytes {
                            return Err(HttpError::HeadersTooLarge);
                        }
                        return Ok(Poll::Pending {
                            send_continue: false,
                        });
                    }
                    Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
                    Err(httparse::Error::Version) => return Err(HttpError::VersionNotSupported),
                    Err(_) => return Err(HttpError::BadRequest("malformed request head")),
                };
                if head_len > limits.max_header_bytes {
                    return Err(HttpError::HeadersTooLarge);
                }
                let method_str = req.method.unwrap_or("");
                let headers: &'a [httparse::Header<'a>] = req.headers;
                if !lines_end_in_crlf(buf, head_len, method_str, headers) {
                    return Err(HttpError::BadRequest(
                        "request head lines must end in CRLF (bare LF)",
                    ));
                }
                (
                    Method::from_str(method_str),
                    req.path.unwrap_or(""),
                    req.version.unwrap_or(1),
                    headers,
                    head_len,
                )
            }
        };
        let (path, query) = split_target(method, target)?;

        let mut content_length: Option<usize> = None;
        let mut te = TransferCodings::default();
        let mut hosts = 0usize;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        let mut expect_continue = false;
        for h in headers {
            let name = h.name;
            if eq_token_ci(name.as_bytes(), b"host") {
                hosts += 1;
                if !self.host.check(h.value) {
                    return Err(HttpError::BadRequest("malformed Host header"));
                }
            } else if eq_token_ci(name.as_bytes(), b"content-length") {
                let n = parse_content_length(h.value)?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(HttpError::BadRequest("conflicting Content-Length headers"));
                }
                content_length = Some(n);
            } else if eq_token_ci(name.as_bytes(), b"transfer-encoding") {
                te.add(h.value)?;
            } else if eq_token_ci(name.as_bytes(), b"connection") {
                for token in h.value.split(|&b| b == b',') {
                    let t = trim(token);
                    if t.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            } else if eq_token_ci(name.as_bytes(), b"expect") && minor_version == 1 {
                if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(HttpError::ExpectationFailed);
                }
            }
        }
        // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host and for
        // any request with more than one.
        if hosts > 1 {
            return Err(HttpError::BadRequest("more than one Host header"));
        }
        if hosts == 0 && minor_version == 1 {
            return Err(HttpError::BadRequest("Host header required in HTTP/1.1"));
        }

        let body_kind = if te.present {
            // RFC 9112 §6.1 lets a server either reject TE with CL or let TE
            // win and close after. We reject: whichever length an
            // intermediary in front of us used, no second request can be
            // read out of this message, and the error closes the connection.
            if content_length.is_some() {
                return Err(HttpError::BadRequest(
                    "Transfer-Encoding and Content-Length together",
                ));
            }
            // RFC 9112 §6.1: TE in HTTP/1.0 means faulty framing.
            if minor_version == 0 {
                return Err(HttpError::BadRequest("Transfer-Encoding in HTTP/1.0"));
            }
            te.check()?;
            BodyKind::Chunked
        } else {
            let n = content_length.unwrap_or(0);
            if n > limits.max_body_bytes {
                return Err(HttpError::PayloadTooLarge);
            }
            BodyKind::Length(n)
        };

        let keep_alive = if minor_version == 0 {
            conn_keep_alive && !conn_close
        } else {
            !conn_close
        };

        let (body, consumed): (&'a [u8], usize) = match body_kind {
            BodyKind::Length(n) => {
                if buf.len() - head_len < n {
                    return Ok(self.pending(expect_continue));
                }
                (&buf[head_len..head_len + n], head_len + n)
            }
            BodyKind::Chunked => {
                let dec = self.chunked.get_or_insert_with(ChunkedDecoder::new);
                match dec.feed(
                    &buf[head_len..],
                    &mut self.body,
                    limits.max_body_bytes,
                    limits.max_header_bytes,
                )? {
                    None => return Ok(self.pending(expect_continue)),
                    Some(n) => {
                        self.chunked = None;
                        (&self.body[..], head_len + n)
                    }
                }
            }
        };
        self.continue_sent = false;
        Ok(Poll::Ready(
            Request {
                method,
                path,
                query,
                minor_version,
                keep_alive,
                headers,
                body,
            },
            consumed,
        ))
    }

    fn pending<'a>(&mut self, expect_continue: bool) -> Poll<'a> {
        let send_continue = expect_continue && !self.continue_sent;
        if send_continue {
            self.continue_sent = true;
        }
        Poll::Pending { send_continue }
    }
}

/// Whether `buf`, the start of a request that could not be framed, is a
/// `HEAD` request, so that the error answering it carries no body
/// (RFC 9110 §9.3.2) even though the rest of it was refused.
pub fn is_head_request(buf: &[u8]) -> bool {
    // httparse skips empty lines before the request line; so do we.
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    buf[start..].starts_with(b"HEAD ")
}

/// The `Transfer-Encoding` list of one request, gathered over every
/// `Transfer-Encoding` header (they form one list, RFC 9110 §5.3).
#[derive(Default)]
struct TransferCodings {
    present: bool,
    codings: usize,
    chunked: usize,
    last_is_chunked: bool,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) -> Result<(), HttpError> {
        self.present = true;
        for element in value.split(|&b| b == b',') {
            // Empty elements are allowed and skipped (RFC 9110 §5.6.1).
            let c = trim(element);
            if c.is_empty() {
                continue;
            }
            // A coding is a bare token: no registered transfer coding takes
            // parameters, and `"chunked"` or `chunked;x` is not `chunked`.
            if !c.iter().all(|&b| is_tchar(b)) {
                return Err(HttpError::BadRequest("malformed Transfer-Encoding"));
            }
            self.codings += 1;
            self.last_is_chunked = c.eq_ignore_ascii_case(b"chunked");
            self.chunked += self.last_is_chunked as usize;
        }
        Ok(())
    }

    /// RFC 9112 §6.3 and §7: the body length is only known when the list
    /// names codings and the final one is `chunked`, applied once. Anything
    /// else is 400 (and the error closes the connection); a known framing
    /// under codings we do not implement is 501.
    fn check(&self) -> Result<(), HttpError> {
        if self.codings == 0 {
            return Err(HttpError::BadRequest("Transfer-Encoding names no coding"));
        }
        if !self.last_is_chunked {
            return Err(HttpError::BadRequest(
                "final transfer coding is not chunked",
            ));
        }
        if self.chunked > 1 {
            return Err(HttpError::BadRequest("chunked applied more than once"));
        }
        if self.codings > 1 {
            return Err(HttpError::NotImplemented);
        }
        Ok(())
    }
}

/// Every line of the head ends in CRLF (RFC 9112 §2.2). httparse also takes
/// a bare LF as a line end; a parser in front of us that does not could see
/// a different set of headers (a hidden `Transfer-Encoding`), so it is
/// refused. Checked without a scan: httparse has already split the lines,
/// so each header name starts right after a line end, and the head ends at
/// the blank line.
fn lines_end_in_crlf(
    buf: &[u8],
    head_len: usize,
    method: &str,
    headers: &[httparse::Header<'_>],
) -> bool {
    let base = buf.as_ptr() as usize;
    // Empty lines httparse skipped before the request line.
    let method_at = (method.as_ptr() as usize).wrapping_sub(base);
    if method_at > head_len || buf[..method_at].chunks(2).any(|l| l != b"\r\n") {
        return false;
    }
    for h in headers {
        let at = (h.name.as_ptr() as usize).wrapping_sub(base);
        if buf.get(at.wrapping_sub(2)) != Some(&b'\r') {
            return false;
        }
    }
    head_len >= 4 && &buf[head_len - 4..head_len] == b"\r\n\r\n"
}

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// `unreserved / pct-encoded / sub-delims` of RFC 3986 §3.2.2 (reg-name),
/// one table lookup per byte: Host is checked on every request.
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b: u8 = 0;
    while b < 0x7f {
        t[b as usize] = b.is_ascii_alphanumeric();
        b += 1;
    }
    let sub = b"-._~%!$&'()*+,;=";
    let mut i = 0;
    while i < sub.len() {
        t[sub[i] as usize] = true;
        i += 1;
    }
    t
};

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2), where
/// an empty value is allowed. No userinfo, no path, no whitespace.
fn valid_host(v: &[u8]) -> bool {
    // Where the host ends (and the optional port begins).
    let i = if v.first() == Some(&b'[') {
        // IP-literal: hex, ':' and '.' (IPv6, IPv4-mapped) inside brackets.
        let Some(close) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &v[1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        close + 1
    } else {
        // Four bytes per test while all are reg-name bytes (a Host is
        // checked on every request; byte by byte it was ~120 instructions).
        let mut i = 0;
        while i + 4 <= v.len()
            && REG_NAME[v[i] as usize]
                & REG_NAME[v[i + 1] as usize]
                & REG_NAME[v[i + 2] as usize]
                & REG_NAME[v[i + 3] as usize]
        {
            i += 4;
        }
        i + v[i..]
            .iter()
            .position(|&b| !REG_NAME[b as usize])
            .unwrap_or(v.len() - i)
    };
    match v[i..].split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// The request target (RFC 9112 §3.2) as path and query. origin-form is the
/// common case; absolute-form is accepted (its authority replaces Host,
/// which flashd does not use); asterisk-form only for OPTIONS; authority-form
/// (CONNECT) is not served. Only visible ASCII, and no fragment.
fn split_target(method: Method, target: &str) -> Result<(&str, Option<&str>), HttpError> {
    const BAD: HttpError = HttpError::BadRequest("invalid request target");
    // httparse has already limited the target to visible ASCII and bytes
    // of 0x80 and above; what is left to refuse is non-ASCII and '#'.
    let query_at = match scan_target(target.as_bytes()) {
        Scan::Refused => return Err(BAD),
        Scan::Query(i) => Some(i),
        Scan::Plain => None,
    };
    // origin-form, the common case: split at the '?' the scan found.
    if target.starts_with('/') {
        return Ok(match query_at {
            Some(i) => (&target[..i], Some(&target[i + 1..])),
            None => (target, None),
        });
    }
    let mut t = target;
    if !t.starts_with('/') {
        if t == "*" {
            return if method == Method::Options {
                Ok((t, None))
            } else {
                Err(HttpError::BadRequest(
                    "asterisk-form target is only for OPTIONS",
                ))
            };
        }
        // absolute-form: the scheme is case-insensitive (RFC 3986 §3.1).
        let rest = strip_prefix_ci(t, "http://")
            .or_else(|| strip_prefix_ci(t, "https://"))
            .ok_or(BAD)?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        // An http(s) URI with an empty host is invalid (RFC 9110 §4.2.1);
        // userinfo is refused (RFC 9110 §4.2.4).
        let authority = &rest[..end];
        if authority.is_empty() || !valid_host(authority.as_bytes()) {
            return Err(BAD);
        }
        t = &rest[end..];
        if t.is_empty() || t.starts_with('?') {
            return Ok(("/", t.strip_prefix('?')));
        }
    }
    Ok(match t.find('?') {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    })
}

enum Scan {
    /// A byte of 0x80 or above, or a '#'.
    Refused,
    /// No such byte; the first '?' is here.
    Query(usize),
    /// Neither a refused byte nor a '?'.
    Plain,
}

/// One pass over a request target for what `split_target` refuses and
/// where the query starts, eight bytes at a time while none of '#', '?'
/// or a byte of 0x80 and above is in them (the classic zero-byte test):
/// three scans with their memchr calls were ~100 instructions of a
/// pipelined `/healthz` (callgrind).
fn scan_target(b: &[u8]) -> Scan {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has = |x: u64, byte: u8| {
        let y = x ^ (ONES * byte as u64);
        y.wrapping_sub(ONES) & !y & HIGH
    };
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        if (x & HIGH) | has(x, b'#') | has(x, b'?') != 0 {
            break;
        }
        i += 8;
    }
    let mut query = None;
    for (j, &c) in b.iter().enumerate().skip(i) {
        if c >= 0x80 || c == b'#' {
            return Scan::Refused;
        }
        if c == b'?' && query.is_none() {
            query = Some(j);
        }
    }
    query.map_or(Scan::Plain, Scan::Query)
}

fn strip_prefix_ci<'t>(t: &'t str, prefix: &str) -> Option<&'t str> {
    let head = t.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &t[prefix.len()..])
}

fn parse_content_length(v: &[u8]) -> Result<usize, HttpError> {
    const BAD: HttpError = HttpError::BadRequest("malformed Content-Length");
    // Only 1*DIGIT (RFC 9110 §8.6): no sign, no hex, no list, no inner
    // space. 19 digits always fit a u64; more is refused before overflow.
    let v = trim(v);
    if v.is_empty() || v.len() > 19 {
        return Err(BAD);
    }
    let mut n: usize = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(BAD);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add((b - b'0') as usize))
            .ok_or(BAD)?;
    }
    Ok(n)
}

/// Strip optional whitespace (OWS: SP and HTAB only, RFC 9110 §5.6.3).
fn trim(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo answers what `valid_host` answers, whatever came before:
    /// a remembered value never lets a different one through.
    #[test]
    fn host_memo_agrees_with_the_check() {
        let long = format!("{}.example:80", "a".repeat(70));
        let values: [&[u8]; 9] = [
            b"127.0.0.1:8080",
            b"127.0.0.1:8o80",
            b"127.0.0.1 8080",
            b"",
            b"[::1]:80",
            b"[::1]:8x",
            long.as_bytes(),
            b"a@b",
            b"127.0.0.1:8080",
        ];
        let mut memo = HostMemo::default();
        for _ in 0..2 {
            for a in values {
                for b in values {
                    assert_eq!(memo.check(a), valid_host(a), "{a:?}");
                    assert_eq!(memo.check(b), valid_host(b), "{b:?} after {a:?}");
                }
            }
        }
    }

    /// The word-at-a-time scan finds what a byte loop finds, wherever in
    /// the word the byte is.
    #[test]
    fn scan_target_matches_a_byte_loop() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'#', b'?', 0x80, 0xff, b'/', b'a'] {
                    let mut t = vec![b'x'; len];
                    t[at] = special;
                    if at + 3 < len {
                        t[at + 3] = b'?';
                    }
                    let refused = t.iter().any(|&c| c >= 0x80 || c == b'#');
                    let query = t.iter().position(|&c| c == b'?');
                    match scan_target(&t) {
                        Scan::Refused => assert!(refused, "{t:?}"),
                        Scan::Query(i) => assert_eq!((refused, Some(i)), (false, query), "{t:?}"),
                        Scan::Plain => assert_eq!((refused, query), (false, None), "{t:?}"),
                    }
                }
            }
        }
    }
}
