//! Proves a real flash sale over HTTP against the running binary: a
//! 20,000-request stampede on 500 units (inline engine and worker pool),
//! payment timeouts, the error contract (and that refusals change nothing),
//! load shedding with tiny worker rings, rate limits with live reload, and
//! generated secrets with `flashd token`.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn stampede(workers: u32) {
    const USERS: u64 = 10_000;
    const STOCK: u64 = 500;
    const THREADS: u64 = 50;
    let f = Flashd::start(&sale_config(&format!(
        "[rate_limit]\nper_user_rps = 0\n[workers]\ncount = {workers}\n[reactor]\nsub_reactors = 2\npin_cpus = false\n"
    )));
    let a = create(f.addr, STOCK, 1, -5, 3600);
    // Every user tries twice; for a quarter of them the second try reuses
    // the first request id (a client retry), the rest use a new one. The
    // two tries of a user go out on different connections, at once.
    let same_rid = |u: u64| u.is_multiple_of(4);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = f.addr;
            std::thread::spawn(move || {
                let mut reqs = Vec::new();
                let mut meta = Vec::new();
                for u in (1..=USERS).filter(|u| u % THREADS == t) {
                    reqs.push(buy_req(a, u, 1, &format!("u{u}-a")));
                    meta.push(u);
                    let v = u % USERS + 1; // neighbour's second try
                    let rid = if same_rid(v) {
                        format!("u{v}-a")
                    } else {
                        format!("u{v}-b")
                    };
                    reqs.push(buy_req(a, v, 1, &rid));
                    meta.push(v);
                }
                let rs = pipelined(addr, &reqs, 16);
                meta.into_iter()
                    .zip(rs)
                    .map(|(u, r)| (u, r.status, json(&r)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<(u64, u16, Value)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(results.len() as u64, 2 * USERS);
    let mut created: HashMap<u64, String> = HashMap::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for (u, st, v) in &results {
        *statuses.entry(*st).or_default() += 1;
        if *st == 201 {
            assert_eq!(v["user_id"].as_u64(), Some(*u));
            assert_eq!(v["status"], "CREATED");
            let prev = created.insert(*u, v["order_id"].as_str().unwrap().to_string());
            assert!(prev.is_none(), "user {u} got two orders");
        }
    }
    assert_eq!(created.len() as u64, STOCK, "statuses: {statuses:?}");
    for (u, st, v) in &results {
        match st {
            201 => {}
            // A retry with the same request id gets the same order.
            200 => {
                assert!(same_rid(*u));
                assert_eq!(
                    v["order_id"].as_str(),
                    created.get(u).map(|s| s.as_str()),
                    "user {u}"
                );
            }
            409 => assert!(
                ["sold_out", "limit_reached"].contains(&v["error"].as_str().unwrap()),
                "{v}"
            ),
            other => panic!("unexpected status {other}: {v}"),
        }
    }
    let replays = results.iter().filter(|r| r.1 == 200).count();
    let winners_with_retry = created.keys().filter(|u| same_rid(**u)).count();
    assert_eq!(
        replays, winners_with_retry,
        "every retry of a won purchase is answered with its order"
    );
    let av = activity(f.addr, a);
    assert_eq!(
        (
            av["remaining"].as_u64(),
            av["reserved"].as_u64(),
            av["sold"].as_u64()
        ),
        (Some(0), Some(STOCK), Some(0))
    );
    assert_eq!(av["state"], "sold_out");
    // Orders are visible to their owners only.
    let (u, oid) = created.iter().next().unwrap();
    let r = request(f.addr, &get(&format!("/api/v1/orders/{oid}"), &token(*u)));
    assert_eq!(
        (r.status, json(&r)["order_id"].as_str()),
        (200, Some(oid.as_str()))
    );
    let r = request(
        f.addr,
        &get(&format!("/api/v1/orders/{oid}"), &token(u + USERS)),
    );
    assert_eq!(r.status, 404);
}

#[test]
fn stampede_500_units_20000_attempts_inline_engine() {
    stampede(0);
}

#[test]
fn stampede_500_units_20000_attempts_worker_pool() {
    stampede(2);
}

#[test]
fn payment_timeout_returns_units() {
    let f = Flashd::start(&sale_config(
        "[engine]\norder_ttl_ms = 300\nexpiry_sweep_ms = 20\n",
    ));
    let a = create(f.addr, 3, 2, -5, 3600);
    let r = request(f.addr, &buy_req(a, 5, 2, "t1"));
    assert_eq!(r.status, 201, "{}", r.body_str());
    let oid = json(&r)["order_id"].as_str().unwrap().to_string();
    assert_eq!(activity(f.addr, a)["remaining"], 1);
    std::thread::sleep(Duration::from_millis(700));
    let v = json(&request(
        f.addr,
        &get(&format!("/api/v1/orders/{oid}"), &token(5)),
    ));
    assert_eq!(
        (v["status"].as_str(), v["cancel_reason"].as_str()),
        (Some("CANCELLED"), Some("timeout"))
    );
    let av = activity(f.addr, a);
    assert_eq!(
        (av["remaining"].as_u64(), av["reserved"].as_u64()),
        (Some(3), Some(0))
    );
    let r = request(
        f.addr,
        &post(&format!("/api/v1/orders/{oid}/pay"), &token(5), ""),
    );
    assert_eq!(r.status, 409);
}

#[test]
fn error_contract_and_refusals_change_nothing() {
    // Rate limits have their own test; here one user makes many calls.
    let f = Flashd::start(&sale_config("[rate_limit]\nper_user_rps = 0\n"));
    let addr = f.addr;
    let a = create(addr, 10, 2, -5, 3600);
    let before = activity(addr, a);

    // Auth.
    let body = r#"{"quantity":1,"request_id":"x"}"#;
    let path = format!("/api/v1/activities/{a}/orders");
    for (tok, what) in [
        (
            token_with("some-other-secret-16b", 1, now_s() + 60),
            "forged",
        ),
        (token_with(SECRET, 1, now_s() - 120), "expired"),
        ("not.a.jwt".to_string(), "garbage"),
    ] {
        let r = request(addr, &post(&path, &tok, body));
        assert_eq!(
            (r.status, json(&r)["error"].as_str()),
            (401, Some("unauthorized")),
            "{what}"
        );
    }
    let r = request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(r.status, 401, "no token");
    let spec = format!(
        r#"{{"sku_id":"S","name":"N","price_cents":1,"stock":1,"start_at":"{}","end_at":"{}"}}"#,
        rfc3339(0),
        rfc3339(60)
    );
    for tok in ["wrong-admin-token-0123456", &token(1)] {
        let r = request(addr, &post("/api/v1/activities", tok, &spec));
        assert_eq!(
            (r.status, json(&r)["error"].as_str()),
            (401, Some("unauthorized"))
        );
    }

    // Malformed purchases: 400, nothing changes.
    for bad in [
        "not json",
        r#"{"quantity":1}"#,
        r#"{"quantity":"1","request_id":"x"}"#,
        r#"{"quantity":-1,"request_id":"x"}"#,
        r#"{"quantity":0,"request_id":"x"}"#,
        r#"{"quantity":1000000000,"request_id":"x"}"#,
        r#"{"quantity":1,"request_id":"x","price":0}"#,
        r#"{"quantity":1,"request_id":"has space"}"#,
    ] {
        let r = request(addr, &post(&path, &token(3), bad));
        assert_eq!(
            (r.status, json(&r)["error"].as_str()),
            (400, Some("invalid_request")),
            "{bad}: {}",
            r.body_str()
        );
    }
    // Malformed sales: 400, no sale created.
    for bad in [
        format!(
            r#"{{"sku_id":"S","name":"N","price_cents":1,"stock":5,"start_at":"{}","end_at":"{}"}}"#,
            rfc3339(60),
            rfc3339(0)
        ),
        format!(
            r#"{{"sku_id":"S","name":"N","price_cents":1,"stock":-5,"start_at":"{}","end_at":"{}"}}"#,
            rfc3339(0),
            rfc3339(60)
        ),
        format!(
            r#"{{"sku_id":"S","name":"N","price_cents":1,"stock":5,"start_at":"tomorrow","end_at":"{}"}}"#,
            rfc3339(60)
        ),
        format!(
            r#"{{"sku_id":"S","name":"N","price_cents":1,"stock":5,"start_at":"{}","end_at":"{}","bogus":1}}"#,
            rfc3339(0),
            rfc3339(60)
        ),
        r#"{"sku_id":5}"#.to_string(),
    ] {
        let r = request(addr, &post("/api/v1/activities", ADMIN, &bad));
        assert_eq!(
            (r.status, json(&r)["error"].as_str()),
            (400, Some("invalid_request")),
            "{bad}: {}",
            r.body_str()
        );
    }
    let r = request(
        addr,
        &format!(
            "GET /api/v1/activities/{} HTTP/1.1\r\nHost: t\r\n\r\n",
            a + 1
        ),
    );
    assert_eq!(r.status, 404, "a refused sale was created");
    assert_eq!(activity(addr, a), before);

    // Lifecycle over HTTP.
    let r = request(addr, &buy_req(a, 3, 1, "o1"));
    assert_eq!(r.status, 201);
    let oid = json(&r)["order_id"].as_str().unwrap().to_string();
    let r = request(
        addr,
        &post(&format!("/api/v1/orders/{oid}/cancel"), &token(3), ""),
    );
    assert_eq!(
        (r.status, json(&r)["status"].as_str()),
        (200, Some("CANCELLED"))
    );
    let r = request(
        addr,
        &post(&format!("/api/v1/orders/{oid}/cancel"), &token(3), ""),
    );
    assert_eq!(r.status, 200, "cancel is idempotent");
    let r = request(
        addr,
        &post(&format!("/api/v1/orders/{oid}/pay"), &token(3), ""),
    );
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (409, Some("bad_transition")),
        "pay after cancel"
    );
    let r = request(
        addr,
        &post(&format!("/api/v1/orders/{oid}/pay"), &token(4), ""),
    );
    assert_eq!(r.status, 404, "another user's order");
    let r = request(addr, &buy_req(a, 3, 1, "o2"));
    let oid2 = json(&r)["order_id"].as_str().unwrap().to_string();
    let r = request(
        addr,
        &post(&format!("/api/v1/orders/{oid2}/pay"), &token(3), ""),
    );
    assert_eq!((r.status, json(&r)["status"].as_str()), (200, Some("PAID")));
    let r = request(
        addr,
        &post(&format!("/api/v1/orders/{oid2}/cancel"), &token(3), ""),
    );
    assert_eq!(r.status, 409, "cancel after pay");
    let r = request(addr, &buy_req(a, 3, 2, "o3"));
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (409, Some("limit_reached"))
    );
    let av = activity(addr, a);
    assert_eq!(
        (
            av["sold"].as_u64(),
            av["reserved"].as_u64(),
            av["remaining"].as_u64()
        ),
        (Some(1), Some(0), Some(9))
    );

    // Windows and unknown sales.
    let later = create(addr, 5, 1, 3600, 7200);
    let r = request(addr, &buy_req(later, 3, 1, "w1"));
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (403, Some("not_started"))
    );
    let r = request(addr, &buy_req(999, 3, 1, "w2"));
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (404, Some("not_found"))
    );
    let r = request(addr, &get("/api/v1/orders/notanumber", &token(3)));
    assert_eq!(r.status, 404);
}

