//! The engine: commands in, decisions and events out.
//!
//! Every command takes the caller's `now` and an [`EventSink`]. A command
//! first checks (window, idempotency, limit, stock), then builds the event
//! and hands it to [`Engine::apply_locked`], the one function that changes
//! state, while holding the buyer's stripe lock; only if that succeeds is
//! the event emitted. Replay feeds logged events to [`Engine::apply`], which
//! runs the same function.

use std::cmp::Reverse;
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

/// Orders a buyer may create in one sale beyond its `per_user_limit`:
/// second chances after cancelling or letting an order time out (a
/// changed quantity, a failed card). A real buyer needs a few; a script
/// looping create→cancel needs unbounded ones, and every order stays in
/// memory (~160 bytes) for the life of the sale, so this bounds what one
/// buyer's churn can cost: (limit + 16) orders per sale, ~3 KB at a limit
/// of 1 and ~165 KB at the largest limit.
pub const EXTRA_ORDERS_PER_USER_PER_SALE: u32 = 16;

/// Orders one buyer may create in a sale with `per_user_limit`, whatever
/// became of them: the limit taken one unit per order, plus
/// [`EXTRA_ORDERS_PER_USER_PER_SALE`]. Past it a purchase is refused with
/// [`Reject::TooManyOrders`] (`409`) and changes nothing.
pub const fn max_orders_per_user_per_sale(per_user_limit: u32) -> u32 {
    per_user_limit.saturating_add(EXTRA_ORDERS_PER_USER_PER_SALE)
}

/// The cap at the largest limit a sale can have.
pub const MAX_ORDERS_PER_USER_PER_SALE: u32 = max_orders_per_user_per_sale(MAX_PER_USER_LIMIT);
const _: () = assert!(MAX_ORDERS_PER_USER_PER_SALE == MAX_PER_USER_LIMIT + 16);

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

/// Why [`Engine::apply_locked`] changed nothing. No variant allocates (it
/// is `Copy`, so it cannot hold a `String`): a live purchase that loses
/// the stock race is an ordinary outcome on the hot path. Replay turns
/// these into a [`ReplayError`] with words, only when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApplyError {
    /// Live only: another buyer took the last units first (the CAS lost).
    SoldOut,
    /// The event names a sale this engine does not have (or that was
    /// voided since the purchase looked it up).
    NoActivity {
        order: OrderId,
        activity: ActivityId,
    },
    /// The buyer's stripe holds [`crate::users::MAX_ORDERS_PER_STRIPE`].
    StripeFull { order: OrderId },
    /// Replay: the order id, or the buyer's request id, was seen before.
    Duplicate { order: OrderId },
    /// A pay or cancel of an order that was never created.
    UnknownOrder { order: OrderId, event: &'static str },
    /// A pay or cancel from a status that does not allow it, or with
    /// another quantity than the order's.
    BadMove {
        order: OrderId,
        event: &'static str,
        from: OrderStatus,
    },
}

