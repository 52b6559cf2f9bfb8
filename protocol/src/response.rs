//! Response encoding straight into the connection's write buffer: no
//! intermediate `String`, no per-response allocation once the buffer has
//! grown to its working size.

use crate::{date, head_memo};

/// What the `Connection` header should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// HTTP/1.1 keep-alive: the default needs no header.
    Omit,
    /// HTTP/1.0 client that asked for keep-alive.
    KeepAlive,
    /// The server closes after this response.
    Close,
}

/// Everything about a response but its body.
#[derive(Debug, Clone, Copy)]
pub struct Head<'h> {
    pub status: u16,
    pub content_type: &'static str,
    pub connection: ConnectionHeader,
    /// Extra headers, already valid header values (e.g. `Allow`, `Retry-After`).
    /// Names are `'static` (the head memo keys on the first one's address).
    pub extra: &'h [(&'static str, &'h str)],
    /// The answer to a `HEAD` request: the same head a `GET` would get,
    /// `Content-Length` included, and no body (RFC 9110 §9.3.2). A body
    /// here would be read as the start of the next response.
    pub omit_body: bool,
}

impl<'h> Head<'h> {
    pub fn json(status: u16, connection: ConnectionHeader) -> Self {
        Head {
            status,
            content_type: "application/json",
            connection,
            extra: &[],
            omit_body: false,
        }
    }
}

/// Pre-encoded status line for every status flashd sends.
pub fn status_line(status: u16) -> &'static [u8] {
    match status {
        100 => b"HTTP/1.1 100 Continue\r\n",
        200 => b"HTTP/1.1 200 OK\r\n",
        201 => b"HTTP/1.1 201 Created\r\n",
        204 => b"HTTP/1.1 204 No Content\r\n",
        400 => b"HTTP/1.1 400 Bad Request\r\n",
        401 => b"HTTP/1.1 401 Unauthorized\r\n",
        403 => b"HTTP/1.1 403 Forbidden\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        405 => b"HTTP/1.1 405 Method Not Allowed\r\n",
        408 => b"HTTP/1.1 408 Request Timeout\r\n",
        409 => b"HTTP/1.1 409 Conflict\r\n",
        413 => b"HTTP/1.1 413 Content Too Large\r\n",
        415 => b"HTTP/1.1 415 Unsupported Media Type\r\n",
        417 => b"HTTP/1.1 417 Expectation Failed\r\n",
        429 => b"HTTP/1.1 429 Too Many Requests\r\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        500 => b"HTTP/1.1 500 Internal Server Error\r\n",
        501 => b"HTTP/1.1 501 Not Implemented\r\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\n",
        505 => b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
        _ => b"HTTP/1.1 500 Internal Server Error\r\n",
    }
}

/// Stateless encoder; kept as a type so call sites read as one vocabulary.
pub struct ResponseEncoder;

