//! Prometheus text exposition of the server's counters. Built on scrape
//! only, from per-reactor counters, so the request path never touches a
//! shared metric.

use std::fmt::Write;

use flashd_protocol::histogram::write_histogram_header;
use flashd_reactor::{ServerStats, STATUS_CODES};

use crate::routes::ROUTE_NAMES;

pub fn render(stats: &ServerStats, out: &mut String) {
    let open = stats.open.load(std::sync::atomic::Ordering::Relaxed);
    gauge(
        out,
        "flashd_connections_open",
        "Connections currently open.",
        open as u64,
    );
    counter(
        out,
        "flashd_connections_accepted_total",
        "Connections accepted.",
        stats.accepted.get(),
    );
    counter(
        out,
        "flashd_connections_refused_total",
        "Connections refused with 503 (connection cap, saturation, descriptor exhaustion).",
        stats.refused.get(),
    );
    let sum = |f: &dyn Fn(&flashd_reactor::ReactorStats) -> u64| {
        stats.reactors.iter().map(|r| f(r)).sum::<u64>()
    };
    counter(
        out,
        "flashd_header_timeouts_total",
        "Connections closed because a request was not received within header_timeout_ms.",
        sum(&|r| r.header_timeouts.get()),
    );
    counter(
        out,
        "flashd_idle_timeouts_total",
        "Keep-alive connections closed after idle_timeout_ms.",
        sum(&|r| r.idle_timeouts.get()),
    );
    counter(
        out,
        "flashd_protocol_errors_total",
        "Requests refused for malformed or oversized framing.",
        sum(&|r| r.protocol_errors.get()),
    );
    counter(
        out,
        "flashd_request_timeouts_total",
        "Deferred requests answered 503 at server.request_timeout_ms (outcome unknown to the client).",
        sum(&|r| r.request_timeouts.get()),
    );
    counter(
        out,
        "flashd_late_completions_total",
        "Completions that arrived after their request had timed out; dropped unsent.",
        sum(&|r| r.late_completions.get()),
    );
    counter(
        out,
        "flashd_lingering_closes_total",
        "Connections closed with input unread: write side shut and input drained first.",
        sum(&|r| r.lingering_closes.get()),
    );
    counter(
        out,
        "flashd_buffers_released_total",
        "Connection buffers grown by a large request or response, freed after it.",
        sum(&|r| r.buffers_released.get()),
    );

    out.push_str("# HELP flashd_requests_total Requests answered, by route and status.\n");
    out.push_str("# TYPE flashd_requests_total counter\n");
    for (route, name) in ROUTE_NAMES.iter().enumerate() {
        for (si, status) in STATUS_CODES.iter().enumerate() {
            let n = stats.requests(route, si);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "flashd_requests_total{{route=\"{name}\",status=\"{status}\"}} {n}"
                );
            }
        }
    }

    write_histogram_header(
        out,
        "flashd_request_duration_seconds",
        "Time from the event-loop turn that read a request to its response being queued.",
    );
    // Counted in nanoseconds, exposed in seconds.
    let mut labels = String::new();
    for (route, name) in ROUTE_NAMES.iter().enumerate() {
        let t = stats.latency(route);
        if t.count() == 0 {
            continue;
        }
        labels.clear();
        let _ = write!(labels, "route=\"{name}\"");
        t.write_series(out, "flashd_request_duration_seconds", &labels, 1e9);
    }

    out.push_str("# HELP flashd_reactor_turns_total Event-loop turns per sub-reactor (the watchdog's liveness signal).\n");
    out.push_str("# TYPE flashd_reactor_turns_total counter\n");
    for (i, r) in stats.reactors.iter().enumerate() {
        let _ = writeln!(
            out,
            "flashd_reactor_turns_total{{reactor=\"{i}\"}} {}",
            r.turns.get()
        );
    }
    out.push_str("# HELP flashd_reactor_deferred_in_flight Requests handed off and not yet completed, per sub-reactor.\n");
    out.push_str("# TYPE flashd_reactor_deferred_in_flight gauge\n");
    for (i, r) in stats.reactors.iter().enumerate() {
        let n = r
            .deferred_in_flight
            .load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "flashd_reactor_deferred_in_flight{{reactor=\"{i}\"}} {n}"
        );
    }
    out.push_str("# HELP flashd_build_info Build version.\n# TYPE flashd_build_info gauge\n");
    let _ = writeln!(
        out,
        "flashd_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
}

