//! Per-user state, striped: a user's holdings, orders and idempotency keys
//! live in one stripe, behind one mutex. Everything a purchase checks and
//! changes about its buyer happens under that lock, so one user firing many
//! requests at once is serialised while different users are not.
//!
//! Layout, chosen for millions of buyers with one order each (a flash
//! sale's shape) and for start-up from a snapshot:
//! * a stripe's orders live in one arena (`Stripe::orders`), dense, with no
//!   allocation per order; a user's orders are a chain through the arena
//!   (`next`), newest first;
//! * the per-user map holds only the chain's head (16 bytes an entry); the
//!   units a user holds are summed from their orders when needed;
//! * an order keeps a 128-bit hash of its request id, not the string: the
//!   engine only ever compares request ids of one user's orders, and the
//!   string itself is in the log for whoever needs it.
//!
//! That took a 7.4-million-order state from ~580 to ~140 bytes per order
//! and made loading it a copy plus one map insert per buyer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::types::*;

/// Stripes of user state. A power of two comfortably above the number of
/// worker threads, so two workers rarely want the same stripe.
pub const USER_STRIPES: usize = 1024;
const _: () = assert!(USER_STRIPES.is_power_of_two());

/// A request id as the engine keeps it: its XXH3-128 hash. Two different
/// ids of one user collide with probability 2^-128 per pair; a collision
/// could only make that user's own retry look like another of their
/// purchases. The hash is part of the snapshot format: XXH3 is specified
/// and stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RequestKey(pub [u64; 2]);

impl RequestKey {
    #[inline]
    pub fn of(request_id: &str) -> RequestKey {
        let h = xxhash_rust::xxh3::xxh3_128(request_id.as_bytes());
        RequestKey([h as u64, (h >> 64) as u64])
    }
}

/// `Copy`: no heap parts, so the arena, snapshots and views move orders
/// by plain copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub activity_id: ActivityId,
    pub user_id: UserId,
    pub quantity: u32,
    pub amount_cents: u64,
    pub status: OrderStatus,
    pub request_key: RequestKey,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub updated_at: Millis,
    pub cancel_reason: Option<CancelReason>,
}

/// End of a user's chain of orders.
pub(crate) const NIL: u32 = u32::MAX;

/// A user's entry: where their chain of orders starts. Nothing else: the
/// units a user holds in a sale are summed from their live orders when a
/// purchase checks the limit (a buyer has a handful), so no second record
/// of them can drift from the orders, and the map entry stays 16 bytes.
#[derive(Debug)]
pub(crate) struct UserState {
    /// The user's newest order in the stripe's arena, or `NIL`.
    pub head: u32,
}

impl Default for UserState {
    fn default() -> Self {
        UserState { head: NIL }
    }
}

#[derive(Default)]
pub(crate) struct Stripe {
    pub users: FxHashMap<UserId, UserState>,
    /// Every order of this stripe's users, in no particular order.
    pub orders: Vec<Order>,
    /// `next[i]`: the same user's next older order after `orders[i]`.
    pub next: Vec<u32>,
    /// Unpaid orders of this stripe by deadline: (expires_at, user, order).
    pub expiries: BinaryHeap<Reverse<(Millis, UserId, OrderId)>>,
    /// While a snapshot loads: deadlines to heapify at the end, at once.
    pub loading_due: Vec<Reverse<(Millis, UserId, OrderId)>>,
}

/// A user's orders, newest first, as arena indices.
pub(crate) struct Chain<'a> {
    next: &'a [u32],
    at: u32,
}

impl Iterator for Chain<'_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.at == NIL {
            return None;
        }
        let i = self.at as usize;
        self.at = self.next[i];
        Some(i)
    }
}

