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
