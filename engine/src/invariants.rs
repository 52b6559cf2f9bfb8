//! Checking the design's invariants over a whole engine, and dumping its
//! state in a canonical order: for tests, and for recovery before flashd
//! reports ready.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::engine::Engine;
use crate::fold::Counters;
use crate::limits::{CHECK_PARALLEL_USERS_MIN, STARTUP_THREADS_MAX};
use crate::spec::ActivitySpec;
use crate::types::*;
use crate::users::{Order, SaleKey, USER_STRIPES};

/// What an engine's state is: the whole of its sales (it decides them),
/// or its node's share of sales Redis decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Whole,
    Share,
}

impl Engine {
    /// Every invariant of the design, checked over the whole state. For
    /// tests and for recovery; takes every stripe lock in turn. Stripes are
    /// walked by several threads at once when there are many users: at
    /// start-up this runs over millions of them before flashd is ready.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_invariants_in(Scope::Whole)
    }

    /// [`Engine::check_invariants`] for an engine that records only its
    /// node's share of sales decided elsewhere (cluster mode: Redis
    /// decides). Everything structural is checked — each counter is the
    /// fold of the orders, each buyer's record matches their orders, ids
    /// are unique, units are conserved — but not the bounds only the
    /// decider can keep: this node may still hold as `CREATED` an order
    /// another node timed out (that node logged it), so its share can
    /// exceed a limit or the stock. `flashd reconcile` checks the whole.
    pub fn check_share_invariants(&self) -> Result<(), String> {
        self.check_invariants_in(Scope::Share)
    }

    fn check_invariants_in(&self, scope: Scope) -> Result<(), String> {
        let users: usize = self
            .users
            .stripes()
            .iter()
            .map(|s| s.lock().users.len())
            .sum();
        let threads = if users >= CHECK_PARALLEL_USERS_MIN {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(STARTUP_THREADS_MAX))
        } else {
            1
        };
        let parts = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let range = USER_STRIPES * t / threads..USER_STRIPES * (t + 1) / threads;
                    sc.spawn(move || self.check_stripes(range, scope))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("invariant checker panicked"))
                .collect::<Vec<_>>()
        });
        let mut held_per_activity = vec![0u64; self.activities.len() + 1];
        let mut sorted_ids: Vec<Vec<OrderId>> = Vec::new();
        for part in parts {
            let part = part?;
            for (sum, h) in held_per_activity.iter_mut().zip(part.held_per_activity) {
                *sum += h;
            }
            sorted_ids.push(part.sorted_ids);
        }
        // Each thread sorted its own ids; one merge pass finds a duplicate
        // within or across them.
        if let Some(id) = first_duplicate(&sorted_ids) {
            return Err(format!("order id {id} twice"));
        }
        for a in self.activities() {
            let crate::fold::Counters {
                remaining: r,
                sold: s,
                reserved: v,
            } = a.counters();
            let l = a.releasing();
            let whole = scope == Scope::Whole;
            if (whole && r < 0) || s < 0 || v < 0 || l < 0 {
                return Err(format!(
                    "activity {}: negative counter r={r} s={s} v={v} l={l}",
                    a.id
                ));
            }
            let stock = a.stock();
            if (whole && (s + v) as u64 > stock) || r + s + v + l != stock as i64 {
                return Err(format!(
                    "activity {}: remaining {r} + sold {s} + reserved {v} + releasing {l} != stock {}",
                    a.id, stock
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
    /// units held per sale, and every order id seen. Linear in the orders:
    /// each is looked up once in each index, and the (user, sale) records
    /// are recomputed in one pass and compared.
    fn check_stripes(
        &self,
        range: std::ops::Range<usize>,
        scope: Scope,
    ) -> Result<StripesPart, String> {
        let mut held_per_activity = vec![0u64; self.activities.len() + 1];
        let mut ids: Vec<OrderId> = Vec::new();
        // Per (user, sale): (units held, orders created), from the orders.
        let mut sums: FxHashMap<SaleKey, (u64, u64)> = FxHashMap::default();
        for s in &self.users.stripes()[range] {
            let stripe = s.lock();
            let n = stripe.orders.len();
            if stripe.index_lens() != (n, n) {
                return Err(format!(
                    "a stripe's indexes hold {:?} entries for {n} orders",
                    stripe.index_lens()
                ));
            }
            // Ids first, in arena order: a sequential pass.
            ids.extend(stripe.orders.iter().map(|o| o.id));
            sums.clear();
            for (i, o) in stripe.orders.iter().enumerate() {
                // Each order is found at its own place by id and by its
                // user's request id: with the lengths above, the indexes
                // hold exactly the orders, and a request id of one user on
                // two orders shows as the second resolving to the first.
                match stripe.request_owner(i) {
                    Some(j) if j == i => {}
                    Some(j) => {
                        return Err(format!(
                            "user {} has one request id on two orders ({} and {})",
                            o.user_id, stripe.orders[j].id, o.id
                        ))
                    }
                    None => {
                        return Err(format!("order {} is missing from the request index", o.id))
                    }
                }
                if stripe.find(o.user_id, o.id) != Some(i) {
                    return Err(format!(
                        "order id {} twice in a stripe, or not indexed",
                        o.id
                    ));
                }
                let r = sums
                    .entry(SaleKey::new(o.user_id, o.activity_id))
                    .or_default();
                r.1 += 1;
                if o.status != OrderStatus::Cancelled {
                    r.0 += o.quantity as u64;
                }
            }
            // The records a purchase checks must be the sums of the orders
            // they stand for.
            if sums.len() != stripe.users.len() {
                return Err(format!(
                    "a stripe has {} (user, sale) records for {} (user, sale) pairs with orders",
                    stripe.users.len(),
                    sums.len()
                ));
            }
            for (k, &(held, orders)) in &sums {
                let (uid, aid) = (k.user(), k.activity());
                let rec = stripe.users.get(k).copied().unwrap_or_default();
                // A count of u16::MAX is saturated (a log from before the
                // cap): past the cap whatever the true count.
                let orders_ok = u64::from(rec.orders) == orders || rec.orders == u16::MAX;
                if u64::from(rec.held) != held || !orders_ok {
                    return Err(format!(
                        "user {uid} in activity {aid}: record says {} held in {} orders, the orders say {held} in {orders}",
                        rec.held, rec.orders
                    ));
                }
                let a = self
                    .activity_any(aid)
                    .ok_or_else(|| format!("user {uid} holds units of unknown activity {aid}"))?;
                if scope == Scope::Whole && held > u64::from(a.per_user_limit) {
                    return Err(format!(
                        "user {uid} holds {held} of activity {aid}, limit {}",
                        a.per_user_limit
                    ));
                }
                held_per_activity[aid as usize] += held;
            }
        }
        // Order ids are checked for uniqueness by sorting, not hashing: a
        // radix sort of plain u64s is many times cheaper than a hash set.
        radix_sort(&mut ids);
        Ok(StripesPart {
            held_per_activity,
            sorted_ids: ids,
        })
    }

    /// The whole state in a canonical order, for comparing two engines
    /// (replay tests, snapshots).
    pub fn dump(&self) -> EngineDump {
        let activities = self
            .activities()
            .map(|a| ActivityDump {
                id: a.id,
                spec: a.spec(),
                counters: a.counters(),
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

/// What [`Engine::check_invariants`] learns from some stripes.
struct StripesPart {
    /// Units held in each sale (by id), summed over the stripes' orders.
    held_per_activity: Vec<u64>,
    /// Every order id of the stripes, sorted.
    sorted_ids: Vec<OrderId>,
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

/// One sale in an [`EngineDump`]: what it was opened with and its
/// counters (units parked until a cancel is durable are not in them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityDump {
    pub id: ActivityId,
    pub spec: ActivitySpec,
    pub counters: Counters,
}

/// The whole state in a canonical order ([`Engine::dump`]): sales by id
/// (void ones left out), orders by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineDump {
    pub activities: Vec<ActivityDump>,
    pub orders: Vec<Order>,
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
