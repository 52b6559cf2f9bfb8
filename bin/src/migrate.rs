//! `flashd migrate`: create the databases and tables on every MySQL shard,
//! and the Kafka topic when `log.backend = "kafka"`. Idempotent.

use crate::config::{Config, LogBackend};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Kafka(#[source] flashd_log::LogError),
    #[error("mysql.shards: no shards configured")]
    NoShards,
    #[error("starting the MySQL runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Mysql(#[source] flashd_sink::SinkError),
}

/// Migrate, printing one line per topic and shard on stdout.
pub fn run(cfg: &Config) -> Result<(), MigrateError> {
    if cfg.log.backend == LogBackend::Kafka {
        let created = flashd_kafka::ensure_topic(&cfg.kafka_config(), cfg.log.kafka.partitions)
            .map_err(MigrateError::Kafka)?;
        println!(
            "topic {}: {}",
            cfg.log.kafka.topic,
            if created { "created" } else { "exists" }
        );
    }
    let shards: Vec<String> = cfg.mysql.shards.iter().map(|s| s.url.clone()).collect();
    if shards.is_empty() {
        return match cfg.log.backend {
            LogBackend::Kafka => Ok(()),
            LogBackend::File => Err(MigrateError::NoShards),
        };
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MigrateError::Runtime)?
        .block_on(flashd_sink::migrate(&shards))
        .map_err(MigrateError::Mysql)?;
    for (i, s) in cfg.mysql.shards.iter().enumerate() {
        println!("shard {i}: {} ok", redact(&s.url));
    }
    Ok(())
}

/// A URL without its password, for logs.
pub fn redact(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("mysql://flashd:s3cret@db:3306/flashd"),
            "mysql://flashd:***@db:3306/flashd"
        );
        assert_eq!(redact("mysql://flashd@db/x"), "mysql://flashd@db/x");
        assert_eq!(redact("mysql://db/x"), "mysql://db/x");
    }
}
