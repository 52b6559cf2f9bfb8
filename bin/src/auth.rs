//! Bearer tokens: HS256 JWTs for buyers ("sub" = user id, "exp" checked),
//! a static token for admins.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use flashd_engine::UserId;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
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
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Auth {
            decoding: DecodingKey::from_secret(jwt_secret.as_bytes()),
            encoding: EncodingKey::from_secret(jwt_secret.as_bytes()),
            validation,
            admin_token: admin_token.as_bytes().to_vec(),
        }
    }

    /// The user a `Bearer` header value speaks for.
    pub fn user(&self, authorization: Option<&[u8]>) -> Result<UserId, AuthError> {
        let token = bearer(authorization)?;
        let token = std::str::from_utf8(token).map_err(|_| AuthError::Invalid)?;
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| AuthError::Invalid)?;
        match data.claims.sub.parse::<u64>() {
            Ok(u) if u > 0 => Ok(u),
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
}
