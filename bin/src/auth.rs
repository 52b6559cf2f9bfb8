//! Bearer tokens: HS256 JWTs for buyers ("sub" = user id in canonical
//! decimal, "exp" and, when present, "nbf" checked), a static token for
//! admins, compared in constant time.
//!
//! Verification is done here rather than by `jsonwebtoken::decode`, which
//! is on every buy's path: it builds the HMAC key anew for each token (two
//! extra SHA-256 blocks) and parses the claims twice (into a JSON map to
//! validate, then into the struct). A callgrind profile of the sold-out
//! stampede put SHA-256 at 36% of flashd's instructions and JSON/base64/
//! UTF-8 checks of the token at another ~15%. Issuing stays with
//! `jsonwebtoken`; the tests check that both agree. A token verified once
//! is kept in a per-thread table ([`crate::auth_cache`]), so a buyer's
//! retries with it skip the HMAC.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use flashd_engine::UserId;

use crate::auth_cache::{self, Owner, Verified};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// Seconds of clock skew allowed past `exp`.
const LEEWAY_S: u64 = 5;

/// The claims a buyer's token must carry (`sub`, `exp`) or that bind it
/// when present (`nbf`); others are ignored.
#[derive(Deserialize)]
struct BuyerClaims<'a> {
    #[serde(borrow)]
    sub: std::borrow::Cow<'a, str>,
    exp: u64,
    /// Absent: no lower bound. Present, it must be a NumericDate: `null`
    /// or any other type refuses the token rather than dropping the bound.
    #[serde(default, deserialize_with = "present_u64")]
    nbf: Option<u64>,
}

fn present_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    u64::deserialize(d).map(Some)
}

/// Digits in `u64::MAX`: a longer `sub` cannot be a user id.
const USER_ID_DIGITS_MAX: usize = 20;

/// A user id as `sub` must spell it: canonical decimal, so one user has
/// exactly one spelling (no sign, no leading zero, no padding, no
/// overflow) and never 0, which is no user.
fn user_id(sub: &str) -> Option<UserId> {
    user_id_digits(sub.as_bytes())
}

fn user_id_digits(b: &[u8]) -> Option<UserId> {
    if b.is_empty() || b.len() > USER_ID_DIGITS_MAX || b[0] == b'0' {
        return None;
    }
    let mut v: UserId = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        // Only overflow can fail here (all digits, no sign).
        v = v.checked_mul(10)?.checked_add(UserId::from(c - b'0'))?;
    }
    Some(v)
}

#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
}

pub struct Auth {
    hmac: ring::hmac::Key,
    encoding: EncodingKey,
    /// The header segment `issue` writes: a token carrying it needs no
    /// header decoding.
    own_header: Vec<u8>,
    /// HMAC-SHA256 of the admin token, keyed by the token itself: a
    /// presented token is checked by computing its tag and comparing the
    /// two 32-byte tags in constant time (`ring::hmac::verify`), so the
    /// time taken depends on neither the content nor the length of the
    /// configured token. The plain token is not kept.
    admin_key: ring::hmac::Key,
    admin_tag: ring::hmac::Tag,
    /// Tags this `Auth`'s entries in the token cache: an `Auth` built
    /// with another secret never gets a token verified under this one.
    owner: Owner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Invalid,
}

impl AuthError {
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing bearer token",
            AuthError::Invalid => "invalid or expired token",
        }
    }
}

