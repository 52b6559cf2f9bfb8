//! The one configuration file.
//!
//! Every key has a default (documented in `tuning/flashd.toml`); unknown
//! keys, wrong types and out-of-range values are refused, each error naming
//! its key path (`server.idle_timeout_ms: must be > 0`).
//!
//! Each field has the type its consumer takes (`usize` for a capacity,
//! `u16` for the node id, `i32` for Kafka partitions), so no config value
//! is ever narrowed by an `as` cast downstream; every integer key has a
//! range ([`Config::bounds`]) and every relation the engine, reactor and
//! log constructors assert is checked here first, so a bad file is exit 2
//! from `check-config` and `serve` alike, never a panic at start.
//! Enumerated keys are enums: an unknown value is refused while parsing,
//! with the allowed values listed.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::secrets::MIN_SECRET_BYTES;

/// Every integer limit of the file, with why that number.
pub mod limits {
    /// The kernel's own ceiling for listen(2)'s backlog on Linux
    /// (`net.core.somaxconn` is at most 65535 on older kernels).
    pub const BACKLOG_MAX: i32 = 65_535;
    /// Ten million descriptors is an order of magnitude above what one
    /// node can serve; a larger value is a typo.
    pub const CONNECTIONS_MAX: usize = 10_000_000;
    /// One hour: a request (or a first byte) that takes longer is not a
    /// slow client but a held-open socket.
    pub const HEADER_TIMEOUT_MS_MAX: u64 = 3_600_000;
    /// One day of idle keep-alive at most.
    pub const IDLE_TIMEOUT_MS_MAX: u64 = 86_400_000;
    /// One hour: far above any wait the log or a worker can legitimately
    /// cause; it exists to answer requests stuck behind a wedged thread.
    pub const REQUEST_TIMEOUT_MS_MAX: u64 = 3_600_000;
    /// 512 bytes holds a request line and the headers flashd needs.
    pub const HEADER_BYTES_MIN: usize = 512;
    /// 1 MiB of headers per request is already generous; the whole
    /// request is buffered per connection.
    pub const HEADER_BYTES_MAX: usize = 1 << 20;
    /// API bodies are a few hundred bytes; 64 MiB bounds a connection's
    /// buffer.
    pub const BODY_BYTES_MAX: usize = 64 << 20;
    /// Ten minutes of draining at most (systemd's stop timeout must exceed
    /// it).
    pub const SHUTDOWN_GRACE_MS_MAX: u64 = 600_000;
    /// Threads of one kind: far above any core count flashd runs on.
    pub const THREADS_MAX: usize = 1024;
    /// Entries in a completion or worker ring: ~4M bounds the memory a
    /// ring allocates up front.
    pub const RING_MAX: usize = 1 << 22;
    /// The log writer's ring must hold what the expiry sweeper reserves in
    /// one pass (`exec::EXPIRE_PER_PASS` entries, admitted only when the
    /// ring has that much room); a smaller ring never has, and unpaid
    /// orders would never expire.
    pub const LOG_RING_MIN: usize = crate::exec::EXPIRE_PER_PASS;
    /// Log writer ring: 16M entries bounds its up-front allocation.
    pub const LOG_RING_MAX: usize = 1 << 24;
    /// Entries per group commit: a larger batch only lengthens the commit.
    pub const LOG_BATCH_MAX: usize = 1 << 20;
    /// A segment holds at least one record of the largest size
    /// (`flashd_log::record::PAYLOAD_BYTES_MAX`, 1 MiB).
    pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;
    /// Recovery reads one segment whole into memory: 1 GiB bounds it.
    pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
    /// A snapshot every 10^12 events is "never" for any real log.
    pub const SNAPSHOT_EVERY_EVENTS_MAX: u64 = 1_000_000_000_000;
    /// Segments kept past the oldest snapshot, for inspection.
    pub const RETAIN_SEGMENTS_MAX: usize = 10_000;
    /// Ledger mode loses at most this much acknowledged work on a crash:
    /// a minute is already more than a shop should accept.
    pub const FLUSH_INTERVAL_MS_MAX: u64 = 60_000;
    /// 100 ms between group-commit starts: more is latency, not batching.
    pub const COMMIT_INTERVAL_US_MAX: u64 = 100_000;
    /// Ten minutes of 503 after a log failure, or of waiting for a Kafka
    /// delivery report.
    pub const UNAVAILABLE_MS_MAX: u64 = 600_000;
    /// Kafka topics with more partitions are beyond what one node uses.
    pub const PARTITIONS_MAX: i32 = 10_000;
    /// Kafka's own limit on a topic name's length.
    pub const TOPIC_BYTES_MAX: usize = 249;
    /// Thirty days to pay: a longer hold is not a flash sale.
    pub const ORDER_TTL_MS_MAX: u64 = 30 * 86_400_000;
    /// A minute between expiry sweeps: units held longer than that past
    /// their deadline are units not sold.
    pub const EXPIRY_SWEEP_MS_MAX: u64 = 60_000;
    /// In cluster mode the sweeper's passes also renew the node's id lease
    /// (`cluster::start::LEASE_TTL`, 10 s, renewed at the first pass 2 s
    /// after the last): passes further apart than this let it lapse, and
    /// the node stops deciding anything.
    pub const CLUSTER_SWEEP_MS_MAX: u64 = 5_000;
    /// Sale slots are allocated at start; a million bounds that.
    pub const ACTIVITIES_MAX: u32 = 1 << 20;
    /// GCRA keeps one nanosecond-resolution interval: at 10M/s it is still
    /// 100 ns, exact enough; no node serves more.
    pub const RPS_MAX: u64 = 10_000_000;
    /// A burst above a million requests is no limit at all.
    pub const BURST_MAX: u64 = 1_000_000;
    /// Records per sink batch (one MySQL transaction per shard).
    pub const SINK_BATCH_MAX: usize = 100_000;
    /// A sink batch waits at most ten seconds to fill.
    pub const SINK_BATCH_WAIT_MS_MAX: u64 = 10_000;
    /// Each shard is a connection pool; more than 1024 is a typo.
    pub const SHARDS_MAX: usize = 1024;
    /// A Redis call waits at most a minute: longer is a hung cluster,
    /// and a buyer would long have given up.
    pub const REDIS_TIMEOUT_MS_MAX: u64 = 60_000;
    /// A sold-out answer cached for more than a minute would keep
    /// returned units off sale too long.
    pub const SOLD_OUT_RECHECK_MS_MAX: u64 = 60_000;
    /// Stream events at most 100 a second per sale: each reactor polls the
    /// streamed sales this often (the reactor's timer tick is 10 ms).
    pub const SSE_MIN_INTERVAL_MS_MIN: u64 = 10;
    /// A minute between stock updates is no longer "live".
    pub const SSE_MIN_INTERVAL_MS_MAX: u64 = 60_000;
    /// Heartbeats more often than a second are noise on 10^4 sockets.
    pub const SSE_HEARTBEAT_MS_MIN: u64 = 1_000;
    /// Proxies commonly cut a silent connection after 60 s; five minutes
    /// is the most that can make sense.
    pub const SSE_HEARTBEAT_MS_MAX: u64 = 300_000;
    /// Under 100 ms a healthy client on a busy link would be dropped.
    pub const SSE_STALL_TIMEOUT_MS_MIN: u64 = 100;
    /// Ten minutes of holding an event for a reader that does not read.
    pub const SSE_STALL_TIMEOUT_MS_MAX: u64 = 600_000;
}

