//! The engine: commands in, decisions and events out.
//!
//! Every command takes the caller's `now` and an [`EventSink`]. A command
//! first checks (window, idempotency, limit, stock), then builds the event
//! and hands it to [`Engine::apply_locked`], the one function that changes
//! state, while holding the buyer's stripe lock; only if that succeeds is
//! the event emitted. Replay feeds logged events to [`Engine::apply`], which
//! runs the same function.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::activity::{Activity, ActivityView};
use crate::event::{Event, EventSink};
use crate::ids::{OrderIdGen, MAX_NODE_ID};
use crate::types::*;
use crate::users::{Order, RequestKey, Stripe, Users, USER_STRIPES};

/// Largest quantity one order may ask for; beyond is a malformed request.
pub const MAX_QUANTITY: u32 = 1_000;
pub const MAX_PER_USER_LIMIT: u32 = 1_000;
pub const MAX_STOCK: u64 = 1_000_000_000;
pub const MAX_PRICE_CENTS: u64 = 1_000_000_000_000;
pub const MAX_NAME_BYTES: usize = 200;
pub const MAX_SKU_BYTES: usize = 64;
pub const MAX_REQUEST_ID_BYTES: usize = 64;

const _: () = assert!(MAX_QUANTITY as u64 * MAX_PRICE_CENTS < u64::MAX / 2);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's id, stamped into every order id (0..=1023).
    pub node_id: u16,
    /// Unpaid orders are cancelled this long after creation.
    pub order_ttl_ms: u64,
    /// Sales this node can hold (slots are allocated up front).
    pub max_activities: u32,
    /// With a log attached: units of a cancelled order go back on sale only
    /// when the caller reports the cancel durable ([`Engine::durable`]).
    /// Without one (tests, a log-less engine): at once.
    pub hold_released_until_durable: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node_id: 0,
            order_ttl_ms: 15 * 60 * 1000,
            max_activities: 4096,
            hold_released_until_durable: false,
        }
    }
}

/// What an admin asks for when opening a sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivitySpec {
    pub sku_id: String,
    pub name: String,
    pub price_cents: u64,
    pub stock: u64,
    pub start_at: Millis,
    pub end_at: Millis,
    pub per_user_limit: u32,
}

impl ActivitySpec {
    /// `Err((field, message))` for the first field out of bounds.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.sku_id.is_empty() || self.sku_id.len() > MAX_SKU_BYTES {
            return Err(("sku_id", "must be 1 to 64 bytes"));
        }
        if self.name.is_empty() || self.name.len() > MAX_NAME_BYTES {
            return Err(("name", "must be 1 to 200 bytes"));
        }
        if self.price_cents > MAX_PRICE_CENTS {
            return Err(("price_cents", "must be at most 10^12"));
        }
        if self.stock == 0 || self.stock > MAX_STOCK {
            return Err(("stock", "must be between 1 and 10^9"));
        }
        if self.end_at <= self.start_at {
            return Err(("end_at", "must be after start_at"));
        }
        if self.per_user_limit == 0 || self.per_user_limit > MAX_PER_USER_LIMIT {
            return Err(("per_user_limit", "must be between 1 and 1000"));
        }
        Ok(())
    }
}

/// An order as answered to its owner. `Copy`, so it can travel through
/// completion rings without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderView {
    pub id: OrderId,
    pub activity_id: ActivityId,
    pub user_id: UserId,
    pub quantity: u32,
    pub amount_cents: u64,
    pub status: OrderStatus,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub updated_at: Millis,
    pub cancel_reason: Option<CancelReason>,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            id: o.id,
            activity_id: o.activity_id,
            user_id: o.user_id,
            quantity: o.quantity,
            amount_cents: o.amount_cents,
            status: o.status,
            created_at: o.created_at,
            expires_at: o.expires_at,
            updated_at: o.updated_at,
            cancel_reason: o.cancel_reason,
        }
    }
}

/// Result of a purchase that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A new order (HTTP 201).
    Created(OrderView),
    /// The same request id was seen before: that order (HTTP 200).
    Existing(OrderView),
}

/// A purchase.
#[derive(Debug, Clone, Copy)]
pub struct PlaceOrder<'a> {
    pub activity_id: ActivityId,
    pub user_id: UserId,
    pub quantity: u32,
    pub request_id: &'a str,
}

