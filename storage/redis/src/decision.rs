//! What goes into the scripts and what comes out, typed: a purchase
//! ([`Buy`]) and its [`Decision`], a pay or cancel ([`Settle`]) and its
//! [`Settled`] outcome, and the [`Claim`] Redis keeps for every order.

use flashd_engine::{
    ActivityId, CancelReason, Event, Millis, OrderId, OrderStatus, Reject, UserId, NODE_ID_MAX,
    QUANTITY_MAX, REQUEST_ID_BYTES_MAX,
};

use crate::error::RedisError;

/// One purchase of a batch. The order id is made by the caller (the node's
/// order id generator) and stored by the script only if the purchase is
/// granted; `amount_cents` is the sale's price times `quantity`, and
/// `deadline_ms` the payment deadline (`now + order_ttl_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buy {
    pub user: UserId,
    pub request_id: String,
    pub quantity: u32,
    pub order_id: OrderId,
    pub amount_cents: u64,
    pub deadline_ms: Millis,
}

impl Buy {
    /// Within the API's bounds (quantity; request id of 1 to 64 of
    /// `A-Z a-z 0-9 - _ . :`, so it never holds the `;#|,` a buyer's
    /// record is cut at): what the API checked first; a purchase outside
    /// them never reaches Redis.
    pub fn is_valid(&self) -> bool {
        self.quantity > 0
            && self.quantity <= QUANTITY_MAX
            && !self.request_id.is_empty()
            && self.request_id.len() <= REQUEST_ID_BYTES_MAX
            && self
                .request_id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(&c))
    }
}

/// Where a claim is in its life (the engine's `OrderStatus`, with the
/// reason of a cancel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimStatus {
    Created,
    Paid,
    Cancelled(CancelReason),
}

impl ClaimStatus {
    /// The status byte of a claim value (`C`, `P`, `X`, `T`).
    pub const fn code(self) -> char {
        match self {
            ClaimStatus::Created => 'C',
            ClaimStatus::Paid => 'P',
            ClaimStatus::Cancelled(CancelReason::User) => 'X',
            ClaimStatus::Cancelled(CancelReason::Timeout) => 'T',
        }
    }

    fn parse(c: &str) -> Option<ClaimStatus> {
        Some(match c {
            "C" => ClaimStatus::Created,
            "P" => ClaimStatus::Paid,
            "X" => ClaimStatus::Cancelled(CancelReason::User),
            "T" => ClaimStatus::Cancelled(CancelReason::Timeout),
            _ => return None,
        })
    }

    /// The engine's status.
    pub const fn order_status(self) -> OrderStatus {
        match self {
            ClaimStatus::Created => OrderStatus::Created,
            ClaimStatus::Paid => OrderStatus::Paid,
            ClaimStatus::Cancelled(_) => OrderStatus::Cancelled,
        }
    }
}

/// An order as Redis keeps it: everything `Event::OrderCreated` needs, so a
/// node that finds a claim its maker never logged can log it, plus the
/// node that made it and where it is now.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    pub order_id: OrderId,
    pub user: UserId,
    pub quantity: u32,
    pub amount_cents: u64,
    pub created_at: Millis,
    pub deadline_ms: Millis,
    pub node: u16,
    pub status: ClaimStatus,
    pub request_id: String,
}

impl Claim {
    /// The claim a granted `buy` became: made by `node` at `now`.
    pub fn granted(buy: &Buy, now: Millis, node: u16) -> Claim {
        Claim {
            order_id: buy.order_id,
            user: buy.user,
            quantity: buy.quantity,
            amount_cents: buy.amount_cents,
            created_at: now,
            deadline_ms: buy.deadline_ms,
            node,
            status: ClaimStatus::Created,
            request_id: buy.request_id.clone(),
        }
    }

