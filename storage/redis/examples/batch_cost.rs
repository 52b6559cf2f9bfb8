//! What one Redis core costs per order decided, by batch size: a
//! measurement, not a test.
//!
//! Starts a private `redis-server` (no persistence unless `--aof`, which
//! runs it with `appendonly yes`, `appendfsync always`), then for each
//! batch size (`--batches`) decides `--orders` purchases of one hot sale
//! (distinct buyers, stock never runs out) in batches from one client, then
//! pays all of them in batches of the same size, then sends the same
//! buyers again (new request ids) to a sale with no stock, and prints per
//! size:
//! wall time per script call, orders a second one client gets, Redis CPU
//! per order from `INFO cpu` (`used_cpu_user + used_cpu_sys` deltas, and
//! the sys part alone), and the ceiling that follows: orders one Redis
//! core can decide a second (`1 / cpu per order`), and Redis CPU per
//! sold-out refusal. Each size runs
//! `--rounds` times (3) on a fresh sale; the round with the least CPU per
//! order is printed, because on a shared machine the others carry its
//! neighbours' preemptions.
//!
//! `cargo run --release -p flashd-redis --example batch_cost [-- --orders N] [--rounds R] [--aof] [--batches 256,1024]`
//! (`--batches` picks the sizes, 1,16,64,256,1024 by default; `--url
//! redis://...` measures that Redis instead of a private one: it
//! must be one no one else uses, as `INFO cpu` counts all its work, and
//! the run `FLUSHALL`s it).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flashd_redis::{Buy, Claim, ClientConfig, Decision, RedisClient, SaleSpec, Settle};

/// `(user, sys)` CPU seconds Redis has used.
fn cpu(conn: &mut redis::Connection) -> (f64, f64) {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn).unwrap();
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {name} in INFO cpu"))
            .trim()
            .parse()
            .unwrap()
    };
    (field("used_cpu_user"), field("used_cpu_sys"))
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    Some(
        args.get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} takes a value")),
    )
}

/// One round at one batch size.
struct Round {
    wall: f64,
    calls: usize,
    orders: usize,
    buy_user: f64,
    buy_sys: f64,
    pay: f64,
    sold_out: f64,
}

impl Round {
    fn buy_cpu(&self) -> f64 {
        (self.buy_user + self.buy_sys) / self.orders as f64
    }
}

