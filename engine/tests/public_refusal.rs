//! `Engine::public_refusal`: a purchase refused before its token is
//! checked must get exactly the answer `place_order` would give a buyer
//! with nothing in the sale, and never refuse a retry — whether the order
//! it retries was made live, replayed from the log or loaded from a
//! snapshot, and while other threads are selling the last units.

use std::sync::Arc;

mod common;

use common::*;
use flashd_engine::*;

const HOUR: Millis = 3_600_000;

/// A purchase whose events are dropped.
fn buy(
    e: &Engine,
    a: ActivityId,
    user: UserId,
    q: u32,
    rid: &str,
    now: Millis,
) -> Result<Placed, Reject> {
    common::buy(e, a, user, q, rid, now, &mut Vec::new())
}

/// The full path's refusal for a buyer with nothing in the sale, if any.
fn full_refusal(e: &Engine, a: ActivityId, q: u32, rid: &str, now: Millis) -> Option<Reject> {
    // A user who has never bought: the engine's answer for "anyone".
    buy(e, a, 999_999, q, rid, now).err()
}

#[test]
fn refuses_what_the_full_path_refuses_for_anyone() {
    let e = engine();
    let a = e
        .create_activity(&spec(2, 2), T0 - HOUR, &mut Vec::new())
        .unwrap()
        .id;
    // Unknown sale: refused whatever the state.
    assert_eq!(e.public_refusal(9, 1, "x", T0), Some(Reject::NotFound));
    // Before the start and after the end.
    assert_eq!(
        e.public_refusal(a, 1, "x", T0 - 1),
        Some(Reject::NotStarted)
    );
    assert_eq!(
        full_refusal(&e, a, 1, "x", T0 - 1),
        Some(Reject::NotStarted)
    );
    assert_eq!(e.public_refusal(a, 1, "x", T0 + HOUR), Some(Reject::Ended));
    // Live with units: nothing is public; the full path decides.
    assert_eq!(e.public_refusal(a, 1, "x", T0), None);
    // Invalid requests take the full path (which answers 400).
    assert_eq!(e.public_refusal(a, 0, "x", T0), None);
    assert_eq!(e.public_refusal(a, 1, "", T0), None);
    assert_eq!(e.public_refusal(a, 1, &"r".repeat(65), T0), None);
    // Sell out: user 1 takes both units.
    assert!(matches!(
        buy(&e, a, 1, 2, "take-all", T0),
        Ok(Placed::Created(_))
    ));
    for (q, want) in [
        (1, Reject::SoldOut),
        (2, Reject::SoldOut),
        (3, Reject::LimitReached),
    ] {
        assert_eq!(e.public_refusal(a, q, "fresh", T0), Some(want), "q={q}");
        assert_eq!(full_refusal(&e, a, q, "fresh", T0), Some(want), "q={q}");
    }
    // The buyer's retry is never refused here: the full path gives the
    // order back, sold out or ended.
    assert_eq!(e.public_refusal(a, 2, "take-all", T0), None);
    assert!(matches!(
        buy(&e, a, 1, 2, "take-all", T0),
        Ok(Placed::Existing(_))
    ));
    assert_eq!(e.public_refusal(a, 2, "take-all", T0 + HOUR), None);
    assert!(matches!(
        buy(&e, a, 1, 2, "take-all", T0 + HOUR),
        Ok(Placed::Existing(_))
    ));
}

#[test]
fn a_retry_is_known_after_replay_and_after_a_snapshot_load() {
    let e = engine();
    let mut log = Vec::new();
    let a = e
        .create_activity(&spec(3, 3), T0 - HOUR, &mut log)
        .unwrap()
        .id;
    for (u, rid) in [(1, "one"), (2, "two"), (3, "three")] {
        e.place_order(
            &PlaceOrder {
                activity_id: a,
                user_id: u,
                quantity: 1,
                request_id: rid,
            },
            T0,
            &mut log,
        )
        .unwrap();
    }
    let replayed = engine();
    for ev in &log {
        replayed.apply(ev).unwrap();
    }
    let loaded = engine();
    loaded.load(&e.export()).unwrap();
    for eng in [&e, &replayed, &loaded] {
        for rid in ["one", "two", "three"] {
            assert_eq!(eng.public_refusal(a, 1, rid, T0), None, "{rid}");
            assert_eq!(eng.public_refusal(a, 1, rid, T0 + HOUR), None, "{rid}");
        }
        assert_eq!(eng.public_refusal(a, 1, "four", T0), Some(Reject::SoldOut));
    }
}

/// Buyers race for the last units while their own retries and strangers
/// ask: a retry of a created order is never refused by the public check
/// once the unit it took is gone.
#[test]
fn a_retry_racing_the_last_units_is_never_refused() {
    const USERS: u64 = 4_000;
    let e = Arc::new(engine());
    let a = e
        .create_activity(&spec(1_000, 1), T0 - HOUR, &mut Vec::new())
        .unwrap()
        .id;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                let mut wrong = 0;
                for u in (t * USERS / 4 + 1)..=((t + 1) * USERS / 4) {
                    let rid = format!("u{u}");
                    let created = matches!(buy(&e, a, u, 1, &rid, T0), Ok(Placed::Created(_)));
                    // Right after: the retry of a created order must take
                    // the full path; a refused buyer's retry may be
                    // refused (it is one, sold out is its answer).
                    if created && e.public_refusal(a, 1, &rid, T0).is_some() {
                        wrong += 1;
                    }
                }
                wrong
            })
        })
        .collect();
    let wrong: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(wrong, 0);
    // Every buyer's retry afterwards: the 1,000 winners pass to the full
    // path, almost all of the others are refused publicly.
    let passed = (1..=USERS)
        .filter(|u| e.public_refusal(a, 1, &format!("u{u}"), T0).is_none())
        .count();
    assert!((1_000..1_400).contains(&passed), "{passed}");
}
