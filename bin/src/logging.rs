//! Process logging: `tracing` to stderr, filtered by `RUST_LOG` or else
//! `logging.level`, as lines for people (`logging.format = "text"`, colours
//! only on a terminal) or JSON lines for a log shipper (`"json"`). Lines
//! about one request carry its `request_id` as a field (`request_id.rs`):
//! a field rather than a span, because a span per request would cost the
//! hot path an allocation whenever the level lets it through.

use crate::config::{Config, LogFormat};

/// Install the global subscriber (once per process).
pub fn init(cfg: &Config) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.logging.level.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match cfg.logging.format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init(),
        // One object a line: `timestamp`, `level`, `target`, `fields`
        // (with `message` and the event's own fields), and the current
        // span's fields under `span` when there is one.
        LogFormat::Json => builder
            .json()
            .with_target(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
