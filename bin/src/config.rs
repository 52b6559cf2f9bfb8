//! The one configuration file.
//!
//! Every key has a default (documented in `tuning/flashd.toml`); unknown
//! keys, wrong types and out-of-range values are refused, each error naming
//! its key path (`server.idle_timeout_ms: must be > 0`).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub reactor: ReactorSection,
    pub workers: WorkersSection,
    pub engine: EngineSection,
    pub rate_limit: RateLimitSection,
    pub auth: AuthSection,
    pub log: LogSection,
    pub mysql: MysqlSection,
    pub sink: SinkSection,
    pub logging: LoggingSection,
}

/// `[log.kafka]`: the production log (`log.backend = "kafka"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    pub brokers: String,
    pub topic: String,
    /// Partitions of the topic when flashd creates it.
    pub partitions: u64,
    /// A buy waits at most this long for its delivery report; after a
    /// failure, buys get 503 for this long before the broker is tried again.
    pub unavailable_ms: u64,
    /// librdkafka properties, passed through (`"linger.ms" = "1"`).
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: "127.0.0.1:9092".into(),
            topic: "flashd-orders".into(),
            partitions: 4,
            unavailable_ms: 1000,
            properties: Default::default(),
        }
    }
}

/// `[mysql]`: the shards the sink writes and `flashd migrate` creates.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlSection {
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    pub url: String,
}

/// `[sink]`: the Kafka → MySQL projection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSection {
    /// Run the sink inside `flashd serve` (on its own threads).
    pub embedded: bool,
    pub group: String,
    pub batch_max: u64,
    pub batch_wait_ms: u64,
    /// `flashd sink` serves `/metrics` here ("" = not at all).
    pub metrics_listen: String,
}

impl Default for SinkSection {
    fn default() -> Self {
        SinkSection {
            embedded: false,
            group: "flashd-sink".into(),
            batch_max: 5000,
            batch_wait_ms: 20,
            metrics_listen: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub backend: String,
    pub dir: String,
    pub ack: String,
    pub fsync: bool,
    pub flush_interval_ms: u64,
    pub commit_interval_us: u64,
    pub segment_bytes: u64,
    pub snapshot_every_events: u64,
    pub retain_segments: u64,
    pub ring_capacity: u64,
    pub batch_max: u64,
    pub unavailable_ms: u64,
    pub on_corruption: String,
    pub kafka: KafkaSection,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            backend: "file".into(),
            dir: String::new(),
            ack: "durable".into(),
            fsync: true,
            flush_interval_ms: 10,
            commit_interval_us: 0,
            segment_bytes: 64 << 20,
            snapshot_every_events: 1_000_000,
            retain_segments: 2,
            ring_capacity: 65_536,
            batch_max: 4096,
            unavailable_ms: 1000,
            on_corruption: "refuse".into(),
            kafka: KafkaSection::default(),
        }
    }
}

