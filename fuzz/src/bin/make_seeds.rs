//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`
//! with flashd's own code: requests a client sends, chunked bodies, tokens
//! `Auth::issue` signs, segments `FileLog` writes of events the real engine
//! made, a snapshot `write_snapshot` wrote of that engine, Kafka values
//! the Kafka backend's encoders make, and the shipped configuration.
//! Run it again (`scripts/fuzz --seeds`) when a format changes.

use std::path::{Path, PathBuf};

use flashd::auth::Auth;
use flashd_engine::{ActivitySpec, Engine, EngineConfig, Event, PlaceOrder, Placed};
use flashd_fuzz::{push_item, ITEM_NEW_FILE, ITEM_RAW};
use flashd_kafka::{
    encode_abort, encode_events, encode_group_events, encode_value, Abort, LogRecord,
};
use flashd_log::{
    decode_record, list_segments, write_snapshot, Decoded, FileLog, FileLogConfig, OrderLog,
    HEADER_BYTES,
};

/// The keys the auth_token target verifies with (kept equal to it).
const JWT_SECRET: &str = "fuzz-jwt-secret-0123456789abcdef0123456789";
const ADMIN_TOKEN: &str = "fuzz-admin-token-0123456789abcdef";

/// A fixed "now" (2026-01-01T00:00:00Z), so the seeds do not change from
/// run to run.
const NOW_MS: u64 = 1_767_225_600_000;

struct Corpus {
    root: PathBuf,
}

impl Corpus {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create a corpus directory");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let c = Corpus { root };
    http(&c);
    chunked(&c);
    auth(&c);
    let events = engine_events();
    log(&c, &events.0);
    snapshot(&c, &events.1);
    kafka(&c, &events.0);
    config(&c);
    eprintln!("seeds written under {}", c.root.display());
}

const REQUESTS: &[(&str, &[u8])] = &[
    ("get", b"GET /api/v1/activities/1 HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    (
        "post_length",
        b"POST /api/v1/activities/1/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\nContent-Type: application/json\r\nContent-Length: 38\r\n\r\n{\"quantity\": 1, \"request_id\": \"b7e1\"}\n",
    ),
    (
        "post_chunked",
        b"POST /api/v1/orders/7/pay HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n",
    ),
    (
        "pipelined",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ),
    (
        "http10_keepalive",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD / HTTP/1.0\r\n\r\n",
    ),
    (
        "expect_continue",
        b"POST /api/v1/activities HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    ),
    (
        "absolute_form",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET http://a.example/api/v1/activities HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ),
    (
        "te_and_cl",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "te_list",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ),
];

fn http(c: &Corpus) {
    for (name, wire) in REQUESTS {
        // Default limits, whole; then small limits in reads of 3 and 7.
        let mut v = vec![0, 0];
        v.extend_from_slice(wire);
        c.put("http_framer", name, &v);
        let mut v = vec![0x41, 2, 2, 6];
        v.extend_from_slice(wire);
        c.put("http_framer", &format!("{name}_split"), &v);
        // The fast head reader: 64 header slots, then 1.
        let mut v = vec![64];
        v.extend_from_slice(wire);
        c.put("http_head", name, &v);
        v[0] = 1;
        c.put("http_head", &format!("{name}_one_slot"), &v);
    }
}

fn chunked(c: &Corpus) {
    let raw: &[(&str, &[u8])] = &[
        ("basic", b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"),
        (
            "ext_trailer",
            b"4;a=b;c\r\nWiki\r\n0\r\nX-Sum: 1\r\nX-Two: 2\r\n\r\nGET /",
        ),
        ("big_size", b"ffff\r\n"),
        ("bare_lf", b"4\nWiki\n0\n\n"),
    ];
    for (name, body) in raw {
        let mut v = vec![0, 0, 0];
        v.extend_from_slice(body);
        c.put("chunked", name, &v);
    }
    let mut v = vec![1, 0, 2, 4, 9];
    v.extend_from_slice(&[3, 0x45, 0x81, 7, 1, 1, 2, 3]);
    v.extend_from_slice(b"{\"quantity\": 1, \"request_id\": \"b7e1\"}");
    c.put("chunked", "encoded", &v);
}

fn auth(c: &Corpus) {
    let a = Auth::new(JWT_SECRET, ADMIN_TOKEN);
    // Far from expiry (a century), so the seeds stay valid tokens.
    let now_s = NOW_MS / 1000;
    for user in [1u64, 42, 4_294_967_296, u64::MAX] {
        let t = a.issue(user, now_s, 100 * 365 * 24 * 3600);
        c.put(
            "auth_token",
            &format!("token_{user}"),
            format!("\0Bearer {t}").as_bytes(),
        );
    }
    c.put(
        "auth_token",
        "admin",
        format!("\0Bearer {ADMIN_TOKEN}").as_bytes(),
    );
    c.put(
        "auth_token",
        "admin_lower",
        format!("\0bearer  {ADMIN_TOKEN} ").as_bytes(),
    );
    for (name, header, claims) in [
        (
            "claims",
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"sub":"42","exp":4102444800}"#,
        ),
        (
            "claims_nbf",
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"7","exp":4102444800,"nbf":1700000000,"iat":1}"#,
        ),
        (
            "claims_none",
            r#"{"alg":"none"}"#,
            r#"{"sub":"7","exp":4102444800}"#,
        ),
        (
            "claims_sign",
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"+7","exp":4102444800}"#,
        ),
        (
            "claims_zero",
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"007","exp":4102444800}"#,
        ),
        (
            "claims_big",
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"18446744073709551616","exp":4102444800}"#,
        ),
    ] {
        let mut v = vec![1];
        v.extend_from_slice(header.as_bytes());
        v.push(0);
        v.extend_from_slice(claims.as_bytes());
        c.put("auth_token", name, &v);
    }
}

