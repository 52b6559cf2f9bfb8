//! `flashd sink`: one member of the consumer group that projects the Kafka
//! topic into the MySQL shards, with its own `/metrics` listener
//! (`sink.metrics_listen`). Runs until SIGTERM or SIGINT.

use sd_notify::NotifyState;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::config::Config;
use crate::{metrics, sys};

#[derive(Debug, thiserror::Error)]
pub enum SinkProcessError {
    #[error("mysql.shards: no shards configured")]
    NoShards,
    #[error("{0}")]
    Start(#[source] flashd_sink::SinkError),
    #[error("sink.metrics_listen {listen}: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

pub fn run(cfg: &Config) -> Result<(), SinkProcessError> {
    if cfg.mysql.shards.is_empty() {
        return Err(SinkProcessError::NoShards);
    }
    let sink =
        flashd_sink::Sink::start(cfg.standalone_sink_config()).map_err(SinkProcessError::Start)?;
    let mut metrics_thread = None;
    if !cfg.sink.metrics_listen.is_empty() {
        let l = std::net::TcpListener::bind(&cfg.sink.metrics_listen).map_err(|source| {
            SinkProcessError::Listen {
                listen: cfg.sink.metrics_listen.clone(),
                source,
            }
        })?;
        let stats = sink.stats.clone();
        metrics_thread = Some(
            std::thread::Builder::new()
                .name("flashd-sink-metrics".into())
                .spawn(move || metrics::serve_sink_metrics(l, stats))
                .map_err(|source| SinkProcessError::Io {
                    what: "starting flashd-sink-metrics",
                    source,
                })?,
        );
    }
    tracing::info!(
        topic = %cfg.log.kafka.topic,
        group = %cfg.sink.group,
        shards = cfg.mysql.shards.len(),
        "sink running"
    );
    sys::notify(&[NotifyState::Ready]);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(|source| {
        SinkProcessError::Io {
            what: "installing signal handlers",
            source,
        }
    })?;
    let sig = signals.forever().next();
    tracing::info!(signal = ?sig, "sink stopping");
    sink.stop();
    drop(metrics_thread);
    Ok(())
}