use limits::*;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub reactor: ReactorSection,
    pub sse: SseSection,
    pub workers: WorkersSection,
    pub engine: EngineSection,
    pub rate_limit: RateLimitSection,
    pub auth: AuthSection,
    pub log: LogSection,
    pub mysql: MysqlSection,
    pub sink: SinkSection,
    pub logging: LoggingSection,
    pub cluster: ClusterSection,
}

/// `log.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    /// The embedded segment log.
    File,
    /// A Kafka topic (the production path).
    Kafka,
}

/// `log.ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    Durable,
    Ledger,
}

/// `log.on_corruption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorruptionPolicy {
    Refuse,
    Truncate,
}

impl LogBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            LogBackend::File => "file",
            LogBackend::Kafka => "kafka",
        }
    }
}

impl AckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Durable => "durable",
            AckMode::Ledger => "ledger",
        }
    }
}

impl CorruptionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CorruptionPolicy::Refuse => "refuse",
            CorruptionPolicy::Truncate => "truncate",
        }
    }
}

impl fmt::Display for LogBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CorruptionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<AckMode> for flashd_log::Ack {
    fn from(a: AckMode) -> Self {
        match a {
            AckMode::Durable => flashd_log::Ack::Durable,
            AckMode::Ledger => flashd_log::Ack::Ledger,
        }
    }
}

impl From<CorruptionPolicy> for flashd_log::OnCorruption {
    fn from(p: CorruptionPolicy) -> Self {
        match p {
            CorruptionPolicy::Refuse => flashd_log::OnCorruption::Refuse,
            CorruptionPolicy::Truncate => flashd_log::OnCorruption::Truncate,
        }
    }
}

