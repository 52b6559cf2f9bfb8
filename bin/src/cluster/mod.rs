//! Cluster mode (`[cluster] enabled = true`, `docs/cluster.md`): many
//! flashd nodes serve one sale; Redis decides every purchase, pay, cancel
//! and timeout; each node logs what its own Redis calls decided to its own
//! topic and answers after both.
//!
//! Owns: the node's [`RedisClient`] (one thread, `TCP_NODELAY`), the
//! start-up checks (Redis durability, the lease on the node id), Redis's
//! health as `/readyz` reports it, a mirror of each sale's counters for
//! `GET` of a sale, and the cluster's counters in `/metrics`.
//!
//! Never: decides stock, limits or idempotency itself (the engine of a
//! node in cluster mode only records what Redis decided and what its log
//! holds); calls Redis from a reactor (only workers and the sweeper do,
//! and `workers.count >= 1` is required); answers an order before both
//! Redis decided it and the log holds it; guesses when Redis is
//! unreachable (fail closed: `503`, retry with the same `request_id`).
//!
//! Where things are: [`batch`] (a worker's batch: buys grouped per sale
//! into one script call, pays, cancels, reads, sale creation), [`sales`]
//! (sales created here or met here: Redis ids, adoption), [`sweep`] (the
//! sweeper's pass: timeouts, the counters' mirror, new sales, the lease),
//! [`start`] (the checks before serving).

pub mod batch;
pub mod sales;
pub mod start;
pub mod sweep;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use flashd_engine::{ActivityId, Counters, Millis};
use flashd_redis::{Claim, RedisClient, RedisError};

pub use start::{start, ClusterError};

/// One node's view of the cluster.
pub struct Cluster {
    pub client: RedisClient,
    pub node: u16,
    /// Who holds this node's id lease: unique per process.
    pub holder: String,
    pub order_ttl_ms: u64,
    /// 0: every purchase asks Redis. Otherwise, after Redis answered
    /// "sold out" for a sale, purchases of it are answered 409 here for
    /// this long (`cluster.sold_out_recheck_ms`).
    pub sold_out_recheck_ms: u64,
    /// Per sale id: until when "sold out" is answered locally.
    sold_out_until: Box<[AtomicU64]>,
    /// Per sale id: Redis's counters as the sweeper last read them.
    mirror: Box<[SaleMirror]>,
    pub health: Health,
    pub stats: ClusterStats,
    /// Moves the workers logged (pays, cancels, timeouts found by a pay),
    /// for the sweeper to look at once their write had time to fail.
    moved: Mutex<Vec<(Instant, ActivityId, Claim)>>,
}

/// A sale's counters in Redis, as last read (`GET` of a sale answers
/// them: a node's own engine holds only its share of the sale).
#[derive(Default)]
struct SaleMirror {
    /// 0 until first read.
    read_at: AtomicU64,
    stock: AtomicU64,
    sold: AtomicU64,
    reserved: AtomicU64,
}

/// Whether Redis answered the last call, and if not why: `/readyz`.
#[derive(Default)]
pub struct Health {
    down: AtomicBool,
    lease_lost: AtomicBool,
    reason: Mutex<String>,
}

impl Health {
    /// A call answered: Redis is reachable.
    pub fn up(&self) {
        if self.down.load(Ordering::Relaxed) {
            self.down.store(false, Ordering::Release);
            tracing::info!("redis answers again: orders flow");
        }
    }

    /// A call failed for want of Redis.
    pub fn failed(&self, e: &RedisError) {
        if e.is_unavailable() {
            if !self.down.swap(true, Ordering::AcqRel) {
                tracing::error!(error = %e, "redis unreachable: buys, pays and cancels answer 503 until it is back");
            }
            if let Ok(mut r) = self.reason.lock() {
                *r = e.to_string();
            }
        }
    }

    /// Another process took this node's id lease (this one was paused
    /// past it, or two nodes share an id): refuse everything from now on.
    pub fn lease_lost(&self, node: u16) {
        if !self.lease_lost.swap(true, Ordering::AcqRel) {
            tracing::error!(
                node,
                "another process holds this node's id lease: refusing every change until restarted"
            );
        }
    }

    pub fn is_lease_lost(&self) -> bool {
        self.lease_lost.load(Ordering::Acquire)
    }

    /// Why Redis is unusable now, if it is.
    pub fn down_reason(&self) -> Option<String> {
        if self.lease_lost.load(Ordering::Acquire) {
            return Some("another process holds this node's id (engine.node_id) lease".into());
        }
        if !self.down.load(Ordering::Acquire) {
            return None;
        }
        Some(self.reason.lock().map(|r| r.clone()).unwrap_or_default())
    }
}

