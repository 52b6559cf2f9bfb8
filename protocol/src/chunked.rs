//! Resumable `Transfer-Encoding: chunked` decoder.
//!
//! It is fed the whole body region received so far (everything after the
//! head) on every call and remembers how far it has scanned, so a body that
//! trickles in one byte at a time costs O(n), not O(n²).

use crate::error::HttpError;
use crate::limits::MAX_CHUNK_LINE_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// Past the digits: skipping extensions up to CR.
    Ext,
    /// Saw CR after the size line, want LF.
    SizeLf,
    /// Copying chunk data; `remaining` bytes left in this chunk.
    Data,
    /// After chunk data, want CR.
    DataCr,
    /// After chunk data CR, want LF.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line, up to CR.
    Trailer,
    /// Saw CR ending a trailer line, want LF.
    TrailerLf,
    /// Saw CR on an empty line, want the final LF.
    EndLf,
    Done,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the body region already scanned.
    pos: usize,
    size: u64,
    digits: usize,
    remaining: u64,
    line_bytes: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            pos: 0,
            size: 0,
            digits: 0,
            remaining: 0,
            line_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Scan `input` (the entire body region so far, of which the first
    /// `self.pos` bytes were seen before) and append decoded data to `out`.
    /// Returns `Ok(Some(n))` once the terminating chunk and trailers are
    /// complete, `n` being the encoded length of the body; `Ok(None)` when
    /// more bytes are needed.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_body_bytes: usize,
        max_trailer_bytes: usize,
    ) -> Result<Option<usize>, HttpError> {
        const BAD: HttpError = HttpError::BadRequest("malformed chunked body");
        while self.pos < input.len() {
            let b = input[self.pos];
            match self.state {
                State::Size => {
                    if let Some(v) = hex(b) {
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(BAD);
                        }
                        self.size = (self.size << 4) | v as u64;
                        self.line_bytes += 1;
                        self.pos += 1;
                    } else if self.digits == 0 {
                        return Err(BAD);
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                        self.pos += 1;
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = State::Ext;
                        self.line_bytes += 1;
                        self.pos += 1;
                    } else {
                        return Err(BAD);
                    }
                }
                State::Ext => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' {
                        return Err(BAD);
                    } else {
                        self.line_bytes += 1;
                        if self.line_bytes > MAX_CHUNK_LINE_BYTES {
                            return Err(BAD);
                        }
                    }
                    self.pos += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(BAD);
                    }
                    self.pos += 1;
                    self.line_bytes = 0;
                    self.digits = 0;
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        if (out.len() as u64).saturating_add(self.size) > max_body_bytes as u64 {
                            return Err(HttpError::PayloadTooLarge);
                        }
                        self.remaining = self.size;
                        self.size = 0;
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let avail = (input.len() - self.pos) as u64;
                    let take = avail.min(self.remaining) as usize;
                    out.extend_from_slice(&input[self.pos..self.pos + take]);
                    self.pos += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(BAD);
                    }
                    self.pos += 1;
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(BAD);
                    }
                    self.pos += 1;
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.pos += 1;
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else if b == b'\n' {
                        return Err(BAD);
                    } else {
                        self.bump_trailer(max_trailer_bytes)?;
                        self.state = State::Trailer;
                    }
                }
                State::Trailer => {
                    self.pos += 1;
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    } else {
                        self.bump_trailer(max_trailer_bytes)?;
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(BAD);
                    }
                    self.pos += 1;
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(BAD);
                    }
                    self.pos += 1;
                    self.state = State::Done;
                    return Ok(Some(self.pos));
                }
                State::Done => return Ok(Some(self.pos)),
            }
        }
        if self.state == State::Done {
            return Ok(Some(self.pos));
        }
        Ok(None)
    }

    fn bump_trailer(&mut self, max: usize) -> Result<(), HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > max {
            return Err(HttpError::HeadersTooLarge);
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Option<(usize, Vec<u8>)>, HttpError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        Ok(d.feed(input, &mut out, 1 << 20, 1024)?.map(|n| (n, out)))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (n, out) = decode_all(body).unwrap().unwrap();
        assert_eq!(out, b"Wikipedia");
        assert_eq!(&body[n..], b"NEXT");
    }

    #[test]
    fn byte_at_a_time_matches_whole() {
        let body = b"a\r\n0123456789\r\n1\r\nX\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        for end in 1..body.len() {
            assert_eq!(d.feed(&body[..end], &mut out, 1 << 20, 1024).unwrap(), None);
        }
        assert_eq!(
            d.feed(body, &mut out, 1 << 20, 1024).unwrap(),
            Some(body.len())
        );
        assert_eq!(out, b"0123456789X");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"g\r\n"[..],
            b"\r\n",
            b"4\r\nWikiXX",
            b"4\nWiki",
            b"11111111111111111\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn enforces_body_limit_before_data_arrives() {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert_eq!(
            d.feed(b"ffff\r\n", &mut out, 100, 1024),
            Err(HttpError::PayloadTooLarge)
        );
    }
}
