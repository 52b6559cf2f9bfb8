//! A pool of worker threads fed over bounded lock-free rings.
//!
//! Each worker has its own ring (no shared head for all producers to fight
//! over); producers deal jobs round-robin and move on to the next ring when
//! one is full, and get the job back when every ring is full — the caller
//! answers 503 at once rather than queue without bound. A worker drains its
//! ring in batches, so "now", the engine call overhead and the wake-ups of
//! reactors are paid once per batch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

/// Longest an idle worker sleeps before looking at its ring again (a
/// missed unpark can cost at most this).
const IDLE_PARK: Duration = Duration::from_millis(50);

pub struct WorkerStats {
    pub jobs: AtomicU64,
    pub batches: AtomicU64,
    pub busy_ns: AtomicU64,
    /// Milliseconds since the pool started at which the current batch
    /// began, plus one; 0 while the worker waits for work. A batch older
    /// than any command may take means the worker is wedged.
    pub busy_since_ms: AtomicU64,
}

struct Ring<J> {
    queue: ArrayQueue<J>,
    sleeping: CachePadded<AtomicBool>,
    thread: std::sync::OnceLock<Thread>,
    stats: WorkerStats,
}

struct Shared<J> {
    rings: Box<[Ring<J>]>,
    stop: AtomicBool,
    /// What `busy_since_ms` counts from.
    origin: Instant,
}

