//! Retrying a write while its failure is transient: with backoff and
//! fresh pools, as long as it lasts, loudly (`flashd_sink_mysql_up`, the
//! retry counter, the last error).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::classify::{Class, WriteError};
use crate::poison::Parked;
use crate::stats::SinkStats;
use crate::writer::{Rec, Writer};

/// An unclassified error this many times in a row counts as permanent:
/// with the backoff that is about ten seconds, far past a deadlock or a
/// failover, and short enough that nothing stalls unnoticed.
const UNCLASSIFIED_ATTEMPTS_MAX: u32 = 8;

/// The longest one batch write may take before it is retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sink asks of MySQL, retried as a unit.
pub(crate) enum Job<'a> {
    Write(&'a [Rec]),
    Park(&'a Parked<'a>),
}

/// How a job ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Done,
    /// The sink is stopping; the job may not be done.
    Stopped,
    /// It fails in a way that will recur.
    Failed(WriteError),
}

/// Run `job` until it succeeds, the sink is stopped, or it fails in a way
/// that will recur. Transient failures are retried with backoff and fresh
/// pools for as long as they last; an error we cannot classify is retried
/// [`UNCLASSIFIED_ATTEMPTS_MAX`] times, then taken as permanent.
/// `waiting` runs between attempts (the lag gauge keeps moving).
pub(crate) fn retry_transient(
    rt: &tokio::runtime::Runtime,
    w: &mut Writer,
    stop: &AtomicBool,
    stats: &SinkStats,
    job: &Job<'_>,
    waiting: &mut dyn FnMut(),
) -> Outcome {
    let mut backoff = Duration::from_millis(50);
    let mut unclassified = 0u32;
    loop {
        // A server that died mid-query can leave a connection waiting
        // forever: bound each attempt.
        let attempt = rt.block_on(async {
            let fut = async {
                match job {
                    Job::Write(batch) => w.write(batch).await,
                    Job::Park(p) => w.park(p).await,
                }
            };
            tokio::time::timeout(WRITE_TIMEOUT, fut)
                .await
                .unwrap_or_else(|_| {
                    Err(WriteError {
                        class: Class::Transient,
                        msg: format!("write took over {WRITE_TIMEOUT:?}"),
                    })
                })
        });
        let e = match attempt {
            Ok(()) => return Outcome::Done,
            Err(e) => e,
        };
        match e.class {
            Class::Permanent => return Outcome::Failed(e),
            Class::Unclassified => {
                unclassified += 1;
                if unclassified >= UNCLASSIFIED_ATTEMPTS_MAX {
                    tracing::error!(error = %e.msg, attempts = unclassified, "sink: an unclassified MySQL error keeps recurring; taking it as permanent");
                    return Outcome::Failed(e);
                }
            }
            Class::Transient => {}
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        if stats.mysql_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e.msg, "sink: MySQL write failed; retrying with backoff (offsets not committed)");
        }
        if let Ok(mut l) = stats.last_error.lock() {
            *l = e.msg.clone();
        }
        if stop.load(Ordering::Acquire) {
            return Outcome::Stopped;
        }
        w.reset(rt);
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
        waiting();
    }
}
