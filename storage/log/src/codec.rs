//! Binary encoding of engine events and snapshot items: little-endian
//! fixed-width integers, strings as u16 length + bytes. Hand-written so the
//! format is stable, explicit and cheap (no schema evolution magic: a
//! change bumps the file format version).

use flashd_engine::{
    ActivitySnapshot, ActivitySpec, CancelReason, Event, Order, OrderStatus, RequestKey,
};

use crate::error::DecodeError;

pub const KIND_ACTIVITY_CREATED: u8 = 1;
pub const KIND_ORDER_CREATED: u8 = 2;
pub const KIND_ORDER_PAID: u8 = 3;
pub const KIND_ORDER_CANCELLED: u8 = 4;
/// An admin added stock to a sale. New kinds are only added: a log without
/// them reads as before, so the file format version stays.
pub const KIND_STOCK_ADDED: u8 = 5;
/// An admin moved (or ended) a sale's window.
pub const KIND_WINDOW_CHANGED: u8 = 6;
pub const KIND_SNAP_HEADER: u8 = 10;
pub const KIND_SNAP_ACTIVITY: u8 = 11;
/// Format 1: one order.
pub const KIND_SNAP_ORDER: u8 = 12;
/// Format 2: a block of fixed-width order rows.
pub const KIND_SNAP_ORDERS: u8 = 13;
/// Format 2: orders per engine stripe (u32 each), a sizing hint.
pub const KIND_SNAP_STRIPES: u8 = 14;

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        let b = s.as_bytes();
        let n = b.len().min(u16::MAX as usize);
        self.0.extend_from_slice(&(n as u16).to_le_bytes());
        self.0.extend_from_slice(&b[..n]);
    }
}

