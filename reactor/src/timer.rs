//! A hashed timer wheel with lazy cancellation.
//!
//! When a connection's deadline moves later (activity), its entry is left
//! alone; when it fires, the reactor compares it with the connection's real
//! deadline and re-schedules if it is still in the future. When the deadline
//! moves earlier (a request starts on an idle keep-alive connection, a
//! request is deferred), a second, earlier entry is added and the later one
//! is ignored when it fires. So scheduling is O(1) and needs no removal; a
//! connection has a few entries at most (one per "earlier" move not yet
//! fired, bounded by the ratio of its longest to its shortest timeout).
//!
//! An entry only fires once its deadline has passed: one beyond the wheel's
//! horizon is parked in the farthest slot and re-parked, not returned, until
//! its tick comes.

use std::mem;
use std::time::Instant;

use crate::constants::{TIMER_SLOTS, TIMER_SLOT_ENTRIES, TIMER_TICK};

pub(crate) type TimerKey = (usize, u32);

pub(crate) struct Wheel {
    /// Entries with the tick they are due at.
    slots: Vec<Vec<(TimerKey, u64)>>,
    origin: Instant,
    /// Next tick to be processed.
    cursor: u64,
    len: usize,
}

impl Wheel {
    pub fn new(now: Instant) -> Self {
        Wheel {
            // Room in every slot up front: a slot's first entries then
            // never allocate on the request path (a slot keeps what it grew
            // to, so only a burst beyond this allocates, once).
            slots: (0..TIMER_SLOTS)
                .map(|_| Vec::with_capacity(TIMER_SLOT_ENTRIES))
                .collect(),
            origin: now,
            cursor: 0,
            len: 0,
        }
    }

    fn tick_of(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.origin).as_nanos() / TIMER_TICK.as_nanos()) as u64
    }

    pub fn schedule(&mut self, at: Instant, key: TimerKey) {
        // Round up so an entry never fires before its deadline.
        let due = self.tick_of(at) + 1;
        let tick = due.clamp(self.cursor, self.cursor + TIMER_SLOTS as u64 - 1);
        self.slots[(tick as usize) & (TIMER_SLOTS - 1)].push((key, due));
        self.len += 1;
    }

    /// Move every entry whose tick has passed into `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<TimerKey>) {
        let now_tick = self.tick_of(now);
        let mut steps = 0;
        while self.cursor <= now_tick && steps < TIMER_SLOTS && self.len > 0 {
            let idx = (self.cursor as usize) & (TIMER_SLOTS - 1);
            let mut slot = mem::take(&mut self.slots[idx]);
            let mut i = 0;
            while i < slot.len() {
                let (key, due) = slot[i];
                if due <= now_tick {
                    out.push(key);
                    slot.swap_remove(i);
                    self.len -= 1;
                } else if due < self.cursor + TIMER_SLOTS as u64 {
                    // Parked here from beyond the horizon, now within it:
                    // to its own slot (ahead of now_tick, so not this call's).
                    self.slots[(due as usize) & (TIMER_SLOTS - 1)].push((key, due));
                    slot.swap_remove(i);
                } else {
                    // Still beyond the horizon: stays, seen again in one turn
                    // of the wheel.
                    i += 1;
                }
            }
            // Nothing was pushed into this slot meanwhile: an entry due at
            // this slot's tick is due now.
            self.slots[idx] = slot;
            self.cursor += 1;
            steps += 1;
        }
        if self.len == 0 && self.cursor <= now_tick {
            self.cursor = now_tick + 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_not_before_deadline_and_once() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.schedule(t0 + Duration::from_millis(55), (1, 0));
        w.schedule(t0 + Duration::from_secs(100), (2, 0));
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_millis(50), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + Duration::from_millis(70), &mut out);
        assert_eq!(out, vec![(1, 0)]);
        out.clear();
        // Beyond the horizon: parked in the farthest slot, but not returned
        // before its deadline, however many times the cursor passes it.
        let mut at = t0;
        while at < t0 + Duration::from_secs(99) {
            at += Duration::from_millis(700);
            w.expire(at, &mut out);
            assert!(out.is_empty(), "fired early at {:?}", at - t0);
        }
        w.expire(t0 + Duration::from_millis(100_020), &mut out);
        assert_eq!(out, vec![(2, 0)]);
        assert!(w.is_empty());
    }
}
