//! flashd: the flash-sale order server binary.
//!
//! This crate owns the process: the CLI, the configuration file, secrets,
//! logging, signals, systemd notification and the watchdog, and the wiring
//! of reactors, worker pool and engine. It is the only place where errors
//! become exit codes: 0 for a clean stop, 2 for a configuration the
//! operator must fix, 1 for anything else.

use flashd::{app, auth, config, exec, metrics, secrets, sys};

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use flashd::config::Config;

// jemalloc: fewer page faults and less fragmentation than glibc malloc under
// many threads allocating and freeing buffers of mixed sizes.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for a configuration the operator has to fix.
const EXIT_CONFIG: u8 = 2;

/// How often the main thread checks the reactors when systemd asks for no
/// watchdog (it still logs a stalled reactor).
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Without a systemd watchdog: a worker batch or a log commit running
/// longer than this is logged as wedged.
const WEDGED_AFTER: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(name = "flashd", version, about = "Flash-sale order server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        /// Configuration file (TOML). Without it, every key has its default.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Create the databases and tables on every MySQL shard (and the Kafka
    /// topic when log.backend = "kafka"). Idempotent.
    Migrate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Project the Kafka topic into the MySQL shards (a consumer group
    /// member; run several for more throughput). Stops on SIGTERM/SIGINT.
    Sink {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file: exit 0 if valid, else print every error
    /// with its key path and exit 2.
    CheckConfig { path: PathBuf },
    /// Print a bearer token for a user, signed with the server's key
    /// (auth.jwt_secret, or the one generated in server.data_dir).
    Token {
        #[arg(long)]
        user: u64,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
        /// Print tokens for COUNT users from --user on, one per line (load
        /// tests: users of equal digit count give lines of equal length).
        #[arg(long, default_value_t = 1)]
        count: u64,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    match path
        .map(Config::load)
        .unwrap_or_else(|| Ok(Config::default()))
    {
        Ok(c) => Ok(c),
        Err(errs) => Err(config_errors(&errs)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { path } => match Config::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(errs) => config_errors(&errs),
        },
        Cmd::Token {
            user,
            ttl_s,
            count,
            config,
        } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&cfg);
            if user == 0 {
                eprintln!("--user: must be > 0");
                return ExitCode::from(EXIT_CONFIG);
            }
            match secrets::resolve(&cfg) {
                Ok(s) => {
                    let now_s = exec::now_ms() / 1000;
                    let auth = auth::Auth::new(&s.jwt_secret, &s.admin_token);
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    for u in user..user.saturating_add(count) {
                        if writeln!(out, "{}", auth.issue(u, now_s, ttl_s)).is_err() {
                            return ExitCode::FAILURE;
                        }
                    }
                    if out.flush().is_err() {
                        return ExitCode::FAILURE;
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flashd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Migrate { config } => {
            let cfg = match load(Some(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&cfg);
            report(migrate(&cfg))
        }
        Cmd::Sink { config } => {
            let cfg = match load(Some(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&cfg);
            report(run_sink(&cfg))
        }
        Cmd::Serve { config } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&cfg);
            match serve(cfg, config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("flashd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("flashd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn migrate(cfg: &Config) -> anyhow::Result<()> {
    if cfg.log.backend == config::LogBackend::Kafka {
        let created = flashd_kafka::ensure_topic(&cfg.kafka_config(), cfg.log.kafka.partitions)?;
        println!(
            "topic {}: {}",
            cfg.log.kafka.topic,
            if created { "created" } else { "exists" }
        );
    }
    let shards: Vec<String> = cfg.mysql.shards.iter().map(|s| s.url.clone()).collect();
    if shards.is_empty() {
        anyhow::ensure!(
            cfg.log.backend == config::LogBackend::Kafka,
            "mysql.shards: no shards configured"
        );
        return Ok(());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(flashd_sink::migrate(&shards))?;
    for (i, s) in cfg.mysql.shards.iter().enumerate() {
        println!("shard {i}: {} ok", redact(&s.url));
    }
    Ok(())
}

/// A URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(a), Some(b)) if b > a => {
            let creds = &url[a + 3..b];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..a + 3], &creds[..c], &url[b..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn run_sink(cfg: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        !cfg.mysql.shards.is_empty(),
        "mysql.shards: no shards configured"
    );
    let sink = flashd_sink::Sink::start(cfg.sink_config())?;
    let mut metrics_thread = None;
    if !cfg.sink.metrics_listen.is_empty() {
        let l = std::net::TcpListener::bind(&cfg.sink.metrics_listen)
            .with_context(|| format!("sink.metrics_listen {}", cfg.sink.metrics_listen))?;
        let stats = sink.stats.clone();
        metrics_thread = Some(
            std::thread::Builder::new()
                .name("flashd-sink-metrics".into())
                .spawn(move || metrics::serve_sink_metrics(l, stats))?,
        );
    }
    tracing::info!(
        topic = %cfg.log.kafka.topic,
        group = %cfg.sink.group,
        shards = cfg.mysql.shards.len(),
        "sink running"
    );
    notify(&[NotifyState::Ready]);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let sig = signals.forever().next();
    tracing::info!(signal = ?sig, "sink stopping");
    sink.stop();
    drop(metrics_thread);
    Ok(())
}

fn config_errors(errs: &[config::ConfigError]) -> ExitCode {
    for e in errs {
        eprintln!("{e}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn init_logging(cfg: &Config) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.logging.level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

type Pool = flashd_reactor::WorkerPool<exec::Job>;

/// Start `workers.count` engine workers; `None` runs the engine inline.
fn start_workers(
    cfg: &Config,
    reactors: usize,
    core: &Arc<exec::Core>,
    completer: flashd_reactor::Completer<exec::Outcome>,
) -> anyhow::Result<Option<Pool>> {
    if cfg.workers.count == 0 {
        return Ok(None);
    }
    let cores = if cfg.workers.pin_cpus {
        // The CPUs after the reactors' ones, wrapping around.
        let all = core_affinity::get_core_ids().unwrap_or_default();
        (0..all.len())
            .map(|i| all[(reactors + i) % all.len()])
            .collect()
    } else {
        Vec::new()
    };
    let core = core.clone();
    let pool = Pool::start(
        cfg.workers.count,
        cfg.workers.ring_capacity,
        cfg.workers.batch_max,
        cores,
        move |_| {
            let core = core.clone();
            let completer = completer.clone();
            let mut woken = vec![false; reactors];
            move |batch: &mut Vec<exec::Job>| {
                // One clock read per batch, one wake-up per reactor per batch.
                let now = exec::now_ms();
                for job in batch.drain(..) {
                    if let exec::Step::Now(out) = core.run(&job.cmd, now, job.ticket) {
                        woken[job.ticket.reactor()] = true;
                        completer.push(job.ticket, out);
                    }
                }
                for (r, w) in woken.iter_mut().enumerate() {
                    if std::mem::take(w) {
                        completer.wake(r);
                    }
                }
            }
        },
    )
    .context("cannot start workers")?;
    Ok(Some(pool))
}

/// The durable path, once recovery has rebuilt the engine.
struct Durable {
    writer: flashd_log::LogWriter<exec::Pending>,
    /// File backend only (see the README: Kafka state is rebuilt from the
    /// topic).
    snapshotter: Option<flashd_log::Snapshotter>,
    /// `sink.embedded`.
    sink: Option<flashd_sink::Sink>,
}

/// Rebuild the engine from the newest snapshot and the log after it, then
/// open the log for appending and start its writer and snapshotter.
fn recover(
    cfg: &Config,
    core: &exec::Core,
    completer: flashd_reactor::Completer<exec::Outcome>,
    reactors: usize,
    shared: &app::Shared,
) -> anyhow::Result<Durable> {
    use flashd_log as st;
    if cfg.log.backend == config::LogBackend::Kafka {
        return recover_kafka(cfg, core, completer, reactors, shared);
    }
    let dir = cfg.log.dir(&cfg.server.data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating log.dir {}", dir.display()))?;
    let t0 = Instant::now();
    let snapshot = st::latest_verified_snapshot(&dir).context("reading snapshots")?;
    let read_ms = t0.elapsed().as_millis() as u64;
    let mut from = 0;
    let mut snapshot_path = None;
    if let Some(v) = snapshot {
        let (path, orders) = (v.path.clone(), v.orders);
        from = v
            .load_into(&core.engine)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        tracing::info!(path = %path.display(), lsn = from, orders, "loaded snapshot");
        snapshot_path = Some(path);
    }
    let policy = st::OnCorruption::from(cfg.log.on_corruption);
    let loaded_ms = t0.elapsed().as_millis() as u64;
    let engine = core.engine.clone();
    // Replayed in chunks on every core (`Engine::apply_batch`); a chunk
    // bounds the memory a full replay of a long log holds at once.
    const CHUNK: usize = 1 << 18;
    let mut chunk: Vec<(u64, flashd_engine::Event)> = Vec::with_capacity(CHUNK);
    let apply_chunk = |chunk: &mut Vec<(u64, flashd_engine::Event)>| -> Result<(), String> {
        let r = engine
            .apply_batch(chunk)
            .map_err(|(lsn, e)| format!("event {lsn}: {e}"));
        chunk.clear();
        r
    };
    let rec = st::recover(&dir, from, policy, &mut |lsn, ev| {
        chunk.push((lsn, ev));
        if chunk.len() == CHUNK {
            apply_chunk(&mut chunk)?;
        }
        Ok(())
    })
    .and_then(|rec| {
        apply_chunk(&mut chunk).map_err(|why| st::LogError::Replay {
            lsn: rec.next_lsn,
            why,
        })?;
        Ok(rec)
    })
    .map_err(|e| {
        anyhow::anyhow!("recovery refused: {e}\n(if losing everything from the damage on is acceptable, set log.on_corruption = \"truncate\")")
    })?;
    for (path, offset, dropped) in &rec.truncated {
        tracing::warn!(path = %path.display(), offset, dropped_bytes = dropped, "truncated the log at recovery");
    }
    let replayed_ms = t0.elapsed().as_millis() as u64;
    if let Err(e) = core.engine.check_invariants() {
        anyhow::bail!("recovered state breaks an invariant: {e}");
    }
    let recovery_ms = t0.elapsed().as_millis() as u64;
    tracing::info!(
        snapshot_read_ms = read_ms,
        snapshot_load_ms = loaded_ms - read_ms,
        replay_ms = replayed_ms - loaded_ms,
        check_ms = recovery_ms - replayed_ms,
        snapshot_lsn = from,
        replayed = rec.replayed,
        next_lsn = rec.next_lsn,
        ms = recovery_ms,
        "recovery done"
    );

    let log = st::FileLog::open(
        st::FileLogConfig {
            dir: dir.clone(),
            segment_bytes: cfg.log.segment_bytes,
            fsync: cfg.log.fsync,
        },
        rec.tail,
        rec.next_lsn,
    )?;
    let writer = start_writer(
        cfg,
        Box::new(log),
        core,
        completer,
        reactors,
        Duration::from_millis(cfg.log.unavailable_ms),
    )?;
    let snapshotter = st::Snapshotter::start(
        st::SnapshotterConfig {
            dir,
            every_events: cfg.log.snapshot_every_events,
            keep: 2,
            retain_segments: cfg.log.retain_segments,
            fsync: cfg.log.fsync,
            poll: Duration::from_millis(200),
        },
        cfg.engine_config(),
        snapshot_path.map(|p| (from, p)),
        writer.committed_lsn.clone(),
    )?;
    let _ = shared.log.set(app::LogView {
        stats: writer.stats.clone(),
        committed_lsn: writer.committed_lsn.clone(),
        snapshot_lsn: snapshotter.last_snapshot_lsn.clone(),
        snapshot_apply_failures: snapshotter.apply_failures.clone(),
        snapshot_stalled_lsn: snapshotter.stalled_lsn.clone(),
        snapshot_errors: snapshotter.errors.clone(),
        recovery_ms,
        recovered_events: rec.replayed,
        depth: writer.handle(),
        backend: "file",
        sink: None,
    });
    Ok(Durable {
        writer,
        snapshotter: Some(snapshotter),
        sink: None,
    })
}

fn start_writer(
    cfg: &Config,
    log: Box<dyn flashd_log::OrderLog>,
    core: &exec::Core,
    completer: flashd_reactor::Completer<exec::Outcome>,
    reactors: usize,
    unavailable: Duration,
) -> anyhow::Result<flashd_log::LogWriter<exec::Pending>> {
    use flashd_log as st;
    Ok(st::LogWriter::start(
        log,
        core.engine.clone(),
        exec::Completions {
            completer,
            woken: vec![false; reactors],
        },
        st::WriterConfig {
            ring_capacity: cfg.log.ring_capacity,
            batch_max: cfg.log.batch_max,
            unavailable,
            ack: st::Ack::from(cfg.log.ack),
            flush_interval: Duration::from_millis(cfg.log.flush_interval_ms),
            commit_interval: Duration::from_micros(cfg.log.commit_interval_us),
        },
        exec::now_ms,
    )?)
}

/// The Kafka backend: rebuild the engine from the whole topic (merged by
/// LSN; abort records undo what a failed delivery left behind), then
/// produce to it.
fn recover_kafka(
    cfg: &Config,
    core: &exec::Core,
    completer: flashd_reactor::Completer<exec::Outcome>,
    reactors: usize,
    shared: &app::Shared,
) -> anyhow::Result<Durable> {
    use flashd_kafka as kafka;
    let kcfg = cfg.kafka_config();
    let t0 = Instant::now();
    if kafka::ensure_topic(&kcfg, cfg.log.kafka.partitions)
        .with_context(|| format!("kafka brokers {}", kcfg.brokers))?
    {
        tracing::info!(topic = %kcfg.topic, partitions = cfg.log.kafka.partitions, "created the topic");
    }
    let engine = core.engine.clone();
    let rec = kafka::recover_topic(&kcfg, &mut |_, r| match r {
        kafka::LogRecord::Event(ev) => engine.apply(&ev).map_err(|e| e.to_string()),
        kafka::LogRecord::Abort(evs) => {
            for ev in evs.iter().rev() {
                engine.revert_replayed(ev);
            }
            Ok(())
        }
    })
    .map_err(|e| anyhow::anyhow!("recovery from kafka topic {} refused: {e}", kcfg.topic))?;
    if let Err(e) = core.engine.check_invariants() {
        anyhow::bail!("recovered state breaks an invariant: {e}");
    }
    let recovery_ms = t0.elapsed().as_millis() as u64;
    tracing::info!(
        topic = %kcfg.topic,
        events = rec.events,
        aborts = rec.aborts,
        voided = rec.voided,
        late = rec.late,
        late_unvoided = rec.late_unvoided,
        peak_buffered = rec.peak_buffered,
        per_partition = ?rec.partitions,
        next_lsn = rec.next_lsn,
        ms = recovery_ms,
        "recovery from kafka done"
    );
    let log = kafka::KafkaLog::open(kcfg.clone(), rec.next_lsn)?;
    let writer = start_writer(cfg, Box::new(log), core, completer, reactors, kcfg.timeout)?;
    let sink = if cfg.sink.embedded {
        Some(flashd_sink::Sink::start(cfg.sink_config())?)
    } else {
        None
    };
    let _ = shared.log.set(app::LogView {
        stats: writer.stats.clone(),
        committed_lsn: writer.committed_lsn.clone(),
        snapshot_lsn: Arc::new(AtomicU64::new(0)),
        snapshot_apply_failures: Arc::new(AtomicU64::new(0)),
        snapshot_stalled_lsn: Arc::new(AtomicU64::new(flashd_log::NOT_STALLED)),
        snapshot_errors: Arc::new(AtomicU64::new(0)),
        recovery_ms,
        recovered_events: rec.events,
        depth: writer.handle(),
        backend: "kafka",
        sink: sink.as_ref().map(|s| s.stats.clone()),
    });
    Ok(Durable {
        writer,
        snapshotter: None,
        sink,
    })
}

fn serve(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    match sys::raise_nofile_limit() {
        Ok(n) if n < cfg.nofile_wanted() => tracing::warn!(
            nofile = n,
            max_connections = cfg.server.max_connections,
            "open-file limit is below server.max_connections; raise LimitNOFILE"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let rcfg = cfg.reactor_config();
    // One process per data directory (and log directory): a second flashd
    // on them would interleave and cut each other's files. Held until the
    // process exits.
    let mut dirs = vec![PathBuf::from(&cfg.server.data_dir)];
    if cfg.log.backend == config::LogBackend::File {
        dirs.push(cfg.log.dir(&cfg.server.data_dir));
    }
    let dirs: Vec<&std::path::Path> = dirs.iter().map(PathBuf::as_path).collect();
    let _dir_locks = flashd_log::DirLock::acquire_all(&dirs)?;
    let secrets = secrets::resolve(&cfg)?;
    let engine = Arc::new(flashd_engine::Engine::new(cfg.engine_config()));
    let server = flashd_reactor::Server::<exec::Outcome>::bind(rcfg.clone())
        .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    let stats = server.stats();
    let local = server.local_addr();
    let events = Arc::new(AtomicU64::new(0));
    let core = Arc::new(exec::Core {
        engine: engine.clone(),
        writer: std::sync::OnceLock::new(),
        ack: flashd_log::Ack::from(cfg.log.ack),
        events: events.clone(),
    });
    let pool = start_workers(&cfg, rcfg.sub_reactors, &core, server.completer())?;
    let completer = server.completer();

    let shared = Arc::new(app::Shared {
        core: core.clone(),
        engine: engine.clone(),
        ready: AtomicBool::new(false),
        log: std::sync::OnceLock::new(),
        auth: auth::Auth::new(&secrets.jwt_secret, &secrets.admin_token),
        limits: app::RateLimits::new(&cfg.rate_limit),
        stats: stats.clone(),
        app: (0..rcfg.sub_reactors).map(|_| Default::default()).collect(),
        events: events.clone(),
        workers: pool.as_ref().map(|p| p.dispatcher(0)),
    });
    let app_shared = shared.clone();
    // Reactors first: /healthz answers and /readyz says "recovering" while
    // the log is replayed.
    let handle = server
        .start(move |i| app::App::new(app_shared.clone(), i))
        .context("cannot start reactors")?;

    // Signals go to a channel so the main thread can also run the watchdog.
    let (sig_tx, sig_rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("flashd-signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if sig_tx.send(s).is_err() {
                    break;
                }
            }
        })?;

    let started = Instant::now();
    while !stats.all_running() {
        if started.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("reactors did not start within 10 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let durable = match recover(&cfg, &core, completer, rcfg.sub_reactors, &shared) {
        Ok(d) => d,
        Err(e) => {
            handle.shutdown();
            let _ = handle.join();
            return Err(e);
        }
    };
    let _ = core.writer.set(durable.writer.handle());
    // Orders whose payment deadline passed while we were down go first.
    let mut overdue = 0;
    loop {
        let n = core.expire(exec::now_ms());
        overdue += n;
        if n == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if overdue > 0 {
        // Their units go back on sale once the cancels are durable (never
        // before: see Engine::durable). Report ready only then, so that
        // the first reader after a restart sees the stock it will sell.
        let t0 = Instant::now();
        while core.engine.activities().any(|a| a.releasing() != 0) {
            if t0.elapsed() > Duration::from_secs(30) {
                tracing::warn!(
                    "cancels of overdue orders are not durable after 30 s; starting anyway"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        tracing::info!(
            cancelled = overdue,
            "unpaid orders whose deadline passed while flashd was down were cancelled"
        );
    }
    shared.ready.store(true, Ordering::Release);

    // Unpaid orders past their deadline go back on sale.
    let sweeping = Arc::new(AtomicBool::new(true));
    let sweeper = {
        let core = core.clone();
        let sweeping = sweeping.clone();
        let every = Duration::from_millis(cfg.engine.expiry_sweep_ms);
        std::thread::Builder::new()
            .name("flashd-sweeper".into())
            .spawn(move || {
                while sweeping.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    let n = core.expire(exec::now_ms());
                    if n > 0 {
                        tracing::debug!(cancelled = n, "unpaid orders timed out");
                    }
                }
            })?
    };

    tracing::info!(
        listen = %local,
        sub_reactors = rcfg.sub_reactors,
        pin_cpus = rcfg.pin_cpus,
        workers = cfg.workers.count,
        ack = %cfg.log.ack,
        version = env!("CARGO_PKG_VERSION"),
        "flashd ready"
    );
    notify(&[NotifyState::Ready]);

    // WATCHDOG=1 only while every reactor keeps turning: a wedged reactor
    // stops the pings and systemd restarts the service.
    let mut wd_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut wd_usec);
    let interval = if watchdog {
        Duration::from_micros(wd_usec / 2).max(Duration::from_millis(10))
    } else {
        LIVENESS_CHECK
    };
    // A worker batch or a log commit (or the undo of a failed one) that
    // runs longer than WatchdogSec is wedged by the operator's own measure
    // of how long flashd may stall; with Kafka, not before three delivery
    // timeouts (a produce legitimately waits one, a rollback two more).
    // Without a watchdog the same check only logs, after WEDGED_AFTER.
    let mut wedged_after = if watchdog {
        Duration::from_micros(wd_usec)
    } else {
        WEDGED_AFTER
    };
    if cfg.log.backend == config::LogBackend::Kafka {
        wedged_after = wedged_after.max(Duration::from_millis(cfg.log.kafka.unavailable_ms) * 3);
    }
    let mut last_turns: Vec<u64> = stats.reactors.iter().map(|r| r.turns.get()).collect();
    loop {
        match sig_rx.recv_timeout(interval) {
            Ok(SIGHUP) => reload(config_path.as_deref(), &shared),
            Ok(sig) => {
                tracing::info!(
                    signal = sig,
                    "stopping: no new connections, finishing in-flight requests"
                );
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let turns: Vec<u64> = stats.reactors.iter().map(|r| r.turns.get()).collect();
        let stalled: Vec<usize> = (0..turns.len())
            .filter(|&i| turns[i] == last_turns[i])
            .collect();
        last_turns = turns;
        let wedged_workers = pool
            .as_ref()
            .map(|p| p.wedged(wedged_after))
            .unwrap_or_default();
        let writer_busy_ms = match durable.writer.stats.busy_since_ms.load(Ordering::Acquire) {
            0 => 0,
            since => exec::now_ms().saturating_sub(since),
        };
        let writer_wedged = Duration::from_millis(writer_busy_ms) > wedged_after;
        if stalled.is_empty() && wedged_workers.is_empty() && !writer_wedged {
            if watchdog {
                notify(&[NotifyState::Watchdog]);
            }
        } else {
            tracing::error!(
                stalled_reactors = ?stalled,
                ?wedged_workers,
                writer_busy_ms,
                "part of flashd stopped making progress; withholding the watchdog ping"
            );
        }
    }
    notify(&[NotifyState::Stopping]);
    handle.shutdown();
    let t0 = Instant::now();
    handle.join().map_err(anyhow::Error::msg)?;
    // Reactors are gone, so no job can arrive: workers finish what is
    // queued, the sweeper stops, the log writes and syncs the rest, and the
    // snapshotter takes a final snapshot so the next start replays nothing.
    if let Some(p) = pool {
        p.stop();
    }
    sweeping.store(false, Ordering::Relaxed);
    let _ = sweeper.join();
    durable.writer.stop();
    if let Some(s) = durable.snapshotter {
        s.stop();
    }
    if let Some(s) = durable.sink {
        s.stop();
    }
    tracing::info!(
        drained_in_ms = t0.elapsed().as_millis() as u64,
        grace_ms = cfg.server.shutdown_grace_ms,
        "flashd stopped"
    );
    Ok(())
}

/// SIGHUP: re-read the config file and apply what can change live.
fn reload(path: Option<&std::path::Path>, shared: &app::Shared) {
    match path.map(Config::load) {
        Some(Ok(new)) => {
            shared.limits.set(&new.rate_limit);
            tracing::info!(rate_limit = ?new.rate_limit, "SIGHUP: rate limits reloaded (other keys need a restart)");
        }
        Some(Err(errs)) => {
            let errs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            tracing::error!(?errs, "SIGHUP: config invalid, nothing changed");
        }
        None => tracing::info!("SIGHUP: no config file to reload"),
    }
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
