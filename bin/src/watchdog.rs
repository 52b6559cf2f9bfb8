//! The watchdog: `WATCHDOG=1` goes to systemd only while every part of
//! flashd keeps making progress (each reactor turns, no worker batch and no
//! log commit runs too long), so a wedged part stops the pings and systemd
//! restarts the service. Without a systemd watchdog the same check runs
//! every second and only logs.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::clock::SystemClock;
use crate::config::{Config, LogBackend};
use crate::serve::Service;
use crate::sys;

/// How often the check runs when systemd asks for no watchdog.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Without a systemd watchdog: a worker batch or a log commit running
/// longer than this is logged as wedged.
const WEDGED_AFTER: Duration = Duration::from_secs(30);

/// What did not make progress since the last check.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stalls {
    pub stalled_reactors: Vec<usize>,
    pub wedged_workers: Vec<usize>,
    /// How long the log writer has been on one piece of work (0: idle).
    pub writer_busy_ms: u64,
    pub writer_wedged: bool,
}

impl Stalls {
    pub fn is_empty(&self) -> bool {
        self.stalled_reactors.is_empty() && self.wedged_workers.is_empty() && !self.writer_wedged
    }
}

pub struct Watchdog {
    /// systemd asked for pings (`WATCHDOG_USEC`).
    systemd: bool,
    interval: Duration,
    wedged_after: Duration,
    last_turns: Vec<u64>,
}

impl Watchdog {
    pub fn new(cfg: &Config, service: &Service) -> Watchdog {
        let mut wd_usec = 0u64;
        let systemd = sd_notify::watchdog_enabled(false, &mut wd_usec);
        let interval = if systemd {
            Duration::from_micros(wd_usec / 2).max(Duration::from_millis(10))
        } else {
            LIVENESS_CHECK
        };
        // A worker batch or a log commit (or the undo of a failed one)
        // that runs longer than WatchdogSec is wedged by the operator's
        // own measure of how long flashd may stall; with Kafka, not before
        // three delivery timeouts (a produce legitimately waits one, a
        // rollback two more).
        let mut wedged_after = if systemd {
            Duration::from_micros(wd_usec)
        } else {
            WEDGED_AFTER
        };
        if cfg.log.backend == LogBackend::Kafka {
            wedged_after =
                wedged_after.max(Duration::from_millis(cfg.log.kafka.unavailable_ms) * 3);
        }
        Watchdog {
            systemd,
            interval,
            wedged_after,
            last_turns: turns(service),
        }
    }

    /// How long to wait between checks.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// What stalled since the last call.
    pub fn stalls(&mut self, service: &Service) -> Stalls {
        let now = turns(service);
        let stalled_reactors = (0..now.len())
            .filter(|&i| now[i] == self.last_turns[i])
            .collect();
        self.last_turns = now;
        let wedged_workers = service
            .pool()
            .map(|p| p.wedged(self.wedged_after))
            .unwrap_or_default();
        // The writer stamps its work with the system clock.
        let writer_busy_ms = match service.writer_busy_since_ms() {
            0 => 0,
            since => SystemClock::now().saturating_sub(since),
        };
        Stalls {
            stalled_reactors,
            wedged_workers,
            writer_busy_ms,
            writer_wedged: Duration::from_millis(writer_busy_ms) > self.wedged_after,
        }
    }

    /// Ping systemd if everything made progress, else log what did not.
    pub fn check(&mut self, service: &Service) {
        let s = self.stalls(service);
        if s.is_empty() {
            if self.systemd {
                sys::notify(&[NotifyState::Watchdog]);
            }
        } else {
            tracing::error!(
                stalled_reactors = ?s.stalled_reactors,
                wedged_workers = ?s.wedged_workers,
                writer_busy_ms = s.writer_busy_ms,
                "part of flashd stopped making progress; withholding the watchdog ping"
            );
        }
    }
}

fn turns(service: &Service) -> Vec<u64> {
    service
        .stats()
        .reactors
        .iter()
        .map(|r| r.turns.get())
        .collect()
}
