//! Why the sink could not start or migrate, typed: each names the thing at
//! fault (the shard's URL, the broker). Errors while running are retried or
//! parked, never returned (see the crate doc).

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("no MySQL shards configured")]
    NoShards,
    #[error("{url}: {source}")]
    Url {
        url: String,
        source: mysql_async::UrlError,
    },
    #[error("{url}: names no database (mysql://user@host:port/DATABASE)")]
    NoDatabase { url: String },
    #[error("{url}: {source}")]
    Mysql {
        url: String,
        source: mysql_async::Error,
    },
    #[error("kafka.topic = {value:?}: {why} (one topic, several as a,b,c, or every node topic of a base as <base>.node*)")]
    Topics { value: String, why: String },
    #[error("kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("starting the sink's MySQL runtime: {0}")]
    Runtime(std::io::Error),
    #[error("starting the sink's thread: {0}")]
    Thread(std::io::Error),
}
