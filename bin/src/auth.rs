//! Bearer tokens: HS256 JWTs for buyers ("sub" = user id, "exp" checked),
//! a static token for admins.
//!
//! Verification is done here rather than by `jsonwebtoken::decode`, which
//! is on every buy's path: it builds the HMAC key anew for each token (two
//! extra SHA-256 blocks) and parses the claims twice (into a JSON map to
//! validate, then into the struct). A callgrind profile of the sold-out
//! stampede put SHA-256 at 36% of flashd's instructions and JSON/base64/
//! UTF-8 checks of the token at another ~15%. Issuing stays with
//! `jsonwebtoken`; the tests check that both agree.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use flashd_engine::UserId;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// Seconds of clock skew allowed past `exp`.
const LEEWAY_S: u64 = 5;

/// The claims a buyer's token must carry; others are ignored.
#[derive(Deserialize)]
struct BuyerClaims<'a> {
    #[serde(borrow)]
    sub: std::borrow::Cow<'a, str>,
    exp: u64,
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
    admin_token: Vec<u8>,
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
        Auth {
            hmac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwt_secret.as_bytes()),
            encoding,
            own_header,
            admin_token: admin_token.as_bytes().to_vec(),
        }
    }

    /// The user a `Bearer` header value speaks for.
    pub fn user(&self, authorization: Option<&[u8]>) -> Result<UserId, AuthError> {
        let token = bearer(authorization)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify(token, now)
    }

    /// Check an HS256 JWT: `header.payload.signature`, the signature over
    /// the first two segments (constant-time compare), `alg` exactly HS256
    /// (never `none`, never another algorithm), `exp` not past (with
    /// `LEEWAY_S`), `sub` a positive integer.
    fn verify(&self, token: &[u8], now_s: u64) -> Result<UserId, AuthError> {
        let bad = |_| AuthError::Invalid;
        let dot1 = token
            .iter()
            .position(|&b| b == b'.')
            .ok_or(AuthError::Invalid)?;
        let dot2 = dot1
            + 1
            + token[dot1 + 1..]
                .iter()
                .position(|&b| b == b'.')
                .ok_or(AuthError::Invalid)?;
        let (header, payload, sig) = (&token[..dot1], &token[dot1 + 1..dot2], &token[dot2 + 1..]);
        let mut sig_buf = [0u8; 48];
        let n = URL_SAFE_NO_PAD
            .decode_slice(sig, &mut sig_buf)
            .map_err(|_| AuthError::Invalid)?;
        ring::hmac::verify(&self.hmac, &token[..dot2], &sig_buf[..n]).map_err(bad)?;
        // Signed by us: now its content can be trusted to parse.
        if header != self.own_header.as_slice() {
            let h = URL_SAFE_NO_PAD
                .decode(header)
                .map_err(|_| AuthError::Invalid)?;
            let h: JoseHeader = serde_json::from_slice(&h).map_err(|_| AuthError::Invalid)?;
            if h.alg != "HS256" {
                return Err(AuthError::Invalid);
            }
        }
        let mut buf = [0u8; 512];
        let claims = match URL_SAFE_NO_PAD.decode_slice(payload, &mut buf) {
            Ok(n) => serde_json::from_slice::<BuyerClaims>(&buf[..n])
                .map(|c| (c.sub.parse::<u64>(), c.exp)),
            // Longer than any token we issue: still a valid token.
            Err(_) => {
                let v = URL_SAFE_NO_PAD
                    .decode(payload)
                    .map_err(|_| AuthError::Invalid)?;
                serde_json::from_slice::<BuyerClaims>(&v).map(|c| (c.sub.parse::<u64>(), c.exp))
            }
        };
        match claims {
            Ok((Ok(u), exp)) if u > 0 && exp.saturating_add(LEEWAY_S) >= now_s => Ok(u),
            _ => Err(AuthError::Invalid),
        }
    }

    pub fn admin(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        let token = bearer(authorization)?;
        // Constant time in the token's content, so timing does not reveal
        // how much of a guess was right.
        let same = token.len() == self.admin_token.len()
            && token
                .iter()
                .zip(&self.admin_token)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_fail_closed() {
        let a = Auth::new("0123456789abcdef0123", "admin-token-0123456789");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t = a.issue(42, now, 60);
        assert_eq!(a.user(Some(format!("Bearer {t}").as_bytes())), Ok(42));
        let expired = a.issue(42, now - 3600, 60);
        assert_eq!(
            a.user(Some(format!("Bearer {expired}").as_bytes())),
            Err(AuthError::Invalid)
        );
        let other = Auth::new("another-secret-of-16+", "x");
        let forged = other.issue(42, now, 60);
        assert_eq!(
            a.user(Some(format!("Bearer {forged}").as_bytes())),
            Err(AuthError::Invalid)
        );
        assert_eq!(a.user(None), Err(AuthError::Missing));
        assert_eq!(a.user(Some(b"Basic abc")), Err(AuthError::Invalid));
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
}