impl From<ApplyError> for ReplayError {
    fn from(e: ApplyError) -> ReplayError {
        ReplayError(match e {
            ApplyError::SoldOut => "sold out".into(),
            ApplyError::NoActivity { order, activity } => {
                format!("order {order}: no activity {activity}")
            }
            ApplyError::StripeFull { order } => format!(
                "order {order}: its stripe already holds {} orders",
                crate::users::MAX_ORDERS_PER_STRIPE
            ),
            ApplyError::Duplicate { order } => {
                format!("order {order} or its request id seen twice")
            }
            ApplyError::UnknownOrder { order, event } => format!("{event} order {order} unknown"),
            ApplyError::BadMove { order, event, from } => {
                format!("order {order} {event} from {from:?}")
            }
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Live command: the stock CAS may fail (another buyer won the unit).
    Live,
    /// Replay of the log: counters are applied as logged.
    Replay,
}

pub struct Engine {
    pub(crate) cfg: EngineConfig,
    pub(crate) activities: Box<[OnceLock<Activity>]>,
    /// Serialises sale creation (rare) so ids are dense and in log order.
    pub(crate) next_activity: Mutex<ActivityId>,
    pub(crate) users: Users,
    pub(crate) ids: OrderIdGen,
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
        let mine = stripe.sale(cmd.user_id, a.id);
        if u32::from(mine.held) + cmd.quantity > a.per_user_limit {
            return Err(Reject::LimitReached);
        }
        if u32::from(mine.orders) >= max_orders_per_user_per_sale(a.per_user_limit) {
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
            Err(ApplyError::SoldOut) => Err(Reject::SoldOut),
            // The sale's creation was undone (its log write failed) after
            // this purchase looked it up.
            Err(ApplyError::NoActivity { .. }) => Err(Reject::NotFound),
            Err(ApplyError::StripeFull { .. }) => Err(Reject::CapacityExhausted),
            Err(
                e @ (ApplyError::Duplicate { .. }
                | ApplyError::UnknownOrder { .. }
                | ApplyError::BadMove { .. }),
            ) => unreachable!("a live creation checks nothing of the kind: {e:?}"),
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
                self.apply_locked(ev, &mut stripe, Mode::Replay)
                    .map(|_| ())
                    .map_err(ReplayError::from)
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
    /// locked; a failure changes nothing. In `Live` mode a create fails if
    /// the stock CAS loses (or the sale was voided meanwhile, or the stripe
    /// is full); every other failure is a bug in the caller (live) or a log
    /// that is not ours (replay).
    fn apply_locked(
        &self,
        ev: &Event,
        stripe: &mut Stripe,
        mode: Mode,
    ) -> Result<OrderView, ApplyError> {
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
                let a = self.activity(*activity_id).ok_or(ApplyError::NoActivity {
                    order: *order_id,
                    activity: *activity_id,
                })?;
                // Refused before any counter moves: a failed apply changes
                // nothing.
                if !stripe.has_room() {
                    return Err(ApplyError::StripeFull { order: *order_id });
                }
                let key = RequestKey::of(request_id);
                if mode == Mode::Replay
                    && (stripe.has_id(*order_id) || stripe.by_request(*user_id, key).is_some())
                {
                    return Err(ApplyError::Duplicate { order: *order_id });
                }
                if mode == Mode::Live {
                    if !a.try_take(*quantity) {
                        return Err(ApplyError::SoldOut);
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
                let a = self
                    .activity_any(*activity_id)
                    .ok_or(ApplyError::NoActivity {
                        order: *order_id,
                        activity: *activity_id,
                    })?;
                let o = stripe
                    .order_mut(*user_id, *order_id)
                    .ok_or(ApplyError::UnknownOrder {
                        order: *order_id,
                        event: "paid",
                    })?;
                if o.status != OrderStatus::Created || o.quantity != *quantity {
                    return Err(ApplyError::BadMove {
                        order: *order_id,
                        event: "paid",
                        from: o.status,
                    });
                }
                // Paying keeps the units held: the (user, sale) record
                // does not move.
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
                let a = self
                    .activity_any(*activity_id)
                    .ok_or(ApplyError::NoActivity {
                        order: *order_id,
                        activity: *activity_id,
                    })?;
                let i = stripe
                    .find(*user_id, *order_id)
                    .ok_or(ApplyError::UnknownOrder {
                        order: *order_id,
                        event: "cancelled",
                    })?;
                let o = &stripe.orders[i];
                if o.status != OrderStatus::Created || o.quantity != *quantity {
                    return Err(ApplyError::BadMove {
                        order: *order_id,
                        event: "cancelled",
                        from: o.status,
                    });
                }
                stripe.cancel_at(i, *at, *reason);
                let view = OrderView::from(&stripe.orders[i]);
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
                let o = &stripe.orders[i];
                if o.status == OrderStatus::Cancelled {
                    let expires_at = o.expires_at;
                    stripe.uncancel_at(i);
                    if parked {
                        a.releasing.fetch_sub(*quantity as i64, Ordering::AcqRel);
                    } else {
                        a.remaining.fetch_sub(*quantity as i64, Ordering::AcqRel);
                    }
                    a.reserved.fetch_add(*quantity as i64, Ordering::AcqRel);
                    // Back on the payment clock.
                    stripe
                        .expiries
                        .push(Reverse((expires_at, *user_id, *order_id)));
                }
            }
        }
    }
}