#[test]
fn tiny_rings_shed_load_with_503_and_lose_nothing() {
    let f = Flashd::start(&sale_config(
        "[rate_limit]\nper_user_rps = 0\n[workers]\ncount = 1\nring_capacity = 1\nbatch_max = 1\n[reactor]\nsub_reactors = 2\npin_cpus = false\n",
    ));
    let a = create(f.addr, 100_000, 1, -5, 3600);
    let handles: Vec<_> = (0..16u64)
        .map(|t| {
            let addr = f.addr;
            std::thread::spawn(move || {
                let reqs: Vec<String> = (0..400u64)
                    .map(|i| buy_req(a, t * 1000 + i + 1, 1, "r"))
                    .collect();
                let rs = pipelined(addr, &reqs, 64);
                (0..400u64)
                    .map(|i| t * 1000 + i + 1)
                    .zip(rs)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<(u64, ParsedResponse)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let ok: Vec<_> = results.iter().filter(|(_, r)| r.status == 201).collect();
    let shed: Vec<_> = results.iter().filter(|(_, r)| r.status == 503).collect();
    assert_eq!(
        ok.len() + shed.len(),
        results.len(),
        "only 201 or 503 expected"
    );
    assert!(
        !shed.is_empty(),
        "ring_capacity = 1 under load must shed something"
    );
    assert!(shed
        .iter()
        .all(|(_, r)| r.header("retry-after").is_some() && json(r)["error"] == "overloaded"));
    let av = activity(f.addr, a);
    assert_eq!(
        av["reserved"].as_u64(),
        Some(ok.len() as u64),
        "every 201 applied once, every 503 not at all"
    );
    // A shed purchase retried later with the same request id is new.
    let (u, _) = shed[0];
    let r = request(f.addr, &buy_req(a, *u, 1, "r"));
    assert_eq!(r.status, 201, "{}", r.body_str());
    let ids: HashSet<&str> = ok
        .iter()
        .map(|(_, r)| std::str::from_utf8(&r.body).unwrap())
        .collect();
    assert_eq!(ids.len(), ok.len());
}

#[test]
fn rate_limits_and_sighup_reload() {
    let mut f = Flashd::start(&sale_config(
        "[rate_limit]\nper_user_rps = 1\nper_user_burst = 2\n",
    ));
    let a = create(f.addr, 10, 5, -5, 3600);
    let reqs: Vec<String> = (0..3)
        .map(|i| buy_req(a, 77, 1, &format!("rl{i}")))
        .collect();
    let rs = pipelined(f.addr, &reqs, 3);
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [201, 201, 429]
    );
    assert_eq!(rs[2].header("retry-after"), Some("1"));
    assert_eq!(json(&rs[2])["error"], "rate_limited");
    assert_eq!(
        activity(f.addr, a)["reserved"],
        2,
        "the limited request changed nothing"
    );
    // Turn the per-user limit off and reload.
    let cfg = f.dir.path().join("flashd.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("per_user_rps = 1", "per_user_rps = 0");
    std::fs::write(&cfg, text).unwrap();
    f.signal(libc::SIGHUP);
    let t0 = std::time::Instant::now();
    loop {
        let line = f
            .log
            .recv_timeout(Duration::from_secs(5))
            .expect("no reload log line");
        if line.contains("rate limits reloaded") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    let reqs: Vec<String> = (3..8)
        .map(|i| get(&format!("/api/v1/orders/{i}"), &token(77)))
        .collect();
    let rs = pipelined(f.addr, &reqs, 5);
    assert!(
        rs.iter().all(|r| r.status == 404),
        "{:?}",
        rs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let _ = &mut f;
}

#[test]
fn generated_secrets_and_token_command() {
    let f = Flashd::start("[rate_limit]\nper_user_rps = 0\n");
    let data = f.dir.path().join("data");
    for name in ["jwt_secret", "admin_token"] {
        let p = data.join(name);
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        assert!(std::fs::read_to_string(&p).unwrap().len() >= 32);
    }
    let cfg = f.dir.path().join("flashd.toml");
    let out = Command::new(bin())
        .args(["token", "--user", "7", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let r = request(f.addr, &get("/api/v1/orders/1", &tok));
    assert_eq!(
        r.status,
        404,
        "a token from `flashd token` is accepted: {}",
        r.body_str()
    );
    let r = request(f.addr, &get("/api/v1/orders/1", &token(7)));
    assert_eq!(r.status, 401, "the generated secret is not the test's");
    // Admin calls with the generated admin token work.
    let admin = std::fs::read_to_string(data.join("admin_token")).unwrap();
    let spec = format!(
        r#"{{"sku_id":"S","name":"N","price_cents":1,"stock":1,"start_at":"{}","end_at":"{}"}}"#,
        rfc3339(0),
        rfc3339(60)
    );
    assert_eq!(
        request(f.addr, &post("/api/v1/activities", admin.trim(), &spec)).status,
        201
    );
    // Metrics after a sale pass promtool.
    let m = f.get("/metrics");
    let text = m.body_str();
    assert!(
        text.contains("flashd_activity_remaining{activity=\"1\"} 1"),
        "{text}"
    );
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    p.stdin
        .take()
        .unwrap()
        .write_all(m.body.as_slice())
        .unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 17: a refusal that is the same for every buyer is answered before
/// the token is checked (no HMAC for a stampede on a sold-out sale), and
/// it is never given to a retry, which still gets its order back; nothing
/// else changes: a live sale still wants a valid token, and a body that
/// does not parse is still a 401 without one.
#[test]
fn public_refusals_come_before_the_token_and_never_to_a_retry() {
    let f = Flashd::start(&sale_config(
        "[rate_limit]\nper_user_rps = 0\n[reactor]\nsub_reactors = 1\npin_cpus = false\n",
    ));
    let live = create(f.addr, 1, 1, -5, 3600);
    let soon = create(f.addr, 5, 1, 3600, 7200);
    let orders = |a: u64| format!("/api/v1/activities/{a}/orders");
    let body = |rid: &str| format!(r#"{{"quantity":1,"request_id":"{rid}"}}"#);
    let forged = token_with("not-the-secret", 7, now_s() + 3600);

    // Live with stock: the token is checked first, as ever.
    let r = request(f.addr, &post(&orders(live), &forged, &body("x")));
    assert_eq!(r.status, 401, "{}", r.body_str());
    // User 1 takes the only unit.
    let r = request(f.addr, &buy_req(live, 1, 1, "mine"));
    assert_eq!(r.status, 201, "{}", r.body_str());
    let order = json(&r)["id"].clone();

    // Sold out: a new purchase is refused whatever its token.
    for auth in [forged.as_str(), "", &token(2)] {
        let r = request(f.addr, &post(&orders(live), auth, &body("new")));
        assert_eq!(r.status, 409, "{auth:?}: {}", r.body_str());
        assert_eq!(json(&r)["error"], "sold_out");
        assert!(r.header("x-request-id").is_some());
    }
    // Over the per-user limit is public too (nobody may buy 2).
    let r = request(
        f.addr,
        &post(&orders(live), "", r#"{"quantity":2,"request_id":"two"}"#),
    );
    assert_eq!(
        (r.status, json(&r)["error"].clone()),
        (409, "limit_reached".into())
    );
    // Not started, and an unknown sale: no token needed either.
    let r = request(f.addr, &post(&orders(soon), "", &body("early")));
    assert_eq!(
        (r.status, json(&r)["error"].clone()),
        (403, "not_started".into())
    );
    let r = request(f.addr, &post(&orders(999), "", &body("nowhere")));
    assert_eq!(r.status, 404, "{}", r.body_str());

    // The buyer's retry is not a public refusal: without a valid token it
    // is a 401 (nothing told about the order), with it the same order.
    let r = request(f.addr, &post(&orders(live), &forged, &body("mine")));
    assert_eq!(r.status, 401, "{}", r.body_str());
    let r = request(f.addr, &buy_req(live, 1, 1, "mine"));
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(json(&r)["id"], order);
    // A body that does not parse: the token first, as before.
    let r = request(f.addr, &post(&orders(live), "", "{"));
    assert_eq!(r.status, 401, "{}", r.body_str());

    // Nothing changed, and the refusals were counted.
    let s = activity(f.addr, live);
    assert_eq!(
        (s["remaining"].as_u64(), s["reserved"].as_u64()),
        (Some(0), Some(1))
    );
    let m = f.get("/metrics");
    let text = m.body_str();
    assert!(
        text.contains("flashd_refused_before_auth_total 6\n"),
        "{text}"
    );
}
