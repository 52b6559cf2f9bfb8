//! Proves the admin API over real HTTP against the running binary: sales
//! listed a page at a time, stock added, a window moved and a sale ended,
//! each refused with 400/401/404/409 and a JSON error naming the field
//! when it should be (and then nothing changes), and every change still
//! there after a `kill -9` and after a clean restart (the file log).

mod common;

use common::*;
use serde_json::Value;

fn patch(path: &str, auth: &str, body: &str) -> String {
    format!("PATCH {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

/// The response's status and JSON body.
fn call(f: &Flashd, raw: &str) -> (u16, Value) {
    let r = request(f.addr, raw);
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        json(&r)
    };
    (r.status, v)
}

/// A refusal: `status`, and an `error` code and a message containing
/// `words`.
fn refused(f: &Flashd, raw: &str, status: u16, code: &str, words: &str) {
    let (s, v) = call(f, raw);
    assert_eq!(s, status, "{raw}: {v}");
    assert_eq!(v["error"], code, "{raw}: {v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(words), "{raw}: {msg:?} lacks {words:?}");
}

fn ids(page: &Value) -> Vec<u64> {
    page["activities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn admin_changes_over_http_survive_restarts() {
    raise_nofile();
    let config = sale_config("[rate_limit]\nper_user_rps = 0\n");
    let f = Flashd::start(&config);
    let running = create(f.addr, 3, 5, -5, 3600);
    let upcoming = create(f.addr, 10, 5, 3600, 7200);
    let third = create(f.addr, 1, 1, -5, 3600);

    // Pages: by id, bounded, with a cursor; admin only.
    let (s, p) = call(&f, &get("/api/v1/activities?limit=2", ADMIN));
    assert_eq!(s, 200, "{p}");
    assert_eq!(ids(&p), [running, upcoming]);
    assert_eq!(p["next"], upcoming);
    assert_eq!(p["activities"][0]["stock"], 3);
    let (_, p) = call(
        &f,
        &get(
            &format!("/api/v1/activities?after={upcoming}&limit=2"),
            ADMIN,
        ),
    );
    assert_eq!(ids(&p), [third]);
    assert_eq!(p["next"], Value::Null);
    let (_, p) = call(&f, &get("/api/v1/activities", ADMIN));
    assert_eq!(ids(&p), [running, upcoming, third]);
    refused(
        &f,
        &get("/api/v1/activities?limit=0", ADMIN),
        400,
        "invalid_request",
        "limit",
    );
    refused(
        &f,
        &get("/api/v1/activities?page=2", ADMIN),
        400,
        "invalid_request",
        "page",
    );
    refused(
        &f,
        &get("/api/v1/activities", "wrong"),
        401,
        "unauthorized",
        "",
    );
    let r = request(f.addr, "GET /api/v1/activities HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 401);

    // Stock: bounded, admin only, unknown sale 404; refusals change nothing.
    let stock = |id: u64| format!("/api/v1/activities/{id}/stock");
    for body in [
        r#"{"add":0}"#,
        r#"{"add":1000000001}"#,
        r#"{"add":"2"}"#,
        r#"{"more":2}"#,
        "{",
    ] {
        refused(
            &f,
            &post(&stock(running), ADMIN, body),
            400,
            "invalid_request",
            "",
        );
    }
    refused(
        &f,
        &post(&stock(running), ADMIN, r#"{"add":0}"#),
        400,
        "invalid_request",
        "add",
    );
    refused(
        &f,
        &post(&stock(running), "wrong", r#"{"add":2}"#),
        401,
        "unauthorized",
        "",
    );
    refused(
        &f,
        &post(&stock(999), ADMIN, r#"{"add":2}"#),
        404,
        "not_found",
        "",
    );
    refused(
        &f,
        &post(&stock(running), ADMIN, r#"{"add":999999998}"#),
        409,
        "stock_full",
        "add",
    );
    assert_eq!(activity(f.addr, running)["stock"], 3);
    let (s, v) = call(&f, &post(&stock(running), ADMIN, r#"{"add":2}"#));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["stock"].as_u64(), v["remaining"].as_u64()),
        (Some(5), Some(5))
    );
    // The added units sell.
    for u in 1..=5u64 {
        let r = request(f.addr, &buy_req(running, u, 1, &format!("r{u}")));
        assert_eq!(r.status, 201, "{}", r.body_str());
    }
    let r = request(f.addr, &buy_req(running, 6, 1, "r6"));
    assert_eq!(r.status, 409, "{}", r.body_str());

    // Window: a running sale keeps its start; times are RFC 3339; not
    // before now; never empty.
    let sale = |id: u64| format!("/api/v1/activities/{id}");
    refused(
        &f,
        &patch(
            &sale(running),
            ADMIN,
            &format!(r#"{{"start_at":"{}"}}"#, rfc3339(60)),
        ),
        409,
        "start_locked",
        "start_at",
    );
    refused(
        &f,
        &patch(&sale(running), ADMIN, r#"{"end_at":"soon"}"#),
        400,
        "invalid_request",
        "end_at",
    );
    refused(
        &f,
        &patch(
            &sale(running),
            ADMIN,
            &format!(r#"{{"end_at":"{}"}}"#, rfc3339(-60)),
        ),
        400,
        "end_in_past",
        "end_at",
    );
    refused(
        &f,
        &patch(&sale(running), ADMIN, "{}"),
        400,
        "invalid_request",
        "start_at, end_at",
    );
    refused(
        &f,
        &patch(
            &sale(upcoming),
            ADMIN,
            &format!(r#"{{"end_at":"{}"}}"#, rfc3339(1800)),
        ),
        400,
        "window_empty",
        "end_at",
    );
    refused(
        &f,
        &patch(
            &sale(999),
            ADMIN,
            &format!(r#"{{"end_at":"{}"}}"#, rfc3339(60)),
        ),
        404,
        "not_found",
        "",
    );
    refused(
        &f,
        &patch(&sale(upcoming), "", r#"{}"#),
        401,
        "unauthorized",
        "",
    );
    let before = activity(f.addr, upcoming);
    let new_start = rfc3339(1800);
    let (s, v) = call(
        &f,
        &patch(
            &sale(upcoming),
            ADMIN,
            &format!(r#"{{"start_at":"{new_start}"}}"#),
        ),
    );
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["start_at"], before["start_at"]);
    assert_eq!(v["end_at"], before["end_at"]);
    let upcoming_after = v.clone();

    // Ending early stops buys at once; an ended sale no longer changes.
    let end = |id: u64| format!("/api/v1/activities/{id}/end");
    refused(
        &f,
        &post(&end(third), ADMIN, r#"{"at":1}"#),
        400,
        "invalid_request",
        "at",
    );
    let (s, v) = call(&f, &post(&end(third), ADMIN, ""));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "ended");
    let r = request(f.addr, &buy_req(third, 7, 1, "r7"));
    assert_eq!(r.status, 403, "{}", r.body_str());
    assert_eq!(json(&r)["error"], "ended");
    refused(&f, &post(&end(third), ADMIN, ""), 409, "sale_over", "ended");
    refused(
        &f,
        &post(&stock(third), ADMIN, r#"{"add":1}"#),
        409,
        "sale_over",
        "ended",
    );
    let third_after = activity(f.addr, third);

    // Everything survives a crash (the log replayed) and a clean restart.
    let want = |f: &Flashd| {
        let a = activity(f.addr, running);
        assert_eq!(
            (
                a["stock"].as_u64(),
                a["sold"].as_u64(),
                a["reserved"].as_u64()
            ),
            (Some(5), Some(0), Some(5))
        );
        let u = activity(f.addr, upcoming);
        assert_eq!(
            (&u["start_at"], &u["end_at"]),
            (&upcoming_after["start_at"], &upcoming_after["end_at"])
        );
        let t = activity(f.addr, third);
        assert_eq!(
            (&t["end_at"], &t["state"]),
            (&third_after["end_at"], &Value::from("ended"))
        );
        let (_, p) = call(f, &get("/api/v1/activities", ADMIN));
        assert_eq!(ids(&p), [running, upcoming, third]);
    };
    let dir = f.crash();
    let f = Flashd::start_in(dir, &config, &[]);
    want(&f);
    // A change after the restart lands on the recovered state.
    let (s, v) = call(&f, &post(&stock(running), ADMIN, r#"{"add":1}"#));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stock"], 6);
    let dir = f.stop();
    let f = Flashd::start_in(dir, &config, &[]);
    assert_eq!(activity(f.addr, running)["stock"], 6);
    assert_eq!(activity(f.addr, running)["remaining"], 1);
}

/// A metric's value from `/metrics`.
fn metric(f: &Flashd, name: &str) -> u64 {
    let r = f.get("/metrics");
    let text = r.body_str();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_snapshot_taken_after_changes_restores_them() {
    raise_nofile();
    let config = sale_config("[rate_limit]\nper_user_rps = 0\n[log]\nsnapshot_every_events = 1\n");
    let f = Flashd::start(&config);
    let a = create(f.addr, 4, 5, -5, 3600);
    let b = create(f.addr, 4, 5, 3600, 7200);
    let (s, v) = call(
        &f,
        &post(
            &format!("/api/v1/activities/{a}/stock"),
            ADMIN,
            r#"{"add":3}"#,
        ),
    );
    assert_eq!(s, 200, "{v}");
    let r = request(f.addr, &buy_req(a, 1, 2, "x"));
    assert_eq!(r.status, 201, "{}", r.body_str());
    let (s, v) = call(&f, &post(&format!("/api/v1/activities/{b}/end"), ADMIN, ""));
    assert_eq!(s, 200, "{v}");
    let ended_at = v["end_at"].clone();
    // Wait for the snapshotter to cover the whole log.
    let committed = metric(&f, "flashd_log_committed_lsn");
    let t0 = std::time::Instant::now();
    while metric(&f, "flashd_log_snapshot_lsn") < committed {
        assert!(
            t0.elapsed().as_secs() < 20,
            "no snapshot covers LSN {committed}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dir = f.crash();
    let f = Flashd::start_in(dir, &config, &[]);
    let va = activity(f.addr, a);
    assert_eq!(
        (
            va["stock"].as_u64(),
            va["remaining"].as_u64(),
            va["reserved"].as_u64()
        ),
        (Some(7), Some(5), Some(2))
    );
    let vb = activity(f.addr, b);
    assert_eq!(
        (&vb["end_at"], &vb["start_at"], &vb["state"]),
        (&ended_at, &ended_at, &Value::from("ended"))
    );
}
