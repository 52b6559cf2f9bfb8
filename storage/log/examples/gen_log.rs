//! Writes a realistic order log of N events into a directory, for measuring
//! recovery (`bench/recovery`): one sale, then every user places an order,
//! every fourth pays and every tenth cancels, produced by the real engine so
//! the log is one a live flashd could have written.
//!
//!   cargo run --release -p flashd-storage --example gen_log -- \
//!       --dir DIR --events 10000000 [--snapshot-tail 500000]
//!
//! With `--snapshot-tail T` a snapshot is written T events before the end
//! (the state a running flashd leaves between two snapshots; at the first
//! batch boundary past that point), so recovery loads it and replays only
//! the tail. Orders expire a day after
//! the run, so none is overdue when flashd starts on the log.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use flashd_engine::{ActivitySpec, Engine, EngineConfig, Event, PlaceOrder, Placed};
use flashd_log::{write_engine_snapshot, FileLog, FileLogConfig, OrderLog};

const DAY_MS: u64 = 24 * 3600 * 1000;

fn main() {
    let mut dir: Option<PathBuf> = None;
    let mut events: u64 = 10_000_000;
    let mut tail: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--dir" => dir = Some(PathBuf::from(val())),
            "--events" => {
                events = val()
                    .parse()
                    .unwrap_or_else(|_| usage("--events: a number"))
            }
            "--snapshot-tail" => {
                tail = Some(
                    val()
                        .parse()
                        .unwrap_or_else(|_| usage("--snapshot-tail: a number")),
                )
            }
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let dir = dir.unwrap_or_else(|| usage("--dir is required"));
    if dir.exists() && std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_some()) {
        usage(&format!("{} must be empty or absent", dir.display()));
    }
    let snapshot_at = tail.map(|t| events.saturating_sub(t));

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let engine = Engine::new(EngineConfig {
        order_ttl_ms: DAY_MS,
        ..EngineConfig::default()
    });
    let mut log = FileLog::open(
        FileLogConfig {
            dir: dir.clone(),
            segment_bytes: 64 << 20, // flashd's default
            fsync: false,
        },
        None,
        0,
    )
    .expect("open log");

    let t0 = Instant::now();
    let mut batch: Vec<Event> = Vec::with_capacity(8192);
    let mut written: u64 = 0;
    let mut snapshot_written = false;
    engine
        .create_activity(
            &ActivitySpec {
                sku_id: "GEN".into(),
                name: "generated".into(),
                price_cents: 999,
                stock: events,
                start_at: now - 60_000,
                end_at: now + DAY_MS,
                per_user_limit: 1,
            },
            now,
            &mut batch,
        )
        .expect("create sale");
    let mut user: u64 = 0;
    let mut request_id = String::new();
    while written + (batch.len() as u64) < events {
        user += 1;
        request_id.clear();
        write!(request_id, "r-{user}").expect("write to a String");
        let placed = engine
            .place_order(
                &PlaceOrder {
                    activity_id: 1,
                    user_id: user,
                    quantity: 1,
                    request_id: &request_id,
                },
                now,
                &mut batch,
            )
            .expect("place order");
        let Placed::Created(order) = placed else {
            unreachable!("every user buys once")
        };
        if user.is_multiple_of(4) {
            engine.pay(user, order.id, now, &mut batch).expect("pay");
        } else if user % 10 == 1 {
            engine
                .cancel(user, order.id, now, &mut batch)
                .expect("cancel");
        }
        if batch.len() >= 4096 {
            let n = batch.len();
            flush(&mut log, &mut batch, n, &mut written);
            // At the first batch boundary past the point: the snapshot is
            // of exactly what the log holds so far.
            if snapshot_at.is_some_and(|at| !snapshot_written && written >= at) {
                snapshot(&engine, &dir, written);
                snapshot_written = true;
            }
        }
    }
    let n = batch.len();
    flush(&mut log, &mut batch, n, &mut written);
    if snapshot_at.is_some() && !snapshot_written {
        snapshot(&engine, &dir, written);
    }
    eprintln!(
        "wrote {written} events for {user} users into {} in {:.1} s",
        dir.display(),
        t0.elapsed().as_secs_f64()
    );
}

fn flush(log: &mut FileLog, batch: &mut Vec<Event>, n: usize, written: &mut u64) {
    log.append(&batch[..n]).expect("append");
    *written = log.commit().expect("commit");
    batch.drain(..n);
}

/// A snapshot of the engine, which holds exactly the `lsn` events logged;
/// streamed, as the follower writes one (no copy of the orders).
fn snapshot(engine: &Engine, dir: &std::path::Path, lsn: u64) {
    let orders: u64 = engine.export_meta().1.iter().map(|&n| u64::from(n)).sum();
    let t0 = Instant::now();
    let path = write_engine_snapshot(dir, lsn, engine, false).expect("write snapshot");
    eprintln!(
        "snapshot of {orders} orders at event {lsn} in {:.2} s: {}",
        t0.elapsed().as_secs_f64(),
        path.display()
    );
}

fn usage(why: &str) -> ! {
    eprintln!("gen_log: {why}\nusage: gen_log --dir DIR [--events N] [--snapshot-tail T]");
    std::process::exit(2)
}
