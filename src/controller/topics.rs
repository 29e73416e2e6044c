//! Topic administration on the controller: CreateTopics, DeleteTopics,
//! CreatePartitions. Catalog writes (and their fsyncs) run on the
//! blocking pool.

use super::Controller;
use crate::storage::run_blocking;
use crate::topics::{validate_config, validate_topic_name, TopicEntry};
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::{error, info};

/// A topic to create, as CreateTopics (or auto-creation) asks for it.
#[derive(Debug, Clone)]
pub(crate) struct NewTopic {
    pub name: String,
    /// -1: the broker default (NUM_PARTITIONS).
    pub partitions: i32,
    /// -1 or 1; there is one broker.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// Explicit replica assignment: (partition index, broker ids).
    pub assignments: Vec<(i32, Vec<i32>)>,
}

/// The result for one topic of an admin request.
#[derive(Debug, Clone)]
pub(crate) struct TopicOutcome {
    pub name: String,
    pub error_code: i16,
    pub message: Option<String>,
    pub entry: Option<Arc<TopicEntry>>,
}

impl TopicOutcome {
    /// The same failure for every topic named (the controller unreachable).
    pub(crate) fn all_failed(names: &[String], why: &str) -> Vec<TopicOutcome> {
        names
            .iter()
            .map(|n| TopicOutcome::err(n, ResponseError::KafkaStorageError, why))
            .collect()
    }

    fn ok(name: &str, entry: Option<Arc<TopicEntry>>) -> Self {
        TopicOutcome {
            name: name.into(),
            error_code: 0,
            message: None,
            entry,
        }
    }
    fn err(name: &str, error: ResponseError, message: impl Into<String>) -> Self {
        TopicOutcome {
            name: name.into(),
            error_code: error.code(),
            message: Some(message.into()),
            entry: None,
        }
    }
}

fn check_new_topic(controller: &Controller, topic: &NewTopic) -> Result<TopicEntry, TopicOutcome> {
    let name = &topic.name;
    validate_topic_name(name)
        .map_err(|m| TopicOutcome::err(name, ResponseError::InvalidTopicException, m))?;
    let context = controller.context();
    if context.catalog.snapshot().get(name).is_some() {
        return Err(TopicOutcome::err(
            name,
            ResponseError::TopicAlreadyExists,
            format!("topic {name} already exists"),
        ));
    }
    let partitions = if !topic.assignments.is_empty() {
        if topic.partitions != -1 || topic.replication_factor != -1 {
            return Err(TopicOutcome::err(
                name,
                ResponseError::InvalidRequest,
                "give either a partition count and replication factor or a replica assignment, not both",
            ));
        }
        let mut indexes: Vec<i32> = topic.assignments.iter().map(|(p, _)| *p).collect();
        indexes.sort_unstable();
        if indexes.iter().enumerate().any(|(i, p)| *p != i as i32) {
            return Err(TopicOutcome::err(
                name,
                ResponseError::InvalidReplicaAssignment,
                "assigned partitions must be numbered 0, 1, 2, ... without gaps",
            ));
        }
        for (_, brokers) in &topic.assignments {
            check_replicas(context.identity.node_id, brokers)
                .map_err(|m| TopicOutcome::err(name, ResponseError::InvalidReplicaAssignment, m))?;
        }
        topic.assignments.len() as i32
    } else if topic.partitions == -1 {
        context.config.num_partitions as i32
    } else {
        topic.partitions
    };
    if partitions < 1 {
        return Err(TopicOutcome::err(
            name,
            ResponseError::InvalidPartitions,
            "partitions must be at least 1",
        ));
    }
    // In cluster mode a partition's one copy is its leader's and its
    // durability object storage's; a factor up to the live brokers is
    // accepted, as Kafka accepts it up to its brokers.
    let live_brokers = controller
        .partitions
        .router()
        .snapshot()
        .cluster()
        .map_or(1, |c| c.brokers.len().max(1));
    if topic.replication_factor != -1
        && (topic.replication_factor < 1 || topic.replication_factor as usize > live_brokers)
    {
        return Err(TopicOutcome::err(
            name,
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {} is larger than the {live_brokers} available broker{}",
                topic.replication_factor,
                if live_brokers == 1 { "" } else { "s" }
            ),
        ));
    }
    for (key, value) in &topic.configs {
        validate_config(key, value).map_err(|m| TopicOutcome::err(name, ResponseError::InvalidConfig, m))?;
    }
    crate::topics::validate_topic_configs(&topic.configs)
        .map_err(|m| TopicOutcome::err(name, ResponseError::InvalidConfig, m))?;
    Ok(TopicEntry::new(name, partitions, topic.configs.clone()))
}

/// Checks one partition's assigned replicas: live brokers (here, this
/// one), no repeats.
pub(crate) fn check_replicas(node: i32, brokers: &[i32]) -> Result<(), String> {
    if brokers.is_empty() {
        return Err("a partition needs at least one replica".into());
    }
    if let Some(unknown) = brokers.iter().find(|b| **b != node) {
        return Err(format!(
            "broker {unknown} is not a live broker (the only one is {node})"
        ));
    }
    if brokers.len() > 1 {
        return Err(format!(
            "{} replicas on broker {node}: a replica assignment may name each broker once",
            brokers.len()
        ));
    }
    Ok(())
}

