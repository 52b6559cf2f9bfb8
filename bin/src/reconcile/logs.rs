//! Every node's log of a cluster, read and merged into one history per
//! sale: what `flashd_redis::fold_events` needs to say what Redis must
//! hold.
//!
//! Each node writes its own topic (`<base>.node<id>`). Across topics the
//! same sale's `ActivityCreated` is in every log that served it, and one
//! order's `OrderCreated` may be in several (a node that completes a
//! retry, a pay, a cancel or a timeout of an order another node decided
//! logs a copy of its creation first). A move (paid, cancelled) is made
//! once by Redis and logged once, by the node whose call made it, in
//! whatever topic that is. So the merge keeps one copy of each creation
//! (copies must be identical: two different creations of one order id is
//! drift), applies each order's move after its creation whatever topic
//! it came from, and names whatever the logs contradict each other on.
//!
//! Memory: the events of the sales asked for are held whole (a reconcile
//! compares whole sales); `--sale` keeps one sale's.

use std::collections::BTreeMap;

use flashd_engine::{ActivityId, Event, OrderId};
use flashd_kafka::{KafkaConfig, LogRecord};
use flashd_log::LogError;

/// What reading one node's topic found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicRead {
    pub node: u16,
    pub topic: String,
    /// Events kept (applied and not undone by an abort).
    pub events: u64,
    pub aborts: u64,
    /// Events an abort voided before they were applied, and records of a
    /// replaced producer: never part of the history.
    pub voided: u64,
    pub late: u64,
}

/// One node's history: its events in LSN order, aborted ones removed.
#[derive(Debug, Clone)]
pub struct NodeLog {
    pub node: u16,
    pub events: Vec<Event>,
}

/// Read every node topic of `base` on the brokers of `cfg`, keeping the
/// events of `only` (every sale when `None`).
pub fn read_all(
    cfg: &KafkaConfig,
    base: &str,
    only: Option<ActivityId>,
) -> Result<(Vec<TopicRead>, Vec<NodeLog>), LogError> {
    let mut reads = Vec::new();
    let mut logs = Vec::new();
    for (node, topic) in flashd_kafka::node_topics(cfg, base)? {
        let (read, log) = read_topic(cfg, node, topic, only)?;
        reads.push(read);
        logs.push(log);
    }
    Ok((reads, logs))
}

/// One topic, replayed as recovery does (`flashd_kafka::recover_topic`:
/// LSN order, aborts honoured): an abort's events are taken back out of
/// the history, newest first, as recovery reverts them in the engine.
fn read_topic(
    cfg: &KafkaConfig,
    node: u16,
    topic: String,
    only: Option<ActivityId>,
) -> Result<(TopicRead, NodeLog), LogError> {
    let cfg = KafkaConfig {
        topic: topic.clone(),
        ..cfg.clone()
    };
    let wanted = |e: &Event| only.is_none_or(|s| e.activity_id() == s);
    let mut events: Vec<Event> = Vec::new();
    let rec = flashd_kafka::recover_topic(&cfg, &mut |_, r| {
        match r {
            LogRecord::Event(ev) => {
                if wanted(&ev) {
                    events.push(ev);
                }
            }
            LogRecord::Abort(evs) => {
                for ev in evs.iter().rev().filter(|e| wanted(e)) {
                    // The undone event is among the newest (an abort covers
                    // the range since the last commit): search from the end.
                    // Absent when the abort voided it before it was applied.
                    // An identical event committed earlier in the same topic
                    // cannot be hit instead: a node logs a creation, a copy
                    // or a move once (a failed write is reverted with it).
                    if let Some(at) = events.iter().rposition(|e| e == ev) {
                        events.remove(at);
                    }
                }
            }
        }
        Ok(())
    })?;
    let read = TopicRead {
        node,
        topic,
        events: events.len() as u64,
        aborts: rec.aborts,
        voided: rec.voided,
        late: rec.late,
    };
    Ok((read, NodeLog { node, events }))
}