/// A logged event that does not fit the state it is applied to: the log is
/// not this engine's history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event does not apply: {0}")]
pub struct ReplayError(pub String);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Live command: the stock CAS may fail (another buyer won the unit).
    Live,
    /// Replay of the log: counters are applied as logged.
    Replay,
}

pub struct Engine {
    cfg: EngineConfig,
    activities: Box<[OnceLock<Activity>]>,
    /// Serialises sale creation (rare) so ids are dense and in log order.
    next_activity: Mutex<ActivityId>,
    users: Users,
    ids: OrderIdGen,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        assert!(cfg.node_id <= MAX_NODE_ID, "node id out of range");
        Engine {
            activities: (0..cfg.max_activities).map(|_| OnceLock::new()).collect(),
            next_activity: Mutex::new(1),
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
    fn activity_any(&self, id: ActivityId) -> Option<&Activity> {
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
        self.install_activity(&ev, &mut next)
            .map_err(|_| Reject::CapacityExhausted)?;
        let view = self
            .activity_any(*next - 1)
            .expect("just installed")
            .view(now);
        sink.emit(ev);
        Ok(view)
    }

    pub fn place_order(
        &self,
        cmd: &PlaceOrder<'_>,
        now: Millis,
        sink: &mut dyn EventSink,
    ) -> Result<Placed, Reject> {
        if cmd.quantity == 0
            || cmd.quantity > MAX_QUANTITY
            || cmd.request_id.is_empty()
            || cmd.request_id.len() > MAX_REQUEST_ID_BYTES
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
        if now < a.start_at {
            return Err(Reject::NotStarted);
        }
        if now >= a.end_at {
            return Err(Reject::Ended);
        }
        let held = stripe.held(cmd.user_id, a.id);
        if held + cmd.quantity > a.per_user_limit {
            return Err(Reject::LimitReached);
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
            Err(_) => Err(Reject::SoldOut),
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

    /// Apply one logged event (replay). Order matters only per user, which
    /// is the order the log keeps.
    pub fn apply(&self, ev: &Event) -> Result<(), ReplayError> {
        match ev {
            Event::ActivityCreated { .. } => {
                let mut next = self.next_activity.lock();
                self.install_activity(ev, &mut next)
            }
            Event::OrderCreated { user_id, .. }
            | Event::OrderPaid { user_id, .. }
            | Event::OrderCancelled { user_id, .. } => {
                let mut stripe = self.users.lock(*user_id);
                self.apply_locked(ev, &mut stripe, Mode::Replay).map(|_| ())
            }
        }
    }

    /// Apply a run of logged events (replay) on every core. Equivalent to
    /// [`Engine::apply`] on each in order: sales are created first (an
    /// order never precedes its sale in the log, and creating a sale
    /// depends on nothing else), then each thread applies, in log order,
    /// the events of the users in its share of the stripes. Only one
    /// user's events are ordered with respect to each other, and the sale
    /// counters they touch are commutative in replay. On failure, the
    /// failing event's LSN.
    pub fn apply_batch(&self, events: &[(u64, Event)]) -> Result<(), (u64, ReplayError)> {
        for (lsn, ev) in events {
            if matches!(ev, Event::ActivityCreated { .. }) {
                self.apply(ev).map_err(|e| (*lsn, e))?;
            }
        }
        let threads = if events.len() >= 10_000 {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
        } else {
            1
        };
        let share = |t: usize| USER_STRIPES * t / threads..USER_STRIPES * (t + 1) / threads;
        let run = |stripes: std::ops::Range<usize>| -> Result<(), (u64, ReplayError)> {
            for (lsn, ev) in events {
                let user = match ev {
                    Event::ActivityCreated { .. } => continue,
                    Event::OrderCreated { user_id, .. }
                    | Event::OrderPaid { user_id, .. }
                    | Event::OrderCancelled { user_id, .. } => *user_id,
                };
                if stripes.contains(&Users::stripe_of(user)) {
                    self.apply(ev).map_err(|e| (*lsn, e))?;
                }
            }
            Ok(())
        };
        if threads == 1 {
            return run(0..USER_STRIPES);
        }
        let results: Vec<Result<(), (u64, ReplayError)>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let (run, range) = (&run, share(t));
                    sc.spawn(move || run(range))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("replay thread panicked"))
                .collect()
        });
        // The earliest failure in the log, whichever thread met it.
        results
            .into_iter()
            .filter_map(Result::err)
            .min_by_key(|(lsn, _)| *lsn)
            .map_or(Ok(()), Err)
    }

