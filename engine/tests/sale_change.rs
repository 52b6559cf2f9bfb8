//! Proves an admin's changes of a sale (added stock, a moved or ended
//! window): they apply, wait for durability before units go on sale, undo
//! exactly, replay and survive a snapshot to the same state, and adding
//! stock under a stampede of buyers never oversells.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flashd_engine::*;

const T0: Millis = 1_800_000_000_000;
const HOUR: Millis = 3_600_000;

fn spec(stock: u64) -> ActivitySpec {
    ActivitySpec {
        sku_id: "SKU-1".into(),
        name: "Phone".into(),
        price_cents: 100,
        stock,
        start_at: T0,
        end_at: T0 + HOUR,
        per_user_limit: 5,
    }
}

fn engine(hold: bool) -> Engine {
    Engine::new(EngineConfig {
        node_id: 1,
        order_ttl_ms: 60_000,
        max_activities: 8,
        hold_released_until_durable: hold,
    })
}

fn buy(
    e: &Engine,
    user: UserId,
    q: u32,
    now: Millis,
    log: &mut Vec<Event>,
) -> Result<Placed, Reject> {
    let rid = format!("r-{user}-{now}");
    e.place_order(
        &PlaceOrder {
            activity_id: 1,
            user_id: user,
            quantity: q,
            request_id: &rid,
        },
        now,
        log,
    )
}

/// A fresh engine fed `log` by replay.
fn replayed(log: &[Event]) -> Engine {
    let r = engine(false);
    for ev in log {
        r.apply(ev).unwrap();
    }
    r
}

#[test]
fn added_stock_goes_on_sale_once_durable_and_undoes_exactly() {
    let e = engine(true);
    let mut log = Vec::new();
    e.create_activity(&spec(2), T0 - 10, &mut log).unwrap();
    let now = T0 + 1;
    buy(&e, 1, 2, now, &mut log).unwrap();
    assert_eq!(buy(&e, 2, 1, now, &mut log), Err(Reject::SoldOut));

    let v = e.add_stock(1, 3, now, &mut log).unwrap();
    assert_eq!(v.stock, 5);
    // Not on sale until the log holds the addition.
    assert_eq!(v.remaining, 0);
    assert_eq!(buy(&e, 2, 1, now, &mut log), Err(Reject::SoldOut));
    e.check_invariants().unwrap();
    let add = log.last().unwrap().clone();
    assert_eq!(
        add,
        Event::StockAdded {
            id: 1,
            added: 3,
            at: now
        }
    );

    // The write failed: undone, as if never asked.
    e.revert(&add);
    let a = e.activity(1).unwrap().view(now);
    assert_eq!((a.stock, a.remaining, a.reserved), (2, 0, 2));
    e.check_invariants().unwrap();
    log.pop();

    // Asked again, made durable: on sale.
    e.add_stock(1, 3, now, &mut log).unwrap();
    e.durable(log.last().unwrap());
    let a = e.activity(1).unwrap().view(now);
    assert_eq!((a.stock, a.remaining), (5, 3));
    buy(&e, 2, 3, now, &mut log).unwrap();
    e.check_invariants().unwrap();
    assert_eq!(replayed(&log).dump(), e.dump());
}

#[test]
fn stock_additions_are_bounded() {
    let e = engine(false);
    let mut log = Vec::new();
    e.create_activity(&spec(10), T0 - 10, &mut log).unwrap();
    let n = log.len();
    assert_eq!(e.add_stock(1, 0, T0, &mut log), Err(Reject::Invalid));
    assert_eq!(
        e.add_stock(1, STOCK_MAX + 1, T0, &mut log),
        Err(Reject::Invalid)
    );
    assert_eq!(
        e.add_stock(1, STOCK_MAX - 9, T0, &mut log),
        Err(Reject::StockFull)
    );
    assert_eq!(e.add_stock(2, 1, T0, &mut log), Err(Reject::NotFound));
    assert_eq!(
        e.add_stock(1, 1, T0 + HOUR, &mut log),
        Err(Reject::SaleOver)
    );
    assert_eq!(log.len(), n, "refusals emit nothing");
    assert_eq!(e.activity(1).unwrap().stock(), 10);
    // Up to the bound exactly.
    e.add_stock(1, STOCK_MAX - 10, T0, &mut log).unwrap();
    assert_eq!(e.activity(1).unwrap().stock(), STOCK_MAX);
    e.check_invariants().unwrap();
}