impl Controller {
    /// The topic as the catalog has it, or UNKNOWN_TOPIC_OR_PARTITION.
    fn existing(&self, name: &str) -> Result<Arc<TopicEntry>, TopicOutcome> {
        self.context()
            .catalog
            .snapshot()
            .get(name)
            .cloned()
            .ok_or_else(|| {
                TopicOutcome::err(
                    name,
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic {name}"),
                )
            })
    }

    /// Persists a topic (`Some`) or its removal (`None`) in the catalog,
    /// durably, off the shard thread.
    async fn store(&self, name: &str, entry: Option<Arc<TopicEntry>>) -> Result<(), TopicOutcome> {
        let catalog = self.context().catalog.clone();
        let key = name.to_string();
        run_blocking("writing the topic catalog", move || {
            catalog
                .update(|topics| match &entry {
                    Some(entry) => {
                        topics.insert(key.clone(), entry.clone());
                    }
                    None => {
                        topics.remove(&key);
                    }
                })
                .map(|_| ())
        })
        .await
        .map_err(|e| TopicOutcome::err(name, ResponseError::KafkaStorageError, e.to_string()))
    }

    /// Adds a new topic to the catalog, unless a topic of its name got
    /// there first (another broker's controller, in cluster mode).
    async fn create(&self, entry: Arc<TopicEntry>) -> Result<(), TopicOutcome> {
        let catalog = self.context().catalog.clone();
        let name = entry.name.clone();
        let ours = entry.clone();
        let stored = run_blocking("writing the topic catalog", move || {
            catalog.update(|topics| {
                topics.entry(ours.name.clone()).or_insert_with(|| ours.clone());
            })
        })
        .await
        .map_err(|e| TopicOutcome::err(&name, ResponseError::KafkaStorageError, e.to_string()))?;
        if stored.get(&name).map(|t| t.id) != Some(entry.id) {
            return Err(TopicOutcome::err(
                &name,
                ResponseError::TopicAlreadyExists,
                format!("topic {name} already exists"),
            ));
        }
        Ok(())
    }

    /// CreateTopics (and auto-creation).
    pub(crate) async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let mut outcomes = Vec::with_capacity(topics.len());
        for topic in &topics {
            let created = async {
                let entry = Arc::new(check_new_topic(self, topic)?);
                if !validate_only {
                    self.create(entry.clone()).await?;
                    info!(topic = %topic.name, partitions = entry.partitions, id = %entry.id, "created topic");
                }
                Ok(TopicOutcome::ok(&topic.name, Some(entry)))
            };
            outcomes.push(created.await.unwrap_or_else(|failed| failed));
        }
        outcomes
    }

    /// DeleteTopics: out of the catalog first (so nothing new is written),
    /// then every shard deletes the partitions it owns; a shard that fails
    /// is reported here and retries in its periodic sweep (its directories
    /// carry the old topic id, so they are never reused).
    pub(crate) async fn delete_topics(&self, names: Vec<String>) -> Vec<TopicOutcome> {
        let mut outcomes = Vec::with_capacity(names.len());
        for name in names {
            let entry = match self.existing(&name) {
                Ok(entry) => entry,
                Err(failed) => {
                    outcomes.push(failed);
                    continue;
                }
            };
            if let Err(failed) = self.store(&name, None).await {
                outcomes.push(failed);
                continue;
            }
            let failures = self
                .partitions
                .drop_topic(&name, entry.id, self.context().shards)
                .await;
            for failure in &failures {
                error!(topic = %name, id = %entry.id, error = %failure, "a shard could not delete its partitions; it retries");
            }
            info!(topic = %name, id = %entry.id, "deleted topic");
            outcomes.push(TopicOutcome::ok(&name, Some(entry)));
        }
        outcomes
    }

    /// CreatePartitions: raise a topic's partition count; new partitions'
    /// logs are created on first use.
    pub(crate) async fn create_partitions(
        &self,
        changes: Vec<NewPartitions>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let node = self.context().identity.node_id;
        let mut outcomes = Vec::with_capacity(changes.len());
        for (name, count, assignments) in &changes {
            let grown = async {
                let entry = self.existing(name)?;
                if *count <= entry.partitions {
                    let message = format!(
                        "topic {name} has {} partitions; the new count must be larger",
                        entry.partitions
                    );
                    return Err(TopicOutcome::err(name, ResponseError::InvalidPartitions, message));
                }
                if let Some(assignments) = assignments {
                    let added = count - entry.partitions;
                    if assignments.len() != added as usize {
                        let message = format!(
                            "{added} partitions are added but {} assignments given",
                            assignments.len()
                        );
                        return Err(TopicOutcome::err(
                            name,
                            ResponseError::InvalidReplicaAssignment,
                            message,
                        ));
                    }
                    for brokers in assignments {
                        check_replicas(node, brokers).map_err(|m| {
                            TopicOutcome::err(name, ResponseError::InvalidReplicaAssignment, m)
                        })?;
                    }
                }
                if !validate_only {
                    let mut grown = (*entry).clone();
                    grown.partitions = *count;
                    self.store(name, Some(Arc::new(grown))).await?;
                    info!(topic = %name, partitions = count, "added partitions");
                }
                Ok(TopicOutcome::ok(name, None))
            };
            outcomes.push(grown.await.unwrap_or_else(|failed| failed));
        }
        outcomes
    }
}

/// One topic's CreatePartitions: name, new count, and optionally the
/// replicas of each added partition.
pub(crate) type NewPartitions = (String, i32, Option<Vec<Vec<i32>>>);
