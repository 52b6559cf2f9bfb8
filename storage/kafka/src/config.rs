//! Where the topic is and how long a commit may wait for it, and the
//! librdkafka settings every client of it shares.

use std::time::Duration;

use rdkafka::config::ClientConfig;

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    /// How long a commit may wait for delivery reports; librdkafka's
    /// `message.timeout.ms` is set to it, so every record of a batch is
    /// reported (delivered or failed) within it.
    pub timeout: Duration,
    /// librdkafka properties passed through (they override the defaults
    /// set here, except the ones correctness depends on).
    pub properties: Vec<(String, String)>,
}

pub(crate) fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    c.set("reconnect.backoff.max.ms", "1000");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}
