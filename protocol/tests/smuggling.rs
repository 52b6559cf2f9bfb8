//! A catalogue of request-smuggling and framing cases (the published desync
//! research: CL.TE, TE.CL, TE.TE obfuscations, funky chunks; and RFC 9112's
//! own rules), each run through the framer whole and byte by byte: every
//! case names the rule it holds flashd to and the exact outcome, either the
//! refusal's status or the exact requests framed (so nothing is smuggled).

use flashd_protocol::{Framer, HttpError, Limits, Poll, HEADERS_MAX};

/// What the framer must make of a case.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Refused with this status (the reactor answers it and closes).
    Status(u16),
    /// Framed as exactly these requests, (path, body) in order, and nothing
    /// left over.
    Requests(&'static [(&'static str, &'static [u8])]),
}

struct Case {
    name: &'static str,
    rule: &'static str,
    input: &'static [u8],
    want: Want,
}

use Want::{Requests, Status};

const fn case(name: &'static str, rule: &'static str, input: &'static [u8], want: Want) -> Case {
    Case {
        name,
        rule,
        input,
        want,
    }
}

const ONE: Want = Requests(&[("/", b"")]);

const CASES: &[Case] = &[
    // ---- CL.TE and TE.CL: both length headers ----
    case(
        "CL.TE: front end uses CL, back end TE",
        "RFC 9112 §6.1: TE with CL may be rejected; flashd rejects (strict) and closes",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        Status(400),
    ),
    case(
        "TE.CL: front end uses TE, back end CL",
        "RFC 9112 §6.1: TE with CL is rejected",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "CL.TE with an obfuscated TE",
        "RFC 9112 §6.1 and §6.3: TE present (whatever its value) with CL is rejected",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n1\r\nZ\r\n",
        Status(400),
    ),
    // ---- TE.TE: Transfer-Encoding obfuscations ----
    case(
        "TE: xchunked",
        "RFC 9112 §6.3: final coding not chunked: 400 and close",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: chunkedx",
        "RFC 9112 §6.3: final coding not chunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: chunked, identity",
        "RFC 9112 §6.3: final coding not chunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE split over two fields, identity last",
        "RFC 9110 §5.3: repeated fields are one list; its final coding is not chunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: identity, chunked",
        "RFC 9112 §6.1: a coding not understood under a final chunked is 501",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        Status(501),
    ),
    case(
        "TE: gzip, chunked (RFC 9112 §6.1's own example)",
        "RFC 9112 §6.1: framing known, coding not implemented: 501",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        Status(501),
    ),
    case(
        "TE: chunked, chunked",
        "RFC 9112 §7: chunked is never applied twice",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: empty value",
        "issue 14: a list naming no coding is 400 (it must not fall back to CL or no body)",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: only commas",
        "RFC 9110 §5.6.1: empty elements are skipped; a list naming no coding is 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , ,\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: quoted chunked",
        "RFC 9112 §7: a transfer coding is a token",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: chunked with a parameter",
        "RFC 9112 §7.1: chunked takes no parameters; chunked;x is not chunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: chunked followed by a vertical tab",
        "RFC 9110 §5.5: VT is not a field-value byte",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: chunked followed by a form feed",
        "RFC 9110 §5.5: FF is not a field-value byte (nor OWS)",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x0c\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: space before the colon",
        "RFC 9112 §5.1: whitespace between field name and colon is 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: tab before the colon",
        "RFC 9112 §5.1: whitespace between field name and colon is 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE folded onto the previous line (obs-fold)",
        "RFC 9112 §5.2: obs-fold in a request is 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\nabc",
        Status(400),
    ),
    case(
        "TE value on a continuation line (obs-fold)",
        "RFC 9112 §5.2: obs-fold in a request is 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE header with leading whitespace as the first field",
        "RFC 9112 §2.2: whitespace between start-line and first field is 400",
        b"POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: x\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "TE: leading and trailing OWS around chunked",
        "RFC 9110 §5.5: OWS around a field value is not part of it: this is chunked",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \t chunked \t\r\n\r\n1\r\nZ\r\n0\r\n\r\n",
        Requests(&[("/c", b"Z")]),
    ),
    case(
        "TE: CHUNKED in capitals",
        "RFC 9112 §7: transfer-coding names are case-insensitive",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n1\r\nZ\r\n0\r\n\r\n",
        Requests(&[("/c", b"Z")]),
    ),
    case(
        "TE: chunked with an empty list element",
        "RFC 9110 §5.6.1: empty list elements are ignored",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked,\r\n\r\n1\r\nZ\r\n0\r\n\r\n",
        Requests(&[("/c", b"Z")]),
    ),
    case(
        "Transfer_Encoding (underscore) is another field",
        "RFC 9110 §5.1: field names are compared exactly (case aside); CL frames this",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        Requests(&[("/c", b"abc")]),
    ),
    case(
        "TE in HTTP/1.0",
        "RFC 9112 §6.1: TE in an HTTP/1.0 message is faulty framing",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Status(400),
    ),
    // ---- Content-Length ----
    case(
        "two Content-Length values",
        "RFC 9112 §6.3 (5): differing lengths are unrecoverable: 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        Status(400),
    ),
    case(
        "Content-Length as a list",
        "RFC 9110 §8.6: a list may be refused; flashd refuses it (1*DIGIT only)",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        Status(400),
    ),
    case(
        "Content-Length with a plus sign",
        "RFC 9110 §8.6: Content-Length = 1*DIGIT",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        Status(400),
    ),
    case(
        "negative Content-Length",
        "RFC 9110 §8.6: Content-Length = 1*DIGIT",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\nabc",
        Status(400),
    ),
    case(
        "hex Content-Length",
        "RFC 9110 §8.6: Content-Length = 1*DIGIT",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc",
        Status(400),
    ),
    case(
        "Content-Length with an exponent",
        "RFC 9110 §8.6: Content-Length = 1*DIGIT",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3e0\r\n\r\nabc",
        Status(400),
    ),
    case(
        "Content-Length with inner space",
        "RFC 9110 §8.6: Content-Length = 1*DIGIT",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\nabc",
        Status(400),
    ),
    case(
        "empty Content-Length",
        "RFC 9112 §6.3 (5): an invalid Content-Length is 400",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
        Status(400),
    ),
    case(
        "Content-Length past u64",
        "RFC 9110 §8.6: a length that overflows is invalid, never wrapped",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        Status(400),
    ),
    case(
        "Content-Length above the body limit",
        "flashd: a declared body over max_body_bytes is 413 before any body byte",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
        Status(413),
    ),
    case(
        "Content-Length with a NUL",
        "RFC 9110 §5.5: NUL in a field value is invalid",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\x00\r\n\r\nabc",
        Status(400),
    ),
    case(
        "identical Content-Length twice, then a pipelined request",
        "RFC 9110 §8.6: identical duplicates may be taken as one; the next request starts after exactly 3 bytes",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        Requests(&[("/a", b"abc"), ("/b", b"")]),
    ),
    case(
        "Content-Length with OWS and leading zeros",
        "RFC 9110 §5.5 and §8.6: OWS is not part of the value; 003 is 1*DIGIT",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length:  003 \r\n\r\nabc",
        Requests(&[("/a", b"abc")]),
    ),
    case(
        "GET with a body",
        "RFC 9112 §6.3: a GET's Content-Length frames it like any other; nothing is smuggled behind it",
        b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\nGET /smuggled HTTP/1.1\r\n",
        Requests(&[("/a", b"GET /smuggled HTTP/1.1\r\n")]),
    ),
    // ---- line endings and bytes in the head ----
    case(
        "bare LF line ends",
        "RFC 9112 §2.2: flashd takes CRLF only (a LF-only line could hide a header from a parser in front)",
        b"GET / HTTP/1.1\nHost: x\n\n",
        Status(400),
    ),
    case(
        "one bare LF hiding a TE line",
        "RFC 9112 §2.2: CRLF only",
        b"POST / HTTP/1.1\r\nHost: x\r\nX: y\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        Status(400),
    ),
    case(
        "bare LF ending the head",
        "RFC 9112 §2.2: CRLF only",
        b"GET / HTTP/1.1\r\nHost: x\r\n\n",
        Status(400),
    ),
    case(
        "bare LF after the request line",
        "RFC 9112 §2.2: CRLF only",
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        Status(400),
    ),
    case(
        "bare CR inside a field",
        "RFC 9112 §2.2: a bare CR is invalid",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n",
        Status(400),
    ),
    case(
        "NUL in a field value",
        "RFC 9110 §5.5: NUL in a field value is invalid",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
        Status(400),
    ),
    case(
        "NUL in a field name",
        "RFC 9110 §5.1: a field name is a token",
        b"GET / HTTP/1.1\r\nHost: x\r\nX\x00Y: a\r\n\r\n",
        Status(400),
    ),
    case(
        "obs-fold in an ordinary field",
        "RFC 9112 §5.2: obs-fold in a request is 400",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n",
        Status(400),
    ),
    case(
        "one empty line before the request line",
        "RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF) before the request-line",
        b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ONE,
    ),
    case(
        "a bare LF before the request line",
        "RFC 9112 §2.2: CRLF only",
        b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Status(400),
    ),
    // ---- request line and target ----
    case(
        "two spaces in the request line",
        "RFC 9112 §3: single SP between the parts",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        Status(400),
    ),
    case(
        "HTTP/1.2",
        "RFC 9112 §2.3: flashd serves HTTP/1.0 and 1.1 only: 505",
        b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
        Status(505),
    ),
    case(
        "absolute-form target",
        "RFC 9112 §3.2.2: a server MUST accept absolute-form; its authority replaces Host",
        b"GET http://other.example:8080/a?q HTTP/1.1\r\nHost: x\r\n\r\n",
        Requests(&[("/a", b"")]),
    ),
    case(
        "absolute-form with an upper-case scheme",
        "RFC 3986 §3.1: the scheme is case-insensitive",
        b"GET HTTP://other.example/a HTTP/1.1\r\nHost: x\r\n\r\n",
        Requests(&[("/a", b"")]),
    ),
    case(
        "absolute-form without a path",
        "RFC 9112 §3.2.1: an empty path is /",
        b"GET http://other.example HTTP/1.1\r\nHost: x\r\n\r\n",
        ONE,
    ),
    case(
        "absolute-form with an empty host",
        "RFC 9110 §4.2.1: an http URI with an empty host is invalid",
        b"GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n",
        Status(400),
    ),
    case(
        "absolute-form with userinfo",
        "RFC 9110 §4.2.4: userinfo in an http URI is an error",
        b"GET http://user@other.example/a HTTP/1.1\r\nHost: x\r\n\r\n",
        Status(400),
    ),
    case(
        "absolute-form with another scheme",
        "RFC 9112 §3.2: only http(s) targets are served",
        b"GET ftp://other.example/a HTTP/1.1\r\nHost: x\r\n\r\n",
        Status(400),
    ),
    case(
        "asterisk-form with GET",
        "RFC 9112 §3.2.4: asterisk-form is only for OPTIONS",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        Status(400),
    ),
    case(
        "asterisk-form with OPTIONS",
        "RFC 9112 §3.2.4",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        Requests(&[("*", b"")]),
    ),
    case(
        "authority-form (CONNECT)",
        "RFC 9112 §3.2.3: authority-form is only for CONNECT, which flashd does not serve",
        b"CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n",
        Status(400),
    ),
    case(
        "a fragment in the target",
        "RFC 9112 §3.2: request-target has no fragment",
        b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
        Status(400),
    ),
    case(
        "a non-ASCII byte in the target",
        "RFC 3986 §2: a URI is ASCII; other bytes are percent-encoded",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        Status(400),
    ),
    // ---- Host ----
    case(
        "HTTP/1.1 without Host",
        "RFC 9112 §3.2: 400 for an HTTP/1.1 request that lacks Host",
        b"GET / HTTP/1.1\r\n\r\n",
        Status(400),
    ),
    case(
        "two Host fields",
        "RFC 9112 §3.2: 400 for more than one Host field line",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        Status(400),
    ),
    case(
        "two Host fields in HTTP/1.0",
        "RFC 9112 §3.2: more than one Host is 400 in any version",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        Status(400),
    ),
    case(
        "Host with a space",
        "RFC 9112 §3.2: a Host with an invalid value is 400",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        Status(400),
    ),
    case(
        "Host with userinfo",
        "RFC 9110 §7.2: Host = uri-host [ \":\" port ]",
        b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
        Status(400),
    ),
    case(
        "Host with a path",
        "RFC 9110 §7.2: Host = uri-host [ \":\" port ]",
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        Status(400),
    ),
    case(
        "Host with a bad port",
        "RFC 9110 §7.2: port = *DIGIT",
        b"GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n",
        Status(400),
    ),
    case(
        "HTTP/1.0 without Host",
        "RFC 9112 §3.2: only HTTP/1.1 requires Host",
        b"GET / HTTP/1.0\r\n\r\n",
        ONE,
    ),
    case(
        "empty Host",
        "RFC 9110 §7.2: an empty Host is sent when the target has no authority",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        ONE,
    ),
    case(
        "Host with an IPv6 literal and a port",
        "RFC 3986 §3.2.2: IP-literal",
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        ONE,
    ),
    // ---- chunked framing ----
    case(
        "chunk size of 17 hex digits",
        "flashd: a chunk size over 16 hex digits (past u64) is 400, never wrapped",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "chunk size of u64::MAX",
        "flashd: a chunk size over max_body_bytes is 413 before its data",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        Status(413),
    ),
    case(
        "chunk size with 0x",
        "RFC 9112 §7.1: chunk-size = 1*HEXDIG",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "negative chunk size",
        "RFC 9112 §7.1: chunk-size = 1*HEXDIG",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "chunk size with leading space",
        "RFC 9112 §7.1: chunk-size = 1*HEXDIG",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 1\r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "chunk size with trailing space and no extension",
        "RFC 9112 §7.1.1: BWS only before ';'",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "chunk line ended by a bare LF",
        "RFC 9112 §7.1: chunk lines end in CRLF",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "chunk data ended by a bare LF",
        "RFC 9112 §7.1: chunk-data is followed by CRLF",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZ\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "chunk data longer than its size",
        "RFC 9112 §7.1: chunk-data is exactly chunk-size bytes",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "extension with a bare LF in it (funky chunks)",
        "RFC 9112 §7.1.1: chunk-ext bytes are token / quoted-string; LF ends nothing",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n47\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "extension name with a space inside",
        "RFC 9112 §7.1.1: chunk-ext-name = token",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;na me\r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "extension with a NUL",
        "RFC 9112 §7.1.1: chunk-ext-name = token",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a\x00\r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "extension with an empty name",
        "RFC 9112 §7.1.1: chunk-ext-name = token (1*tchar)",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;=v\r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "extension with an empty value",
        "RFC 9112 §7.1.1: chunk-ext-val = token / quoted-string",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "extension value with a quote inside a token",
        "RFC 9112 §7.1.1: chunk-ext-val = token / quoted-string",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b\"c\r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "unterminated quoted extension value",
        "RFC 9110 §5.6.4: a quoted-string ends with DQUOTE; CR is not qdtext",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"b\r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "trailing space after an extension",
        "RFC 9112 §7.1.1: BWS only before ';' or '='",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b \r\nZ\r\n0\r\n\r\n",
        Status(400),
    ),
    case(
        "valid extensions: token, quoted-string with a quoted-pair, BWS, bare name",
        "RFC 9112 §7.1.1: chunk extensions are parsed and ignored",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1 ; a = b ;c;d=\"q \\\" ;\"\r\nZ\r\n0;last\r\n\r\n",
        Requests(&[("/c", b"Z")]),
    ),
    case(
        "trailer line ended by a bare LF",
        "RFC 9112 §7.1.2: trailer field lines end in CRLF",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n",
        Status(400),
    ),
    case(
        "final empty line is a bare LF",
        "RFC 9112 §7.1: the chunked body ends in CRLF",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n",
        Status(400),
    ),
    case(
        "trailer without a colon",
        "RFC 9112 §5.1: field-line = field-name \":\" OWS field-value OWS",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nXy\r\n\r\n",
        Status(400),
    ),
    case(
        "trailer with a space before the colon",
        "RFC 9112 §5.1: no whitespace between field name and colon",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : y\r\n\r\n",
        Status(400),
    ),
    case(
        "trailer folded (obs-fold)",
        "RFC 9112 §5.2: obs-fold is refused",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n",
        Status(400),
    ),
    case(
        "trailer with a NUL",
        "RFC 9110 §5.5: NUL in a field value is invalid",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: \x00\r\n\r\n",
        Status(400),
    ),
    case(
        "last chunk with no final CRLF, a request behind it",
        "RFC 9112 §7.1: what follows the last chunk is a trailer section; a request line is not a field line",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        Status(400),
    ),
    case(
        "valid trailers, then a pipelined request",
        "RFC 9112 §7.1.2: trailers are read and discarded; the next request starts after the final CRLF",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZ\r\n0\r\nX-T: v\r\nX-U:\r\n\r\nGET /n HTTP/1.1\r\nHost: x\r\n\r\n",
        Requests(&[("/c", b"Z"), ("/n", b"")]),
    ),
];

