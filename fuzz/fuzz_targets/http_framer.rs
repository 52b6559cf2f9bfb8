//! The pipelined request framer: whatever the bytes, `Framer::poll` never
//! panics, never claims more bytes than it was given, and yields the same
//! requests, then fails or waits alike, whether the connection delivers
//! the input at once, a byte at a time, or in reads of fuzzer-chosen
//! sizes. (Which error may differ: a head both too long and malformed is
//! 431 when it arrives in small reads, 400 when the malformed byte comes
//! in the same read as the limit is passed; either closes the connection.)
//!
//! Input: `[limits byte][split-schedule length n][n schedule bytes][wire bytes]`.
#![no_main]

use std::mem::MaybeUninit;

use flashd_fuzz::Splits;
use flashd_protocol::{Framer, HttpError, Limits, Method, Poll, HEADERS_MAX};
use libfuzzer_sys::fuzz_target;

/// A request as the handler sees it, owned so runs can be compared.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    minor_version: u8,
    keep_alive: bool,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    consumed: usize,
}

#[derive(Debug)]
struct Outcome {
    requests: Vec<Seen>,
    /// How the connection ended: an error, or waiting for more bytes.
    error: Option<HttpError>,
}

/// Same requests, and both failed or both wait (see the top).
impl PartialEq for Outcome {
    fn eq(&self, other: &Outcome) -> bool {
        self.requests == other.requests && self.error.is_some() == other.error.is_some()
    }
}

/// Feed `wire` to one framer as a connection would: append each read to
/// the buffer, answer every complete request in it (dropping its bytes),
/// stop at the first error.
fn run(wire: &[u8], splits: Option<&mut Splits<'_>>, limits: &Limits) -> Outcome {
    let mut framer = Framer::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0usize;
    let mut requests = Vec::new();
    let mut splits = splits;
    while fed < wire.len() {
        let n = match splits.as_deref_mut() {
            Some(s) => s.next_len(),
            None => wire.len(),
        };
        let end = (fed + n).min(wire.len());
        buf.extend_from_slice(&wire[fed..end]);
        fed = end;
        loop {
            let mut headers = [const { MaybeUninit::uninit() }; HEADERS_MAX];
            let len = buf.len();
            match framer.poll(&buf, &mut headers, limits) {
                Ok(Poll::Ready(req, consumed)) => {
                    assert!(
                        consumed > 0 && consumed <= len,
                        "consumed {consumed} of {len}"
                    );
                    assert!(
                        req.path.starts_with('/') || req.path == "*",
                        "path {:?}",
                        req.path
                    );
                    assert!(
                        req.body.len() <= limits.max_body_bytes,
                        "body of {} bytes past the limit {}",
                        req.body.len(),
                        limits.max_body_bytes
                    );
                    assert!(req.minor_version <= 1);
                    requests.push(Seen {
                        method: req.method,
                        path: req.path.to_string(),
                        query: req.query.map(str::to_string),
                        minor_version: req.minor_version,
                        keep_alive: req.keep_alive,
                        headers: req
                            .headers
                            .iter()
                            .map(|h| (h.name.to_string(), h.value.to_vec()))
                            .collect(),
                        body: req.body.to_vec(),
                        consumed,
                    });
                    buf.drain(..consumed);
                }
                Ok(Poll::Pending { .. }) => break,
                Err(e) => {
                    return Outcome {
                        requests,
                        error: Some(e),
                    }
                }
            }
        }
    }
    Outcome {
        requests,
        error: None,
    }
}

/// Longest input also fed a byte per read (see below).
const TRICKLE_MAX_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // Small limits too, so the limit paths are reached with short inputs.
    let mut limits = Limits::default();
    let l = data[0];
    if l & 1 == 1 {
        limits.max_header_bytes = 64 + (l as usize >> 1) * 8;
        limits.max_body_bytes = (l as usize >> 3) * 4;
    }
    let n = (data[1] as usize).min(data.len() - 2) % 16;
    let schedule = &data[2..2 + n];
    let wire = &data[2 + n..];

    let whole = run(wire, None, &limits);
    // A byte per read re-parses the head each time (quadratic): only for
    // inputs short enough that it stays cheap.
    if wire.len() <= TRICKLE_MAX_BYTES {
        let trickle = run(wire, Some(&mut Splits::new(&[])), &limits);
        assert_eq!(whole, trickle, "a byte at a time differs from all at once");
    }
    if !schedule.is_empty() {
        let split = run(wire, Some(&mut Splits::new(schedule)), &limits);
        assert_eq!(
            whole, split,
            "reads of {schedule:?} differ from all at once"
        );
    }
});
