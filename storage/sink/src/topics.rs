//! Which topics a sink follows, named by `SinkConfig::kafka.topic`:
//!
//! * `flashd-orders`: one topic (single-node mode, and a node's embedded
//!   sink, which follows its own node's topic);
//! * `a,b,c`: those topics;
//! * `flashd-orders.node*`: every node topic of the base name
//!   `flashd-orders` (`flashd-orders.node<id>`, see `flashd_kafka`),
//!   including those created after the sink started: a standalone sink of
//!   a cluster. It subscribes by pattern, and librdkafka finds a new
//!   node's topic at its next metadata refresh ([`NODE_TOPIC_REFRESH`]).
//!
//! Every topic is its own writer's LSN sequence: the sink keeps marks and
//! voided ranges per topic, and de-duplicates moves across topics by
//! order (see `copies`).

use std::fmt;

use crate::SinkError;

/// How often a sink following node topics looks for new ones: a node
/// that joins a running cluster waits at most this long for its first
/// records to be projected (librdkafka's default is five minutes).
pub const NODE_TOPIC_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// A topic name's longest spelling (Kafka's own limit).
const TOPIC_NAME_MAX: usize = 249;

/// The suffix that makes a name stand for every node topic of its base.
const NODES_SUFFIX: &str = ".node*";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topics {
    /// These topics, and no others.
    Named(Vec<String>),
    /// Every `<base>.node<id>` topic, now and later.
    NodesOf(String),
}

impl Topics {
    /// Parse a `kafka.topic` setting (see the module doc).
    pub fn parse(s: &str) -> Result<Topics, SinkError> {
        let bad = |why: &str| SinkError::Topics {
            value: s.to_string(),
            why: why.to_string(),
        };
        if let Some(base) = s.strip_suffix(NODES_SUFFIX) {
            check_name(base).map_err(|w| bad(&w))?;
            return Ok(Topics::NodesOf(base.to_string()));
        }
        let names: Vec<String> = s.split(',').map(|t| t.trim().to_string()).collect();
        for n in &names {
            check_name(n).map_err(|w| bad(&w))?;
        }
        let mut uniq = names.clone();
        uniq.sort();
        uniq.dedup();
        if uniq.len() != names.len() {
            return Err(bad("a topic is named twice"));
        }
        Ok(Topics::Named(names))
    }

    /// What to subscribe to: the names, or librdkafka's regular
    /// expression (a name starting with `^`) for node topics.
    pub fn subscription(&self) -> Vec<String> {
        match self {
            Topics::Named(n) => n.clone(),
            Topics::NodesOf(base) => vec![format!("^{}\\.node[0-9]+$", escape(base))],
        }
    }

    /// Does the sink follow `topic`?
    pub fn follows(&self, topic: &str) -> bool {
        match self {
            Topics::Named(n) => n.iter().any(|t| t == topic),
            Topics::NodesOf(base) => flashd_kafka::topic_node(base, topic).is_some(),
        }
    }

    /// Does this follow topics that may appear later?
    pub fn is_pattern(&self) -> bool {
        matches!(self, Topics::NodesOf(_))
    }
}

impl fmt::Display for Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topics::Named(n) => f.write_str(&n.join(",")),
            Topics::NodesOf(b) => write!(f, "{b}{NODES_SUFFIX}"),
        }
    }
}

/// Kafka's rule for a topic name: 1 to 249 of `[A-Za-z0-9._-]`.
fn check_name(n: &str) -> Result<(), String> {
    if n.is_empty() {
        return Err("an empty topic name".into());
    }
    if n.len() > TOPIC_NAME_MAX {
        return Err(format!("{n:?} is longer than {TOPIC_NAME_MAX} characters"));
    }
    if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("{n:?} holds {c:?}; a topic name is [A-Za-z0-9._-]"));
    }
    Ok(())
}

/// A checked name as a regular expression matching only itself (`.` is
/// the one character of the name alphabet with a meaning there).
fn escape(name: &str) -> String {
    name.replace('.', "\\.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_topic_several_and_every_node_topic_of_a_base() {
        assert_eq!(
            Topics::parse("flashd-orders").unwrap(),
            Topics::Named(vec!["flashd-orders".into()])
        );
        let two = Topics::parse("o.node1, o.node2").unwrap();
        assert_eq!(two.subscription(), ["o.node1", "o.node2"]);
        assert!(two.follows("o.node2") && !two.follows("o.node3"));
        let all = Topics::parse("flashd.orders.node*").unwrap();
        assert_eq!(all, Topics::NodesOf("flashd.orders".into()));
        assert_eq!(all.subscription(), ["^flashd\\.orders\\.node[0-9]+$"]);
        assert_eq!(all.to_string(), "flashd.orders.node*");
        for t in ["flashd.orders.node0", "flashd.orders.node17"] {
            assert!(all.follows(t), "{t}");
        }
        for t in [
            "flashd.orders",
            "flashd.orders.node",
            "flashd.orders.node01",
            "flashd.orders.node1x",
            "flashd.orders.node70000",
            "flashdxorders.node1",
        ] {
            assert!(!all.follows(t), "{t}");
        }
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        for bad in ["", "a,,b", "a b", "a,a", ".node*", "x/y.node*", "ü"] {
            let e = Topics::parse(bad).unwrap_err().to_string();
            assert!(e.contains("topic"), "{bad:?}: {e}");
        }
    }
}
