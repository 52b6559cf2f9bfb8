//! Proves that the events the engine emits are always a valid replay order:
//! a sale reaches the log before anyone can see it (so before any order on
//! it), checked by a sink that looks at the engine at the moment of each
//! emit, and by replaying what a racing buyer logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use flashd_engine::*;

const T0: Millis = 1_800_000_000_000;

fn spec() -> ActivitySpec {
    ActivitySpec {
        sku_id: "SKU-1".into(),
        name: "Phone".into(),
        price_cents: 100,
        stock: 10,
        start_at: T0,
        end_at: T0 + 3_600_000,
        per_user_limit: 5,
    }
}

fn engine() -> Arc<Engine> {
    Arc::new(Engine::new(EngineConfig {
        node_id: 1,
        order_ttl_ms: 60_000,
        max_activities: 64,
        hold_released_until_durable: false,
    }))
}

/// Records whether the sale was already visible when its creation was
/// emitted.
struct Watching<'a> {
    engine: &'a Engine,
    visible_at_emit: Vec<bool>,
}

impl EventSink for Watching<'_> {
    fn emit(&mut self, e: Event) {
        if let Event::ActivityCreated { id, .. } = e {
            self.visible_at_emit
                .push(self.engine.activity(id).is_some());
        }
    }
}

#[test]
fn a_sale_is_emitted_before_it_becomes_visible() {
    let e = engine();
    let mut sink = Watching {
        engine: &e,
        visible_at_emit: Vec::new(),
    };
    for _ in 0..3 {
        e.create_activity(&spec(), T0, &mut sink).expect("created");
    }
    assert_eq!(sink.visible_at_emit, vec![false; 3]);
    assert!(e.activity(1).is_some());
}

/// One shared log: every emit appends under one mutex, as the writer's
/// ring orders pushes.
struct Shared(Arc<Mutex<Vec<Event>>>);

impl EventSink for Shared {
    fn emit(&mut self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
}

#[test]
fn buyers_racing_a_new_sale_log_a_replayable_order() {
    for round in 0..50 {
        let e = engine();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let buyers: Vec<_> = (0..2u64)
            .map(|t| {
                let (e, log, stop) = (e.clone(), log.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut sink = Shared(log);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for a in 1..=8 {
                            let rid = format!("r{t}-{n}");
                            let _ = e.place_order(
                                &PlaceOrder {
                                    activity_id: a,
                                    user_id: 1 + t * 1_000_000 + n,
                                    quantity: 1,
                                    request_id: &rid,
                                },
                                T0,
                                &mut sink,
                            );
                            n += 1;
                        }
                    }
                })
            })
            .collect();
        let mut sink = Shared(log.clone());
        for _ in 0..8 {
            e.create_activity(&spec(), T0, &mut sink).expect("created");
        }
        stop.store(true, Ordering::Relaxed);
        for b in buyers {
            b.join().unwrap();
        }
        let replayed = engine();
        for (i, ev) in log.lock().unwrap().iter().enumerate() {
            replayed
                .apply(ev)
                .unwrap_or_else(|err| panic!("round {round}: event {i} does not replay: {err}"));
        }
        assert_eq!(replayed.dump(), e.dump(), "round {round}");
    }
}