/// What `/metrics` shows of cluster mode.
#[derive(Default)]
pub struct ClusterStats {
    /// Buy script calls (one per sale per worker batch).
    pub buy_calls: AtomicU64,
    /// Purchases those calls decided.
    pub buys_decided: AtomicU64,
    pub buys_granted: AtomicU64,
    /// Purchases answered "sold out" here without asking Redis.
    pub sold_out_local: AtomicU64,
    pub settle_calls: AtomicU64,
    /// Unpaid orders this node timed out in Redis (and logged).
    pub timed_out: AtomicU64,
    /// Creations of orders another node decided, logged here (a retry, a
    /// pay, a cancel or a timeout that completed them).
    pub adopted_orders: AtomicU64,
    /// Sales this node learned from Redis.
    pub adopted_sales: AtomicU64,
    /// Redis calls that failed (any reason).
    pub errors: AtomicU64,
}

impl Cluster {
    pub(crate) fn new(
        client: RedisClient,
        node: u16,
        holder: String,
        order_ttl_ms: u64,
        sold_out_recheck_ms: u64,
        max_activities: u32,
    ) -> Cluster {
        // Index = sale id (ids start at 1).
        let n = max_activities as usize + 1;
        Cluster {
            client,
            node,
            holder,
            order_ttl_ms,
            sold_out_recheck_ms,
            sold_out_until: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mirror: (0..n).map(|_| SaleMirror::default()).collect(),
            health: Health::default(),
            stats: ClusterStats::default(),
            moved: Mutex::new(Vec::new()),
        }
    }

    /// A worker logged claim `c`'s move now.
    pub(crate) fn moved_here(&self, sale: ActivityId, c: Claim) {
        if let Ok(mut m) = self.moved.lock() {
            m.push((Instant::now(), sale, c));
        }
    }

    /// The moves the workers logged since the last call (oldest first).
    pub(crate) fn take_moved(&self) -> Vec<(Instant, ActivityId, Claim)> {
        self.moved
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }

    /// Count a Redis result towards health and errors.
    pub(crate) fn saw<T>(&self, r: &Result<T, RedisError>) {
        match r {
            Ok(_) => self.health.up(),
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.health.failed(e);
            }
        }
    }

    /// Whether purchases of `sale` are answered "sold out" here at `now`.
    pub(crate) fn sold_out_here(&self, sale: ActivityId, now: Millis) -> bool {
        self.sold_out_recheck_ms > 0
            && self
                .sold_out_until
                .get(sale as usize)
                .is_some_and(|t| now < t.load(Ordering::Relaxed))
    }

    /// Redis said `sale` is sold out at `now`.
    pub(crate) fn note_sold_out(&self, sale: ActivityId, now: Millis) {
        if self.sold_out_recheck_ms > 0 {
            if let Some(t) = self.sold_out_until.get(sale as usize) {
                t.store(now + self.sold_out_recheck_ms, Ordering::Relaxed);
            }
        }
    }

    /// Store Redis's counters of `sale` read at `now`.
    pub(crate) fn mirror(
        &self,
        sale: ActivityId,
        now: Millis,
        stock: u64,
        sold: u64,
        reserved: u64,
    ) {
        if let Some(m) = self.mirror.get(sale as usize) {
            m.stock.store(stock, Ordering::Relaxed);
            m.sold.store(sold, Ordering::Relaxed);
            m.reserved.store(reserved, Ordering::Relaxed);
            m.read_at.store(now.max(1), Ordering::Release);
        }
    }

    /// Read Redis's counters of `sales` into the mirror; `false` when
    /// Redis did not answer (the mirror keeps what it had).
    pub(crate) fn mirror_counters(&self, sales: &[ActivityId], now: Millis) -> bool {
        let r = self.client.counters(sales.to_vec()).wait();
        self.saw(&r);
        let Ok(counters) = r else {
            return false;
        };
        for (sale, c) in sales.iter().zip(counters) {
            if let Some([stock, sold, reserved]) = c {
                self.mirror(*sale, now, stock, sold, reserved);
            }
        }
        true
    }

    /// Redis's counters of `sale` as last read, `None` before the first
    /// read. Stale by at most `engine.expiry_sweep_ms` while Redis answers.
    pub fn counters(&self, sale: ActivityId) -> Option<Counters> {
        let m = self.mirror.get(sale as usize)?;
        if m.read_at.load(Ordering::Acquire) == 0 {
            return None;
        }
        let (stock, sold, reserved) = (
            m.stock.load(Ordering::Relaxed) as i64,
            m.sold.load(Ordering::Relaxed) as i64,
            m.reserved.load(Ordering::Relaxed) as i64,
        );
        Some(Counters {
            remaining: (stock - sold - reserved).max(0),
            sold,
            reserved,
        })
    }

    /// Reserved units of `sale` as last read (the sweeper skips sales
    /// with none when timing out).
    pub(crate) fn reserved(&self, sale: ActivityId) -> Option<u64> {
        let m = self.mirror.get(sale as usize)?;
        (m.read_at.load(Ordering::Acquire) != 0).then(|| m.reserved.load(Ordering::Relaxed))
    }
}
