//! flashd-protocol: HTTP/1.1 as bytes in, bytes out.
//!
//! This crate owns request framing (incremental, pipelined, keep-alive,
//! `Content-Length` and chunked bodies, `Expect: 100-continue`), response
//! encoding (pre-encoded status lines, a per-thread cached `Date`), the JSON
//! error shape every endpoint shares, the routing table, and the other
//! text format flashd serves: Prometheus exposition, with the one
//! [`histogram::Histogram`] type every metric uses.
//!
//! What it must never do: touch a socket, spawn a thread, block, or panic on
//! client bytes. Every malformed input is a typed [`HttpError`] that maps to
//! one status code and one JSON error body, so the reactor can answer it and
//! close the connection without knowing why.
//!
//! Framing is strict, by RFC 9110/9112, so that no parser in front of
//! flashd can frame a message differently (request smuggling): CRLF line
//! ends only, `Host` required in HTTP/1.1 and never repeated, a
//! `Transfer-Encoding` list must end in `chunked` and never comes with
//! `Content-Length`, chunk extensions and trailers follow their grammar.
//! `tests/smuggling.rs` is the catalogue of cases and the rule for each.
//! The common head shape (an uppercase method, an ASCII target, visible
//! ASCII header lines, CRLF) is read by [`head`] in one pass; anything else
//! goes to httparse, and `tests/head_differential.rs` holds the fast path
//! to a strict subset of httparse's readings.
//! `HEAD` is routed as `GET`, and the encoder leaves its body out.
//!
//! Invariants:
//! * [`Framer::poll`] either yields a complete request and the exact number of
//!   bytes it occupied, asks for more bytes, or fails; it never consumes a
//!   byte that belongs to the next pipelined request.
//! * A declared body larger than the limit is refused as soon as its length is
//!   known, before any body byte is needed.
//! * Header bytes are bounded by [`Limits::max_header_bytes`] whether or not
//!   the head has been completed.

pub mod bytes_eq;
mod chunked;
mod error;
pub mod head;
pub mod head_memo;
pub mod histogram;
mod limits;
mod parse_response;
mod request;
mod response;
pub mod room;
mod router;

pub mod date;
pub mod rfc3339;

pub use chunked::ChunkedDecoder;
pub use error::HttpError;
pub use httparse::{Header, EMPTY_HEADER};
pub use limits::{Limits, BODY_BUF_KEEP_BYTES, CHUNK_LINE_BYTES_MAX, HEADERS_MAX};
pub use parse_response::{parse_head_response, parse_response, ParsedResponse};
pub use request::{is_head_request, Framer, Method, Poll, Request};
pub use response::{json_escape_into, status_line, ConnectionHeader, Head, ResponseEncoder};
pub use router::{Params, RouteMatch, Router};
