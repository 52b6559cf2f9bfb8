//! The JSON API's request bodies and response encodings.
//!
//! Bodies are parsed with serde (unknown fields refused, errors naming the
//! field). Responses on the hot path (an order, a sale) are written by hand
//! into a reused buffer: no intermediate `Value`, no allocation.

use std::borrow::Cow;

use serde::Deserialize;

use flashd_engine::{
    Activity, ActivitySpec, CancelReason, Millis, OrderView, MAX_QUANTITY, MAX_REQUEST_ID_BYTES,
};
use flashd_protocol::json_escape_into;
use flashd_protocol::rfc3339::format_rfc3339;

/// A validation failure: the field at fault and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Invalid> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        Invalid(if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        })
    })?;
    de.end().map_err(|e| Invalid(e.to_string()))?;
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateActivityBody {
    sku_id: String,
    name: String,
    price_cents: u64,
    stock: u64,
    start_at: String,
    end_at: String,
    #[serde(default = "one")]
    per_user_limit: u32,
}

fn one() -> u32 {
    1
}

fn parse_time(field: &str, s: &str) -> Result<Millis, Invalid> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| Invalid(format!("{field}: not an RFC 3339 time ({e})")))?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| Invalid(format!("{field}: before 1970")))
}

pub fn parse_activity(body: &[u8]) -> Result<ActivitySpec, Invalid> {
    let b: CreateActivityBody = from_json(body)?;
    let spec = ActivitySpec {
        sku_id: b.sku_id,
        name: b.name,
        price_cents: b.price_cents,
        stock: b.stock,
        start_at: parse_time("start_at", &b.start_at)?,
        end_at: parse_time("end_at", &b.end_at)?,
        per_user_limit: b.per_user_limit,
    };
    spec.validate().map_err(|e| Invalid(e.to_string()))?;
    Ok(spec)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyBody<'a> {
    quantity: u32,
    #[serde(borrow)]
    request_id: Cow<'a, str>,
}

/// A request id held inline, so a purchase crosses the worker ring without
/// a heap allocation.
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_REQUEST_ID_BYTES],
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ever built from validated ASCII.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

