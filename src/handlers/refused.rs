//! Whole-request refusals: every item a request names answered with one
//! error. Used where a handler authorizes its topics up front (one line at
//! the top of the handler) and the principal may not act on one of them.
//! Kafka refuses per topic instead, and lets the others proceed; handlers
//! that authorize each topic where they resolve it can do the same and
//! stop using these.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

fn message(error: ResponseError) -> Option<StrBytes> {
    Some(StrBytes::from_string(error.to_string()))
}

pub(crate) fn list_offsets(asked: &ListOffsetsRequest, error: ResponseError) -> ListOffsetsResponse {
    let topics = asked
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.code())
                        .with_offset(-1)
                        .with_timestamp(-1)
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

pub(crate) fn offset_for_leader_epoch(
    asked: &OffsetForLeaderEpochRequest,
    error: ResponseError,
) -> OffsetForLeaderEpochResponse {
    let topics = asked
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_error_code(error.code())
                        .with_leader_epoch(-1)
                        .with_end_offset(-1)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

pub(crate) fn create_topics(asked: &CreateTopicsRequest, error: ResponseError) -> CreateTopicsResponse {
    let topics = asked
        .topics
        .iter()
        .map(|t| {
            CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(error.code())
                .with_error_message(message(error))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub(crate) fn delete_topics(asked: &DeleteTopicsRequest, error: ResponseError) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6 names or ids them in `topics`.
    let named = asked
        .topic_names
        .iter()
        .map(|n| (Some(n.clone()), uuid::Uuid::nil()));
    let states = asked.topics.iter().map(|t| (t.name.clone(), t.topic_id));
    let responses = named
        .chain(states)
        .map(|(name, id)| {
            DeletableTopicResult::default()
                .with_name(name)
                .with_topic_id(id)
                .with_error_code(error.code())
                .with_error_message(message(error))
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(crate) fn create_partitions(
    asked: &CreatePartitionsRequest,
    error: ResponseError,
) -> CreatePartitionsResponse {
    let results = asked
        .topics
        .iter()
        .map(|t| {
            CreatePartitionsTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(error.code())
                .with_error_message(message(error))
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

pub(crate) fn delete_records(asked: &DeleteRecordsRequest, error: ResponseError) -> DeleteRecordsResponse {
    let topics = asked
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.code())
                        .with_low_watermark(-1)
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
