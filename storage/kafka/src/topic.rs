//! Creating the topic at start-up when it does not exist yet.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use flashd_log::LogError;

use crate::config::{client_config, KafkaConfig};
use crate::error::{kafka_err, KafkaLogError};

/// Create the topic if it does not exist (`partitions` partitions).
pub fn ensure_topic(cfg: &KafkaConfig, partitions: i32) -> Result<bool, LogError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        client_config(cfg).create().map_err(kafka_err)?;
    let consumer: BaseConsumer = client_config(cfg).create().map_err(kafka_err)?;
    let md = consumer
        .fetch_metadata(Some(&cfg.topic), Duration::from_secs(10))
        .map_err(kafka_err)?;
    if md
        .topics()
        .iter()
        .any(|t| t.name() == cfg.topic && t.error().is_none() && !t.partitions().is_empty())
    {
        return Ok(false);
    }
    let topic = NewTopic::new(&cfg.topic, partitions, TopicReplication::Fixed(1));
    // The admin client's futures are completed by librdkafka's own
    // thread: a plain blocking executor is enough (no async runtime here).
    let res = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .map_err(kafka_err)?;
    for r in res {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(KafkaLogError::CreateTopic { topic: name, code }.into());
            }
        }
    }
    Ok(true)
}

/// The topic of node `node` in cluster mode: `base.node<id>`. Every node
/// is the single writer of its own topic (its LSNs are its own sequence,
/// which recovery and the sink's abort handling rely on); the sink reads
/// them all.
pub fn node_topic(base: &str, node: u16) -> String {
    format!("{base}.node{node}")
}

/// The node id of a topic named by [`node_topic`] from `base`; `None` for
/// any other topic.
pub fn topic_node(base: &str, topic: &str) -> Option<u16> {
    let rest = topic.strip_prefix(base)?.strip_prefix(".node")?;
    if rest.is_empty() || rest.len() > 5 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // No leading zeros: one name per node.
    if rest.len() > 1 && rest.starts_with('0') {
        return None;
    }
    rest.parse().ok()
}

/// Every topic on the brokers named by [`node_topic`] from `base`, with
/// its node id, sorted by node: the logs of a cluster's nodes (for a
/// reader of all of them, such as `flashd reconcile`). A topic whose
/// metadata carries an error is left out, as it cannot be read.
pub fn node_topics(cfg: &KafkaConfig, base: &str) -> Result<Vec<(u16, String)>, LogError> {
    let consumer: BaseConsumer = client_config(cfg).create().map_err(kafka_err)?;
    let md = consumer
        .fetch_metadata(None, cfg.timeout.max(Duration::from_secs(10)))
        .map_err(kafka_err)?;
    let mut out: Vec<(u16, String)> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .filter_map(|t| Some((topic_node(base, t.name())?, t.name().to_string())))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_topics_round_trip_and_nothing_else_parses() {
        for n in [0u16, 1, 9, 10, 1023] {
            assert_eq!(
                topic_node("flashd-orders", &node_topic("flashd-orders", n)),
                Some(n)
            );
        }
        for t in [
            "flashd-orders",
            "flashd-orders.node",
            "flashd-orders.node01",
            "flashd-orders.node1x",
            "flashd-orders.node1.x",
            "other.node1",
            "flashd-orders.node999999",
        ] {
            assert_eq!(topic_node("flashd-orders", t), None, "{t}");
        }
    }
}
