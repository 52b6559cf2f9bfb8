/// Header slots httparse gets per request. 64 covers every real client
/// (browsers send ~15, load tools fewer); more is a header-stuffing attack
/// and is answered 431 like oversized headers.
pub const HEADERS_MAX: usize = 64;

/// Longest chunk-size line (size + extensions) accepted in a chunked body.
/// A size needs at most 16 hex digits; extensions are ignored but bounded so
/// a peer cannot make us scan forever.
pub const CHUNK_LINE_BYTES_MAX: usize = 1024;

/// Capacity a connection's decoded-body buffer keeps between requests. It
/// only fills for chunked bodies; an order or a sale is a few hundred bytes,
/// so 4 KiB takes every normal chunked request without growing, and a
/// buffer grown past it by one large body is given back after that request
/// instead of being held for the life of the connection.
pub const BODY_BUF_KEEP_BYTES: usize = 4 * 1024;

/// Per-server request limits, taken from `server.max_header_bytes` and
/// `server.max_body_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request line plus headers, including the blank line.
    pub max_header_bytes: usize,
    /// Decoded body bytes (after chunked decoding).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}
