//! Every config key is range-checked before anything starts: bad files are refused by key path with exit 2 by both `check-config` and `serve` (run as the real binary, never panicking), and every integer key's range and every enumerated key's values are walked in-process from the documented file.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, Flashd, TempDir};
use flashd::config::Config;

/// (config snippet, the error line it must produce: key path first).
/// Every class of key: integers out of range or out of their type, each
/// relation the constructors downstream assert, enums, addresses,
/// secrets, names.
const BAD: &[(&str, &str)] = &[
    // Used to pass check-config and abort serve (assert in Engine::new).
    (
        "[engine]\nnode_id = 2000\n",
        "engine.node_id: must be between 0 and 1023, got 2000",
    ),
    (
        "[engine]\nnode_id = 1024\n",
        "engine.node_id: must be between 0 and 1023, got 1024",
    ),
    // Used to be truncated to 4464 (70000 as u16).
    (
        "[engine]\nnode_id = 70000\n",
        "engine.node_id: must be between 0 and 1023, got 70000",
    ),
    (
        "[engine]\nnode_id = -1\n",
        "engine.node_id: must be between 0 and 1023, got -1",
    ),
    ("[engine]\nnode_id = 1.5\n", "engine.node_id: invalid type"),
    (
        "[engine]\norder_ttl_ms = 0\n",
        "engine.order_ttl_ms: must be > 0",
    ),
    (
        "[engine]\nmax_activities = 0\n",
        "engine.max_activities: must be > 0",
    ),
    // Used to be truncated to 705032704 slots (as u32).
    (
        "[engine]\nmax_activities = 5000000000\n",
        "engine.max_activities: must be between 1 and 1048576, got 5000000000",
    ),
    (
        "[engine]\nexpiry_sweep_ms = 0\n",
        "engine.expiry_sweep_ms: must be > 0",
    ),
    // Used to pass check-config and abort serve (ArrayQueue::new(0)).
    (
        "[log]\nring_capacity = 0\n",
        "log.ring_capacity: must be between 1024 and 16777216, got 0",
    ),
    // Smaller than what the expiry sweeper reserves: nothing would expire.
    (
        "[log]\nring_capacity = 1000\nbatch_max = 10\n",
        "log.ring_capacity: must be between 1024 and 16777216, got 1000",
    ),
    // Zero: the writer would take nothing from its ring, for ever.
    ("[log]\nbatch_max = 0\n", "log.batch_max: must be > 0"),
    (
        "[log]\nring_capacity = 2048\nbatch_max = 4096\n",
        "log.batch_max: must be at most log.ring_capacity (2048), got 4096",
    ),
    (
        "[log]\nsegment_bytes = 100\n",
        "log.segment_bytes: must be between 1048576",
    ),
    (
        "[log]\nsnapshot_every_events = 0\n",
        "log.snapshot_every_events: must be > 0",
    ),
    (
        "[log]\nretain_segments = -1\n",
        "log.retain_segments: must be between 0 and 10000, got -1",
    ),
    (
        "[log]\nunavailable_ms = 0\n",
        "log.unavailable_ms: must be > 0",
    ),
    (
        "[log]\nflush_interval_ms = 70000\n",
        "log.flush_interval_ms: must be between 0 and 60000, got 70000",
    ),
    (
        "[log]\ncommit_interval_us = 200000\n",
        "log.commit_interval_us: must be between 0 and 100000, got 200000",
    ),
    (
        "[log]\nbackend = \"kafak\"\n",
        "log.backend: unknown variant `kafak`, expected `file` or `kafka`",
    ),
    (
        "[log]\nack = \"fast\"\n",
        "log.ack: unknown variant `fast`, expected `durable` or `ledger`",
    ),
    (
        "[log]\non_corruption = \"ignore\"\n",
        "log.on_corruption: unknown variant `ignore`, expected `refuse` or `truncate`",
    ),
    ("[log]\nbackend = 1\n", "log.backend: wanted string"),
    (
        "[log.kafka]\npartitions = 0\n",
        "log.kafka.partitions: must be > 0",
    ),
    // Used to be truncated (as i32) to a negative partition count.
    (
        "[log.kafka]\npartitions = 3000000000\n",
        "log.kafka.partitions: must be between 1 and 10000, got 3000000000",
    ),
    (
        "[log.kafka]\nunavailable_ms = 0\n",
        "log.kafka.unavailable_ms: must be > 0",
    ),
    (
        "[log]\nbackend = \"kafka\"\n[log.kafka]\ntopic = \"orders here\"\n",
        "log.kafka.topic: not a Kafka topic name",
    ),
    (
        "[log]\nbackend = \"kafka\"\n[log.kafka]\nunavailable_ms = 20000\n",
        "server.request_timeout_ms: must exceed log.kafka.unavailable_ms (20000)",
    ),
    ("[server]\nbacklog = 0\n", "server.backlog: must be > 0"),
    (
        "[server]\nbacklog = 3000000000\n",
        "server.backlog: must be between 1 and 65535, got 3000000000",
    ),
    (
        "[server]\nmax_connections = 0\n",
        "server.max_connections: must be > 0",
    ),
    (
        "[server]\nheader_timeout_ms = 0\n",
        "server.header_timeout_ms: must be > 0",
    ),
    (
        "[server]\nrequest_timeout_ms = 0\n",
        "server.request_timeout_ms: must be > 0",
    ),
    (
        "[server]\nrequest_timeout_ms = 3600001\n",
        "server.request_timeout_ms: must be between 1 and 3600000, got 3600001",
    ),
    (
        "[server]\nmax_header_bytes = 100\n",
        "server.max_header_bytes: must be between 512 and 1048576, got 100",
    ),
    (
        "[server]\nmax_body_bytes = 0\n",
        "server.max_body_bytes: must be > 0",
    ),
    (
        "[server]\nshutdown_grace_ms = 700000\n",
        "server.shutdown_grace_ms: must be between 0 and 600000, got 700000",
    ),
    (
        "[server]\nlisten = \"nowhere\"\n",
        "server.listen: not an IP:port address: \"nowhere\"",
    ),
    (
        "[server]\ndata_dir = \"\"\n",
        "server.data_dir: must not be empty",
    ),
    (
        "[reactor]\nsub_reactors = 5000\n",
        "reactor.sub_reactors: must be between 0 and 1024, got 5000",
    ),
    (
        "[reactor]\ncompletion_ring = 0\n",
        "reactor.completion_ring: must be > 0",
    ),
    // Used to abort serve (assert in WorkerPool::start).
    (
        "[workers]\ncount = 1\nring_capacity = 0\nbatch_max = 1\n",
        "workers.ring_capacity: must be > 0",
    ),
    (
        "[workers]\ncount = 1\nbatch_max = 0\n",
        "workers.batch_max: must be > 0",
    ),
    (
        "[workers]\nring_capacity = 64\nbatch_max = 65\n",
        "workers.batch_max: must be at most workers.ring_capacity (64), got 65",
    ),
    (
        "[workers]\ncount = 5000\n",
        "workers.count: must be between 0 and 1024, got 5000",
    ),
    (
        "[rate_limit]\nper_user_rps = 20000000\n",
        "rate_limit.per_user_rps: must be between 0 and 10000000, got 20000000",
    ),
    (
        "[rate_limit]\nper_ip_burst = -5\n",
        "rate_limit.per_ip_burst: must be between 0 and 1000000, got -5",
    ),
    ("[sink]\nbatch_max = 0\n", "sink.batch_max: must be > 0"),
    (
        "[sink]\nbatch_wait_ms = 20000\n",
        "sink.batch_wait_ms: must be between 0 and 10000, got 20000",
    ),
    ("[sink]\ngroup = \"\"\n", "sink.group: must not be empty"),
    (
        "[sink]\nmetrics_listen = \"localhost\"\n",
        "sink.metrics_listen: not an IP:port address",
    ),
    (
        "[logging]\nlevel = \"info,[\"\n",
        "logging.level: not a log filter",
    ),
    // Secrets: held to the minimum a generated one is held to; the value
    // is never echoed.
    (
        "[auth]\njwt_secret = \"hunter2\"\n",
        "auth.jwt_secret: must be at least 16 bytes",
    ),
    (
        "[auth]\nadmin_token = \"hunter2\"\n",
        "auth.admin_token: must be at least 16 bytes",
    ),
    (
        "[auth]\nadmin_token = \"hunter2 hunter2 hunter2\"\n",
        "auth.admin_token: must be visible ASCII",
    ),
    ("[server]\nbogus = 1\n", "server.bogus: unknown key"),
];

