//! A sale and its stock ledger.
//!
//! `remaining` is taken by compare-and-swap, so any number of threads sell
//! the same sale without a lock; a take that would go below zero fails and
//! changes nothing. Order of updates keeps `0 <= sold + reserved <= stock`
//! true at every instant, for any reader:
//! * create: take from `remaining` first, then add to `reserved`;
//! * pay: subtract from `reserved` first, then add to `sold`;
//! * cancel: subtract from `reserved`, park in `releasing`; once the cancel
//!   is durable, move from `releasing` to `remaining`.
//!
//! An admin may add stock and move the window of a live sale, so `stock`,
//! `start_at` and `end_at` are atomics too: each is one load on the hot
//! path, and every change is serialised by the engine's admin lock
//! (`sale_change.rs`). Added stock keeps the order of updates above:
//! `stock` grows first, then `remaining` (or `releasing`, until the change
//! is durable); undoing it takes them back in the opposite order.
//!
//! How much each event moves is in [`crate::fold`]; the moves themselves
//! are made in `transition.rs` and `sale_change.rs`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::request_filter::RequestFilter;
use crate::spec::ActivitySpec;
use crate::types::*;

#[derive(Debug)]
pub struct Activity {
    pub id: ActivityId,
    pub sku_id: String,
    pub name: String,
    pub price_cents: u64,
    /// Units the sale holds in all (opened with, plus what admins added):
    /// read with [`Activity::stock`].
    pub(crate) stock: AtomicU64,
    /// The window `[start_at, end_at)`: read with [`Activity::start_at`]
    /// and [`Activity::end_at`].
    pub(crate) start_at: AtomicU64,
    pub(crate) end_at: AtomicU64,
    pub per_user_limit: u32,
    pub created_at: Millis,
    /// Signed so that replay, which applies the log's commutative counter
    /// updates in log order rather than the order they raced in, can pass
    /// through a transiently negative value; live operation never does.
    pub(crate) remaining: AtomicI64,
    pub(crate) sold: AtomicI64,
    pub(crate) reserved: AtomicI64,
    /// Units of cancelled orders whose cancellation is not durable yet,
    /// and units an admin added whose addition is not durable yet. They go
    /// to `remaining` only once the log holds the event, so no purchase can
    /// consume a unit that a crash could take back.
    pub(crate) releasing: AtomicI64,
    /// Its creation could not be made durable: it does not exist for
    /// anyone (a tombstone keeps the write-once slot).
    pub(crate) void: std::sync::atomic::AtomicBool,
    /// The request keys of its orders, for refusals that need no token
    /// (`Engine::public_refusal`).
    pub(crate) requests: RequestFilter,
}

/// A consistent-enough read of a sale for `GET` (each counter is exact;
/// they are read one after another without a lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityView {
    pub id: ActivityId,
    pub sku_id: String,
    pub name: String,
    pub price_cents: u64,
    pub stock: u64,
    pub start_at: Millis,
    pub end_at: Millis,
    pub per_user_limit: u32,
    pub remaining: u64,
    pub sold: u64,
    pub reserved: u64,
    pub state: ActivityState,
}

impl Activity {
    pub(crate) fn new(id: ActivityId, spec: ActivitySpec, created_at: Millis) -> Self {
        Activity {
            id,
            remaining: AtomicI64::new(spec.stock as i64),
            sold: AtomicI64::new(0),
            reserved: AtomicI64::new(0),
            releasing: AtomicI64::new(0),
            void: std::sync::atomic::AtomicBool::new(false),
            requests: RequestFilter::for_stock(spec.stock),
            sku_id: spec.sku_id,
            name: spec.name,
            price_cents: spec.price_cents,
            stock: AtomicU64::new(spec.stock),
            start_at: AtomicU64::new(spec.start_at),
            end_at: AtomicU64::new(spec.end_at),
            per_user_limit: spec.per_user_limit,
            created_at,
        }
    }

    /// Units the sale holds in all: what it opened with plus what admins
    /// added.
    #[inline]
    pub fn stock(&self) -> u64 {
        self.stock.load(Ordering::Acquire)
    }

    /// When the sale opens (ms).
    #[inline]
    pub fn start_at(&self) -> Millis {
        self.start_at.load(Ordering::Acquire)
    }

    /// When the sale ends (ms, exclusive).
    #[inline]
    pub fn end_at(&self) -> Millis {
        self.end_at.load(Ordering::Acquire)
    }

    /// Take `q` units if that many remain: the CAS at the heart of the
    /// ledger.
    #[inline]
    pub(crate) fn try_take(&self, q: i64) -> bool {
        debug_assert!(q > 0, "an order takes at least one unit");
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (r >= q).then_some(r - q)
            })
            .is_ok()
    }

    pub(crate) fn remaining(&self) -> i64 {
        self.remaining.load(Ordering::Acquire)
    }

    pub fn state(&self, now: Millis) -> ActivityState {
        self.state_with(now, self.remaining())
    }

    /// The state at `now` with `remaining` units on sale (cluster mode:
    /// Redis's count, not this node's share).
    pub fn state_with(&self, now: Millis, remaining: i64) -> ActivityState {
        if now < self.start_at() {
            ActivityState::Upcoming
        } else if now >= self.end_at() {
            ActivityState::Ended
        } else if remaining <= 0 {
            ActivityState::SoldOut
        } else {
            ActivityState::Open
        }
    }

    /// The sale as it stands: what it was opened with, with the stock and
    /// window admins have changed since (what a snapshot keeps).
    pub(crate) fn spec(&self) -> ActivitySpec {
        ActivitySpec {
            sku_id: self.sku_id.clone(),
            name: self.name.clone(),
            price_cents: self.price_cents,
            stock: self.stock(),
            start_at: self.start_at(),
            end_at: self.end_at(),
            per_user_limit: self.per_user_limit,
        }
    }

    pub fn view(&self, now: Millis) -> ActivityView {
        ActivityView {
            id: self.id,
            sku_id: self.sku_id.clone(),
            name: self.name.clone(),
            price_cents: self.price_cents,
            stock: self.stock(),
            start_at: self.start_at(),
            end_at: self.end_at(),
            per_user_limit: self.per_user_limit,
            remaining: self.remaining().max(0) as u64,
            sold: self.sold.load(Ordering::Acquire).max(0) as u64,
            reserved: self.reserved.load(Ordering::Acquire).max(0) as u64,
            state: self.state(now),
        }
    }

    /// The three counters by name, each read on its own (a consistent
    /// triple needs the engine quiescent: invariant checks, snapshots).
    pub fn counters(&self) -> crate::fold::Counters {
        crate::fold::Counters {
            remaining: self.remaining.load(Ordering::Acquire),
            reserved: self.reserved.load(Ordering::Acquire),
            sold: self.sold.load(Ordering::Acquire),
        }
    }

    /// Units cancelled but not yet back on sale.
    pub fn releasing(&self) -> i64 {
        self.releasing.load(Ordering::Acquire)
    }
}
