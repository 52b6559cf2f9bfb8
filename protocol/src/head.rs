//! The common request head, read without httparse.
//!
//! Almost every request a flash sale sees is the same shape: an uppercase
//! method, an ASCII origin-form target, `HTTP/1.1`, a few `name: value`
//! lines of visible ASCII, every line ending in CRLF. [`parse`] reads
//! exactly that shape in one forward pass, and gives up, changing nothing
//! the caller can see, on anything else: a partial head, a bare LF, a byte
//! of 0x80 or above, an unknown method, more headers than slots. The caller
//! then asks httparse, whose answer (a request, `Partial`, or an error) is
//! the one that counts.
//!
//! Why: httparse's general path was ~530 instructions of a pipelined
//! `GET /healthz` (callgrind; 100 of them its UTF-8 check of the target,
//! which this shape cannot need), about a third of the whole request.
//!
//! Invariant (checked by `tests/head_differential.rs` and the
//! `http_head` fuzz target): whenever [`parse`] returns a head, httparse
//! with flashd's settings returns `Complete` for the same bytes, with the
//! same method, target, version, header names and values, and length.
//! The fast path is a strict subset; it never accepts what httparse
//! refuses, and never frames a message differently.

use std::mem::MaybeUninit;

use httparse::Header;

use crate::request::Method;

/// A head read by [`parse`].
#[derive(Debug)]
pub struct SimpleHead<'a> {
    pub method: Method,
    /// The request target as sent (only bytes 0x21..=0x7E).
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: &'a [Header<'a>],
    /// Bytes of the head, through the blank line.
    pub len: usize,
}

