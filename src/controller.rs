//! Work that must happen in one place: topic administration and producer-id
//! allocation. It runs on the controller shard (shard 0); other shards send
//! it there with `ShardBroker::on_shard`, so changes are applied one at a
//! time without locks.

use crate::server::ShardBroker;
use crate::topics::{validate_config, validate_topic_name, TopicEntry};
use kafka_protocol::ResponseError;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use tracing::info;

/// Producer ids are handed out from blocks persisted ahead of use, so ids
/// stay unique across restarts (a crash skips the rest of a block).
const PRODUCER_ID_BLOCK: i64 = 1000;

pub(crate) struct Controller {
    producer_ids: RefCell<ProducerIds>,
}

struct ProducerIds {
    path: PathBuf,
    next: i64,
    block_end: i64,
}

impl Controller {
    pub(crate) fn open(dir: &Path) -> io::Result<Controller> {
        let path = dir.join("producer-id-block");
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a number", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Controller {
            producer_ids: RefCell::new(ProducerIds {
                path,
                next,
                block_end: next,
            }),
        })
    }

    pub(crate) fn allocate_producer_id(&self) -> io::Result<i64> {
        let mut ids = self.producer_ids.borrow_mut();
        if ids.next >= ids.block_end {
            let end = ids.next + PRODUCER_ID_BLOCK;
            crate::log::index::write_file(&ids.path, end.to_string().as_bytes())?;
            ids.block_end = end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }
}

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

fn check_new_topic(broker: &ShardBroker, topic: &NewTopic) -> Result<TopicEntry, TopicOutcome> {
    let name = &topic.name;
    validate_topic_name(name)
        .map_err(|m| TopicOutcome::err(name, ResponseError::InvalidTopicException, m))?;
    if broker.catalog.snapshot().get(name).is_some() {
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
            check_replicas(broker, brokers)
                .map_err(|m| TopicOutcome::err(name, ResponseError::InvalidReplicaAssignment, m))?;
        }
        topic.assignments.len() as i32
    } else if topic.partitions == -1 {
        broker.config.num_partitions as i32
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
    if topic.replication_factor != -1 && topic.replication_factor != 1 {
        return Err(TopicOutcome::err(
            name,
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {} is larger than the 1 available broker",
                topic.replication_factor
            ),
        ));
    }
    for (key, value) in &topic.configs {
        validate_config(key, value).map_err(|m| TopicOutcome::err(name, ResponseError::InvalidConfig, m))?;
    }
    Ok(TopicEntry::new(name, partitions, topic.configs.clone()))
}

/// Checks one partition's assigned replicas: live brokers (here, this
/// one), no repeats.
pub(crate) fn check_replicas(broker: &ShardBroker, brokers: &[i32]) -> Result<(), String> {
    let node = broker.identity.node_id;
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

/// The topic as the catalog has it, or UNKNOWN_TOPIC_OR_PARTITION.
fn existing(broker: &ShardBroker, name: &str) -> Result<Arc<TopicEntry>, TopicOutcome> {
    broker.catalog.snapshot().get(name).cloned().ok_or_else(|| {
        TopicOutcome::err(
            name,
            ResponseError::UnknownTopicOrPartition,
            format!("no topic {name}"),
        )
    })
}

/// Persists a topic (`Some`) or its removal (`None`) in the catalog.
fn store(broker: &ShardBroker, name: &str, entry: Option<Arc<TopicEntry>>) -> Result<(), TopicOutcome> {
    broker
        .catalog
        .update(|topics| match entry {
            Some(entry) => {
                topics.insert(name.to_string(), entry);
            }
            None => {
                topics.remove(name);
            }
        })
        .map(|_| ())
        .map_err(|e| TopicOutcome::err(name, ResponseError::KafkaStorageError, e.to_string()))
}

/// CreateTopics (and auto-creation). Runs on the controller shard.
pub(crate) async fn create_topics(
    broker: Rc<ShardBroker>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<TopicOutcome> {
    let create = |topic: &NewTopic| {
        let entry = Arc::new(check_new_topic(&broker, topic)?);
        if !validate_only {
            store(&broker, &topic.name, Some(entry.clone()))?;
            info!(topic = %topic.name, partitions = entry.partitions, id = %entry.id, "created topic");
        }
        Ok(TopicOutcome::ok(&topic.name, Some(entry)))
    };
    topics
        .iter()
        .map(|t| create(t).unwrap_or_else(|failed| failed))
        .collect()
}

/// DeleteTopics: out of the catalog first (so nothing new is written), then
/// every shard deletes the partitions it owns. Runs on the controller shard.
pub(crate) async fn delete_topics(broker: Rc<ShardBroker>, names: Vec<String>) -> Vec<TopicOutcome> {
    let mut outcomes = Vec::with_capacity(names.len());
    for name in names {
        let removed = existing(&broker, &name).and_then(|entry| store(&broker, &name, None).map(|()| entry));
        let entry = match removed {
            Ok(entry) => entry,
            Err(failed) => {
                outcomes.push(failed);
                continue;
            }
        };
        for shard in 0..broker.shard.count {
            let topic = name.clone();
            let _ = broker
                .on_shard(shard, move |b| async move {
                    b.metrics.forget_topic(&topic);
                    b.storage.drop_topic(&topic)
                })
                .await;
        }
        info!(topic = %name, id = %entry.id, "deleted topic");
        outcomes.push(TopicOutcome::ok(&name, Some(entry)));
    }
    outcomes
}

/// One topic's CreatePartitions: name, new count, and optionally the
/// replicas of each added partition.
pub(crate) type NewPartitions = (String, i32, Option<Vec<Vec<i32>>>);

/// CreatePartitions: raise a topic's partition count. Runs on the
/// controller shard; new partitions' logs are created on first use.
pub(crate) async fn create_partitions(
    broker: Rc<ShardBroker>,
    changes: Vec<NewPartitions>,
    validate_only: bool,
) -> Vec<TopicOutcome> {
    let grow = |name: &str, count: i32, assignments: &Option<Vec<Vec<i32>>>| {
        let entry = existing(&broker, name)?;
        if count <= entry.partitions {
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
                check_replicas(&broker, brokers)
                    .map_err(|m| TopicOutcome::err(name, ResponseError::InvalidReplicaAssignment, m))?;
            }
        }
        if !validate_only {
            let mut grown = (*entry).clone();
            grown.partitions = count;
            store(&broker, name, Some(Arc::new(grown)))?;
            info!(topic = %name, partitions = count, "added partitions");
        }
        Ok(TopicOutcome::ok(name, None))
    };
    changes
        .iter()
        .map(|(name, count, assignments)| grow(name, *count, assignments).unwrap_or_else(|failed| failed))
        .collect()
}

/// Makes sure `names` exist, creating missing ones with the defaults
/// (auto-creation on Metadata and Produce). Callable from any shard.
pub(crate) async fn ensure_topics(broker: &Rc<ShardBroker>, names: Vec<String>) {
    let catalog = broker.catalog.snapshot();
    let missing: Vec<NewTopic> = names
        .into_iter()
        .filter(|n| catalog.get(n).is_none() && validate_topic_name(n).is_ok())
        .map(|name| NewTopic {
            name,
            partitions: -1,
            replication_factor: -1,
            configs: BTreeMap::new(),
            assignments: Vec::new(),
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let _ = broker
        .on_shard(crate::server::CONTROLLER_SHARD, move |b| {
            create_topics(b, missing, false)
        })
        .await;
}
