//! Whole-request refusals: every item a request names answered with one
//! error. Used by the topic admin APIs, which authorize their topics up
//! front (one line at the top of the handler): a principal refused one
//! topic of a CreateTopics, DeleteTopics, CreatePartitions or DeleteRecords
//! is refused them all. Kafka refuses per topic instead; Produce, Fetch,
//! ListOffsets and OffsetForLeaderEpoch do that (`Request::denied_topics`),
//! and these can follow.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

fn message(error: ResponseError) -> Option<StrBytes> {
    Some(StrBytes::from_string(error.to_string()))
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
