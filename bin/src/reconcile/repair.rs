//! `--repair`: rebuild a drifting sale in Redis from the nodes' logs
//! (`RedisClient::repair`: the sale's keys replaced in one `MULTI`/`EXEC`)
//! and compare again.
//!
//! The logs are the record of what every buyer was told, so they win.
//! Refused when they cannot be the truth (they contradict each other, or
//! hold no creation of the sale) and, without `--force`, while Redis holds
//! claims in flight: decisions a node made and has not logged yet, which
//! a repair would drop (the buyer's retry would then make a new order,
//! and units would be sold to someone else meanwhile). Run it on a quiet
//! sale: a decision Redis makes between the comparison and the repair is
//! overwritten (the re-check after it shows one).

use flashd_engine::{ActivityId, Millis, OrderId};
use flashd_redis::{RedisClient, SaleState};
use serde::Serialize;

use super::compare::{self, Counters, SaleCompare, Verdict};
use super::logs::SaleLog;
use super::{read_redis, redis_err, ReconcileError};

/// What a repair of one sale did.
#[derive(Debug, Clone, Serialize)]
pub struct RepairOutcome {
    /// Whether Redis was rewritten.
    pub done: bool,
    /// Why not, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Redis's counters before and after.
    pub before: Option<Counters>,
    pub after: Option<Counters>,
    /// Claims in flight the repair dropped (`--force`).
    pub dropped_in_flight: Vec<OrderId>,
    /// The comparison after the repair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recheck: Option<SaleCompare>,
}

impl RepairOutcome {
    fn refused(why: String, before: Option<Counters>) -> RepairOutcome {
        RepairOutcome {
            done: false,
            refused: Some(why),
            before,
            after: None,
            dropped_in_flight: Vec::new(),
            recheck: None,
        }
    }

    /// The sale's verdict once the repair is done (or refused).
    pub fn verdict(&self) -> Verdict {
        self.recheck.as_ref().map_or(Verdict::Drift, |c| c.verdict)
    }
}

/// Repair sale `sale`, which `found` says drifts, from `log`; `redis` is
/// its state as last read.
#[allow(clippy::too_many_arguments)]
pub fn repair(
    client: &RedisClient,
    sale: ActivityId,
    log: Option<&SaleLog>,
    found: &SaleCompare,
    redis: Option<&SaleState>,
    force: bool,
    now: Millis,
    grace_ms: u64,
) -> Result<RepairOutcome, ReconcileError> {
    let before = redis.map(Counters::of);
    let Some(log) = log else {
        return Ok(RepairOutcome::refused(
            format!(
                "no log holds sale {sale}: there is nothing to rebuild it from (its keys are {:?})",
                flashd_redis::keys::all(sale)
            ),
            before,
        ));
    };
    if log.ambiguous || found.logs.is_none() {
        return Ok(RepairOutcome::refused(
            "the logs contradict each other or do not fold (see the differences of kind \"logs\"): a repair would have to guess".into(),
            before,
        ));
    }
    if !found.in_flight.is_empty() && !force {
        let last = found.in_flight.iter().map(|c| c.deadline_ms).max();
        return Ok(RepairOutcome::refused(
            format!(
                "{} claims in flight (decided, not yet logged): wait until they are logged or past their deadline + {grace_ms} ms (at {} ms), or repair with --force, which drops them",
                found.in_flight.len(),
                last.unwrap_or(0).saturating_add(grace_ms)
            ),
            before,
        ));
    }
    client
        .repair(sale, log.events.clone())
        .wait()
        .map_err(redis_err)?;
    let reread = read_redis(client, sale)?;
    let recheck = match &reread {
        Ok(r) => compare::compare(sale, Some(log), r.as_ref(), now, grace_ms),
        Err(why) => compare::unreadable(sale, Some(log), why),
    };
    Ok(RepairOutcome {
        done: true,
        refused: None,
        before,
        after: reread.ok().flatten().as_ref().map(Counters::of),
        dropped_in_flight: found.in_flight.iter().map(|c| c.order).collect(),
        recheck: Some(recheck),
    })
}
