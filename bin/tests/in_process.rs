//! The library without the binary: a whole server started in-process on a
//! fake clock (payment timeouts without waiting for them), and recovery run
//! on a generated log into a fresh engine.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flashd::clock::{Clock, FakeClock, SystemClock};
use flashd::config::Config;
use flashd::recovery::{self, RecoveryError};
use flashd::serve::Service;
use flashd_engine::{ActivitySpec, Engine, EngineConfig, Event, PlaceOrder, Placed};
use flashd_log::{FileLog, FileLogConfig, OnCorruption, OrderLog};

const TTL_MS: u64 = 60_000;

fn service(dir: &TempDir, extra: &str, clock: Arc<dyn Clock>) -> Service {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
        dir.path().join("data").display(),
        sale_config(extra)
    );
    let cfg = Config::parse(&text).unwrap_or_else(|e| panic!("config: {e:?}"));
    Service::start(&cfg, clock).expect("service starts")
}

fn order_status(addr: std::net::SocketAddr, user: u64, oid: &str) -> serde_json::Value {
    json(&request(
        addr,
        &get(&format!("/api/v1/orders/{oid}"), &token(user)),
    ))
}

/// Create a sale, buy twice, pay once; then move the fake clock past the
/// payment timeout: the unpaid order is cancelled by the sweeper and its
/// units are back on sale, the paid one stays paid. No real time passes
/// for the timeout itself.
#[test]
fn a_sale_on_a_fake_clock_times_out_unpaid_orders() {
    let dir = TempDir::new("inproc-sale");
    let clock = Arc::new(FakeClock::new(SystemClock.now_ms()));
    let svc = service(
        &dir,
        &format!("[engine]\norder_ttl_ms = {TTL_MS}\nexpiry_sweep_ms = 5\n[workers]\ncount = 1\n"),
        clock.clone(),
    );
    let addr = svc.local_addr();
    let a = create(addr, 5, 2, -5, 3600);

    let r = request(addr, &buy_req(a, 1, 2, "paid"));
    assert_eq!(r.status, 201, "{}", r.body_str());
    let paid = json(&r)["order_id"].as_str().unwrap().to_string();
    let r = request(
        addr,
        &post(&format!("/api/v1/orders/{paid}/pay"), &token(1), ""),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(json(&r)["status"], "PAID");

    let r = request(addr, &buy_req(a, 2, 2, "unpaid"));
    assert_eq!(r.status, 201, "{}", r.body_str());
    let unpaid = json(&r)["order_id"].as_str().unwrap().to_string();
    let av = activity(addr, a);
    assert_eq!(
        (
            av["remaining"].as_u64(),
            av["reserved"].as_u64(),
            av["sold"].as_u64()
        ),
        (Some(1), Some(2), Some(2))
    );

    // Real time passes (the sweeper runs every 5 ms), the fake clock
    // does not: nothing expires.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(order_status(addr, 2, &unpaid)["status"], "CREATED");

    clock.advance(TTL_MS + 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let av = activity(addr, a);
        if av["remaining"].as_u64() == Some(3) {
            assert_eq!(
                (av["reserved"].as_u64(), av["sold"].as_u64()),
                (Some(0), Some(2))
            );
            break;
        }
        assert!(Instant::now() < deadline, "units never came back: {av}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let v = order_status(addr, 2, &unpaid);
    assert_eq!(
        (v["status"].as_str(), v["cancel_reason"].as_str()),
        (Some("CANCELLED"), Some("timeout"))
    );
    assert_eq!(order_status(addr, 1, &paid)["status"], "PAID");
    let r = request(
        addr,
        &post(&format!("/api/v1/orders/{unpaid}/pay"), &token(2), ""),
    );
    assert_eq!(r.status, 409, "{}", r.body_str());
    svc.stop().expect("service stops");
}

/// A clock whose event-loop turn lags the wall clock by ten minutes: what
/// a handler reads from `turn_ms` is always older than `now_ms`.
struct StaleTurn(FakeClock);

impl Clock for StaleTurn {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
    fn turn_ms(&self) -> u64 {
        self.0.now_ms() - 600_000
    }
}

/// The public check before the token reads the turn's clock; a sale that
/// started after the turn began (here: 5 s ago, the turn 10 min old) is
/// open, and a buy is never refused "not started" by a stale time. A sold
/// out sale is refused whatever the clock says.
#[test]
fn a_stale_turn_never_refuses_a_started_sale() {
    let dir = TempDir::new("inproc-turn");
    let clock = Arc::new(StaleTurn(FakeClock::new(SystemClock.now_ms())));
    let svc = service(&dir, "[workers]\ncount = 1\n", clock);
    let addr = svc.local_addr();
    let a = create(addr, 1, 1, -5, 3600);
    let r = request(addr, &buy_req(a, 1, 1, "first"));
    assert_eq!(r.status, 201, "{}", r.body_str());
    let r = request(addr, &buy_req(a, 2, 1, "second"));
    assert_eq!(r.status, 409, "{}", r.body_str());
    assert_eq!(json(&r)["error"], "sold_out", "{}", r.body_str());
    // Not started by the wall clock too: refused as such.
    let later = create(addr, 1, 1, 3600, 7200);
    let r = request(addr, &buy_req(later, 1, 1, "early"));
    assert_eq!(r.status, 403, "{}", r.body_str());
    assert_eq!(json(&r)["error"], "not_started", "{}", r.body_str());
    svc.stop().expect("service stops");
}

/// Events of a small sale, produced by a real engine: orders placed, some
/// paid, some cancelled.
fn sell(engine: &Engine, users: std::ops::Range<u64>, now: u64, out: &mut Vec<Event>) {
    for user in users {
        let rid = format!("r-{user}");
        let placed = engine
            .place_order(
                &PlaceOrder {
                    activity_id: 1,
                    user_id: user,
                    quantity: 1,
                    request_id: &rid,
                },
                now,
                out,
            )
            .expect("place");
        let Placed::Created(o) = placed else {
            panic!("user {user} bought twice")
        };
        if user % 3 == 0 {
            engine.pay(user, o.id, now, out).expect("pay");
        } else if user % 5 == 0 {
            engine.cancel(user, o.id, now, out).expect("cancel");
        }
    }
}

/// Write a log of `first + second` users' purchases with a snapshot after
/// the first ones (when `snapshot`); returns the engine that wrote it.
fn generate(dir: &Path, cfg: &EngineConfig, snapshot: bool) -> Engine {
    let now = SystemClock.now_ms();
    let engine = Engine::new(cfg.clone());
    let mut log = FileLog::open(
        FileLogConfig {
            dir: dir.to_path_buf(),
            segment_bytes: 4096, // several segments
            fsync: false,
        },
        None,
        0,
    )
    .expect("open log");
    let mut events = Vec::new();
    engine
        .create_activity(
            &ActivitySpec {
                sku_id: "GEN".into(),
                name: "generated".into(),
                price_cents: 999,
                stock: 1_000,
                start_at: now - 60_000,
                end_at: now + 3_600_000,
                per_user_limit: 1,
            },
            now,
            &mut events,
        )
        .expect("create sale");
    sell(&engine, 1..200, now, &mut events);
    log.append(&events).expect("append");
    let lsn = log.commit().expect("commit");
    events.clear();
    if snapshot {
        flashd_log::write_engine_snapshot(dir, lsn, &engine, false).expect("snapshot");
    }
    sell(&engine, 200..300, now, &mut events);
    log.append(&events).expect("append");
    log.commit().expect("commit");
    engine
}

#[test]
fn file_recovery_rebuilds_the_engine_that_wrote_the_log() {
    let cfg = EngineConfig {
        order_ttl_ms: 3_600_000,
        ..EngineConfig::default()
    };
    for snapshot in [false, true] {
        let dir = TempDir::new("inproc-recovery");
        let written = generate(dir.path(), &cfg, snapshot);
        let fresh = Engine::new(cfg.clone());
        let rec =
            recovery::recover_file(dir.path(), OnCorruption::Refuse, &fresh).expect("recovery");
        assert_eq!(fresh.dump(), written.dump(), "snapshot: {snapshot}");
        assert_eq!(rec.snapshot.is_some(), snapshot);
        let from = rec.snapshot.as_ref().map_or(0, |s| s.lsn);
        assert_eq!(rec.log.replayed, rec.log.next_lsn - from);
        assert!(rec.log.truncated.is_empty());
    }
}

#[test]
fn file_recovery_refuses_a_log_that_is_not_this_engines_history() {
    let dir = TempDir::new("inproc-recovery-bad");
    let cfg = EngineConfig::default();
    generate(dir.path(), &cfg, false);
    // The same log replayed twice into one engine: the second replay's
    // first event (the sale's creation) does not apply.
    let engine = Engine::new(cfg);
    recovery::recover_file(dir.path(), OnCorruption::Refuse, &engine).expect("first replay");
    let e = recovery::recover_file(dir.path(), OnCorruption::Refuse, &engine)
        .expect_err("a second replay is refused");
    assert!(matches!(e, RecoveryError::Log(_)), "{e:?}");
    assert!(e.to_string().starts_with("recovery refused: "), "{e}");
}