impl Auth {
    pub fn new(jwt_secret: &str, admin_token: &str) -> Auth {
        let encoding = EncodingKey::from_secret(jwt_secret.as_bytes());
        let sample = encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "1".into(),
                exp: 0,
                iat: None,
            },
            &encoding,
        )
        .expect("HS256 encoding cannot fail");
        let own_header = sample.split('.').next().unwrap_or("").as_bytes().to_vec();
        let admin_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, admin_token.as_bytes());
        let admin_tag = ring::hmac::sign(&admin_key, admin_token.as_bytes());
        Auth {
            hmac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwt_secret.as_bytes()),
            encoding,
            own_header,
            admin_key,
            admin_tag,
            owner: Owner::new(),
        }
    }

    /// The user a `Bearer` header value speaks for, at `now_s` (Unix
    /// seconds, from the caller's clock).
    pub fn user(&self, authorization: Option<&[u8]>, now_s: u64) -> Result<UserId, AuthError> {
        let token = bearer(authorization)?;
        let v = auth_cache::get_or_verify(self.owner, token, || self.verified(token, now_s))?;
        // A token from the table was in time when it was verified: time
        // may have moved on (or back) since.
        if in_time(&v, now_s) {
            Ok(v.user)
        } else {
            Err(AuthError::Invalid)
        }
    }

    /// The full check, never the cache.
    #[cfg(test)]
    fn verify(&self, token: &[u8], now_s: u64) -> Result<UserId, AuthError> {
        self.verified(token, now_s).map(|v| v.user)
    }

    /// Check an HS256 JWT: `header.payload.signature`, the signature over
    /// the first two segments (constant-time compare), `alg` exactly HS256
    /// (never `none`, never another algorithm), `exp` not past and `nbf`
    /// (when present) not ahead, both with `LEEWAY_S`, and `sub` a user id
    /// in canonical decimal. What it established, for the cache.
    fn verified(&self, token: &[u8], now_s: u64) -> Result<Verified, AuthError> {
        let bad = |_| AuthError::Invalid;
        let dot1 = find_dot(token).ok_or(AuthError::Invalid)?;
        let dot2 = dot1 + 1 + find_dot(&token[dot1 + 1..]).ok_or(AuthError::Invalid)?;
        let (header, payload, sig) = (&token[..dot1], &token[dot1 + 1..dot2], &token[dot2 + 1..]);
        let mut sig_buf = [0u8; 48];
        let n = b64url_decode(sig, &mut sig_buf).ok_or(AuthError::Invalid)?;
        ring::hmac::verify(&self.hmac, &token[..dot2], &sig_buf[..n]).map_err(bad)?;
        // Signed by us: now its content can be trusted to parse.
        if header != self.own_header.as_slice() {
            let h = URL_SAFE_NO_PAD
                .decode(header)
                .map_err(|_| AuthError::Invalid)?;
            if !is_json_text_object(&h) {
                return Err(AuthError::Invalid);
            }
            let h: JoseHeader = serde_json::from_slice(&h).map_err(|_| AuthError::Invalid)?;
            if h.alg != "HS256" {
                return Err(AuthError::Invalid);
            }
        }
        let mut buf = [0u8; 512];
        let claims = match b64url_decode(payload, &mut buf) {
            Some(n) if !is_object(&buf[..n]) => return Err(AuthError::Invalid),
            Some(n) => match issued_claims(&buf[..n]) {
                Some(c) => Ok(c),
                None if !is_json_text_object(&buf[..n]) => return Err(AuthError::Invalid),
                None => serde_json::from_slice::<BuyerClaims>(&buf[..n])
                    .map(|c| (user_id(&c.sub), c.exp, c.nbf)),
            },
            // Longer than any token we issue (or not base64url, which the
            // slow path then refuses): still a valid token.
            None => {
                let v = URL_SAFE_NO_PAD
                    .decode(payload)
                    .map_err(|_| AuthError::Invalid)?;
                if !is_json_text_object(&v) {
                    return Err(AuthError::Invalid);
                }
                serde_json::from_slice::<BuyerClaims>(&v).map(|c| (user_id(&c.sub), c.exp, c.nbf))
            }
        };
        match claims {
            Ok((Some(user), exp, nbf)) => {
                let v = Verified { user, exp, nbf };
                if in_time(&v, now_s) {
                    Ok(v)
                } else {
                    Err(AuthError::Invalid)
                }
            }
            _ => Err(AuthError::Invalid),
        }
    }

    pub fn admin(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        let token = bearer(authorization)?;
        // Tags of equal, fixed length compared in constant time: timing
        // reveals neither how much of a guess was right nor the configured
        // token's length.
        ring::hmac::verify(&self.admin_key, token, self.admin_tag.as_ref())
            .map_err(|_| AuthError::Invalid)
    }

    pub fn issue(&self, user: UserId, now_s: u64, ttl_s: u64) -> String {
        let claims = Claims {
            sub: user.to_string(),
            exp: now_s + ttl_s,
            iat: Some(now_s),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding cannot fail")
    }
}

/// `exp` not past and `nbf` (when present) not ahead of `now_s`, both
/// with `LEEWAY_S`: on a full check and on every cache hit alike.
fn in_time(v: &Verified, now_s: u64) -> bool {
    v.exp.saturating_add(LEEWAY_S) >= now_s
        && !matches!(v.nbf, Some(nbf) if nbf > now_s.saturating_add(LEEWAY_S))
}

fn bearer(v: Option<&[u8]>) -> Result<&[u8], AuthError> {
    let v = v.ok_or(AuthError::Missing)?;
    let rest = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))
        .ok_or(AuthError::Invalid)?;
    let t = rest.trim_ascii();
    if t.is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(t)
}

