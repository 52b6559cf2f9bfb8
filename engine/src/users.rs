//! Per-user state, striped: a user's holdings, orders and idempotency keys
//! live in one stripe, behind one mutex. Everything a purchase checks and
//! changes about its buyer happens under that lock, so one user firing many
//! requests at once is serialised while different users are not.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::types::*;

/// Stripes of user state. A power of two comfortably above the number of
/// worker threads, so two workers rarely want the same stripe.
pub const USER_STRIPES: usize = 1024;
const _: () = assert!(USER_STRIPES.is_power_of_two());

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub activity_id: ActivityId,
    pub user_id: UserId,
    pub quantity: u32,
    pub amount_cents: u64,
    pub status: OrderStatus,
    pub request_id: Box<str>,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub updated_at: Millis,
    pub cancel_reason: Option<CancelReason>,
}

#[derive(Debug, Default)]
pub(crate) struct UserState {
    /// Units held (created or paid) per sale. A user takes part in few
    /// sales, so a short vector beats a map.
    pub holdings: Vec<(ActivityId, u32)>,
    /// The user's orders; few per user, searched linearly.
    pub orders: Vec<Order>,
}

impl UserState {
    pub fn held(&self, a: ActivityId) -> u32 {
        self.holdings
            .iter()
            .find(|(id, _)| *id == a)
            .map_or(0, |(_, n)| *n)
    }

    pub fn add_held(&mut self, a: ActivityId, q: u32) {
        match self.holdings.iter_mut().find(|(id, _)| *id == a) {
            Some((_, n)) => *n += q,
            None => self.holdings.push((a, q)),
        }
    }

    pub fn sub_held(&mut self, a: ActivityId, q: u32) {
        if let Some(i) = self.holdings.iter().position(|(id, _)| *id == a) {
            let n = &mut self.holdings[i].1;
            debug_assert!(*n >= q, "holdings below zero");
            *n = n.saturating_sub(q);
            if *n == 0 {
                self.holdings.swap_remove(i);
            }
        }
    }

    pub fn order_mut(&mut self, id: OrderId) -> Option<&mut Order> {
        self.orders.iter_mut().find(|o| o.id == id)
    }

    pub fn by_request(&self, request_id: &str) -> Option<&Order> {
        self.orders.iter().find(|o| &*o.request_id == request_id)
    }
}

#[derive(Default)]
pub(crate) struct Stripe {
    pub users: FxHashMap<UserId, UserState>,
    /// Unpaid orders of this stripe by deadline: (expires_at, user, order).
    pub expiries: BinaryHeap<Reverse<(Millis, UserId, OrderId)>>,
}

pub(crate) struct Users {
    stripes: Box<[Mutex<Stripe>]>,
}

impl Users {
    pub fn new() -> Self {
        Users {
            stripes: (0..USER_STRIPES)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
        }
    }

    #[inline]
    pub fn stripe_of(user: UserId) -> usize {
        // Fibonacci hashing: consecutive ids spread over all stripes.
        (user.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - USER_STRIPES.trailing_zeros())) as usize
    }

    pub fn lock(&self, user: UserId) -> parking_lot::MutexGuard<'_, Stripe> {
        self.stripes[Self::stripe_of(user)].lock()
    }

    pub fn stripes(&self) -> &[Mutex<Stripe>] {
        &self.stripes
    }
}
