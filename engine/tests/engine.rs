//! Proves the engine's invariants: a many-thread stampede on one hot sale
//! never oversells or breaks a limit; random command sequences keep every
//! invariant after every step and replay to identical state; the order
//! lifecycle moves only as designed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod common;

use common::*;
use flashd_engine::*;
use proptest::prelude::*;

#[test]
fn stampede_on_one_hot_sale() {
    const STOCK: u64 = 1_000;
    const THREADS: u64 = 8;
    const USERS: u64 = 3_000;
    let e = Arc::new(engine());
    let a = e
        .create_activity(&spec(STOCK, 2), T0, &mut Vec::new())
        .unwrap()
        .id;
    let created = Arc::new(AtomicU64::new(0));
    let logs: Vec<Vec<Event>> = (0..THREADS)
        .map(|t| {
            let e = e.clone();
            let created = created.clone();
            std::thread::spawn(move || {
                let mut log = Vec::new();
                // Every thread walks all users in a different order; each
                // user asks for one unit three times with two request ids,
                // so users race themselves across threads.
                for i in 0..USERS * 3 {
                    let u = (i * (2 * t + 1) + t * 7) % USERS + 1;
                    let rid = format!("r{}", (i + t) % 2);
                    if let Ok(Placed::Created(_)) = buy(&e, a, u, 1, &rid, T0 + 1, &mut log) {
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                }
                log
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    // Demand: every user wants up to their limit of 2.
    let demand = USERS * 2;
    let av = e.activity(a).unwrap().view(T0 + 1);
    assert_eq!(av.sold + av.reserved, STOCK.min(demand));
    assert_eq!(created.load(Ordering::Relaxed), STOCK);
    assert_eq!(av.remaining, 0);
    e.check_invariants().unwrap();
    // Replaying every thread's events (each user's in its own order) gives
    // the same state.
    let r = engine();
    r.create_activity(&spec(STOCK, 2), T0, &mut Vec::new())
        .unwrap();
    for log in &logs {
        for ev in log {
            r.apply(ev).unwrap();
        }
    }
    assert_eq!(r.dump(), e.dump());
}

#[test]
fn lifecycle_pay_cancel_timeout() {
    let e = engine();
    let mut log = Vec::new();
    let a = e.create_activity(&spec(10, 3), T0, &mut log).unwrap().id;
    let o1 = match buy(&e, a, 7, 2, "a", T0 + 10, &mut log).unwrap() {
        Placed::Created(o) => o,
        p => panic!("{p:?}"),
    };
    assert_eq!(o1.amount_cents, 2 * 1999);
    assert_eq!(o1.expires_at, T0 + 10 + 60_000);
    // Same request id: same order, 200 not 201.
    assert_eq!(
        buy(&e, a, 7, 2, "a", T0 + 11, &mut log),
        Ok(Placed::Existing(o1))
    );
    // Same id, different purchase: conflict, nothing changes.
    assert_eq!(
        buy(&e, a, 7, 1, "a", T0 + 11, &mut log),
        Err(Reject::IdempotencyConflict)
    );
    // Limit 3: one more unit fits, two do not.
    assert_eq!(
        buy(&e, a, 7, 2, "b", T0 + 12, &mut log),
        Err(Reject::LimitReached)
    );
    let paid = e.pay(7, o1.id, T0 + 20, &mut log).unwrap();
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_eq!(
        e.pay(7, o1.id, T0 + 21, &mut log).unwrap().status,
        OrderStatus::Paid,
        "pay is idempotent"
    );
    assert_eq!(
        e.cancel(7, o1.id, T0 + 22, &mut log),
        Err(Reject::BadTransition)
    );
    // Another user cannot see or move it.
    assert_eq!(e.order(8, o1.id), None);
    assert_eq!(e.pay(8, o1.id, T0 + 22, &mut log), Err(Reject::NotFound));

    let o2 = match buy(&e, a, 9, 1, "x", T0 + 30, &mut log).unwrap() {
        Placed::Created(o) => o,
        p => panic!("{p:?}"),
    };
    let c = e.cancel(9, o2.id, T0 + 40, &mut log).unwrap();
    assert_eq!(
        (c.status, c.cancel_reason),
        (OrderStatus::Cancelled, Some(CancelReason::User))
    );
    assert_eq!(
        e.cancel(9, o2.id, T0 + 41, &mut log).unwrap().status,
        OrderStatus::Cancelled
    );
    assert_eq!(
        e.pay(9, o2.id, T0 + 42, &mut log),
        Err(Reject::BadTransition),
        "pay after cancel"
    );
    // The cancelled unit is back and the user may buy again.
    assert!(matches!(
        buy(&e, a, 9, 1, "y", T0 + 50, &mut log),
        Ok(Placed::Created(_))
    ));

    // Payment timeout returns the units.
    let before = e.activity(a).unwrap().view(T0).remaining;
    let o3 = match buy(&e, a, 11, 3, "t", T0 + 100, &mut log).unwrap() {
        Placed::Created(o) => o,
        p => panic!("{p:?}"),
    };
    assert_eq!(e.activity(a).unwrap().view(T0).remaining, before - 3);
    // User 9's order 'y' (deadline T0+60_050) is due; user 11's is not yet.
    assert_eq!(e.expire_due(T0 + 100 + 59_999, usize::MAX, &mut log), 1);
    assert_eq!(e.order(11, o3.id).unwrap().status, OrderStatus::Created);
    let before = before + 1; // 'y' went back to stock
                             // Paying exactly at the deadline is too late, and cancels.
    assert_eq!(
        e.pay(11, o3.id, T0 + 100 + 60_000, &mut log),
        Err(Reject::Expired)
    );
    assert_eq!(
        e.order(11, o3.id).unwrap().cancel_reason,
        Some(CancelReason::Timeout)
    );
    assert_eq!(e.activity(a).unwrap().view(T0).remaining, before);
    // Unpaid orders past their deadline are swept.
    assert!(matches!(
        buy(&e, a, 12, 1, "s", T0 + 200, &mut log),
        Ok(Placed::Created(_))
    ));
    assert_eq!(
        e.expire_due(T0 + 200 + 60_000, usize::MAX, &mut log),
        1,
        "user 12's 's'"
    );
    e.check_invariants().unwrap();

    let r = engine();
    for ev in &log {
        r.apply(ev).unwrap();
    }
    assert_eq!(r.dump(), e.dump());
}

#[test]
fn windows_and_bad_input_change_nothing() {
    let e = engine();
    let mut log = Vec::new();
    let a = e.create_activity(&spec(5, 1), T0, &mut log).unwrap().id;
    let before = e.dump();
    let n = log.len();
    assert_eq!(
        buy(&e, a, 1, 1, "r", T0 - 1, &mut log),
        Err(Reject::NotStarted)
    );
    assert_eq!(
        buy(&e, a, 1, 1, "r", T0 + 3_600_000, &mut log),
        Err(Reject::Ended)
    );
    assert_eq!(
        buy(&e, a, 1, 0, "r", T0 + 1, &mut log),
        Err(Reject::Invalid)
    );
    assert_eq!(
        buy(&e, a, 1, QUANTITY_MAX + 1, "r", T0 + 1, &mut log),
        Err(Reject::Invalid)
    );
    assert_eq!(buy(&e, a, 1, 1, "", T0 + 1, &mut log), Err(Reject::Invalid));
    assert_eq!(
        buy(&e, 99, 1, 1, "r", T0 + 1, &mut log),
        Err(Reject::NotFound)
    );
    assert_eq!(
        buy(&e, a, 1, 2, "r", T0 + 1, &mut log),
        Err(Reject::LimitReached)
    );
    let mut bad = spec(5, 1);
    bad.end_at = bad.start_at;
    assert_eq!(e.create_activity(&bad, T0, &mut log), Err(Reject::Invalid));
    assert_eq!(e.dump(), before);
    assert_eq!(log.len(), n, "refusals emit no events");
}

#[test]
fn replay_rejects_a_foreign_log() {
    let e = engine();
    let ev = Event::OrderPaid {
        order_id: 1,
        activity_id: 1,
        user_id: 1,
        quantity: 1,
        at: T0,
    };
    assert!(e.apply(&ev).is_err());
    let ev = Event::ActivityCreated {
        id: 2,
        sku_id: "s".into(),
        name: "n".into(),
        price_cents: 1,
        stock: 1,
        start_at: 0,
        end_at: 1,
        per_user_limit: 1,
        created_at: 0,
    };
    assert!(
        e.apply(&ev).is_ok(),
        "ids may skip one whose creation failed"
    );
    assert!(e.apply(&ev).is_err(), "but never repeat or go back");

    // An order created twice (same id, or the same request id of one
    // user) is refused and moves no counter.
    let created = |order_id, request_id: &str| Event::OrderCreated {
        order_id,
        activity_id: 2,
        user_id: 9,
        quantity: 1,
        amount_cents: 1,
        request_id: request_id.into(),
        created_at: 0,
        expires_at: 10,
    };
    e.apply(&created(100, "r-1")).unwrap();
    let before = e.dump();
    assert!(e.apply(&created(100, "r-2")).is_err(), "same order id");
    assert!(e.apply(&created(101, "r-1")).is_err(), "same request id");
    assert_eq!(e.dump(), before);
    e.check_invariants().unwrap();
}

#[derive(Debug, Clone)]
enum Cmd {
    Buy {
        activity: u8,
        user: u8,
        qty: u8,
        rid: u8,
    },
    Pay {
        user: u8,
        nth: u8,
    },
    Cancel {
        user: u8,
        nth: u8,
    },
    Expire,
    Tick(u16),
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        6 => (0u8..3, 0u8..12, 0u8..5, 0u8..4).prop_map(|(activity, user, qty, rid)| Cmd::Buy { activity, user, qty, rid }),
        2 => (0u8..12, 0u8..4).prop_map(|(user, nth)| Cmd::Pay { user, nth }),
        2 => (0u8..12, 0u8..4).prop_map(|(user, nth)| Cmd::Cancel { user, nth }),
        1 => Just(Cmd::Expire),
        2 => (0u16..20_000).prop_map(Cmd::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random commands against three small sales: every invariant holds
    /// after every step, and replaying the events gives identical state.
    #[test]
    fn random_commands_keep_invariants_and_replay(cmds in proptest::collection::vec(cmd(), 1..120)) {
        let e = engine();
        let mut log = Vec::new();
        let mut now = T0;
        for (stock, limit) in [(3u64, 1u32), (5, 2), (8, 3)] {
            e.create_activity(&spec(stock, limit), now, &mut log).unwrap();
        }
        for c in &cmds {
            match c {
                Cmd::Buy { activity, user, qty, rid } => {
                    let _ = buy(&e, *activity as u32 + 1, *user as u64 + 1, *qty as u32, &format!("r{rid}"), now, &mut log);
                }
                Cmd::Pay { user, nth } | Cmd::Cancel { user, nth } => {
                    let u = *user as u64 + 1;
                    let mine: Vec<_> = e.dump().orders.into_iter().filter(|o| o.user_id == u).collect();
                    if let Some(o) = mine.get(*nth as usize) {
                        let r = if matches!(c, Cmd::Pay { .. }) { e.pay(u, o.id, now, &mut log) } else { e.cancel(u, o.id, now, &mut log) };
                        // Moves are only ever the designed ones.
                        if let Ok(v) = r {
                            prop_assert!(v.status != OrderStatus::Created);
                        }
                    }
                }
                Cmd::Expire => { e.expire_due(now, usize::MAX, &mut log); }
                Cmd::Tick(ms) => now += *ms as u64 * 10,
            }
            if let Err(msg) = e.check_invariants() {
                return Err(TestCaseError::fail(msg));
            }
        }
        let r = engine();
        for ev in &log {
            r.apply(ev).unwrap();
        }
        prop_assert_eq!(r.dump(), e.dump());
        r.check_invariants().map_err(TestCaseError::fail)?;
    }
}

fn held_engine() -> Engine {
    Engine::new(EngineConfig {
        node_id: 3,
        order_ttl_ms: 60_000,
        max_activities: 16,
        hold_released_until_durable: true,
    })
}

fn run_cmds(e: &Engine, cmds: &[Cmd], log: &mut Vec<Event>) {
    let mut now = T0;
    for (stock, limit) in [(3u64, 1u32), (5, 2)] {
        e.create_activity(&spec(stock, limit), now, log).unwrap();
    }
    for c in cmds {
        match c {
            Cmd::Buy {
                activity,
                user,
                qty,
                rid,
            } => {
                let _ = buy(
                    e,
                    (*activity as u32 % 2) + 1,
                    *user as u64 + 1,
                    *qty as u32,
                    &format!("r{rid}"),
                    now,
                    log,
                );
            }
            Cmd::Pay { user, nth } | Cmd::Cancel { user, nth } => {
                let u = *user as u64 + 1;
                let mine: Vec<_> = e
                    .dump()
                    .orders
                    .into_iter()
                    .filter(|o| o.user_id == u)
                    .collect();
                if let Some(o) = mine.get(*nth as usize) {
                    let _ = if matches!(c, Cmd::Pay { .. }) {
                        e.pay(u, o.id, now, log)
                    } else {
                        e.cancel(u, o.id, now, log)
                    };
                }
            }
            Cmd::Expire => {
                e.expire_due(now, usize::MAX, log);
            }
            Cmd::Tick(ms) => now += *ms as u64 * 10,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The log made the first `k` events durable and failed the rest:
    /// reverting the rest (newest first, or oldest first) leaves exactly the
    /// state of replaying the first `k`, with every invariant intact.
    #[test]
    fn reverting_a_failed_suffix_equals_replaying_the_durable_prefix(
        cmds in proptest::collection::vec(cmd(), 1..80),
        cut in 0usize..1000,
        newest_first in any::<bool>(),
    ) {
        let e = held_engine();
        let mut log = Vec::new();
        run_cmds(&e, &cmds, &mut log);
        let k = 2 + cut % (log.len() - 1); // keep the two sales
        for ev in &log[..k] {
            e.durable(ev);
        }
        let failed: Vec<&Event> = if newest_first { log[k..].iter().rev().collect() } else { log[k..].iter().collect() };
        for ev in failed {
            e.revert(ev);
        }
        e.check_invariants().map_err(TestCaseError::fail)?;
        let r = engine();
        for ev in &log[..k] {
            r.apply(ev).unwrap();
        }
        let (mut a, mut b) = (e.export(), r.export());
        // Ids handed out to reverted orders stay burned on the live side.
        a.last_order_id = 0;
        b.last_order_id = 0;
        prop_assert_eq!(a, b);
        // And both still time out the same unpaid orders: an undone pay or
        // cancel puts its order back on the payment clock, even if the
        // sweeper looked at (and skipped) the order while it was paid.
        let late = T0 + 10_000_000;
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        let expired = (e.expire_due(late, usize::MAX, &mut ea), r.expire_due(late, usize::MAX, &mut eb));
        prop_assert_eq!(expired.0, expired.1, "unpaid orders timed out after the undo");
        let (mut a, mut b) = (e.export(), r.export());
        a.last_order_id = 0;
        b.last_order_id = 0;
        prop_assert_eq!(a, b);
    }

    /// Units of a cancelled order are not for sale until the cancel is
    /// durable; a snapshot loads into an identical engine.
    #[test]
    fn held_units_and_snapshot_round_trip(cmds in proptest::collection::vec(cmd(), 1..80)) {
        let e = held_engine();
        let mut log = Vec::new();
        run_cmds(&e, &cmds, &mut log);
        e.check_invariants().map_err(TestCaseError::fail)?;
        let parked: i64 = e.activities().map(|a| a.releasing()).sum();
        let cancels: i64 = log.iter().map(|ev| if let Event::OrderCancelled { quantity, .. } = ev { *quantity as i64 } else { 0 }).sum();
        prop_assert_eq!(parked, cancels);
        for ev in &log {
            e.durable(ev);
        }
        prop_assert_eq!(e.activities().map(|a| a.releasing()).sum::<i64>(), 0);
        e.check_invariants().map_err(TestCaseError::fail)?;
        let snap = e.export();
        let f = held_engine();
        f.load(&snap).unwrap();
        prop_assert_eq!(f.dump(), e.dump());
        f.check_invariants().map_err(TestCaseError::fail)?;
        // Loaded engines keep handing out fresh ids.
        prop_assert!(f.export().last_order_id == snap.last_order_id);
    }
}

/// Big snapshots load on several threads (one share of the stripes each)
/// and are checked in parallel; the result must be the same engine, and
/// damage must still be found by the parallel check.
#[test]
fn a_large_snapshot_loads_in_parallel_to_the_same_state() {
    let e = engine();
    let mut log = Vec::new();
    e.create_activity(&spec(200_000, 1), T0, &mut log).unwrap();
    for u in 1..=120_000u64 {
        let Placed::Created(o) = buy(&e, 1, u, 1, "r", T0 + 1, &mut log).unwrap() else {
            panic!("new buyer")
        };
        if u % 3 == 0 {
            e.pay(u, o.id, T0 + 2, &mut log).unwrap();
        } else if u % 7 == 0 {
            e.cancel(u, o.id, T0 + 2, &mut log).unwrap();
        }
    }
    e.check_invariants().unwrap();
    let snap = e.export();
    let f = engine();
    f.load(&snap).unwrap();
    assert_eq!(f.dump(), e.dump());
    f.check_invariants().unwrap();
    // The same orders in another order (an older snapshot writer sorted
    // them by id) load on one thread to the same state.
    let mut by_id = snap.clone();
    by_id.orders.sort_by_key(|o| o.id);
    let g = engine();
    g.load(&by_id).unwrap();
    assert_eq!(g.dump(), e.dump());
    // A duplicated order id across two users is caught.
    let mut dup = snap.clone();
    let last = dup.orders.len() - 1;
    dup.orders[last].id = dup.orders[10].id;
    let h = engine();
    h.load(&dup).unwrap();
    let err = h.check_invariants().unwrap_err();
    assert!(err.contains("twice"), "{err}");
}

/// Replay on every core (`apply_batch`) rebuilds exactly what one-by-one
/// replay does, with users of many stripes, several orders per user, pays,
/// cancels and a sale created in the middle of the run; a foreign event is
/// reported with its own LSN.
#[test]
fn batch_replay_on_every_core_equals_replay_in_order() {
    let e = engine();
    let mut log = Vec::new();
    e.create_activity(&spec(1_000_000, 3), T0, &mut log)
        .unwrap();
    for u in 1..=20_000u64 {
        for k in 0..2 {
            let a = if k == 1 && u > 10_000 { 2 } else { 1 };
            if u == 10_001 && k == 1 {
                e.create_activity(&spec(50_000, 2), T0 + 1, &mut log)
                    .unwrap();
            }
            let Placed::Created(o) = buy(&e, a, u, 1, &format!("r{k}"), T0 + 2, &mut log).unwrap()
            else {
                panic!("new order")
            };
            match (u + k) % 5 {
                0 => drop(e.pay(u, o.id, T0 + 3, &mut log).unwrap()),
                1 => drop(e.cancel(u, o.id, T0 + 3, &mut log).unwrap()),
                _ => {}
            }
        }
    }
    let batch: Vec<(u64, Event)> = log
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, ev)| (i as u64, ev))
        .collect();
    let f = engine();
    // In uneven chunks, as recovery hands them over.
    for part in batch.chunks(17_011) {
        f.apply_batch(part).unwrap();
    }
    assert_eq!(f.dump(), e.dump());
    f.check_invariants().unwrap();

    // Pay of an order nobody created, at LSN 12,345 of a fresh replay.
    let mut bad = batch.clone();
    bad[12_345].1 = Event::OrderPaid {
        order_id: 1,
        activity_id: 1,
        user_id: 999_999,
        quantity: 1,
        at: T0,
    };
    let g = engine();
    let (lsn, _) = g.apply_batch(&bad).unwrap_err();
    assert_eq!(lsn, 12_345);
}

/// An abort record in the Kafka log undoes events during replay: a replayed
/// cancel put its units straight back on sale, so its undoing must take
/// them from there (not from the "releasing" bucket a live cancel uses).
#[test]
fn replayed_events_revert_to_the_state_before_them() {
    let live = engine();
    let mut log = Vec::new();
    let a = live.create_activity(&spec(10, 5), T0, &mut log).unwrap().id;
    let o1 = created(buy(&live, a, 7, 2, "r1", T0 + 1, &mut log));
    let o2 = created(buy(&live, a, 8, 3, "r2", T0 + 2, &mut log));
    live.pay(8, o2.id, T0 + 3, &mut log).unwrap();
    let before = log.len();
    live.cancel(7, o1.id, T0 + 4, &mut log).unwrap();
    let o3 = created(buy(&live, a, 9, 1, "r3", T0 + 5, &mut log));
    let aborted: Vec<Event> = log[before..].to_vec();

    let replay = Engine::new(EngineConfig {
        node_id: 3,
        order_ttl_ms: 60_000,
        max_activities: 16,
        hold_released_until_durable: true,
    });
    for ev in &log {
        replay.apply(ev).unwrap();
    }
    for ev in aborted.iter().rev() {
        replay.revert_replayed(ev);
    }
    // As if the cancel and the third buy never happened.
    let act = replay.activity(a).unwrap();
    assert_eq!(
        act.counters(),
        Counters {
            remaining: 10 - 5,
            reserved: 2,
            sold: 3
        }
    );
    assert!(replay.order(7, o1.id).is_some());
    assert!(replay.order(9, o3.id).is_none());
    replay.check_invariants().unwrap();
    // Reverting again (an abort record delivered twice) changes nothing.
    for ev in aborted.iter().rev() {
        replay.revert_replayed(ev);
    }
    assert_eq!(
        replay.activity(a).unwrap().counters(),
        Counters {
            remaining: 5,
            reserved: 2,
            sold: 3
        }
    );
    replay.check_invariants().unwrap();
}

fn created(p: Result<Placed, Reject>) -> OrderView {
    match p {
        Ok(Placed::Created(o)) => o,
        other => panic!("expected a new order, got {other:?}"),
    }
}
