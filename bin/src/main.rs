//! flashd: the flash-sale order server binary.
//!
//! The command line only: parse it, load the configuration, call the
//! library (`flashd::serve`, `flashd::migrate`, `flashd::sink_process`,
//! `flashd::auth`). It is the only place where errors become exit codes: 0
//! for a clean stop, 2 for a configuration the operator must fix (each
//! error named by its key path), 1 for anything else; `flashd reconcile`
//! adds 1 for drift and 3 for a part it cannot reach.

use std::fmt::Display;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use flashd::clock::SystemClock;
use flashd::config::{self, Config};
use flashd::{auth, logging, migrate, reconcile, secrets, serve, sink_process};

// jemalloc: fewer page faults and less fragmentation than glibc malloc under
// many threads allocating and freeing buffers of mixed sizes.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for a configuration the operator has to fix.
const EXIT_CONFIG: u8 = 2;

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
    /// Cluster mode: compare what Redis (and, with MySQL shards, the
    /// sink) holds of each sale with what the nodes' logs say it must.
    /// Exit 0 when they agree (claims decided and not yet logged count as
    /// agreeing until their deadline and a grace), 1 on drift, 2 on a
    /// configuration error, 3 when Redis, Kafka or MySQL cannot be
    /// reached.
    Reconcile {
        #[arg(long, short)]
        config: PathBuf,
        /// Only this sale.
        #[arg(long)]
        sale: Option<u32>,
        /// Rebuild each drifting sale in Redis from the logs, then check
        /// again.
        #[arg(long)]
        repair: bool,
        /// With --repair: repair even over claims in flight (dropped).
        #[arg(long, requires = "repair")]
        force: bool,
        /// How long past its deadline an unlogged created claim counts as
        /// in flight (default: engine.expiry_sweep_ms + 10000).
        #[arg(long)]
        grace_ms: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
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
            logging::init(&cfg);
            if user == 0 {
                eprintln!("--user: must be > 0");
                return ExitCode::from(EXIT_CONFIG);
            }
            match secrets::resolve(&cfg) {
                Ok(s) => print_tokens(&s, user, count, ttl_s),
                Err(e) => report(Err(e)),
            }
        }
        Cmd::Migrate { config } => {
            let cfg = match load(Some(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(&cfg);
            report(migrate::run(&cfg))
        }
        Cmd::Sink { config } => {
            let cfg = match load(Some(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(&cfg);
            report(sink_process::run(&cfg))
        }
        Cmd::Reconcile {
            config,
            sale,
            repair,
            force,
            grace_ms,
            json,
        } => {
            let cfg = match load(Some(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(&cfg);
            let opts = reconcile::Options {
                sale,
                repair,
                force,
                grace_ms,
            };
            match reconcile::run(&cfg, &opts, SystemClock::now()) {
                Ok(r) => {
                    let out = if json { r.json() } else { r.text() };
                    let mut stdout = std::io::stdout().lock();
                    if writeln!(stdout, "{}", out.trim_end()).is_err() {
                        return ExitCode::FAILURE;
                    }
                    ExitCode::from(r.exit_code())
                }
                Err(e) => {
                    eprintln!("flashd reconcile: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Cmd::Serve { config } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(&cfg);
            report(serve::run(&cfg, config.as_deref()))
        }
    }
}

/// The configuration at `path`, or every default; exit code 2 on errors.
fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    match path
        .map(Config::load)
        .unwrap_or_else(|| Ok(Config::default()))
    {
        Ok(c) => Ok(c),
        Err(errs) => Err(config_errors(&errs)),
    }
}

fn config_errors(errs: &[config::ConfigError]) -> ExitCode {
    for e in errs {
        eprintln!("{e}");
    }
    ExitCode::from(EXIT_CONFIG)
}

/// `flashd token`: one line per user from `user` on.
fn print_tokens(s: &secrets::Secrets, user: u64, count: u64, ttl_s: u64) -> ExitCode {
    let now_s = SystemClock::now() / 1000;
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

/// Exit code 1 for an error (whose text names its causes), logged and
/// printed.
fn report<E: Display>(r: Result<(), E>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("flashd: {e}");
            ExitCode::FAILURE
        }
    }
}