    fn install_activity(&self, ev: &Event, next: &mut ActivityId) -> Result<(), ReplayError> {
        let Event::ActivityCreated {
            id,
            sku_id,
            name,
            price_cents,
            stock,
            start_at,
            end_at,
            per_user_limit,
            created_at,
        } = ev
        else {
            unreachable!("install_activity takes ActivityCreated");
        };
        // Increasing, not necessarily dense: a creation that failed to
        // become durable leaves its id unused.
        if *id < *next {
            return Err(ReplayError(format!(
                "activity {id} created out of order (next is {next})"
            )));
        }
        let slot = self
            .activities
            .get(*id as usize - 1)
            .ok_or_else(|| ReplayError(format!("activity {id} beyond engine.max_activities")))?;
        let spec = ActivitySpec {
            sku_id: sku_id.clone(),
            name: name.clone(),
            price_cents: *price_cents,
            stock: *stock,
            start_at: *start_at,
            end_at: *end_at,
            per_user_limit: *per_user_limit,
        };
        slot.set(Activity::new(*id, spec, *created_at))
            .map_err(|_| ReplayError(format!("activity {id} created twice")))?;
        *next = *id + 1;
        Ok(())
    }

    /// The one place order state changes. Called with the user's stripe
    /// locked. In `Live` mode a create fails (changing nothing) if the stock
    /// CAS loses; every other failure is a bug in the caller (live) or a log
    /// that is not ours (replay).
    fn apply_locked(
        &self,
        ev: &Event,
        stripe: &mut Stripe,
        mode: Mode,
    ) -> Result<OrderView, ReplayError> {
        match ev {
            Event::ActivityCreated { .. } => {
                unreachable!("activities are installed, not applied under a user lock")
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
                let a = self.activity(*activity_id).ok_or_else(|| {
                    ReplayError(format!("order {order_id}: no activity {activity_id}"))
                })?;
                // Refused before any counter moves: a failed apply changes
                // nothing.
                let key = RequestKey::of(request_id);
                if mode == Mode::Replay
                    && stripe.chain(*user_id).any(|i| {
                        let o = &stripe.orders[i];
                        o.id == *order_id || o.request_key == key
                    })
                {
                    return Err(ReplayError(format!(
                        "order {order_id} or its request id seen twice"
                    )));
                }
                if mode == Mode::Live {
                    if !a.try_take(*quantity) {
                        return Err(ReplayError("sold out".into()));
                    }
                } else {
                    a.remaining.fetch_sub(*quantity as i64, Ordering::AcqRel);
                }
                a.reserved.fetch_add(*quantity as i64, Ordering::AcqRel);
                let order = Order {
                    id: *order_id,
                    activity_id: *activity_id,
                    user_id: *user_id,
                    quantity: *quantity,
                    amount_cents: *amount_cents,
                    status: OrderStatus::Created,
                    request_key: key,
                    created_at: *created_at,
                    expires_at: *expires_at,
                    updated_at: *created_at,
                    cancel_reason: None,
                };
                let view = OrderView::from(&order);
                stripe.push_order(order);
                stripe
                    .expiries
                    .push(Reverse((*expires_at, *user_id, *order_id)));
                self.ids.observe(*order_id);
                Ok(view)
            }
            Event::OrderPaid {
                order_id,
                activity_id,
                user_id,
                quantity,
                at,
            } => {
                let a = self.activity(*activity_id).ok_or_else(|| {
                    ReplayError(format!("order {order_id}: no activity {activity_id}"))
                })?;
                let o = stripe
                    .order_mut(*user_id, *order_id)
                    .ok_or_else(|| ReplayError(format!("paid order {order_id} unknown")))?;
                if o.status != OrderStatus::Created || o.quantity != *quantity {
                    return Err(ReplayError(format!(
                        "order {order_id} paid from {:?}",
                        o.status
                    )));
                }
                o.status = OrderStatus::Paid;
                o.updated_at = *at;
                // Reserved first, then sold: the sum never exceeds stock.
                a.reserved.fetch_sub(*quantity as i64, Ordering::AcqRel);
                a.sold.fetch_add(*quantity as i64, Ordering::AcqRel);
                Ok(OrderView::from(&*o))
            }
            Event::OrderCancelled {
                order_id,
                activity_id,
                user_id,
                quantity,
                reason,
                at,
            } => {
                let a = self.activity(*activity_id).ok_or_else(|| {
                    ReplayError(format!("order {order_id}: no activity {activity_id}"))
                })?;
                let o = stripe
                    .order_mut(*user_id, *order_id)
                    .ok_or_else(|| ReplayError(format!("cancelled order {order_id} unknown")))?;
                if o.status != OrderStatus::Created || o.quantity != *quantity {
                    return Err(ReplayError(format!(
                        "order {order_id} cancelled from {:?}",
                        o.status
                    )));
                }
                o.status = OrderStatus::Cancelled;
                o.updated_at = *at;
                o.cancel_reason = Some(*reason);
                let view = OrderView::from(&*o);
                a.reserved.fetch_sub(*quantity as i64, Ordering::AcqRel);
                if mode == Mode::Live && self.cfg.hold_released_until_durable {
                    a.releasing.fetch_add(*quantity as i64, Ordering::AcqRel);
                } else {
                    a.remaining.fetch_add(*quantity as i64, Ordering::AcqRel);
                }
                Ok(view)
            }
        }
    }