pub(crate) struct R<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> R<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        R { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(DecodeError::Truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::BadUtf8)
    }
    fn done(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

fn status_byte(s: OrderStatus) -> u8 {
    s as u8
}

fn status_from(b: u8) -> Result<OrderStatus, DecodeError> {
    match b {
        0 => Ok(OrderStatus::Created),
        1 => Ok(OrderStatus::Paid),
        2 => Ok(OrderStatus::Cancelled),
        _ => Err(DecodeError::BadEnum("order status")),
    }
}

fn reason_from(b: u8) -> Result<CancelReason, DecodeError> {
    match b {
        0 => Ok(CancelReason::User),
        1 => Ok(CancelReason::Timeout),
        _ => Err(DecodeError::BadEnum("cancel reason")),
    }
}

/// Append `ev`'s payload to `out`; returns its record kind.
pub fn encode_event(ev: &Event, out: &mut Vec<u8>) -> u8 {
    let mut w = W(out);
    match ev {
        Event::ActivityCreated {
            id,
            sku_id,
            name,
            price_cents,
            stock,
            start_at,
            end_at,
            per_user_limit,
            created_at,
        } => {
            w.u32(*id);
            w.str(sku_id);
            w.str(name);
            w.u64(*price_cents);
            w.u64(*stock);
            w.u64(*start_at);
            w.u64(*end_at);
            w.u32(*per_user_limit);
            w.u64(*created_at);
            KIND_ACTIVITY_CREATED
        }
        Event::OrderCreated {
            order_id,
            activity_id,
            user_id,
            quantity,
            amount_cents,
            request_id,
            created_at,
            expires_at,
        } => {
            w.u64(*order_id);
            w.u32(*activity_id);
            w.u64(*user_id);
            w.u32(*quantity);
            w.u64(*amount_cents);
            w.str(request_id);
            w.u64(*created_at);
            w.u64(*expires_at);
            KIND_ORDER_CREATED
        }
        Event::OrderPaid {
            order_id,
            activity_id,
            user_id,
            quantity,
            at,
        } => {
            w.u64(*order_id);
            w.u32(*activity_id);
            w.u64(*user_id);
            w.u32(*quantity);
            w.u64(*at);
            KIND_ORDER_PAID
        }
        Event::OrderCancelled {
            order_id,
            activity_id,
            user_id,
            quantity,
            reason,
            at,
        } => {
            w.u64(*order_id);
            w.u32(*activity_id);
            w.u64(*user_id);
            w.u32(*quantity);
            w.u8(*reason as u8);
            w.u64(*at);
            KIND_ORDER_CANCELLED
        }
        Event::StockAdded { id, added, at } => {
            w.u32(*id);
            w.u64(*added);
            w.u64(*at);
            KIND_STOCK_ADDED
        }
        Event::ActivityWindowChanged {
            id,
            start_at,
            end_at,
            prev_start_at,
            prev_end_at,
            at,
        } => {
            w.u32(*id);
            w.u64(*start_at);
            w.u64(*end_at);
            w.u64(*prev_start_at);
            w.u64(*prev_end_at);
            w.u64(*at);
            KIND_WINDOW_CHANGED
        }
    }
}

pub fn decode_event(kind: u8, payload: &[u8]) -> Result<Event, DecodeError> {
    let mut r = R::new(payload);
    let ev = match kind {
        KIND_ACTIVITY_CREATED => Event::ActivityCreated {
            id: r.u32()?,
            sku_id: r.str()?,
            name: r.str()?,
            price_cents: r.u64()?,
            stock: r.u64()?,
            start_at: r.u64()?,
            end_at: r.u64()?,
            per_user_limit: r.u32()?,
            created_at: r.u64()?,
        },
        KIND_ORDER_CREATED => Event::OrderCreated {
            order_id: r.u64()?,
            activity_id: r.u32()?,
            user_id: r.u64()?,
            quantity: r.u32()?,
            amount_cents: r.u64()?,
            request_id: r.str()?.into_boxed_str(),
            created_at: r.u64()?,
            expires_at: r.u64()?,
        },
        KIND_ORDER_PAID => Event::OrderPaid {
            order_id: r.u64()?,
            activity_id: r.u32()?,
            user_id: r.u64()?,
            quantity: r.u32()?,
            at: r.u64()?,
        },
        KIND_ORDER_CANCELLED => Event::OrderCancelled {
            order_id: r.u64()?,
            activity_id: r.u32()?,
            user_id: r.u64()?,
            quantity: r.u32()?,
            reason: reason_from(r.u8()?)?,
            at: r.u64()?,
        },
        KIND_STOCK_ADDED => Event::StockAdded {
            id: r.u32()?,
            added: r.u64()?,
            at: r.u64()?,
        },
        KIND_WINDOW_CHANGED => Event::ActivityWindowChanged {
            id: r.u32()?,
            start_at: r.u64()?,
            end_at: r.u64()?,
            prev_start_at: r.u64()?,
            prev_end_at: r.u64()?,
            at: r.u64()?,
        },
        k => return Err(DecodeError::UnknownKind(k)),
    };
    r.done()?;
    Ok(ev)
}

pub fn encode_snap_activity(a: &ActivitySnapshot, out: &mut Vec<u8>) {
    let mut w = W(out);
    w.u32(a.id);
    w.str(&a.spec.sku_id);
    w.str(&a.spec.name);
    w.u64(a.spec.price_cents);
    w.u64(a.spec.stock);
    w.u64(a.spec.start_at);
    w.u64(a.spec.end_at);
    w.u32(a.spec.per_user_limit);
    w.u64(a.created_at);
    w.i64(a.remaining);
    w.i64(a.sold);
    w.i64(a.reserved);
    w.u8(a.void as u8);
}

pub fn decode_snap_activity(payload: &[u8]) -> Result<ActivitySnapshot, DecodeError> {
    let mut r = R::new(payload);
    let a = ActivitySnapshot {
        id: r.u32()?,
        spec: ActivitySpec {
            sku_id: r.str()?,
            name: r.str()?,
            price_cents: r.u64()?,
            stock: r.u64()?,
            start_at: r.u64()?,
            end_at: r.u64()?,
            per_user_limit: r.u32()?,
        },
        created_at: r.u64()?,
        remaining: r.i64()?,
        sold: r.i64()?,
        reserved: r.i64()?,
        void: r.u8()? != 0,
    };
    r.done()?;
    Ok(a)
}

/// Snapshot format 1: one record per order, its request id as a string.
/// Read only (an upgrade starts from the snapshot it finds); the id is
/// hashed as the engine keeps it.
pub fn decode_snap_order_v1(payload: &[u8]) -> Result<Order, DecodeError> {
    let mut r = R::new(payload);
    let o = Order {
        id: r.u64()?,
        activity_id: r.u32()?,
        user_id: r.u64()?,
        quantity: r.u32()?,
        amount_cents: r.u64()?,
        status: status_from(r.u8()?)?,
        request_key: RequestKey::of(&r.str()?),
        created_at: r.u64()?,
        expires_at: r.u64()?,
        updated_at: r.u64()?,
        cancel_reason: match r.u8()? {
            0 => None,
            1 => Some(CancelReason::User),
            2 => Some(CancelReason::Timeout),
            _ => return Err(DecodeError::BadEnum("cancel reason")),
        },
    };
    r.done()?;
    Ok(o)
}

/// Snapshot format 2: an order is a fixed-width row, so a block of them
/// is decoded without a length field per order and split between threads
/// by arithmetic.
pub const ORDER_BYTES: usize = 74;

pub fn encode_order_row(o: &Order, out: &mut Vec<u8>) {
    let start = out.len();
    let mut w = W(out);
    w.u64(o.id);
    w.u32(o.activity_id);
    w.u64(o.user_id);
    w.u32(o.quantity);
    w.u64(o.amount_cents);
    w.u8(status_byte(o.status));
    w.u8(match o.cancel_reason {
        None => 0,
        Some(CancelReason::User) => 1,
        Some(CancelReason::Timeout) => 2,
    });
    w.u64(o.request_key.0[0]);
    w.u64(o.request_key.0[1]);
    w.u64(o.created_at);
    w.u64(o.expires_at);
    w.u64(o.updated_at);
    debug_assert_eq!(out.len() - start, ORDER_BYTES);
}

pub fn decode_order_row(b: &[u8; ORDER_BYTES]) -> Result<Order, DecodeError> {
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    Ok(Order {
        id: u64_at(0),
        activity_id: u32_at(8),
        user_id: u64_at(12),
        quantity: u32_at(20),
        amount_cents: u64_at(24),
        status: status_from(b[32])?,
        cancel_reason: match b[33] {
            0 => None,
            1 => Some(CancelReason::User),
            2 => Some(CancelReason::Timeout),
            _ => return Err(DecodeError::BadEnum("cancel reason")),
        },
        request_key: RequestKey([u64_at(34), u64_at(42)]),
        created_at: u64_at(50),
        expires_at: u64_at(58),
        updated_at: u64_at(66),
    })
}

/// The first record of a snapshot: where it stands in the log and how
/// many sale and order records follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapHeader {
    /// The LSN the snapshot is taken at (the first event it does not hold).
    pub lsn: u64,
    pub next_activity: u32,
    pub last_order_id: u64,
    /// Sale records that follow.
    pub activities: u64,
    /// Orders that follow (in blocks, or one record each in format 1).
    pub orders: u64,
}

