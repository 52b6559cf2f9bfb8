//! Counters the network core keeps for `/metrics`.
//!
//! Each reactor writes only its own [`ReactorStats`] (cache-padded, single
//! writer, so an increment is a plain load and store, no locked
//! instruction); a scrape sums them. Routes are small numbers chosen by the
//! handler; route 0 is "no route" (protocol errors, timeouts, refusals).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use flashd_protocol::histogram::{Histogram, Totals};

/// Route numbers a handler may use (0 is reserved for "unrouted").
pub const ROUTES_MAX: usize = 32;

/// Every status code flashd can send; anything else counts as 500's slot.
pub const STATUS_CODES: [u16; 20] = [
    100, 200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415, 417, 429, 431, 500, 501, 503,
    505,
];

/// Latency histogram upper bounds in nanoseconds, the unit it counts in
/// (25 µs .. 5 s): dense below 1 ms, where the hot path should live, sparse
/// above.
pub const LATENCY_BOUNDS_NS: [u64; 16] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

fn status_index(status: u16) -> usize {
    STATUS_CODES.iter().position(|&s| s == status).unwrap_or(16)
}

/// A counter with one writing thread.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One route's request latency on one reactor: the protocol's histogram
/// (the one type every flashd histogram is), written by its reactor only.
pub struct Latency(Histogram<{ LATENCY_BOUNDS_NS.len() }>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new(LATENCY_BOUNDS_NS))
    }
}

impl Latency {
    #[inline]
    pub fn observe(&self, d: Duration) {
        self.observe_n(d, 1);
    }

    /// `n` answers that took `d` each.
    #[inline]
    pub fn observe_n(&self, d: Duration, n: u64) {
        self.0
            .observe_owned_n(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), n);
    }

    pub fn histogram(&self) -> &Histogram<{ LATENCY_BOUNDS_NS.len() }> {
        &self.0
    }
}

#[derive(Default)]
pub struct ReactorStats {
    requests: [[Counter; STATUS_CODES.len()]; ROUTES_MAX],
    latency: [Latency; ROUTES_MAX],
    pub header_timeouts: Counter,
    pub idle_timeouts: Counter,
    pub protocol_errors: Counter,
    /// Deferred requests answered `503` at `request_timeout` because their
    /// completion had not come back (outcome unknown to the client).
    pub request_timeouts: Counter,
    /// Completions that came back after their request had been answered
    /// `503` at its deadline; dropped unsent.
    pub late_completions: Counter,
    /// Connections closed gracefully with input unread: write side shut,
    /// input drained, then closed (so the peer reads the answer, no RST).
    pub lingering_closes: Counter,
    /// Read or write buffers a large request or response grew past the
    /// normal size, freed after it instead of being kept.
    pub buffers_released: Counter,
    pub deferred_in_flight: AtomicUsize,
    /// Stream events written to subscribers (one per subscriber reached).
    pub stream_events: Counter,
    /// Heartbeat comments written to idle subscribers.
    pub stream_heartbeats: Counter,
    /// Subscribers dropped because their socket took nothing for
    /// `stall_timeout` while an event waited.
    pub stream_slow_drops: Counter,
    /// Event-loop turns: the watchdog's proof that this reactor is alive.
    pub turns: Counter,
    pub running: AtomicBool,
}

impl ReactorStats {
    #[inline]
    pub(crate) fn record(&self, route: u16, status: u16, latency: Duration) {
        self.record_n(route, status, latency, 1);
    }

    /// `n` answers with one route, one status and one latency.
    #[inline]
    pub(crate) fn record_n(&self, route: u16, status: u16, latency: Duration, n: u64) {
        let r = (route as usize).min(ROUTES_MAX - 1);
        self.requests[r][status_index(status)].add(n);
        self.latency[r].observe_n(latency, n);
    }

