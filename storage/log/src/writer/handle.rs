//! A producer's side: admitting a command (reserving ring room, stamping
//! the gate's epoch) and pushing its events and reply.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use flashd_engine::{Event, Millis};

use super::{Entry, Gate, Shared};

/// Why a command was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The log cannot make anything durable now (breaker open, or a failure
    /// is being undone).
    Unavailable,
    /// The writer's ring has no room for what the command may push.
    Busy,
}

/// A producer's handle.
pub struct WriterHandle<R> {
    pub(super) shared: Arc<Shared<R>>,
    pub gate: Arc<Gate>,
}

impl<R> Clone for WriterHandle<R> {
    fn clone(&self) -> Self {
        WriterHandle {
            shared: self.shared.clone(),
            gate: self.gate.clone(),
        }
    }
}

/// An admitted command: ring room for `entries` pushes is reserved until
/// it is dropped, and while it lives a failure's undo waits for it. Hold it
/// only while applying and pushing; never wait on anything while holding
/// it.
pub struct Admission<'a, R: Send + 'static> {
    handle: &'a WriterHandle<R>,
    entries: usize,
    pushed: usize,
    epoch: u64,
}

impl<R: Send + 'static> Admission<'_, R> {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Queue an event this command applied.
    pub fn event(&mut self, ev: Event) {
        let epoch = self.epoch;
        self.push(Entry::Event { ev, epoch });
    }

    /// Queue the command's reply, released once everything queued before
    /// it is durable (or failed).
    pub fn reply(&mut self, reply: R) {
        let epoch = self.epoch;
        self.push(Entry::Reply { reply, epoch });
    }

    fn push(&mut self, e: Entry<R>) {
        assert!(
            self.pushed < self.entries,
            "a command pushed more than the {} entries it reserved",
            self.entries
        );
        self.pushed += 1;
        self.handle.push(e);
    }
}

impl<R: Send + 'static> Drop for Admission<'_, R> {
    fn drop(&mut self) {
        self.handle
            .gate
            .reserved
            .fetch_sub(self.entries, Ordering::SeqCst);
    }
}

impl<R: Send + 'static> WriterHandle<R> {
    /// Admit a command that may push up to `entries` entries: `Err` while
    /// the log is unavailable or its ring has no room for them. The room is
    /// reserved, so the command's pushes (made under engine locks) never
    /// wait.
    #[inline]
    pub fn admit(&self, now: Millis, entries: usize) -> Result<Admission<'_, R>, Refused> {
        let g = &*self.gate;
        // Cheap refusal first: while the breaker is open nothing touches
        // the shared counter.
        if now < g.open_until_ms.load(Ordering::Acquire) {
            return Err(Refused::Unavailable);
        }
        // Reserve, then look: see Gate::shut for the pairing.
        let reserved = g.reserved.fetch_add(entries, Ordering::SeqCst) + entries;
        let mut a = Admission {
            handle: self,
            entries,
            pushed: 0,
            epoch: 0,
        };
        if g.shut.load(Ordering::SeqCst) {
            return Err(Refused::Unavailable);
        }
        // Counting the reservations of commands that already pushed twice
        // only errs on the safe side.
        if self.shared.ring.len() + reserved > self.shared.ring.capacity() {
            return Err(Refused::Busy);
        }
        a.epoch = g.epoch.load(Ordering::Acquire);
        Ok(a)
    }

    /// Push outside an admission (tests, and entries whose room the caller
    /// accounts for itself). Waits while the ring is full, which only an
    /// unadmitted producer can meet.
    pub fn push(&self, mut e: Entry<R>) {
        loop {
            match self.shared.ring.push(e) {
                Ok(()) => break,
                Err(back) => {
                    e = back;
                    std::thread::yield_now();
                }
            }
        }
        if self.shared.sleeping.load(Ordering::SeqCst)
            && !self.shared.self_waking.load(Ordering::SeqCst)
        {
            if let Some(t) = self.shared.thread.get() {
                t.unpark();
            }
        }
    }

    pub fn depth(&self) -> usize {
        self.shared.ring.len()
    }

    pub fn capacity(&self) -> usize {
        self.shared.ring.capacity()
    }
}