/// Events of a small sale the real engine made (two sales, orders, a pay,
/// a cancel, an expiry), and the engine's snapshot after them.
fn engine_events() -> (Vec<Event>, flashd_engine::EngineSnapshot) {
    let engine = Engine::new(EngineConfig::default());
    let mut evs: Vec<Event> = Vec::new();
    for (sku, stock) in [("PHONE-X", 5u64), ("CASE-Ü", 100)] {
        engine
            .create_activity(
                &ActivitySpec {
                    sku_id: sku.into(),
                    name: format!("{sku} sale"),
                    price_cents: 99_900,
                    stock,
                    start_at: NOW_MS - 60_000,
                    end_at: NOW_MS + 3_600_000,
                    per_user_limit: 2,
                },
                NOW_MS,
                &mut evs,
            )
            .expect("create a sale");
    }
    let mut orders = Vec::new();
    for user in 1..=4u64 {
        let rid = format!("r-{user}");
        let placed = engine
            .place_order(
                &PlaceOrder {
                    activity_id: 1 + (user % 2) as u32,
                    user_id: user,
                    quantity: 1 + (user % 2) as u32,
                    request_id: &rid,
                },
                NOW_MS,
                &mut evs,
            )
            .expect("place an order");
        if let Placed::Created(o) = placed {
            orders.push((user, o.id));
        }
    }
    let (u, o) = orders[0];
    engine.pay(u, o, NOW_MS + 1, &mut evs).expect("pay");
    let (u, o) = orders[1];
    engine.cancel(u, o, NOW_MS + 2, &mut evs).expect("cancel");
    engine.expire_due(NOW_MS + 3_600_000, 16, &mut evs);
    let snap = engine.export();
    (evs, snap)
}

/// Segment files a `FileLog` wrote (small segments, so there are several).
fn log(c: &Corpus, events: &[Event]) {
    let dir = scratch("log");
    let mut log = FileLog::open(
        FileLogConfig {
            dir: dir.clone(),
            segment_bytes: 256,
            fsync: false,
        },
        None,
        0,
    )
    .expect("open a log");
    for ev in events {
        log.append(std::slice::from_ref(ev)).expect("append");
        log.commit().expect("commit");
    }
    drop(log);
    let segs = list_segments(&dir).expect("list segments");
    let mut framed = vec![1, 0];
    for (i, (base, path)) in segs.iter().enumerate() {
        let bytes = std::fs::read(path).expect("read a segment");
        if i == 0 {
            // Raw: the first segment as FileLog wrote it, then with a torn
            // last record, then recovered from LSN 1.
            let mut v = vec![0, 0];
            v.extend_from_slice(&bytes);
            c.put("log_segment", "raw_segment", &v);
            v.truncate(v.len() - 3);
            c.put("log_segment", "raw_torn", &v);
            let mut v = vec![0, 1];
            v.extend_from_slice(&bytes);
            c.put("log_segment", "raw_from_1", &v);
        } else {
            push_item(&mut framed, ITEM_NEW_FILE, &base.to_le_bytes());
        }
        for (kind, payload) in records(&bytes[HEADER_BYTES..]) {
            push_item(&mut framed, kind, payload);
        }
    }
    c.put("log_segment", "framed_all", &framed);
    // A zeroed record in the middle of the last segment, valid ones after.
    let mut damaged = framed.clone();
    push_item(&mut damaged, ITEM_RAW, &[0; 16]);
    let mut tail = Vec::new();
    flashd_log::encode_event(&events[0], &mut tail);
    push_item(&mut damaged, 1, &tail);
    c.put("log_segment", "framed_zeroed_middle", &damaged);
    damaged[0] = 3;
    c.put("log_segment", "framed_zeroed_middle_truncate", &damaged);
    let _ = std::fs::remove_dir_all(&dir);
}

