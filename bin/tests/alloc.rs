//! No heap allocation per request on the hot paths (issue 17): a buy on a
//! sold-out sale, a `GET` of a sale and pipelined `/healthz`, served
//! in-process by the real handler (`app::App`) on a real reactor over
//! loopback, with the durable file log behind it. A counting global
//! allocator counts every allocation in the process (reactor, log writer,
//! this client); after a warm-up, a few hundred requests of each kind
//! must add none (but for the timer wheel's first use of a slot, at most
//! one per 10 ms tick). The client sends pre-built requests and reads into a
//! fixed buffer, so it allocates nothing itself while counting.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashd::clock::SystemClock;
use flashd::serve::Service;
use flashd::{auth, config};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SECRET: &str = "alloc-test-secret-0123456789";
const ADMIN: &str = "alloc-test-admin-0123456789";

/// One request or a pipelined batch, and how many answers it gets.
struct Batch {
    bytes: Vec<u8>,
    answers: usize,
}

/// Send `b` and read its answers into `buf`; returns the statuses seen
/// (as a bit set of the first digit), allocating nothing.
fn exchange(s: &mut TcpStream, b: &Batch, buf: &mut [u8]) -> u32 {
    s.write_all(&b.bytes).unwrap();
    let (mut have, mut at, mut done, mut statuses) = (0usize, 0usize, 0usize, 0u32);
    while done < b.answers {
        // A complete head at `at`?
        let head_end = buf[at..have]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| at + p + 4);
        if let Some(end) = head_end {
            let head = &buf[at..end];
            let len = content_length(head);
            if have >= end + len {
                statuses |= 1 << (head[9] - b'0');
                at = end + len;
                done += 1;
                continue;
            }
        }
        assert!(have < buf.len(), "answers larger than the client buffer");
        let n = s.read(&mut buf[have..]).unwrap();
        assert!(n > 0, "server closed the connection");
        have += n;
    }
    assert_eq!(at, have, "more bytes than answers");
    statuses
}

fn content_length(head: &[u8]) -> usize {
    let key = b"\r\nContent-Length: ";
    let i = head
        .windows(key.len())
        .position(|w| w == key)
        .expect("Content-Length")
        + key.len();
    head[i..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0, |n, &b| n * 10 + (b - b'0') as usize)
}

fn post(path: &str, token: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n").into_bytes()
}

