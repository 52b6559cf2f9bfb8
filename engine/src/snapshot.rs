//! Snapshots of the engine: exporting the whole state, and loading one
//! (whole, or in parts decoded on several threads) into an empty engine.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;

use crate::activity::Activity;
use crate::engine::Engine;
use crate::error::ReplayError;
use crate::limits::{LOAD_PARALLEL_ORDERS_MIN, STARTUP_THREADS_MAX, STRIPE_ORDERS_MAX};
use crate::spec::ActivitySpec;
use crate::types::*;
use crate::users::{Order, Users, USER_STRIPES};

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
    /// The whole state at once, orders sorted as [`Engine::for_each_order`]
    /// gives them. Holds every order twice over (a copy in a `Vec`): for
    /// tests and small engines; a snapshot writer streams instead, with
    /// [`Engine::export_meta`] and [`Engine::for_each_order`].
    pub fn export(&self) -> EngineSnapshot {
        let (mut snap, counts) = self.export_meta();
        snap.orders
            .reserve_exact(counts.iter().map(|&c| c as usize).sum());
        let r: Result<(), std::convert::Infallible> = self.for_each_order(|o| {
            snap.orders.push(*o);
            Ok(())
        });
        match r {
            Ok(()) => snap,
            Err(never) => match never {},
        }
    }

    /// Everything but the orders (`orders` is empty), and the number of
    /// orders in each stripe (what a snapshot's loader sizes stripes by,
    /// and what [`Engine::for_each_order`] will then visit if no one
    /// mutates the engine in between).
    pub fn export_meta(&self) -> (EngineSnapshot, Vec<u32>) {
        let activities = self
            .activities
            .iter()
            .filter_map(|a| a.get())
            .map(|a| {
                let crate::fold::Counters {
                    remaining,
                    sold,
                    reserved,
                } = a.counters();
                ActivitySnapshot {
                    id: a.id,
                    spec: a.spec(),
                    created_at: a.created_at,
                    // A follower applies cancels whole: nothing is parked.
                    remaining: remaining + a.releasing(),
                    sold,
                    reserved,
                    void: a.void.load(Ordering::Acquire),
                }
            })
            .collect();
        let counts = self
            .users
            .stripes()
            .iter()
            .map(|s| {
                // A stripe's arena is indexed by u32 (see `push_order`).
                u32::try_from(s.lock().orders.len()).expect("fewer than 2^32 orders per stripe")
            })
            .collect();
        let meta = EngineSnapshot {
            next_activity: *self.next_activity.lock(),
            last_order_id: self.ids.last(),
            activities,
            orders: Vec::new(),
        };
        (meta, counts)
    }

    /// Visit every order, stripe by stripe, each stripe's sorted by user
    /// and order id: the canonical order of a snapshot (loading it then
    /// fills one stripe's map at a time, in cache, instead of jumping
    /// between all of them: 4x faster start-up on millions of orders).
    /// Stops at `f`'s first error.
    ///
    /// Memory: one index (4 bytes) per order of the largest stripe, not a
    /// copy of the orders. `f` runs under the stripe's lock, so this is for
    /// an engine no one else mutates (the snapshotter's follower), where
    /// it is also consistent with [`Engine::export_meta`].
    pub fn for_each_order<E>(&self, mut f: impl FnMut(&Order) -> Result<(), E>) -> Result<(), E> {
        let mut idx: Vec<u32> = Vec::new();
        for s in self.users.stripes() {
            let stripe = s.lock();
            idx.clear();
            idx.extend(0..stripe.orders.len() as u32);
            let orders = &stripe.orders;
            idx.sort_unstable_by_key(|&i| {
                let o = &orders[i as usize];
                (o.user_id, o.id)
            });
            for &i in &idx {
                f(&orders[i as usize])?;
            }
        }
        Ok(())
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
        let threads = if grouped && orders.len() >= LOAD_PARALLEL_ORDERS_MIN {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(STARTUP_THREADS_MAX))
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
        // A stripe indexes at most STRIPE_ORDERS_MAX orders: a snapshot
        // claiming more is refused here, before anything is installed,
        // rather than reaching the index's assertion mid-load.
        if let Some(&orders) = stripe_orders
            .unwrap_or_default()
            .iter()
            .find(|&&n| n as usize > STRIPE_ORDERS_MAX)
        {
            return Err(ReplayError::SnapshotStripeOverfull { orders });
        }
        let mut next = self.next_activity.lock();
        if *next != 1 || self.activities().next().is_some() {
            return Err(ReplayError::SnapshotIntoNonEmpty);
        }
        for a in &meta.activities {
            let slot = self
                .activities
                .get((a.id as usize).wrapping_sub(1))
                .ok_or(ReplayError::SnapshotActivityBeyondCapacity { id: a.id })?;
            let act = Activity::new(a.id, a.spec.clone(), a.created_at);
            act.remaining.store(a.remaining, Ordering::Release);
            act.sold.store(a.sold, Ordering::Release);
            act.reserved.store(a.reserved, Ordering::Release);
            act.void.store(a.void, Ordering::Release);
            slot.set(act)
                .map_err(|_| ReplayError::SnapshotActivityTwice { id: a.id })?;
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
                    s.reserve(room);
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
                // Published to the reactors by start-up's end (they start
                // serving after the load returns).
                if let Some(a) = self.activity_any(o.activity_id) {
                    a.requests.note(o.request_key);
                }
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