impl Stripe {
    #[inline]
    pub fn chain(&self, user: UserId) -> Chain<'_> {
        Chain {
            next: &self.next,
            at: self.users.get(&user).map_or(NIL, |u| u.head),
        }
    }

    /// The chain from arena index `at` on (`NIL`: empty).
    #[inline]
    pub fn chain_from(&self, at: u32) -> Chain<'_> {
        Chain {
            next: &self.next,
            at,
        }
    }

    pub fn find(&self, user: UserId, id: OrderId) -> Option<usize> {
        self.chain(user).find(|&i| self.orders[i].id == id)
    }

    pub fn order_mut(&mut self, user: UserId, id: OrderId) -> Option<&mut Order> {
        let i = self.find(user, id)?;
        Some(&mut self.orders[i])
    }

    pub fn by_request(&self, user: UserId, key: RequestKey) -> Option<&Order> {
        self.chain(user)
            .map(|i| &self.orders[i])
            .find(|o| o.request_key == key)
    }

    /// Units `user` holds (created or paid) in sale `a`.
    pub fn held(&self, user: UserId, a: ActivityId) -> u32 {
        self.chain(user)
            .map(|i| &self.orders[i])
            .filter(|o| o.activity_id == a && o.status != OrderStatus::Cancelled)
            .map(|o| o.quantity)
            .sum()
    }

    /// Add an order to the arena and to its user's chain (creating the
    /// user).
    pub fn push_order(&mut self, order: Order) {
        let at = u32::try_from(self.orders.len()).expect("fewer than 2^32 orders per stripe");
        assert!(at != NIL, "fewer than 2^32 orders per stripe");
        let u = self.users.entry(order.user_id).or_default();
        self.next.push(u.head);
        u.head = at;
        self.orders.push(order);
    }

    /// Take an order out (undoing its creation). The arena's last order
    /// moves into the hole, so its chain link is repointed.
    pub fn remove_order(&mut self, user: UserId, id: OrderId) -> Option<Order> {
        let u = self.users.get_mut(&user)?;
        let mut prev = NIL;
        let mut at = u.head;
        while at != NIL && self.orders[at as usize].id != id {
            prev = at;
            at = self.next[at as usize];
        }
        if at == NIL {
            return None;
        }
        let after = self.next[at as usize];
        if prev == NIL {
            u.head = after;
        } else {
            self.next[prev as usize] = after;
        }
        let last = (self.orders.len() - 1) as u32;
        if at != last {
            let moved_user = self.orders[last as usize].user_id;
            let mu = self
                .users
                .get_mut(&moved_user)
                .expect("every order's user is in its stripe");
            if mu.head == last {
                mu.head = at;
            } else {
                let mut p = mu.head;
                while self.next[p as usize] != last {
                    p = self.next[p as usize];
                }
                self.next[p as usize] = at;
            }
        }
        self.next.swap_remove(at as usize);
        Some(self.orders.swap_remove(at as usize))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: OrderId, user: UserId) -> Order {
        Order {
            id,
            activity_id: 1,
            user_id: user,
            quantity: 1,
            amount_cents: 1,
            status: OrderStatus::Created,
            request_key: RequestKey::of(&format!("r{id}")),
            created_at: 0,
            expires_at: 0,
            updated_at: 0,
            cancel_reason: None,
        }
    }

    fn ids(s: &Stripe, user: UserId) -> Vec<OrderId> {
        s.chain(user).map(|i| s.orders[i].id).collect()
    }

    #[test]
    fn removing_any_order_keeps_every_chain_whole() {
        // Users 1..=3 interleaved; remove each position in turn from a
        // fresh stripe and check every other order is still reachable
        // through its own user's chain, exactly once.
        let layout: Vec<(OrderId, UserId)> =
            vec![(10, 1), (11, 2), (12, 1), (13, 3), (14, 2), (15, 1)];
        for victim in 0..layout.len() {
            let mut s = Stripe::default();
            for &(id, u) in &layout {
                s.push_order(order(id, u));
            }
            let (vid, vu) = layout[victim];
            let got = s.remove_order(vu, vid).expect("present");
            assert_eq!(got.id, vid);
            assert!(s.remove_order(vu, vid).is_none());
            assert_eq!(s.orders.len(), layout.len() - 1);
            for user in 1..=3 {
                let mut want: Vec<OrderId> = layout
                    .iter()
                    .filter(|&&(id, u)| u == user && id != vid)
                    .map(|&(id, _)| id)
                    .collect();
                want.reverse();
                assert_eq!(ids(&s, user), want, "user {user} after removing {vid}");
            }
        }
    }

    #[test]
    fn request_keys_differ_for_near_identical_ids() {
        let keys: std::collections::HashSet<RequestKey> = (0..10_000)
            .map(|i| RequestKey::of(&format!("req-{i}")))
            .collect();
        assert_eq!(keys.len(), 10_000);
        assert_eq!(RequestKey::of("abc"), RequestKey::of("abc"));
    }
}
