//! The engine: commands in, decisions and events out.
//!
//! Every command takes the caller's `now` and an [`EventSink`]. A command
//! first checks (window, idempotency, limit, stock), then builds the event
//! and hands it to [`Engine::apply_locked`] (in `transition.rs`), the one
//! function that changes order state, while holding the buyer's stripe
//! lock; only if that succeeds is the event emitted. Replay (`replay.rs`)
//! feeds logged events to the same function.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::activity::{Activity, ActivityView};
use crate::error::{ApplyError, ReplayError};
use crate::event::{Event, EventSink};
use crate::ids::{OrderIdGen, NODE_ID_MAX};
use crate::limits::{sale_user_orders_max, QUANTITY_MAX, REQUEST_ID_BYTES_MAX};
use crate::spec::{ActivitySpec, EngineConfig};
use crate::transition::Mode;
use crate::types::*;
use crate::users::{RequestKey, Users};
use crate::view::{OrderView, PlaceOrder, Placed};

/// One node's sales, buyers and orders. Shared by every worker thread
/// (`&self` everywhere): a sale's stock is taken by compare-and-swap, and a
/// buyer's state is behind the lock of their stripe.
pub struct Engine {
    pub(crate) cfg: EngineConfig,
    pub(crate) activities: Box<[OnceLock<Activity>]>,
    /// Serialises sale creation (rare) so ids are dense and in log order.
    pub(crate) next_activity: Mutex<ActivityId>,
    /// Serialises admins' changes of existing sales (rare): the log holds
    /// them in the order they were applied (`sale_change.rs`).
    pub(crate) admin: Mutex<()>,
    pub(crate) users: Users,
    pub(crate) ids: OrderIdGen,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        assert!(cfg.node_id <= NODE_ID_MAX, "node id out of range");
        Engine {
            activities: (0..cfg.max_activities).map(|_| OnceLock::new()).collect(),
            next_activity: Mutex::new(1),
            admin: Mutex::new(()),
            users: Users::new(),
            ids: OrderIdGen::new(cfg.node_id),
            cfg,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn activity(&self, id: ActivityId) -> Option<&Activity> {
        self.activity_any(id)
            .filter(|a| !a.void.load(Ordering::Acquire))
    }

    /// Including a sale whose creation was reverted (order reverts need it).
    pub(crate) fn activity_any(&self, id: ActivityId) -> Option<&Activity> {
        self.activities.get((id as usize).checked_sub(1)?)?.get()
    }

    /// Every sale, in id order.
    pub fn activities(&self) -> impl Iterator<Item = &Activity> {
        self.activities
            .iter()
            .filter_map(|a| a.get())
            .filter(|a| !a.void.load(Ordering::Acquire))
    }

    pub fn create_activity(
        &self,
        spec: &ActivitySpec,
        now: Millis,
        sink: &mut dyn EventSink,
    ) -> Result<ActivityView, Reject> {
        if spec.validate().is_err() {
            return Err(Reject::Invalid);
        }
        let mut next = self.next_activity.lock();
        if *next as usize > self.activities.len() {
            return Err(Reject::CapacityExhausted);
        }
        let ev = Event::ActivityCreated {
            id: *next,
            sku_id: spec.sku_id.clone(),
            name: spec.name.clone(),
            price_cents: spec.price_cents,
            stock: spec.stock,
            start_at: spec.start_at,
            end_at: spec.end_at,
            per_user_limit: spec.per_user_limit,
            created_at: now,
        };
        // Into the log before anyone can see the sale: an order on it is
        // emitted only by a buyer who saw it, so it always follows the
        // creation in the log (a valid replay order). Creation is rare, so
        // the copy costs nothing that matters.
        sink.emit(ev.clone());
        self.install_activity(&ev, &mut next)
            .expect("id and slot were checked under the creation lock");
        let view = self
            .activity_any(*next - 1)
            .expect("just installed")
            .view(now);
        Ok(view)
    }

    /// How [`Engine::place_order`] would refuse this purchase *whoever*
    /// sent it, when that is already known without the buyer: `None`
    /// otherwise (the purchase then takes the full path, token first).
    ///
    /// What it answers reveals nothing a `GET` of the sale does not (the
    /// sale exists or not, its window, whether units remain, its per-user
    /// limit), so a server may answer it before checking the token: a
    /// stampede on a sold-out sale then costs no HMAC. It refuses only a
    /// purchase that cannot be a retry — its request id was never used in
    /// the sale (its request filter, `request_filter.rs`, says so) — as
    /// a retry gets its order back whatever happened since. For a buyer
    /// with no order in the sale the answer is `place_order`'s, check for
    /// check; one who already holds units hears `sold_out` where the full
    /// path could say `limit_reached` or `too_many_orders` (both true,
    /// neither changes anything).
    pub fn public_refusal(
        &self,
        activity: ActivityId,
        quantity: u32,
        request_id: &str,
        now: Millis,
    ) -> Option<Reject> {
        if quantity == 0
            || quantity > QUANTITY_MAX
            || request_id.is_empty()
            || request_id.len() > REQUEST_ID_BYTES_MAX
        {
            return None;
        }
        let Some(a) = self.activity(activity) else {
            return Some(Reject::NotFound);
        };
        // The stock first (acquire): an order that took units is then
        // seen by the filter below (its key is noted before its CAS).
        let short = a.remaining() < i64::from(quantity);
        let (early, ended) = (now < a.start_at(), now >= a.end_at());
        if !(short || early || ended) || a.requests.may_hold(RequestKey::of(request_id)) {
            return None;
        }
        Some(if early {
            Reject::NotStarted
        } else if ended {
            Reject::Ended
        } else if quantity > a.per_user_limit {
            // Over the limit for a buyer holding nothing, so for anyone.
            Reject::LimitReached
        } else {
            Reject::SoldOut
        })
    }

    pub fn place_order(
        &self,
        cmd: &PlaceOrder<'_>,
        now: Millis,
        sink: &mut dyn EventSink,
    ) -> Result<Placed, Reject> {
        if cmd.quantity == 0
            || cmd.quantity > QUANTITY_MAX
            || cmd.request_id.is_empty()
            || cmd.request_id.len() > REQUEST_ID_BYTES_MAX
        {
            return Err(Reject::Invalid);
        }
        let a = self.activity(cmd.activity_id).ok_or(Reject::NotFound)?;
        let key = RequestKey::of(cmd.request_id);
        let mut stripe = self.users.lock(cmd.user_id);
        if let Some(o) = stripe.by_request(cmd.user_id, key) {
            // A retry gets its order back, whatever happened since.
            if o.activity_id != cmd.activity_id || o.quantity != cmd.quantity {
                return Err(Reject::IdempotencyConflict);
            }
            return Ok(Placed::Existing(OrderView::from(o)));
        }
        if now < a.start_at() {
            return Err(Reject::NotStarted);
        }
        if now >= a.end_at() {
            return Err(Reject::Ended);
        }
        let mine = stripe.sale(cmd.user_id, a.id);
        if u32::from(mine.held) + cmd.quantity > a.per_user_limit {
            return Err(Reject::LimitReached);
        }
        if u32::from(mine.orders) >= sale_user_orders_max(a.per_user_limit) {
            return Err(Reject::TooManyOrders);
        }
        // Cheap early no during a stampede on a sold-out sale; the CAS in
        // apply is what actually decides.
        if a.remaining() < cmd.quantity as i64 {
            return Err(Reject::SoldOut);
        }
        let ev = Event::OrderCreated {
            order_id: self.ids.next(now),
            activity_id: a.id,
            user_id: cmd.user_id,
            quantity: cmd.quantity,
            amount_cents: a.price_cents * cmd.quantity as u64,
            request_id: cmd.request_id.into(),
            created_at: now,
            expires_at: now.saturating_add(self.cfg.order_ttl_ms),
        };
        match self.apply_locked(&ev, &mut stripe, Mode::Live) {
            Ok(view) => {
                sink.emit(ev);
                Ok(Placed::Created(view))
            }
            // What a live creation can meet: each has its answer.
            Err(ApplyError::SoldOut) => Err(Reject::SoldOut),
            // The sale's creation was undone (its log write failed) after
            // this purchase looked it up.
            Err(ApplyError::Misfit(ReplayError::NoActivity { .. })) => Err(Reject::NotFound),
            Err(ApplyError::Misfit(ReplayError::StripeFull { .. })) => {
                Err(Reject::CapacityExhausted)
            }
            // Only a bug: duplicates are checked in replay only, the
            // others belong to pays, cancels, sales and snapshots. A
            // failed apply changed nothing, so in release the purchase is
            // refused as the stock race's loser is.
            Err(ApplyError::Misfit(
                e @ (ReplayError::Duplicate { .. }
                | ReplayError::UnknownOrder { .. }
                | ReplayError::BadMove { .. }
                | ReplayError::ActivityBeyondCapacity { .. }
                | ReplayError::ActivityTwice { .. }
                | ReplayError::SnapshotStripeOverfull { .. }
                | ReplayError::SnapshotIntoNonEmpty
                | ReplayError::SnapshotActivityBeyondCapacity { .. }
                | ReplayError::SnapshotActivityTwice { .. }
                | ReplayError::UnknownSale { .. }),
            )) => {
                debug_assert!(false, "a live creation cannot meet {e:?}");
                Err(Reject::SoldOut)
            }
        }
    }

    pub fn pay(
        &self,
        user: UserId,
        order: OrderId,
        now: Millis,
        sink: &mut dyn EventSink,
    ) -> Result<OrderView, Reject> {
        let mut stripe = self.users.lock(user);
        let o = stripe.order_mut(user, order).ok_or(Reject::NotFound)?;
        match o.status {
            OrderStatus::Paid => return Ok(OrderView::from(&*o)),
            OrderStatus::Cancelled => return Err(Reject::BadTransition),
            OrderStatus::Created => {}
        }
        let (activity_id, quantity, expires_at) = (o.activity_id, o.quantity, o.expires_at);
        if now >= expires_at {
            // Too late to pay: the timeout wins, even if the sweeper has not
            // got to this order yet.
            let ev = Event::OrderCancelled {
                order_id: order,
                activity_id,
                user_id: user,
                quantity,
                reason: CancelReason::Timeout,
                at: now,
            };
            self.apply_locked(&ev, &mut stripe, Mode::Live)
                .expect("cancel of a created order applies");
            sink.emit(ev);
            return Err(Reject::Expired);
        }
        let ev = Event::OrderPaid {
            order_id: order,
            activity_id,
            user_id: user,
            quantity,
            at: now,
        };
        let view = self
            .apply_locked(&ev, &mut stripe, Mode::Live)
            .expect("pay of a created order applies");
        sink.emit(ev);
        Ok(view)
    }

    pub fn cancel(
        &self,
        user: UserId,
        order: OrderId,
        now: Millis,
        sink: &mut dyn EventSink,
    ) -> Result<OrderView, Reject> {
        let mut stripe = self.users.lock(user);
        let o = stripe.order_mut(user, order).ok_or(Reject::NotFound)?;
        match o.status {
            OrderStatus::Cancelled => return Ok(OrderView::from(&*o)),
            OrderStatus::Paid => return Err(Reject::BadTransition),
            OrderStatus::Created => {}
        }
        let ev = Event::OrderCancelled {
            order_id: order,
            activity_id: o.activity_id,
            user_id: user,
            quantity: o.quantity,
            reason: CancelReason::User,
            at: now,
        };
        let view = self
            .apply_locked(&ev, &mut stripe, Mode::Live)
            .expect("cancel of a created order applies");
        sink.emit(ev);
        Ok(view)
    }

    /// Cancel unpaid orders whose deadline is at or before `now` (at most
    /// `limit` of them, so a caller can bound what it emits), returning
    /// their units to stock. Returns how many were cancelled.
    pub fn expire_due(&self, now: Millis, limit: usize, sink: &mut dyn EventSink) -> usize {
        let mut n = 0;
        for s in self.users.stripes() {
            if n >= limit {
                break;
            }
            let mut stripe = s.lock();
            while let Some(Reverse((at, user, order))) = stripe.expiries.peek().copied() {
                if at > now || n >= limit {
                    break;
                }
                stripe.expiries.pop();
                let Some(o) = stripe.order_mut(user, order) else {
                    continue;
                };
                if o.status != OrderStatus::Created {
                    continue;
                }
                let ev = Event::OrderCancelled {
                    order_id: order,
                    activity_id: o.activity_id,
                    user_id: user,
                    quantity: o.quantity,
                    reason: CancelReason::Timeout,
                    at: now,
                };
                self.apply_locked(&ev, &mut stripe, Mode::Live)
                    .expect("cancel of a created order applies");
                sink.emit(ev);
                n += 1;
            }
        }
        n
    }

    pub fn order(&self, user: UserId, order: OrderId) -> Option<OrderView> {
        let stripe = self.users.lock(user);
        stripe
            .find(user, order)
            .map(|i| OrderView::from(&stripe.orders[i]))
    }
}
