//! Bearer-token and admin-token checks (`flashd::auth`): never a panic;
//! an accepted buyer token is one this oracle also accepts (signed with
//! the server's key, `alg` HS256, `sub` a canonical decimal user id in
//! range, `exp` not past, `nbf` not in the future); a token the oracle
//! finds plainly valid is accepted, for the user it names; the admin
//! check accepts exactly the admin token.
//!
//! Input: `[mode][rest]`. Mode 0: `rest` is the Authorization header
//! value as received. Mode 1: `rest` is `header JSON \0 claims JSON`,
//! which the target signs with the server's key, so the fuzzer explores
//! the claims behind the signature.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use flashd::auth::Auth;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The keys the seeds were made with (`make_seeds`); longer than
/// flashd's minimum for configured secrets.
pub const JWT_SECRET: &str = "fuzz-jwt-secret-0123456789abcdef0123456789";
pub const ADMIN_TOKEN: &str = "fuzz-admin-token-0123456789abcdef";

/// Seconds either side of the token's times in which the oracle makes no
/// claim: flashd allows some clock skew, and the clock moves during a run.
const SLACK_S: u64 = 120;

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A JSON object's members in order, duplicates kept (serde_json's Value
/// keeps only the last, and flashd must not be more lenient than that).
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Members, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, Value>()? {
                    v.push((k, val));
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn members(json: &[u8]) -> Option<Vec<(String, Value)>> {
    serde_json::from_slice::<Members>(json).ok().map(|m| m.0)
}

fn get<'a>(m: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Each of `keys` at most once (a repeated member flashd reads is
/// ambiguous; repeats of members it ignores do not matter).
fn unique(m: &[(String, Value)], keys: &[&str]) -> bool {
    keys.iter()
        .all(|key| m.iter().filter(|(k, _)| k == key).count() <= 1)
}

/// `sub` as flashd must read it: ASCII digits, no sign, no leading zero,
/// at least 1, no overflow.
fn canonical_user(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// What the oracle makes of a signed token's header and claims JSON:
/// `Some(Ok(user))` plainly valid, `Some(Err(()))` plainly invalid,
/// `None` too close to a boundary (a time within the slack) to say.
fn oracle(header: &[u8], claims: &[u8], now: u64) -> Option<Result<u64, ()>> {
    let Some(h) = members(header) else {
        return Some(Err(()));
    };
    if get(&h, "alg").and_then(Value::as_str) != Some("HS256") || !unique(&h, &["alg"]) {
        return Some(Err(()));
    }
    let Some(c) = members(claims) else {
        return Some(Err(()));
    };
    if !unique(&c, &["sub", "exp", "nbf"]) {
        return Some(Err(()));
    }
    let Some(user) = get(&c, "sub")
        .and_then(Value::as_str)
        .and_then(canonical_user)
    else {
        return Some(Err(()));
    };
    let Some(exp) = get(&c, "exp").and_then(Value::as_u64) else {
        return Some(Err(()));
    };
    if exp.saturating_add(SLACK_S) < now {
        return Some(Err(()));
    }
    if exp < now.saturating_add(SLACK_S) {
        return None;
    }
    match get(&c, "nbf") {
        None => Some(Ok(user)),
        Some(v) => match v.as_u64() {
            Some(nbf) if nbf > now.saturating_add(SLACK_S) => Some(Err(())),
            Some(nbf) if nbf.saturating_add(SLACK_S) < now => Some(Ok(user)),
            _ => None,
        },
    }
}

fn sign(header: &[u8], claims: &[u8]) -> String {
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWT_SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, msg.as_bytes());
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// The header and claims of a token the server's key signed, if it is one.
fn signed_parts(token: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut it = token.splitn(3, |&b| b == b'.');
    let (h, c, s) = (it.next()?, it.next()?, it.next()?);
    let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWT_SECRET.as_bytes());
    ring::hmac::verify(&key, &token[..h.len() + 1 + c.len()], &sig).ok()?;
    Some((
        URL_SAFE_NO_PAD.decode(h).ok()?,
        URL_SAFE_NO_PAD.decode(c).ok()?,
    ))
}

fuzz_target!(init: {
    AUTH.get_or_init(|| Auth::new(JWT_SECRET, ADMIN_TOKEN));
}, |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let auth = AUTH.get().expect("initialised");
    let now = now_s();
    match mode % 2 {
        0 => {
            let got = auth.user(Some(rest), now);
            if let Ok(user) = got {
                let token = rest
                    .strip_prefix(b"Bearer ")
                    .or_else(|| rest.strip_prefix(b"bearer "))
                    .expect("an accepted value starts with the Bearer scheme")
                    .trim_ascii();
                let (h, c) = signed_parts(token).expect("an accepted token carries our signature");
                if let Some(want) = oracle(&h, &c, now) {
                    assert_eq!(want, Ok(user), "accepted a token the oracle refuses");
                }
            }
            let admin_ok = auth.admin(Some(rest)).is_ok();
            let is_admin = rest
                .strip_prefix(b"Bearer ")
                .or_else(|| rest.strip_prefix(b"bearer "))
                .is_some_and(|t| t.trim_ascii() == ADMIN_TOKEN.as_bytes());
            assert_eq!(admin_ok, is_admin, "admin check disagrees on {rest:?}");
        }
        _ => {
            let (h, c) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&b"{\"alg\":\"HS256\"}"[..], rest),
            };
            let token = sign(h, c);
            let got = auth.user(Some(format!("Bearer {token}").as_bytes()), now);
            match oracle(h, c, now) {
                Some(Ok(user)) => assert_eq!(got, Ok(user), "refused a valid token"),
                Some(Err(())) => assert!(got.is_err(), "accepted {got:?} for an invalid token"),
                None => {}
            }
        }
    }
});

static AUTH: std::sync::OnceLock<Auth> = std::sync::OnceLock::new();