/// Strict base64url without padding (RFC 4648 §5), as
/// `URL_SAFE_NO_PAD.decode_slice` decodes it: no `=`, no whitespace, no
/// length of 1 mod 4, and the unused bits of the last symbol zero, so that
/// a token has exactly one spelling. `None` also when `out` is too short.
/// A plain table loop: the general decoder was ~1,800 instructions of a
/// sold-out buy for the signature and the claims (callgrind).
fn b64url_decode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    /// Set in a table entry for a byte outside the alphabet.
    const BAD: u32 = 1 << 31;
    /// `TABLE[k][b]`: the 6 bits of symbol `b` already shifted to where
    /// they go in a group of 4 symbols at position `k` (or `BAD`), so a
    /// group decodes with four lookups OR-ed together.
    static TABLE: [[u32; 256]; 4] = {
        let mut t = [[BAD; 256]; 4];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut i = 0;
        while i < 64 {
            let mut k = 0;
            while k < 4 {
                t[k][alphabet[i] as usize] = (i as u32) << (18 - 6 * k);
                k += 1;
            }
            i += 1;
        }
        t
    };
    let tail = input.len() % 4;
    if tail == 1 {
        return None;
    }
    let full = input.len() / 4;
    let n = full * 3 + tail.saturating_sub(1);
    if n > out.len() {
        return None;
    }
    // One test at the end instead of a branch per symbol.
    let mut seen = 0u32;
    for (q, o) in input.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
        let w = TABLE[0][q[0] as usize]
            | TABLE[1][q[1] as usize]
            | TABLE[2][q[2] as usize]
            | TABLE[3][q[3] as usize];
        seen |= w;
        o[0] = (w >> 16) as u8;
        o[1] = (w >> 8) as u8;
        o[2] = w as u8;
    }
    let rest = &input[full * 4..];
    let at = full * 3;
    // The unused low bits of the last symbol must be zero.
    let unused = match rest.len() {
        0 => 0,
        2 => {
            let w = TABLE[0][rest[0] as usize] | TABLE[1][rest[1] as usize];
            seen |= w;
            out[at] = (w >> 16) as u8;
            w & 0xf000
        }
        _ => {
            let w = TABLE[0][rest[0] as usize]
                | TABLE[1][rest[1] as usize]
                | TABLE[2][rest[2] as usize];
            seen |= w;
            out[at] = (w >> 16) as u8;
            out[at + 1] = (w >> 8) as u8;
            w & 0xc0
        }
    };
    if seen & BAD != 0 || unused != 0 {
        return None;
    }
    Some(n)
}

/// The claims of a token in the shape `issue` writes, read without serde:
/// exactly `{"sub":"<digits>","exp":<digits>}`, optionally with
/// `,"iat":<digits>` before the `}`, numbers plain integers within `u64`.
/// `None` for anything else, which serde then reads, so the result is
/// always the one `BuyerClaims` gives (`iat` is ignored there too). serde
/// and the general decoder were ~2,500 instructions per buy (callgrind).
fn issued_claims(json: &[u8]) -> Option<(Option<UserId>, u64, Option<u64>)> {
    let rest = json.strip_prefix(br#"{"sub":""#)?;
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let sub = user_id_digits(&rest[..n]);
    let rest = rest[n..].strip_prefix(br#"","exp":"#)?;
    let (exp, rest) = plain_u64(rest)?;
    let rest = match rest.strip_prefix(br#","iat":"#) {
        Some(r) => plain_u64(r)?.1,
        None => rest,
    };
    (rest == b"}").then_some((sub, exp, None))
}

/// A JSON integer at the start of `b` (`0`, or digits without a leading
/// zero) of at most 19 digits (so within `u64`; longer ones are left to
/// serde), and what follows it; `None` if what follows continues the
/// number (a fraction or an exponent).
fn plain_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    let mut n = 0;
    while let Some(&c) = b.get(n) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
        n += 1;
    }
    if n == 0 || n > 19 || (b[0] == b'0' && n > 1) {
        return None;
    }
    let rest = &b[n..];
    if matches!(rest.first(), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    Some((v, rest))
}

/// The first `.` in `b`, eight bytes at a time (a JWT is ~150 bytes and
/// is searched twice; a byte loop was ~500 instructions per buy).
fn find_dot(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])) ^ (ONES * u64::from(b'.'));
        if x.wrapping_sub(ONES) & !x & HIGH != 0 {
            break;
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c == b'.').map(|j| i + j)
}

/// A JOSE header and a JWT claims set are JSON objects (RFC 7515 §5.2,
/// RFC 7519 §7.2); serde would also fill the structs from an array.
fn is_object(json: &[u8]) -> bool {
    json.trim_ascii_start().first() == Some(&b'{')
}