fn round(
    client: &RedisClient,
    conn: &mut redis::Connection,
    sale: u32,
    batch: usize,
    orders: usize,
    now: u64,
) -> Round {
    let spec = SaleSpec {
        stock: u64::MAX / 4,
        per_user_limit: 1,
        start_at: now - 1000,
        end_at: now + 3_600_000,
        price_cents: 999,
    };
    client.create_sale(sale, spec).wait().unwrap();
    let calls = orders.div_ceil(batch);
    let mut granted: Vec<Claim> = Vec::with_capacity(calls * batch);
    let mut id = ((now - flashd_engine::EPOCH_MS) << 22) | (1 << 12);
    let batches: Vec<Vec<Buy>> = (0..calls)
        .map(|call| {
            (0..batch)
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
                .collect()
        })
        .collect();
    let (u0, s0) = cpu(conn);
    let t0 = Instant::now();
    for buys in batches {
        for d in client.buy(sale, now, buys).wait().unwrap() {
            match d {
                Decision::Granted(c) => granted.push(c),
                d => panic!("{d:?}"),
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let (u1, s1) = cpu(conn);
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
    let (u2, s2) = cpu(conn);
    // The stampede after the last unit: the same number of requests
    // against a sale with no stock left, from buyers new to it (the
    // common case of a stampede: no record to read apart).
    let empty = SaleSpec { stock: 0, ..spec };
    client.create_sale(sale + 1_000_000, empty).wait().unwrap();
    let again: Vec<Vec<Buy>> = (0..calls)
        .map(|call| {
            (0..batch)
                .map(|k| Buy {
                    user: (call * batch + k) as u64 + 1,
                    request_id: format!("late-{call}-{k}"),
                    quantity: 1,
                    order_id: 1,
                    amount_cents: 999,
                    deadline_ms: now + 900_000,
                })
                .collect()
        })
        .collect();
    for buys in again {
        for d in client.buy(sale + 1_000_000, now, buys).wait().unwrap() {
            assert_eq!(d, Decision::SoldOut);
        }
    }
    let (u3, s3) = cpu(conn);
    let () = redis::cmd("FLUSHALL").query(conn).unwrap();
    Round {
        wall,
        calls,
        orders: calls * batch,
        buy_user: u1 - u0,
        buy_sys: s1 - s0,
        pay: ((u2 - u1) + (s2 - s1)) / (calls * batch) as f64,
        sold_out: ((u3 - u2) + (s3 - s2)) / (calls * batch) as f64,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let aof = args.iter().any(|a| a == "--aof");
    let orders: usize = arg(&args, "--orders").unwrap_or(100_000);
    let rounds: usize = arg(&args, "--rounds").unwrap_or(3);
    let external: Option<String> = arg(&args, "--url");
    let batches: Vec<usize> = match arg::<String>(&args, "--batches") {
        Some(list) => list
            .split(',')
            .map(|b| match b.parse() {
                Ok(n) if n > 0 => n,
                _ => panic!("--batches takes sizes like 256,1024, got {list:?}"),
            })
            .collect(),
        None => vec![1, 16, 64, 256, 1024],
    };
    let dir = std::env::temp_dir().join(format!("flashd-redis-bench-{}", std::process::id()));
    let mut server: Option<Child> = None;
    let url = match &external {
        Some(url) => url.clone(),
        None => {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            std::fs::create_dir_all(&dir).unwrap();
            server = Some(
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", ""])
                    .arg("--dir")
                    .arg(&dir)
                    .args(["--appendonly", if aof { "yes" } else { "no" }])
                    .args(["--appendfsync", "always"])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("start redis-server"),
            );
            format!("redis://127.0.0.1:{port}/")
        }
    };
    let mut conn = loop {
        match redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_with_timeout(Duration::from_millis(100))
        {
            Ok(c) => break c,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mut cfg = ClientConfig::new(url.clone(), 1);
    cfg.timeout = Duration::from_secs(10);
    let client = RedisClient::start(cfg).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let setting = match (&external, aof) {
        (Some(_), _) => "as configured",
        (None, true) => "appendonly yes, appendfsync always",
        (None, false) => "no persistence",
    };
    println!(
        "redis {version} ({setting}), {orders} orders per batch size, one client, best of {rounds} rounds"
    );
    println!(
        "| batch | buy µs/call | buy orders/s, 1 client | buy Redis CPU µs/order (sys) | buy ceiling orders/s/core | pay Redis CPU µs/order | buy+pay ceiling/core | sold-out refusal µs/request |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut sale = 0;
    for &batch in &batches {
        let best = (0..rounds.max(1))
            .map(|_| {
                sale += 1;
                round(&client, &mut conn, sale, batch, orders, now)
            })
            .min_by(|a, b| a.buy_cpu().total_cmp(&b.buy_cpu()))
            .expect("one round at least");
        let n = best.orders as f64;
        println!(
            "| {batch} | {:.1} | {:.0} | {:.2} ({:.2}) | {:.0} | {:.2} | {:.0} | {:.2} |",
            best.wall / best.calls as f64 * 1e6,
            n / best.wall,
            best.buy_cpu() * 1e6,
            best.buy_sys / n * 1e6,
            1.0 / best.buy_cpu(),
            best.pay * 1e6,
            1.0 / (best.buy_cpu() + best.pay),
            best.sold_out * 1e6,
        );
    }
    drop(client);
    if let Some(mut server) = server {
        let _ = server.kill();
        let _ = server.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
