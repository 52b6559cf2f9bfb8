//! What `flashd reconcile` found, printed for people (text) or machines
//! (`--json`), and the exit code it makes: 0 when every sale agrees
//! (claims in flight included), 1 when one drifts after any repair.

use std::fmt::Write as _;

use flashd_engine::ActivityId;
use serde::Serialize;

use super::compare::{Counters, SaleCompare, Verdict};
use super::logs::TopicRead;
use super::repair::RepairOutcome;
use super::sink::SinkSale;

/// In-flight claims listed one by one in the text report at most.
const IN_FLIGHT_LISTED_MAX: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub brokers: String,
    pub base_topic: String,
    pub redis: String,
    pub grace_ms: u64,
    pub topics: Vec<TopicRead>,
    pub sales: Vec<SaleReport>,
    /// What the sink's tables hold that no single sale explains (an
    /// order in two rows).
    pub sink_problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SaleReport {
    #[serde(flatten)]
    pub compare: SaleCompare,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairOutcome>,
    /// The sink's order tables against the logs (with MySQL shards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSale>,
}

impl SaleReport {
    /// The verdict that counts: after the repair, if one was tried; a
    /// sink that disagrees with the logs is drift (one that lags is not).
    pub fn outcome(&self) -> Verdict {
        if self.sink.as_ref().is_some_and(|s| !s.agrees()) {
            return Verdict::Drift;
        }
        match &self.repair {
            Some(r) => r.verdict(),
            None => self.compare.verdict,
        }
    }
}

#[derive(Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    report: &'a Report,
    drift: bool,
    /// Each sale's verdict after any repair.
    outcomes: Vec<(ActivityId, Verdict)>,
}

impl Report {
    pub fn drift(&self) -> bool {
        !self.sink_problems.is_empty() || self.sales.iter().any(|s| s.outcome() == Verdict::Drift)
    }

    /// 0: Redis agrees with the logs; 1: drift.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.drift())
    }

    pub fn json(&self) -> String {
        let j = Json {
            report: self,
            drift: self.drift(),
            outcomes: self
                .sales
                .iter()
                .map(|s| (s.compare.sale, s.outcome()))
                .collect(),
        };
        serde_json::to_string_pretty(&j).expect("the report is plain data")
    }

    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "reconcile: {} node logs of {} on {} against {} (in flight: unlogged claims up to {} ms past their deadline)",
            self.topics.len(),
            self.base_topic,
            self.brokers,
            self.redis,
            self.grace_ms
        );
        for t in &self.topics {
            let _ = writeln!(
                o,
                "  node {} ({}): {} events, {} aborts, {} voided, {} late",
                t.node, t.topic, t.events, t.aborts, t.voided, t.late
            );
        }
        if self.topics.is_empty() {
            let _ = writeln!(
                o,
                "  no node topic {}.node<id> on the brokers",
                self.base_topic
            );
        }
        for s in &self.sales {
            sale_text(&mut o, s);
        }
        for p in &self.sink_problems {
            let _ = writeln!(o, "sink: {p}");
        }
        let count = |v: Verdict| self.sales.iter().filter(|s| s.outcome() == v).count();
        let _ = writeln!(
            o,
            "{}: {} sales: {} agree, {} in flight, {} drift",
            if self.drift() { "DRIFT" } else { "ok" },
            self.sales.len(),
            count(Verdict::Agree),
            count(Verdict::InFlight),
            count(Verdict::Drift)
        );
        o
    }
}

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Agree => "agree",
        Verdict::InFlight => "agree, with claims in flight",
        Verdict::Drift => "DRIFT",
    }
}

fn counters_line(o: &mut String, who: &str, c: Option<&Counters>) {
    match c {
        Some(c) => {
            let _ = writeln!(
                o,
                "    {who:<6} {:>10} {:>10} {:>10} {:>10} {:>8}",
                c.stock, c.sold, c.reserved, c.remaining, c.orders
            );
        }
        None => {
            let _ = writeln!(o, "    {who:<6} (no sale)");
        }
    }
}

fn sale_text(o: &mut String, s: &SaleReport) {
    let c = &s.compare;
    let _ = writeln!(o, "sale {}: {}", c.sale, verdict_text(c.verdict));
    let _ = writeln!(
        o,
        "    {:<6} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "", "stock", "sold", "reserved", "remaining", "orders"
    );
    counters_line(o, "logs", c.logs.as_ref());
    counters_line(o, "redis", c.redis.as_ref());
    for f in c.in_flight.iter().take(IN_FLIGHT_LISTED_MAX) {
        let _ = writeln!(
            o,
            "  in flight: order {} of user {} ({} units, node {}), deadline {}",
            f.order, f.user, f.quantity, f.node, f.deadline_ms
        );
    }
    if c.in_flight.len() > IN_FLIGHT_LISTED_MAX {
        let _ = writeln!(
            o,
            "  in flight: {} more",
            c.in_flight.len() - IN_FLIGHT_LISTED_MAX
        );
    }
    for d in &c.differences {
        let _ = writeln!(o, "  {}: {}", d.kind, d.detail);
    }
    if c.unlisted > 0 {
        let _ = writeln!(o, "  ... and {} more differences", c.unlisted);
    }
    for n in &c.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    if let Some(k) = &s.sink {
        let _ = writeln!(
            o,
            "  sink: logs created {} paid {} cancelled {}; sink created {} paid {} cancelled {} (void {}); lag {} orders; {}",
            k.logs.created,
            k.logs.paid,
            k.logs.cancelled,
            k.sink.created,
            k.sink.paid,
            k.sink.cancelled,
            k.sink.void,
            k.lag,
            if k.agrees() { "agrees" } else { "DISAGREES" }
        );
        for d in &k.disagreements {
            let _ = writeln!(o, "  sink: {}", d.detail);
        }
        if k.unlisted > 0 {
            let _ = writeln!(o, "  sink: ... and {} more", k.unlisted);
        }
    }
    if let Some(r) = &s.repair {
        if let Some(why) = &r.refused {
            let _ = writeln!(o, "  repair refused: {why}");
        } else {
            let _ = writeln!(
                o,
                "  repaired: Redis {} -> {}; now: {}",
                brief(r.before.as_ref()),
                brief(r.after.as_ref()),
                verdict_text(r.verdict())
            );
            if !r.dropped_in_flight.is_empty() {
                let _ = writeln!(
                    o,
                    "  repair dropped {} claims in flight: {:?}",
                    r.dropped_in_flight.len(),
                    r.dropped_in_flight
                );
            }
            if let Some(rc) = &r.recheck {
                for d in &rc.differences {
                    let _ = writeln!(o, "  after repair {}: {}", d.kind, d.detail);
                }
            }
        }
    }
}

fn brief(c: Option<&Counters>) -> String {
    match c {
        Some(c) => format!(
            "sold {} reserved {} remaining {} orders {}",
            c.sold, c.reserved, c.remaining, c.orders
        ),
        None => "no sale".into(),
    }
}
