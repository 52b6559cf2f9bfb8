//! Proves the request id and the logs against the running binary: a sane
//! `X-Request-Id` is echoed (also on answers that waited for the log), a
//! bad or absent one is replaced by a generated one, unique per request;
//! with `logging.format = "json"` every line on stderr is a JSON object
//! and the access and audit lines carry the request's id; the access log's
//! modes (`off`, `errors`, `all` sampled) pick the requests they say.

mod common;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `raw` with `X-Request-Id: id` after its request line.
fn with_id(raw: &str, id: &str) -> String {
    let (line, rest) = raw.split_once("\r\n").unwrap();
    format!("{line}\r\nX-Request-Id: {id}\r\n{rest}")
}

/// The echoed id of `raw`'s answer, after checking its status.
fn echoed(f: &Flashd, raw: &str, status: u16) -> String {
    let r = request(f.addr, raw);
    assert_eq!(r.status, status, "{}", r.body_str());
    r.header("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on {raw}"))
        .to_string()
}

/// Lines logged until one satisfies `last`, within a few seconds.
fn lines_until(log: &Receiver<String>, last: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the awaited line never came; got:\n{}", out.join("\n")));
        let done = last(&line);
        out.push(line);
        if done {
            return out;
        }
    }
}

/// The access lines among JSON `lines`: (request id, route, status).
fn access(lines: &[String]) -> Vec<(String, String, u64)> {
    lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["target"] == "flashd::access")
        .map(|v| {
            let f = &v["fields"];
            (
                f["request_id"].as_str().unwrap().to_string(),
                f["route"].as_str().unwrap().to_string(),
                f["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn config(logging: &str) -> String {
    sale_config(&format!(
        "[rate_limit]\nper_user_rps = 0\n[reactor]\nsub_reactors = 1\npin_cpus = false\n[engine]\nmax_activities = 1\n[logging]\n{logging}"
    ))
}

fn create_body() -> String {
    format!(
        r#"{{"sku_id":"S","name":"N","price_cents":100,"stock":1,"start_at":"{}","end_at":"{}"}}"#,
        rfc3339(-5),
        rfc3339(3600)
    )
}

#[test]
fn ids_are_echoed_and_json_lines_carry_them() {
    raise_nofile();
    let f = Flashd::start(&config("format = \"json\"\naccess_log = \"all\"\n"));
    let a = create(f.addr, 1, 1, -5, 3600);

    // A client's id, echoed: at once (a GET), and after the log's commit
    // (a buy answered from the completion ring).
    let sale = format!("GET /api/v1/activities/{a} HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(echoed(&f, &with_id(&sale, "get-1"), 200), "get-1");
    let uuid = "0b5e8a52-6c1f-4e0e-9d55-3f1c2a7b9e10";
    assert_eq!(
        echoed(&f, &with_id(&buy_req(a, 1, 1, "b1"), uuid), 201),
        uuid
    );
    // Refused ones too.
    assert_eq!(
        echoed(&f, &with_id(&buy_req(a, 2, 1, "b2"), "sold-out"), 409),
        "sold-out"
    );
    let stock = post(
        &format!("/api/v1/activities/{a}/stock"),
        ADMIN,
        r#"{"add":2}"#,
    );
    assert_eq!(echoed(&f, &with_id(&stock, "admin-7"), 200), "admin-7");

    // Absent or unfit: replaced by a generated one, new for each request.
    let long = "x".repeat(65);
    let mut generated = Vec::new();
    for raw in [
        sale.clone(),
        with_id(&sale, &long),
        with_id(&sale, "two words"),
        buy_req(a, 3, 1, "b3"),
    ] {
        let id = echoed(&f, &raw, if raw.contains("orders") { 201 } else { 200 });
        assert!(id != long && !id.contains(' '), "{id}");
        // <node>-<reactor>-<start ms>-<n>, hex.
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.len(), 4, "{id}");
        assert!(
            parts.iter().all(|p| u64::from_str_radix(p, 16).is_ok()),
            "{id}"
        );
        generated.push(id);
    }
    let mut distinct = generated.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), generated.len(), "{generated:?}");

    // Every line is JSON; the access lines name each request by its id,
    // the admin's change is on an audit line with its id.
    let last = generated.last().unwrap().clone();
    let lines = lines_until(&f.log, |l| {
        l.contains(&last) && l.contains("flashd::access")
    });
    let acc = access(&lines);
    for (id, route, status) in [
        ("get-1", "get_activity", 200),
        (uuid, "place_order", 201),
        ("sold-out", "place_order", 409),
        ("admin-7", "add_stock", 200),
    ] {
        assert!(
            acc.contains(&(id.to_string(), route.to_string(), status)),
            "{id} {route} {status} not in {acc:?}"
        );
    }
    for id in &generated {
        assert!(acc.iter().any(|(i, _, _)| i == id), "{id} not in {acc:?}");
    }
    let audit: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["fields"]["message"] == "sale changed")
        .collect();
    assert_eq!(audit.len(), 1, "{lines:?}");
    assert_eq!(audit[0]["fields"]["request_id"], "admin-7");
    assert_eq!(audit[0]["fields"]["stock"], 3);
}