#[test]
fn hot_requests_allocate_nothing() {
    let dir = std::env::temp_dir().join(format!("flashd-alloc-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    // The server as `flashd serve` wires it (`Service`): one reactor,
    // commands run inline, durable acks through the file log (no fsync).
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
         [reactor]\nsub_reactors = 1\npin_cpus = false\n\
         [workers]\ncount = 0\n\
         [rate_limit]\nper_user_rps = 0\n\
         [auth]\njwt_secret = \"{SECRET}\"\nadmin_token = \"{ADMIN}\"\n\
         [log]\nfsync = false\n",
        dir.display()
    );
    let cfg = config::Config::parse(&text).unwrap_or_else(|e| panic!("config: {e:?}"));
    let svc = Service::start(&cfg, Arc::new(SystemClock)).expect("service starts");
    let addr = svc.local_addr();
    let auth = auth::Auth::new(SECRET, ADMIN);
    let now_s = SystemClock::now() / 1000;
    let tokens: Vec<String> = (0..400)
        .map(|u| auth.issue(1000 + u, now_s, 3600))
        .collect();

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let one = |bytes| Batch { bytes, answers: 1 };

    // A sale with one unit, sold.
    let start = SystemClock::now() - 10_000;
    let fmt = |ms: u64| {
        let mut b = [0u8; 24];
        flashd_protocol::rfc3339::format_rfc3339(ms, &mut b);
        String::from_utf8(b.to_vec()).unwrap()
    };
    let spec = format!(
        r#"{{"sku_id":"S","name":"alloc \"test\"","price_cents":100,"stock":1,"start_at":"{}","end_at":"{}"}}"#,
        fmt(start),
        fmt(start + 3_600_000)
    );
    let created = exchange(
        &mut s,
        &one(post("/api/v1/activities", ADMIN, &spec)),
        &mut buf,
    );
    assert_eq!(created, 1 << 2, "creating the sale");
    let sold = exchange(
        &mut s,
        &one(post(
            "/api/v1/activities/1/orders",
            &tokens[0],
            r#"{"quantity":1,"request_id":"first"}"#,
        )),
        &mut buf,
    );
    assert_eq!(sold, 1 << 2, "the one unit");
    // Its id, from the answer still in the buffer.
    let order_id: u64 = {
        let text = String::from_utf8_lossy(&buf);
        let key = "\"order_id\":\"";
        let at = text.find(key).expect("an order id") + key.len();
        text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    // The snapshot follower (a background thread polling every 200 ms)
    // applies those two events to its own engine copy, allocating as it
    // decodes them: let it, before anything is counted.
    std::thread::sleep(Duration::from_millis(600));

    // Every request built before counting.
    let buys: Vec<Batch> = (1..tokens.len())
        .map(|u| {
            let body = format!(r#"{{"quantity":1,"request_id":"r-{u}"}}"#);
            one(post("/api/v1/activities/1/orders", &tokens[u], &body))
        })
        .collect();
    let sale = one(get("/api/v1/activities/1"));
    // With a client's X-Request-Id: echoed, and for the order (answered
    // after the commit that covers it, from the reactor's completion
    // ring) parked until then.
    let with_id = |mut b: Vec<u8>| {
        let at = b.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        b.splice(
            at..at,
            b"X-Request-Id: 7d9f6c1e-client-id-0123456789\r\n"
                .iter()
                .copied(),
        );
        b
    };
    let buys_with_id: Vec<Batch> = buys.iter().map(|b| one(with_id(b.bytes.clone()))).collect();
    let order = one(with_id(
        format!(
            "GET /api/v1/orders/{order_id} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n",
            tokens[0]
        )
        .into_bytes(),
    ));
    let health = Batch {
        bytes: get("/healthz").repeat(16),
        answers: 16,
    };

    let scenarios: [(&str, Vec<&Batch>, u32); 5] = [
        // 409 sold out
        ("buy on a sold-out sale", buys.iter().collect(), 1 << 4),
        (
            "buy on a sold-out sale, X-Request-Id",
            buys_with_id.iter().collect(),
            1 << 4,
        ),
        ("GET a sale", vec![&sale], 1 << 2),
        (
            "GET an order after its commit, X-Request-Id",
            vec![&order],
            1 << 2,
        ),
        ("/healthz pipelined x16", vec![&health], 1 << 2),
    ];
    for (what, batches, want) in &scenarios {
        let batch = |i: usize| batches[i % batches.len()];
        for i in 0..100 {
            assert_eq!(
                exchange(&mut s, batch(i), &mut buf),
                *want,
                "{what} (warm-up)"
            );
        }
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let t0 = Instant::now();
        let mut statuses = 0;
        for i in 100..100 + buys.len() {
            statuses |= exchange(&mut s, batch(i), &mut buf);
        }
        let n = ALLOCATIONS.load(Ordering::SeqCst) - before;
        // The reactor's timer wheel gives a slot its buffer the first time
        // a deadline lands in it: at most one per 10 ms tick, for the first
        // ~41 s of a reactor's life, whatever the request rate. Anything
        // per request is hundreds.
        let ticks = t0.elapsed().as_millis() as u64 / 10 + 1;
        assert_eq!(statuses, *want, "{what}");
        assert!(
            n <= ticks,
            "{what}: {n} allocations over {} requests ({ticks} timer ticks)",
            buys.len()
        );
    }

    drop(s);
    svc.stop().expect("service stops");
    let _ = std::fs::remove_dir_all(&dir);
}