#[test]
fn ending_early_stops_buys_at_once_and_undoes_to_the_old_window() {
    let e = engine(true);
    let mut log = Vec::new();
    e.create_activity(&spec(10), T0 - 10, &mut log).unwrap();
    let now = T0 + 100;
    buy(&e, 1, 1, now, &mut log).unwrap();
    let v = e.end_sale(1, now, &mut log).unwrap();
    assert_eq!(
        (v.start_at, v.end_at, v.state),
        (T0, now, ActivityState::Ended)
    );
    assert_eq!(buy(&e, 2, 1, now, &mut log), Err(Reject::Ended));
    let ended = log.last().unwrap().clone();
    assert_eq!(
        ended,
        Event::ActivityWindowChanged {
            id: 1,
            start_at: T0,
            end_at: now,
            prev_start_at: T0,
            prev_end_at: T0 + HOUR,
            at: now
        }
    );
    // Ended: it cannot change any more.
    let n = log.len();
    assert_eq!(
        e.change_window(1, None, Some(now + 5), now + 1, &mut log),
        Err(Reject::SaleOver)
    );
    assert_eq!(e.add_stock(1, 1, now + 1, &mut log), Err(Reject::SaleOver));
    assert_eq!(log.len(), n);
    // Its write failed: open again until the old end.
    e.revert(&ended);
    let a = e.activity(1).unwrap();
    assert_eq!((a.start_at(), a.end_at()), (T0, T0 + HOUR));
    buy(&e, 2, 1, now + 1, &mut log).unwrap();
    e.check_invariants().unwrap();
}

#[test]
fn ending_a_sale_not_started_yet_means_it_never_opens() {
    let e = engine(false);
    let mut log = Vec::new();
    e.create_activity(&spec(10), T0 - 10, &mut log).unwrap();
    let now = T0 - 5;
    let v = e.end_sale(1, now, &mut log).unwrap();
    assert_eq!(
        (v.start_at, v.end_at, v.state),
        (now, now, ActivityState::Ended)
    );
    assert_eq!(buy(&e, 1, 1, T0 + 1, &mut log), Err(Reject::Ended));
    assert_eq!(e.end_sale(1, now, &mut log), Err(Reject::SaleOver));
    assert_eq!(e.end_sale(2, now, &mut log), Err(Reject::NotFound));
    assert_eq!(replayed(&log).dump(), e.dump());
}

#[test]
fn window_changes_undone_newest_first_restore_the_first_window() {
    let e = engine(true);
    let mut log = Vec::new();
    e.create_activity(&spec(10), T0 - 10, &mut log).unwrap();
    let now = T0 - 5;
    let n = log.len();
    e.change_window(1, Some(T0 + 10), Some(T0 + 2 * HOUR), now, &mut log)
        .unwrap();
    e.change_window(1, None, Some(T0 + 3 * HOUR), now, &mut log)
        .unwrap();
    // The same window again: no event.
    e.change_window(1, None, Some(T0 + 3 * HOUR), now, &mut log)
        .unwrap();
    assert_eq!(log.len(), n + 2);
    let a = e.activity(1).unwrap();
    assert_eq!((a.start_at(), a.end_at()), (T0 + 10, T0 + 3 * HOUR));
    assert_eq!(replayed(&log).dump(), e.dump());
    for ev in log[n..].iter().rev() {
        e.revert(ev);
    }
    assert_eq!((a.start_at(), a.end_at()), (T0, T0 + HOUR));
}

#[test]
fn a_snapshot_after_changes_restores_them_and_a_batch_replays_them() {
    let e = engine(false);
    let mut log = Vec::new();
    e.create_activity(&spec(4), T0 - 10, &mut log).unwrap();
    let now = T0 + 1;
    buy(&e, 1, 3, now, &mut log).unwrap();
    e.add_stock(1, 6, now, &mut log).unwrap();
    buy(&e, 2, 5, now, &mut log).unwrap();
    e.change_window(1, None, Some(T0 + 2 * HOUR), now, &mut log)
        .unwrap();
    e.check_invariants().unwrap();

    let snap = e.export();
    let s = &snap.activities[0];
    assert_eq!((s.spec.stock, s.spec.end_at), (10, T0 + 2 * HOUR));
    let loaded = engine(false);
    loaded.load(&snap).unwrap();
    loaded.check_invariants().unwrap();
    assert_eq!(loaded.dump(), e.dump());

    // The log applied as a batch (sale events first, then orders by
    // stripe) rebuilds the same state, even though an order took units
    // the addition brought.
    let batch = engine(false);
    let evs: Vec<(u64, Event)> = log.iter().cloned().zip(1..).map(|(e, l)| (l, e)).collect();
    batch.apply_batch(&evs).unwrap();
    batch.check_invariants().unwrap();
    assert_eq!(batch.dump(), e.dump());

    // A change of a sale that does not exist is a log that is not ours.
    let r = engine(false);
    assert_eq!(
        r.apply(&log[2]),
        Err(ReplayError::UnknownSale {
            id: 1,
            event: EventKind::StockAdded
        })
    );
}

