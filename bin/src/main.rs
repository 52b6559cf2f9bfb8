//! flashd: the flash-sale order server binary.
//!
//! This crate owns the process: the CLI, the configuration file, logging,
//! signals, systemd notification and the watchdog, and the wiring of the
//! reactor to the request handler. It is the only place where errors become
//! exit codes: 0 for a clean stop, 2 for a configuration the operator must
//! fix, 1 for anything else.

mod app;
mod config;
mod metrics;
mod routes;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
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
        Cmd::Serve { config } => {
            let cfg = match config
                .as_deref()
                .map(Config::load)
                .unwrap_or_else(|| Ok(Config::default()))
            {
                Ok(c) => c,
                Err(errs) => return config_errors(&errs),
            };
            init_logging(&cfg);
            match serve(cfg) {
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

fn serve(cfg: Config) -> anyhow::Result<()> {
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
    let server = flashd_reactor::Server::bind(rcfg.clone())
        .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    let stats = server.stats();
    let local = server.local_addr();
    let app_stats = stats.clone();
    let handle = server
        .start(move |_| app::App::new(app_stats.clone()))
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
    tracing::info!(
        listen = %local,
        sub_reactors = rcfg.sub_reactors,
        pin_cpus = rcfg.pin_cpus,
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
            Ok(SIGHUP) => {
                tracing::info!("SIGHUP: configuration reload has nothing live to change yet")
            }
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
    let grace = rcfg.shutdown_grace;
    let t0 = Instant::now();
    handle.join().map_err(anyhow::Error::msg)?;
    tracing::info!(
        drained_in_ms = t0.elapsed().as_millis() as u64,
        grace_ms = grace.as_millis() as u64,
        open = stats.open.load(Ordering::Relaxed),
        "flashd stopped"
    );
    Ok(())
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
