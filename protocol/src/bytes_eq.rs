//! Equality of short byte strings without a call to `memcmp`.
//!
//! `<[u8]>::eq` calls libc's `memcmp` for any length the compiler cannot
//! see: ~19 instructions and a call for the 8 to 20 bytes the hot path
//! compares (a `Host` value against the last one seen, a route's literal
//! run against the target), twice per pipelined `/healthz` (callgrind,
//! issue 17). Up to 32 bytes, two overlapping word loads from each end
//! decide it; longer strings go to `memcmp`, whose setup then pays off.

/// `a == b`, bytewise.
#[inline(always)]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n > 32 {
        // Long enough for memcmp's setup to pay off.
    } else if n >= 16 {
        if let (Some(a0), Some(a1), Some(b0), Some(b1)) = (
            a.first_chunk::<16>(),
            a.last_chunk::<16>(),
            b.first_chunk::<16>(),
            b.last_chunk::<16>(),
        ) {
            return (u128::from_ne_bytes(*a0) ^ u128::from_ne_bytes(*b0))
                | (u128::from_ne_bytes(*a1) ^ u128::from_ne_bytes(*b1))
                == 0;
        }
    } else if n >= 8 {
        if let (Some(a0), Some(a1), Some(b0), Some(b1)) = (
            a.first_chunk::<8>(),
            a.last_chunk::<8>(),
            b.first_chunk::<8>(),
            b.last_chunk::<8>(),
        ) {
            return (u64::from_ne_bytes(*a0) ^ u64::from_ne_bytes(*b0))
                | (u64::from_ne_bytes(*a1) ^ u64::from_ne_bytes(*b1))
                == 0;
        }
    } else if n >= 4 {
        if let (Some(a0), Some(a1), Some(b0), Some(b1)) = (
            a.first_chunk::<4>(),
            a.last_chunk::<4>(),
            b.first_chunk::<4>(),
            b.last_chunk::<4>(),
        ) {
            return (u32::from_ne_bytes(*a0) ^ u32::from_ne_bytes(*b0))
                | (u32::from_ne_bytes(*a1) ^ u32::from_ne_bytes(*b1))
                == 0;
        }
    }
    a == b
}

/// `s` with `prefix` taken off its front, if it starts with it.
#[inline(always)]
pub fn strip_prefix<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if !bytes_eq(head, prefix.as_bytes()) {
        return None;
    }
    // A whole-string prefix ends on a char boundary of `s`: its bytes are
    // those of a `str`, so it ends where one of its chars ends, and `s`
    // has the same bytes there.
    s.get(prefix.len()..)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length to 40, equal and with one byte changed at every place
    /// (to every bit flip), agrees with `==`.
    #[test]
    fn agrees_with_slice_eq() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert!(bytes_eq(&a, &a.clone()), "len {n}");
            for at in 0..n {
                for bit in 0..8 {
                    let mut b = a.clone();
                    b[at] ^= 1 << bit;
                    assert!(!bytes_eq(&a, &b), "len {n} byte {at} bit {bit}");
                    assert!(!bytes_eq(&b, &a), "len {n} byte {at} bit {bit}");
                }
            }
            if n > 0 {
                assert!(!bytes_eq(&a, &a[..n - 1]));
                assert!(!bytes_eq(&a[1..], &a));
            }
        }
    }

    #[test]
    fn strips_prefixes_like_str() {
        let s = "/api/v1/activities/7/orders";
        for p in [
            "",
            "/",
            "/api/v1/",
            "/api/v1/activities/",
            s,
            "/api/v2/",
            "/api/v1/activities/77/x/y/z/w",
        ] {
            assert_eq!(strip_prefix(s, p), s.strip_prefix(p), "{p:?}");
        }
        assert_eq!(strip_prefix("é/x", "é"), Some("/x"));
    }
}
