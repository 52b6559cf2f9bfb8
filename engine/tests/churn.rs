//! Proves one buyer's churn is bounded: past `sale_user_orders_max`
//! a purchase is `409 too_many_orders` and changes nothing (state, events),
//! the cap survives replay, snapshots and reverts, a log from before the
//! cap still replays, and the invariant check still finds a request id on
//! two orders of one user.

mod common;

use common::*;
use flashd_engine::*;
use proptest::prelude::*;

/// A purchase a millisecond into the sale.
fn buy(
    e: &Engine,
    a: ActivityId,
    user: UserId,
    q: u32,
    rid: &str,
    log: &mut Vec<Event>,
) -> Result<Placed, Reject> {
    common::buy(e, a, user, q, rid, T0 + 1, log)
}

fn created(p: Result<Placed, Reject>) -> OrderView {
    match p {
        Ok(Placed::Created(o)) => o,
        other => panic!("expected a new order, got {other:?}"),
    }
}

/// User 7 loops buy→cancel on a sale with limit `limit` until refused;
/// returns the number of orders created.
fn churn(e: &Engine, a: ActivityId, limit: u32, log: &mut Vec<Event>) -> u32 {
    let mut n = 0;
    loop {
        match buy(e, a, 7, limit, &format!("loop-{n}"), log) {
            Ok(Placed::Created(o)) => {
                e.cancel(7, o.id, T0 + 2, log).unwrap();
                n += 1;
            }
            Err(Reject::TooManyOrders) => return n,
            other => panic!("order {n}: {other:?}"),
        }
        assert!(n <= 10_000, "no cap");
    }
}

#[test]
fn a_create_cancel_loop_stops_at_the_cap_and_changes_nothing_there() {
    for limit in [1, 3, PER_USER_LIMIT_MAX] {
        let e = engine();
        let mut log = Vec::new();
        let a = e
            .create_activity(&spec(1_000_000, limit), T0, &mut log)
            .unwrap()
            .id;
        let n = churn(&e, a, limit, &mut log);
        assert_eq!(n, sale_user_orders_max(limit));
        assert_eq!(n, limit + SALE_USER_EXTRA_ORDERS);

        // Refused past the cap: 409 with its own code, no event, no change.
        let before = (e.dump(), log.len());
        let r = buy(&e, a, 7, 1, "one-more", &mut log);
        assert_eq!(r, Err(Reject::TooManyOrders));
        assert_eq!(Reject::TooManyOrders.status(), 409);
        assert_eq!(Reject::TooManyOrders.code(), "too_many_orders");
        assert_eq!((e.dump(), log.len()), before);
        e.check_invariants().unwrap();

        // A retry of an order already made still gets it back (idempotency
        // comes first), and other buyers and other sales are untouched.
        let Ok(Placed::Existing(o)) = buy(&e, a, 7, limit, "loop-0", &mut log) else {
            panic!("a retry gets its order")
        };
        assert_eq!(o.status, OrderStatus::Cancelled);
        created(buy(&e, a, 8, 1, "other-user", &mut log));
        let b = e
            .create_activity(&spec(10, limit), T0, &mut log)
            .unwrap()
            .id;
        created(buy(&e, b, 7, 1, "other-sale", &mut log));

        // The cap is kept state: a replay of the log and a snapshot of it
        // refuse the same purchase.
        let r = engine();
        for ev in &log {
            r.apply(ev).unwrap();
        }
        assert_eq!(r.dump(), e.dump());
        r.check_invariants().unwrap();
        let f = engine();
        f.load(&e.export()).unwrap();
        assert_eq!(f.dump(), e.dump());
        f.check_invariants().unwrap();
        for g in [&r, &f] {
            let mut l = Vec::new();
            assert_eq!(buy(g, a, 7, 1, "after", &mut l), Err(Reject::TooManyOrders));
            assert!(l.is_empty());
        }
    }
}

#[test]
fn the_cap_counts_orders_that_time_out_and_those_paid() {
    let e = engine();
    let mut log = Vec::new();
    let a = e.create_activity(&spec(1_000, 2), T0, &mut log).unwrap().id;
    let paid = created(buy(&e, a, 7, 1, "paid", &mut log));
    e.pay(7, paid.id, T0 + 2, &mut log).unwrap();
    // The other unit of the limit, left to time out, again and again.
    let mut n = 1;
    let mut now = T0 + 1;
    loop {
        let r = e.place_order(
            &PlaceOrder {
                activity_id: a,
                user_id: 7,
                quantity: 1,
                request_id: &format!("t{n}"),
            },
            now,
            &mut log,
        );
        match r {
            Ok(Placed::Created(_)) => n += 1,
            Err(Reject::TooManyOrders) => break,
            other => panic!("{other:?}"),
        }
        now += 60_000;
        assert_eq!(e.expire_due(now, usize::MAX, &mut log), 1);
    }
    assert_eq!(n, sale_user_orders_max(2));
    e.check_invariants().unwrap();
}