pub fn encode_snap_header(h: &SnapHeader, out: &mut Vec<u8>) {
    let mut w = W(out);
    w.u64(h.lsn);
    w.u32(h.next_activity);
    w.u64(h.last_order_id);
    w.u64(h.activities);
    w.u64(h.orders);
}

pub fn decode_snap_header(payload: &[u8]) -> Result<SnapHeader, DecodeError> {
    let mut r = R::new(payload);
    let h = SnapHeader {
        lsn: r.u64()?,
        next_activity: r.u32()?,
        last_order_id: r.u64()?,
        activities: r.u64()?,
        orders: r.u64()?,
    };
    r.done()?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let evs = vec![
            Event::ActivityCreated {
                id: 7,
                sku_id: "SKU-ü".into(),
                name: "n".into(),
                price_cents: 1,
                stock: 2,
                start_at: 3,
                end_at: 4,
                per_user_limit: 5,
                created_at: 6,
            },
            Event::OrderCreated {
                order_id: u64::MAX,
                activity_id: 1,
                user_id: 2,
                quantity: 3,
                amount_cents: 4,
                request_id: "r-1".into(),
                created_at: 5,
                expires_at: 6,
            },
            Event::OrderPaid {
                order_id: 1,
                activity_id: 2,
                user_id: 3,
                quantity: 4,
                at: 5,
            },
            Event::OrderCancelled {
                order_id: 1,
                activity_id: 2,
                user_id: 3,
                quantity: 4,
                reason: CancelReason::Timeout,
                at: 5,
            },
            Event::StockAdded {
                id: u32::MAX,
                added: 1_000_000_000,
                at: u64::MAX,
            },
            Event::ActivityWindowChanged {
                id: 3,
                start_at: 10,
                end_at: 20,
                prev_start_at: 1,
                prev_end_at: u64::MAX,
                at: 9,
            },
        ];
        // The kinds on disk are fixed: a changed number would misread
        // every log written before.
        let kinds: Vec<u8> = evs
            .iter()
            .map(|ev| encode_event(ev, &mut Vec::new()))
            .collect();
        assert_eq!(kinds, [1, 2, 3, 4, 5, 6]);
        for ev in evs {
            let mut b = Vec::new();
            let k = encode_event(&ev, &mut b);
            assert_eq!(decode_event(k, &b).unwrap(), ev);
            assert!(decode_event(k, &b[..b.len() - 1]).is_err());
            b.push(0);
            assert_eq!(decode_event(k, &b), Err(DecodeError::TrailingBytes));
        }
        assert_eq!(decode_event(99, &[]), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn order_rows_round_trip_and_bad_enums_are_refused() {
        let mut o = Order {
            id: u64::MAX - 1,
            activity_id: u32::MAX,
            user_id: 1 << 63,
            quantity: 7,
            amount_cents: 123_456_789,
            status: OrderStatus::Cancelled,
            request_key: RequestKey::of("req-9"),
            created_at: 1,
            expires_at: 2,
            updated_at: 3,
            cancel_reason: Some(CancelReason::Timeout),
        };
        for (status, reason) in [
            (OrderStatus::Created, None),
            (OrderStatus::Paid, None),
            (OrderStatus::Cancelled, Some(CancelReason::User)),
            (OrderStatus::Cancelled, Some(CancelReason::Timeout)),
        ] {
            o.status = status;
            o.cancel_reason = reason;
            let mut b = Vec::new();
            encode_order_row(&o, &mut b);
            assert_eq!(b.len(), ORDER_BYTES);
            let row: &[u8; ORDER_BYTES] = b[..].try_into().unwrap();
            assert_eq!(decode_order_row(row).unwrap(), o);
            let mut bad = *row;
            bad[32] = 3;
            assert!(decode_order_row(&bad).is_err());
            let mut bad = *row;
            bad[33] = 3;
            assert!(decode_order_row(&bad).is_err());
        }
    }
}
