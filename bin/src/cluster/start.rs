//! Before a node serves in cluster mode: Redis reachable, durable enough
//! for the promise flashd makes (or told to start anyway), and this node's
//! id not in use by another live process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flashd_redis::{ClientConfig, DurabilityReport, RedisClient, RedisError};

use super::Cluster;
use crate::clock::Clock;
use crate::config::Config;

/// How long start waits for Redis to answer before giving up: long enough
/// to ride out a Redis restart during a rolling deploy, short enough that
/// a wrong URL fails the start visibly.
pub const START_WAIT: Duration = Duration::from_secs(30);

/// A node's lease on its id lapses this long after its last renewal: a
/// node killed with -9 blocks a restart under its id for at most this long
/// (start waits it out), and a paused node that stays paused longer may
/// find its id taken.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// The sweeper renews the lease this often (a fifth of its life: four
/// renewals can fail before it lapses).
pub const LEASE_RENEW: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.redis_url: {0}")]
    Client(#[source] RedisError),
    #[error("cluster.redis_url: redis did not answer within {waited:?}: {source}")]
    Unreachable {
        waited: Duration,
        #[source]
        source: RedisError,
    },
    #[error("cluster.require_durable_redis: redis has {report}; flashd refuses to start (or set cluster.require_durable_redis = false to accept that risk)")]
    NotDurable { report: DurabilityReport },
    #[error("engine.node_id: node id {node} is held by another running flashd ({holder}); every node needs its own id")]
    NodeTaken { node: u16, holder: String },
}

/// Connect, check durability, take the lease on `engine.node_id`.
pub fn start(cfg: &Config, clock: &dyn Clock) -> Result<Arc<Cluster>, ClusterError> {
    let c = &cfg.cluster;
    let node = cfg.engine.node_id;
    let mut ccfg = ClientConfig::new(c.redis_url.clone(), node);
    ccfg.timeout = Duration::from_millis(c.redis_timeout_ms);
    let client = RedisClient::start(ccfg).map_err(ClusterError::Client)?;
    let t0 = Instant::now();
    let report = loop {
        match client.durability().wait() {
            Ok(r) => break r,
            Err(e) if e.is_unavailable() && t0.elapsed() < START_WAIT => {
                tracing::warn!(error = %e, "waiting for redis");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(source) => {
                return Err(ClusterError::Unreachable {
                    waited: t0.elapsed(),
                    source,
                })
            }
        }
    };
    if !report.is_durable() {
        if c.require_durable_redis {
            return Err(ClusterError::NotDurable { report });
        }
        tracing::warn!(redis = %report, "cluster.require_durable_redis = false: starting on a Redis that can lose acknowledged decisions");
    } else {
        tracing::info!(redis = %report, "redis durability checked");
    }
    let holder = format!(
        "pid {} started {} listening {}",
        std::process::id(),
        clock.now_ms(),
        cfg.server.listen
    );
    // A previous process under this id killed with -9 holds the lease
    // until it lapses: wait that out, then refuse. Redis may restart while
    // this waits (the cluster chaos soak, seed 11, killed it then, and the
    // node exited): it is waited for as above, up to `START_WAIT` in all.
    // Asking again is safe: the lease script renews a lease this holder
    // already has.
    let t0 = Instant::now();
    loop {
        match client.lease_node(node, holder.clone(), LEASE_TTL).wait() {
            Ok(true) => break,
            Ok(false) if t0.elapsed() < LEASE_TTL + LEASE_RENEW => {
                if t0.elapsed() < Duration::from_millis(600) {
                    tracing::warn!(node, "node id lease held (a previous process that died?): waiting for it to lapse");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Ok(false) => {
                return Err(ClusterError::NodeTaken {
                    node,
                    holder: "another process (its lease is being renewed)".into(),
                })
            }
            Err(e) if e.is_unavailable() && t0.elapsed() < START_WAIT => {
                tracing::warn!(error = %e, node, "waiting for redis to take the node id lease");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(source) => {
                return Err(ClusterError::Unreachable {
                    waited: t0.elapsed(),
                    source,
                })
            }
        }
    }
    tracing::info!(node, "node id lease taken");
    Ok(Arc::new(Cluster::new(
        client,
        node,
        holder,
        cfg.engine.order_ttl_ms,
        c.sold_out_recheck_ms,
        cfg.engine.max_activities,
    )))
}

/// This node's id lease, given up when dropped: a clean stop (or a start
/// that fails after taking it) lets the next process take the id at once
/// instead of waiting `LEASE_TTL` for it to lapse. A process killed with -9
/// never drops it: the lease lapses.
pub struct Lease(pub Arc<Cluster>);

impl Drop for Lease {
    fn drop(&mut self) {
        let cl = &self.0;
        match cl.client.release_node(cl.node, cl.holder.clone()).wait() {
            Ok(()) => tracing::info!(node = cl.node, "node id lease given up"),
            Err(e) => {
                tracing::warn!(node = cl.node, error = %e, "node id lease not given up: it lapses in 10 s")
            }
        }
    }
}