#[test]
fn adding_stock_under_a_stampede_never_oversells() {
    const START: u64 = 100;
    const ADDS: u64 = 50;
    const THREADS: u64 = 6;
    let e = Arc::new(engine(true));
    let mut log = Vec::new();
    e.create_activity(&spec(START), T0 - 10, &mut log).unwrap();
    let sold = Arc::new(AtomicU64::new(0));
    let now = T0 + 1;
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let (e, sold) = (e.clone(), sold.clone());
            sc.spawn(move || {
                let mut log = Vec::new();
                for u in 0..2_000u64 {
                    let user = t * 1_000_000 + u;
                    if let Ok(Placed::Created(o)) = buy(&e, user, 1, now, &mut log) {
                        sold.fetch_add(o.quantity as u64, Ordering::Relaxed);
                    }
                }
            });
        }
        let e = e.clone();
        sc.spawn(move || {
            let mut log = Vec::new();
            for _ in 0..ADDS {
                e.add_stock(1, 2, now, &mut log).unwrap();
                // Durable at once: the units go on sale while buyers race.
                e.durable(log.last().unwrap());
                std::thread::yield_now();
            }
        });
    });
    e.check_invariants().unwrap();
    let a = e.activity(1).unwrap().view(now);
    assert_eq!(a.stock, START + 2 * ADDS);
    assert_eq!(a.reserved, sold.load(Ordering::Relaxed));
    assert_eq!(
        a.remaining + a.reserved,
        a.stock,
        "every unit accounted for"
    );
    // More buyers than units ever were: whatever remains goes, and no more.
    let mut log = Vec::new();
    for u in 0..a.remaining + 10 {
        let _ = buy(&e, 99_000_000 + u, 1, now, &mut log);
    }
    let a = e.activity(1).unwrap().view(now);
    assert_eq!((a.remaining, a.reserved), (0, START + 2 * ADDS));
    e.check_invariants().unwrap();
}

#[test]
fn no_purchase_that_starts_after_the_end_returns_succeeds() {
    use std::sync::atomic::AtomicBool;
    const THREADS: u64 = 4;
    /// Purchases each buyer makes once it has seen the end returned.
    const AFTER: u64 = 100;
    let e = Arc::new(engine(true));
    let mut log = Vec::new();
    e.create_activity(&spec(1_000_000), T0 - 10, &mut log)
        .unwrap();
    let now = T0 + 100;
    let ended = Arc::new(AtomicBool::new(false));
    let (late, tried_after) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let (e, ended) = (e.clone(), ended.clone());
            let (late, tried_after) = (late.clone(), tried_after.clone());
            sc.spawn(move || {
                let mut log = Vec::new();
                let mut after = 0;
                // Bounded: the end comes within milliseconds.
                for u in 0..200_000u64 {
                    // Read before the purchase starts: if the end had
                    // returned by then, the purchase must be refused.
                    let after_end = ended.load(Ordering::Acquire);
                    let r = buy(&e, t * 1_000_000 + u, 1, now, &mut log);
                    if after_end {
                        after += 1;
                        tried_after.fetch_add(1, Ordering::Relaxed);
                        if r.is_ok() {
                            late.fetch_add(1, Ordering::Relaxed);
                        }
                        if after == AFTER {
                            break;
                        }
                    }
                }
            });
        }
        let (e, ended) = (e.clone(), ended.clone());
        sc.spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(2));
            let mut log = Vec::new();
            e.end_sale(1, now, &mut log).unwrap();
            ended.store(true, Ordering::Release);
        });
    });
    assert_eq!(tried_after.load(Ordering::Relaxed), THREADS * AFTER);
    assert_eq!(late.load(Ordering::Relaxed), 0, "purchases after the end");
    assert!(
        e.activity(1).unwrap().view(now).reserved > 0,
        "buys before it"
    );
    e.check_invariants().unwrap();
}
