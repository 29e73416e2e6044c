//! Offsets of a partition: ListOffsets (earliest, latest, by timestamp, max
//! timestamp) and OffsetForLeaderEpoch (there is one leader epoch, 0, as
//! Metadata reports, so clients validating positions get an answer).

use super::{handler, on_owner, per_partition, Handler, Outcome, Request};
use crate::server::ShardBroker;
use crate::topics::TopicPartition;
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use kafka_protocol::ResponseError;
use std::rc::Rc;

pub(crate) const LIST_OFFSETS: Handler = handler!(ListOffsetsRequest, list_offsets, versions = 1..=10);
pub(crate) const OFFSET_FOR_LEADER_EPOCH: Handler = handler!(
    OffsetForLeaderEpochRequest,
    offset_for_leader_epoch,
    versions = 2..=4
);

/// The only leader epoch this single broker has.
const LEADER_EPOCH: i32 = 0;

/// A client's `current_leader_epoch` against ours: newer is unknown to us,
/// older is fenced, -1 means "not checked".
fn check_epoch(current_leader_epoch: i32) -> Result<(), i16> {
    match current_leader_epoch {
        -1 | LEADER_EPOCH => Ok(()),
        e if e > LEADER_EPOCH => Err(ResponseError::UnknownLeaderEpoch.code()),
        _ => Err(ResponseError::FencedLeaderEpoch.code()),
    }
}

async fn list_offsets(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: ListOffsetsRequest = request.decode("ListOffsets")?;
    if let Err(denied) = request.authorize_topics(
        &broker,
        super::AclOperation::Describe,
        asked.topics.iter().map(|t| (&*t.name.0, uuid::Uuid::nil())),
    ) {
        return request.respond(&super::refused::list_offsets(&asked, denied));
    }
    // The field exists from v4; the encoder refuses it set on older versions.
    let leader_epoch = if request.version >= 4 { LEADER_EPOCH } else { -1 };
    let topics = asked.topics.into_iter().map(|t| (t.name, t.partitions)).collect();
    let answered = per_partition(topics, |topic, p: ListOffsetsPartition| {
        let tp = TopicPartition::new(topic, p.partition_index);
        let broker = broker.clone();
        async move {
            let found = match check_epoch(p.current_leader_epoch) {
                Ok(()) => on_owner(&broker, tp, move |s, tp| s.list_offset(tp, p.timestamp)).await,
                Err(code) => Err(code),
            };
            let (error_code, (offset, timestamp)) = match found {
                Ok(found) => (0, found),
                Err(code) => (code, (-1, -1)),
            };
            ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_error_code(error_code)
                .with_offset(offset)
                .with_timestamp(timestamp)
                .with_leader_epoch(leader_epoch)
        }
    })
    .await;
    let topics = answered
        .into_iter()
        .map(|(name, partitions)| {
            ListOffsetsTopicResponse::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    request.respond(&ListOffsetsResponse::default().with_topics(topics))
}

async fn offset_for_leader_epoch(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: OffsetForLeaderEpochRequest = request.decode("OffsetForLeaderEpoch")?;
    if let Err(denied) = request.authorize_topics(
        &broker,
        super::AclOperation::Describe,
        asked.topics.iter().map(|t| (&*t.topic.0, uuid::Uuid::nil())),
    ) {
        return request.respond(&super::refused::offset_for_leader_epoch(&asked, denied));
    }
    let topics = asked
        .topics
        .into_iter()
        .map(|t| (t.topic, t.partitions))
        .collect();
    let answered = per_partition(topics, |topic, p: OffsetForLeaderPartition| {
        let tp = TopicPartition::new(topic, p.partition);
        let broker = broker.clone();
        async move {
            let answer = match check_epoch(p.current_leader_epoch) {
                Err(code) => Err(code),
                // Epoch 0 ends at the log end; a later epoch than ours has
                // no end offset yet (UNDEFINED, no error).
                Ok(()) if p.leader_epoch > LEADER_EPOCH => Ok((-1, -1)),
                Ok(()) => on_owner(&broker, tp, |s, tp| s.end_offset(tp))
                    .await
                    .map(|end| (LEADER_EPOCH, end)),
            };
            let (error_code, (epoch, end_offset)) = match answer {
                Ok(found) => (0, found),
                Err(code) => (code, (-1, -1)),
            };
            EpochEndOffset::default()
                .with_partition(p.partition)
                .with_error_code(error_code)
                .with_leader_epoch(epoch)
                .with_end_offset(end_offset)
        }
    })
    .await;
    let topics = answered
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetForLeaderTopicResult::default()
                .with_topic(topic)
                .with_partitions(partitions)
        })
        .collect();
    request.respond(&OffsetForLeaderEpochResponse::default().with_topics(topics))
}
