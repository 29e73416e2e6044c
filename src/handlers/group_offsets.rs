//! Committed offsets: OffsetCommit (members with generation checks, or
//! simple commits with generation -1), OffsetFetch (v8+ several groups at
//! once), OffsetDelete. Offsets live with the group's coordinator shard and
//! are fsynced before a commit is acknowledged.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::groups::{Committed, FetchedOffsets, TopicPartitions};
use crate::log::partition_log::now_ms;
use crate::server::ShardBroker;
use futures::future::join_all;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::HashSet;
use std::rc::Rc;

pub(crate) const OFFSET_COMMIT: Handler = handler!(OffsetCommitRequest, offset_commit, versions = 2..=9);
pub(crate) const OFFSET_FETCH: Handler = handler!(OffsetFetchRequest, offset_fetch, versions = 1..=9);
pub(crate) const OFFSET_DELETE: Handler = handler!(OffsetDeleteRequest, offset_delete, versions = 0..=0);

/// Kafka's offset.metadata.max.bytes.
const MAX_METADATA_BYTES: usize = 4096;

async fn offset_commit(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: OffsetCommitRequest = request.decode("OffsetCommit")?;
    let catalog = broker.catalog().snapshot();
    let now = now_ms();
    // Per partition: an error decided here, or an offset to commit.
    let mut codes: Vec<(String, Vec<(i32, i16)>)> = Vec::new();
    let mut to_commit = Vec::new();
    // Kafka: READ on the group, then READ on each topic; a denied group
    // fails every partition.
    let group_denied = request
        .authorize(AclOperation::Read, Resource::Group(&asked.group_id))
        .err();
    for topic in &asked.topics {
        let name = topic.name.to_string();
        let denied = group_denied.or_else(|| {
            request
                .authorize(AclOperation::Read, Resource::Topic(&name))
                .err()
        });
        let partitions = catalog.get(&name).map_or(0, |t| t.partitions);
        let mut topic_codes = Vec::new();
        for p in &topic.partitions {
            let code = if let Some(denied) = denied {
                denied.code()
            } else if p.partition_index < 0 || p.partition_index >= partitions {
                ResponseError::UnknownTopicOrPartition.code()
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
            {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                let committed = Committed {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    commit_time_ms: now,
                };
                to_commit.push(((name.clone(), p.partition_index), committed));
                0
            };
            topic_codes.push((p.partition_index, code));
        }
        codes.push((name, topic_codes));
    }
    if !to_commit.is_empty() {
        let group_id = asked.group_id.to_string();
        let member_id = asked.member_id.to_string();
        let instance_id = asked.group_instance_id.map(|i| i.to_string());
        let generation = asked.generation_id_or_member_epoch;
        let owner = broker.group_owner(&group_id);
        let outcome = broker
            .on_coordinator(owner, move |b| async move {
                b.groups()
                    .commit(
                        &group_id,
                        (&member_id, instance_id.as_deref(), generation),
                        to_commit,
                    )
                    .await
            })
            .await
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable.code()));
        if let Err(code) = outcome {
            for (_, partitions) in codes.iter_mut() {
                for (_, c) in partitions.iter_mut().filter(|(_, c)| *c == 0) {
                    *c = code;
                }
            }
        }
    }
    let topics = codes
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, code)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    request.respond(&OffsetCommitResponse::default().with_topics(topics))
}

/// One partition's answer: its committed offset, or none, and its error.
type FetchedPartition = (i32, Option<Committed>, i16);

/// Partitions of `group` with offsets in transactions not yet completed,
/// from every shard's coordinator (a transaction's offsets live with its
/// transactional id's shard, not the group's).
async fn pending_offsets(broker: &Rc<ShardBroker>, group: &str) -> Result<HashSet<(String, i32)>, i16> {
    let mut pending = HashSet::new();
    for shard in 0..broker.shard().count {
        let group = group.to_string();
        let some = broker
            .on_shard(
                shard,
                move |b| async move { b.transactions().pending_offsets(&group) },
            )
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable.code())?;
        pending.extend(some);
    }
    Ok(pending)
}

