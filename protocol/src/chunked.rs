//! Resumable `Transfer-Encoding: chunked` decoder.
//!
//! It is fed the whole body region received so far (everything after the
//! head) on every call and remembers how far it has scanned, so a body that
//! trickles in one byte at a time costs O(n), not O(n²).

use crate::error::HttpError;
use crate::limits::CHUNK_LINE_BYTES_MAX;
use crate::request::is_tchar;

/// Where the decoder is in RFC 9112 §7.1:
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-val = token / quoted-string
/// trailer-section = *( field-line CRLF )
/// ```
///
/// Every line ends in CRLF; a bare LF or CR anywhere is an error, so no
/// parser in front of us can split the body into different chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// Whitespace that may only be followed by `;` (after the size or a
    /// value: BWS is allowed before `;`, not before the line end).
    BwsSemi,
    /// Whitespace after an extension name: `;` or `=` may follow.
    BwsSemiOrEq,
    /// After `;`: optional whitespace, then a name.
    ExtNameStart,
    /// Inside an extension name (a token).
    ExtName,
    /// After `=`: optional whitespace, then a token or a quoted string.
    ExtValueStart,
    /// Inside a token value.
    ExtToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After a backslash inside a quoted string.
    ExtQuotedPair,
    /// Right after the closing quote.
    ExtQuotedEnd,
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
    /// Inside a trailer field name, up to `:`.
    TrailerName,
    /// Inside a trailer field value, up to CR.
    TrailerValue,
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
        const BAD_EXT: HttpError = HttpError::BadRequest("malformed chunk extension");
        const BAD_TRAILER: HttpError = HttpError::BadRequest("malformed trailer field");
        while self.pos < input.len() {
            let b = input[self.pos];
            match self.state {
                State::Size => {
                    if let Some(v) = hex(b) {
                        self.digits += 1;
                        // 16 hex digits fill a u64; the size is checked
                        // against the body limit before any data is taken.
                        if self.digits > 16 {
                            return Err(HttpError::BadRequest("chunk size too long"));
                        }
                        self.size = (self.size << 4) | v as u64;
                    } else if self.digits == 0 {
                        return Err(BAD);
                    } else {
                        self.state = match b {
                            b'\r' => State::SizeLf,
                            b';' => State::ExtNameStart,
                            b' ' | b'\t' => State::BwsSemi,
                            _ => return Err(BAD),
                        };
                    }
                    self.bump_line()?;
                }
                State::BwsSemi => {
                    self.state = match b {
                        b' ' | b'\t' => State::BwsSemi,
                        b';' => State::ExtNameStart,
                        _ => return Err(BAD_EXT),
                    };
                    self.bump_line()?;
                }
                State::BwsSemiOrEq => {
                    self.state = match b {
                        b' ' | b'\t' => State::BwsSemiOrEq,
                        b';' => State::ExtNameStart,
                        b'=' => State::ExtValueStart,
                        _ => return Err(BAD_EXT),
                    };
                    self.bump_line()?;
                }
                State::ExtNameStart => {
                    self.state = match b {
                        b' ' | b'\t' => State::ExtNameStart,
                        b if is_tchar(b) => State::ExtName,
                        _ => return Err(BAD_EXT),
                    };
                    self.bump_line()?;
                }
                State::ExtName => {
                    self.state = match b {
                        b if is_tchar(b) => State::ExtName,
                        b'\r' => State::SizeLf,
                        b';' => State::ExtNameStart,
                        b'=' => State::ExtValueStart,
                        b' ' | b'\t' => State::BwsSemiOrEq,
                        _ => return Err(BAD_EXT),
                    };
                    self.bump_line()?;
                }
                State::ExtValueStart => {
                    self.state = match b {
                        b' ' | b'\t' => State::ExtValueStart,
                        b'"' => State::ExtQuoted,
                        b if is_tchar(b) => State::ExtToken,
                        _ => return Err(BAD_EXT),
                    };
                    self.bump_line()?;
                }
                State::ExtToken | State::ExtQuotedEnd => {
                    self.state = match b {
                        b if is_tchar(b) && self.state == State::ExtToken => State::ExtToken,
                        b'\r' => State::SizeLf,
                        b';' => State::ExtNameStart,
                        b' ' | b'\t' => State::BwsSemi,
                        _ => return Err(BAD_EXT),
                    };
                    self.bump_line()?;
                }
                State::ExtQuoted => {
                    // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                    self.state = match b {
                        b'"' => State::ExtQuotedEnd,
                        b'\\' => State::ExtQuotedPair,
                        b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => {
                            State::ExtQuoted
                        }
                        _ => return Err(BAD_EXT),
                    };
                    self.bump_line()?;
                }
                State::ExtQuotedPair => {
                    // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                    self.state = match b {
                        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => State::ExtQuoted,
                        _ => return Err(BAD_EXT),
                    };
                    self.bump_line()?;
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
                    // A field name, or CR of the final empty line. Leading
                    // whitespace would be obs-fold: refused, as in the head.
                    self.state = match b {
                        b'\r' => State::EndLf,
                        b if is_tchar(b) => State::TrailerName,
                        _ => return Err(BAD_TRAILER),
                    };
                    self.bump_trailer(max_trailer_bytes)?;
                }
                State::TrailerName => {
                    // No whitespace before the colon (RFC 9112 §5.1).
                    self.state = match b {
                        b if is_tchar(b) => State::TrailerName,
                        b':' => State::TrailerValue,
                        _ => return Err(BAD_TRAILER),
                    };
                    self.bump_trailer(max_trailer_bytes)?;
                }
                State::TrailerValue => {
                    // field-value bytes: HTAB / SP / VCHAR / obs-text; CR
                    // must end the line; LF, NUL and other controls refused.
                    self.state = match b {
                        b'\r' => State::TrailerLf,
                        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => State::TrailerValue,
                        _ => return Err(BAD_TRAILER),
                    };
                    self.bump_trailer(max_trailer_bytes)?;
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(BAD_TRAILER);
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

    /// One more byte of a chunk-size line taken: bounded so a peer cannot
    /// make us scan extensions forever.
    fn bump_line(&mut self) -> Result<(), HttpError> {
        self.pos += 1;
        self.line_bytes += 1;
        if self.line_bytes > CHUNK_LINE_BYTES_MAX {
            return Err(HttpError::BadRequest("chunk size line too long"));
        }
        Ok(())
    }

    /// One more trailer byte taken, within the header-size limit.
    fn bump_trailer(&mut self, max: usize) -> Result<(), HttpError> {
        self.pos += 1;
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
