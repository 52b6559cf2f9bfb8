//! A private `redis-server` per test (a free port, its own directory), so
//! tests never collide with each other or with the machine's Redis, and may
//! kill and restart theirs.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flashd_engine::{ActivityId, Event, EPOCH_MS};
use flashd_redis::{Buy, ClientConfig, RedisClient, SaleSpec};

pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    aof: bool,
}

/// Whether `redis-server` is on the PATH; tests print why and pass if not.
pub fn have_redis() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: redis-server is not installed");
    }
    ok
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateRedis {
    /// Start one; with `aof`, `appendonly yes` and `appendfsync always`.
    pub fn start(aof: bool) -> PrivateRedis {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "flashd-redis-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = PrivateRedis {
            child: None,
            port: free_port(),
            dir,
            aof,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        // Another test may take the free port between our look and
        // redis-server's bind: then ours exits, and we try another port
        // (a restart keeps its port: its AOF directory says so).
        for _ in 0..20 {
            if self.try_spawn() {
                return;
            }
            self.port = free_port();
        }
        panic!("redis-server did not start");
    }

    /// Start redis-server; true once the Redis answering on the port is
    /// this process (its `process_id`), false if it exited.
    fn try_spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", ""])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .args(["--logfile", "redis.log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let t0 = Instant::now();
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if let Ok(c) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = c.get_connection_with_timeout(Duration::from_millis(200)) {
                    let info: Result<String, _> = redis::cmd("INFO").arg("server").query(&mut conn);
                    if let Ok(info) = info {
                        let pid = format!("process_id:{}", child.id());
                        if info.lines().any(|l| l.trim() == pid) {
                            self.child = Some(child);
                            return true;
                        }
                    }
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and directory (reloading the AOF).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub fn client(&self, node: u16) -> RedisClient {
        let mut cfg = ClientConfig::new(self.url(), node);
        cfg.timeout = Duration::from_secs(5);
        RedisClient::start(cfg).unwrap()
    }

    /// A plain connection, for poking at Redis behind the client's back.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Order ids in the engine's layout for `node`: unique, increasing.
pub struct Ids {
    node: u64,
    base: u64,
    n: AtomicU64,
}

impl Ids {
    pub fn new(node: u16, now: u64) -> Ids {
        Ids {
            node: u64::from(node),
            base: now - EPOCH_MS,
            n: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> u64 {
        let c = self.n.fetch_add(1, Ordering::Relaxed);
        ((self.base + c / 4096) << 22) | (self.node << 12) | (c % 4096)
    }
}

pub const PRICE: u64 = 999;
pub const TTL: u64 = 60_000;

pub fn spec(stock: u64, limit: u32, now: u64) -> SaleSpec {
    SaleSpec {
        stock,
        per_user_limit: limit,
        start_at: now - 1000,
        end_at: now + 3_600_000,
        price_cents: PRICE,
    }
}

/// The `ActivityCreated` the log would hold for `spec`.
pub fn created(sale: ActivityId, spec: SaleSpec, now: u64) -> Event {
    Event::ActivityCreated {
        id: sale,
        sku_id: "sku".into(),
        name: "sale".into(),
        price_cents: spec.price_cents,
        stock: spec.stock,
        start_at: spec.start_at,
        end_at: spec.end_at,
        per_user_limit: spec.per_user_limit,
        created_at: now,
    }
}

pub fn buy(ids: &Ids, user: u64, req: &str, qty: u32, now: u64) -> Buy {
    Buy {
        user,
        request_id: req.into(),
        quantity: qty,
        order_id: ids.next(),
        amount_cents: PRICE * u64::from(qty),
        deadline_ms: now + TTL,
    }
}

/// A small xorshift, so tests need no crate for randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