/// Requests framed, (path, body), and bytes left unconsumed.
type Framed = Result<(Vec<(String, Vec<u8>)>, usize), HttpError>;

/// What the framer made of `chunks` fed one after another.
fn run(chunks: &[&[u8]]) -> Framed {
    let limits = Limits::default();
    let mut framer = Framer::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            let mut headers = [const { std::mem::MaybeUninit::uninit() }; HEADERS_MAX];
            match framer.poll(&buf, &mut headers, &limits)? {
                Poll::Ready(req, n) => {
                    out.push((req.path.to_string(), req.body.to_vec()));
                    buf.drain(..n);
                }
                Poll::Pending { .. } => break,
            }
        }
    }
    Ok((out, buf.len()))
}

fn check(c: &Case, got: Framed) -> Option<String> {
    let ok = match (&c.want, &got) {
        (Status(s), Err(e)) => e.status() == *s,
        (Requests(want), Ok((reqs, left))) => {
            *left == 0
                && reqs.len() == want.len()
                && reqs
                    .iter()
                    .zip(want.iter())
                    .all(|((p, b), (wp, wb))| p == wp && b == wb)
        }
        _ => false,
    };
    (!ok).then(|| {
        format!(
            "{}\n    rule: {}\n    want: {:?}\n    got:  {:?}",
            c.name, c.rule, c.want, got
        )
    })
}

#[test]
fn every_case_whole() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|c| check(c, run(&[c.input])))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// The same outcome however the bytes arrive: state carried between reads
/// must not let a case through that the whole buffer refuses.
#[test]
fn every_case_byte_by_byte() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|c| {
            let bytes: Vec<&[u8]> = c.input.chunks(1).collect();
            check(c, run(&bytes))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