fn records(mut buf: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let Decoded::Record { kind, payload, len } = decode_record(buf) {
        out.push((kind, payload));
        buf = &buf[len..];
    }
    out
}

fn snapshot(c: &Corpus, snap: &flashd_engine::EngineSnapshot) {
    let dir = scratch("snap");
    let path = write_snapshot(&dir, 12, snap, false).expect("write a snapshot");
    let bytes = std::fs::read(&path).expect("read the snapshot");
    let mut v = vec![0];
    v.extend_from_slice(&bytes);
    c.put("snapshot", "raw_v2", &v);
    // Framed, format 2 at LSN 12 (mode = 1 | 1 << 1 | 12 << 2).
    let mut v = vec![1 | 2 | 12 << 2];
    for (kind, payload) in records(&bytes[HEADER_BYTES..]) {
        push_item(&mut v, kind, payload);
    }
    c.put("snapshot", "framed_v2", &v);
    // Format 1 (one record per order, request ids as strings), which
    // flashd still reads: the header, the sales, one order.
    let mut v = vec![1 | 12 << 2];
    let mut p = Vec::new();
    p.extend_from_slice(&12u64.to_le_bytes());
    p.extend_from_slice(&snap.next_activity.to_le_bytes());
    p.extend_from_slice(&snap.last_order_id.to_le_bytes());
    p.extend_from_slice(&(snap.activities.len() as u64).to_le_bytes());
    p.extend_from_slice(&1u64.to_le_bytes());
    push_item(&mut v, 10, &p);
    for (kind, payload) in records(&bytes[HEADER_BYTES..]) {
        if kind == 11 {
            push_item(&mut v, kind, payload);
        }
    }
    let o = &snap.orders[0];
    let mut p = Vec::new();
    p.extend_from_slice(&o.id.to_le_bytes());
    p.extend_from_slice(&o.activity_id.to_le_bytes());
    p.extend_from_slice(&o.user_id.to_le_bytes());
    p.extend_from_slice(&o.quantity.to_le_bytes());
    p.extend_from_slice(&o.amount_cents.to_le_bytes());
    p.push(o.status as u8);
    p.extend_from_slice(&3u16.to_le_bytes());
    p.extend_from_slice(b"r-1");
    p.extend_from_slice(&o.created_at.to_le_bytes());
    p.extend_from_slice(&o.expires_at.to_le_bytes());
    p.extend_from_slice(&o.updated_at.to_le_bytes());
    p.push(0);
    push_item(&mut v, 12, &p);
    c.put("snapshot", "framed_v1", &v);
    let _ = std::fs::remove_dir_all(&dir);
}

fn kafka(c: &Corpus, events: &[Event]) {
    let mut v = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        encode_value(i as u64, &LogRecord::Event(ev.clone()), &mut v);
        c.put("kafka_record", &format!("event_{i}"), &v);
    }
    encode_value(99, &LogRecord::Abort(events[2..5].to_vec()), &mut v);
    c.put("kafka_record", "abort", &v);
    let packed: Vec<(u64, &Event)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 7, e))
        .collect();
    encode_events(&packed, &mut v);
    c.put("kafka_record", "packed", &v);
    encode_group_events(7, &packed, &mut v);
    c.put("kafka_record", "group", &v);
    let abort = Abort {
        covers: 7..10,
        events: packed[..3]
            .iter()
            .map(|(l, e)| (*l, (*e).clone()))
            .collect(),
    };
    encode_abort(12, &abort, &mut v);
    c.put("kafka_record", "abort_range", &v);
}

fn config(c: &Corpus) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/flashd.toml");
    let text = std::fs::read(&shipped).expect("read tuning/flashd.toml");
    c.put("config", "tuning_flashd", &text);
    c.put("config", "empty", b"");
    c.put(
        "config",
        "kafka",
        b"[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 65536\n\n[engine]\nnode_id = 3\n\n[log]\nbackend = \"kafka\"\nack = \"durable\"\non_corruption = \"refuse\"\nring_capacity = 4096\n\n[log.kafka]\nbrokers = \"127.0.0.1:9092\"\ntopic = \"flashd\"\npartitions = 4\n\n[sink]\nembedded = true\n\n[[mysql.shards]]\nurl = \"mysql://root@127.0.0.1:3306/flashd_shard0\"\n\n[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n",
    );
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flashd-seeds-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a scratch directory");
    d
}
