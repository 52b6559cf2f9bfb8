//! The engine worker pool: `workers.count` threads, each taking batches of
//! commands from its ring (filled by the sub-reactors) and running them
//! through [`Core::run`]. With `workers.count = 0` there is no pool and
//! each sub-reactor runs commands inline.

use std::sync::Arc;

use flashd_reactor::{Completer, WorkerPool};

use crate::clock::Clock;
use crate::config::WorkersSection;
use crate::exec::{Core, Job, Outcome, Step};

pub type Pool = WorkerPool<Job>;

/// One worker's state: what it runs commands against and where answers go.
pub struct Worker {
    core: Arc<Core>,
    completer: Completer<Outcome>,
    clock: Arc<dyn Clock>,
    /// Reactors with a completion pushed in this batch (one wake-up each).
    woken: Vec<bool>,
}

impl Worker {
    pub fn new(
        core: Arc<Core>,
        completer: Completer<Outcome>,
        clock: Arc<dyn Clock>,
        reactors: usize,
    ) -> Worker {
        Worker {
            core,
            completer,
            clock,
            woken: vec![false; reactors],
        }
    }

    /// Run one batch: one clock read, one wake-up per reactor.
    pub fn run_batch(&mut self, batch: &mut Vec<Job>) {
        let now = self.clock.now_ms();
        if let Some(cl) = &self.core.cluster {
            // Redis decides: the batch's purchases go as one call per sale.
            let (woken, completer) = (&mut self.woken, &self.completer);
            cl.run_batch(&self.core, batch, now, &mut |ticket, out| {
                woken[ticket.reactor()] = true;
                completer.push(ticket, out);
            });
        }
        for job in batch.drain(..) {
            if let Step::Now(out) = self.core.run(&job.cmd, now, job.ticket) {
                self.woken[job.ticket.reactor()] = true;
                self.completer.push(job.ticket, out);
            }
        }
        for (r, w) in self.woken.iter_mut().enumerate() {
            if std::mem::take(w) {
                self.completer.wake(r);
            }
        }
    }
}

/// Start `workers.count` engine workers; `None` runs the engine inline.
/// `reactors` CPUs are the sub-reactors' own: pinned workers take the ones
/// after them, wrapping around.
pub fn start(
    cfg: &WorkersSection,
    reactors: usize,
    core: &Arc<Core>,
    completer: Completer<Outcome>,
    clock: &Arc<dyn Clock>,
) -> std::io::Result<Option<Pool>> {
    if cfg.count == 0 {
        return Ok(None);
    }
    let cores = if cfg.pin_cpus {
        let all = core_affinity::get_core_ids().unwrap_or_default();
        (0..all.len())
            .map(|i| all[(reactors + i) % all.len()])
            .collect()
    } else {
        Vec::new()
    };
    let (core, clock) = (core.clone(), clock.clone());
    let pool = Pool::start(
        cfg.count,
        cfg.ring_capacity,
        cfg.batch_max,
        cores,
        move |_| {
            let mut w = Worker::new(core.clone(), completer.clone(), clock.clone(), reactors);
            move |batch: &mut Vec<Job>| w.run_batch(batch)
        },
    )?;
    Ok(Some(pool))
}