    /// The log holds `ev` now: finish what waited for that (units of a
    /// cancelled order go back on sale).
    pub fn durable(&self, ev: &Event) {
        if !self.cfg.hold_released_until_durable {
            return;
        }
        if let Event::OrderCancelled {
            activity_id,
            quantity,
            ..
        } = ev
        {
            if let Some(a) = self.activity_any(*activity_id) {
                a.releasing.fetch_sub(*quantity as i64, Ordering::AcqRel);
                a.remaining.fetch_add(*quantity as i64, Ordering::AcqRel);
            }
        }
    }

    /// Undo a live event the log could not make durable. Events may be
    /// reverted in any order: undoing a creation removes the order and
    /// returns its units wherever they are, and undoing a later move of an
    /// order that is already gone does nothing.
    pub fn revert(&self, ev: &Event) {
        self.revert_in(ev, Mode::Live)
    }

    /// Undo a replayed event (an abort record in the log). Replayed
    /// cancels put their units straight back on sale (nothing waits for
    /// durability during replay), so that is where undoing takes them from.
    pub fn revert_replayed(&self, ev: &Event) {
        self.revert_in(ev, Mode::Replay)
    }

    fn revert_in(&self, ev: &Event, mode: Mode) {
        let parked = mode == Mode::Live && self.cfg.hold_released_until_durable;
        match ev {
            Event::ActivityCreated { id, .. } => {
                // Slots are write-once: the sale becomes a tombstone that
                // nobody can see or buy from; its id is not reused.
                if let Some(a) = self.activity_any(*id) {
                    a.void.store(true, Ordering::Release);
                }
            }
            Event::OrderCreated {
                order_id,
                activity_id,
                user_id,
                ..
            } => {
                let Some(a) = self.activity_any(*activity_id) else {
                    return;
                };
                let mut stripe = self.users.lock(*user_id);
                let Some(o) = stripe.remove_order(*user_id, *order_id) else {
                    return;
                };
                let q = o.quantity as i64;
                match o.status {
                    OrderStatus::Created => {
                        a.reserved.fetch_sub(q, Ordering::AcqRel);
                    }
                    OrderStatus::Paid => {
                        a.sold.fetch_sub(q, Ordering::AcqRel);
                    }
                    // Its cancel cannot be durable (it came after this
                    // creation), so the units are still parked.
                    OrderStatus::Cancelled => {
                        if parked {
                            a.releasing.fetch_sub(q, Ordering::AcqRel);
                        } else {
                            a.remaining.fetch_sub(q, Ordering::AcqRel);
                        }
                    }
                }
                a.remaining.fetch_add(q, Ordering::AcqRel);
            }
            Event::OrderPaid {
                order_id,
                activity_id,
                user_id,
                quantity,
                ..
            } => {
                let Some(a) = self.activity_any(*activity_id) else {
                    return;
                };
                let mut stripe = self.users.lock(*user_id);
                let Some(o) = stripe.order_mut(*user_id, *order_id) else {
                    return;
                };
                if o.status == OrderStatus::Paid {
                    o.status = OrderStatus::Created;
                    // CREATED is only ever left once: it was last updated
                    // when it was created.
                    o.updated_at = o.created_at;
                    a.sold.fetch_sub(*quantity as i64, Ordering::AcqRel);
                    a.reserved.fetch_add(*quantity as i64, Ordering::AcqRel);
                }
            }
            Event::OrderCancelled {
                order_id,
                activity_id,
                user_id,
                quantity,
                ..
            } => {
                let Some(a) = self.activity_any(*activity_id) else {
                    return;
                };
                let mut stripe = self.users.lock(*user_id);
                let Some(i) = stripe.find(*user_id, *order_id) else {
                    return;
                };
                let Stripe {
                    orders, expiries, ..
                } = &mut *stripe;
                let o = &mut orders[i];
                if o.status == OrderStatus::Cancelled {
                    o.status = OrderStatus::Created;
                    // CREATED is only ever left once: it was last updated
                    // when it was created.
                    o.updated_at = o.created_at;
                    o.cancel_reason = None;
                    let expires_at = o.expires_at;
                    if parked {
                        a.releasing.fetch_sub(*quantity as i64, Ordering::AcqRel);
                    } else {
                        a.remaining.fetch_sub(*quantity as i64, Ordering::AcqRel);
                    }
                    a.reserved.fetch_add(*quantity as i64, Ordering::AcqRel);
                    // Back on the payment clock.
                    expiries.push(Reverse((expires_at, *user_id, *order_id)));
                }
            }
        }
    }

