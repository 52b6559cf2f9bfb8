//! Purchases decided in Redis by many "nodes" (threads, each with its own
//! client) at once, against a private redis-server.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use common::*;
use flashd_redis::{Buy, ClaimStatus, Decision, RedisClient, SaleSpec};

fn create(c: &RedisClient, sale: u32, spec: SaleSpec) {
    assert!(c.create_sale(sale, spec).wait().unwrap());
}

#[test]
fn many_nodes_sell_exactly_the_stock_and_retries_get_their_order() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let (sale, stock, limit, users) = (1, 500u64, 2u32, 2000u64);
    let now = now_ms();
    create(&r.client(0), sale, spec(stock, limit, now));
    // (user, request id) → (quantity, order id), from the first answer.
    let seen: Mutex<HashMap<(u64, String), (u32, u64)>> = Mutex::new(HashMap::new());
    let granted: Mutex<Vec<(u64, u64, u32)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for node in 1..=4u16 {
            let (seen, granted, url_client) = (&seen, &granted, r.client(node));
            s.spawn(move || {
                let ids = Ids::new(node, now);
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(node));
                for round in 0..60 {
                    let n = 1 + rng.below(64) as usize;
                    let mut batch: Vec<Buy> = Vec::with_capacity(n);
                    for k in 0..n {
                        let user = 1 + rng.below(users);
                        // One in four re-sends a request id some node used.
                        let retry = rng.below(4) == 0;
                        let old = if retry {
                            let g = seen.lock().unwrap();
                            g.iter()
                                .nth(rng.below(g.len().max(1) as u64) as usize)
                                .map(|((u, q), (qty, _))| (*u, q.clone(), *qty))
                        } else {
                            None
                        };
                        let (u, req, qty) = old.unwrap_or_else(|| {
                            (
                                user,
                                format!("n{node}-r{round}-{k}"),
                                1 + rng.below(2) as u32,
                            )
                        });
                        batch.push(buy(&ids, u, &req, qty, now));
                    }
                    let out = url_client.buy(sale, now, batch.clone()).wait().unwrap();
                    assert_eq!(out.len(), batch.len());
                    let mut g = seen.lock().unwrap();
                    for (b, d) in batch.iter().zip(&out) {
                        let key = (b.user, b.request_id.clone());
                        if let Decision::Granted(c) = d {
                            assert_eq!(c.order_id, b.order_id);
                            assert_eq!(c.node, node);
                            granted
                                .lock()
                                .unwrap()
                                .push((c.order_id, c.user, c.quantity));
                        }
                        if let Some(c) = d.claim() {
                            assert!(matches!(d, Decision::Granted(_) | Decision::Existing(_)));
                            match g.get(&key) {
                                Some(&(q, id)) => {
                                    assert_eq!(
                                        id, c.order_id,
                                        "a retry of {key:?} got another order"
                                    );
                                    assert_eq!(q, c.quantity);
                                }
                                None => {
                                    g.insert(key, (b.quantity, c.order_id));
                                }
                            }
                        } else {
                            assert!(
                                matches!(d, Decision::SoldOut | Decision::LimitReached),
                                "{d:?}"
                            );
                            // A refused request id has no order: a retry is
                            // decided afresh, so forget it.
                        }
                    }
                }
            });
        }
    });
    let granted = granted.into_inner().unwrap();
    let sold: u64 = granted.iter().map(|g| u64::from(g.2)).sum();
    assert_eq!(sold, stock, "demand was above stock: all of it goes");
    let ids: BTreeSet<u64> = granted.iter().map(|g| g.0).collect();
    assert_eq!(ids.len(), granted.len(), "an order id granted twice");
    let mut per_user: BTreeMap<u64, u32> = BTreeMap::new();
    for g in &granted {
        *per_user.entry(g.1).or_default() += g.2;
    }
    assert!(per_user.values().all(|h| *h <= limit));
    let st = r.client(9).read_sale(sale).wait().unwrap().unwrap();
    assert_eq!(st.check(), Vec::<String>::new());
    assert_eq!((st.sold, st.reserved, st.remaining()), (0, stock, 0));
    assert_eq!(st.claims.len(), granted.len());
    assert_eq!(st.held, per_user);
}

#[test]
fn limit_one_holds_for_the_same_users_on_every_node_at_once() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let (sale, users) = (2, 50u64);
    let now = now_ms();
    create(&r.client(0), sale, spec(1000, 1, now));
    let wins: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for node in 1..=4u16 {
            let (wins, c) = (&wins, r.client(node));
            s.spawn(move || {
                let ids = Ids::new(node, now);
                for round in 0..5 {
                    // Every node sends every user, each with its own request id.
                    let batch: Vec<Buy> = (1..=users)
                        .map(|u| buy(&ids, u, &format!("n{node}-{round}"), 1, now))
                        .collect();
                    for (b, d) in batch
                        .iter()
                        .zip(c.buy(sale, now, batch.clone()).wait().unwrap())
                    {
                        match d {
                            Decision::Granted(_) => wins.lock().unwrap().push(b.user),
                            Decision::LimitReached => {}
                            other => panic!("{other:?}"),
                        }
                    }
                }
            });
        }
    });
    let mut wins = wins.into_inner().unwrap();
    wins.sort_unstable();
    assert_eq!(
        wins,
        (1..=users).collect::<Vec<_>>(),
        "each user exactly once"
    );
    let st = r.client(0).read_sale(sale).wait().unwrap().unwrap();
    assert_eq!(st.check(), Vec::<String>::new());
    assert_eq!(st.reserved, users);
}