pub fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
    );
}

pub fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
    );
}

/// The sale API's counters, the sales' stock, and the worker pool.
pub fn render_app(shared: &crate::app::Shared, out: &mut String) {
    use flashd_engine::Reject;
    use std::sync::atomic::Ordering::Relaxed;
    let sum =
        |f: &dyn Fn(&crate::app::AppStats) -> u64| shared.app.iter().map(|a| f(a)).sum::<u64>();
    counter(
        out,
        "flashd_orders_created_total",
        "Orders created (201).",
        sum(&|a| a.orders_created.load(Relaxed)),
    );
    counter(
        out,
        "flashd_orders_replayed_total",
        "Purchases answered with an existing order (same request_id, 200).",
        sum(&|a| a.orders_replayed.load(Relaxed)),
    );
    out.push_str("# HELP flashd_commands_rejected_total Commands the engine refused, by reason.\n");
    out.push_str("# TYPE flashd_commands_rejected_total counter\n");
    for (i, r) in Reject::ALL.iter().enumerate() {
        let n = sum(&|a| a.rejected[i].load(Relaxed));
        let _ = writeln!(
            out,
            "flashd_commands_rejected_total{{reason=\"{}\"}} {n}",
            r.code()
        );
    }
    counter(
        out,
        "flashd_rate_limited_total",
        "Requests answered 429.",
        sum(&|a| a.rate_limited.load(Relaxed)),
    );
    counter(
        out,
        "flashd_ring_full_total",
        "Requests answered 503 because every worker ring (or the completion ring) was full.",
        sum(&|a| a.ring_full.load(Relaxed)),
    );
    counter(
        out,
        "flashd_unauthorized_total",
        "Requests answered 401.",
        sum(&|a| a.unauthorized.load(Relaxed)),
    );
    counter(
        out,
        "flashd_refused_before_auth_total",
        "Purchases refused before their token was checked: the same refusal for any buyer (unknown sale, not started, ended, sold out; never a retry). Also counted in flashd_commands_rejected_total.",
        sum(&|a| a.refused_before_auth.load(Relaxed)),
    );
    counter(
        out,
        "flashd_invalid_requests_total",
        "API requests answered 400.",
        sum(&|a| a.invalid.load(Relaxed)),
    );
    counter(
        out,
        "flashd_events_total",
        "Engine events emitted (state changes).",
        shared.events.load(Relaxed),
    );

    let now = shared.clock.now_ms();
    out.push_str("# HELP flashd_activity_remaining Units still on sale, per sale.\n# TYPE flashd_activity_remaining gauge\n");
    let acts: Vec<_> = shared.engine.activities().collect();
    for a in &acts {
        let r = a.counters().remaining;
        let _ = writeln!(
            out,
            "flashd_activity_remaining{{activity=\"{}\"}} {}",
            a.id,
            r.max(0)
        );
    }
    out.push_str("# HELP flashd_activity_sold Units paid for, per sale.\n# TYPE flashd_activity_sold gauge\n");
    for a in &acts {
        let s = a.counters().sold;
        let _ = writeln!(
            out,
            "flashd_activity_sold{{activity=\"{}\"}} {}",
            a.id,
            s.max(0)
        );
    }
    out.push_str("# HELP flashd_activity_reserved Units in created, unpaid orders, per sale.\n# TYPE flashd_activity_reserved gauge\n");
    for a in &acts {
        let v = a.counters().reserved;
        let _ = writeln!(
            out,
            "flashd_activity_reserved{{activity=\"{}\"}} {}",
            a.id,
            v.max(0)
        );
    }
    out.push_str("# HELP flashd_activity_open Whether the sale is open now (1) or not (0).\n# TYPE flashd_activity_open gauge\n");
    for a in &acts {
        let open = a.state(now) == flashd_engine::ActivityState::Open;
        let _ = writeln!(
            out,
            "flashd_activity_open{{activity=\"{}\"}} {}",
            a.id, open as u8
        );
    }
    render_sse(shared, out);
    if let Some(d) = &shared.workers {
        out.push_str("# HELP flashd_worker_ring_depth Commands waiting in each worker's ring.\n# TYPE flashd_worker_ring_depth gauge\n");
        for (i, n) in d.depths().iter().enumerate() {
            let _ = writeln!(out, "flashd_worker_ring_depth{{worker=\"{i}\"}} {n}");
        }
        out.push_str("# HELP flashd_worker_busy_seconds_total Time each worker spent executing batches.\n# TYPE flashd_worker_busy_seconds_total counter\n");
        for (i, s) in d.stats().enumerate() {
            let _ = writeln!(
                out,
                "flashd_worker_busy_seconds_total{{worker=\"{i}\"}} {}",
                s.busy_ns.load(Relaxed) as f64 / 1e9
            );
        }
        out.push_str("# HELP flashd_worker_jobs_total Commands each worker executed.\n# TYPE flashd_worker_jobs_total counter\n");
        for (i, s) in d.stats().enumerate() {
            let _ = writeln!(
                out,
                "flashd_worker_jobs_total{{worker=\"{i}\"}} {}",
                s.jobs.load(Relaxed)
            );
        }
        out.push_str("# HELP flashd_worker_batches_total Batches each worker took from its ring.\n# TYPE flashd_worker_batches_total counter\n");
        for (i, s) in d.stats().enumerate() {
            let _ = writeln!(
                out,
                "flashd_worker_batches_total{{worker=\"{i}\"}} {}",
                s.batches.load(Relaxed)
            );
        }
    }
}