/// Header name bytes: `tchar` (RFC 9110 §5.6.2), one lookup a byte.
static NAME: [bool; 256] = {
    let mut t = [false; 256];
    let names = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut i = 0;
    while i < names.len() {
        t[names[i] as usize] = true;
        i += 1;
    }
    t
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HTTP_1_1: u64 = u64::from_le_bytes(*b"HTTP/1.1");
const HTTP_1_0: u64 = u64::from_le_bytes(*b"HTTP/1.0");
const HIGH: u64 = 0x8080_8080_8080_8080;
const M_GET: u32 = u32::from_le_bytes(*b"GET ");
const M_POST: u32 = u32::from_le_bytes(*b"POST");
const M_HEAD: u32 = u32::from_le_bytes(*b"HEAD");
const M_PUT: u32 = u32::from_le_bytes(*b"PUT ");

/// The index of the first byte at or after `i` that is below `lo` or above
/// 0x7E (`buf.len()` if none). Eight bytes a step while none is: a token
/// or a `Host` value is tens of bytes, an `Authorization` value hundreds,
/// and a byte a step with a bounds check was ~5 instructions a byte. Only
/// the last few bytes of the buffer, too few for a word, go a byte a step.
#[inline]
fn visible_run(buf: &[u8], mut i: usize, lo: u8) -> usize {
    debug_assert!(lo <= 0x80);
    while let Some(chunk) = buf.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        // A byte below `lo` (exact for lo <= 0x80 as an "any" test), or
        // at or above 0x7F (x + 1 sets the high bit of 0x7F, `| x` of the
        // bytes already at or above 0x80; a carry only follows a byte
        // that is already a hit).
        let below = x.wrapping_sub(ONES * lo as u64) & !x;
        let above = x.wrapping_add(ONES) | x;
        let hits = (below | above) & HIGH;
        if hits != 0 {
            // The lowest hit is exact (no borrow or carry reaches it from
            // below: only a hit makes one), and the word is little-endian,
            // so it is the first byte that ends the run; no byte loop.
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + buf[i.min(buf.len())..]
        .iter()
        .position(|&b| b < lo || b > 0x7e)
        .unwrap_or(buf.len().saturating_sub(i))
}

/// The index of the first byte at or after `i` that is not a `tchar`
/// (`buf.len()` if none): the end of a header name. Eight bytes a step
/// while they are letters, digits and `-` (every name a client sends in
/// practice); the rarer tchars (`!#$%&'*+.^_`|~`) go on a byte a step. A
/// table lookup a byte was ~10 instructions a byte, ~50 of a pipelined
/// `/healthz`'s `Host` alone (callgrind, issue 17).
#[inline(always)]
fn name_run(buf: &[u8], mut i: usize) -> usize {
    const LOW7: u64 = !HIGH;
    while let Some(chunk) = buf.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        // Range tests on the low seven bits of each byte: no byte's sum
        // can carry into the next (each is below 0x80, each addend at most
        // 0x80); bytes of 0x80 and above are taken out by `!x` at the end.
        let y = x & LOW7;
        let l = y | (ONES * 0x20); // a letter's lower case
        let alpha = l.wrapping_add(ONES * (0x80 - b'a' as u64))
            & !l.wrapping_add(ONES * (0x7f - b'z' as u64));
        let digit = y.wrapping_add(ONES * (0x80 - b'0' as u64))
            & !y.wrapping_add(ONES * (0x7f - b'9' as u64));
        let z = y ^ (ONES * b'-' as u64);
        let dash = !(z.wrapping_add(ONES * 0x7f) | z);
        let other = !((alpha | digit | dash) & !x) & HIGH;
        if other != 0 {
            let j = i + (other.trailing_zeros() / 8) as usize;
            // Most often the ':' after the name; a rarer tchar goes on a
            // byte a step.
            if !NAME[buf[j] as usize] {
                return j;
            }
            i = j;
            break;
        }
        i += 8;
    }
    i + buf[i.min(buf.len())..]
        .iter()
        .position(|&b| !NAME[b as usize])
        .unwrap_or(buf.len().saturating_sub(i))
}

/// Read `buf`'s head if it has the common shape (see the top), writing its
/// headers into the first slots; otherwise hand the slots back untouched
/// in meaning (slots may have been written, none is claimed initialised).
pub fn parse<'a>(
    buf: &'a [u8],
    slots: &'a mut [MaybeUninit<Header<'a>>],
) -> Result<SimpleHead<'a>, &'a mut [MaybeUninit<Header<'a>>]> {
    let Some((method, target, minor_version, n, len)) = scan(buf, slots) else {
        return Err(slots);
    };
    debug_assert!(n <= slots.len());
    // SAFETY: `scan` wrote `slots[..n]` (each with `MaybeUninit::write`)
    // before returning `n`, and `MaybeUninit<T>` has `T`'s layout; the
    // slice borrows `slots` for `'a`, so nothing else can write them.
    let headers = unsafe { std::slice::from_raw_parts(slots.as_ptr().cast::<Header<'a>>(), n) };
    Ok(SimpleHead {
        method,
        target,
        minor_version,
        headers,
        len,
    })
}

/// `(method, target, minor version, headers written, head length)`.
fn scan<'a>(
    buf: &'a [u8],
    slots: &mut [MaybeUninit<Header<'a>>],
) -> Option<(Method, &'a str, u8, usize, usize)> {
    // The method as one word (a match on the four bytes was ~13
    // instructions a request).
    let (method, mut i) = match u32::from_le_bytes(*buf.first_chunk::<4>()?) {
        M_GET => (Method::Get, 4),
        M_POST if buf.get(4) == Some(&b' ') => (Method::Post, 5),
        M_HEAD if buf.get(4) == Some(&b' ') => (Method::Head, 5),
        M_PUT => (Method::Put, 4),
        _ => return None,
    };
    // The target: at least one visible ASCII byte, then one SP.
    let start = i;
    i = visible_run(buf, i, 0x21);
    if i == start || *buf.get(i)? != b' ' {
        return None;
    }
    let target_bytes = &buf[start..i];
    debug_assert!(target_bytes.is_ascii());
    // SAFETY: every byte of the target is in 0x21..=0x7E (class TARGET),
    // so it is ASCII and therefore UTF-8.
    let target = unsafe { std::str::from_utf8_unchecked(target_bytes) };
    // The version and its CRLF as one word and one pair: matching the
    // ten bytes against two literals was ~30 instructions a request.
    let version = buf.get(i + 1..i + 11)?;
    let (Some(word), Some(crlf)) = (version.first_chunk::<8>(), version.last_chunk::<2>()) else {
        return None;
    };
    if crlf != b"\r\n" {
        return None;
    }
    let minor_version = match u64::from_le_bytes(*word) {
        HTTP_1_1 => 1,
        HTTP_1_0 => 0,
        _ => return None,
    };
    i += 11;
    let mut n = 0;
    loop {
        let b = *buf.get(i)?;
        if b == b'\r' {
            return (*buf.get(i + 1)? == b'\n').then_some((
                method,
                target,
                minor_version,
                n,
                i + 2,
            ));
        }
        // name ':' *( SP / HTAB ) value *( SP / HTAB ) CRLF
        let name_at = i;
        i = name_run(buf, i);
        if i >= buf.len() {
            return None;
        }
        if i == name_at || buf[i] != b':' {
            return None;
        }
        let name_bytes = &buf[name_at..i];
        i += 1;
        while matches!(*buf.get(i)?, b' ' | b'\t') {
            i += 1;
        }
        let value_at = i;
        loop {
            i = visible_run(buf, i, 0x20);
            // HTAB is a value byte too, but rare: step over it and go on.
            if *buf.get(i)? != b'\t' {
                break;
            }
            i += 1;
        }
        if buf[i] != b'\r' || *buf.get(i + 1)? != b'\n' {
            return None;
        }
        let mut value_end = i;
        while value_end > value_at && matches!(buf[value_end - 1], b' ' | b'\t') {
            value_end -= 1;
        }
        debug_assert!(name_bytes.is_ascii());
        // SAFETY: every byte of the name is a tchar, so ASCII, so UTF-8.
        let name = unsafe { std::str::from_utf8_unchecked(name_bytes) };
        slots.get_mut(n)?.write(Header {
            name,
            value: &buf[value_at..value_end],
        });
        n += 1;
        i += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name run ends where the table loop ends, for every byte value
    /// at every place in and after a word, and from any start.
    #[test]
    fn name_run_matches_the_table() {
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'x', b'Z', b'7', b'-', b'_'] {
                        let mut v = vec![fill; len];
                        v[at] = b;
                        for start in 0..=len.min(3) {
                            let want = (start..len).find(|&j| !NAME[v[j] as usize]).unwrap_or(len);
                            assert_eq!(name_run(&v, start), want, "{v:?} from {start}");
                        }
                    }
                }
            }
        }
    }

    /// The word-at-a-time run ends where a byte loop ends, for every byte
    /// value at every place in and after a word, and from any start.
    #[test]
    fn visible_run_matches_a_byte_loop() {
        for lo in [0x20u8, 0x21] {
            for len in 0..20 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut v = vec![b'x'; len];
                        v[at] = b;
                        for start in 0..=len.min(3) {
                            let want = (start..len)
                                .find(|&j| v[j] < lo || v[j] > 0x7e)
                                .unwrap_or(len);
                            assert_eq!(visible_run(&v, start, lo), want, "{v:?} from {start}");
                        }
                    }
                }
            }
        }
    }
}
