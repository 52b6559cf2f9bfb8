//! The JSON API's request bodies and response encodings.
//!
//! Bodies are parsed with serde (unknown fields refused, errors naming the
//! field). Responses on the hot path (an order, a sale) are written by hand
//! into a reused buffer: no intermediate `Value`, no allocation.

use std::borrow::Cow;

use serde::Deserialize;

use flashd_engine::{
    Activity, ActivitySpec, ActivityState, CancelReason, Millis, OrderView, QUANTITY_MAX,
    REQUEST_ID_BYTES_MAX,
};
use flashd_protocol::json_escape_into;
use flashd_protocol::rfc3339::format_rfc3339;

/// A validation failure: the field at fault and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

pub(crate) fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Invalid> {
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

pub(crate) fn parse_time(field: &str, s: &str) -> Result<Millis, Invalid> {
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
    bytes: [u8; REQUEST_ID_BYTES_MAX],
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RequestId {
    pub fn as_str(&self) -> &str {
        let b = &self.bytes[..self.len as usize];
        debug_assert!(b.iter().all(|&c| REQUEST_ID_CHAR[c as usize]));
        // SAFETY: only `parse_buy` builds a `RequestId`, from bytes it
        // checked against `REQUEST_ID_CHAR`, which holds only ASCII.
        unsafe { std::str::from_utf8_unchecked(b) }
    }
}

/// Bytes a request id may hold: `A-Z a-z 0-9 - _ . :`.
static REQUEST_ID_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b: u8 = 0;
    while b < 0x80 {
        t[b as usize] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        b += 1;
    }
    t
};

/// A purchase body in its plain form, read without serde: one object with
/// exactly `quantity` (a plain integer within `u32`) and `request_id` (a
/// string of request-id characters, no escapes), JSON whitespace allowed
/// between tokens. `None` for anything else, which serde then reads (and
/// names the field at fault), so the outcome is always serde's. serde with
/// path tracking was ~2,900 instructions and two allocations per buy
/// (callgrind of the sold-out stampede).
fn plain_buy(body: &[u8]) -> Option<(u32, &[u8])> {
    compact_buy(body).or_else(|| spaced_buy(body))
}

/// The compact form first, `{"quantity":N,"request_id":"..."}` exactly (what
/// most clients send): prefix compares instead of a tokenizer.
fn compact_buy(body: &[u8]) -> Option<(u32, &[u8])> {
    let rest = body.strip_prefix(br#"{"quantity":"#)?;
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 10 || (rest[0] == b'0' && n > 1) {
        return None;
    }
    let q = rest[..n]
        .iter()
        .fold(0u64, |v, &b| v * 10 + u64::from(b - b'0'));
    let quantity = u32::try_from(q).ok()?;
    let id = rest[n..].strip_prefix(br#","request_id":""#)?;
    let len = id.iter().position(|&b| !REQUEST_ID_CHAR[b as usize])?;
    (&id[len..] == br#""}"#).then_some((quantity, &id[..len]))
}

fn spaced_buy(body: &[u8]) -> Option<(u32, &[u8])> {
    let ws = |i: &mut usize| {
        while matches!(body.get(*i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            *i += 1;
        }
    };
    let string = |i: &mut usize| -> Option<&[u8]> {
        if body.get(*i) != Some(&b'"') {
            return None;
        }
        let start = *i + 1;
        let len = body
            .get(start..)?
            .iter()
            .position(|&b| !REQUEST_ID_CHAR[b as usize])?;
        if body[start + len] != b'"' {
            return None;
        }
        *i = start + len + 1;
        Some(&body[start..start + len])
    };
    let (mut quantity, mut request_id) = (None, None);
    let mut i = 0;
    ws(&mut i);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    for _ in 0..2 {
        ws(&mut i);
        let key = string(&mut i)?;
        ws(&mut i);
        if body.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        ws(&mut i);
        match key {
            b"quantity" if quantity.is_none() => {
                let n = body[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                let d = &body[i..i + n];
                if d.is_empty() || d.len() > 10 || (d[0] == b'0' && n > 1) {
                    return None;
                }
                let v = d.iter().fold(0u64, |v, &b| v * 10 + u64::from(b - b'0'));
                quantity = Some(u32::try_from(v).ok()?);
                i += n;
            }
            b"request_id" if request_id.is_none() => request_id = Some(string(&mut i)?),
            _ => return None,
        }
        ws(&mut i);
        match body.get(i) {
            Some(b',') if quantity.is_none() || request_id.is_none() => i += 1,
            Some(b'}') if quantity.is_some() && request_id.is_some() => i += 1,
            _ => return None,
        }
    }
    ws(&mut i);
    (i == body.len()).then_some((quantity?, request_id?))
}

pub fn parse_buy(body: &[u8]) -> Result<(u32, RequestId), Invalid> {
    let parsed: BuyBody;
    // The plain form holds only request-id characters already.
    let (quantity, r, checked) = match plain_buy(body) {
        Some((q, r)) => (q, r, true),
        None => {
            parsed = from_json(body)?;
            (parsed.quantity, parsed.request_id.as_bytes(), false)
        }
    };
    if quantity == 0 || quantity > QUANTITY_MAX {
        return Err(Invalid(format!(
            "quantity: must be between 1 and {QUANTITY_MAX}"
        )));
    }
    if r.is_empty()
        || r.len() > REQUEST_ID_BYTES_MAX
        || !(checked || r.iter().all(|&c| REQUEST_ID_CHAR[c as usize]))
    {
        return Err(Invalid(
            "request_id: 1 to 64 characters of A-Z a-z 0-9 - _ . :".into(),
        ));
    }
    let mut id = RequestId {
        len: r.len() as u8,
        bytes: [0; REQUEST_ID_BYTES_MAX],
    };
    id.bytes[..r.len()].copy_from_slice(r);
    Ok((quantity, id))
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Seconds last formatted on this thread and their `YYYY-MM-DDTHH:MM:SS`.
struct Seconds {
    secs: [u64; 4],
    text: [[u8; 19]; 4],
    next: usize,
}

thread_local! {
    static SECONDS: std::cell::RefCell<Seconds> = const {
        std::cell::RefCell::new(Seconds {
            secs: [u64::MAX; 4],
            text: [[0; 19]; 4],
            next: 0,
        })
    };
}

/// `"YYYY-MM-DDTHH:MM:SS.mmmZ"`. The date and time of day are formatted
/// once per second per thread (an order carries three times, two in the
/// same second, and the next orders share them): formatting each was
/// ~270 instructions, ~800 per order answer (callgrind of the live sale).
fn push_time(out: &mut Vec<u8>, ms: Millis) {
    out.extend_from_slice(&time_json(ms));
}

/// [`push_time`]'s bytes, quotes included.
fn time_json(ms: Millis) -> [u8; TIME_JSON_BYTES] {
    let secs = ms / 1000;
    let milli = (ms % 1000) as u32;
    let mut b = [0u8; TIME_JSON_BYTES];
    SECONDS.with(|c| {
        let mut c = c.borrow_mut();
        match c.secs.iter().position(|&s| s == secs) {
            Some(i) => b[1..20].copy_from_slice(&c.text[i]),
            None => {
                let mut t = [0u8; 24];
                format_rfc3339(ms, &mut t);
                b[1..20].copy_from_slice(&t[..19]);
                let i = c.next;
                c.next = (i + 1) % c.secs.len();
                c.secs[i] = secs;
                c.text[i].copy_from_slice(&t[..19]);
            }
        }
    });
    b[0] = b'"';
    b[20] = b'.';
    b[21] = b'0' + (milli / 100) as u8;
    b[22] = b'0' + (milli / 10 % 10) as u8;
    b[23] = b'0' + (milli % 10) as u8;
    b[24] = b'Z';
    b[25] = b'"';
    b
}

/// `"YYYY-MM-DDTHH:MM:SS.mmmZ"` with its quotes.
const TIME_JSON_BYTES: usize = 26;

/// An order's JSON, appended in one [`room`](flashd_protocol::room)
/// bounded by the longest it can be: a piece at a time through
/// `extend_from_slice` was ~940 instructions of a live sale's answer,
/// many of them capacity checks and `memcpy` calls (callgrind, issue 17).
pub fn write_order(out: &mut Vec<u8>, o: &OrderView) {
    use flashd_protocol::room::{append_within, U64_DIGITS};
    const FIXED: usize = concat!(
        "{\"order_id\":\"",
        "\",\"activity_id\":",
        ",\"user_id\":",
        ",\"quantity\":",
        ",\"amount_cents\":",
        ",\"status\":\"",
        "\",\"created_at\":",
        ",\"expires_at\":",
        ",\"updated_at\":",
        "}"
    )
    .len();
    let status = o.status.as_str().as_bytes();
    let reason: &[u8] = match o.cancel_reason {
        None => b"",
        Some(CancelReason::User) => b",\"cancel_reason\":\"user\"",
        Some(CancelReason::Timeout) => b",\"cancel_reason\":\"timeout\"",
    };
    // An order is usually answered the instant it changed: its creation
    // and its last change are then one time, formatted once.
    let created = time_json(o.created_at);
    let updated = if o.updated_at == o.created_at {
        created
    } else {
        time_json(o.updated_at)
    };
    let times = [created, time_json(o.expires_at), updated];
    let max = FIXED + 5 * U64_DIGITS + status.len() + 3 * TIME_JSON_BYTES + reason.len();
    append_within(out, max, |r| {
        r.put(b"{\"order_id\":\"");
        r.put_u64(o.id);
        r.put(b"\",\"activity_id\":");
        r.put_u64(o.activity_id as u64);
        r.put(b",\"user_id\":");
        r.put_u64(o.user_id);
        r.put(b",\"quantity\":");
        r.put_u64(o.quantity as u64);
        r.put(b",\"amount_cents\":");
        r.put_u64(o.amount_cents);
        r.put(b",\"status\":\"");
        r.put(status);
        r.put(b"\",\"created_at\":");
        r.put(&times[0]);
        r.put(b",\"expires_at\":");
        r.put(&times[1]);
        r.put(b",\"updated_at\":");
        r.put(&times[2]);
        r.put(reason);
        r.put_byte(b'}');
    });
}

/// The fields of a sale that change rarely (stock and window only by an
/// admin), and their JSON.
#[derive(Default)]
struct FixedPart {
    id: u64,
    sku_id: String,
    name: String,
    price_cents: u64,
    stock: u64,
    start_at: Millis,
    end_at: Millis,
    per_user_limit: u32,
    json: Vec<u8>,
    /// The whole body last answered from this slot, and the counters and
    /// state it was encoded for: a stampede of `GET`s between two sales
    /// of a unit reads the same bytes, so they are copied, not encoded.
    last: Option<(flashd_engine::Counters, ActivityState)>,
    whole: Vec<u8>,
}

impl FixedPart {
    fn is_of(&self, a: &Activity) -> bool {
        !self.json.is_empty()
            && self.id == a.id as u64
            && self.price_cents == a.price_cents
            && self.stock == a.stock()
            && self.start_at == a.start_at()
            && self.end_at == a.end_at()
            && self.per_user_limit == a.per_user_limit
            && self.sku_id == a.sku_id
            && self.name == a.name
    }

    fn fill(&mut self, a: &Activity) {
        self.last = None;
        self.id = a.id as u64;
        self.sku_id.clear();
        self.sku_id.push_str(&a.sku_id);
        self.name.clear();
        self.name.push_str(&a.name);
        self.price_cents = a.price_cents;
        self.stock = a.stock();
        self.start_at = a.start_at();
        self.end_at = a.end_at();
        self.per_user_limit = a.per_user_limit;
        let out = &mut self.json;
        out.clear();
        out.extend_from_slice(b"{\"id\":");
        push_u64(out, a.id as u64);
        out.extend_from_slice(b",\"sku_id\":\"");
        json_escape_into(out, &a.sku_id);
        out.extend_from_slice(b"\",\"name\":\"");
        json_escape_into(out, &a.name);
        out.extend_from_slice(b"\",\"price_cents\":");
        push_u64(out, a.price_cents);
        out.extend_from_slice(b",\"stock\":");
        push_u64(out, self.stock);
        out.extend_from_slice(b",\"start_at\":");
        push_time(out, self.start_at);
        out.extend_from_slice(b",\"end_at\":");
        push_time(out, self.end_at);
        out.extend_from_slice(b",\"per_user_limit\":");
        push_u64(out, a.per_user_limit as u64);
    }
}

/// Sales' fixed parts last encoded on this thread, by id modulo the size.
const FIXED_CACHE: usize = 16;

thread_local! {
    static FIXED: std::cell::RefCell<[FixedPart; FIXED_CACHE]> =
        std::cell::RefCell::new(std::array::from_fn(|_| FixedPart::default()));
}

/// A sale as JSON. Its fixed part (names, price, stock, times, limit) is
/// encoded once per thread and copied after checking it is still this
/// sale's, field by field, so a sale whose creation was undone and whose
/// id was given to another is never answered with the old one's fields;
/// the whole body is copied again while the counters and the state are
/// those it was encoded for. Encoding it all (two RFC 3339 times, escaping,
/// seven integers) was ~1,200 of ~4,500 instructions of a `GET` of a sale
/// (callgrind); the counters and state another ~150 of ~3,100.
pub fn write_activity(out: &mut Vec<u8>, a: &Activity, now: Millis) {
    write_activity_with(out, a, a.counters(), now)
}

/// [`write_activity`] with counters from elsewhere (cluster mode: Redis's).
pub fn write_activity_with(
    out: &mut Vec<u8>,
    a: &Activity,
    counters: flashd_engine::Counters,
    now: Millis,
) {
    let state = a.state_with(now, counters.remaining);
    FIXED.with(|cache| {
        let mut cache = cache.borrow_mut();
        let slot = &mut cache[a.id as usize % FIXED_CACHE];
        if !slot.is_of(a) {
            slot.fill(a);
        }
        if slot.last != Some((counters, state)) {
            let whole = &mut slot.whole;
            whole.clear();
            whole.extend_from_slice(&slot.json);
            push_counters(whole, counters, state);
            slot.last = Some((counters, state));
        }
        out.extend_from_slice(&slot.whole);
    });
}

/// The part of a sale's JSON that moves with every order.
fn push_counters(out: &mut Vec<u8>, counters: flashd_engine::Counters, state: ActivityState) {
    let flashd_engine::Counters {
        remaining,
        sold,
        reserved,
    } = counters;
    out.extend_from_slice(b",\"remaining\":");
    push_u64(out, remaining.max(0) as u64);
    out.extend_from_slice(b",\"sold\":");
    push_u64(out, sold.max(0) as u64);
    out.extend_from_slice(b",\"reserved\":");
    push_u64(out, reserved.max(0) as u64);
    out.extend_from_slice(b",\"state\":\"");
    out.extend_from_slice(state.as_str().as_bytes());
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
        // Whitespace and either order take the plain path; what it leaves
        // to serde comes out the same.
        for ok in [
            &br#" { "request_id" : "r-1:x.y_z" , "quantity" : 7 } "#[..],
            b"{\"quantity\":\t7,\r\n\"request_id\":\"r-1:x.y_z\"}",
            br#"{"quantity":7,"request_id":"r\u002d1:x.y_z"}"#,
        ] {
            let (q, r) = parse_buy(ok).unwrap();
            assert_eq!((q, r.as_str()), (7, "r-1:x.y_z"));
        }
        assert!(plain_buy(br#"{"quantity":7,"request_id":"r"}"#).is_some());
        // The compact form and the tokenizer agree wherever both read.
        for body in [
            &br#"{"quantity":7,"request_id":"r"}"#[..],
            br#"{"quantity":0,"request_id":"r-1:x.y_z"}"#,
            br#"{"quantity":4294967295,"request_id":"r"}"#,
            br#"{"quantity":4294967296,"request_id":"r"}"#,
            br#"{"quantity":07,"request_id":"r"}"#,
            br#"{"quantity":7,"request_id":""}"#,
            br#"{"quantity":7,"request_id":"r"} "#,
            br#"{"quantity":7,"request_id":"r"}}"#,
            br#"{"quantity":7,"request_id":"r s"}"#,
            br#"{"quantity":7.5,"request_id":"r"}"#,
        ] {
            if let Some(c) = compact_buy(body) {
                assert_eq!(
                    Some(c),
                    spaced_buy(body),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        assert!(compact_buy(br#"{"quantity":7,"request_id":"r"}"#).is_some());
        assert!(compact_buy(br#"{"quantity":7,"request_id":"r"}}"#).is_none());
        assert!(compact_buy(br#"{"quantity":07,"request_id":"r"}"#).is_none());
        for odd in [
            &br#"{"quantity":7,"request_id":"r","quantity":7}"#[..],
            br#"{"quantity":7,"quantity":7}"#,
            br#"{"quantity":7}"#,
            br#"{"quantity":07,"request_id":"r"}"#,
            br#"{"quantity":7.0,"request_id":"r"}"#,
            br#"{"quantity":4294967296,"request_id":"r"}"#,
            br#"{"quantity":7,"request_id":"r"},"#,
            br#"{"quantity":7,"request_id":"r",}"#,
            br#"{"quantity":7,"request_id":"r/s"}"#,
            br#"{"quantity":7,"request_id":"r"} {}"#,
            br#"{"quantity":7,,"request_id":"r"}"#,
            br#"{"quantity":7 "request_id":"r"}"#,
            br#"{"quantity":7,"request_id":"r""#,
            br#"{"quantity":7,"request_id":"#,
            br#"{"quantity":"#,
            br#"{"quantity":-7,"request_id":"r"}"#,
            b"",
        ] {
            assert!(plain_buy(odd).is_none(), "{}", String::from_utf8_lossy(odd));
        }
        assert!(parse_buy(br#"{"quantity":7,"request_id":"r","quantity":7}"#).is_err());
        assert!(parse_buy(br#"{"quantity":4294967296,"request_id":"r"}"#).is_err());
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

    /// A sale's JSON is the same whether its fixed part was cached or not,
    /// and sales sharing a cache slot never see each other's fields.
    #[test]
    fn activity_json_through_the_cache() {
        let engine = flashd_engine::Engine::new(Default::default());
        let now = 1_795_348_800_000;
        let mut ids = Vec::new();
        for i in 0..(2 * FIXED_CACHE as u64 + 3) {
            let spec = ActivitySpec {
                sku_id: format!("SKU-{i}"),
                name: format!("sale \"{i}\"\n"),
                price_cents: 100 + i,
                stock: 10 + i,
                start_at: now - 1000 * i,
                end_at: now + 3_600_000 + i,
                per_user_limit: 1 + (i % 3) as u32,
            };
            let v = engine
                .create_activity(&spec, now, &mut flashd_engine::Discard)
                .unwrap();
            ids.push((v.id, spec));
        }
        for round in 0..3 {
            for (id, spec) in ids.iter().rev().skip(round) {
                let a = engine.activity(*id).unwrap();
                let mut out = Vec::new();
                write_activity(&mut out, a, now);
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(v["id"], *id);
                assert_eq!(v["sku_id"], spec.sku_id.as_str());
                assert_eq!(v["name"], spec.name.as_str());
                assert_eq!(v["price_cents"], spec.price_cents);
                assert_eq!(v["stock"], spec.stock);
                assert_eq!(v["remaining"], spec.stock);
                assert_eq!(v["per_user_limit"], spec.per_user_limit);
                let mut t = [0u8; 24];
                flashd_protocol::rfc3339::format_rfc3339(spec.end_at, &mut t);
                assert_eq!(v["end_at"], std::str::from_utf8(&t).unwrap());
                assert_eq!(v["state"], "open");
            }
        }
    }

    /// The whole body is reused only for the counters and state it was
    /// encoded for: every change of either is answered as it is.
    #[test]
    fn activity_json_follows_counters_and_state() {
        let engine = flashd_engine::Engine::new(Default::default());
        let now = 1_795_348_800_000;
        let spec = ActivitySpec {
            sku_id: "SKU-C".into(),
            name: "counters".into(),
            price_cents: 100,
            stock: 10,
            start_at: now - 1000,
            end_at: now + 60_000,
            per_user_limit: 2,
        };
        let id = engine
            .create_activity(&spec, now, &mut flashd_engine::Discard)
            .unwrap()
            .id;
        let a = engine.activity(id).unwrap();
        let read = |c: (i64, i64, i64), at: Millis| {
            let mut out = b"prefix".to_vec();
            let counters = flashd_engine::Counters {
                remaining: c.0,
                sold: c.1,
                reserved: c.2,
            };
            write_activity_with(&mut out, a, counters, at);
            assert!(out.starts_with(b"prefix"));
            let v: serde_json::Value = serde_json::from_slice(&out[6..]).unwrap();
            (
                v["remaining"].as_i64().unwrap(),
                v["sold"].as_i64().unwrap(),
                v["reserved"].as_i64().unwrap(),
                v["state"].as_str().unwrap().to_owned(),
            )
        };
        let steps = [
            ((10, 0, 0), now, "open"),
            ((10, 0, 0), now, "open"),
            ((9, 0, 1), now, "open"),
            ((9, 1, 0), now, "open"),
            ((9, 1, 0), now + 60_000, "ended"),
            ((0, 9, 1), now, "sold_out"),
            ((10, 0, 0), now - 2000, "upcoming"),
            ((10, 0, 0), now, "open"),
        ];
        for (c, at, state) in steps {
            assert_eq!(
                read(c, at),
                (c.0, c.1, c.2, state.to_owned()),
                "{c:?} at {at}"
            );
        }
    }

    /// The per-second cache formats exactly what `format_rfc3339` does,
    /// whatever order the seconds come in.
    #[test]
    fn times_through_the_cache() {
        let base: Millis = 1_795_348_800_000;
        let mut seed: u64 = 7;
        for i in 0..5_000u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ms = match i % 3 {
                0 => base + i * 997,
                1 => base + (seed >> 40),
                _ => seed >> 24,
            };
            let mut want = [0u8; 24];
            format_rfc3339(ms, &mut want);
            let mut out = Vec::new();
            push_time(&mut out, ms);
            assert_eq!(out[1..25], want, "{ms}");
            assert_eq!((out[0], out[25], out.len()), (b'"', b'"', 26));
        }
    }

    /// Every field of an order's JSON, for orders at the edges of the
    /// room's bound (the largest numbers, the longest status and reason)
    /// and with their creation and last change at one time or two.
    #[test]
    fn order_json_holds_every_field() {
        let ms: Millis = 1_795_348_800_123;
        let statuses = [
            flashd_engine::OrderStatus::Created,
            flashd_engine::OrderStatus::Paid,
            flashd_engine::OrderStatus::Cancelled,
        ];
        let reasons = [None, Some(CancelReason::User), Some(CancelReason::Timeout)];
        for (i, (status, reason)) in statuses.iter().zip(reasons).enumerate() {
            for updated_at in [ms, ms + 61_007] {
                let big = i == 2;
                let o = OrderView {
                    id: if big { u64::MAX } else { 7 },
                    activity_id: if big { u32::MAX as _ } else { 1 },
                    user_id: if big { u64::MAX } else { 9 },
                    quantity: if big { u32::MAX as _ } else { 1 },
                    amount_cents: if big { u64::MAX } else { 0 },
                    status: *status,
                    created_at: ms,
                    expires_at: ms + 900_000,
                    updated_at,
                    cancel_reason: reason,
                };
                let mut out = b"[".to_vec();
                write_order(&mut out, &o);
                let v: serde_json::Value = serde_json::from_slice(&out[1..]).unwrap();
                let time = |ms: Millis| {
                    let mut t = [0u8; 24];
                    format_rfc3339(ms, &mut t);
                    String::from_utf8(t.to_vec()).unwrap()
                };
                assert_eq!(out[0], b'[', "what was there is kept");
                assert_eq!(v["order_id"], o.id.to_string());
                assert_eq!(v["activity_id"], o.activity_id as u64);
                assert_eq!(v["user_id"], o.user_id);
                assert_eq!(v["quantity"], o.quantity as u64);
                assert_eq!(v["amount_cents"], o.amount_cents);
                assert_eq!(v["status"], status.as_str());
                assert_eq!(v["created_at"], time(o.created_at));
                assert_eq!(v["expires_at"], time(o.expires_at));
                assert_eq!(v["updated_at"], time(o.updated_at));
                match reason {
                    None => assert!(v.get("cancel_reason").is_none()),
                    Some(r) => assert_eq!(v["cancel_reason"], r.as_str()),
                }
                assert_eq!(v.as_object().unwrap().len(), 9 + reason.is_some() as usize);
            }
        }
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