#[test]
fn stock_zero_one_and_exactly_one_batch() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let c = r.client(1);
    let ids = Ids::new(1, now_ms());
    let now = now_ms();
    let batch =
        |n: u64, tag: &str| -> Vec<Buy> { (1..=n).map(|u| buy(&ids, u, tag, 1, now)).collect() };
    // Stock 0: nothing.
    create(&c, 10, spec(0, 5, now));
    let out = c.buy(10, now, batch(8, "a")).wait().unwrap();
    assert!(out.iter().all(|d| *d == Decision::SoldOut), "{out:?}");
    // Stock 1: exactly the first of a batch, then nothing.
    create(&c, 11, spec(1, 5, now));
    let out = c.buy(11, now, batch(8, "a")).wait().unwrap();
    assert!(matches!(out[0], Decision::Granted(_)));
    assert!(out[1..].iter().all(|d| *d == Decision::SoldOut), "{out:?}");
    let out = c.buy(11, now, batch(8, "b")).wait().unwrap();
    assert!(out.iter().all(|d| *d == Decision::SoldOut));
    // Stock exactly one batch: all of it, then nothing.
    create(&c, 12, spec(64, 5, now));
    let out = c.buy(12, now, batch(64, "a")).wait().unwrap();
    assert!(
        out.iter().all(|d| matches!(d, Decision::Granted(_))),
        "{out:?}"
    );
    let out = c.buy(12, now, batch(64, "b")).wait().unwrap();
    assert!(out.iter().all(|d| *d == Decision::SoldOut));
    for sale in [10, 11, 12] {
        let st = c.read_sale(sale).wait().unwrap().unwrap();
        assert_eq!(st.check(), Vec::<String>::new());
        assert_eq!(st.remaining(), 0);
    }
}

#[test]
fn refusals_and_retries_inside_one_batch() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let c = r.client(3);
    let now = now_ms();
    let ids = Ids::new(3, now);
    // No such sale.
    let out = c
        .buy(99, now, vec![buy(&ids, 1, "x", 1, now)])
        .wait()
        .unwrap();
    assert_eq!(out, vec![Decision::NoSale]);
    create(&c, 20, spec(100, 2, now));
    // Creating it again with the same spec is fine; another spec is not.
    assert!(!c.create_sale(20, spec(100, 2, now)).wait().unwrap());
    assert!(c.create_sale(20, spec(101, 2, now)).wait().is_err());
    let s = spec(100, 2, now);
    let out = c
        .buy(
            20,
            now,
            vec![
                buy(&ids, 1, "a", 1, now),
                buy(&ids, 1, "a", 1, now), // same request in the same batch
                buy(&ids, 1, "a", 2, now), // same request, other quantity
                buy(&ids, 1, "b", 2, now), // over the limit of 2
                buy(&ids, 1, "c", 1, now), // up to it
                buy(&ids, 2, "", 1, now),  // invalid
                buy(&ids, 2, "d", 0, now), // invalid
            ],
        )
        .wait()
        .unwrap();
    let first = match &out[0] {
        Decision::Granted(c) => c.clone(),
        d => panic!("{d:?}"),
    };
    assert_eq!(out[1], Decision::Existing(first.clone()));
    assert_eq!(out[2], Decision::Conflict(first.clone()));
    assert_eq!(out[3], Decision::LimitReached);
    assert!(matches!(out[4], Decision::Granted(_)));
    assert_eq!(&out[5..], &[Decision::Invalid, Decision::Invalid]);
    // Before the start and after the end.
    let out = c
        .buy(20, s.start_at - 1, vec![buy(&ids, 5, "e", 1, now)])
        .wait()
        .unwrap();
    assert_eq!(out, vec![Decision::NotStarted]);
    let out = c
        .buy(20, s.end_at, vec![buy(&ids, 5, "e", 1, now)])
        .wait()
        .unwrap();
    assert_eq!(out, vec![Decision::Ended]);
    // A retry is answered with its order even after the end.
    let out = c
        .buy(20, s.end_at, vec![buy(&ids, 1, "a", 1, now)])
        .wait()
        .unwrap();
    assert_eq!(out, vec![Decision::Existing(first.clone())]);
    assert_eq!(first.status, ClaimStatus::Created);
    // Too many orders: churn through cancels up to limit + 16 orders.
    create(&c, 21, spec(1000, 1, now));
    let mut made = 0;
    loop {
        let out = c
            .buy(21, now, vec![buy(&ids, 7, &format!("m{made}"), 1, now)])
            .wait()
            .unwrap();
        match &out[0] {
            Decision::Granted(g) => {
                made += 1;
                let s = c
                    .settle(
                        21,
                        now,
                        vec![flashd_redis::Settle::Cancel {
                            user: 7,
                            order_id: g.order_id,
                        }],
                    )
                    .wait()
                    .unwrap();
                assert!(matches!(s[0], flashd_redis::Settled::Cancelled(_)));
            }
            Decision::TooManyOrders => break,
            d => panic!("{d:?}"),
        }
    }
    assert_eq!(made, flashd_engine::sale_user_orders_max(1));
    for sale in [20, 21] {
        let st = c.read_sale(sale).wait().unwrap().unwrap();
        assert_eq!(st.check(), Vec::<String>::new());
    }
}

