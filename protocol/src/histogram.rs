//! A fixed-bucket histogram and its Prometheus text exposition: the one
//! histogram type of flashd (request latency per route, events per group
//! commit, commit time, the sink's batch sizes), so that every histogram is
//! counted and written the same way.
//!
//! Observations and bounds share one unit (nanoseconds for times, a count
//! for sizes); `per_exposed` is how many of that unit make one exposed unit
//! (`1e9` nanoseconds a second), divided out when the series is written —
//! a division, so `987654321 ns` prints as `0.987654321`, not with the
//! rounding noise of multiplying by `1e-9`. Recording is two relaxed atomic
//! adds and a scan of at most [`BUCKETS_MAX`] bounds; no allocation.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bounds per histogram: enough for a latency scale from 50 µs to 10 s in
/// roughly ×2.5 steps; more buckets cost every observation a longer scan.
pub const BUCKETS_MAX: usize = 16;

/// Counts of observations `<=` each bound, plus those above the last.
pub struct Histogram<const B: usize> {
    bounds: [u64; B],
    buckets: [AtomicU64; B],
    above: AtomicU64,
    sum: AtomicU64,
}

impl<const B: usize> Histogram<B> {
    /// `bounds` must be strictly increasing (checked at compile time when
    /// the histogram is a `const`/`static`, at construction otherwise).
    pub const fn new(bounds: [u64; B]) -> Self {
        assert!(
            B > 0 && B <= BUCKETS_MAX,
            "a histogram has 1..=BUCKETS_MAX bounds"
        );
        let mut i = 1;
        while i < B {
            assert!(bounds[i - 1] < bounds[i], "histogram bounds must increase");
            i += 1;
        }
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; B],
            above: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn observe(&self, v: u64) {
        match self.bounds.iter().position(|&b| v <= b) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.above.fetch_add(1, Relaxed),
        };
        self.sum.fetch_add(v, Relaxed);
    }

    /// `observe` for a histogram only one thread ever writes (a reactor's
    /// own): a plain load and store per counter, no locked instruction.
    /// Readers on other threads still see every count (relaxed atomics),
    /// a scrape at most one observation behind.
    #[inline]
    pub fn observe_owned(&self, v: u64) {
        self.observe_owned_n(v, 1);
    }

    /// `n` observations of the same value `v`, by the one writing thread
    /// ([`observe_owned`](Self::observe_owned)): one bucket search for a
    /// pipelined burst whose answers share one latency.
    #[inline]
    pub fn observe_owned_n(&self, v: u64, n: u64) {
        let bump = |c: &AtomicU64, by: u64| c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
        match self.bounds.iter().position(|&b| v <= b) {
            Some(i) => bump(&self.buckets[i], n),
            None => bump(&self.above, n),
        }
        bump(&self.sum, v.wrapping_mul(n));
    }

    /// Per-bucket (not cumulative) counts: `B` bounds, then the overflow.
    pub fn counts(&self) -> ([u64; B], u64) {
        (
            std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            self.above.load(Relaxed),
        )
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum::<u64>() + self.above.load(Relaxed)
    }

    /// Sum of the observations, in their unit.
    pub fn sum(&self) -> u64 {
        self.sum.load(Relaxed)
    }

    /// Add another histogram's counts into these (per-thread histograms
    /// summed for exposition).
    pub fn merge_into(&self, total: &mut Totals<B>) {
        let (c, above) = self.counts();
        for (t, c) in total.buckets.iter_mut().zip(c) {
            *t += c;
        }
        total.above += above;
        total.sum += self.sum();
    }

    /// Write this histogram as one series; `labels` is `""` or
    /// `key="value",...` (without braces).
    pub fn write_series(&self, out: &mut String, name: &str, labels: &str, per_exposed: f64) {
        let mut t = Totals::new(self.bounds);
        self.merge_into(&mut t);
        t.write_series(out, name, labels, per_exposed);
    }
}

/// Summed counts of histograms with the same bounds.
pub struct Totals<const B: usize> {
    bounds: [u64; B],
    pub buckets: [u64; B],
    pub above: u64,
    pub sum: u64,
}

impl<const B: usize> Totals<B> {
    pub fn new(bounds: [u64; B]) -> Self {
        Totals {
            bounds,
            buckets: [0; B],
            above: 0,
            sum: 0,
        }
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum::<u64>() + self.above
    }

    /// The `_bucket`, `_sum` and `_count` lines of one series.
    pub fn write_series(&self, out: &mut String, name: &str, labels: &str, per_exposed: f64) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0u64;
        for (b, c) in self.bounds.iter().zip(self.buckets) {
            cum += c;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cum}",
                *b as f64 / per_exposed
            );
        }
        cum += self.above;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let braces = |o: &mut String| {
            if !labels.is_empty() {
                let _ = write!(o, "{{{labels}}}");
            }
        };
        out.push_str(name);
        out.push_str("_sum");
        braces(out);
        let _ = writeln!(out, " {}", self.sum as f64 / per_exposed);
        out.push_str(name);
        out.push_str("_count");
        braces(out);
        let _ = writeln!(out, " {cum}");
    }
}

/// The `# HELP` and `# TYPE` lines of a histogram family (once, before its
/// series).
pub fn write_histogram_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_the_first_bound_they_fit_and_render_cumulatively() {
        let h = Histogram::new([1, 4, 16]);
        for v in [0, 1, 2, 4, 5, 16, 17, 1000] {
            h.observe(v);
        }
        assert_eq!(h.counts(), ([2, 2, 2], 2));
        let owned = Histogram::new([1, 4, 16]);
        for v in [0, 1, 2, 4, 5, 16, 17, 1000] {
            owned.observe_owned(v);
        }
        assert_eq!((owned.counts(), owned.sum()), (h.counts(), h.sum()));
        assert_eq!(h.count(), 8);
        assert_eq!(h.sum(), 1045);
        let mut out = String::new();
        write_histogram_header(&mut out, "x", "X.");
        h.write_series(&mut out, "x", "route=\"a\"", 1.0);
        assert_eq!(
            out,
            "# HELP x X.\n# TYPE x histogram\n\
             x_bucket{route=\"a\",le=\"1\"} 2\nx_bucket{route=\"a\",le=\"4\"} 4\n\
             x_bucket{route=\"a\",le=\"16\"} 6\nx_bucket{route=\"a\",le=\"+Inf\"} 8\n\
             x_sum{route=\"a\"} 1045\nx_count{route=\"a\"} 8\n"
        );
    }

    #[test]
    fn units_are_divided_out_and_no_labels_means_no_braces() {
        let h = Histogram::new([100_000, 1_000_000]);
        h.observe(500_000);
        let mut out = String::new();
        h.write_series(&mut out, "t_seconds", "", 1e9);
        assert!(out.contains("t_seconds_bucket{le=\"0.0001\"} 0\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("t_seconds_sum 0.0005\n"), "{out}");
        assert!(out.contains("t_seconds_count 1\n"), "{out}");
        let h = Histogram::new([1_000_000_000]);
        h.observe(987_654_321);
        let mut out = String::new();
        h.write_series(&mut out, "t_seconds", "", 1e9);
        assert!(out.contains("t_seconds_sum 0.987654321\n"), "{out}");
    }

    #[test]
    #[should_panic(expected = "increase")]
    fn bounds_must_increase() {
        let _ = Histogram::new([4, 4]);
    }
}
