//! What one Redis core costs per order decided, by batch size: a
//! measurement, not a test.
//!
//! Starts a private `redis-server` (no persistence unless `--aof`, which
//! runs it with `appendonly yes`, `appendfsync always`), then for batch
//! sizes 1, 16, 64, 256, 1024 decides `--orders` purchases of one hot sale
//! (distinct buyers, stock never runs out) in batches from one client, then
//! pays all of them in batches of the same size, and prints per size:
//! wall time per script call, orders a second one client gets, Redis CPU
//! per order from `INFO cpu` (`used_cpu_sys + used_cpu_user` deltas), and
//! the ceiling that follows: orders one Redis core can decide a second
//! (`1 / cpu per order`).
//!
//! `cargo run --release -p flashd-redis --example batch_cost [-- --orders N] [--aof]`

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flashd_redis::{Buy, ClientConfig, Decision, RedisClient, SaleSpec, Settle};

fn cpu_seconds(conn: &mut redis::Connection) -> f64 {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn).unwrap();
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {name} in INFO cpu"))
            .trim()
            .parse()
            .unwrap()
    };
    field("used_cpu_sys") + field("used_cpu_user")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let aof = args.iter().any(|a| a == "--aof");
    let orders: usize = args
        .iter()
        .position(|a| a == "--orders")
        .map(|i| args[i + 1].parse().expect("--orders N"))
        .unwrap_or(100_000);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("flashd-redis-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&dir)
        .args(["--appendonly", if aof { "yes" } else { "no" }])
        .args(["--appendfsync", "always"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let url = format!("redis://127.0.0.1:{port}/");
    let mut conn = loop {
        match redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_with_timeout(Duration::from_millis(100))
        {
            Ok(c) => break c,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let version: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mut cfg = ClientConfig::new(url, 1);
    cfg.timeout = Duration::from_secs(10);
    let client = RedisClient::start(cfg).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    println!(
        "redis {version}, {}, {orders} orders a batch size, one client",
        if aof {
            "appendonly yes, appendfsync always"
        } else {
            "no persistence"
        }
    );
    println!(
        "| batch | buy: µs/call | buy: orders/s (1 client) | buy: Redis CPU µs/order | buy: ceiling orders/s/core | pay: Redis CPU µs/order | buy+pay ceiling/core |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (sale, batch) in [1usize, 16, 64, 256, 1024].into_iter().enumerate() {
        let sale = sale as u32 + 1;
        let spec = SaleSpec {
            stock: u64::MAX / 4,
            per_user_limit: 1,
            start_at: now - 1000,
            end_at: now + 3_600_000,
            price_cents: 999,
        };
        client.create_sale(sale, spec).wait().unwrap();
        let calls = orders.div_ceil(batch);
        let mut granted = Vec::with_capacity(calls * batch);
        let cpu0 = cpu_seconds(&mut conn);
        let t0 = Instant::now();
        let mut id = (now - flashd_engine::EPOCH_MS) << 22 | 1 << 12;
        for call in 0..calls {
            let buys: Vec<Buy> = (0..batch)
                .map(|k| {
                    id += 1;
                    Buy {
                        user: (call * batch + k) as u64 + 1,
                        request_id: format!("req-{call}-{k}"),
                        quantity: 1,
                        order_id: id,
                        amount_cents: 999,
                        deadline_ms: now + 900_000,
                    }
                })
                .collect();
            for d in client.buy(sale, now, buys).wait().unwrap() {
                match d {
                    Decision::Granted(c) => granted.push(c),
                    d => panic!("{d:?}"),
                }
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(&mut conn) - cpu0;
        let n = (calls * batch) as f64;
        let cpu_buy = cpu / n;
        let cpu1 = cpu_seconds(&mut conn);
        for chunk in granted.chunks(batch) {
            let ops = chunk
                .iter()
                .map(|c| Settle::Pay {
                    user: c.user,
                    order_id: c.order_id,
                })
                .collect();
            client.settle(sale, now + 1, ops).wait().unwrap();
        }
        let cpu_pay = (cpu_seconds(&mut conn) - cpu1) / n;
        println!(
            "| {batch} | {:.1} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} |",
            wall / calls as f64 * 1e6,
            n / wall,
            cpu_buy * 1e6,
            1.0 / cpu_buy,
            cpu_pay * 1e6,
            1.0 / (cpu_buy + cpu_pay),
        );
        let () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    }
    drop(client);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
