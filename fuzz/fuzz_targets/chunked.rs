//! The chunked body decoder: never panics, never decodes more than the
//! body limit, gives the same body, length and error whatever the reads
//! the body arrives in, and decodes any well-formed encoding of a body
//! (sizes, extensions and trailers chosen by the fuzzer) back to exactly
//! that body, leaving the next request's bytes alone.
//!
//! Input: `[mode][limit][n][n schedule bytes][rest]`; mode even: `rest` is
//! raw wire bytes; mode odd: `rest` is a body re-encoded here (see `encode`).
#![no_main]

use flashd_fuzz::Splits;
use flashd_protocol::{ChunkedDecoder, HttpError};
use libfuzzer_sys::fuzz_target;

/// Trailer bytes allowed (flashd passes `server.max_header_bytes`).
const MAX_TRAILER_BYTES: usize = 256;

type Outcome = Result<Option<(usize, Vec<u8>)>, HttpError>;

fn decode(input: &[u8], splits: Option<&mut Splits<'_>>, max_body: usize) -> Outcome {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let Some(splits) = splits else {
        let r = d.feed(input, &mut out, max_body, MAX_TRAILER_BYTES)?;
        assert!(out.len() <= max_body);
        return Ok(r.map(|n| (n, out)));
    };
    let mut fed = 0;
    while fed < input.len() {
        fed = (fed + splits.next_len()).min(input.len());
        if let Some(n) = d.feed(&input[..fed], &mut out, max_body, MAX_TRAILER_BYTES)? {
            assert!(n <= fed, "claimed {n} of {fed} bytes");
            assert!(out.len() <= max_body);
            return Ok(Some((n, out)));
        }
    }
    assert!(out.len() <= max_body);
    Ok(None)
}

/// A well-formed chunked encoding of `body`: chunk sizes from `shape`
/// (1..=64 bytes each), in upper or lower case hex with leading zeros,
/// some with extensions, then trailers.
fn encode(body: &[u8], shape: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    let mut pick = || {
        let b = shape.get(i % shape.len().max(1)).copied().unwrap_or(7);
        i += 1;
        b
    };
    while !rest.is_empty() {
        let s = pick();
        let n = ((s & 63) as usize + 1).min(rest.len());
        let size = if s & 64 != 0 {
            format!("{n:04X}")
        } else {
            format!("{n:x}")
        };
        out.extend_from_slice(size.as_bytes());
        if s & 128 != 0 {
            out.extend_from_slice(b";name=value;flag");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if pick() & 1 != 0 {
        out.extend_from_slice(b"X-Checksum: abc\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (mode, limit) = (data[0], data[1]);
    let max_body = if limit == 0 {
        1 << 16
    } else {
        limit as usize * 4
    };
    let n = (data[2] as usize % 16).min(data.len() - 3);
    let schedule = &data[3..3 + n];
    let rest = &data[3 + n..];

    let encoded;
    let (input, body) = if mode & 1 == 0 {
        (rest, None)
    } else {
        let k = rest.len().min(8);
        let (shape, body) = rest.split_at(k);
        let mut e = encode(body, shape);
        // The next pipelined request must be left where it is.
        e.extend_from_slice(b"GET / HTTP/1.1\r\n");
        encoded = e;
        (&encoded[..], Some(body))
    };

    let whole = decode(input, None, max_body);
    let trickle = decode(input, Some(&mut Splits::new(&[])), max_body);
    assert_eq!(whole, trickle, "a byte at a time differs from all at once");
    if !schedule.is_empty() {
        let split = decode(input, Some(&mut Splits::new(schedule)), max_body);
        assert_eq!(
            whole, split,
            "reads of {schedule:?} differ from all at once"
        );
    }
    if let Some(body) = body {
        if body.len() <= max_body {
            let (n, out) = whole
                .expect("a well-formed encoding decodes")
                .expect("a complete encoding completes");
            assert_eq!(out, body, "decoded body differs");
            assert_eq!(
                &input[n..],
                b"GET / HTTP/1.1\r\n",
                "consumed the wrong length"
            );
        } else {
            assert_eq!(whole, Err(HttpError::PayloadTooLarge));
        }
    }
});
