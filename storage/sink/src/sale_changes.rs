//! What an admin's changes of a sale make of its row: its `stock` (the
//! creation's plus every standing `StockAdded`) and its window. Pure
//! functions over the changes' copies kept in `sale_changes` on shard 0
//! (one per topic and LSN, voided when an abort of its topic covers it),
//! so that a sale's row is recomputed whole from what stands, like its
//! counters: the result depends on which copies stand, not on the order
//! they arrived in, the batches they came in, nor on replays.

use flashd_engine::{ActivityId, Event};

use crate::copies::Origin;

/// An admin's change of a sale, as kept in `sale_changes.kind` and the
/// columns beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// `StockAdded`: `added` units went on sale.
    Stock { added: u64 },
    /// `ActivityWindowChanged`: the window became `[start_at, end_at)`,
    /// replacing `[prev_start_at, prev_end_at)`.
    Window {
        start_at: u64,
        end_at: u64,
        prev_start_at: u64,
        prev_end_at: u64,
    },
}

impl Change {
    /// The change `ev` makes, with its sale; `None` for any other event.
    pub fn of(ev: &Event) -> Option<(ActivityId, Change)> {
        match ev {
            Event::StockAdded { id, added, .. } => Some((*id, Change::Stock { added: *added })),
            Event::ActivityWindowChanged {
                id,
                start_at,
                end_at,
                prev_start_at,
                prev_end_at,
                ..
            } => Some((
                *id,
                Change::Window {
                    start_at: *start_at,
                    end_at: *end_at,
                    prev_start_at: *prev_start_at,
                    prev_end_at: *prev_end_at,
                },
            )),
            _ => None,
        }
    }

    /// Its code in `sale_changes.kind`.
    pub fn code(self) -> u8 {
        match self {
            Change::Stock { .. } => 1,
            Change::Window { .. } => 2,
        }
    }

    /// A change read back from its row's columns (`kind`, `added`,
    /// `start_at`, `end_at`, `prev_start_at`, `prev_end_at`); `None` for
    /// a kind this sink never writes.
    pub fn from_columns(kind: u8, added: u64, window: [u64; 4]) -> Option<Change> {
        let [start_at, end_at, prev_start_at, prev_end_at] = window;
        match kind {
            1 => Some(Change::Stock { added }),
            2 => Some(Change::Window {
                start_at,
                end_at,
                prev_start_at,
                prev_end_at,
            }),
            _ => None,
        }
    }

    /// Its columns `added`, then the window's four (zero where the change
    /// has none).
    pub fn columns(self) -> (u64, [u64; 4]) {
        match self {
            Change::Stock { added } => (added, [0; 4]),
            Change::Window {
                start_at,
                end_at,
                prev_start_at,
                prev_end_at,
            } => (0, [start_at, end_at, prev_start_at, prev_end_at]),
        }
    }
}

/// One copy of a change, as kept in `sale_changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangeCopy {
    pub at: Origin,
    pub change: Change,
    pub voided: bool,
}

/// Units the standing copies of `changes` added to the sale's stock.
pub(crate) fn added(changes: &[ChangeCopy]) -> i64 {
    changes
        .iter()
        .filter(|c| !c.voided)
        .map(|c| match c.change {
            Change::Stock { added } => added as i64,
            Change::Window { .. } => 0,
        })
        .sum()
}

/// The window the kept copies `changes` give the sale: the standing
/// change with the highest (topic, LSN), the last one made (a sale's
/// changes are made on one node, so in one topic: cluster mode refuses
/// them); with none standing, the window the oldest kept change replaced,
/// as the engine puts it back when it undoes changes (newest first, so
/// the oldest's `prev` is where it ends); `None` when no window change
/// was ever kept: the creation's window stands.
pub(crate) fn window(changes: &[ChangeCopy]) -> Option<(u64, u64)> {
    let windows = || {
        changes.iter().filter_map(|c| match c.change {
            Change::Window {
                start_at,
                end_at,
                prev_start_at,
                prev_end_at,
            } => Some((c, (start_at, end_at), (prev_start_at, prev_end_at))),
            Change::Stock { .. } => None,
        })
    };
    if let Some((_, now, _)) = windows()
        .filter(|(c, _, _)| !c.voided)
        .max_by(|a, b| a.0.at.cmp(&b.0.at))
    {
        return Some(now);
    }
    windows()
        .min_by(|a, b| a.0.at.cmp(&b.0.at))
        .map(|(_, _, prev)| prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(topic: &str, lsn: u64, change: Change, voided: bool) -> ChangeCopy {
        ChangeCopy {
            at: Origin {
                topic: topic.into(),
                lsn,
            },
            change,
            voided,
        }
    }

    fn win(start_at: u64, end_at: u64, prev: (u64, u64)) -> Change {
        Change::Window {
            start_at,
            end_at,
            prev_start_at: prev.0,
            prev_end_at: prev.1,
        }
    }

    #[test]
    fn only_standing_stock_counts() {
        let cs = [
            copy("t", 3, Change::Stock { added: 5 }, false),
            copy("t", 4, Change::Stock { added: 7 }, true),
            copy("t", 5, win(1, 2, (0, 1)), false),
        ];
        assert_eq!(added(&cs), 5);
        assert_eq!(added(&[]), 0);
    }

    #[test]
    fn the_last_standing_window_wins_whatever_the_order_kept() {
        let a = copy("t", 3, win(10, 20, (0, 100)), false);
        let b = copy("t", 8, win(10, 15, (10, 20)), false);
        assert_eq!(window(&[a.clone(), b.clone()]), Some((10, 15)));
        assert_eq!(window(&[b.clone(), a.clone()]), Some((10, 15)));
        // The last one voided: the one before it stands.
        let b_void = ChangeCopy { voided: true, ..b };
        assert_eq!(window(&[b_void.clone(), a.clone()]), Some((10, 20)));
        // Both voided: the window the oldest replaced.
        let a_void = ChangeCopy { voided: true, ..a };
        assert_eq!(window(&[b_void, a_void]), Some((0, 100)));
        // No window change kept: the creation's.
        assert_eq!(
            window(&[copy("t", 1, Change::Stock { added: 1 }, false)]),
            None
        );
    }

    #[test]
    fn columns_round_trip() {
        for c in [Change::Stock { added: 9 }, win(1, 2, (3, 4))] {
            let (added, w) = c.columns();
            assert_eq!(Change::from_columns(c.code(), added, w), Some(c));
        }
        assert_eq!(Change::from_columns(7, 0, [0; 4]), None);
    }
}