impl ResponseEncoder {
    /// `HTTP/1.1 100 Continue` interim response.
    pub fn write_continue(out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    /// Head for a body of `body_len` bytes; the caller appends the body.
    #[inline]
    pub fn write_head(out: &mut Vec<u8>, head: &Head<'_>, body_len: usize) {
        // Through the first extra header's name, a head is the last one's
        // when its key is (see `head_memo`); then that header's value and
        // the rest.
        let of = head_memo::PrefixOf {
            status: head.status,
            content_type: head.content_type,
            connection: head.connection,
            body_len,
            first_name: head.extra.first().map(|&(name, _)| name),
        };
        head_memo::write_prefix(out, of, |out| {
            Self::write_prefix(out, head, body_len);
            if let Some((name, _)) = head.extra.first() {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
            }
        });
        if let Some((first, rest)) = head.extra.split_first() {
            out.extend_from_slice(first.1.as_bytes());
            out.extend_from_slice(b"\r\n");
            for (name, value) in rest {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Status line, `Server`, `Date`, `Content-Type`, `Content-Length` and
    /// `Connection`: everything of a head but its extra headers.
    /// Out of line: a kept prefix is the common case (see `head_memo`).
    #[cold]
    #[inline(never)]
    fn write_prefix(out: &mut Vec<u8>, head: &Head<'_>, body_len: usize) {
        // Fewer, larger copies: a JSON answer's prefix is two fixed runs,
        // the date, and the length with its CRLF.
        match head.status {
            200 => out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: flashd\r\nDate: "),
            _ => {
                out.extend_from_slice(status_line(head.status));
                out.extend_from_slice(b"Server: flashd\r\nDate: ");
            }
        }
        out.extend_from_slice(&date::current());
        if head.content_type == "application/json" {
            out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
        } else {
            out.extend_from_slice(b"\r\nContent-Type: ");
            out.extend_from_slice(head.content_type.as_bytes());
            out.extend_from_slice(b"\r\nContent-Length: ");
        }
        out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
        match head.connection {
            ConnectionHeader::Omit => {}
            ConnectionHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            ConnectionHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
        }
    }

    /// Head and body; the body is left out, its length kept, when
    /// `head.omit_body` (a `HEAD` request).
    #[inline]
    pub fn write(out: &mut Vec<u8>, head: &Head<'_>, body: &[u8]) {
        Self::write_head(out, head, body.len());
        if !head.omit_body {
            out.extend_from_slice(body);
        }
    }

    /// `{"error": code, "message": message}` with the given status. `code`
    /// must be a plain identifier; `message` is escaped. Head only when
    /// `head.omit_body`.
    pub fn write_error(out: &mut Vec<u8>, head: &Head<'_>, code: &str, message: &str) {
        debug_assert!(code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        // The message is looked at once: plain (every message flashd
        // writes itself) it is copied as it is.
        let plain = json_plain(message);
        let escaped = if plain {
            message.len()
        } else {
            json_escaped_len(message)
        };
        let len = br#"{"error":"","message":""}"#.len() + code.len() + escaped;
        Self::write_head(out, head, len);
        if head.omit_body {
            return;
        }
        out.extend_from_slice(br#"{"error":""#);
        out.extend_from_slice(code.as_bytes());
        out.extend_from_slice(br#"","message":""#);
        if plain {
            out.extend_from_slice(message.as_bytes());
        } else {
            escape_into(out, message);
        }
        out.extend_from_slice(br#""}"#);
    }
}

/// No byte of `s` needs escaping in a JSON string (the common case: every
/// error message flashd writes, most names). Eight bytes a step: a byte
/// loop was ~4 instructions a byte, twice per error answer (callgrind of
/// the sold-out stampede).
fn json_plain(s: &str) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero: the classic test (exact for "any").
    let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI != 0;
    // A byte of `x` below 0x20: `x - 0x20` borrows into its high bit;
    // bytes >= 0x80 (UTF-8) are excluded by `!x`.
    let has_control = |x: u64| x.wrapping_sub(LO * 0x20) & !x & HI != 0;
    let b = s.as_bytes();
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        if has_control(x)
            || has_zero(x ^ (LO * u64::from(b'"')))
            || has_zero(x ^ (LO * u64::from(b'\\')))
        {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

fn json_escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Append `s` as the inside of a JSON string literal.
pub fn json_escape_into(out: &mut Vec<u8>, s: &str) {
    // One copy instead of a push per byte: the byte loop was ~280
    // instructions of a 409 "no units left" (callgrind).
    if json_plain(s) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    escape_into(out, s);
}

/// The escaping itself, byte by byte (a string that needs some).
fn escape_into(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head written through the memo is byte for byte the head written
    /// piece by piece, whatever the order of heads: each part of the key
    /// changes between consecutive heads, and some repeat (hits).
    #[test]
    fn memoised_heads_are_the_heads_written_piece_by_piece() {
        crate::date::refresh();
        let statuses = [200, 201, 404, 409, 503];
        let types = [
            "application/json",
            "text/plain; charset=utf-8",
            "text/event-stream",
        ];
        let conns = [
            ConnectionHeader::Omit,
            ConnectionHeader::KeepAlive,
            ConnectionHeader::Close,
        ];
        let lens = [0usize, 2, 15, 99, 100, 12345];
        let extras: [&[(&'static str, &str)]; 3] = [
            &[],
            &[("X-Request-Id", "00000000000000a1")],
            &[("Allow", "GET"), ("Retry-After", "1")],
        ];
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..2000 {
            let head = Head {
                status: statuses[next(statuses.len())],
                content_type: types[next(types.len())],
                connection: conns[next(conns.len())],
                extra: extras[next(extras.len())],
                omit_body: false,
            };
            let len = lens[next(lens.len())];
            let mut got = Vec::new();
            ResponseEncoder::write_head(&mut got, &head, len);
            let mut want = Vec::new();
            ResponseEncoder::write_prefix(&mut want, &head, len);
            for (name, value) in head.extra {
                want.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            want.extend_from_slice(b"\r\n");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
            // Twice in a row: the second is a hit.
            got.clear();
            ResponseEncoder::write_head(&mut got, &head, len);
            assert_eq!(got, want);
        }
    }

    /// The word-at-a-time check agrees with the byte rule for every byte
    /// at every position of a word and of the tail.
    #[test]
    fn json_plain_matches_the_byte_rule() {
        let rule = |b: &[u8]| b.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\');
        for len in 0..20 {
            for at in 0..len {
                for special in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[at] = special;
                    // Only valid UTF-8 reaches it (a `&str`).
                    let Ok(s) = std::str::from_utf8(&v) else {
                        continue;
                    };
                    assert_eq!(json_plain(s), rule(&v), "{v:?}");
                }
            }
        }
        assert!(json_plain("héllo wörld — fine"));
        assert!(!json_plain("tab\there"));
    }

    /// The head written is, byte for byte, the head
    /// spelled out piece by piece, for every status, both kinds of content
    /// type, each `Connection` answer and any number of extra headers; and
    /// whatever the buffer held before is kept, however full it was.
    #[test]
    fn head_is_the_spelled_out_head() {
        let statuses = [100, 200, 201, 204, 400, 404, 429, 503, 505, 999];
        let types = [
            "application/json",
            "text/plain; version=0.0.4; charset=utf-8",
        ];
        let connections = [
            (ConnectionHeader::Omit, ""),
            (ConnectionHeader::KeepAlive, "Connection: keep-alive\r\n"),
            (ConnectionHeader::Close, "Connection: close\r\n"),
        ];
        let extras: [&[(&'static str, &str)]; 3] = [
            &[],
            &[("X-Request-Id", "0123456789abcdef")],
            &[
                ("Allow", "GET, HEAD"),
                ("Retry-After", "1"),
                (
                    "X-Long",
                    "a value of some length, longer than the room left",
                ),
            ],
        ];
        for status in statuses {
            for content_type in types {
                for (connection, conn_line) in connections {
                    for extra in extras {
                        for (body_len, prefill) in [(0, 0), (9, 3), (1_234_567, 61)] {
                            let head = Head {
                                status,
                                content_type,
                                connection,
                                extra,
                                omit_body: false,
                            };
                            // A buffer whose spare room is smaller than the
                            // head, to make `reserve` grow it.
                            let mut out = Vec::with_capacity(prefill + 1);
                            out.extend(std::iter::repeat_n(b'x', prefill));
                            ResponseEncoder::write_head(&mut out, &head, body_len);
                            let mut want = Vec::new();
                            want.extend(std::iter::repeat_n(b'x', prefill));
                            want.extend_from_slice(status_line(status));
                            want.extend_from_slice(b"Server: flashd\r\nDate: ");
                            want.extend_from_slice(&date::current());
                            want.extend_from_slice(
                                format!("\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\n{conn_line}")
                                    .as_bytes(),
                            );
                            for (n, v) in extra {
                                want.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
                            }
                            want.extend_from_slice(b"\r\n");
                            assert_eq!(
                                String::from_utf8_lossy(&out),
                                String::from_utf8_lossy(&want),
                                "status {status}, {content_type}, {connection:?}, {extra:?}"
                            );
                            // Head and body in one go: the same head, then
                            // the body (none for a HEAD request).
                            let body = vec![b'b'; body_len.min(4096)];
                            for omit_body in [false, true] {
                                let head = Head { omit_body, ..head };
                                let mut alone = Vec::new();
                                ResponseEncoder::write_head(&mut alone, &head, body.len());
                                let mut out = vec![b'x'; prefill];
                                ResponseEncoder::write(&mut out, &head, &body);
                                assert_eq!(out[prefill..prefill + alone.len()], alone[..]);
                                let body_written = if omit_body { 0 } else { body.len() };
                                assert_eq!(out.len(), prefill + alone.len() + body_written);
                                assert!(out.ends_with(if omit_body {
                                    b"\r\n\r\n"
                                } else {
                                    &body[..]
                                }));
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn error_body_is_valid_json_with_exact_length() {
        let mut out = Vec::new();
        let msg = "bad \"key\"\n\\ \u{1}";
        ResponseEncoder::write_error(
            &mut out,
            &Head::json(400, ConnectionHeader::Close),
            "bad_request",
            msg,
        );
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("Connection: close"));
        let cl: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(cl, body.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "bad_request");
        assert_eq!(v["message"], msg);
    }

    #[test]
    fn escaping_round_trips_plain_or_not() {
        for s in [
            "",
            "no units left",
            "caf\u{e9} \u{1f600}",
            "a\"b",
            "a\\b",
            "tab\there",
            "\u{7f}\u{1}\u{1f}",
        ] {
            let mut out = b"\"".to_vec();
            json_escape_into(&mut out, s);
            assert_eq!(out.len() - 1, json_escaped_len(s), "{s:?}");
            out.push(b'"');
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    /// RFC 9110 §9.3.2: a HEAD answer has the GET's Content-Length and
    /// nothing after the blank line, for plain and error responses alike.
    #[test]
    fn head_answers_keep_the_length_and_drop_the_body() {
        for error in [false, true] {
            let mut full = Vec::new();
            let mut head_only = Vec::new();
            let mut head = Head::json(404, ConnectionHeader::Omit);
            for (out, omit) in [(&mut full, false), (&mut head_only, true)] {
                head.omit_body = omit;
                if error {
                    ResponseEncoder::write_error(out, &head, "not_found", "no such path");
                } else {
                    ResponseEncoder::write(out, &head, br#"{"status":"ok"}"#);
                }
            }
            let split = full.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(head_only, full[..split], "error={error}");
            assert!(split < full.len());
        }
    }
}