    /// Every invariant of the design, checked over the whole state. For
    /// tests and for recovery; takes every stripe lock in turn. Stripes are
    /// walked by several threads at once when there are many users: at
    /// start-up this runs over millions of them before flashd is ready.
    pub fn check_invariants(&self) -> Result<(), String> {
        let users: usize = self
            .users
            .stripes()
            .iter()
            .map(|s| s.lock().users.len())
            .sum();
        let threads = if users >= 100_000 {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
        } else {
            1
        };
        let parts = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let range = USER_STRIPES * t / threads..USER_STRIPES * (t + 1) / threads;
                    sc.spawn(move || self.check_stripes(range))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("invariant checker panicked"))
                .collect::<Vec<_>>()
        });
        let mut held_per_activity = vec![0u64; self.activities.len() + 1];
        let mut sorted_ids: Vec<Vec<OrderId>> = Vec::new();
        for part in parts {
            let (held, part_ids) = part?;
            for (sum, h) in held_per_activity.iter_mut().zip(held) {
                *sum += h;
            }
            sorted_ids.push(part_ids);
        }
        // Each thread sorted its own ids; one merge pass finds a duplicate
        // within or across them.
        if let Some(id) = first_duplicate(&sorted_ids) {
            return Err(format!("order id {id} twice"));
        }
        for a in self.activities() {
            let (r, s, v) = a.counters();
            let l = a.releasing();
            if r < 0 || s < 0 || v < 0 || l < 0 {
                return Err(format!(
                    "activity {}: negative counter r={r} s={s} v={v} l={l}",
                    a.id
                ));
            }
            if (s + v) as u64 > a.stock || (r + s + v + l) as u64 != a.stock {
                return Err(format!(
                    "activity {}: remaining {r} + sold {s} + reserved {v} + releasing {l} != stock {}",
                    a.id, a.stock
                ));
            }
            if held_per_activity[a.id as usize] != (s + v) as u64 {
                return Err(format!(
                    "activity {}: users hold {} but sold+reserved is {}",
                    a.id,
                    held_per_activity[a.id as usize],
                    s + v
                ));
            }
        }
        Ok(())
    }

    /// The per-user half of [`Engine::check_invariants`] over some stripes:
    /// units held per sale, and every order id seen.
    #[allow(clippy::type_complexity)]
    fn check_stripes(
        &self,
        range: std::ops::Range<usize>,
    ) -> Result<(Vec<u64>, Vec<OrderId>), String> {
        let mut held_per_activity = vec![0u64; self.activities.len() + 1];
        let mut ids: Vec<OrderId> = Vec::new();
        for s in &self.users.stripes()[range] {
            let stripe = s.lock();
            if stripe.next.len() != stripe.orders.len() {
                return Err("a stripe's order links and orders differ in length".into());
            }
            // Ids first, in arena order: a sequential pass that also brings
            // the stripe's orders into cache for the per-user walk below,
            // whose jumps along chains would otherwise each miss (a third
            // of start-up on millions of orders).
            ids.extend(stripe.orders.iter().map(|o| o.id));
            let mut reached = 0usize;
            for (uid, u) in &stripe.users {
                // Units per sale, from the user's live orders: what the
                // per-user limit is checked against.
                let mut live: smallvec::SmallVec<[(ActivityId, u32); 2]> = Default::default();
                for i in stripe.chain_from(u.head) {
                    let o = &stripe.orders[i];
                    reached += 1;
                    if reached > stripe.orders.len() {
                        return Err(format!("user {uid}'s chain of orders loops"));
                    }
                    if o.user_id != *uid {
                        return Err(format!(
                            "order {} of user {} is in user {uid}'s chain",
                            o.id, o.user_id
                        ));
                    }
                    if o.status != OrderStatus::Cancelled {
                        match live.iter_mut().find(|(a, _)| *a == o.activity_id) {
                            Some((_, n)) => *n += o.quantity,
                            None => live.push((o.activity_id, o.quantity)),
                        }
                    }
                    // A user has a handful of orders: pairwise beats a set.
                    if stripe
                        .chain_from(stripe.next[i])
                        .any(|j| stripe.orders[j].request_key == o.request_key)
                    {
                        return Err(format!("user {uid} has one request id on two orders"));
                    }
                }
                for &(aid, n) in &live {
                    let a = self.activity_any(aid).ok_or_else(|| {
                        format!("user {uid} holds units of unknown activity {aid}")
                    })?;
                    if n > a.per_user_limit {
                        return Err(format!(
                            "user {uid} holds {n} of activity {aid}, limit {}",
                            a.per_user_limit
                        ));
                    }
                    held_per_activity[aid as usize] += n as u64;
                }
            }
            if reached != stripe.orders.len() {
                return Err(format!(
                    "{} orders of a stripe belong to no user's chain",
                    stripe.orders.len() - reached
                ));
            }
        }
        // Order ids are checked for uniqueness by sorting, not hashing: a
        // radix sort of plain u64s is many times cheaper than a hash set.
        radix_sort(&mut ids);
        Ok((held_per_activity, ids))
    }

    /// The whole state in a canonical order, for comparing two engines
    /// (replay tests, snapshots).
    pub fn dump(&self) -> EngineDump {
        let activities = self
            .activities()
            .map(|a| {
                let (r, s, v) = a.counters();
                (
                    a.id,
                    a.sku_id.clone(),
                    a.name.clone(),
                    a.price_cents,
                    a.stock,
                    a.start_at,
                    a.end_at,
                    a.per_user_limit,
                    r,
                    s,
                    v,
                )
            })
            .collect();
        let mut orders = Vec::new();
        for s in self.users.stripes() {
            let stripe = s.lock();
            orders.extend(stripe.orders.iter().cloned());
        }
        orders.sort_by_key(|o| o.id);
        EngineDump { activities, orders }
    }
}