/// The live stock streams: subscribers against their cap, events written,
/// encodings (one per sale per change, shared by all subscribers), slow
/// readers dropped, subscriptions refused.
pub fn render_sse(shared: &crate::app::Shared, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &shared.stats;
    let sum = |f: &dyn Fn(&flashd_reactor::ReactorStats) -> u64| {
        stats.reactors.iter().map(|r| f(r)).sum::<u64>()
    };
    gauge(
        out,
        "flashd_sse_subscribers",
        "Stream subscribers open now (GET /api/v1/activities/{id}/stream).",
        stats.stream_subscribers.load(Relaxed) as u64,
    );
    gauge(
        out,
        "flashd_sse_subscribers_max",
        "sse.max_subscribers: subscribers past it are answered 503.",
        shared.sse.max_subscribers as u64,
    );
    counter(
        out,
        "flashd_sse_events_total",
        "Stream events written to subscribers (one per subscriber reached).",
        sum(&|r| r.stream_events.get()),
    );
    counter(
        out,
        "flashd_sse_encoded_total",
        "Stream events encoded (each shared by every subscriber of its sale).",
        shared.sse.encoded.load(Relaxed),
    );
    counter(
        out,
        "flashd_sse_heartbeats_total",
        "Heartbeat comments written to idle subscribers.",
        sum(&|r| r.stream_heartbeats.get()),
    );
    counter(
        out,
        "flashd_sse_slow_drops_total",
        "Subscribers dropped for taking no bytes for sse.stall_timeout_ms while an event waited.",
        sum(&|r| r.stream_slow_drops.get()),
    );
    counter(
        out,
        "flashd_sse_refused_total",
        "Subscriptions refused with 503 at sse.max_subscribers.",
        shared.sse.refused.load(Relaxed),
    );
}