    /// Record answers that all took `latency`, draining `answers`
    /// (`(route, status)` each). A run of equal ones, as a pipelined burst
    /// is, is counted in one step: a bucket search per answer was ~50
    /// instructions of a pipelined `/healthz` (callgrind, issue 17).
    pub(crate) fn record_all(&self, answers: &mut Vec<(u16, u16)>, latency: Duration) {
        let mut run: Option<((u16, u16), u64)> = None;
        for a in answers.drain(..) {
            match &mut run {
                Some((k, n)) if *k == a => *n += 1,
                _ => {
                    if let Some(((route, status), n)) = run.replace((a, 1)) {
                        self.record_n(route, status, latency, n);
                    }
                }
            }
        }
        if let Some(((route, status), n)) = run {
            self.record_n(route, status, latency, n);
        }
    }

    pub fn requests(&self, route: usize, status_idx: usize) -> u64 {
        self.requests[route][status_idx].get()
    }

    pub fn latency(&self, route: usize) -> &Latency {
        &self.latency[route]
    }
}

/// Everything `/metrics` needs from the network core.
pub struct ServerStats {
    pub reactors: Vec<CachePadded<ReactorStats>>,
    pub accepted: Counter,
    pub refused: Counter,
    pub open: AtomicUsize,
    /// Stream subscribers on every reactor (capped by
    /// `StreamConfig::max_subscribers`).
    pub stream_subscribers: AtomicUsize,
    pub shutting_down: AtomicBool,
}

impl ServerStats {
    pub(crate) fn new(reactors: usize) -> Self {
        ServerStats {
            reactors: (0..reactors)
                .map(|_| CachePadded::new(ReactorStats::default()))
                .collect(),
            accepted: Counter::default(),
            refused: Counter::default(),
            open: AtomicUsize::new(0),
            stream_subscribers: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// True once every reactor has entered its loop (and not yet left it).
    pub fn all_running(&self) -> bool {
        self.reactors.iter().all(|r| r.running.load(Relaxed))
    }

    /// Sum of requests for (route, status index) over all reactors.
    pub fn requests(&self, route: usize, status_idx: usize) -> u64 {
        self.reactors
            .iter()
            .map(|r| r.requests(route, status_idx))
            .sum()
    }

    /// Latency buckets and sum for one route over all reactors.
    /// One route's latency summed over every reactor.
    pub fn latency(&self, route: usize) -> Totals<{ LATENCY_BOUNDS_NS.len() }> {
        let mut t = Totals::new(LATENCY_BOUNDS_NS);
        for r in &self.reactors {
            r.latency(route).histogram().merge_into(&mut t);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counting a turn's answers run by run gives the counts and the
    /// latency histogram that counting them one by one gives, whatever
    /// the order of routes and statuses.
    #[test]
    fn runs_count_as_their_answers() {
        let answers: Vec<(u16, u16)> = vec![
            (1, 200),
            (1, 200),
            (1, 200),
            (2, 404),
            (1, 200),
            (1, 503),
            (1, 503),
            (3, 201),
            (ROUTES_MAX as u16 + 7, 200),
            (ROUTES_MAX as u16 + 7, 200),
        ];
        for latency in [
            Duration::ZERO,
            Duration::from_micros(70),
            Duration::from_secs(90),
        ] {
            let (runs, each) = (ReactorStats::default(), ReactorStats::default());
            let mut drained = answers.clone();
            runs.record_all(&mut drained, latency);
            assert!(drained.is_empty());
            for &(route, status) in &answers {
                each.record(route, status, latency);
            }
            for route in 0..ROUTES_MAX {
                for status in [200, 201, 404, 503, 500] {
                    let s = status_index(status);
                    assert_eq!(
                        runs.requests(route, s),
                        each.requests(route, s),
                        "{route} {status}"
                    );
                }
                let (a, b) = (
                    runs.latency(route).histogram(),
                    each.latency(route).histogram(),
                );
                assert_eq!(a.counts(), b.counts(), "route {route}");
                assert_eq!(a.sum(), b.sum(), "route {route}");
            }
        }
    }
}
