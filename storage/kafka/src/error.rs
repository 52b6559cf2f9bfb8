//! What can go wrong talking to the broker, typed. It reaches the group
//! commit as [`flashd_log::LogError::Backend`] (the writer only needs to
//! know the commit failed); callers that care downcast it back.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;

#[derive(Debug, thiserror::Error)]
pub enum KafkaLogError {
    /// librdkafka refused a call (configuration, produce queue, metadata,
    /// consume).
    #[error(transparent)]
    Client(#[from] KafkaError),
    /// The broker answered a group's records with errors.
    #[error("{failed} of {sent} records failed{}", first.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    Delivery {
        failed: usize,
        sent: usize,
        first: Option<String>,
    },
    /// Delivery reports did not come back within the commit timeout.
    #[error("{missing} of {sent} records not reported within {timeout:?}")]
    DeliveryTimeout {
        missing: usize,
        sent: usize,
        timeout: Duration,
    },
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("topic {topic} not found")]
    NoTopic { topic: String },
    #[error("topic {topic}: {code:?}")]
    Topic { topic: String, code: RDKafkaRespErr },
    /// Recovery read nothing from a partition for too long.
    #[error("replaying {topic}: partition {partition} gave nothing for {stalled:?} at offset {offset} of {end}")]
    RecoveryStalled {
        topic: String,
        partition: i32,
        offset: i64,
        end: i64,
        stalled: Duration,
    },
    /// A snapshot's place in the topic that does not fit the topic: it is
    /// refused, and recovery replays the whole topic instead.
    #[error("snapshot refused for topic {topic}: {why}")]
    CutMismatch { topic: String, why: String },
}

impl From<KafkaLogError> for flashd_log::LogError {
    fn from(e: KafkaLogError) -> flashd_log::LogError {
        flashd_log::LogError::Backend {
            backend: "kafka",
            source: Box::new(e),
        }
    }
}

/// A librdkafka call that failed, as the log's error.
pub(crate) fn kafka_err(e: rdkafka::error::KafkaError) -> flashd_log::LogError {
    KafkaLogError::Client(e).into()
}
