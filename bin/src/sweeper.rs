//! Unpaid orders past their payment deadline go back on sale: once at
//! start (orders that timed out while flashd was down), then every
//! `engine.expiry_sweep_ms` on the `flashd-sweeper` thread. Both go through
//! [`Core::expire`], admitted by the log like any command. In cluster mode
//! Redis times orders out instead: each pass is a
//! [`ClusterSweep::pass`](crate::cluster::sweep::ClusterSweep::pass).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::cluster::sweep::ClusterSweep;
use crate::exec::Core;

/// How long start waits for the cancels of overdue orders to be durable.
const OVERDUE_DURABLE_WAIT: Duration = Duration::from_secs(30);

/// Cancel every order already past its deadline; returns how many. Waits
/// (up to 30 s) until the cancels are durable, so that their units are on
/// sale again (never before: see `Engine::durable`) when this returns.
pub fn cancel_overdue(core: &Core, clock: &dyn Clock) -> usize {
    let mut overdue = 0;
    loop {
        let n = core.expire(clock.now_ms());
        overdue += n;
        if n == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if overdue > 0 {
        let t0 = Instant::now();
        while core.engine.activities().any(|a| a.releasing() != 0) {
            if t0.elapsed() > OVERDUE_DURABLE_WAIT {
                tracing::warn!(
                    "cancels of overdue orders are not durable after 30 s; starting anyway"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        tracing::info!(
            cancelled = overdue,
            "unpaid orders whose deadline passed while flashd was down were cancelled"
        );
    }
    overdue
}

/// The body of the `flashd-sweeper` thread.
struct Sweeper {
    core: Arc<Core>,
    clock: Arc<dyn Clock>,
    every: Duration,
    running: Arc<AtomicBool>,
    cluster: Option<ClusterSweep>,
}

impl Sweeper {
    fn run(mut self) {
        while self.running.load(Ordering::Relaxed) {
            std::thread::sleep(self.every);
            let now = self.clock.now_ms();
            let n = match &mut self.cluster {
                Some(c) => c.pass(now),
                None => self.core.expire(now),
            };
            if n > 0 {
                tracing::debug!(cancelled = n, "unpaid orders timed out");
            }
        }
    }
}

/// The running sweeper thread.
pub struct SweeperHandle {
    running: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl SweeperHandle {
    pub fn start(
        core: Arc<Core>,
        clock: Arc<dyn Clock>,
        every: Duration,
        cluster: Option<ClusterSweep>,
    ) -> std::io::Result<SweeperHandle> {
        let running = Arc::new(AtomicBool::new(true));
        let sweeper = Sweeper {
            core,
            clock,
            every,
            running: running.clone(),
            cluster,
        };
        let thread = std::thread::Builder::new()
            .name("flashd-sweeper".into())
            .spawn(move || sweeper.run())?;
        Ok(SweeperHandle { running, thread })
    }

    /// Stop after the current pass (at most one `every` later).
    pub fn stop(self) {
        self.running.store(false, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