/// The order log: group commits, their sizes and latency, the breaker,
/// snapshots and recovery.
pub fn render_log(shared: &crate::app::Shared, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(l) = shared.log.get() else { return };
    let s = &l.stats;
    counter(
        out,
        "flashd_log_commits_total",
        "Group commits (one write + one fdatasync each).",
        s.commits.load(Relaxed),
    );
    counter(
        out,
        "flashd_log_events_total",
        "Events made durable.",
        s.events.load(Relaxed),
    );
    counter(
        out,
        "flashd_log_failures_total",
        "Failed log writes or syncs.",
        s.failures.load(Relaxed),
    );
    counter(
        out,
        "flashd_log_reverted_events_total",
        "Events undone because the log could not make them durable.",
        s.reverted.load(Relaxed),
    );
    write_histogram_header(out, "flashd_log_batch_events", "Events per group commit.");
    s.batch_events
        .write_series(out, "flashd_log_batch_events", "", 1.0);
    write_histogram_header(
        out,
        "flashd_log_commit_seconds",
        "Time of a group commit (write + fdatasync).",
    );
    s.commit_ns
        .write_series(out, "flashd_log_commit_seconds", "", 1e9);
    gauge(
        out,
        "flashd_log_committed_lsn",
        "Events in the log that are durable.",
        l.committed_lsn.load(Relaxed),
    );
    gauge(
        out,
        "flashd_log_snapshot_lsn",
        "Events covered by the newest snapshot.",
        l.snapshot_lsn.load(Relaxed),
    );
    counter(
        out,
        "flashd_log_snapshot_apply_failures_total",
        "Events the snapshot follower could not apply (each attempt); snapshots stay at the last good one.",
        l.snapshot_apply_failures.load(Relaxed),
    );
    gauge(
        out,
        "flashd_log_snapshot_stalled",
        "1 while the snapshot follower is stuck on an event (the error log names its LSN).",
        u64::from(l.snapshot_stalled_lsn.load(Relaxed) != flashd_log::NOT_STALLED),
    );
    counter(
        out,
        "flashd_log_snapshot_errors_total",
        "Snapshots the follower failed to write or load.",
        l.snapshot_errors.load(Relaxed),
    );
    gauge(
        out,
        "flashd_log_ring_depth",
        "Entries waiting for the log writer.",
        l.depth.depth() as u64,
    );
    let open = l.depth.gate.is_open(shared.clock.now_ms()) || l.depth.gate.is_failing();
    gauge(
        out,
        "flashd_log_breaker_open",
        "1 from a failed log write until the next one succeeds (orders are refused, or wait on a probe).",
        open as u64,
    );
    counter(
        out,
        "flashd_log_breaker_trips_total",
        "Times the log's breaker opened.",
        l.depth.gate.trips.load(Relaxed),
    );
    let _ = write!(
        out,
        "# HELP flashd_recovery_seconds Time the last start spent loading the snapshot and replaying the log.\n# TYPE flashd_recovery_seconds gauge\nflashd_recovery_seconds {}\n",
        l.recovery_ms as f64 / 1e3
    );
    gauge(
        out,
        "flashd_recovered_events",
        "Events replayed at the last start.",
        l.recovered_events,
    );
    let _ = write!(
        out,
        "# HELP flashd_log_backend The order log's backend (flashd_log_commit_seconds is the produce latency on kafka).\n# TYPE flashd_log_backend gauge\nflashd_log_backend{{backend=\"{}\"}} 1\n",
        l.backend
    );
    if let Some(s) = &l.sink {
        render_sink(s, out);
    }
}

/// The sink's figures (embedded in serve, or `flashd sink`'s own /metrics).
pub fn render_sink(s: &flashd_sink::SinkStats, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    counter(
        out,
        "flashd_sink_events_total",
        "Log records written to MySQL.",
        s.events.load(Relaxed),
    );
    counter(
        out,
        "flashd_sink_retries_total",
        "Batch writes that failed and were retried.",
        s.retries.load(Relaxed),
    );
    counter(
        out,
        "flashd_sink_poison_records_total",
        "Records parked in flashd_poison on shard 0 (a write error that would recur forever, or bytes that do not decode).",
        s.poison.load(Relaxed),
    );
    counter(
        out,
        "flashd_sink_voided_events_total",
        "Events not applied: voided by an abort, or behind a later group of their partition.",
        s.voided.load(Relaxed),
    );
    gauge(
        out,
        "flashd_sink_assigned_partitions",
        "Partitions of the topic assigned to this sink (0 with records to write: see flashd_sink_rejoins_total).",
        s.assigned.load(Relaxed),
    );
    counter(
        out,
        "flashd_sink_rejoins_total",
        "Times the sink left and rejoined its group because it had no partition and the group consumed nothing.",
        s.rejoins.load(Relaxed),
    );
    counter(
        out,
        "flashd_sink_consumer_restarts_total",
        "Times the sink started a fresh consumer because it held partitions with records waiting and read nothing for 20 s.",
        s.restarts.load(Relaxed),
    );
    gauge(
        out,
        "flashd_sink_lag_records",
        "Records in the topic not yet written to MySQL.",
        s.lag.load(Relaxed).max(0) as u64,
    );
    gauge(
        out,
        "flashd_sink_mysql_up",
        "0 while writes to MySQL fail.",
        s.mysql_up.load(Relaxed) as u64,
    );
    out.push_str("# HELP flashd_sink_rows_total Rows written, per shard.\n# TYPE flashd_sink_rows_total counter\n");
    for (i, r) in s.rows.iter().enumerate() {
        let _ = writeln!(
            out,
            "flashd_sink_rows_total{{shard=\"{i}\"}} {}",
            r.load(Relaxed)
        );
    }
    write_histogram_header(out, "flashd_sink_batch_records", "Records per sink batch.");
    s.batch_hist
        .write_series(out, "flashd_sink_batch_records", "", 1.0);
    let _ = write!(
        out,
        "# HELP flashd_sink_write_seconds_total Time spent writing batches to MySQL.\n# TYPE flashd_sink_write_seconds_total counter\nflashd_sink_write_seconds_total {}\n",
        s.write_ns_sum.load(Relaxed) as f64 / 1e9
    );
}