/// What serde may parse: a JSON object that is UTF-8 throughout. serde_json
/// skips the fields a struct does not name without checking their bytes,
/// so without this a header `{"alg":"HS256","typ":"JWT\xc4"}` passed (the
/// auth_token fuzz target); JSON text is UTF-8 (RFC 8259 §8.1).
fn is_json_text_object(json: &[u8]) -> bool {
    is_object(json) && std::str::from_utf8(json).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_fail_closed() {
        let a = Auth::new("0123456789abcdef0123", "admin-token-0123456789");
        let now: u64 = 1_900_000_000;
        let t = a.issue(42, now, 60);
        assert_eq!(a.user(Some(format!("Bearer {t}").as_bytes()), now), Ok(42));
        let expired = a.issue(42, now - 3600, 60);
        assert_eq!(
            a.user(Some(format!("Bearer {expired}").as_bytes()), now),
            Err(AuthError::Invalid)
        );
        let other = Auth::new("another-secret-of-16+", "x");
        let forged = other.issue(42, now, 60);
        assert_eq!(
            a.user(Some(format!("Bearer {forged}").as_bytes()), now),
            Err(AuthError::Invalid)
        );
        assert_eq!(a.user(None, now), Err(AuthError::Missing));
        assert_eq!(a.user(Some(b"Basic abc"), now), Err(AuthError::Invalid));
        assert!(a.admin(Some(b"Bearer admin-token-0123456789")).is_ok());
        assert!(a.admin(Some(b"Bearer admin-token-0123456788")).is_err());
        assert!(a.admin(Some(b"Bearer admin")).is_err());
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn sign(secret: &str, header: &str, claims: &str) -> String {
        let msg = format!("{}.{}", b64(header), b64(claims));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&key, msg.as_bytes());
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    #[test]
    fn verification_refuses_every_malformed_or_foreign_token() {
        let secret = "0123456789abcdef0123";
        let a = Auth::new(secret, "admin-token-0123456789");
        let now = 1_900_000_000;
        let ok = |t: &str| a.verify(t.as_bytes(), now);
        // Another library's spelling of the same header is fine.
        let t = sign(
            secret,
            r#"{"typ":"JWT","alg":"HS256"}"#,
            r#"{"exp":1900000060,"sub":"7","x":[1]}"#,
        );
        assert_eq!(ok(&t), Ok(7));
        // exp within the leeway, then past it.
        let t = sign(
            secret,
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"7","exp":1899999996}"#,
        );
        assert_eq!(ok(&t), Ok(7));
        let t = sign(
            secret,
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"7","exp":1899999994}"#,
        );
        assert_eq!(ok(&t), Err(AuthError::Invalid));
        for (h, c) in [
            (r#"{"alg":"none"}"#, r#"{"sub":"7","exp":1900000060}"#),
            (r#"{"alg":"HS512"}"#, r#"{"sub":"7","exp":1900000060}"#),
            (r#"{"typ":"JWT"}"#, r#"{"sub":"7","exp":1900000060}"#),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"7"}"#),
            (r#"{"alg":"HS256"}"#, r#"{"exp":1900000060}"#),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"0","exp":1900000060}"#),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"-7","exp":1900000060}"#),
            (r#"{"alg":"HS256"}"#, r#"{"sub":7,"exp":1900000060}"#),
            (r#"{"alg":"HS256"}"#, r#"not json"#),
            // Objects only: serde would read a struct from an array.
            (r#"{"alg":"HS256"}"#, r#"["7",1900000060]"#),
            (r#"["HS256"]"#, r#"{"sub":"7","exp":1900000060}"#),
        ] {
            assert_eq!(ok(&sign(secret, h, c)), Err(AuthError::Invalid), "{h} {c}");
        }
        // Tampered payload, truncated or extended signature, no signature.
        let good = sign(
            secret,
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"7","exp":1900000060}"#,
        );
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(r#"{"sub":"8","exp":1900000060}"#),
            parts[2]
        );
        assert_eq!(ok(&forged), Err(AuthError::Invalid));
        assert_eq!(ok(&good[..good.len() - 2]), Err(AuthError::Invalid));
        assert_eq!(ok(&format!("{good}AA")), Err(AuthError::Invalid));
        assert_eq!(
            ok(&format!("{}.{}.", parts[0], parts[1])),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            ok(&format!("{}.{}", parts[0], parts[1])),
            Err(AuthError::Invalid)
        );
        assert_eq!(ok("..."), Err(AuthError::Invalid));
        assert_eq!(ok(&format!("{good}.x")), Err(AuthError::Invalid));
        // A long but valid payload takes the slow path and still verifies.
        let pad = "p".repeat(600);
        let t = sign(
            secret,
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"sub":"9","exp":1900000060,"pad":"{pad}"}}"#),
        );
        assert_eq!(ok(&t), Ok(9));
        // What `issue` writes takes the fast header path.
        let t = a.issue(11, now, 60);
        assert!(t.as_bytes().starts_with(&a.own_header));
        assert_eq!(ok(&t), Ok(11));
    }

    /// The hand-rolled base64url decoder agrees with the `base64` crate on
    /// every input: valid, non-canonical last symbols, padding, other
    /// alphabets' symbols, every length.
    /// Found by the auth_token fuzz target: bytes that are not UTF-8 in a
    /// field serde skips made a signed but malformed header pass.
    #[test]
    fn a_signed_header_or_claims_that_are_not_utf8_are_refused() {
        let a = Auth::new(
            "a-secret-of-thirty-two-bytes-or-more!!",
            "admin-token-for-tests-0123456789",
        );
        let h = b"{\"alg\":\"HS256\",\"typ\":\"JWT\xc4\"}";
        let c = b"{\"sub\":\"43\",\"exp\":4102444800}";
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(c)
        );
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            "a-secret-of-thirty-two-bytes-or-more!!".as_bytes(),
        );
        let sig = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, msg.as_bytes()).as_ref());
        let t = format!("Bearer {msg}.{sig}");
        assert_eq!(a.user(Some(t.as_bytes()), 1_000), Err(AuthError::Invalid));
        let c = b"{\"sub\":\"43\",\"exp\":4102444800,\"x\":\"\xc4\"}";
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(b"{\"alg\":\"HS256\"}"),
            URL_SAFE_NO_PAD.encode(c)
        );
        let sig = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, msg.as_bytes()).as_ref());
        let t = format!("Bearer {msg}.{sig}");
        assert_eq!(a.user(Some(t.as_bytes()), 1_000), Err(AuthError::Invalid));
    }

    #[test]
    fn b64url_decode_matches_the_base64_crate() {
        let symbols = b"AQgw_-9zZ=+/. \n\x80";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let len = (next() % 24) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if round % 3 == 0 {
                        symbols[(r % symbols.len() as u64) as usize]
                    } else {
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                            [(r % 64) as usize]
                    }
                })
                .collect();
            for cap in [0, 1, 5, 16, 48] {
                let mut a = vec![0u8; cap];
                let mut b = vec![0u8; cap];
                let ours = b64url_decode(&input, &mut a);
                let theirs = URL_SAFE_NO_PAD.decode_slice(&input, &mut b).ok();
                // The crate may refuse a short buffer it would not fill;
                // where both decode, they agree byte for byte.
                if cap >= input.len() {
                    assert_eq!(
                        ours,
                        theirs,
                        "{:?} cap {cap}",
                        String::from_utf8_lossy(&input)
                    );
                }
                if let (Some(n), Some(m)) = (ours, theirs) {
                    assert_eq!(n, m);
                    assert_eq!(a[..n], b[..m]);
                }
                if theirs.is_none() && cap >= input.len() {
                    assert_eq!(ours, None);
                }
            }
        }
    }

    #[test]
    fn find_dot_finds_the_first_dot() {
        for len in 0..40 {
            for a in 0..=len {
                for b in a..=len {
                    let mut v = vec![b'x'; len];
                    if a < len {
                        v[a] = b'.';
                    }
                    if b < len {
                        v[b] = b'.';
                    }
                    assert_eq!(find_dot(&v), v.iter().position(|&c| c == b'.'));
                }
            }
        }
    }

    /// The claims fast path gives what serde gives, or steps aside.
    #[test]
    fn issued_claims_agree_with_serde() {
        let serde = |j: &str| {
            serde_json::from_slice::<BuyerClaims>(j.as_bytes())
                .ok()
                .map(|c| (user_id(&c.sub), c.exp, c.nbf))
        };
        let cases = [
            r#"{"sub":"1000001","exp":1795348800,"iat":1795341600}"#,
            r#"{"exp":1,"sub":"7"}"#,
            r#"{"sub":"7","exp":0}"#,
            r#"{"sub":"7","exp":18446744073709551615}"#,
            r#"{"sub":"7","exp":18446744073709551616}"#,
            r#"{"sub":"7","exp":012}"#,
            r#"{"sub":"7","exp":1.5}"#,
            r#"{"sub":"7","exp":1e3}"#,
            r#"{"sub":"7","exp":-1}"#,
            r#"{"sub":"7","exp":"1"}"#,
            r#"{"sub":7,"exp":1}"#,
            r#"{"sub":"07","exp":1}"#,
            r#"{"sub":"0","exp":1}"#,
            r#"{"sub":"","exp":1}"#,
            r#"{"sub":"7"}"#,
            r#"{"exp":1}"#,
            r#"{}"#,
            r#"{"sub":"7","exp":1,"nbf":5}"#,
            r#"{"sub":"7","exp":1,"nbf":null}"#,
            r#"{"sub":"7","exp":1,"nbf":"5"}"#,
            r#"{"sub":"7","exp":1,"sub":"8"}"#,
            r#"{"sub":"7","exp":1,"exp":2}"#,
            r#"{"sub":"7","exp":1,"x":"y","x":3}"#,
            r#"{"sub":"7","exp":1,"x":[1]}"#,
            r#"{"sub":"7","exp":1,"x":true}"#,
            r#"{"sub":"7","exp":1} "#,
            r#"{"sub":"7","exp":1}x"#,
            r#"{ "sub":"7","exp":1}"#,
            r#"{"sub":"7","exp":1,}"#,
            r#"{"s\u0075b":"7","exp":1}"#,
            r#"{"sub":"\u0037","exp":1}"#,
            r#"{"sub":"7","exp":1,"name":"é"}"#,
            r#"{"sub":"7","exp":1"#,
            r#"{"sub":"7","exp":1,"iat":2}"#,
            r#"{"sub":"7","exp":1,"iat":2,"nbf":3}"#,
            r#"{"sub":"7","exp":1,"iat":02}"#,
            r#"{"sub":"7","exp":1,"iat":2.5}"#,
            r#"{"sub":"7","exp":1,"iat":-2}"#,
            r#"{"sub":"7","exp":1,"iat":2} "#,
            r#"{"sub":"7","exp":1}}"#,
            r#"{"sub":"18446744073709551616","exp":1}"#,
            r#"{"sub":"1x","exp":1}"#,
            r#"{"sub":"7","exp":10000000000000000000000}"#,
            r#"{"sub":"7""#,
            r#"{"#,
        ];
        for c in cases {
            if let Some(fast) = issued_claims(c.as_bytes()) {
                assert_eq!(Some(fast), serde(c), "{c}");
            }
        }
        // The shape `issue` writes takes the fast path.
        assert_eq!(
            issued_claims(br#"{"sub":"1000001","exp":1795348800,"iat":1795341600}"#),
            Some((Some(1_000_001), 1_795_348_800, None))
        );
        assert_eq!(
            issued_claims(br#"{"sub":"7","exp":3}"#),
            Some((Some(7), 3, None))
        );
        // nbf binds: never the fast path.
        assert_eq!(issued_claims(br#"{"sub":"7","exp":3,"nbf":2}"#), None);
    }

    /// `sub` has one spelling per user: before, `"+7"`, `"07"` and
    /// `"0007"` all verified as user 7 (`str::parse` accepts them), so one
    /// signed claim could be re-spelled into several "different" subjects.
    #[test]
    fn sub_must_be_canonical_decimal() {
        let secret = "0123456789abcdef0123";
        let a = Auth::new(secret, "admin-token-0123456789");
        let now = 1_900_000_000;
        let with_sub = |sub: &str| {
            let claims = format!(r#"{{"sub":{},"exp":1900000060}}"#, serde_json::json!(sub));
            a.verify(sign(secret, r#"{"alg":"HS256"}"#, &claims).as_bytes(), now)
        };
        for good in ["1", "7", "10", "42", "18446744073709551615"] {
            assert_eq!(with_sub(good), Ok(good.parse().unwrap()), "{good}");
        }
        for bad in [
            "",
            "0",
            "00",
            "07",
            "0007",
            "+7",
            "-7",
            " 7",
            "7 ",
            "7\n",
            "7.0",
            "7e0",
            "0x7",
            "1_000",
            "\u{0667}",              // ARABIC-INDIC DIGIT SEVEN
            "18446744073709551616",  // u64::MAX + 1
            "99999999999999999999",  // 20 digits, overflows
            "100000000000000000000", // 21 digits
        ] {
            assert_eq!(with_sub(bad), Err(AuthError::Invalid), "{bad:?}");
        }
        assert_eq!(user_id("0018"), None);
        assert_eq!(user_id("18"), Some(18));
    }

    /// `nbf` binds when present (with the same leeway as `exp`); before,
    /// a token not yet valid was accepted.
    #[test]
    fn nbf_is_honoured() {
        let secret = "0123456789abcdef0123";
        let a = Auth::new(secret, "admin-token-0123456789");
        let now: u64 = 1_900_000_000;
        let check = |nbf: &str| {
            let claims = format!(r#"{{"sub":"7","exp":{},"nbf":{nbf}}}"#, now + 3600);
            a.verify(sign(secret, r#"{"alg":"HS256"}"#, &claims).as_bytes(), now)
        };
        assert_eq!(check(&(now - 100).to_string()), Ok(7));
        assert_eq!(check(&now.to_string()), Ok(7));
        assert_eq!(check(&(now + LEEWAY_S).to_string()), Ok(7));
        assert_eq!(
            check(&(now + LEEWAY_S + 1).to_string()),
            Err(AuthError::Invalid)
        );
        assert_eq!(check(&(now + 3600).to_string()), Err(AuthError::Invalid));
        // Present but not a NumericDate: refused, never read as absent.
        for odd in ["null", "\"1\"", "-1", "1.5", "{}", "18446744073709551616"] {
            assert_eq!(check(odd), Err(AuthError::Invalid), "nbf {odd}");
        }
        // Through the public entry point too (nbf an hour on).
        let t = sign(
            secret,
            r#"{"alg":"HS256"}"#,
            &format!(
                r#"{{"sub":"7","exp":{},"nbf":{}}}"#,
                u64::MAX / 2,
                now + 3600
            ),
        );
        assert_eq!(
            a.user(Some(format!("Bearer {t}").as_bytes()), now),
            Err(AuthError::Invalid)
        );
    }

    /// The admin check compares two fixed-length tags: a guess of any
    /// length, including a prefix, an extension or the empty string, goes
    /// through the same 32-byte comparison, and only the exact token
    /// passes. Before, a guess of another length returned at the length
    /// check (timing revealed the token's length) and the token was kept
    /// in plain form to compare byte by byte.
    #[test]
    fn admin_token_compared_over_fixed_length_tags() {
        for token in [
            "admin-token-0123456789",
            "0123456789abcdef",
            &"x".repeat(300),
        ] {
            let a = Auth::new("0123456789abcdef0123", token);
            assert_eq!(a.admin_tag.as_ref().len(), 32);
            assert!(a.admin(Some(format!("Bearer {token}").as_bytes())).is_ok());
            for n in 0..token.len() + 3 {
                let guess: String = token.chars().cycle().take(n).collect();
                if guess == token {
                    continue;
                }
                assert_eq!(
                    a.admin(Some(format!("Bearer {guess}").as_bytes())),
                    Err(AuthError::Invalid),
                    "{n}"
                );
            }
            let mut flipped = token.as_bytes().to_vec();
            flipped[token.len() - 1] ^= 1;
            let mut h = b"Bearer ".to_vec();
            h.extend_from_slice(&flipped);
            assert_eq!(a.admin(Some(&h)), Err(AuthError::Invalid));
        }
    }

    /// The token cache (`auth_cache`) as `user` uses it: a retry is a hit,
    /// and a hit answers exactly what a full check would.
    mod cache {
        use super::*;
        use crate::auth_cache::thread_counts;

        const SECRET: &str = "cache-test-secret-0123456789";
        const NOW: u64 = 1_900_000_000;

        fn header(t: &str) -> Vec<u8> {
            format!("Bearer {t}").into_bytes()
        }

        fn auth() -> Auth {
            Auth::new(SECRET, "admin-token-0123456789")
        }

        /// (hits, misses) this thread made while `f` ran.
        fn counted<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
            let before = thread_counts();
            let r = f();
            let after = thread_counts();
            (r, after.hits - before.hits, after.misses - before.misses)
        }

        #[test]
        fn a_retry_is_a_hit_and_the_first_try_a_miss() {
            let a = auth();
            let t = header(&a.issue(1_000_001, NOW, 3600));
            assert_eq!(counted(|| a.user(Some(&t), NOW)), (Ok(1_000_001), 0, 1));
            for _ in 0..3 {
                assert_eq!(counted(|| a.user(Some(&t), NOW)), (Ok(1_000_001), 1, 0));
            }
            // Another buyer's token: a miss of its own.
            let u = header(&a.issue(1_000_002, NOW, 3600));
            assert_eq!(counted(|| a.user(Some(&u), NOW)), (Ok(1_000_002), 0, 1));
        }

        #[test]
        fn expiry_and_nbf_are_honoured_on_a_hit() {
            let a = auth();
            let t = header(&a.issue(7, NOW, 60));
            assert_eq!(a.user(Some(&t), NOW), Ok(7));
            // Within the leeway past exp, then beyond it: answered from
            // the table (a hit) and refused.
            let last = NOW + 60 + LEEWAY_S;
            assert_eq!(counted(|| a.user(Some(&t), last)), (Ok(7), 1, 0));
            assert_eq!(
                counted(|| a.user(Some(&t), last + 1)),
                (Err(AuthError::Invalid), 1, 0)
            );
            // nbf: the clock going back before it refuses a cached token.
            let claims = format!(r#"{{"sub":"8","exp":{},"nbf":{NOW}}}"#, NOW + 3600);
            let n = header(&sign(SECRET, r#"{"alg":"HS256"}"#, &claims));
            assert_eq!(a.user(Some(&n), NOW), Ok(8));
            assert_eq!(
                counted(|| a.user(Some(&n), NOW - LEEWAY_S - 1)),
                (Err(AuthError::Invalid), 1, 0)
            );
            assert_eq!(counted(|| a.user(Some(&n), NOW)), (Ok(8), 1, 0));
        }

        #[test]
        fn expired_and_invalid_tokens_are_never_kept() {
            let a = auth();
            let expired = header(&a.issue(9, NOW - 3600, 60));
            for _ in 0..3 {
                assert_eq!(
                    counted(|| a.user(Some(&expired), NOW)),
                    (Err(AuthError::Invalid), 0, 1)
                );
            }
        }

        /// A cached token's header and payload under another signature:
        /// one differing only inside (same last bytes, so the same slot and
        /// a full compare), one from another secret, one differing in the
        /// last byte. Each is verified in full and refused.
        #[test]
        fn a_forged_signature_on_a_cached_token_is_refused() {
            let a = auth();
            let good = a.issue(10, NOW, 3600);
            assert_eq!(a.user(Some(&header(&good)), NOW), Ok(10));
            let dot = good.rfind('.').unwrap();
            let mut inside = good.clone().into_bytes();
            let k = inside.len() - 12;
            inside[k] = if inside[k] == b'A' { b'B' } else { b'A' };
            let inside = String::from_utf8(inside).unwrap();
            assert_eq!(
                crate::auth_cache::slot_of(inside.as_bytes()),
                crate::auth_cache::slot_of(good.as_bytes())
            );
            let other = Auth::new("another-secret-0123456789", "x").issue(10, NOW, 3600);
            let foreign = format!("{}{}", &good[..dot], &other[other.rfind('.').unwrap()..]);
            let mut last = good.clone().into_bytes();
            let l = last.len() - 1;
            last[l] = if last[l] == b'A' { b'Q' } else { b'A' };
            let last = String::from_utf8(last).unwrap();
            for forged in [&inside, &foreign, &last] {
                assert_ne!(forged, &good);
                for _ in 0..2 {
                    assert_eq!(
                        counted(|| a.user(Some(&header(forged)), NOW)),
                        (Err(AuthError::Invalid), 0, 1),
                        "{forged}"
                    );
                }
            }
            // The good one is still cached.
            assert_eq!(
                counted(|| a.user(Some(&header(&good)), NOW)),
                (Ok(10), 1, 0)
            );
        }

        /// Secrets rotation: an `Auth` built anew (another secret, or even
        /// the same one) never serves the tokens another one verified.
        #[test]
        fn a_new_auth_never_serves_the_old_ones_tokens() {
            let old = auth();
            let t = header(&old.issue(11, NOW, 3600));
            assert_eq!(old.user(Some(&t), NOW), Ok(11));
            let rotated = Auth::new("the-rotated-secret-0123456789", "admin-token-0123456789");
            assert_eq!(
                counted(|| rotated.user(Some(&t), NOW)),
                (Err(AuthError::Invalid), 0, 1)
            );
            let same = auth();
            assert_eq!(counted(|| same.user(Some(&t), NOW)), (Ok(11), 0, 1));
        }

        #[test]
        fn an_over_long_token_is_verified_every_time() {
            let a = auth();
            let pad = "p".repeat(200);
            let claims = format!(r#"{{"sub":"12","exp":{},"pad":"{pad}"}}"#, NOW + 60);
            let t = sign(SECRET, r#"{"alg":"HS256"}"#, &claims);
            assert!(t.len() > crate::auth_cache::TOKEN_MAX);
            for _ in 0..3 {
                let before = thread_counts();
                assert_eq!(a.user(Some(&header(&t)), NOW), Ok(12));
                // Not even looked up: a lookup would count.
                assert_eq!(thread_counts(), before);
            }
            // Every token `issue` writes fits, the longest user id too.
            let longest = a.issue(u64::MAX, 99_999_999_999, 0);
            assert!(
                longest.len() <= crate::auth_cache::TOKEN_MAX,
                "{}",
                longest.len()
            );
        }
    }
}