/// LSD radix sort, 11-bit digits. A pass whose digit is the same in every
/// key is skipped: order ids share their node bits and, within a sale,
/// most of their time bits, so millions of them sort in three or four
/// linear passes (3x faster than `sort_unstable` at start-up).
fn radix_sort(v: &mut Vec<u64>) {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    const PASSES: usize = 64usize.div_ceil(BITS as usize);
    if v.len() < 1 << 12 {
        v.sort_unstable();
        return;
    }
    let mut hist = vec![[0usize; BUCKETS]; PASSES];
    for &x in v.iter() {
        for (p, h) in hist.iter_mut().enumerate() {
            h[((x >> (p as u32 * BITS)) as usize) & (BUCKETS - 1)] += 1;
        }
    }
    let mut buf = vec![0u64; v.len()];
    for (p, h) in hist.iter_mut().enumerate() {
        if h.contains(&v.len()) {
            continue;
        }
        let mut sum = 0;
        for c in h.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        let shift = p as u32 * BITS;
        for &x in v.iter() {
            let d = ((x >> shift) as usize) & (BUCKETS - 1);
            buf[h[d]] = x;
            h[d] += 1;
        }
        std::mem::swap(v, &mut buf);
    }
}

/// The smallest id present twice in sorted lists (within one list or
/// across them), by a k-way merge.
fn first_duplicate(lists: &[Vec<OrderId>]) -> Option<OrderId> {
    let mut heap: BinaryHeap<Reverse<(OrderId, usize, usize)>> = lists
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(k, l)| Reverse((l[0], k, 0)))
        .collect();
    let mut last = None;
    while let Some(Reverse((id, k, i))) = heap.pop() {
        if last == Some(id) {
            return Some(id);
        }
        last = Some(id);
        if let Some(&next) = lists[k].get(i + 1) {
            heap.push(Reverse((next, k, i + 1)));
        }
    }
    None
}

