//! A hashed timer wheel with lazy cancellation.
//!
//! A connection has at most one entry in the wheel. When its deadline moves
//! later (activity), the entry is left alone; when it fires, the reactor
//! compares it with the connection's real deadline and re-schedules if it is
//! still in the future. So scheduling is O(1), needs no removal, and the
//! wheel never holds more entries than connections.

use std::time::Instant;

use crate::constants::{TIMER_SLOTS, TIMER_TICK};

pub(crate) type TimerKey = (usize, u32);

pub(crate) struct Wheel {
    slots: Vec<Vec<TimerKey>>,
    origin: Instant,
    /// Next tick to be processed.
    cursor: u64,
    len: usize,
}

impl Wheel {
    pub fn new(now: Instant) -> Self {
        Wheel {
            slots: (0..TIMER_SLOTS).map(|_| Vec::new()).collect(),
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
        let tick = self.tick_of(at) + 1;
        let tick = tick.clamp(self.cursor, self.cursor + TIMER_SLOTS as u64 - 1);
        self.slots[(tick as usize) & (TIMER_SLOTS - 1)].push(key);
        self.len += 1;
    }

    /// Move every entry whose tick has passed into `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<TimerKey>) {
        let now_tick = self.tick_of(now);
        let mut steps = 0;
        while self.cursor <= now_tick && steps < TIMER_SLOTS && self.len > 0 {
            let slot = &mut self.slots[(self.cursor as usize) & (TIMER_SLOTS - 1)];
            self.len -= slot.len();
            out.append(slot);
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
        // Beyond the horizon: parked in the last slot, fires early, caller
        // re-checks. It must fire within one horizon.
        w.expire(
            t0 + TIMER_TICK * TIMER_SLOTS as u32 + Duration::from_millis(100),
            &mut out,
        );
        assert_eq!(out, vec![(2, 0)]);
        assert!(w.is_empty());
    }
}
