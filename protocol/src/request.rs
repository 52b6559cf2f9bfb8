//! Incremental request framing.
//!
//! The reactor keeps one [`Framer`] per connection and calls [`Framer::poll`]
//! with every byte not yet consumed. The head is re-parsed by httparse on
//! each call (it is a few hundred bytes and parsing it is cheaper than
//! keeping borrowed state across reads); only chunked decoding and the
//! `100 Continue` flag are carried from call to call.

use crate::chunked::ChunkedDecoder;
use crate::error::HttpError;
use crate::limits::Limits;

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
    /// First header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
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

    pub fn poll<'a>(
        &'a mut self,
        buf: &'a [u8],
        headers: &'a mut [std::mem::MaybeUninit<httparse::Header<'a>>],
        limits: &Limits,
    ) -> Result<Poll<'a>, HttpError> {
        if self.chunked.is_none() {
            self.body.clear();
        }
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
        let minor_version = req.version.unwrap_or(1);
        let method = Method::from_str(req.method.unwrap_or(""));
        let (path, query) = split_target(req.path.unwrap_or(""))?;
        let headers: &'a [httparse::Header<'a>] = req.headers;

        let mut content_length: Option<usize> = None;
        let mut transfer_encoding = false;
        let mut te_chunked_only = true;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        let mut expect_continue = false;
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let n = parse_content_length(h.value)?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(HttpError::BadRequest("conflicting Content-Length headers"));
                }
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                for coding in h.value.split(|&b| b == b',') {
                    let c = trim(coding);
                    if c.is_empty() {
                        continue;
                    }
                    // Only `chunked`, once, as the final coding is served.
                    if !c.eq_ignore_ascii_case(b"chunked") || transfer_encoding {
                        te_chunked_only = false;
                    }
                    transfer_encoding = true;
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let t = trim(token);
                    if t.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("expect") && minor_version == 1 {
                if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(HttpError::ExpectationFailed);
                }
            }
        }

        let body_kind = if transfer_encoding {
            if content_length.is_some() {
                return Err(HttpError::BadRequest(
                    "Transfer-Encoding and Content-Length together",
                ));
            }
            if minor_version == 0 {
                return Err(HttpError::BadRequest("Transfer-Encoding in HTTP/1.0"));
            }
            if !te_chunked_only {
                return Err(HttpError::NotImplemented);
            }
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

fn split_target(target: &str) -> Result<(&str, Option<&str>), HttpError> {
    let mut t = target;
    if !t.starts_with('/') {
        if t == "*" {
            return Ok((t, None));
        }
        // absolute-form (RFC 9112 §3.2.2): drop scheme and authority.
        let rest = t
            .strip_prefix("http://")
            .or_else(|| t.strip_prefix("https://"))
            .ok_or(HttpError::BadRequest("invalid request target"))?;
        t = match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        };
    }
    Ok(match t.find('?') {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    })
}

fn parse_content_length(v: &[u8]) -> Result<usize, HttpError> {
    const BAD: HttpError = HttpError::BadRequest("malformed Content-Length");
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

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}
