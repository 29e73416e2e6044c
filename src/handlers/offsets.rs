//! Offsets of a partition: ListOffsets (earliest, latest, by timestamp, max
//! timestamp) and OffsetForLeaderEpoch, answered by the partition (which
//! checks the client's leader epoch against its own).

use super::{handler, per_partition, Handler, Outcome, Request};
use crate::routing::Route;
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

/// The leader epoch the router has for `tp` (-1 if not led here).
fn leader_epoch(broker: &ShardBroker, tp: &TopicPartition) -> i32 {
    match broker.partitions().router().route(tp) {
        Route::Local { leader_epoch, .. } | Route::Remote { leader_epoch, .. } => leader_epoch,
        Route::NotLeader => -1,
    }
}

async fn list_offsets(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: ListOffsetsRequest = request.decode("ListOffsets")?;
    let denied = request.denied_topics(
        super::AclOperation::Describe,
        asked.topics.iter().map(|t| t.name.as_str()),
    );
    // The field exists from v4; the encoder refuses it set on older versions.
    let with_epoch = request.version >= 4;
    let read_committed = asked.isolation_level == 1;
    let topics = asked.topics.into_iter().map(|t| (t.name, t.partitions)).collect();
    let answered = per_partition(topics, |topic, p: ListOffsetsPartition| {
        let tp = TopicPartition::new(topic, p.partition_index);
        let broker = broker.clone();
        let refused = denied.contains(topic.as_str());
        async move {
            if refused {
                return ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_offset(-1)
                    .with_timestamp(-1)
                    .with_leader_epoch(-1);
            }
            let leader_epoch = if with_epoch {
                leader_epoch(&broker, &tp)
            } else {
                -1
            };
            let found = broker
                .partitions()
                .list_offset(tp, p.timestamp, read_committed, p.current_leader_epoch)
                .await;
            let (error_code, (offset, timestamp)) = match found {
                Ok(found) => (0, found),
                Err(e) => (e.code(), (-1, -1)),
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
    let denied = request.denied_topics(
        super::AclOperation::Describe,
        asked.topics.iter().map(|t| t.topic.as_str()),
    );
    let topics = asked
        .topics
        .into_iter()
        .map(|t| (t.topic, t.partitions))
        .collect();
    let answered = per_partition(topics, |topic, p: OffsetForLeaderPartition| {
        let tp = TopicPartition::new(topic, p.partition);
        let broker = broker.clone();
        let refused = denied.contains(topic.as_str());
        async move {
            if refused {
                return EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
            }
            let answer = broker
                .partitions()
                .epoch_end(tp, p.leader_epoch, p.current_leader_epoch)
                .await;
            let (error_code, (epoch, end_offset)) = match answer {
                Ok(found) => (0, found),
                Err(e) => (e.code(), (-1, -1)),
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