#[test]
fn a_reverted_creation_does_not_count() {
    // The client of a creation the log failed to make durable was told
    // 503: its order never existed, and neither does its place under the
    // cap.
    let e = Engine::new(EngineConfig {
        node_id: 3,
        order_ttl_ms: 60_000,
        max_activities: 16,
        hold_released_until_durable: true,
    });
    let mut log = Vec::new();
    let a = e.create_activity(&spec(1_000, 1), T0, &mut log).unwrap().id;
    let n = churn(&e, a, 1, &mut log);
    // The log failed the last creation and its cancel: the rest is
    // durable, those two are undone (newest first).
    let tail: Vec<Event> = log.split_off(log.len() - 2);
    for ev in &log {
        e.durable(ev);
    }
    for ev in tail.iter().rev() {
        e.revert(ev);
    }
    e.check_invariants().unwrap();
    let o = created(buy(&e, a, 7, 1, "again", &mut log));
    // Holding the limit, the limit answers first; once that order is
    // cancelled too, the cap does.
    assert_eq!(
        buy(&e, a, 7, 1, "and-again", &mut log),
        Err(Reject::LimitReached)
    );
    e.cancel(7, o.id, T0 + 2, &mut log).unwrap();
    assert_eq!(
        buy(&e, a, 7, 1, "and-again", &mut log),
        Err(Reject::TooManyOrders)
    );
    assert_eq!(n, sale_user_orders_max(1));
    e.check_invariants().unwrap();
}

#[test]
fn a_log_from_before_the_cap_still_replays_and_then_refuses() {
    // 70,000 orders of one user in one sale: what an unbounded loop left
    // in a log written before the cap (and more than its record counts).
    const ORDERS: u64 = 70_000;
    let e = engine();
    let mut events = vec![Event::ActivityCreated {
        id: 1,
        sku_id: "s".into(),
        name: "n".into(),
        price_cents: 1,
        stock: 10,
        start_at: T0,
        end_at: T0 + 3_600_000,
        per_user_limit: 1,
        created_at: T0,
    }];
    for i in 0..ORDERS {
        events.push(Event::OrderCreated {
            order_id: 1_000 + i,
            activity_id: 1,
            user_id: 7,
            quantity: 1,
            amount_cents: 1,
            request_id: format!("r{i}").into(),
            created_at: T0 + 1,
            expires_at: T0 + 60_000,
        });
        events.push(Event::OrderCancelled {
            order_id: 1_000 + i,
            activity_id: 1,
            user_id: 7,
            quantity: 1,
            reason: CancelReason::User,
            at: T0 + 1,
        });
    }
    for ev in &events {
        e.apply(ev).unwrap();
    }
    e.check_invariants().unwrap();
    let mut log = Vec::new();
    assert_eq!(
        buy(&e, 1, 7, 1, "new", &mut log),
        Err(Reject::TooManyOrders)
    );
    // Its snapshot loads and checks too.
    let f = engine();
    f.load(&e.export()).unwrap();
    f.check_invariants().unwrap();
    assert_eq!(
        buy(&f, 1, 7, 1, "new", &mut log),
        Err(Reject::TooManyOrders)
    );
    // Undoing some of them (an abort record) leaves a consistent state.
    for ev in events[events.len() - 10..].iter().rev() {
        e.revert_replayed(ev);
    }
    e.check_invariants().unwrap();
    assert!(log.is_empty());
}

#[test]
fn the_invariant_check_finds_one_request_id_on_two_orders_of_a_user() {
    let e = engine();
    let mut log = Vec::new();
    let a = e.create_activity(&spec(100, 5), T0, &mut log).unwrap().id;
    for u in 1..=50 {
        created(buy(&e, a, u, 1, "first", &mut log));
        created(buy(&e, a, u, 1, "second", &mut log));
    }
    let snap = e.export();
    let ok = engine();
    ok.load(&snap).unwrap();
    ok.check_invariants().unwrap();

    // Damage: user 20's second order takes the request key of their first.
    let mut dup = snap.clone();
    let first = dup
        .orders
        .iter()
        .find(|o| o.user_id == 20 && o.request_key == RequestKey::of("first"))
        .unwrap()
        .request_key;
    let second = dup
        .orders
        .iter_mut()
        .find(|o| o.user_id == 20 && o.request_key == RequestKey::of("second"))
        .unwrap();
    second.request_key = first;
    let bad = engine();
    bad.load(&dup).unwrap();
    let err = bad.check_invariants().unwrap_err();
    assert!(
        err.contains("user 20 has one request id on two orders"),
        "{err}"
    );

    // The same key on two different users is not damage.
    let mut shared = snap.clone();
    for o in &mut shared.orders {
        if o.request_key == RequestKey::of("second") {
            o.request_key = RequestKey::of("everyone");
        }
    }
    let fine = engine();
    fine.load(&shared).unwrap();
    fine.check_invariants().unwrap();
}

