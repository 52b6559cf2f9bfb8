//! `flashd reconcile`: does Redis hold what the nodes' logs say it must?
//! (cluster mode, `docs/cluster.md` "Reconcile and repair").
//!
//! Reads every node's topic ([`logs`]), merges them per sale, folds each
//! sale's history into the state Redis must hold, reads Redis's state of
//! each sale and compares ([`compare`]); with `--repair`, rebuilds a
//! drifting sale in Redis from the logs and checks again ([`repair`]).
//! With MySQL shards configured, the sink's order tables are compared
//! with the logs too ([`sink`]). [`report`] prints the outcome for people
//! or machines.
//!
//! A live sale is compared as it is: Redis is read before the logs and
//! again after them. Every decision the logs hold was made in Redis
//! before it was logged, so the second read holds all of them unless
//! Redis lost one; a decision made while the logs were read shows up in
//! one comparison only. A sale drifts when both comparisons say so (the
//! later one is reported); one that differs in one only is reported with
//! a note, not as drift.
//!
//! Never: writes to Redis without `--repair`, repairs a sale whose logs
//! contradict each other, or repairs over claims still in flight without
//! `--force` (they are decisions a buyer's retry would find).

pub mod compare;
pub mod logs;
pub mod repair;
pub mod report;
pub mod sink;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flashd_engine::{ActivityId, Millis};
use flashd_log::LogError;
use flashd_redis::{ClientConfig, RedisClient, RedisError, SaleState};

use crate::config::Config;
use compare::{SaleCompare, Verdict};
use logs::SaleLog;
pub use report::{Report, SaleReport};

/// A `C` claim past its deadline is timed out by the next sweep of any
/// node (every `engine.expiry_sweep_ms`), which logs it; the nodes'
/// clocks may differ from this one's by this much more. Past both, an
/// unlogged claim is drift.
pub const CLOCK_SKEW_ALLOWANCE_MS: u64 = 10_000;