/// One sale's history across the nodes' logs, in an order
/// `fold_events` accepts: its creation, its other sale events, each
/// order's creation, then each order's move.
#[derive(Debug, Clone, Default)]
pub struct SaleLog {
    pub events: Vec<Event>,
    /// Orders whose creation is in the logs.
    pub orders: usize,
    /// Where the logs contradict each other: drift, whatever Redis holds.
    pub conflicts: Vec<String>,
    /// Whether the history is ambiguous (two versions of one fact): a
    /// repair from it would have to guess, so it is refused.
    pub ambiguous: bool,
}

/// The nodes' logs merged per sale.
pub fn merge(logs: &[NodeLog]) -> BTreeMap<ActivityId, SaleLog> {
    #[derive(Default)]
    struct Acc {
        created: Option<(Event, u16)>,
        /// Sale events other than its creation (an admin's changes), each
        /// counted as often as the one log holding it most often has it:
        /// a change every node logged counts once.
        sale_events: Vec<(Event, usize)>,
        creations: BTreeMap<OrderId, (Event, u16)>,
        moves: BTreeMap<OrderId, (Event, u16)>,
        out: SaleLog,
    }
    let mut acc: BTreeMap<ActivityId, Acc> = BTreeMap::new();
    for log in logs {
        // Sale events of this log, with their count in it.
        let mut here: BTreeMap<ActivityId, Vec<(Event, usize)>> = BTreeMap::new();
        for e in &log.events {
            let a = acc.entry(e.activity_id()).or_default();
            let node = log.node;
            match (e, e.order_id()) {
                (Event::ActivityCreated { .. }, _) => match &a.created {
                    None => a.created = Some((e.clone(), node)),
                    Some((first, _)) if first == e => {}
                    Some((first, n)) => {
                        a.out.ambiguous = true;
                        a.out.conflicts.push(format!(
                            "created differently in node {n}'s log ({first:?}) and node {node}'s ({e:?})"
                        ));
                    }
                },
                (Event::OrderCreated { .. }, Some(id)) => match a.creations.get(&id) {
                    None => {
                        a.creations.insert(id, (e.clone(), node));
                    }
                    Some((first, _)) if first == e => {}
                    Some((first, n)) => {
                        a.out.ambiguous = true;
                        a.out.conflicts.push(format!(
                            "order {id} created differently in node {n}'s log ({first:?}) and node {node}'s ({e:?})"
                        ));
                    }
                },
                (_, Some(id)) => match a.moves.get(&id) {
                    None => {
                        a.moves.insert(id, (e.clone(), node));
                    }
                    Some((first, n)) => {
                        // Redis makes a move once and one node logs it:
                        // two are a bug somewhere, even when identical.
                        a.out.ambiguous |= first != e;
                        a.out.conflicts.push(format!(
                            "order {id} moved twice: {} in node {n}'s log, {} in node {node}'s",
                            first.kind(),
                            e.kind()
                        ));
                    }
                },
                (_, None) => {
                    let v = here.entry(e.activity_id()).or_default();
                    match v.iter_mut().find(|(x, _)| x == e) {
                        Some((_, k)) => *k += 1,
                        None => v.push((e.clone(), 1)),
                    }
                }
            }
        }
        for (sale, evs) in here {
            let a = acc.entry(sale).or_default();
            for (e, k) in evs {
                match a.sale_events.iter_mut().find(|(x, _)| *x == e) {
                    Some((_, n)) => *n = (*n).max(k),
                    None => a.sale_events.push((e, k)),
                }
            }
        }
    }
    acc.into_iter()
        .map(|(sale, a)| {
            let mut out = a.out;
            match a.created {
                Some((e, _)) => out.events.push(e),
                None => {
                    out.ambiguous = true;
                    out.conflicts
                        .push("no log holds the sale's creation (ActivityCreated)".into());
                }
            }
            for (e, k) in a.sale_events {
                out.events.extend(std::iter::repeat_n(e, k));
            }
            out.orders = a.creations.len();
            out.events
                .extend(a.creations.values().map(|(e, _)| e.clone()));
            for (id, (e, node)) in a.moves {
                if a.creations.contains_key(&id) {
                    out.events.push(e);
                } else {
                    out.ambiguous = true;
                    out.conflicts.push(format!(
                        "order {id}: {} in node {node}'s log, but no log holds its creation",
                        e.kind()
                    ));
                }
            }
            (sale, out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashd_engine::CancelReason;

    fn sale(id: ActivityId) -> Event {
        Event::ActivityCreated {
            id,
            sku_id: "sku".into(),
            name: "n".into(),
            price_cents: 100,
            stock: 10,
            start_at: 0,
            end_at: 1_000_000,
            per_user_limit: 2,
            created_at: 1,
        }
    }
    fn created(sale: ActivityId, order: OrderId, user: u64) -> Event {
        Event::OrderCreated {
            order_id: order,
            activity_id: sale,
            user_id: user,
            quantity: 1,
            amount_cents: 100,
            request_id: format!("r{order}").into(),
            created_at: 10,
            expires_at: 1000,
        }
    }
    fn paid(sale: ActivityId, order: OrderId, user: u64) -> Event {
        Event::OrderPaid {
            order_id: order,
            activity_id: sale,
            user_id: user,
            quantity: 1,
            at: 20,
        }
    }
    fn cancelled(sale: ActivityId, order: OrderId, user: u64) -> Event {
        Event::OrderCancelled {
            order_id: order,
            activity_id: sale,
            user_id: user,
            quantity: 1,
            reason: CancelReason::Timeout,
            at: 1000,
        }
    }

    #[test]
    fn copies_count_once_and_a_move_applies_after_its_creation_from_any_log() {
        // Node 1 decided orders 1 and 2; node 2 completed order 1's pay
        // (a copy of its creation, then the move) before node 1's log
        // reached order 2's timeout.
        let logs = [
            NodeLog {
                node: 1,
                events: vec![
                    sale(7),
                    created(7, 1, 5),
                    created(7, 2, 6),
                    cancelled(7, 2, 6),
                ],
            },
            NodeLog {
                node: 2,
                events: vec![paid(7, 1, 5), sale(7), created(7, 1, 5)],
            },
        ];
        let m = merge(&logs);
        let s = &m[&7];
        assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
        assert_eq!(s.orders, 2);
        let st = flashd_redis::fold_events(7, &s.events).expect("folds");
        assert_eq!((st.sold, st.reserved, st.claims.len()), (1, 0, 2));
        assert_eq!(st.check(), Vec::<String>::new());
    }

    #[test]
    fn differing_copies_and_double_moves_are_conflicts() {
        let mut other = created(7, 1, 5);
        if let Event::OrderCreated { quantity, .. } = &mut other {
            *quantity = 2;
        }
        let logs = [
            NodeLog {
                node: 1,
                events: vec![sale(7), created(7, 1, 5), paid(7, 1, 5)],
            },
            NodeLog {
                node: 2,
                events: vec![sale(7), other, cancelled(7, 1, 5), paid(9, 4, 1)],
            },
        ];
        let m = merge(&logs);
        let s = &m[&7];
        assert!(s.ambiguous);
        assert_eq!(s.conflicts.len(), 2, "{:?}", s.conflicts);
        assert!(s.conflicts[0].contains("order 1 created differently"));
        assert!(s.conflicts[1].contains("order 1 moved twice"));
        // A sale with only a move: no creation of the sale or the order.
        let s9 = &m[&9];
        assert!(s9.ambiguous);
        assert_eq!(s9.conflicts.len(), 2, "{:?}", s9.conflicts);
    }
}
