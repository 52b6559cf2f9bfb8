//! Pay, cancel, expiry, repair from events, and the durability report,
//! against a private redis-server.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use common::*;
use flashd_engine::{CancelReason, Event};
use flashd_redis::{
    fold_events, AppendFsync, Buy, Claim, ClaimStatus, Decision, DurabilityReport, Guarantee,
    Settle, Settled,
};

fn granted(out: &[Decision]) -> Vec<Claim> {
    out.iter()
        .map(|d| match d {
            Decision::Granted(c) => c.clone(),
            d => panic!("{d:?}"),
        })
        .collect()
}

#[test]
fn unpaid_claims_come_back_exactly_once_with_two_nodes_expiring() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let (a, b) = (r.client(1), r.client(2));
    let now = now_ms();
    let ids = Ids::new(1, now);
    let sale = 40;
    assert!(a.create_sale(sale, spec(1000, 1, now)).wait().unwrap());
    // Sixty batches: sixty due entries for the two nodes to race over.
    let mut claims = Vec::new();
    for chunk in (1..=600u64).collect::<Vec<_>>().chunks(10) {
        let batch: Vec<Buy> = chunk.iter().map(|&u| buy(&ids, u, "r", 1, now)).collect();
        claims.extend(granted(&a.buy(sale, now, batch).wait().unwrap()));
    }
    let deadline = now + TTL;
    // Pay a third of them before the deadline: those never expire.
    let paid: Vec<Settle> = claims
        .iter()
        .step_by(3)
        .map(|c| Settle::Pay {
            user: c.user,
            order_id: c.order_id,
        })
        .collect();
    let out = b.settle(sale, deadline - 1, paid.clone()).wait().unwrap();
    assert!(out.iter().all(|s| matches!(s, Settled::Paid(_))), "{out:?}");
    // Nothing is due a millisecond early.
    assert!(a
        .expire(sale, deadline - 1, 1000)
        .wait()
        .unwrap()
        .is_empty());
    // Both nodes expire at once, in small steps, until nothing is due.
    let expired: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for c in [&a, &b] {
            let expired = &expired;
            s.spawn(move || loop {
                let got = c.expire(sale, deadline, 7).wait().unwrap();
                if got.is_empty() {
                    break;
                }
                for cl in got {
                    assert_eq!(cl.status, ClaimStatus::Cancelled(CancelReason::Timeout));
                    expired.lock().unwrap().push(cl.order_id);
                }
            });
        }
    });
    let expired = expired.into_inner().unwrap();
    let unique: BTreeSet<u64> = expired.iter().copied().collect();
    assert_eq!(unique.len(), expired.len(), "a claim expired twice");
    assert_eq!(expired.len(), claims.len() - paid.len());
    let st = a.read_sale(sale).wait().unwrap().unwrap();
    assert_eq!(st.check(), Vec::<String>::new());
    assert_eq!((st.sold, st.reserved), (paid.len() as u64, 0));
    assert!(st.due.is_empty());
    // Later runs find nothing; paid claims stayed paid.
    assert!(b
        .expire(sale, deadline + TTL, 1000)
        .wait()
        .unwrap()
        .is_empty());
    let again = a.settle(sale, deadline + 5, paid.clone()).wait().unwrap();
    assert!(again.iter().all(|s| matches!(s, Settled::AlreadyPaid(_))));
    // The expired can neither be paid nor cancelled again; the units went
    // back: a second request of those users is granted.
    let late = claims[1].clone();
    let out = a
        .settle(
            sale,
            deadline + 5,
            vec![
                Settle::Pay {
                    user: late.user,
                    order_id: late.order_id,
                },
                Settle::Cancel {
                    user: late.user,
                    order_id: late.order_id,
                },
            ],
        )
        .wait()
        .unwrap();
    assert!(matches!(out[0], Settled::BadTransition(_)), "{out:?}");
    assert!(matches!(out[1], Settled::AlreadyCancelled(_)), "{out:?}");
}

#[test]
fn pay_and_cancel_are_decided_once() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let c = r.client(1);
    let now = now_ms();
    let ids = Ids::new(1, now);
    let sale = 41;
    c.create_sale(sale, spec(10, 5, now)).wait().unwrap();
    let cl = granted(
        &c.buy(
            sale,
            now,
            (1..=4).map(|u| buy(&ids, u, "r", 2, now)).collect(),
        )
        .wait()
        .unwrap(),
    );
    let pay = |i: usize| Settle::Pay {
        user: cl[i].user,
        order_id: cl[i].order_id,
    };
    let cancel = |i: usize| Settle::Cancel {
        user: cl[i].user,
        order_id: cl[i].order_id,
    };
    let out = c
        .settle(
            sale,
            now + 1,
            vec![
                pay(0),
                pay(0),
                cancel(0),
                cancel(1),
                cancel(1),
                pay(1),
                Settle::Pay {
                    user: 999,
                    order_id: cl[2].order_id,
                },
                Settle::Pay {
                    user: 1,
                    order_id: 12345,
                },
            ],
        )
        .wait()
        .unwrap();
    assert!(matches!(out[0], Settled::Paid(_)));
    assert!(matches!(out[1], Settled::AlreadyPaid(_)));
    assert!(matches!(out[2], Settled::BadTransition(_)));
    assert!(matches!(out[3], Settled::Cancelled(_)));
    assert!(matches!(out[4], Settled::AlreadyCancelled(_)));
    assert!(matches!(out[5], Settled::BadTransition(_)));
    assert_eq!(&out[6..], &[Settled::NotFound, Settled::NotFound]);
    // A pay at the deadline is too late: it times the claim out itself.
    let out = c
        .settle(sale, cl[2].deadline_ms, vec![pay(2)])
        .wait()
        .unwrap();
    match &out[0] {
        Settled::Expired(x) => {
            assert_eq!(x.status, ClaimStatus::Cancelled(CancelReason::Timeout));
            assert!(matches!(
                out[0].event(sale, cl[2].deadline_ms),
                Some(Event::OrderCancelled {
                    reason: CancelReason::Timeout,
                    ..
                })
            ));
        }
        s => panic!("{s:?}"),
    }
    // ... and the sweep does not give it back a second time.
    let swept = c.expire(sale, cl[2].deadline_ms + 1, 100).wait().unwrap();
    assert_eq!(swept.len(), 1, "only claim 3 was left to expire");
    assert_eq!(swept[0].order_id, cl[3].order_id);
    let st = c.read_sale(sale).wait().unwrap().unwrap();
    assert_eq!(st.check(), Vec::<String>::new());
    assert_eq!((st.sold, st.reserved, st.remaining()), (2, 0, 8));
}