impl LogSection {
    /// `log.dir`, defaulting to `server.data_dir/log`.
    pub fn dir(&self, data_dir: &str) -> std::path::PathBuf {
        if self.dir.is_empty() {
            std::path::Path::new(data_dir).join("log")
        } else {
            self.dir.clone().into()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersSection {
    pub count: u64,
    pub pin_cpus: bool,
    pub ring_capacity: u64,
    pub batch_max: u64,
}

impl Default for WorkersSection {
    fn default() -> Self {
        WorkersSection {
            count: 0,
            pin_cpus: false,
            ring_capacity: 4096,
            batch_max: 64,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    pub node_id: u64,
    pub order_ttl_ms: u64,
    pub max_activities: u64,
    pub expiry_sweep_ms: u64,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            node_id: 0,
            order_ttl_ms: 900_000,
            max_activities: 4096,
            expiry_sweep_ms: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    pub global_rps: u64,
    pub global_burst: u64,
    pub per_user_rps: u64,
    pub per_user_burst: u64,
    pub per_ip_rps: u64,
    pub per_ip_burst: u64,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        RateLimitSection {
            global_rps: 0,
            global_burst: 0,
            per_user_rps: 5,
            per_user_burst: 10,
            per_ip_rps: 0,
            per_ip_burst: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub jwt_secret: String,
    pub admin_token: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: String,
    pub backlog: u32,
    pub max_connections: u64,
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_header_bytes: u64,
    pub max_body_bytes: u64,
    pub shutdown_grace_ms: u64,
    pub data_dir: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8080".into(),
            backlog: 4096,
            max_connections: 100_000,
            header_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            max_header_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
            shutdown_grace_ms: 10_000,
            data_dir: "data".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReactorSection {
    pub sub_reactors: u64,
    pub pin_cpus: bool,
    pub completion_ring: u64,
}

impl Default for ReactorSection {
    fn default() -> Self {
        ReactorSection {
            sub_reactors: 0,
            pin_cpus: true,
            completion_ring: 16 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    pub level: String,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            level: "info".into(),
        }
    }
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }]
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut path = e.path().to_string();
            let message = e.inner().message().to_string();
            if path == "." {
                path.clear();
            }
            // serde names the table that holds an unknown key; name the key.
            if let Some(rest) = message.strip_prefix("unknown field `") {
                if let Some(key) = rest.split('`').next() {
                    if path.is_empty() {
                        path = key.to_string();
                    } else if !path.ends_with(&format!(".{key}")) && path != key {
                        path = format!("{path}.{key}");
                    }
                    return vec![ConfigError {
                        path,
                        message: "unknown key".into(),
                    }];
                }
            }
            vec![ConfigError { path, message }]
        })?;
        let errors = cfg.validate();
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut range = |path: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                let message = if lo > 0 && v < lo && lo == 1 {
                    "must be > 0".to_string()
                } else {
                    format!("must be between {lo} and {hi}, got {v}")
                };
                errs.push(ConfigError {
                    path: path.into(),
                    message,
                });
            }
        };
        let s = &self.server;
        range("server.backlog", s.backlog as u64, 1, 65_535);
        range("server.max_connections", s.max_connections, 1, 10_000_000);
        range(
            "server.header_timeout_ms",
            s.header_timeout_ms,
            1,
            3_600_000,
        );
        range("server.idle_timeout_ms", s.idle_timeout_ms, 1, 86_400_000);
        range("server.max_header_bytes", s.max_header_bytes, 512, 1 << 20);
        range("server.max_body_bytes", s.max_body_bytes, 1, 64 << 20);
        range("server.shutdown_grace_ms", s.shutdown_grace_ms, 0, 600_000);
        range("reactor.sub_reactors", self.reactor.sub_reactors, 0, 1024);
        range(
            "reactor.completion_ring",
            self.reactor.completion_ring,
            1,
            1 << 22,
        );
        range(
            "log.commit_interval_us",
            self.log.commit_interval_us,
            0,
            100_000,
        );
        if s.listen.parse::<SocketAddr>().is_err() {
            errs.push(ConfigError {
                path: "server.listen".into(),
                message: format!("not an IP:port address: {:?}", s.listen),
            });
        }
        let mut one_of = |path: &str, v: &str, allowed: &[&str]| {
            if !allowed.contains(&v) {
                errs.push(ConfigError {
                    path: path.into(),
                    message: format!("must be one of {allowed:?}, got {v:?}"),
                });
            }
        };
        one_of("log.backend", &self.log.backend, &["file", "kafka"]);
        one_of("log.ack", &self.log.ack, &["durable", "ledger"]);
        one_of(
            "log.on_corruption",
            &self.log.on_corruption,
            &["refuse", "truncate"],
        );
        let k = &self.log.kafka;
        if self.log.backend == "kafka" || self.sink.embedded {
            if k.brokers.trim().is_empty() {
                errs.push(ConfigError {
                    path: "log.kafka.brokers".into(),
                    message: "must name at least one broker".into(),
                });
            }
            if k.topic.trim().is_empty() {
                errs.push(ConfigError {
                    path: "log.kafka.topic".into(),
                    message: "must not be empty".into(),
                });
            }
        }
        if !(1..=10_000).contains(&k.partitions) {
            errs.push(ConfigError {
                path: "log.kafka.partitions".into(),
                message: format!("must be between 1 and 10000, got {}", k.partitions),
            });
        }
        if !(1..=600_000).contains(&k.unavailable_ms) {
            errs.push(ConfigError {
                path: "log.kafka.unavailable_ms".into(),
                message: format!("must be between 1 and 600000, got {}", k.unavailable_ms),
            });
        }
        for key in ["enable.idempotence", "acks", "message.timeout.ms"] {
            if k.properties.contains_key(key) {
                errs.push(ConfigError {
                    path: format!("log.kafka.properties.{key}"),
                    message: "is set by flashd (durability depends on it)".into(),
                });
            }
        }
        for (i, sh) in self.mysql.shards.iter().enumerate() {
            if let Err(e) = flashd_storage::sink::check_url(&sh.url) {
                errs.push(ConfigError {
                    path: format!("mysql.shards[{i}].url"),
                    message: e,
                });
            }
        }
        if self.sink.embedded && self.log.backend != "kafka" {
            errs.push(ConfigError {
                path: "sink.embedded".into(),
                message: "needs log.backend = \"kafka\"".into(),
            });
        }
        if self.sink.embedded && self.mysql.shards.is_empty() {
            errs.push(ConfigError {
                path: "mysql.shards".into(),
                message: "sink.embedded needs at least one shard".into(),
            });
        }
        if !(1..=100_000).contains(&self.sink.batch_max) {
            errs.push(ConfigError {
                path: "sink.batch_max".into(),
                message: format!("must be between 1 and 100000, got {}", self.sink.batch_max),
            });
        }
        if !self.sink.metrics_listen.is_empty()
            && self.sink.metrics_listen.parse::<SocketAddr>().is_err()
        {
            errs.push(ConfigError {
                path: "sink.metrics_listen".into(),
                message: format!("not an IP:port address: {:?}", self.sink.metrics_listen),
            });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err() {
            errs.push(ConfigError {
                path: "logging.level".into(),
                message: format!("not a log filter: {:?}", self.logging.level),
            });
        }
        errs
    }

    /// Sub-reactors to run: the configured count, or one per CPU this
    /// process may use.
    pub fn resolved_sub_reactors(&self) -> usize {
        match self.reactor.sub_reactors {
            0 => core_count(),
            n => n as usize,
        }
    }

    pub fn kafka_config(&self) -> flashd_storage::kafka::KafkaConfig {
        let k = &self.log.kafka;
        flashd_storage::kafka::KafkaConfig {
            brokers: k.brokers.clone(),
            topic: k.topic.clone(),
            timeout: Duration::from_millis(k.unavailable_ms),
            properties: k
                .properties
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
        }
    }

    pub fn sink_config(&self) -> flashd_storage::sink::SinkConfig {
        flashd_storage::sink::SinkConfig {
            kafka: self.kafka_config(),
            group: self.sink.group.clone(),
            shards: self.mysql.shards.iter().map(|s| s.url.clone()).collect(),
            batch_max: self.sink.batch_max as usize,
            batch_wait: Duration::from_millis(self.sink.batch_wait_ms),
        }
    }

    pub fn engine_config(&self) -> flashd_engine::EngineConfig {
        flashd_engine::EngineConfig {
            node_id: self.engine.node_id as u16,
            order_ttl_ms: self.engine.order_ttl_ms,
            max_activities: self.engine.max_activities as u32,
            // The log is always attached: cancelled units wait for it.
            hold_released_until_durable: true,
        }
    }

    pub fn reactor_config(&self) -> flashd_reactor::ServerConfig {
        let s = &self.server;
        flashd_reactor::ServerConfig {
            listen: s.listen.parse().expect("validated"),
            backlog: s.backlog as i32,
            max_connections: s.max_connections as usize,
            header_timeout: Duration::from_millis(s.header_timeout_ms),
            idle_timeout: Duration::from_millis(s.idle_timeout_ms),
            limits: flashd_protocol::Limits {
                max_header_bytes: s.max_header_bytes as usize,
                max_body_bytes: s.max_body_bytes as usize,
            },
            sub_reactors: self.resolved_sub_reactors(),
            pin_cpus: self.reactor.pin_cpus,
            shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
            completion_ring: self.reactor.completion_ring as usize,
        }
    }
}

/// CPUs in this process's affinity mask (what taskset/cgroups allow).
pub fn core_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        Config::parse(text)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert!(c.resolved_sub_reactors() >= 1);
    }

    #[test]
    fn the_documented_file_is_the_defaults() {
        let text = include_str!("../../tuning/flashd.toml");
        let c = Config::parse(text).unwrap();
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            errs("[server]\nidle_timeout_ms = 0\n"),
            ["server.idle_timeout_ms: must be > 0"]
        );
        assert_eq!(errs("[server]\nbogus = 1\n"), ["server.bogus: unknown key"]);
        assert_eq!(errs("[nope]\n"), ["nope: unknown key"]);
        let e = errs("[server]\nbacklog = \"many\"\n");
        assert!(e[0].starts_with("server.backlog: invalid type"), "{e:?}");
        let e = errs("[server]\nlisten = \"nowhere\"\nmax_header_bytes = 1\n[reactor]\nsub_reactors = 5000\n");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("server.listen:")));
        assert!(e.iter().any(|m| m.starts_with("server.max_header_bytes:")));
        assert!(e.iter().any(|m| m.starts_with("reactor.sub_reactors:")));
        assert!(errs("[server]\nbacklog = -1\n")[0].starts_with("server.backlog:"));
    }

    #[test]
    fn log_and_sink_keys_are_checked() {
        assert_eq!(
            errs("[log]\nbackend = \"kafak\"\n"),
            ["log.backend: must be one of [\"file\", \"kafka\"], got \"kafak\""]
        );
        assert!(errs("[log]\nack = \"durabel\"\n")[0].starts_with("log.ack:"));
        assert_eq!(
            errs("[log]\ncommit_interval_us = 200000\n"),
            ["log.commit_interval_us: must be between 0 and 100000, got 200000"]
        );
        let c = Config::parse("[log]\ncommit_interval_us = 1500\n").unwrap();
        assert_eq!(c.log.commit_interval_us, 1500);
        assert_eq!(
            errs("[log.kafka.properties]\nacks = \"1\"\n"),
            ["log.kafka.properties.acks: is set by flashd (durability depends on it)"]
        );
        let e = errs("[sink]\nembedded = true\n[[mysql.shards]]\nurl = \"postgres://x\"\n");
        assert!(
            e.iter().any(|m| m.starts_with("sink.embedded: needs")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with("mysql.shards[0].url:")),
            "{e:?}"
        );
        let ok = Config::parse("[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"127.0.0.1:1\"\n[log.kafka.properties]\n\"linger.ms\" = \"2\"\n[sink]\nembedded = true\n[[mysql.shards]]\nurl = \"mysql://root@127.0.0.1:3306/s0\"\n[[mysql.shards]]\nurl = \"mysql://root@127.0.0.1:3306/s1\"\n").unwrap();
        assert_eq!(ok.sink_config().shards.len(), 2);
        assert_eq!(
            ok.kafka_config().properties,
            [("linger.ms".to_string(), "2".to_string())]
        );
    }
}