/// Sale ids read from Redis at most when looking for sales no log names
/// (ids `1..=` the shared sequence): a sequence past it is a damaged
/// counter, not a catalog (a node holds `engine.max_activities` sales).
pub const SALE_IDS_SCANNED_MAX: u32 = 1 << 20;

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// One sale only.
    pub sale: Option<ActivityId>,
    /// Rebuild drifting sales in Redis from the logs.
    pub repair: bool,
    /// Repair even over claims in flight (they are dropped; their buyers'
    /// retries make new orders).
    pub force: bool,
    /// How long past its deadline an unlogged `C` claim is in flight,
    /// not drift (default: `engine.expiry_sweep_ms` +
    /// [`CLOCK_SKEW_ALLOWANCE_MS`]).
    pub grace_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reconcile compares Redis with the nodes' logs: it is for cluster mode (cluster.enabled = true); a single node's log is its whole state, checked at every start by recovery")]
    NotCluster,
    #[error("cluster.redis_url: {0}")]
    RedisUrl(#[source] RedisError),
    #[error("{0}")]
    RedisUnreachable(#[source] RedisError),
    #[error("kafka brokers {brokers}: {source}")]
    KafkaUnreachable { brokers: String, source: LogError },
    #[error("reading the logs: {0}")]
    LogUnreadable(#[source] LogError),
    #[error("{0}")]
    Redis(#[source] RedisError),
    #[error("mysql: {0}")]
    MysqlUnreachable(String),
}

impl ReconcileError {
    /// 2: a configuration to fix; 3: a part cannot be reached; 1: the
    /// rest (a log or an answer that cannot be read).
    pub fn exit_code(&self) -> u8 {
        match self {
            ReconcileError::NotCluster | ReconcileError::RedisUrl(_) => 2,
            ReconcileError::RedisUnreachable(_)
            | ReconcileError::KafkaUnreachable { .. }
            | ReconcileError::MysqlUnreachable(_) => 3,
            ReconcileError::LogUnreadable(_) | ReconcileError::Redis(_) => 1,
        }
    }
}

fn redis_err(e: RedisError) -> ReconcileError {
    if e.is_unavailable() || matches!(e, RedisError::Closed { .. } | RedisError::Busy { .. }) {
        ReconcileError::RedisUnreachable(e)
    } else {
        ReconcileError::Redis(e)
    }
}

/// Redis's state of `sale`: `Err` of a reason when what it holds cannot
/// be read (damaged records are drift, not a failure of the command).
type RedisRead = Result<Option<SaleState>, String>;

fn read_redis(client: &RedisClient, sale: ActivityId) -> Result<RedisRead, ReconcileError> {
    match client.read_sale(sale).wait() {
        Ok(s) => Ok(Ok(s)),
        Err(e @ RedisError::Protocol { .. }) => Ok(Err(e.to_string())),
        Err(e) => Err(redis_err(e)),
    }
}

/// Run the reconcile `opts` asks for, at `now`.
pub fn run(cfg: &Config, opts: &Options, now: Millis) -> Result<Report, ReconcileError> {
    if !cfg.cluster.enabled {
        return Err(ReconcileError::NotCluster);
    }
    let mut rc = ClientConfig::new(cfg.cluster.redis_url.clone(), cfg.engine.node_id);
    rc.timeout = Duration::from_millis(cfg.cluster.redis_timeout_ms);
    let client = RedisClient::start(rc).map_err(ReconcileError::RedisUrl)?;
    let grace_ms = opts
        .grace_ms
        .unwrap_or(cfg.engine.expiry_sweep_ms + CLOCK_SKEW_ALLOWANCE_MS);

    // Redis first: it is the quick one to find unreachable, and its first
    // read must come before the logs' (see the module doc).
    let last = client.last_sale_id().wait().map_err(redis_err)?;
    let mut sales: BTreeSet<ActivityId> = match opts.sale {
        Some(s) => [s].into(),
        None => (1..=last.min(SALE_IDS_SCANNED_MAX)).collect(),
    };
    let mut first: BTreeMap<ActivityId, RedisRead> = BTreeMap::new();
    for &s in &sales {
        first.insert(s, read_redis(&client, s)?);
    }

    // The sink's rows, read before the logs: the sink writes what the
    // topics hold, so every row it has is in the logs read next (an order
    // it lacks, or holds at an earlier status, is lag).
    let rows = if cfg.mysql.shards.is_empty() {
        None
    } else {
        let urls: Vec<String> = cfg.mysql.shards.iter().map(|s| s.url.clone()).collect();
        Some(sink::read(&urls, opts.sale).map_err(ReconcileError::MysqlUnreachable)?)
    };

    let base = &cfg.log.kafka.topic;
    let kcfg = cfg.kafka_config();
    let (topics, node_logs) =
        logs::read_all(&kcfg, base, opts.sale).map_err(|source| match source {
            LogError::Backend { .. } => ReconcileError::KafkaUnreachable {
                brokers: kcfg.brokers.clone(),
                source,
            },
            other => ReconcileError::LogUnreadable(other),
        })?;
    let merged: BTreeMap<ActivityId, SaleLog> = logs::merge(&node_logs);
    drop(node_logs);
    sales.extend(merged.keys().copied());

    let mut out = Vec::new();
    for &sale in &sales {
        let log = merged.get(&sale);
        let later = read_redis(&client, sale)?;
        let earlier = match first.remove(&sale) {
            Some(r) => r,
            // A sale only the logs named: no earlier read to hold against.
            None => later.clone(),
        };
        if opts.sale.is_none()
            && log.is_none()
            && matches!((&earlier, &later), (Ok(None), Ok(None)))
        {
            continue;
        }
        let c1 = compare_read(sale, log, &earlier, now, grace_ms);
        let c2 = compare_read(sale, log, &later, now, grace_ms);
        let mut c = match (c1.verdict == Verdict::Drift, c2.verdict == Verdict::Drift) {
            (true, true) | (false, false) => c2,
            (true, false) => {
                let mut c = c2;
                c.notes.push(format!(
                    "Redis read before the logs differed ({} differences): decisions logged while the logs were read",
                    c1.differences.len() + c1.unlisted
                ));
                c
            }
            (false, true) => {
                let mut c = c1;
                c.notes.push(format!(
                    "Redis read after the logs differs ({} differences): decisions made while the logs were read; run again on a quiet sale to be sure",
                    c2.differences.len() + c2.unlisted
                ));
                c
            }
        };
        if c.verdict != Verdict::Drift && later != earlier {
            c.notes
                .push("Redis changed while the logs were read (a live sale)".into());
        }
        let redis_now = later.ok().flatten();
        let repair = if opts.repair && c.verdict == Verdict::Drift {
            Some(repair::repair(
                &client,
                sale,
                log,
                &c,
                redis_now.as_ref(),
                opts.force,
                now,
                grace_ms,
            )?)
        } else {
            None
        };
        let sink = match (&rows, log) {
            (Some((rows, _)), Some(l)) => flashd_redis::fold_events(sale, &l.events)
                .ok()
                .map(|st| sink::compare(sale, &st, rows)),
            _ => None,
        };
        out.push(SaleReport {
            compare: c,
            repair,
            sink,
        });
    }
    Ok(Report {
        brokers: kcfg.brokers.clone(),
        base_topic: base.clone(),
        redis: cfg.cluster.redis_url.clone(),
        grace_ms,
        topics,
        sales: out,
        sink_problems: rows.map(|(_, p)| p).unwrap_or_default(),
    })
}

/// [`compare::compare`] of one Redis read.
fn compare_read(
    sale: ActivityId,
    log: Option<&SaleLog>,
    redis: &RedisRead,
    now: Millis,
    grace_ms: u64,
) -> SaleCompare {
    match redis {
        Ok(r) => compare::compare(sale, log, r.as_ref(), now, grace_ms),
        Err(why) => compare::unreadable(sale, log, why),
    }
}
