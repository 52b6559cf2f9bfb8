//! Proves a snapshot whose stripe counts claim more orders than a stripe can
//! index is refused before anything is installed (a CRC-clean but absurd
//! file must be an error, never an assertion mid-load).

use flashd_engine::*;

#[test]
fn a_stripe_count_beyond_the_index_is_refused_and_nothing_is_installed() {
    let e = Engine::new(EngineConfig::default());
    let meta = EngineSnapshot {
        next_activity: 2,
        last_order_id: 0,
        activities: vec![ActivitySnapshot {
            id: 1,
            spec: ActivitySpec {
                sku_id: "S".into(),
                name: "N".into(),
                price_cents: 1,
                stock: 10,
                start_at: 0,
                end_at: 10,
                per_user_limit: 1,
            },
            created_at: 0,
            remaining: 10,
            sold: 0,
            reserved: 0,
            void: false,
        }],
        orders: Vec::new(),
    };
    let mut counts = vec![0u32; USER_STRIPES];
    counts[7] = u32::MAX;
    let err = e.begin_load(&meta, Some(&counts)).unwrap_err();
    assert_eq!(
        err,
        ReplayError::SnapshotStripeOverfull { orders: u32::MAX },
        "{err}"
    );
    assert!(err.to_string().contains("stripe holds"), "{err}");
    assert!(e.activity(1).is_none(), "nothing installed");
    // The same snapshot with honest counts loads.
    counts[7] = 0;
    e.begin_load(&meta, Some(&counts)).unwrap();
    e.finish_load();
    assert!(e.activity(1).is_some());
}