/// `[log.kafka]`: the production log (`log.backend = "kafka"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    pub brokers: String,
    pub topic: String,
    /// Partitions of the topic when flashd creates it.
    pub partitions: i32,
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
    pub batch_max: usize,
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
    pub backend: LogBackend,
    pub dir: String,
    pub ack: AckMode,
    pub fsync: bool,
    pub flush_interval_ms: u64,
    pub commit_interval_us: u64,
    pub segment_bytes: u64,
    pub snapshot_every_events: u64,
    pub retain_segments: usize,
    pub ring_capacity: usize,
    pub batch_max: usize,
    pub unavailable_ms: u64,
    pub on_corruption: CorruptionPolicy,
    pub kafka: KafkaSection,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            backend: LogBackend::File,
            dir: String::new(),
            ack: AckMode::Durable,
            fsync: true,
            flush_interval_ms: 10,
            commit_interval_us: 0,
            segment_bytes: 64 << 20,
            snapshot_every_events: 1_000_000,
            retain_segments: 2,
            ring_capacity: 65_536,
            batch_max: 4096,
            unavailable_ms: 1000,
            on_corruption: CorruptionPolicy::Refuse,
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
    pub count: usize,
    pub pin_cpus: bool,
    pub ring_capacity: usize,
    pub batch_max: usize,
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
    pub node_id: u16,
    pub order_ttl_ms: u64,
    pub max_activities: u32,
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

#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub jwt_secret: String,
    pub admin_token: String,
}

/// Secrets never reach a log line through `{:?}`.
impl fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |s: &str| if s.is_empty() { "" } else { "<set>" };
        f.debug_struct("AuthSection")
            .field("jwt_secret", &shown(&self.jwt_secret))
            .field("admin_token", &shown(&self.admin_token))
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    pub backlog: i32,
    pub max_connections: usize,
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// A request handed to a worker or the log and not answered within
    /// this long is answered 503 (and counted).
    pub request_timeout_ms: u64,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub shutdown_grace_ms: u64,
    pub data_dir: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            backlog: 4096,
            max_connections: 100_000,
            header_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 10_000,
            max_header_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
            shutdown_grace_ms: 10_000,
            data_dir: "data".into(),
        }
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| serde::de::Error::custom(format!("not an IP:port address: {s:?}")))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReactorSection {
    pub sub_reactors: usize,
    pub pin_cpus: bool,
    pub completion_ring: usize,
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

/// `[sse]`: the live stock streams (`GET /api/v1/activities/{id}/stream`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SseSection {
    /// At most one event per sale this often (changes in between are
    /// coalesced into the next); also how often each reactor looks.
    pub min_interval_ms: u64,
    /// A subscriber written nothing this long gets a comment at the next
    /// heartbeat pass (passes run this often).
    pub heartbeat_ms: u64,
    /// A subscriber that takes no bytes this long while an event waits
    /// for it is dropped.
    pub stall_timeout_ms: u64,
    /// Subscribers on this node at most; past it, `503`. 0 turns streaming
    /// off.
    pub max_subscribers: usize,
}

impl Default for SseSection {
    fn default() -> Self {
        SseSection {
            // Four updates a second: faster than a buyer reads a number,
            // and it bounds the writes to 4 per subscriber per second.
            min_interval_ms: 250,
            heartbeat_ms: 15_000,
            stall_timeout_ms: 10_000,
            max_subscribers: 50_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    pub level: String,
    /// `logging.format`: lines for people, or JSON lines for a shipper.
    pub format: LogFormat,
    /// `logging.access_log`: which requests get a line.
    pub access_log: AccessLogMode,
    /// `logging.access_sample_every`: with `access_log = "all"`, one
    /// request in this many gets a line (1: every one).
    pub access_sample_every: u32,
}

/// Most requests between two access-log lines: one in a million still
/// shows a stampede's shape; a sparser sample shows nothing.
pub const ACCESS_SAMPLE_EVERY_MAX: u32 = 1_000_000;

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            level: "info".into(),
            format: LogFormat::Text,
            access_log: AccessLogMode::Off,
            access_sample_every: 1,
        }
    }
}

/// `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with
    /// `message`), `target`, and the span's fields (`request_id`).
    Json,
}

/// `logging.access_log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogMode {
    /// No access log: the request path does nothing for it.
    Off,
    /// Requests answered with a status of 500 or more: what the server
    /// got wrong. 4xx are left out: a flash sale answers millions of 409
    /// (sold out) and 429 (rate limited) by design, and `/metrics` counts
    /// them by route and status.
    Errors,
    /// Every request, or one in `logging.access_sample_every`.
    All,
}

/// `[cluster]`: one sale served by many nodes, Redis deciding stock
/// (`docs/cluster.md`). Off by default: a single node decides in memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    pub enabled: bool,
    /// Where every node's decisions are made: one Redis (or a proxy to
    /// one primary). The node's own id is `engine.node_id`, which every
    /// order id and the node's topic carry: it must differ between nodes.
    pub redis_url: String,
    /// A Redis call not answered within this long is a 503 (fail closed).
    pub redis_timeout_ms: u64,
    /// Refuse to start unless Redis has `appendonly yes` and
    /// `appendfsync always` (nothing acknowledged is lost when Redis is
    /// killed). Off: start with a loud warning naming the setting.
    pub require_durable_redis: bool,
    /// 0 (the default): every purchase asks Redis. Otherwise, after Redis
    /// answered "sold out" for a sale, this node answers 409 locally for
    /// this long before asking again: a stampede on a sold-out sale costs
    /// Redis nothing, at two prices: a unit a cancel or timeout gives back
    /// waits up to this long on a node that saw the sale sold out, and a
    /// retry of a purchase whose answer was lost, sent to such a node,
    /// hears `sold_out` instead of its order (whose claim then times out).
    pub sold_out_recheck_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            enabled: false,
            redis_url: "redis://127.0.0.1:6379/".into(),
            redis_timeout_ms: 250,
            require_durable_redis: true,
            sold_out_recheck_ms: 0,
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