impl<J> Shared<J> {
    fn since_origin_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Workers that have been inside one batch for longer than `limit`.
    fn wedged(&self, limit: Duration) -> Vec<usize> {
        let now = self.since_origin_ms();
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.rings
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                let since = r.stats.busy_since_ms.load(Ordering::Acquire);
                since != 0 && now.saturating_sub(since - 1) > limit
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// A producer's handle; one per sub-reactor (it keeps its own round-robin
/// position, so it is `Clone` but not shared).
pub struct Dispatcher<J> {
    shared: Arc<Shared<J>>,
    next: usize,
}

impl<J> Clone for Dispatcher<J> {
    fn clone(&self) -> Self {
        Dispatcher {
            shared: self.shared.clone(),
            next: self.next.wrapping_add(1),
        }
    }
}

impl<J> Dispatcher<J> {
    /// A handle whose round-robin starts at ring `n` (spreads producers).
    pub fn starting_at(&self, n: usize) -> Dispatcher<J> {
        Dispatcher {
            shared: self.shared.clone(),
            next: n,
        }
    }

    /// Jobs waiting per worker ring.
    pub fn depths(&self) -> Vec<usize> {
        self.shared.rings.iter().map(|r| r.queue.len()).collect()
    }

    pub fn stats(&self) -> impl Iterator<Item = &WorkerStats> {
        self.shared.rings.iter().map(|r| &r.stats)
    }
}

impl<J: Send + 'static> Dispatcher<J> {
    /// Queue `job` on some worker; `Err(job)` when every ring is full.
    pub fn submit(&mut self, job: J) -> Result<(), J> {
        let rings = &self.shared.rings;
        let n = rings.len();
        let mut job = job;
        for _ in 0..n {
            let i = self.next % n;
            self.next = self.next.wrapping_add(1);
            match rings[i].queue.push(job) {
                Ok(()) => {
                    // Pairs with the worker's store-then-check: either it
                    // sees the job before sleeping, or we see it asleep.
                    if rings[i].sleeping.load(Ordering::SeqCst) {
                        if let Some(t) = rings[i].thread.get() {
                            t.unpark();
                        }
                    }
                    return Ok(());
                }
                Err(back) => job = back,
            }
        }
        Err(job)
    }
}

pub struct WorkerPool<J> {
    shared: Arc<Shared<J>>,
    threads: Vec<JoinHandle<()>>,
}

impl<J: Send + 'static> WorkerPool<J> {
    /// Start `count` workers named `flashd-worker-N`. `cores`: CPUs to pin
    /// worker N to (`cores[N % len]`), empty for no pinning. `make(i)` runs
    /// on worker i's thread and returns its batch processor.
    pub fn start<W, F>(
        count: usize,
        ring_capacity: usize,
        batch_max: usize,
        cores: Vec<core_affinity::CoreId>,
        make: F,
    ) -> std::io::Result<WorkerPool<J>>
    where
        F: Fn(usize) -> W + Send + Sync + 'static,
        W: FnMut(&mut Vec<J>),
    {
        assert!(count >= 1 && ring_capacity >= 1 && batch_max >= 1);
        let shared = Arc::new(Shared {
            rings: (0..count)
                .map(|_| Ring {
                    queue: ArrayQueue::new(ring_capacity),
                    sleeping: CachePadded::new(AtomicBool::new(false)),
                    thread: std::sync::OnceLock::new(),
                    stats: WorkerStats {
                        jobs: AtomicU64::new(0),
                        batches: AtomicU64::new(0),
                        busy_ns: AtomicU64::new(0),
                        busy_since_ms: AtomicU64::new(0),
                    },
                })
                .collect(),
            stop: AtomicBool::new(false),
            origin: Instant::now(),
        });
        let make = Arc::new(make);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let shared = shared.clone();
            let make = make.clone();
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let t = std::thread::Builder::new()
                .name(format!("flashd-worker-{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        if !core_affinity::set_for_current(c) {
                            tracing::warn!(worker = i, core = c.id, "could not pin worker");
                        }
                    }
                    let ring = &shared.rings[i];
                    let _ = ring.thread.set(std::thread::current());
                    let mut work = make(i);
                    let mut batch: Vec<J> = Vec::with_capacity(batch_max);
                    loop {
                        while batch.len() < batch_max {
                            match ring.queue.pop() {
                                Some(j) => batch.push(j),
                                None => break,
                            }
                        }
                        if batch.is_empty() {
                            if shared.stop.load(Ordering::Acquire) {
                                break;
                            }
                            ring.sleeping.store(true, Ordering::SeqCst);
                            if ring.queue.is_empty() && !shared.stop.load(Ordering::Acquire) {
                                std::thread::park_timeout(IDLE_PARK);
                            }
                            ring.sleeping.store(false, Ordering::SeqCst);
                            continue;
                        }
                        let t0 = Instant::now();
                        let n = batch.len() as u64;
                        let st = &ring.stats;
                        st.busy_since_ms
                            .store(shared.since_origin_ms() + 1, Ordering::Release);
                        work(&mut batch);
                        st.busy_since_ms.store(0, Ordering::Release);
                        batch.clear();
                        st.busy_ns
                            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        st.jobs.fetch_add(n, Ordering::Relaxed);
                        st.batches.fetch_add(1, Ordering::Relaxed);
                    }
                })?;
            threads.push(t);
        }
        Ok(WorkerPool { shared, threads })
    }

    pub fn dispatcher(&self, start: usize) -> Dispatcher<J> {
        Dispatcher {
            shared: self.shared.clone(),
            next: start,
        }
    }

    /// Jobs waiting per worker ring.
    pub fn depths(&self) -> Vec<usize> {
        self.shared.rings.iter().map(|r| r.queue.len()).collect()
    }

    pub fn stats(&self) -> impl Iterator<Item = &WorkerStats> {
        self.shared.rings.iter().map(|r| &r.stats)
    }

    /// Workers stuck in one batch for longer than `limit` (the watchdog
    /// withholds its ping while any is).
    pub fn wedged(&self, limit: Duration) -> Vec<usize> {
        self.shared.wedged(limit)
    }

    /// Finish what is queued, then stop. Call after the reactors have
    /// drained, so no job can arrive after the stop.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Release);
        for r in self.shared.rings.iter() {
            if let Some(t) = r.thread.get() {
                t.unpark();
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}