pub fn parse_buy(body: &[u8]) -> Result<(u32, RequestId), Invalid> {
    let b: BuyBody = from_json(body)?;
    if b.quantity == 0 || b.quantity > MAX_QUANTITY {
        return Err(Invalid(format!(
            "quantity: must be between 1 and {MAX_QUANTITY}"
        )));
    }
    let r = b.request_id.as_bytes();
    if r.is_empty()
        || r.len() > MAX_REQUEST_ID_BYTES
        || !r
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
    {
        return Err(Invalid(
            "request_id: 1 to 64 characters of A-Z a-z 0-9 - _ . :".into(),
        ));
    }
    let mut id = RequestId {
        len: r.len() as u8,
        bytes: [0; MAX_REQUEST_ID_BYTES],
    };
    id.bytes[..r.len()].copy_from_slice(r);
    Ok((b.quantity, id))
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn push_time(out: &mut Vec<u8>, ms: Millis) {
    let mut b = [0u8; 24];
    format_rfc3339(ms, &mut b);
    out.push(b'"');
    out.extend_from_slice(&b);
    out.push(b'"');
}

pub fn write_order(out: &mut Vec<u8>, o: &OrderView) {
    out.extend_from_slice(b"{\"order_id\":\"");
    push_u64(out, o.id);
    out.extend_from_slice(b"\",\"activity_id\":");
    push_u64(out, o.activity_id as u64);
    out.extend_from_slice(b",\"user_id\":");
    push_u64(out, o.user_id);
    out.extend_from_slice(b",\"quantity\":");
    push_u64(out, o.quantity as u64);
    out.extend_from_slice(b",\"amount_cents\":");
    push_u64(out, o.amount_cents);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(o.status.as_str().as_bytes());
    out.extend_from_slice(b"\",\"created_at\":");
    push_time(out, o.created_at);
    out.extend_from_slice(b",\"expires_at\":");
    push_time(out, o.expires_at);
    out.extend_from_slice(b",\"updated_at\":");
    push_time(out, o.updated_at);
    if let Some(r) = o.cancel_reason {
        out.extend_from_slice(match r {
            CancelReason::User => b",\"cancel_reason\":\"user\"".as_slice(),
            CancelReason::Timeout => b",\"cancel_reason\":\"timeout\"".as_slice(),
        });
    }
    out.push(b'}');
}

pub fn write_activity(out: &mut Vec<u8>, a: &Activity, now: Millis) {
    let flashd_engine::Counters {
        remaining,
        sold,
        reserved,
    } = a.counters();
    out.extend_from_slice(b"{\"id\":");
    push_u64(out, a.id as u64);
    out.extend_from_slice(b",\"sku_id\":\"");
    json_escape_into(out, &a.sku_id);
    out.extend_from_slice(b"\",\"name\":\"");
    json_escape_into(out, &a.name);
    out.extend_from_slice(b"\",\"price_cents\":");
    push_u64(out, a.price_cents);
    out.extend_from_slice(b",\"stock\":");
    push_u64(out, a.stock);
    out.extend_from_slice(b",\"start_at\":");
    push_time(out, a.start_at);
    out.extend_from_slice(b",\"end_at\":");
    push_time(out, a.end_at);
    out.extend_from_slice(b",\"per_user_limit\":");
    push_u64(out, a.per_user_limit as u64);
    out.extend_from_slice(b",\"remaining\":");
    push_u64(out, remaining.max(0) as u64);
    out.extend_from_slice(b",\"sold\":");
    push_u64(out, sold.max(0) as u64);
    out.extend_from_slice(b",\"reserved\":");
    push_u64(out, reserved.max(0) as u64);
    out.extend_from_slice(b",\"state\":\"");
    out.extend_from_slice(a.state(now).as_str().as_bytes());
    out.extend_from_slice(b"\"}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buy_bodies() {
        let (q, r) = parse_buy(br#"{"quantity":2,"request_id":"abc-1"}"#).unwrap();
        assert_eq!((q, r.as_str()), (2, "abc-1"));
        for bad in [
            &br#"{"quantity":-1,"request_id":"a"}"#[..],
            br#"{"quantity":0,"request_id":"a"}"#,
            br#"{"quantity":1000000,"request_id":"a"}"#,
            br#"{"quantity":"1","request_id":"a"}"#,
            br#"{"quantity":1}"#,
            br#"{"quantity":1,"request_id":""}"#,
            br#"{"quantity":1,"request_id":"a b"}"#,
            br#"{"quantity":1,"request_id":"a","extra":1}"#,
            br#"{"quantity":1,"request_id":"a"} trailing"#,
            b"not json",
        ] {
            assert!(parse_buy(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            parse_buy(br#"{"quantity":"x","request_id":"a"}"#)
                .unwrap_err()
                .0
                .split(':')
                .next(),
            Some("quantity")
        );
    }

    #[test]
    fn activity_bodies() {
        let ok = br#"{"sku_id":"S","name":"N","price_cents":100,"stock":5,"start_at":"2026-11-22T10:00:00Z","end_at":"2026-11-22T11:00:00+01:00"}"#;
        let s = parse_activity(ok);
        // 11:00+01:00 == 10:00Z: ends when it starts.
        assert_eq!(s.unwrap_err().0, "end_at: must be after start_at");
        let ok = br#"{"sku_id":"S","name":"N","price_cents":100,"stock":5,"start_at":"2026-11-22T10:00:00Z","end_at":"2026-11-22T12:00:00Z","per_user_limit":2}"#;
        assert_eq!(parse_activity(ok).unwrap().per_user_limit, 2);
        let bad = br#"{"sku_id":"S","name":"N","price_cents":100,"stock":0,"start_at":"2026-11-22T10:00:00Z","end_at":"2026-11-22T12:00:00Z"}"#;
        assert!(parse_activity(bad).unwrap_err().0.starts_with("stock"));
        let bad = br#"{"sku_id":"S","name":"N","price_cents":100,"stock":1,"start_at":"yesterday","end_at":"2026-11-22T12:00:00Z"}"#;
        assert!(parse_activity(bad).unwrap_err().0.starts_with("start_at"));
    }

    #[test]
    fn order_json_is_valid() {
        let o = OrderView {
            id: 123,
            activity_id: 1,
            user_id: 9,
            quantity: 2,
            amount_cents: 400,
            status: flashd_engine::OrderStatus::Cancelled,
            created_at: 1_795_348_800_000,
            expires_at: 1_795_348_900_000,
            updated_at: 1_795_348_850_000,
            cancel_reason: Some(CancelReason::Timeout),
        };
        let mut out = Vec::new();
        write_order(&mut out, &o);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["order_id"], "123");
        assert_eq!(v["status"], "CANCELLED");
        assert_eq!(v["cancel_reason"], "timeout");
        assert_eq!(v["expires_at"], "2026-11-22T12:01:40.000Z");
    }
}