/// One integer key's allowed range and its value. The keys have
/// different integer types (none wider than 64 bits); `i128` holds every
/// one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub path: &'static str,
    pub lo: i128,
    pub hi: i128,
    pub got: i128,
    pub ok: bool,
}

/// A key's value as an `i128` (every key type fits; saturates otherwise).
fn wide<T: TryInto<i128>>(v: T) -> i128 {
    v.try_into().unwrap_or(i128::MAX)
}

impl Bound {
    fn new<T: PartialOrd + Copy + TryInto<i128>>(path: &'static str, v: T, lo: T, hi: T) -> Bound {
        Bound {
            path,
            ok: lo <= v && v <= hi,
            lo: wide(lo),
            hi: wide(hi),
            got: wide(v),
        }
    }

    fn message(lo: i128, hi: i128, got: i128) -> String {
        if lo == 1 && got == 0 {
            "must be > 0".into()
        } else {
            format!("must be between {lo} and {hi}, got {got}")
        }
    }

    fn error(&self) -> ConfigError {
        ConfigError {
            path: self.path.into(),
            message: Bound::message(self.lo, self.hi, self.got),
        }
    }
}

/// Kafka's legal topic names: `[a-zA-Z0-9._-]`, 1..=249 bytes, not `.`
/// or `..`.
fn topic_problem(t: &str) -> Option<String> {
    if t.is_empty() {
        return Some("must not be empty".into());
    }
    if t.len() > TOPIC_BYTES_MAX || t == "." || t == ".." {
        return Some(format!("not a Kafka topic name: {t:?}"));
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some(format!(
            "not a Kafka topic name (letters, digits, '.', '_', '-'): {t:?}"
        ));
    }
    None
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
            if path == "." {
                path.clear();
            }
            let message = e.inner().message().to_string();
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
            // An integer outside its key's type (node_id = 70000, a
            // negative size) gets the key's range, like one inside it.
            if let Some(rest) = message.strip_prefix("invalid value: integer `") {
                if let Some(got) = rest.split('`').next().and_then(|g| g.parse().ok()) {
                    if let Some(b) = Config::default()
                        .bounds()
                        .into_iter()
                        .find(|b| b.path == path)
                    {
                        let message = Bound::message(b.lo, b.hi, got);
                        return vec![ConfigError { path, message }];
                    }
                }
            }
            // A syntax error has no key path: keep toml's line and column.
            let message = if path.is_empty() {
                e.inner().to_string().trim_end().to_string()
            } else {
                message
            };
            vec![ConfigError { path, message }]
        })?;
        let errors = cfg.validate();
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    /// Every integer key with its range. Relations between keys (a batch
    /// no larger than its ring) are checked in `validate`, after each key
    /// on its own.
    pub fn bounds(&self) -> Vec<Bound> {
        let (s, r, w, e, l) = (
            &self.server,
            &self.reactor,
            &self.workers,
            &self.engine,
            &self.log,
        );
        let rl = &self.rate_limit;
        vec![
            Bound::new("server.backlog", s.backlog, 1, BACKLOG_MAX),
            Bound::new(
                "server.max_connections",
                s.max_connections,
                1,
                CONNECTIONS_MAX,
            ),
            Bound::new(
                "server.header_timeout_ms",
                s.header_timeout_ms,
                1,
                HEADER_TIMEOUT_MS_MAX,
            ),
            Bound::new(
                "server.idle_timeout_ms",
                s.idle_timeout_ms,
                1,
                IDLE_TIMEOUT_MS_MAX,
            ),
            Bound::new(
                "server.request_timeout_ms",
                s.request_timeout_ms,
                1,
                REQUEST_TIMEOUT_MS_MAX,
            ),
            Bound::new(
                "server.max_header_bytes",
                s.max_header_bytes,
                HEADER_BYTES_MIN,
                HEADER_BYTES_MAX,
            ),
            Bound::new("server.max_body_bytes", s.max_body_bytes, 1, BODY_BYTES_MAX),
            Bound::new(
                "server.shutdown_grace_ms",
                s.shutdown_grace_ms,
                0,
                SHUTDOWN_GRACE_MS_MAX,
            ),
            Bound::new("reactor.sub_reactors", r.sub_reactors, 0, THREADS_MAX),
            Bound::new("reactor.completion_ring", r.completion_ring, 1, RING_MAX),
            Bound::new(
                "sse.min_interval_ms",
                self.sse.min_interval_ms,
                SSE_MIN_INTERVAL_MS_MIN,
                SSE_MIN_INTERVAL_MS_MAX,
            ),
            Bound::new(
                "sse.heartbeat_ms",
                self.sse.heartbeat_ms,
                SSE_HEARTBEAT_MS_MIN,
                SSE_HEARTBEAT_MS_MAX,
            ),
            Bound::new(
                "sse.stall_timeout_ms",
                self.sse.stall_timeout_ms,
                SSE_STALL_TIMEOUT_MS_MIN,
                SSE_STALL_TIMEOUT_MS_MAX,
            ),
            Bound::new(
                "sse.max_subscribers",
                self.sse.max_subscribers,
                0,
                CONNECTIONS_MAX,
            ),
            Bound::new("workers.count", w.count, 0, THREADS_MAX),
            Bound::new("workers.ring_capacity", w.ring_capacity, 1, RING_MAX),
            Bound::new("workers.batch_max", w.batch_max, 1, RING_MAX),
            Bound::new("engine.node_id", e.node_id, 0, flashd_engine::NODE_ID_MAX),
            Bound::new("engine.order_ttl_ms", e.order_ttl_ms, 1, ORDER_TTL_MS_MAX),
            Bound::new("engine.max_activities", e.max_activities, 1, ACTIVITIES_MAX),
            Bound::new(
                "engine.expiry_sweep_ms",
                e.expiry_sweep_ms,
                1,
                EXPIRY_SWEEP_MS_MAX,
            ),
            Bound::new("rate_limit.global_rps", rl.global_rps, 0, RPS_MAX),
            Bound::new("rate_limit.global_burst", rl.global_burst, 0, BURST_MAX),
            Bound::new("rate_limit.per_user_rps", rl.per_user_rps, 0, RPS_MAX),
            Bound::new("rate_limit.per_user_burst", rl.per_user_burst, 0, BURST_MAX),
            Bound::new("rate_limit.per_ip_rps", rl.per_ip_rps, 0, RPS_MAX),
            Bound::new("rate_limit.per_ip_burst", rl.per_ip_burst, 0, BURST_MAX),
            Bound::new(
                "log.flush_interval_ms",
                l.flush_interval_ms,
                0,
                FLUSH_INTERVAL_MS_MAX,
            ),
            Bound::new(
                "log.commit_interval_us",
                l.commit_interval_us,
                0,
                COMMIT_INTERVAL_US_MAX,
            ),
            Bound::new(
                "log.segment_bytes",
                l.segment_bytes,
                SEGMENT_BYTES_MIN,
                SEGMENT_BYTES_MAX,
            ),
            Bound::new(
                "log.snapshot_every_events",
                l.snapshot_every_events,
                1,
                SNAPSHOT_EVERY_EVENTS_MAX,
            ),
            Bound::new(
                "log.retain_segments",
                l.retain_segments,
                0,
                RETAIN_SEGMENTS_MAX,
            ),
            Bound::new(
                "log.ring_capacity",
                l.ring_capacity,
                LOG_RING_MIN,
                LOG_RING_MAX,
            ),
            Bound::new("log.batch_max", l.batch_max, 1, LOG_BATCH_MAX),
            Bound::new(
                "log.unavailable_ms",
                l.unavailable_ms,
                1,
                UNAVAILABLE_MS_MAX,
            ),
            Bound::new(
                "log.kafka.partitions",
                l.kafka.partitions,
                1,
                PARTITIONS_MAX,
            ),
            Bound::new(
                "log.kafka.unavailable_ms",
                l.kafka.unavailable_ms,
                1,
                UNAVAILABLE_MS_MAX,
            ),
            Bound::new(
                "cluster.redis_timeout_ms",
                self.cluster.redis_timeout_ms,
                1,
                REDIS_TIMEOUT_MS_MAX,
            ),
            Bound::new(
                "cluster.sold_out_recheck_ms",
                self.cluster.sold_out_recheck_ms,
                0,
                SOLD_OUT_RECHECK_MS_MAX,
            ),
            Bound::new("sink.batch_max", self.sink.batch_max, 1, SINK_BATCH_MAX),
            Bound::new(
                "sink.batch_wait_ms",
                self.sink.batch_wait_ms,
                0,
                SINK_BATCH_WAIT_MS_MAX,
            ),
            Bound::new(
                "logging.access_sample_every",
                self.logging.access_sample_every,
                1,
                ACCESS_SAMPLE_EVERY_MAX,
            ),
        ]
    }

    fn validate(&self) -> Vec<ConfigError> {
        let mut errs: Vec<ConfigError> = Vec::new();
        let mut bad = |path: &str, message: String| {
            errs.push(ConfigError {
                path: path.into(),
                message,
            })
        };
        let bounds = self.bounds();
        let in_range = |path: &str| bounds.iter().any(|b| b.path == path && b.ok);
        for b in bounds.iter().filter(|b| !b.ok) {
            let e = b.error();
            bad(&e.path, e.message);
        }
        // Relations the constructors downstream rely on; each is checked
        // only when the keys it relates are themselves in range, so one
        // typo gives one error.
        let (l, w) = (&self.log, &self.workers);
        if in_range("log.ring_capacity")
            && in_range("log.batch_max")
            && l.batch_max > l.ring_capacity
        {
            bad(
                "log.batch_max",
                format!(
                    "must be at most log.ring_capacity ({}), got {}",
                    l.ring_capacity, l.batch_max
                ),
            );
        }
        if in_range("workers.ring_capacity")
            && in_range("workers.batch_max")
            && w.batch_max > w.ring_capacity
        {
            bad(
                "workers.batch_max",
                format!(
                    "must be at most workers.ring_capacity ({}), got {}",
                    w.ring_capacity, w.batch_max
                ),
            );
        }
        // A buy on Kafka waits up to log.kafka.unavailable_ms for its
        // delivery report; a request deadline inside that would answer
        // 503 for orders the log is about to confirm.
        if l.backend == LogBackend::Kafka
            && in_range("server.request_timeout_ms")
            && in_range("log.kafka.unavailable_ms")
            && self.server.request_timeout_ms <= l.kafka.unavailable_ms
        {
            bad(
                "server.request_timeout_ms",
                format!(
                    "must exceed log.kafka.unavailable_ms ({}) with log.backend = \"kafka\", got {}",
                    l.kafka.unavailable_ms, self.server.request_timeout_ms
                ),
            );
        }
        if self.server.data_dir.trim().is_empty() {
            bad("server.data_dir", "must not be empty".into());
        }
        for (path, secret) in [
            ("auth.jwt_secret", &self.auth.jwt_secret),
            ("auth.admin_token", &self.auth.admin_token),
        ] {
            // Empty: generated at first start. Never echo the value.
            if !secret.is_empty() && secret.len() < MIN_SECRET_BYTES {
                bad(
                    path,
                    format!(
                        "must be at least {MIN_SECRET_BYTES} bytes (as a generated one is), got {}",
                        secret.len()
                    ),
                );
            }
        }
        // The admin token travels in an `Authorization: Bearer` header,
        // which carries visible ASCII only: any other byte would lock the
        // admin out for good.
        if !self.auth.admin_token.bytes().all(|b| b.is_ascii_graphic()) {
            bad(
                "auth.admin_token",
                "must be visible ASCII without spaces (it is sent in an HTTP header)".into(),
            );
        }
        let k = &l.kafka;
        if l.backend == LogBackend::Kafka || self.sink.embedded {
            if k.brokers.trim().is_empty() {
                bad("log.kafka.brokers", "must name at least one broker".into());
            }
            if let Some(why) = topic_problem(&k.topic) {
                bad("log.kafka.topic", why);
            } else if let Some(why) = topic_problem(&self.log_topic()) {
                bad("log.kafka.topic", format!("with cluster.enabled: {why}"));
            }
        }
        for key in ["enable.idempotence", "acks", "message.timeout.ms"] {
            if k.properties.contains_key(key) {
                bad(
                    &format!("log.kafka.properties.{key}"),
                    "is set by flashd (durability depends on it)".into(),
                );
            }
        }
        if self.mysql.shards.len() > SHARDS_MAX {
            bad(
                "mysql.shards",
                format!(
                    "at most {SHARDS_MAX} shards, got {}",
                    self.mysql.shards.len()
                ),
            );
        }
        for (i, sh) in self.mysql.shards.iter().enumerate() {
            if let Err(e) = flashd_sink::check_url(&sh.url) {
                bad(&format!("mysql.shards[{i}].url"), e.to_string());
            }
        }
        if self.sink.embedded && l.backend != LogBackend::Kafka {
            bad("sink.embedded", "needs log.backend = \"kafka\"".into());
        }
        if self.sink.embedded && self.mysql.shards.is_empty() {
            bad(
                "mysql.shards",
                "sink.embedded needs at least one shard".into(),
            );
        }
        if self.sink.group.trim().is_empty() {
            bad(
                "sink.group",
                "must not be empty (a Kafka consumer group id)".into(),
            );
        }
        if !self.sink.metrics_listen.is_empty()
            && self.sink.metrics_listen.parse::<SocketAddr>().is_err()
        {
            bad(
                "sink.metrics_listen",
                format!("not an IP:port address: {:?}", self.sink.metrics_listen),
            );
        }
        let c = &self.cluster;
        if c.enabled {
            // Every node's orders go to its own topic of one broker
            // cluster; the file log would keep a node's orders on a disk
            // no other node (or the sink) can read.
            if l.backend != LogBackend::Kafka {
                bad(
                    "cluster.enabled",
                    "needs log.backend = \"kafka\" (every node's orders must reach the sink)"
                        .into(),
                );
            }
            // A Redis call blocks its thread for up to the timeout: never
            // a reactor.
            if w.count == 0 {
                bad(
                    "workers.count",
                    "must be at least 1 with cluster.enabled (Redis calls run on workers, never on reactors)"
                        .into(),
                );
            }
            if let Err(why) = flashd_redis::ClientConfig::check_url(&c.redis_url) {
                bad("cluster.redis_url", why);
            }
            if in_range("engine.expiry_sweep_ms")
                && self.engine.expiry_sweep_ms > CLUSTER_SWEEP_MS_MAX
            {
                bad(
                    "engine.expiry_sweep_ms",
                    format!(
                        "must be at most {CLUSTER_SWEEP_MS_MAX} with cluster.enabled (the sweeper renews the node's id lease), got {}",
                        self.engine.expiry_sweep_ms
                    ),
                );
            }
            if in_range("cluster.redis_timeout_ms")
                && in_range("server.request_timeout_ms")
                && c.redis_timeout_ms >= self.server.request_timeout_ms
            {
                bad(
                    "cluster.redis_timeout_ms",
                    format!(
                        "must be below server.request_timeout_ms ({}), got {}",
                        self.server.request_timeout_ms, c.redis_timeout_ms
                    ),
                );
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err() {
            bad(
                "logging.level",
                format!("not a log filter: {:?}", self.logging.level),
            );
        }
        errs
    }

    /// Sub-reactors to run: the configured count, or one per CPU this
    /// process may use.
    pub fn resolved_sub_reactors(&self) -> usize {
        match self.reactor.sub_reactors {
            0 => core_count(),
            n => n,
        }
    }

    /// Open files `serve` needs: one per connection, plus `NOFILE_SPARE`.
    pub fn nofile_wanted(&self) -> u64 {
        /// Listeners, epoll and eventfds per reactor, log segments and
        /// snapshots, secrets: a few dozen; 64 leaves room.
        const NOFILE_SPARE: u64 = 64;
        u64::try_from(self.server.max_connections)
            .unwrap_or(u64::MAX)
            .saturating_add(NOFILE_SPARE)
    }

    /// The topic this node writes: `log.kafka.topic`, or in cluster mode
    /// that name with the node's id (`flashd-orders.node3`), because
    /// each node's log is a single writer's sequence of LSNs.
    pub fn log_topic(&self) -> String {
        if self.cluster.enabled {
            flashd_kafka::node_topic(&self.log.kafka.topic, self.engine.node_id)
        } else {
            self.log.kafka.topic.clone()
        }
    }

    pub fn kafka_config(&self) -> flashd_kafka::KafkaConfig {
        let k = &self.log.kafka;
        flashd_kafka::KafkaConfig {
            brokers: k.brokers.clone(),
            topic: self.log_topic(),
            timeout: Duration::from_millis(k.unavailable_ms),
            properties: k
                .properties
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
        }
    }

    pub fn sink_config(&self) -> flashd_sink::SinkConfig {
        flashd_sink::SinkConfig {
            kafka: self.kafka_config(),
            group: self.sink.group.clone(),
            shards: self.mysql.shards.iter().map(|s| s.url.clone()).collect(),
            batch_max: self.sink.batch_max,
            batch_wait: Duration::from_millis(self.sink.batch_wait_ms),
        }
    }

    /// What `flashd sink` (a process of its own) follows: the log's topic,
    /// or in cluster mode every node's topic of the base name, now and
    /// later (`<base>.node*`, a pattern subscription).
    pub fn standalone_sink_config(&self) -> flashd_sink::SinkConfig {
        let mut c = self.sink_config();
        if self.cluster.enabled {
            c.kafka.topic = format!("{}.node*", self.log.kafka.topic);
        }
        c
    }

    pub fn engine_config(&self) -> flashd_engine::EngineConfig {
        flashd_engine::EngineConfig {
            node_id: self.engine.node_id,
            order_ttl_ms: self.engine.order_ttl_ms,
            max_activities: self.engine.max_activities,
            // The log is always attached: cancelled units wait for it.
            // In cluster mode Redis holds the units; the engine only
            // records what this node logged.
            hold_released_until_durable: !self.cluster.enabled,
        }
    }

    pub fn reactor_config(&self) -> flashd_reactor::ServerConfig {
        let s = &self.server;
        flashd_reactor::ServerConfig {
            listen: s.listen,
            backlog: s.backlog,
            max_connections: s.max_connections,
            header_timeout: Duration::from_millis(s.header_timeout_ms),
            idle_timeout: Duration::from_millis(s.idle_timeout_ms),
            request_timeout: Duration::from_millis(s.request_timeout_ms),
            limits: flashd_protocol::Limits {
                max_header_bytes: s.max_header_bytes,
                max_body_bytes: s.max_body_bytes,
            },
            sub_reactors: self.resolved_sub_reactors(),
            pin_cpus: self.reactor.pin_cpus,
            shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
            completion_ring: self.reactor.completion_ring,
            stream: flashd_reactor::StreamConfig {
                max_subscribers: self.sse.max_subscribers,
                poll_interval: Duration::from_millis(self.sse.min_interval_ms),
                heartbeat: Duration::from_millis(self.sse.heartbeat_ms),
                stall_timeout: Duration::from_millis(self.sse.stall_timeout_ms),
            },
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
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
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
        assert_eq!(
            errs("[server]\nlisten = \"nowhere\"\n"),
            ["server.listen: not an IP:port address: \"nowhere\""]
        );
        let e = errs("[server]\nmax_header_bytes = 1\n[reactor]\nsub_reactors = 5000\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("server.max_header_bytes:")));
        assert!(e.iter().any(|m| m.starts_with("reactor.sub_reactors:")));
        assert!(errs("[server]\nbacklog = -1\n")[0].starts_with("server.backlog:"));
    }

    #[test]
    fn logging_keys_are_checked() {
        assert_eq!(
            errs("[logging]\nformat = \"xml\"\n"),
            ["logging.format: unknown variant `xml`, expected `text` or `json`"]
        );
        assert_eq!(
            errs("[logging]\naccess_log = \"some\"\n"),
            ["logging.access_log: unknown variant `some`, expected one of `off`, `errors`, `all`"]
        );
        assert_eq!(
            errs("[logging]\naccess_sample_every = 0\n"),
            ["logging.access_sample_every: must be > 0"]
        );
        let c = Config::parse(
            "[logging]\nformat = \"json\"\naccess_log = \"all\"\naccess_sample_every = 100\n",
        )
        .unwrap();
        assert_eq!(c.logging.format, LogFormat::Json);
        assert_eq!(c.logging.access_log, AccessLogMode::All);
        assert_eq!(c.logging.access_sample_every, 100);
    }

    #[test]
    fn log_and_sink_keys_are_checked() {
        assert_eq!(
            errs("[log]\nbackend = \"kafak\"\n"),
            ["log.backend: unknown variant `kafak`, expected `file` or `kafka`"]
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

    #[test]
    fn cluster_keys_are_checked_by_path() {
        // Cluster mode needs the Kafka log and workers.
        let e = errs("[cluster]\nenabled = true\n");
        assert!(
            e.iter()
                .any(|m| m.starts_with("cluster.enabled: needs log.backend = \"kafka\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("workers.count: must be at least 1")),
            "{e:?}"
        );
        let base = "[log]\nbackend = \"kafka\"\n[workers]\ncount = 2\n[cluster]\nenabled = true\n";
        let ok = Config::parse(base).unwrap();
        assert_eq!(ok.log_topic(), "flashd-orders.node0");
        assert_eq!(ok.kafka_config().topic, "flashd-orders.node0");
        let ok = Config::parse(&format!("{base}[engine]\nnode_id = 7\n")).unwrap();
        assert_eq!(ok.log_topic(), "flashd-orders.node7");
        // Off, the topic is the configured one.
        let single = Config::parse("[log]\nbackend = \"kafka\"\n").unwrap();
        assert_eq!(single.log_topic(), "flashd-orders");
        assert_eq!(single.standalone_sink_config().kafka.topic, "flashd-orders");
        // A node's embedded sink reads its topic; `flashd sink` all of them.
        let ok = Config::parse(base).unwrap();
        assert_eq!(ok.sink_config().kafka.topic, "flashd-orders.node0");
        assert_eq!(
            ok.standalone_sink_config().kafka.topic,
            "flashd-orders.node*"
        );
        assert_eq!(
            errs(&format!("{base}redis_url = \"http://x\"\n")),
            ["cluster.redis_url: must be a redis://host:port/db URL, got \"http://x\""]
        );
        assert!(
            errs(&format!("{base}redis_url = \"redis://\"\n"))[0].starts_with("cluster.redis_url:")
        );
        assert_eq!(
            errs(&format!("{base}redis_timeout_ms = 0\n")),
            ["cluster.redis_timeout_ms: must be > 0"]
        );
        assert_eq!(
            errs(&format!("{base}redis_timeout_ms = 20000\n")),
            ["cluster.redis_timeout_ms: must be below server.request_timeout_ms (10000), got 20000"]
        );
        assert_eq!(
            errs(&format!("{base}sold_out_recheck_ms = 70000\n")),
            ["cluster.sold_out_recheck_ms: must be between 0 and 60000, got 70000"]
        );
        assert_eq!(
            errs(&format!("{base}nodes = 3\n")),
            ["cluster.nodes: unknown key"]
        );
        assert_eq!(
            errs(&format!("{base}[engine]\nexpiry_sweep_ms = 5001\n")),
            ["engine.expiry_sweep_ms: must be at most 5000 with cluster.enabled (the sweeper renews the node's id lease), got 5001"]
        );
        assert!(Config::parse(&format!("{base}[engine]\nexpiry_sweep_ms = 5000\n")).is_ok());
        assert!(Config::parse("[engine]\nexpiry_sweep_ms = 60000\n").is_ok());
    }
}
