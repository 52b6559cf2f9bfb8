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
    match n {
        16..=32 => ends_eq::<16>(a, b),
        8..=15 => ends_eq::<8>(a, b),
        4..=7 => ends_eq::<4>(a, b),
        // Under four bytes a byte loop is short; over 32 memcmp's setup
        // pays off.
        _ => a == b,
    }
}

/// Whether `a` and `b` (of one length, at least `K`) agree in their
/// first and their last `K` bytes, which between them cover every byte.
#[inline(always)]
fn ends_eq<const K: usize>(a: &[u8], b: &[u8]) -> bool {
    debug_assert!(K <= a.len() && a.len() == b.len());
    a.first_chunk::<K>() == b.first_chunk::<K>() && a.last_chunk::<K>() == b.last_chunk::<K>()
}

/// `name == token`, ASCII case-insensitively, for a header `name` as the
/// framer passed it (every byte a `tchar`) and a `token` of lowercase
/// letters, digits and `-` (a header name as flashd spells it).
///
/// Eight bytes a step: setting bit 5 of every byte of `name` lowers its
/// letters, and no other `tchar` becomes a lowercase letter, a digit or
/// `-` by it (only control bytes, which no header name holds, would).
/// A byte at a time with `to_ascii_lowercase` was ~13 instructions a
/// byte, ~170 to find `authorization` among a buy's headers (callgrind,
/// issue 17).
#[inline]
pub fn eq_token_ci(name: &[u8], token: &[u8]) -> bool {
    debug_assert!(token
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-'));
    let n = token.len();
    if name.len() != n {
        return false;
    }
    const LOWER8: u64 = 0x2020_2020_2020_2020;
    let w8 = |c: &[u8; 8]| u64::from_ne_bytes(*c);
    let mut i = 0;
    while i + 8 <= n {
        if let (Some(a), Some(b)) = (name[i..].first_chunk::<8>(), token[i..].first_chunk::<8>()) {
            if w8(a) | LOWER8 != w8(b) {
                return false;
            }
        }
        i += 8;
    }
    if i == n {
        return true;
    }
    if n >= 8 {
        // The rest as the last eight bytes, overlapping what was compared.
        if let (Some(a), Some(b)) = (name.last_chunk::<8>(), token.last_chunk::<8>()) {
            return w8(a) | LOWER8 == w8(b);
        }
    }
    if n >= 4 {
        // Four to seven bytes (`host`, `expect`): the first and the last
        // four, overlapping (a byte loop was ~20 instructions for `Host`).
        const LOWER4: u32 = 0x2020_2020;
        let w4 = |c: &[u8; 4]| u32::from_ne_bytes(*c);
        if let (Some(a), Some(b), Some(c), Some(d)) = (
            name.first_chunk::<4>(),
            token.first_chunk::<4>(),
            name.last_chunk::<4>(),
            token.last_chunk::<4>(),
        ) {
            return w4(a) | LOWER4 == w4(b) && w4(c) | LOWER4 == w4(d);
        }
    }
    name[i..]
        .iter()
        .zip(&token[i..])
        .all(|(a, b)| a | 0x20 == *b)
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

    /// Against `eq_ignore_ascii_case` for every tchar at every place of
    /// every name flashd looks up, and for names of every length.
    #[test]
    fn tokens_compare_like_eq_ignore_ascii_case() {
        let tchars =
            b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let tokens = [
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "expect",
            "authorization",
            "x-request-id",
            "last-event-id",
            "a",
            "ab",
            "abc",
            "abcd-",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "0123456789abcdef-xyz",
        ];
        for t in tokens {
            let upper = t.to_ascii_uppercase();
            assert!(eq_token_ci(t.as_bytes(), t.as_bytes()));
            assert!(eq_token_ci(upper.as_bytes(), t.as_bytes()), "{upper}");
            for at in 0..t.len() {
                for &c in tchars {
                    let mut name = t.as_bytes().to_vec();
                    name[at] = c;
                    assert_eq!(
                        eq_token_ci(&name, t.as_bytes()),
                        name.eq_ignore_ascii_case(t.as_bytes()),
                        "{:?} vs {t}",
                        String::from_utf8_lossy(&name)
                    );
                }
            }
            assert!(!eq_token_ci(&t.as_bytes()[1..], t.as_bytes()));
            assert!(!eq_token_ci(format!("{t}x").as_bytes(), t.as_bytes()));
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
