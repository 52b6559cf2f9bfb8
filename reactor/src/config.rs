use std::net::SocketAddr;
use std::time::Duration;

use flashd_protocol::Limits;

use crate::stream::StreamConfig;

/// The network core's settings, resolved (no "0 = auto" left).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub backlog: i32,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub limits: Limits,
    /// Resolved sub-reactor count (≥ 1).
    pub sub_reactors: usize,
    pub pin_cpus: bool,
    /// How long in-flight requests get to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Deferred requests one reactor may have in flight; also the size of
    /// its completion ring.
    pub completion_ring: usize,
    /// How long a deferred request may wait for its completion before the
    /// reactor answers it `503` itself (outcome unknown: the client retries
    /// with the same `request_id`). The late completion is then dropped.
    pub request_timeout: Duration,
    /// Long-lived event streams (subscribers, polling, heartbeats).
    pub stream: StreamConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            backlog: 4096,
            max_connections: 100_000,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            limits: Limits::default(),
            sub_reactors: 1,
            pin_cpus: false,
            shutdown_grace: Duration::from_secs(10),
            completion_ring: 16 * 1024,
            // Above the order log's worst group commit (a Kafka commit waits
            // up to its `unavailable_ms`, a few seconds), so a slow but
            // healthy log is never cut off; short enough that a client is
            // not left hanging past a typical HTTP client timeout (30 s).
            request_timeout: Duration::from_secs(10),
            stream: StreamConfig::default(),
        }
    }
}