#[test]
fn the_invariant_check_finds_a_limit_broken_by_a_loaded_snapshot() {
    // A snapshot whose orders hold more than the limit (the records are
    // rebuilt from the orders at load): refused by the check.
    let e = engine();
    let mut log = Vec::new();
    let a = e.create_activity(&spec(100, 2), T0, &mut log).unwrap().id;
    created(buy(&e, a, 5, 2, "r", &mut log));
    let mut snap = e.export();
    snap.orders[0].quantity = 3;
    snap.activities[0].reserved = 3;
    snap.activities[0].remaining = 97;
    let bad = engine();
    bad.load(&snap).unwrap();
    let err = bad.check_invariants().unwrap_err();
    assert!(
        err.contains("user 5 holds 3 of activity 1, limit 2"),
        "{err}"
    );
}

#[derive(Debug, Clone)]
enum Churn {
    /// A purchase with a fresh request id, or a retry of an earlier one.
    Buy {
        sale: u8,
        user: u8,
        qty: u8,
        retry: Option<u8>,
    },
    /// Cancel the user's newest unpaid order.
    Cancel {
        user: u8,
    },
    /// Pay the user's newest unpaid order.
    Pay {
        user: u8,
    },
    Expire,
    Tick(u16),
}

fn churn_cmd() -> impl Strategy<Value = Churn> {
    prop_oneof![
        12 => (0u8..2, 0u8..2, prop_oneof![4 => Just(1u8), 1 => Just(2u8)], proptest::option::weighted(0.2, 0u8..8))
            .prop_map(|(sale, user, qty, retry)| Churn::Buy { sale, user, qty, retry }),
        12 => (0u8..2).prop_map(|user| Churn::Cancel { user }),
        1 => (0u8..2).prop_map(|user| Churn::Pay { user }),
        1 => Just(Churn::Expire),
        1 => (0u16..2_000).prop_map(Churn::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Two buyers churning on two small sales until the cap stops them
    /// (in about half the cases; the rest stop at a paid limit first):
    /// every invariant holds after every step, a refusal at the cap
    /// changes nothing, no (user, sale) exceeds the cap, and replaying the
    /// log or loading a snapshot gives the same state, which answers the
    /// next purchase the same way.
    #[test]
    fn churn_to_the_cap_keeps_invariants_and_replays(cmds in proptest::collection::vec(churn_cmd(), 100..500)) {
        let e = engine();
        let mut log = Vec::new();
        let mut now = T0 + 1;
        for limit in [1u32, 2] {
            e.create_activity(&spec(1_000, limit), T0, &mut log).unwrap();
        }
        let mut made: Vec<String> = Vec::new();
        for c in &cmds {
            match c {
                Churn::Buy { sale, user, qty, retry } => {
                    let rid = match retry {
                        Some(k) if !made.is_empty() => made[*k as usize % made.len()].clone(),
                        _ => format!("r{}", made.len()),
                    };
                    let before = (e.dump(), log.len());
                    let r = e.place_order(
                        &PlaceOrder { activity_id: *sale as u32 + 1, user_id: *user as u64 + 1, quantity: *qty as u32, request_id: &rid },
                        now,
                        &mut log,
                    );
                    match r {
                        Ok(Placed::Created(_)) => made.push(rid),
                        Err(Reject::TooManyOrders) => {
                            prop_assert_eq!((e.dump(), log.len()), before);
                        }
                        _ => {}
                    }
                }
                Churn::Cancel { user } | Churn::Pay { user } => {
                    let u = *user as u64 + 1;
                    let newest = e.dump().orders.into_iter().filter(|o| o.user_id == u && o.status == OrderStatus::Created).max_by_key(|o| o.id);
                    if let Some(o) = newest {
                        let _ = if matches!(c, Churn::Pay { .. }) { e.pay(u, o.id, now, &mut log) } else { e.cancel(u, o.id, now, &mut log) };
                    }
                }
                Churn::Expire => { e.expire_due(now, usize::MAX, &mut log); }
                Churn::Tick(ms) => now += *ms as u64 * 10,
            }
            e.check_invariants().map_err(TestCaseError::fail)?;
        }
        let dump = e.dump();
        for u in 1..=2u64 {
            for a in 1..=2u32 {
                let n = dump.orders.iter().filter(|o| o.user_id == u && o.activity_id == a).count() as u32;
                prop_assert!(n <= sale_user_orders_max(a), "user {} sale {}: {} orders", u, a, n);
            }
        }
        let r = engine();
        for ev in &log {
            r.apply(ev).unwrap();
        }
        prop_assert_eq!(r.dump(), dump.clone());
        r.check_invariants().map_err(TestCaseError::fail)?;
        let f = engine();
        f.load(&e.export()).unwrap();
        prop_assert_eq!(f.dump(), dump);
        f.check_invariants().map_err(TestCaseError::fail)?;
        // The same next purchase gets the same kind of answer everywhere.
        for u in 1..=2u64 {
            for a in 1..=2u32 {
                let cmd = PlaceOrder { activity_id: a, user_id: u, quantity: 1, request_id: "probe" };
                let kind = |g: &Engine| match g.place_order(&cmd, now, &mut Vec::new()) {
                    Ok(Placed::Created(_)) => Ok("created"),
                    Ok(Placed::Existing(_)) => Ok("existing"),
                    Err(x) => Err(x),
                };
                let want = kind(&e);
                prop_assert_eq!(kind(&r), want);
                prop_assert_eq!(kind(&f), want);
            }
        }
    }
}
