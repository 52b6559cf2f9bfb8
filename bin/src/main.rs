//! flashd: the flash-sale order server binary.
//!
//! This crate owns the process: the CLI, the configuration file, secrets,
//! logging, signals, systemd notification and the watchdog, and the wiring
//! of reactors, worker pool and engine. It is the only place where errors
//! become exit codes: 0 for a clean stop, 2 for a configuration the
//! operator must fix, 1 for anything else.

mod api;
mod app;
mod auth;
mod config;
mod exec;
mod metrics;
mod routes;
mod secrets;
mod sys;

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

use crate::config::Config;

// jemalloc: fewer page faults and less fragmentation than glibc malloc under
// many threads allocating and freeing buffers of mixed sizes.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for a configuration the operator has to fix.
const EXIT_CONFIG: u8 = 2;

/// How often the main thread checks the reactors when systemd asks for no
/// watchdog (it still logs a stalled reactor).
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

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
    engine: &Arc<flashd_engine::Engine>,
    completer: flashd_reactor::Completer<exec::Outcome>,
    events: &Arc<AtomicU64>,
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
    let engine = engine.clone();
    let events = events.clone();
    let pool = Pool::start(
        cfg.workers.count as usize,
        cfg.workers.ring_capacity as usize,
        cfg.workers.batch_max as usize,
        cores,
        move |_| {
            let engine = engine.clone();
            let completer = completer.clone();
            let events = events.clone();
            let mut woken = vec![false; reactors];
            move |batch: &mut Vec<exec::Job>| {
                // One clock read per batch, one wake-up per reactor per batch.
                let now = exec::now_ms();
                let mut sink = app::CountingSink(&events, 0);
                for job in batch.drain(..) {
                    let out = exec::execute(&engine, &job.cmd, now, &mut sink);
                    woken[job.ticket.reactor()] = true;
                    completer.push(job.ticket, out);
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

fn serve(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    match sys::raise_nofile_limit() {
        Ok(n) if n < cfg.server.max_connections + 64 => tracing::warn!(
            nofile = n,
            max_connections = cfg.server.max_connections,
            "open-file limit is below server.max_connections; raise LimitNOFILE"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let rcfg = cfg.reactor_config();
    let secrets = secrets::resolve(&cfg)?;
    let engine = Arc::new(flashd_engine::Engine::new(cfg.engine_config()));
    let server = flashd_reactor::Server::<exec::Outcome>::bind(rcfg.clone())
        .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    let stats = server.stats();
    let local = server.local_addr();
    let events = Arc::new(AtomicU64::new(0));
    let pool = start_workers(
        &cfg,
        rcfg.sub_reactors,
        &engine,
        server.completer(),
        &events,
    )?;

    let shared = Arc::new(app::Shared {
        engine: engine.clone(),
        auth: auth::Auth::new(&secrets.jwt_secret, &secrets.admin_token),
        limits: app::RateLimits::new(&cfg.rate_limit),
        stats: stats.clone(),
        app: (0..rcfg.sub_reactors).map(|_| Default::default()).collect(),
        events: events.clone(),
        workers: pool.as_ref().map(|p| p.dispatcher(0)),
    });
    let app_shared = shared.clone();
    let handle = server
        .start(move |i| app::App::new(app_shared.clone(), i))
        .context("cannot start reactors")?;

    // Unpaid orders past their deadline go back on sale.
    let sweeping = Arc::new(AtomicBool::new(true));
    let sweeper = {
        let engine = engine.clone();
        let sweeping = sweeping.clone();
        let events = events.clone();
        let every = Duration::from_millis(cfg.engine.expiry_sweep_ms);
        std::thread::Builder::new()
            .name("flashd-sweeper".into())
            .spawn(move || {
                while sweeping.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    let mut sink = app::CountingSink(&events, 0);
                    let n = engine.expire_due(exec::now_ms(), &mut sink);
                    if n > 0 {
                        tracing::debug!(cancelled = n, "unpaid orders timed out");
                    }
                }
            })?
    };

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
    tracing::info!(
        listen = %local,
        sub_reactors = rcfg.sub_reactors,
        pin_cpus = rcfg.pin_cpus,
        workers = cfg.workers.count,
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
        if stalled.is_empty() {
            if watchdog {
                notify(&[NotifyState::Watchdog]);
            }
        } else {
            tracing::error!(
                ?stalled,
                "reactor(s) stopped turning; withholding watchdog ping"
            );
        }
    }
    notify(&[NotifyState::Stopping]);
    handle.shutdown();
    let t0 = Instant::now();
    handle.join().map_err(anyhow::Error::msg)?;
    // Reactors are gone, so no job can arrive: workers finish what is
    // queued and stop.
    if let Some(p) = pool {
        p.stop();
    }
    sweeping.store(false, Ordering::Relaxed);
    let _ = sweeper.join();
    tracing::info!(
        drained_in_ms = t0.elapsed().as_millis() as u64,
        grace_ms = rcfg.shutdown_grace.as_millis() as u64,
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
