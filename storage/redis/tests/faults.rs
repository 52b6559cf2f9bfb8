//! Redis killed, restarted, stopped, absent: what the client says and what
//! Redis still holds.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use flashd_redis::{Buy, ClientConfig, Decision, RedisClient, RedisError};

#[test]
fn killed_and_restarted_from_its_aof_redis_keeps_every_answered_decision() {
    if !have_redis() {
        return;
    }
    let mut r = PrivateRedis::start(true);
    let now = now_ms();
    let (sale, stock) = (50, 10_000_000u64);
    assert!(r
        .client(0)
        .create_sale(sale, spec(stock, 1, now))
        .wait()
        .unwrap());
    let answered: Mutex<Vec<flashd_redis::Claim>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let errors = std::sync::atomic::AtomicU64::new(0);
    let before_kill = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for node in 1..=2u16 {
            let (answered, stop, errors) = (&answered, &stop, &errors);
            let c = r.client(node);
            s.spawn(move || {
                let ids = Ids::new(node, now);
                let mut user = u64::from(node) * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<Buy> = (0..16)
                        .map(|_| {
                            user += 1;
                            buy(&ids, user, "r", 1, now)
                        })
                        .collect();
                    match c.buy(sale, now, batch).wait() {
                        Ok(out) => {
                            let mut g = answered.lock().unwrap();
                            for d in out {
                                if let Decision::Granted(cl) = d {
                                    g.push(cl);
                                }
                            }
                        }
                        Err(e) => {
                            assert!(e.is_unavailable(), "{e}");
                            errors.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        r.kill9();
        before_kill.store(answered.lock().unwrap().len(), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        r.restart();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    let answered = answered.into_inner().unwrap();
    assert!(errors.into_inner() > 0, "the kill was seen");
    let st = r.client(9).read_sale(sale).wait().unwrap().unwrap();
    assert_eq!(st.check(), Vec::<String>::new());
    assert!(st.sold + st.reserved <= stock);
    let lost: Vec<u64> = answered
        .iter()
        .filter(|c| st.claims.get(&c.order_id) != Some(c))
        .map(|c| c.order_id)
        .collect();
    assert!(lost.is_empty(), "answered but lost: {lost:?}");
    // Decisions were answered before the kill and after the restart (the
    // client reconnected and loaded its scripts again).
    let before_kill = before_kill.into_inner();
    assert!(before_kill > 0 && answered.len() > before_kill);
    eprintln!(
        "answered {} claims ({before_kill} before the kill), redis holds {} after kill -9 and restart",
        answered.len(),
        st.claims.len()
    );
}

fn timeout_client(url: String, ms: u64) -> RedisClient {
    let mut cfg = ClientConfig::new(url, 1);
    cfg.timeout = Duration::from_millis(ms);
    RedisClient::start(cfg).unwrap()
}

#[test]
fn redis_down_fails_closed_within_the_timeout() {
    if !have_redis() {
        return;
    }
    let now = now_ms();
    let ids = Ids::new(1, now);
    // Nothing listens on the port: refused at once.
    let c = timeout_client(format!("redis://127.0.0.1:{}/", free_port()), 200);
    let t = Instant::now();
    let e = c
        .buy(1, now, vec![buy(&ids, 1, "a", 1, now)])
        .wait()
        .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(e, RedisError::Connect { .. }), "{e}");
    assert!(
        e.to_string().contains("127.0.0.1"),
        "names the address: {e}"
    );
    // A Redis that stopped answering (SIGSTOP): a timeout, not a hang.
    let r = PrivateRedis::start(false);
    let c = timeout_client(r.url(), 200);
    c.create_sale(2, spec(10, 1, now)).wait().unwrap();
    r.signal("-STOP");
    let t = Instant::now();
    let e = c
        .buy(2, now, vec![buy(&ids, 1, "a", 1, now)])
        .wait()
        .unwrap_err();
    let took = t.elapsed();
    assert!(matches!(e, RedisError::Timeout { op: "buy", .. }), "{e}");
    assert!(took < Duration::from_millis(400), "{took:?}");
    // Requests queued behind the stuck one time out too, and are not sent.
    let e = c
        .buy(2, now, vec![buy(&ids, 2, "a", 1, now)])
        .wait()
        .unwrap_err();
    assert!(matches!(e, RedisError::Timeout { .. }), "{e}");
    r.signal("-CONT");
    // Back: the client reconnects; the first buy may or may not have been
    // decided, and its retry says which.
    std::thread::sleep(Duration::from_millis(300));
    let out = c
        .buy(2, now, vec![buy(&ids, 1, "a", 1, now)])
        .wait()
        .unwrap();
    assert!(
        matches!(out[0], Decision::Granted(_) | Decision::Existing(_)),
        "{out:?}"
    );
}

#[test]
fn a_full_queue_is_refused_at_once() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let mut cfg = ClientConfig::new(r.url(), 1);
    cfg.queue = 2;
    cfg.timeout = Duration::from_millis(300);
    let c = RedisClient::start(cfg).unwrap();
    r.signal("-STOP");
    let now = now_ms();
    let ids = Ids::new(1, now);
    let pending: Vec<_> = (0..6)
        .map(|u| c.buy(3, now, vec![buy(&ids, u, "a", 1, now)]))
        .collect();
    let errs: Vec<RedisError> = pending.into_iter().map(|p| p.wait().unwrap_err()).collect();
    assert!(
        errs.iter().any(|e| matches!(e, RedisError::Busy { .. })),
        "{errs:?}"
    );
    r.signal("-CONT");
}

#[test]
fn a_caller_that_must_not_block_polls_its_answer() {
    if !have_redis() {
        return;
    }
    let r = PrivateRedis::start(false);
    let c = r.client(1);
    let now = now_ms();
    let ids = Ids::new(1, now);
    c.create_sale(4, spec(10, 1, now)).wait().unwrap();
    let mut p = c.buy(4, now, vec![buy(&ids, 1, "a", 1, now)]);
    let t = Instant::now();
    let got = loop {
        if let Some(r) = p.poll() {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::yield_now();
    };
    assert!(matches!(got.unwrap()[0], Decision::Granted(_)));
    // Taken once: polling again says so rather than block or repeat.
    assert!(matches!(p.poll(), Some(Err(RedisError::Closed { .. }))));
    // A stopped Redis: poll answers the timeout once the deadline passes.
    let c = timeout_client(r.url(), 100);
    c.create_sale(5, spec(10, 1, now)).wait().unwrap();
    r.signal("-STOP");
    let mut p = c.buy(5, now, vec![buy(&ids, 1, "a", 1, now)]);
    assert!(p.poll().is_none(), "not yet");
    std::thread::sleep(Duration::from_millis(150));
    assert!(matches!(p.poll(), Some(Err(RedisError::Timeout { .. }))));
    r.signal("-CONT");
}
