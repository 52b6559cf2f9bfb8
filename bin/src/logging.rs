//! Process logging: `tracing` to stderr, filtered by `RUST_LOG` or else
//! `logging.level`; colours only on a terminal.

use crate::config::Config;

/// Install the global subscriber (once per process).
pub fn init(cfg: &Config) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.logging.level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