#[test]
fn errors_mode_logs_only_answers_of_500_and_above() {
    raise_nofile();
    let f = Flashd::start(&config("format = \"json\"\naccess_log = \"errors\"\n"));
    let a = create(f.addr, 1, 1, -5, 3600);
    request(f.addr, &buy_req(a, 1, 1, "x"));
    request(f.addr, &buy_req(a, 2, 1, "y")); // 409
    request(f.addr, &get("/api/v1/activities", "wrong")); // 401
                                                          // engine.max_activities = 1: a second sale is a 503.
    let full = with_id(
        &post("/api/v1/activities", ADMIN, &create_body()),
        "the-503",
    );
    assert_eq!(echoed(&f, &full, 503), "the-503");
    let lines = lines_until(&f.log, |l| l.contains("the-503"));
    assert_eq!(
        access(&lines),
        [("the-503".to_string(), "create_activity".to_string(), 503)]
    );
}

#[test]
fn all_mode_samples_one_in_n_and_off_logs_none() {
    raise_nofile();
    let f = Flashd::start(&config(
        "format = \"json\"\naccess_log = \"all\"\naccess_sample_every = 3\n",
    ));
    // Nine requests on the one reactor: the 3rd, 6th and 9th get a line.
    let ids: Vec<String> = (1..=9).map(|i| format!("req-{i}")).collect();
    for id in &ids {
        echoed(
            &f,
            &with_id("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", id),
            200,
        );
    }
    let lines = lines_until(&f.log, |l| l.contains("\"req-9\""));
    let got: Vec<String> = access(&lines).into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(got, ["req-3", "req-6", "req-9"]);
    drop(f);

    // Off, in text: no access line, whatever the answers; the admin's
    // audit line still carries the id (as a text field).
    let f = Flashd::start(&config(""));
    let a = create(f.addr, 1, 1, -5, 3600);
    request(f.addr, &with_id(&buy_req(a, 1, 1, "x"), "quiet-1"));
    request(
        f.addr,
        &with_id(
            &post("/api/v1/activities", ADMIN, &create_body()),
            "quiet-503",
        ),
    );
    let end = with_id(
        &post(&format!("/api/v1/activities/{a}/end"), ADMIN, ""),
        "end-1",
    );
    assert_eq!(echoed(&f, &end, 200), "end-1");
    let lines = lines_until(&f.log, |l| l.contains("sale changed"));
    assert!(
        lines.last().unwrap().contains("request_id=\"end-1\""),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("access") && !l.contains("quiet-")),
        "{lines:?}"
    );
}