/// Committed offsets of one group, from its coordinator shard, with each
/// partition's error code. As Kafka: DESCRIBE on the group, else the
/// group's error; topics asked for that the principal may not DESCRIBE
/// answer TOPIC_AUTHORIZATION_FAILED, and when every topic is asked for,
/// those are left out. With `require_stable` (v7+, what read_committed
/// consumers send), a partition with a transactional offset still pending
/// answers UNSTABLE_OFFSET_COMMIT, which clients retry.
async fn fetch_group(
    broker: &Rc<ShardBroker>,
    request: &Request,
    group_id: String,
    wanted: Option<TopicPartitions>,
    require_stable: bool,
) -> Result<Vec<(String, Vec<FetchedPartition>)>, i16> {
    request
        .authorize(AclOperation::Describe, Resource::Group(&group_id))
        .map_err(|denied| denied.code())?;
    let all = wanted.is_none();
    let pending = if require_stable {
        pending_offsets(broker, &group_id).await?
    } else {
        HashSet::new()
    };
    let owner = broker.group_owner(&group_id);
    let fetched: FetchedOffsets = broker
        .on_coordinator(owner, move |b| async move {
            b.groups().fetch_offsets(&group_id, wanted)
        })
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable.code())?;
    Ok(fetched
        .into_iter()
        .filter(|(name, _)| !all || request.may(AclOperation::Describe, Resource::Topic(name)))
        .map(|(name, partitions)| {
            let denied = request
                .authorize(AclOperation::Describe, Resource::Topic(&name))
                .err()
                .map(|denied| denied.code());
            let partitions = partitions
                .into_iter()
                .map(|(p, committed)| match denied {
                    Some(code) => (p, None, code),
                    None if pending.contains(&(name.clone(), p)) => {
                        (p, None, ResponseError::UnstableOffsetCommit.code())
                    }
                    None => (p, committed, 0),
                })
                .collect();
            (name, partitions)
        })
        .collect())
}

/// (offset, leader epoch, metadata) as OffsetFetch reports them; no commit
/// is offset -1 with empty metadata.
fn reported(committed: Option<Committed>) -> (i64, i32, String) {
    committed.map_or((-1, -1, String::new()), |c| {
        (c.offset, c.leader_epoch, c.metadata.unwrap_or_default())
    })
}

async fn offset_fetch(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: OffsetFetchRequest = request.decode("OffsetFetch")?;
    let version = request.version;
    let require_stable = version >= 7 && asked.require_stable;
    if version >= 8 {
        let request = &request;
        let groups = asked.groups.into_iter().map(|g| {
            let broker = broker.clone();
            async move {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes))
                        .collect()
                });
                let response = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match fetch_group(&broker, request, g.group_id.to_string(), wanted, require_stable).await {
                    Err(code) => response.with_error_code(code),
                    Ok(topics) => response.with_topics(
                        topics
                            .into_iter()
                            .map(|(name, partitions)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(StrBytes::from_string(name)))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|(p, c, code)| {
                                                let (offset, epoch, metadata) = reported(c);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_error_code(code)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(StrBytes::from_string(metadata)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                }
            }
        });
        return request.respond(&OffsetFetchResponse::default().with_groups(join_all(groups).await));
    }
    let wanted = asked.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let fetched = fetch_group(
        &broker,
        &request,
        asked.group_id.to_string(),
        wanted,
        require_stable,
    )
    .await;
    let response = match fetched {
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
        Ok(topics) => OffsetFetchResponse::default().with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(p, c, code)| {
                                    let (offset, epoch, metadata) = reported(c);
                                    let partition = OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(code)
                                        .with_committed_offset(offset)
                                        .with_metadata(Some(StrBytes::from_string(metadata)));
                                    if version >= 5 {
                                        partition.with_committed_leader_epoch(epoch)
                                    } else {
                                        partition
                                    }
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    };
    request.respond(&response)
}

async fn offset_delete(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: OffsetDeleteRequest = request.decode("OffsetDelete")?;
    let group_id = asked.group_id.to_string();
    // Kafka: DELETE on the group, then READ on each topic; partitions of a
    // denied topic are answered with its error and left alone.
    if let Err(denied) = request.authorize(AclOperation::Delete, Resource::Group(&group_id)) {
        return request.respond(&OffsetDeleteResponse::default().with_error_code(denied.code()));
    }
    let mut denied_topics: Vec<(String, Vec<(i32, i16)>)> = Vec::new();
    let mut topics: TopicPartitions = Vec::new();
    for t in &asked.topics {
        let partitions = t.partitions.iter().map(|p| p.partition_index);
        match request.authorize(AclOperation::Read, Resource::Topic(&t.name)) {
            Ok(()) => topics.push((t.name.to_string(), partitions.collect())),
            Err(denied) => denied_topics.push((
                t.name.to_string(),
                partitions.map(|p| (p, denied.code())).collect(),
            )),
        }
    }
    let owner = broker.group_owner(&group_id);
    let outcome = broker
        .on_coordinator(owner, move |b| async move {
            b.groups().delete_offsets(&group_id, topics).await
        })
        .await
        .unwrap_or(Err(ResponseError::CoordinatorNotAvailable.code()));
    let response = match outcome {
        Err(code) => OffsetDeleteResponse::default().with_error_code(code),
        Ok(results) => OffsetDeleteResponse::default().with_topics(
            results
                .into_iter()
                .chain(denied_topics)
                .map(|(name, partitions)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(p, code)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    };
    request.respond(&response)
}
