//! The operations files in tuning/ work: the Prometheus alert rules pass
//! `promtool check rules` and their own unit tests (each alert fires on the
//! series that should fire it), and every metric the rules and the Grafana
//! dashboard read is one flashd exposes (so a renamed metric breaks here,
//! not silently on an operator's screen).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect(
            "promtool missing: the README's test command installs it (Debian package prometheus)",
        );
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = root().join("tuning/prometheus");
    promtool(&["check", "rules", "flashd-alerts.yml"], &dir);
    promtool(&["test", "rules", "flashd-alerts.test.yml"], &dir);
}

/// Every `flashd_*` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("flashd_") {
        let start = i + at;
        let word_start =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        if word_start {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The metric names the exposition code can write (bin/src/metrics.rs).
fn exposed() -> BTreeSet<String> {
    names(&std::fs::read_to_string(root().join("bin/src/metrics.rs")).unwrap())
}

/// Names in `wanted` that flashd does not expose (a histogram's series are
/// its name with `_bucket`, `_sum` or `_count`).
fn unknown(wanted: &BTreeSet<String>, exposed: &BTreeSet<String>) -> Vec<String> {
    wanted
        .iter()
        .filter(|n| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .filter(|b| exposed.contains(*b));
            !exposed.contains(n.as_str()) && base.is_none()
        })
        // Not metrics: the poison table's name in an annotation.
        .filter(|n| n.as_str() != "flashd_poison")
        .cloned()
        .collect()
}

#[test]
fn every_metric_the_rules_and_the_dashboard_read_is_exposed() {
    let exposed = exposed();
    assert!(
        exposed.len() > 40,
        "found only {} metric names",
        exposed.len()
    );
    let rules =
        std::fs::read_to_string(root().join("tuning/prometheus/flashd-alerts.yml")).unwrap();
    let dash =
        std::fs::read_to_string(root().join("tuning/grafana/flashd-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash).expect("the dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_string()
        })
        .collect();
    assert!(exprs.len() >= 20, "{} expressions", exprs.len());
    for (what, text) in [("alert rules", rules), ("dashboard", exprs.join("\n"))] {
        let wanted = names(&text);
        assert!(wanted.len() >= 8, "{what}: only {wanted:?}");
        let bad = unknown(&wanted, &exposed);
        assert!(
            bad.is_empty(),
            "{what} read metrics flashd does not expose: {bad:?}"
        );
    }
}

#[test]
fn the_dashboard_shows_what_a_sale_is_watched_by() {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tuning/grafana/flashd-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs = dash["panels"].to_string();
    for metric in [
        "flashd_orders_created_total",
        "flashd_commands_rejected_total",
        "flashd_request_duration_seconds_bucket",
        "flashd_log_commit_seconds_bucket",
        "flashd_log_batch_events_bucket",
        "flashd_log_breaker_open",
        "flashd_worker_ring_depth",
        "flashd_sink_lag_records",
        "flashd_activity_remaining",
    ] {
        assert!(exprs.contains(metric), "no panel reads {metric}");
    }
}

#[test]
fn the_name_check_catches_a_metric_that_does_not_exist() {
    let exposed = exposed();
    let wanted = names("rate(flashd_orders_created_total[1m]) + flashd_log_commit_seconds_bucket + flashd_no_such_metric");
    assert_eq!(
        unknown(&wanted, &exposed),
        vec!["flashd_no_such_metric".to_string()]
    );
}
