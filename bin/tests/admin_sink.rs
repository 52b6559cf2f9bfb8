//! Proves an admin's changes of a sale reach MySQL through the production
//! path: the real `flashd` binary on a Kafka-API broker (tansu, as
//! `bin/tests/kafka.rs` runs it) with the embedded sink writing into
//! MariaDB, whose `activities` row then holds the added stock and the moved
//! and ended windows; a restart of the server on the same topic replays
//! them; and in cluster mode (a private Redis) a change is refused.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::services::{Broker, Redis};
use common::*;

fn maria_port() -> u16 {
    std::env::var("FLASHD_MYSQL_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3306)
}

fn query(db: &str, sql: &str) -> Vec<Vec<String>> {
    let out = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{}", maria_port()),
            "-uroot",
            "-N",
            "-B",
            db,
            "-e",
            sql,
        ])
        .output()
        .expect("mariadb client");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn drop_db(db: &str) {
    let _ = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{}", maria_port()),
            "-uroot",
            "-e",
        ])
        .arg(format!("DROP DATABASE IF EXISTS {db}"))
        .output();
}

/// `(stock, remaining, reserved, sold, start_at, end_at)` of sale `id` in
/// MySQL, once there.
fn row(db: &str, id: u64) -> Option<[u64; 6]> {
    let r = query(
        db,
        &format!(
            "SELECT stock, remaining, reserved, sold, start_at, end_at FROM activities WHERE id = {id}"
        ),
    );
    let r = r.first()?;
    Some(std::array::from_fn(|i| r[i].parse().unwrap()))
}

fn ms(rfc3339: &serde_json::Value) -> u64 {
    let t = time::OffsetDateTime::parse(
        rfc3339.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as u64
}

fn patch(path: &str, body: &str) -> String {
    format!("PATCH {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

/// The sale's row as MySQL should hold it, from the server's own answer.
fn want(v: &serde_json::Value) -> [u64; 6] {
    [
        v["stock"].as_u64().unwrap(),
        v["remaining"].as_u64().unwrap(),
        v["reserved"].as_u64().unwrap(),
        v["sold"].as_u64().unwrap(),
        ms(&v["start_at"]),
        ms(&v["end_at"]),
    ]
}

#[test]
fn admin_changes_reach_mysql_through_kafka_and_the_sink() {
    raise_nofile();
    let tmp = TempDir::new("admin-sink");
    let broker = Broker::start(tmp.path());
    let db = format!("flashd_admin_{}_s0", std::process::id());
    drop_db(&db);
    let cfg = sale_config(&format!(
        "[rate_limit]\nper_user_rps = 0\n[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"127.0.0.1:{}\"\ntopic = \"admin-sink\"\npartitions = 3\nunavailable_ms = 500\n[[mysql.shards]]\nurl = \"mysql://root@127.0.0.1:{}/{db}\"\n[sink]\nembedded = true\nbatch_wait_ms = 10\n",
        broker.port,
        maria_port()
    ));
    let migrate = tmp.path().join("migrate.toml");
    std::fs::write(&migrate, &cfg).unwrap();
    let out = Command::new(bin())
        .args(["migrate", "--config"])
        .arg(&migrate)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let srv = Flashd::start(&cfg);
    let a = create_when_log_ready(srv.addr, 5, 5, -5, 3600, Duration::from_secs(20));
    let b = create(srv.addr, 5, 5, 600, 1200);
    let r = request(srv.addr, &buy_req(a, 1, 2, "x"));
    assert_eq!(r.status, 201, "{}", r.body_str());
    let r = request(
        srv.addr,
        &post(
            &format!("/api/v1/activities/{a}/stock"),
            ADMIN,
            r#"{"add":3}"#,
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let r = request(
        srv.addr,
        &patch(
            &format!("/api/v1/activities/{a}"),
            &format!(r#"{{"end_at":"{}"}}"#, rfc3339(7200)),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let r = request(
        srv.addr,
        &post(&format!("/api/v1/activities/{b}/end"), ADMIN, ""),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let (va, vb) = (activity(srv.addr, a), activity(srv.addr, b));
    assert_eq!(va["stock"], 8);
    assert_eq!(vb["state"], "ended");

    let t0 = Instant::now();
    while row(&db, a) != Some(want(&va)) || row(&db, b) != Some(want(&vb)) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "MySQL has {:?} and {:?}, want {:?} and {:?}",
            row(&db, a),
            row(&db, b),
            want(&va),
            want(&vb)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A restart replays the topic: the same sales.
    let dir = srv.stop();
    let srv = Flashd::start_in(dir, &cfg, &[]);
    assert_eq!(want(&activity(srv.addr, a)), want(&va));
    assert_eq!(want(&activity(srv.addr, b)), want(&vb));
    drop(srv);
    drop_db(&db);
}

/// Cluster mode: Redis holds a sale's stock and window for every node, so
/// a change made on one node is refused (501) and changes nothing; the
/// list of sales still answers.
#[test]
fn cluster_mode_refuses_changes_of_a_sale() {
    raise_nofile();
    let tmp = TempDir::new("admin-cluster");
    let (bdir, rdir) = (tmp.path().join("broker"), tmp.path().join("redis"));
    std::fs::create_dir_all(&bdir).unwrap();
    std::fs::create_dir_all(&rdir).unwrap();
    let broker = Broker::start(&bdir);
    let redis = Redis::start(&rdir, true);
    let cfg = sale_config(&format!(
        "[workers]\ncount = 1\n[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"127.0.0.1:{}\"\ntopic = \"admin-cluster\"\npartitions = 1\nunavailable_ms = 1000\n[cluster]\nenabled = true\nredis_url = \"redis://127.0.0.1:{}/\"\n",
        broker.port, redis.port
    ));
    let srv = Flashd::start(&cfg);
    let a = create_when_log_ready(srv.addr, 5, 1, -5, 3600, Duration::from_secs(30));
    let before = activity(srv.addr, a);
    for raw in [
        post(
            &format!("/api/v1/activities/{a}/stock"),
            ADMIN,
            r#"{"add":1}"#,
        ),
        post(&format!("/api/v1/activities/{a}/end"), ADMIN, ""),
        patch(
            &format!("/api/v1/activities/{a}"),
            &format!(r#"{{"end_at":"{}"}}"#, rfc3339(60)),
        ),
    ] {
        let r = request(srv.addr, &raw);
        assert_eq!(r.status, 501, "{}", r.body_str());
        assert_eq!(json(&r)["error"], "not_supported");
    }
    assert_eq!(activity(srv.addr, a), before);
    let r = request(srv.addr, &get("/api/v1/activities", ADMIN));
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(json(&r)["activities"][0]["id"], a);
}
