//! `flashd serve`: the wiring of one server. [`Service`] is the server
//! itself (reactors, worker pool, recovery, the durable path, the sweeper),
//! started and stopped in-process; [`run`] adds what a process needs around
//! it (open-file limit, signals, systemd notification, the watchdog).
//!
//! Start order: reactors first (so `/healthz` answers and `/readyz` says
//! "recovering" while the log is replayed), then recovery and the log, then
//! overdue orders are cancelled, then API requests are served. Stop order:
//! reactors (no new job can arrive), workers finish what is queued, the
//! sweeper stops, the log writes and syncs the rest, a final snapshot.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use flashd_log::DirLock;
use flashd_reactor::{ServerHandle, ServerStats};
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::app::{self, RateLimits, Shared};
use crate::auth::Auth;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, LogBackend};
use crate::durable::{Durable, DurableError};
use crate::exec::{Core, Outcome};
use crate::secrets::{self, SecretsError};
use crate::sweeper::{self, SweeperHandle};
use crate::sys;
use crate::watchdog::Watchdog;
use crate::workers::{self, Pool};

/// How long [`Service::start`] waits for every reactor to be running.
const REACTORS_START: Duration = Duration::from_secs(10);

/// Cluster mode: how long a starting node keeps asking Redis for the
/// sales' counters before it answers with its own count (it has just
/// checked Redis's durability and taken its lease, so Redis answers
/// unless it went away since; a node must not stay unready for that).
const MIRROR_SEED_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DirLock(flashd_log::LogError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start workers: {0}")]
    Workers(#[source] std::io::Error),
    #[error("cannot start reactors: {0}")]
    Reactors(#[source] std::io::Error),
    #[error("reactors did not start within 10 s")]
    ReactorsSlow,
    #[error(transparent)]
    Durable(#[from] DurableError),
    #[error("cannot start a thread ({what}): {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("reactors: {0}")]
    Join(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// One running flashd server.
pub struct Service {
    shared: Arc<Shared>,
    stats: Arc<ServerStats>,
    reactors: ServerHandle,
    local: SocketAddr,
    pool: Option<Pool>,
    durable: Durable,
    sweeper: SweeperHandle,
    shutdown_grace_ms: u64,
    /// Held until the service stops: one process per data directory (and
    /// log directory), or two would cut each other's files.
    _dir_locks: Vec<DirLock>,
    /// Cluster mode: this node's id lease, given up after everything else
    /// stopped (the sweeper renews it until then).
    _lease: Option<crate::cluster::start::Lease>,
}

impl Service {
    /// Start a server for `cfg`, with `clock` as its wall clock. Returns
    /// once recovery is done and API requests are served.
    pub fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Service, ServeError> {
        let rcfg = cfg.reactor_config();
        let mut dirs = vec![PathBuf::from(&cfg.server.data_dir)];
        if cfg.log.backend == LogBackend::File {
            dirs.push(cfg.log.dir(&cfg.server.data_dir));
        }
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        let dir_locks = DirLock::acquire_all(&dirs).map_err(ServeError::DirLock)?;
        let secrets = secrets::resolve(cfg)?;
        // Cluster mode: Redis checked and this node's id leased before
        // anything is served or logged.
        let cluster = if cfg.cluster.enabled {
            Some(crate::cluster::start(cfg, &*clock)?)
        } else {
            None
        };
        // Given up when the service stops, or when this start fails.
        let lease = cluster.clone().map(crate::cluster::start::Lease);
        let engine = Arc::new(flashd_engine::Engine::new(cfg.engine_config()));
        let server = flashd_reactor::Server::<Outcome>::bind(rcfg.clone()).map_err(|source| {
            ServeError::Listen {
                listen: cfg.server.listen,
                source,
            }
        })?;
        let stats = server.stats();
        let local = server.local_addr();
        let events = Arc::new(AtomicU64::new(0));
        let core = Arc::new(Core {
            engine: engine.clone(),
            writer: OnceLock::new(),
            ack: flashd_log::Ack::from(cfg.log.ack),
            events: events.clone(),
            cluster: cluster.clone(),
        });
        let pool = workers::start(
            &cfg.workers,
            rcfg.sub_reactors,
            &core,
            server.completer(),
            &clock,
        )
        .map_err(ServeError::Workers)?;
        let completer = server.completer();
        let shared = Arc::new(Shared {
            core: core.clone(),
            engine,
            ready: AtomicBool::new(false),
            log: OnceLock::new(),
            auth: Auth::new(&secrets.jwt_secret, &secrets.admin_token),
            limits: RateLimits::new(&cfg.rate_limit),
            stats: stats.clone(),
            app: (0..rcfg.sub_reactors).map(|_| Default::default()).collect(),
            events,
            workers: pool.as_ref().map(|p| p.dispatcher(0)),
            clock: clock.clone(),
            sse: crate::stream::Hub::new(&cfg.sse),
            node_id: cfg.engine.node_id,
            start_ms: clock.now_ms(),
            access_log: crate::access_log::AccessLog::new(&cfg.logging),
        });
        let app_shared = shared.clone();
        let reactors = server
            .start(move |i| app::App::new(app_shared.clone(), i))
            .map_err(ServeError::Reactors)?;
        let started = Instant::now();
        while !stats.all_running() {
            if started.elapsed() > REACTORS_START {
                return Err(ServeError::ReactorsSlow);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let durable = match Durable::open(cfg, &core, completer, rcfg.sub_reactors, &shared) {
            Ok(d) => d,
            Err(e) => {
                reactors.shutdown();
                let _ = reactors.join();
                if let Some(p) = pool {
                    p.stop();
                }
                return Err(e.into());
            }
        };
        let _ = core.writer.set(durable.writer.handle());
        // Orders whose payment deadline passed while we were down go
        // first; ready only once their units are back on sale, so that the
        // first reader after a restart sees the stock it will sell.
        // In cluster mode Redis times orders out (the sweeper's passes).
        if cluster.is_none() {
            sweeper::cancel_overdue(&core, &*clock);
        }
        let cluster_sweep = cluster.map(|cl| {
            // A failed Kafka write is undone within its delivery timeout
            // and an abort: look at logged timeouts after twice that, and
            // never sooner than two seconds.
            let verify = Duration::from_millis(2 * cfg.log.kafka.unavailable_ms + 2_000);
            crate::cluster::sweep::ClusterSweep::new(cl, core.clone(), verify)
        });
        if let Some(sweep) = &cluster_sweep {
            // Ready only once a `GET` of a sale answers Redis's counters,
            // not this node's share of them.
            sweep.seed_mirror(|| clock.now_ms(), MIRROR_SEED_WAIT);
        }
        shared.ready.store(true, Ordering::Release);
        let sweeper = SweeperHandle::start(
            core.clone(),
            clock,
            Duration::from_millis(cfg.engine.expiry_sweep_ms),
            cluster_sweep,
        )
        .map_err(|source| ServeError::Thread {
            what: "flashd-sweeper",
            source,
        })?;
        Ok(Service {
            shared,
            stats,
            reactors,
            local,
            pool,
            durable,
            sweeper,
            shutdown_grace_ms: cfg.server.shutdown_grace_ms,
            _dir_locks: dir_locks,
            _lease: lease,
        })
    }

    /// The address the server listens on (port 0 in the config picks one).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What the request handlers share: the engine, the clock, counters.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// The worker pool (`None` when commands run inline).
    pub fn pool(&self) -> Option<&Pool> {
        self.pool.as_ref()
    }

    /// Wall-clock ms (system clock, as the log writer records it) since
    /// which the log writer has been busy on one piece of work; 0 if idle.
    pub fn writer_busy_since_ms(&self) -> u64 {
        self.durable
            .writer
            .stats
            .busy_since_ms
            .load(Ordering::Acquire)
    }

    /// SIGHUP: re-read the config file and apply what can change live
    /// (the rate limits).
    pub fn reload(&self, path: Option<&Path>) {
        match path.map(Config::load) {
            Some(Ok(new)) => {
                self.shared.limits.set(&new.rate_limit);
                tracing::info!(rate_limit = ?new.rate_limit, "SIGHUP: rate limits reloaded (other keys need a restart)");
            }
            Some(Err(errs)) => {
                let errs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
                tracing::error!(?errs, "SIGHUP: config invalid, nothing changed");
            }
            None => tracing::info!("SIGHUP: no config file to reload"),
        }
    }

    /// Stop: no new connections, in-flight requests finished (within
    /// `server.shutdown_grace_ms`), then everything behind them drained.
    pub fn stop(self) -> Result<(), ServeError> {
        self.reactors.shutdown();
        let t0 = Instant::now();
        self.reactors.join().map_err(ServeError::Join)?;
        if let Some(p) = self.pool {
            p.stop();
        }
        self.sweeper.stop();
        self.durable.stop();
        tracing::info!(
            drained_in_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            grace_ms = self.shutdown_grace_ms,
            "flashd stopped"
        );
        Ok(())
    }
}

/// `flashd serve`: start a [`Service`] on the system clock, tell systemd,
/// keep the watchdog fed while every part makes progress, reload on
/// SIGHUP, stop on SIGTERM/SIGINT.
pub fn run(cfg: &Config, config_path: Option<&Path>) -> Result<(), ServeError> {
    match sys::raise_nofile_limit() {
        Ok(n) if n < cfg.nofile_wanted() => tracing::warn!(
            nofile = n,
            max_connections = cfg.server.max_connections,
            "open-file limit is below server.max_connections; raise LimitNOFILE"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    // Signals go to a channel so the main thread can also run the
    // watchdog; installed before recovery so a SIGTERM during it is kept.
    let (sig_tx, sig_rx) = mpsc::channel();
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|source| {
            ServeError::Thread {
                what: "signal handlers",
                source,
            }
        })?;
    std::thread::Builder::new()
        .name("flashd-signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if sig_tx.send(s).is_err() {
                    break;
                }
            }
        })
        .map_err(|source| ServeError::Thread {
            what: "flashd-signals",
            source,
        })?;
    let service = Service::start(cfg, Arc::new(SystemClock))?;
    let rcfg = cfg.reactor_config();
    tracing::info!(
        listen = %service.local_addr(),
        sub_reactors = rcfg.sub_reactors,
        pin_cpus = rcfg.pin_cpus,
        workers = cfg.workers.count,
        ack = %cfg.log.ack,
        version = env!("CARGO_PKG_VERSION"),
        "flashd ready"
    );
    sys::notify(&[NotifyState::Ready]);
    let mut watchdog = Watchdog::new(cfg, &service);
    loop {
        match sig_rx.recv_timeout(watchdog.interval()) {
            Ok(SIGHUP) => service.reload(config_path),
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
        watchdog.check(&service);
    }
    sys::notify(&[NotifyState::Stopping]);
    service.stop()
}