type ActivityRow = (
    ActivityId,
    String,
    String,
    u64,
    u64,
    Millis,
    Millis,
    u32,
    i64,
    i64,
    i64,
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineDump {
    pub activities: Vec<ActivityRow>,
    pub orders: Vec<Order>,
}

/// One sale in a snapshot: its spec, its counters, whether it is void.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivitySnapshot {
    pub id: ActivityId,
    pub spec: ActivitySpec,
    pub created_at: Millis,
    pub remaining: i64,
    pub sold: i64,
    pub reserved: i64,
    pub void: bool,
}

/// The whole state, as a snapshot stores it. Only taken from an engine that
/// no one else mutates (the snapshotter's follower), so it is consistent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineSnapshot {
    pub next_activity: ActivityId,
    pub last_order_id: OrderId,
    pub activities: Vec<ActivitySnapshot>,
    pub orders: Vec<Order>,
}

impl Engine {
    pub fn export(&self) -> EngineSnapshot {
        let activities = self
            .activities
            .iter()
            .filter_map(|a| a.get())
            .map(|a| {
                let (remaining, sold, reserved) = a.counters();
                ActivitySnapshot {
                    id: a.id,
                    spec: ActivitySpec {
                        sku_id: a.sku_id.clone(),
                        name: a.name.clone(),
                        price_cents: a.price_cents,
                        stock: a.stock,
                        start_at: a.start_at,
                        end_at: a.end_at,
                        per_user_limit: a.per_user_limit,
                    },
                    created_at: a.created_at,
                    // A follower applies cancels whole: nothing is parked.
                    remaining: remaining + a.releasing(),
                    sold,
                    reserved,
                    void: a.void.load(Ordering::Acquire),
                }
            })
            .collect();
        let mut orders = Vec::new();
        for s in self.users.stripes() {
            let stripe = s.lock();
            orders.extend(stripe.orders.iter().cloned());
        }
        // Canonical order, grouped by stripe and user: loading it then
        // fills one stripe's map at a time, in cache, instead of jumping
        // between all of them (4x faster start-up on millions of orders).
        orders.sort_unstable_by_key(|o| (Users::stripe_of(o.user_id), o.user_id, o.id));
        EngineSnapshot {
            next_activity: *self.next_activity.lock(),
            last_order_id: self.ids.last(),
            activities,
            orders,
        }
    }

    /// Load a snapshot into this (empty) engine.
    pub fn load(&self, snap: &EngineSnapshot) -> Result<(), ReplayError> {
        let mut counts = vec![0u32; USER_STRIPES];
        for o in &snap.orders {
            counts[Users::stripe_of(o.user_id)] += 1;
        }
        self.begin_load(snap, Some(&counts))?;
        // Snapshots list orders grouped by stripe (see `export`), so each
        // thread can take whole stripes: no lock is ever contended and
        // start-up on millions of orders scales with the cores. A snapshot
        // in another order (an older writer) loads on one thread.
        let orders = &snap.orders[..];
        let grouped = orders.is_sorted_by_key(|o| Users::stripe_of(o.user_id));
        let threads = if grouped && orders.len() >= 100_000 {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
        } else {
            1
        };
        std::thread::scope(|sc| {
            let bounds: Vec<usize> = (0..=threads)
                .map(|t| {
                    let stripe = USER_STRIPES * t / threads;
                    orders.partition_point(|o| Users::stripe_of(o.user_id) < stripe)
                })
                .collect();
            let parts: Vec<&[Order]> = if threads == 1 {
                vec![orders]
            } else {
                bounds.windows(2).map(|w| &orders[w[0]..w[1]]).collect()
            };
            for part in parts {
                sc.spawn(move || self.load_orders_part(part));
            }
        });
        self.finish_load();
        Ok(())
    }