/// `flashd sink`'s `/metrics`: a plain blocking server (one scrape at a
/// time is all Prometheus needs; no reactor here).
pub fn serve_sink_metrics(l: std::net::TcpListener, stats: std::sync::Arc<flashd_sink::SinkStats>) {
    use std::io::{Read, Write};
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut buf = [0u8; 2048];
        let n = c.read(&mut buf).unwrap_or(0);
        let req = String::from_utf8_lossy(&buf[..n]);
        let (status, body) = if req.starts_with("GET /metrics ") {
            let mut out = String::new();
            render_sink(&stats, &mut out);
            ("200 OK", out)
        } else {
            ("404 Not Found", "not found\n".to_string())
        };
        let _ = write!(
            c,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// Cluster mode's counters (`crate::cluster`); nothing when it is off.
pub fn render_cluster(shared: &crate::app::Shared, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(cl) = shared.core.cluster.as_ref() else {
        return;
    };
    let s = &cl.stats;
    gauge(
        out,
        "flashd_cluster_redis_up",
        "1 while Redis answers and this node holds its id lease, else 0 (buys, pays and cancels answer 503).",
        u64::from(cl.health.down_reason().is_none()),
    );
    counter(
        out,
        "flashd_cluster_buy_calls_total",
        "Buy script calls (one per sale per worker batch).",
        s.buy_calls.load(Relaxed),
    );
    counter(
        out,
        "flashd_cluster_buys_decided_total",
        "Purchases Redis decided (orders per script call = this / calls).",
        s.buys_decided.load(Relaxed),
    );
    counter(
        out,
        "flashd_cluster_buys_granted_total",
        "Purchases Redis granted to this node.",
        s.buys_granted.load(Relaxed),
    );
    counter(
        out,
        "flashd_cluster_sold_out_local_total",
        "Purchases answered sold out here without Redis (cluster.sold_out_recheck_ms).",
        s.sold_out_local.load(Relaxed),
    );
    counter(
        out,
        "flashd_cluster_settle_calls_total",
        "Pay and cancel script calls.",
        s.settle_calls.load(Relaxed),
    );
    counter(
        out,
        "flashd_cluster_timed_out_total",
        "Unpaid orders this node timed out in Redis and logged.",
        s.timed_out.load(Relaxed),
    );
    counter(
        out,
        "flashd_cluster_adopted_orders_total",
        "Orders another node decided whose creation this node logged (a retry, pay, cancel or timeout completed them here).",
        s.adopted_orders.load(Relaxed),
    );
    counter(
        out,
        "flashd_cluster_adopted_sales_total",
        "Sales created on another node that this node serves.",
        s.adopted_sales.load(Relaxed),
    );
    counter(
        out,
        "flashd_cluster_redis_errors_total",
        "Redis calls that failed (timeouts, refused connections, errors).",
        s.errors.load(Relaxed),
    );
    counter(
        out,
        "flashd_cluster_unavailable_total",
        "Requests answered 503 because Redis did not answer.",
        shared
            .app
            .iter()
            .map(|a| a.authority_unavailable.load(Relaxed))
            .sum(),
    );
}