#[test]
fn repair_from_the_events_rebuilds_the_same_sale() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let c = r.client(4);
    let now = now_ms();
    let ids = Ids::new(4, now);
    let sale = 42;
    let sp = spec(50, 3, now);
    c.create_sale(sale, sp).wait().unwrap();
    // The log as a node would write it: every decision that changed Redis.
    let mut log = vec![created(sale, sp, now)];
    let mut rng = Rng(7);
    let mut live: Vec<Claim> = Vec::new();
    for round in 0..20u64 {
        let t = now + round;
        let batch: Vec<Buy> = (0..8)
            .map(|k| {
                let u = 1 + rng.below(30);
                buy(&ids, u, &format!("{round}-{k}"), 1 + rng.below(2) as u32, t)
            })
            .collect();
        for d in c.buy(sale, t, batch).wait().unwrap() {
            if let Decision::Granted(cl) = d {
                log.push(cl.created_event(sale));
                live.push(cl);
            }
        }
        let ops: Vec<Settle> = live
            .iter()
            .filter_map(|cl| match rng.below(8) {
                0..=5 => None,
                k => Some((k, cl)),
            })
            .map(|(k, cl)| {
                if k == 6 {
                    Settle::Pay {
                        user: cl.user,
                        order_id: cl.order_id,
                    }
                } else {
                    Settle::Cancel {
                        user: cl.user,
                        order_id: cl.order_id,
                    }
                }
            })
            .collect();
        for s in c.settle(sale, t, ops).wait().unwrap() {
            log.extend(s.event(sale, t));
        }
    }
    let end = now + 19 + TTL;
    for cl in c.expire(sale, end, 1000).wait().unwrap() {
        log.extend(cl.moved_event(sale, end));
    }
    let before = c.read_sale(sale).wait().unwrap().unwrap();
    assert_eq!(before.check(), Vec::<String>::new());
    assert_eq!(fold_events(sale, &log).unwrap(), before);
    // Damage Redis: a counter off, a buyer's claims gone.
    let mut conn = r.conn();
    let () = redis::cmd("HSET")
        .arg(flashd_redis::keys::meta(sale))
        .arg("reserved")
        .arg(999)
        .query(&mut conn)
        .unwrap();
    let first = live[0].user;
    let _: i64 = redis::cmd("HDEL")
        .arg(flashd_redis::keys::users(sale))
        .arg(first)
        .query(&mut conn)
        .unwrap();
    assert_ne!(c.read_sale(sale).wait().unwrap().unwrap(), before);
    let repaired = c.repair(sale, log.clone()).wait().unwrap();
    assert_eq!(repaired, before);
    assert_eq!(c.read_sale(sale).wait().unwrap().unwrap(), before);
    // From nothing too.
    let _: i64 = redis::cmd("DEL")
        .arg(&flashd_redis::keys::all(sale)[..])
        .query(&mut conn)
        .unwrap();
    assert_eq!(c.read_sale(sale).wait().unwrap(), None);
    c.repair(sale, log.clone()).wait().unwrap();
    assert_eq!(c.read_sale(sale).wait().unwrap().unwrap(), before);
    // A log that is not a sale's history is refused.
    assert!(c.repair(sale, log[1..].to_vec()).wait().is_err());
}

#[test]
fn the_durability_report_names_the_setting() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(true);
    let c = r.client(1);
    let rep = c.durability().wait().unwrap();
    assert_eq!(
        rep,
        DurabilityReport {
            appendonly: true,
            appendfsync: AppendFsync::Always
        }
    );
    assert!(rep.is_durable());
    let mut conn = r.conn();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("everysec")
        .query(&mut conn)
        .unwrap();
    let rep = c.durability().wait().unwrap();
    assert_eq!(rep.appendfsync, AppendFsync::EverySec);
    assert_eq!(rep.guarantee(), Guarantee::UpToOneSecond);
    assert!(!rep.is_durable());
    assert!(rep.to_string().contains("appendfsync everysec"), "{rep}");
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("no")
        .query(&mut conn)
        .unwrap();
    let rep = c.durability().wait().unwrap();
    assert_eq!(rep.guarantee(), Guarantee::NoAppendOnlyFile);
    assert!(rep.to_string().contains("appendonly no"), "{rep}");
}