    /// First step of loading a snapshot whose orders arrive in parts (a
    /// reader decoding blocks on several threads straight into the engine,
    /// with no copy of all orders in between): install the sales and the
    /// id generator from `meta` (its `orders` are ignored) and size each
    /// stripe for `stripe_orders[i]` orders, if known. Then call
    /// [`Engine::load_orders_part`] from any threads, then
    /// [`Engine::finish_load`].
    pub fn begin_load(
        &self,
        meta: &EngineSnapshot,
        stripe_orders: Option<&[u32]>,
    ) -> Result<(), ReplayError> {
        let mut next = self.next_activity.lock();
        if *next != 1 || self.activities().next().is_some() {
            return Err(ReplayError(
                "snapshot loaded into a non-empty engine".into(),
            ));
        }
        for a in &meta.activities {
            let slot = self
                .activities
                .get((a.id as usize).wrapping_sub(1))
                .ok_or_else(|| {
                    ReplayError(format!(
                        "snapshot activity {} beyond engine.max_activities",
                        a.id
                    ))
                })?;
            let act = Activity::new(a.id, a.spec.clone(), a.created_at);
            act.remaining.store(a.remaining, Ordering::Release);
            act.sold.store(a.sold, Ordering::Release);
            act.reserved.store(a.reserved, Ordering::Release);
            act.void.store(a.void, Ordering::Release);
            slot.set(act)
                .map_err(|_| ReplayError(format!("snapshot activity {} twice", a.id)))?;
        }
        *next = meta.next_activity.max(1);
        drop(next);
        self.ids.observe(meta.last_order_id);
        // An eighth more room than the snapshot needs: the log's tail is
        // replayed next and brings new buyers, and a map that grows then
        // rehashes every stripe during start-up (most of the tail's cost).
        if let Some(counts) = stripe_orders.filter(|c| c.len() == USER_STRIPES) {
            for (s, &n) in self.users.stripes().iter().zip(counts) {
                let n = n as usize;
                if n > 0 {
                    let room = n + n / 8;
                    let mut s = s.lock();
                    s.users.reserve(room);
                    s.orders.reserve(room);
                    s.next.reserve(room);
                    s.loading_due.reserve(n);
                }
            }
        }
        Ok(())
    }

    /// Install snapshot orders into their stripes. Safe from any number of
    /// threads at once; fastest when `orders` holds whole runs of one
    /// stripe (a snapshot is written grouped by stripe), as each run takes
    /// its stripe's lock once.
    pub fn load_orders_part(&self, orders: &[Order]) {
        let stripes = self.users.stripes();
        let mut rest = orders;
        while let Some(first) = rest.first() {
            let i = Users::stripe_of(first.user_id);
            let run = rest
                .iter()
                .position(|o| Users::stripe_of(o.user_id) != i)
                .unwrap_or(rest.len());
            let mut stripe = stripes[i].lock();
            for o in &rest[..run] {
                stripe.push_order(*o);
                if o.status == OrderStatus::Created {
                    stripe
                        .loading_due
                        .push(Reverse((o.expires_at, o.user_id, o.id)));
                }
            }
            rest = &rest[run..];
        }
    }

    /// Last step of a load: each stripe's expiry heap built in one O(n)
    /// heapify rather than sifted order by order.
    pub fn finish_load(&self) {
        for s in self.users.stripes() {
            let mut stripe = s.lock();
            if !stripe.loading_due.is_empty() {
                let mut due = std::mem::take(&mut stripe.loading_due);
                due.extend(std::mem::take(&mut stripe.expiries).into_vec());
                stripe.expiries = BinaryHeap::from(due);
            }
        }
    }

    /// The stripe a user's state lives in (snapshots group orders by it).
    pub fn stripe_of(user: UserId) -> usize {
        Users::stripe_of(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_sort_matches_the_standard_sort() {
        // xorshift: random keys, keys sharing their high bits (as order ids
        // do), duplicates, and lengths on both sides of the small cut-off.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (n, mask, base) in [
            (10, u64::MAX, 0),
            (5000, u64::MAX, 0),
            (100_000, u64::MAX, 0),
            (100_000, (1 << 30) - 1, 7 << 50),
            (50_000, 0xff, 0),
            (8192, 0, 42),
        ] {
            let v: Vec<u64> = (0..n).map(|_| base | (rnd() & mask)).collect();
            let mut a = v.clone();
            let mut b = v;
            radix_sort(&mut a);
            b.sort_unstable();
            assert_eq!(a, b, "n={n} mask={mask:x}");
        }
    }

    #[test]
    fn duplicates_are_found_within_and_across_lists() {
        assert_eq!(first_duplicate(&[vec![1, 3, 5], vec![2, 4, 6]]), None);
        assert_eq!(first_duplicate(&[vec![1, 3, 5], vec![2, 3, 6]]), Some(3));
        assert_eq!(first_duplicate(&[vec![1, 1], vec![]]), Some(1));
        assert_eq!(first_duplicate(&[]), None);
    }
}