    /// The claim as a buyer's record holds it (`crate::script`):
    /// `;<request_id>#<order_id>|S|qty|amount|created|deadline|node`.
    pub fn encode_segment(&self) -> String {
        format!(
            ";{}#{}|{}|{}|{}|{}|{}|{}",
            self.request_id,
            self.order_id,
            self.status.code(),
            self.quantity,
            self.amount_cents,
            self.created_at,
            self.deadline_ms,
            self.node
        )
    }

    /// Read back a segment [`Claim::encode_segment`] wrote in `user`'s
    /// record.
    pub fn decode_segment(user: UserId, seg: &str) -> Option<Claim> {
        let (request_id, rest) = seg.strip_prefix(';')?.split_once('#')?;
        let mut f = rest.split('|');
        let order_id = f.next()?.parse().ok()?;
        let status = ClaimStatus::parse(f.next()?)?;
        let quantity = f.next()?.parse().ok()?;
        let amount_cents = f.next()?.parse().ok()?;
        let created_at = f.next()?.parse().ok()?;
        let deadline_ms = f.next()?.parse().ok()?;
        let node = f.next()?.parse().ok()?;
        if f.next().is_some() {
            return None;
        }
        Some(Claim {
            order_id,
            user,
            quantity,
            amount_cents,
            created_at,
            deadline_ms,
            node,
            status,
            request_id: request_id.to_owned(),
        })
    }

    /// `<user><segment>`, as the expire script returns a claim.
    pub(crate) fn decode_with_user(s: &str) -> Option<Claim> {
        let p = s.find(';')?;
        Claim::decode_segment(s[..p].parse().ok()?, &s[p..])
    }

    /// The event that records this claim's creation in sale `sale`: what
    /// the maker logs, or what a node that finds the claim unlogged logs.
    pub fn created_event(&self, sale: ActivityId) -> Event {
        Event::OrderCreated {
            order_id: self.order_id,
            activity_id: sale,
            user_id: self.user,
            quantity: self.quantity,
            amount_cents: self.amount_cents,
            request_id: self.request_id.as_str().into(),
            created_at: self.created_at,
            expires_at: self.deadline_ms,
        }
    }

    /// The event that records this claim's move out of `Created` (paid or
    /// cancelled at `at`); `None` for a claim still created.
    pub fn moved_event(&self, sale: ActivityId, at: Millis) -> Option<Event> {
        match self.status {
            ClaimStatus::Created => None,
            ClaimStatus::Paid => Some(Event::OrderPaid {
                order_id: self.order_id,
                activity_id: sale,
                user_id: self.user,
                quantity: self.quantity,
                at,
            }),
            ClaimStatus::Cancelled(reason) => Some(Event::OrderCancelled {
                order_id: self.order_id,
                activity_id: sale,
                user_id: self.user,
                quantity: self.quantity,
                reason,
                // A timeout happens at the deadline at the earliest,
                // whenever (and on whatever clock) a node learns of it: a
                // node paused mid-batch logs a copy with its batch's
                // clock, which can be from before the deadline.
                at: match reason {
                    CancelReason::Timeout => at.max(self.deadline_ms),
                    CancelReason::User => at,
                },
            }),
        }
    }
}

#[cfg(test)]
mod moved {
    use super::*;

    #[test]
    fn a_timeout_is_never_logged_before_its_deadline() {
        let mut c = Claim {
            order_id: 9,
            user: 1,
            quantity: 1,
            amount_cents: 5,
            created_at: 100,
            deadline_ms: 1_000,
            node: 0,
            status: ClaimStatus::Cancelled(CancelReason::Timeout),
            request_id: "r".into(),
        };
        let at = |e: Option<Event>| match e {
            Some(Event::OrderCancelled { at, .. } | Event::OrderPaid { at, .. }) => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            at(c.moved_event(1, 400)),
            1_000,
            "learned early: the deadline"
        );
        assert_eq!(at(c.moved_event(1, 1_500)), 1_500);
        c.status = ClaimStatus::Cancelled(CancelReason::User);
        assert_eq!(at(c.moved_event(1, 400)), 400);
        c.status = ClaimStatus::Paid;
        assert_eq!(at(c.moved_event(1, 400)), 400);
    }
}