#[test]
fn scripts_flushed_from_redis_are_loaded_again() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let c = r.client(1);
    let now = now_ms();
    let ids = Ids::new(1, now);
    create(&c, 30, spec(10, 5, now));
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut r.conn())
        .unwrap();
    let out = c
        .buy(30, now, vec![buy(&ids, 1, "a", 1, now)])
        .wait()
        .unwrap();
    assert!(matches!(out[0], Decision::Granted(_)));
}

#[test]
fn a_retry_on_another_node_gets_the_claim_its_maker_stored() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let (a, b) = (r.client(1), r.client(2));
    let now = now_ms();
    let sale = 31;
    create(&a, sale, spec(10, 1, now));
    // Node 1 decides, then (say) dies before logging: node 2 gets the retry.
    let first = a
        .buy(sale, now, vec![buy(&Ids::new(1, now), 5, "req-1", 1, now)])
        .wait()
        .unwrap();
    let Decision::Granted(made) = &first[0] else {
        panic!("{first:?}")
    };
    let retry = b
        .buy(
            sale,
            now + 7,
            vec![buy(&Ids::new(2, now), 5, "req-1", 1, now + 7)],
        )
        .wait()
        .unwrap();
    assert_eq!(retry, vec![Decision::Existing(made.clone())]);
    // Everything node 2 needs to log the order its maker never logged.
    assert_eq!(made.node, 1);
    assert_eq!(
        retry[0].claim().unwrap().created_event(sale),
        made.created_event(sale)
    );
}

#[test]
fn a_batch_larger_than_one_script_call_is_split_and_still_exact() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let c = r.client(1);
    let now = now_ms();
    let ids = Ids::new(1, now);
    let n = flashd_redis::script::BATCH_MAX as u64 + 1000;
    let stock = n - 500;
    create(&c, 32, spec(stock, 1, now));
    let batch: Vec<Buy> = (1..=n).map(|u| buy(&ids, u, "big", 1, now)).collect();
    let out = c.buy(32, now, batch).wait().unwrap();
    let granted = out
        .iter()
        .filter(|d| matches!(d, Decision::Granted(_)))
        .count() as u64;
    assert_eq!(granted, stock);
    assert!(out[stock as usize..]
        .iter()
        .all(|d| *d == Decision::SoldOut));
    let st = c.read_sale(32).wait().unwrap().unwrap();
    assert_eq!(st.check(), Vec::<String>::new());
    assert_eq!(st.remaining(), 0);
}

/// Quantities ride in one argument, two bytes each: one over a byte (256
/// and up) must arrive whole, and a buyer's later purchase in the same
/// batch must extend the record the first one made there.
#[test]
fn quantities_over_a_byte_and_a_buyer_twice_in_one_batch() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let c = r.client(5);
    let now = now_ms();
    let ids = Ids::new(5, now);
    let max = flashd_engine::QUANTITY_MAX;
    create(&c, 30, spec(10_000, max, now));
    let out = c
        .buy(
            30,
            now,
            vec![
                buy(&ids, 1, "a", 300, now),
                buy(&ids, 1, "b", 1, now),
                buy(&ids, 2, "c", max, now),
                buy(&ids, 1, "d", max - 300, now), // 1 over the limit
                buy(&ids, 1, "e", max - 301, now), // up to it
                buy(&ids, 1, "b", 1, now),         // a retry of the second
            ],
        )
        .wait()
        .unwrap();
    let granted: Vec<u32> = out
        .iter()
        .filter_map(|d| match d {
            Decision::Granted(g) => Some(g.quantity),
            _ => None,
        })
        .collect();
    assert_eq!(granted, vec![300, 1, max, max - 301]);
    assert_eq!(out[3], Decision::LimitReached);
    match (&out[1], &out[5]) {
        (Decision::Granted(g), Decision::Existing(e)) => assert_eq!(g, e),
        d => panic!("{d:?}"),
    }
    let st = c.read_sale(30).wait().unwrap().unwrap();
    assert_eq!(st.check(), Vec::<String>::new());
    assert_eq!(st.reserved, u64::from(2 * max));
    assert_eq!(st.held, BTreeMap::from([(1, max), (2, max)]));
    assert_eq!(st.claims.len(), 4);
}