/// Merge `snippet` over a config that listens on an ephemeral port and
/// keeps its data in `dir`, so a config that wrongly passed would start a
/// harmless server (which the test then kills and reports).
fn write_config(dir: &TempDir, snippet: &str) -> std::path::PathBuf {
    let mut t: toml::Table = snippet.parse().expect(snippet);
    let server = t
        .entry("server")
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .unwrap();
    server
        .entry("listen")
        .or_insert_with(|| "127.0.0.1:0".into());
    let data = dir.path().join("data");
    server
        .entry("data_dir")
        .or_insert_with(|| data.to_str().unwrap().into());
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, toml::to_string(&t).unwrap()).unwrap();
    p
}

/// Run flashd with `args`; kill it after `limit` (a config that wrongly
/// passes starts a server that would never exit).
fn run(args: &[&str], limit: Duration) -> (Option<i32>, String, bool) {
    let mut child = Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut killed = false;
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        killed,
    )
}

#[test]
fn bad_configs_are_refused_by_key_with_exit_2_by_check_config_and_serve() {
    let mut failures = Vec::new();
    for (snippet, want) in BAD {
        let d = TempDir::new("badcfg");
        let p = write_config(&d, snippet);
        let p = p.to_str().unwrap();
        for args in [vec!["check-config", p], vec!["serve", "--config", p]] {
            let (code, err, killed) = run(&args, Duration::from_secs(20));
            let ok = code == Some(2)
                && err.contains(want)
                && !err.contains("panicked")
                && !err.contains("hunter2")
                && !killed;
            if !ok {
                failures.push(format!(
                    "{args:?} with {snippet:?}: exit {code:?} (killed: {killed}), want {want:?} in\n{err}"
                ));
            }
        }
        // Nothing is created before the config is accepted.
        if d.path().join("data").exists() {
            failures.push(format!("{snippet:?}: serve created its data_dir"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// The values at the edges of what used to abort `serve` now start it:
/// the largest node id, the smallest log ring with a batch as large as
/// it, one worker with a ring of one.
#[test]
fn serve_starts_at_the_edges_of_every_relation() {
    let f = Flashd::start(
        "[engine]\nnode_id = 1023\nmax_activities = 1\n[log]\nring_capacity = 1024\nbatch_max = 1024\n[workers]\ncount = 1\nring_capacity = 1\nbatch_max = 1\n[reactor]\nsub_reactors = 1\npin_cpus = false\ncompletion_ring = 1\n",
    );
    let _ = f.stop();
}

/// The documented file (every key at its default) and the range table
/// agree: every integer key there has a range, every range names a key
/// there, and each range is enforced at both ends, in and out of the
/// key's integer type.
#[test]
fn every_integer_key_has_a_range_enforced_at_both_ends() {
    let text = include_str!("../../tuning/flashd.toml");
    let doc: toml::Table = text.parse().unwrap();
    let mut ints = Vec::new();
    fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Integer(_) => out.push(path),
                // librdkafka's own properties are strings passed through.
                toml::Value::Table(t) if path != "log.kafka.properties" => walk(&path, t, out),
                _ => {}
            }
        }
    }
    walk("", &doc, &mut ints);
    let bounds = Config::default().bounds();
    let mut ranged: Vec<String> = bounds.iter().map(|b| b.path.to_string()).collect();
    ints.sort();
    ranged.sort();
    assert_eq!(
        ints, ranged,
        "integer keys in tuning/flashd.toml vs keys with a range"
    );
    assert!(bounds.iter().all(|b| b.ok), "a default is out of its range");

    // `key = v` under its table, with ring sizes at their maximum so a
    // batch key's own range is tested apart from its relation.
    let snippet = |path: &str, v: i128| {
        let (table, key) = path.rsplit_once('.').unwrap();
        format!("[{table}]\n{key} = {v}\n")
    };
    let range_errors = |text: &str, path: &str| -> Vec<String> {
        match Config::parse(text) {
            Ok(_) => Vec::new(),
            Err(errs) => errs
                .into_iter()
                .filter(|e| e.path == path)
                .map(|e| e.message)
                .filter(|m| m.starts_with("must be between") || m == "must be > 0")
                .collect(),
        }
    };
    for b in &bounds {
        let (lo, hi) = (b.lo, b.hi);
        for v in [lo, hi] {
            let e = range_errors(&snippet(b.path, v), b.path);
            assert!(e.is_empty(), "{} = {v} is in range: {e:?}", b.path);
        }
        for v in [lo - 1, hi + 1, i128::from(i64::MAX)] {
            let text = snippet(b.path, v);
            let e = range_errors(&text, b.path);
            let want = if lo == 1 && v == 0 {
                "must be > 0".to_string()
            } else {
                format!("must be between {lo} and {hi}, got {v}")
            };
            assert_eq!(e, [want], "{text}");
        }
    }
}

/// Enumerated keys are enums: each allowed value parses to its variant,
/// anything else is refused naming the key and listing the values.
#[test]
fn enumerated_keys_accept_exactly_their_values() {
    use flashd::config::{AckMode, CorruptionPolicy, LogBackend};
    let ok = |t: &str| Config::parse(t).unwrap_or_else(|e| panic!("{t}: {e:?}"));
    assert_eq!(
        ok("[log]\nbackend = \"kafka\"\n").log.backend,
        LogBackend::Kafka
    );
    assert_eq!(
        ok("[log]\nbackend = \"file\"\n").log.backend,
        LogBackend::File
    );
    assert_eq!(ok("[log]\nack = \"ledger\"\n").log.ack, AckMode::Ledger);
    assert_eq!(ok("[log]\nack = \"durable\"\n").log.ack, AckMode::Durable);
    assert_eq!(
        ok("[log]\non_corruption = \"truncate\"\n")
            .log
            .on_corruption,
        CorruptionPolicy::Truncate
    );
    assert_eq!(
        ok("[log]\non_corruption = \"refuse\"\n").log.on_corruption,
        CorruptionPolicy::Refuse
    );
    for (key, allowed) in [
        ("backend", "`file` or `kafka`"),
        ("ack", "`durable` or `ledger`"),
        ("on_corruption", "`refuse` or `truncate`"),
    ] {
        for v in ["", "Kafka", "FILE", "durable ", "x"] {
            let t = format!("[log]\n{key} = {v:?}\n");
            let e = Config::parse(&t).unwrap_err();
            assert_eq!(e.len(), 1, "{t}");
            assert_eq!(e[0].path, format!("log.{key}"), "{t}");
            // A value that is another key's variant is still refused here.
            assert!(e[0].message.ends_with(allowed), "{t}: {}", e[0]);
        }
    }
}

/// The new deadline for deferred requests is read, checked and handed to
/// the reactor.
#[test]
fn request_timeout_reaches_the_reactor() {
    let c = Config::parse("[server]\nrequest_timeout_ms = 2500\n").unwrap();
    assert_eq!(c.server.request_timeout_ms, 2500);
    assert_eq!(
        c.reactor_config().request_timeout,
        Duration::from_millis(2500)
    );
    assert_eq!(
        Config::default().reactor_config().request_timeout,
        Duration::from_secs(10)
    );
}

/// Secrets set in the config: the shortest accepted is the minimum a
/// stored one is held to; errors never include the value.
#[test]
fn configured_secrets_are_held_to_the_minimum() {
    let min = flashd::secrets::MIN_SECRET_BYTES;
    for key in ["jwt_secret", "admin_token"] {
        let short = "s".repeat(min - 1);
        let e = Config::parse(&format!("[auth]\n{key} = \"{short}\"\n")).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, format!("auth.{key}"));
        assert!(!e[0].to_string().contains(&short), "{}", e[0]);
        Config::parse(&format!("[auth]\n{key} = \"{}\"\n", "s".repeat(min))).unwrap();
    }
    // Not echoed by Debug either (SIGHUP and start-up log config sections).
    let c = Config::parse("[auth]\njwt_secret = \"0123456789abcdef-secret\"\n").unwrap();
    assert!(!format!("{c:?}").contains("0123456789abcdef-secret"));
}