/// The node whose order id generator made `order_id` (the engine's id
/// layout: 12 bits of sequence under 10 bits of node).
pub fn node_of(order_id: OrderId) -> u16 {
    ((order_id >> 12) & u64::from(NODE_ID_MAX)) as u16
}

/// What Redis decided for one [`Buy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Units taken; the claim is stored. The caller logs
    /// [`Claim::created_event`] and answers `201` once that is durable.
    Granted(Claim),
    /// The `(user, request_id)` was decided before (on any node): its
    /// claim, whatever became of it. The caller answers with this order
    /// (and logs its creation if its own log does not hold it).
    Existing(Claim),
    /// The `(user, request_id)` was used for a different quantity.
    Conflict(Claim),
    SoldOut,
    LimitReached,
    /// The buyer created as many orders in this sale as anyone may.
    TooManyOrders,
    NotStarted,
    Ended,
    /// No such sale in Redis.
    NoSale,
    /// Outside the engine's bounds ([`Buy::is_valid`]); never sent.
    Invalid,
}

impl Decision {
    /// The engine's refusal this decision answers as (`None` for an
    /// order).
    pub fn reject(&self) -> Option<Reject> {
        Some(match self {
            Decision::Granted(_) | Decision::Existing(_) => return None,
            Decision::Conflict(_) => Reject::IdempotencyConflict,
            Decision::SoldOut => Reject::SoldOut,
            Decision::LimitReached => Reject::LimitReached,
            Decision::TooManyOrders => Reject::TooManyOrders,
            Decision::NotStarted => Reject::NotStarted,
            Decision::Ended => Reject::Ended,
            Decision::NoSale => Reject::NotFound,
            Decision::Invalid => Reject::Invalid,
        })
    }

    /// The order this decision answers with, if any.
    pub fn claim(&self) -> Option<&Claim> {
        match self {
            Decision::Granted(c) | Decision::Existing(c) | Decision::Conflict(c) => Some(c),
            _ => None,
        }
    }

    /// Read the buy script's answer for `buy`: its code, and for `E` the
    /// segment of the claim it found.
    pub(crate) fn parse(
        buy: &Buy,
        now: Millis,
        node: u16,
        code: u8,
        segment: Option<&str>,
    ) -> Result<Decision, RedisError> {
        let bad =
            || RedisError::protocol("buy", format!("answer {:?} {segment:?}", char::from(code)));
        Ok(match code {
            b'G' => Decision::Granted(Claim::granted(buy, now, node)),
            b'E' => {
                let c = segment
                    .and_then(|s| Claim::decode_segment(buy.user, s))
                    .ok_or_else(bad)?;
                if c.quantity == buy.quantity {
                    Decision::Existing(c)
                } else {
                    Decision::Conflict(c)
                }
            }
            b'F' => Decision::NoSale,
            b'B' => Decision::NotStarted,
            b'A' => Decision::Ended,
            b'L' => Decision::LimitReached,
            b'M' => Decision::TooManyOrders,
            b'S' => Decision::SoldOut,
            _ => return Err(bad()),
        })
    }
}

/// A pay or a cancel, by the buyer `user` of order `order_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Pay { user: UserId, order_id: OrderId },
    Cancel { user: UserId, order_id: OrderId },
}

impl Settle {
    pub fn parts(&self) -> (&'static str, UserId, OrderId) {
        match *self {
            Settle::Pay { user, order_id } => ("P", user, order_id),
            Settle::Cancel { user, order_id } => ("C", user, order_id),
        }
    }
}

