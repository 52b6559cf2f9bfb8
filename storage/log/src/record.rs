//! On-disk record framing: `len u32 | kind u8 | payload | crc32c u32`, the
//! CRC covering length, kind and payload, so a torn or flipped length is
//! caught as surely as a flipped payload byte.

/// A record's length field beyond this is corruption, not data: no event or
/// snapshot item comes near it.
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;
pub const RECORD_OVERHEAD: usize = 4 + 1 + 4;

pub fn encode_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= PAYLOAD_BYTES_MAX);
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record {
        kind: u8,
        payload: &'a [u8],
        len: usize,
    },
    /// The buffer ends inside this record (a torn write if at end of file).
    Incomplete,
    /// All zeroes where a record should start (preallocated or torn tail).
    Zeroes,
    BadLength(u32),
    Checksum {
        expected: u32,
        got: u32,
        len: usize,
    },
}

pub fn decode_record(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < 4 {
        return if buf.iter().all(|b| *b == 0) && !buf.is_empty() {
            Decoded::Zeroes
        } else {
            Decoded::Incomplete
        };
    }
    let n = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
    if n == 0
        && buf[4..buf.len().min(RECORD_OVERHEAD)]
            .iter()
            .all(|b| *b == 0)
    {
        return Decoded::Zeroes;
    }
    if n as usize > PAYLOAD_BYTES_MAX {
        return Decoded::BadLength(n);
    }
    let total = n as usize + RECORD_OVERHEAD;
    if buf.len() < total {
        return Decoded::Incomplete;
    }
    let expected = u32::from_le_bytes(buf[total - 4..total].try_into().expect("4 bytes"));
    let got = crc32c::crc32c(&buf[..total - 4]);
    if got != expected {
        return Decoded::Checksum {
            expected,
            got,
            len: total,
        };
    }
    Decoded::Record {
        kind: buf[4],
        payload: &buf[5..total - 4],
        len: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_is_caught() {
        let mut b = Vec::new();
        encode_record(&mut b, 2, b"hello world");
        assert_eq!(
            decode_record(&b),
            Decoded::Record {
                kind: 2,
                payload: b"hello world",
                len: b.len()
            }
        );
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(
                    !matches!(decode_record(&c), Decoded::Record { .. }),
                    "flip at {i}.{bit} undetected"
                );
            }
        }
        for cut in 0..b.len() {
            assert!(
                matches!(
                    decode_record(&b[..cut]),
                    Decoded::Incomplete | Decoded::Zeroes
                ),
                "cut {cut}"
            );
        }
    }
}