/// What Redis decided for one [`Settle`]. The claim is as it is after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Paid now: log `OrderPaid`.
    Paid(Claim),
    /// Paid before (idempotent): nothing to log.
    AlreadyPaid(Claim),
    /// Cancelled now by the buyer: log `OrderCancelled { User }`.
    Cancelled(Claim),
    /// Cancelled before, by the buyer or a timeout (idempotent for a
    /// cancel): nothing to log.
    AlreadyCancelled(Claim),
    /// A pay at or after the deadline: this call timed the claim out and
    /// gave its units back (log `OrderCancelled { Timeout }`); the buyer
    /// hears `order_expired`.
    Expired(Claim),
    /// A pay of a cancelled claim, or a cancel of a paid one.
    BadTransition(Claim),
    /// No such order of this buyer in this sale.
    NotFound,
}

impl Settled {
    /// The claim, if there is one.
    pub fn claim(&self) -> Option<&Claim> {
        match self {
            Settled::Paid(c)
            | Settled::AlreadyPaid(c)
            | Settled::Cancelled(c)
            | Settled::AlreadyCancelled(c)
            | Settled::Expired(c)
            | Settled::BadTransition(c) => Some(c),
            Settled::NotFound => None,
        }
    }

    /// The event this outcome must log (at `at`): only the moves made now.
    pub fn event(&self, sale: ActivityId, at: Millis) -> Option<Event> {
        match self {
            Settled::Paid(c) | Settled::Cancelled(c) | Settled::Expired(c) => {
                c.moved_event(sale, at)
            }
            _ => None,
        }
    }

    /// The engine's answer: the order, or the refusal.
    pub fn reject(&self) -> Option<Reject> {
        match self {
            Settled::Paid(_)
            | Settled::AlreadyPaid(_)
            | Settled::Cancelled(_)
            | Settled::AlreadyCancelled(_) => None,
            Settled::Expired(_) => Some(Reject::Expired),
            Settled::BadTransition(_) => Some(Reject::BadTransition),
            Settled::NotFound => Some(Reject::NotFound),
        }
    }

    /// Read the settle script's answer for `op`: its code, and the
    /// segment of the claim it found.
    pub(crate) fn parse(
        op: &Settle,
        code: u8,
        segment: Option<&str>,
    ) -> Result<Settled, RedisError> {
        let bad = || {
            RedisError::protocol(
                "settle",
                format!("answer {:?} {segment:?}", char::from(code)),
            )
        };
        if code == b'N' {
            return Ok(Settled::NotFound);
        }
        let (_, user, order_id) = op.parts();
        let c = segment
            .and_then(|s| Claim::decode_segment(user, s))
            .filter(|c| c.order_id == order_id)
            .ok_or_else(bad)?;
        let pay = matches!(op, Settle::Pay { .. });
        Ok(match (code, pay) {
            (b'D', true) => Settled::Paid(c),
            (b'D', false) => Settled::Cancelled(c),
            (b'A', true) => Settled::AlreadyPaid(c),
            (b'A', false) => Settled::AlreadyCancelled(c),
            (b'T', true) => Settled::Expired(c),
            (b'R', _) => Settled::BadTransition(c),
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_round_trips() {
        let c = Claim {
            order_id: u64::MAX - 3,
            user: u64::MAX,
            quantity: 3,
            amount_cents: 2997,
            created_at: 1_764_000_000_123,
            deadline_ms: 1_764_000_900_123,
            node: 1023,
            status: ClaimStatus::Cancelled(CancelReason::Timeout),
            request_id: "a:b.c-d_e".into(),
        };
        let seg = c.encode_segment();
        assert_eq!(Claim::decode_segment(c.user, &seg), Some(c.clone()));
        assert_eq!(
            Claim::decode_with_user(&format!("{}{seg}", c.user)),
            Some(c)
        );
    }

    #[test]
    fn request_ids_outside_the_api_charset_are_invalid() {
        let b = |r: &str| Buy {
            user: 1,
            request_id: r.into(),
            quantity: 1,
            order_id: 1,
            amount_cents: 1,
            deadline_ms: 1,
        };
        assert!(b("Az09-_.:").is_valid());
        for r in ["", "a;b", "a#b", "a|b", "a,b", "a b", &"x".repeat(65)] {
            assert!(!b(r).is_valid(), "{r:?}");
        }
    }
}
