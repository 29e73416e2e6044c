//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions (run
//! on the controller shard) and DeleteRecords (run on each partition's
//! owner).

use super::configs::topic_config_results;
use super::{handler, per_partition, Handler, Outcome, Request};
use crate::controller::{NewPartitions, NewTopic};
use crate::server::ShardBroker;
use crate::topics::TopicPartition;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_records_request::DeleteRecordsPartition;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;

pub(crate) const CREATE_TOPICS: Handler = handler!(CreateTopicsRequest, create_topics, versions = 2..=7);
pub(crate) const DELETE_TOPICS: Handler = handler!(DeleteTopicsRequest, delete_topics, versions = 1..=6);
pub(crate) const CREATE_PARTITIONS: Handler =
    handler!(CreatePartitionsRequest, create_partitions, versions = 0..=3);
pub(crate) const DELETE_RECORDS: Handler = handler!(DeleteRecordsRequest, delete_records, versions = 0..=2);

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

async fn create_topics(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: CreateTopicsRequest = request.decode("CreateTopics")?;
    if let Err(denied) = request.authorize_topics(
        &broker,
        super::AclOperation::Create,
        asked.topics.iter().map(|t| (&*t.name.0, uuid::Uuid::nil())),
    ) {
        return request.respond(&super::refused::create_topics(&asked, denied));
    }
    let topics: Vec<NewTopic> = asked
        .topics
        .into_iter()
        .map(|t| NewTopic {
            name: t.name.to_string(),
            partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            configs: t
                .configs
                .into_iter()
                .filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string())))
                .collect(),
            assignments: t
                .assignments
                .into_iter()
                .map(|a| (a.partition_index, a.broker_ids.into_iter().map(|b| b.0).collect()))
                .collect(),
        })
        .collect();
    let outcomes = broker
        .controller()
        .create_topics(topics, asked.validate_only)
        .await;
    let with_configs = request.version >= 5;
    let results = outcomes
        .into_iter()
        .map(|o| {
            let mut result = CreatableTopicResult::default()
                .with_name(topic_name(&o.name))
                .with_error_code(o.error_code)
                .with_error_message(o.message.map(StrBytes::from_string));
            if let Some(entry) = o.entry {
                result = result
                    .with_topic_id(entry.id)
                    .with_num_partitions(entry.partitions)
                    .with_replication_factor(1);
                if with_configs {
                    let configs =
                        topic_config_results(&entry.configs, broker.catalog().snapshot().defaults())
                            .into_iter()
                            .map(|c| {
                                CreatableTopicConfigs::default()
                                    .with_name(c.name)
                                    .with_value(c.value)
                                    .with_config_source(c.config_source)
                            })
                            .collect();
                    result = result.with_configs(Some(configs));
                }
            }
            result
        })
        .collect();
    request.respond(&CreateTopicsResponse::default().with_topics(results))
}

async fn delete_topics(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: DeleteTopicsRequest = request.decode("DeleteTopics")?;
    if let Err(denied) = request.authorize_topics(
        &broker,
        super::AclOperation::Delete,
        asked
            .topic_names
            .iter()
            .map(|n| (&*n.0, uuid::Uuid::nil()))
            .chain(
                asked
                    .topics
                    .iter()
                    .map(|t| (t.name.as_deref().map_or("", |n| &**n), t.topic_id)),
            ),
    ) {
        return request.respond(&super::refused::delete_topics(&asked, denied));
    }
    let catalog = broker.catalog().snapshot();
    // v0-5 name topics; v6 names or ids them.
    let mut names: Vec<String> = asked.topic_names.iter().map(|n| n.to_string()).collect();
    let mut unknown_ids = Vec::new();
    for state in asked.topics {
        match (state.name, catalog.by_id(&state.topic_id)) {
            (Some(name), _) => names.push(name.to_string()),
            (None, Some(entry)) => names.push(entry.name.clone()),
            (None, None) => unknown_ids.push(state.topic_id),
        }
    }
    let outcomes = broker.controller().delete_topics(names).await;
    let mut responses: Vec<DeletableTopicResult> = outcomes
        .into_iter()
        .map(|o| {
            if o.error_code == 0 {
                tracing::info!(
                    target: "chronik_audit",
                    principal = %request.session.principal(),
                    peer = %request.session.peer,
                    topic = %o.name,
                    "topic deleted"
                );
            }
            DeletableTopicResult::default()
                .with_name(Some(topic_name(&o.name)))
                .with_topic_id(o.entry.map(|e| e.id).unwrap_or_default())
                .with_error_code(o.error_code)
                .with_error_message(o.message.map(StrBytes::from_string))
        })
        .collect();
    responses.extend(unknown_ids.into_iter().map(|id| {
        DeletableTopicResult::default()
            .with_topic_id(id)
            .with_error_code(ResponseError::UnknownTopicId.code())
    }));
    request.respond(&DeleteTopicsResponse::default().with_responses(responses))
}

async fn create_partitions(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: CreatePartitionsRequest = request.decode("CreatePartitions")?;
    if let Err(denied) = request.authorize_topics(
        &broker,
        super::AclOperation::Alter,
        asked.topics.iter().map(|t| (&*t.name.0, uuid::Uuid::nil())),
    ) {
        return request.respond(&super::refused::create_partitions(&asked, denied));
    }
    let changes: Vec<NewPartitions> = asked
        .topics
        .iter()
        .map(|t| {
            // An empty list names no assignment, like a null one.
            let assignments = t.assignments.as_ref().filter(|l| !l.is_empty()).map(|list| {
                list.iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            (t.name.to_string(), t.count, assignments)
        })
        .collect();
    let outcomes = broker
        .controller()
        .create_partitions(changes, asked.validate_only)
        .await;
    let results = outcomes
        .into_iter()
        .map(|o| {
            CreatePartitionsTopicResult::default()
                .with_name(topic_name(&o.name))
                .with_error_code(o.error_code)
                .with_error_message(o.message.map(StrBytes::from_string))
        })
        .collect();
    request.respond(&CreatePartitionsResponse::default().with_results(results))
}

async fn delete_records(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: DeleteRecordsRequest = request.decode("DeleteRecords")?;
    if let Err(denied) = request.authorize_topics(
        &broker,
        super::AclOperation::Delete,
        asked.topics.iter().map(|t| (&*t.name.0, uuid::Uuid::nil())),
    ) {
        return request.respond(&super::refused::delete_records(&asked, denied));
    }
    let topics = asked.topics.into_iter().map(|t| (t.name, t.partitions)).collect();
    let answered = per_partition(topics, |topic, p: DeleteRecordsPartition| {
        let tp = TopicPartition::new(topic, p.partition_index);
        let broker = broker.clone();
        async move {
            let result = broker.partitions().delete_records(tp, p.offset).await;
            let (error_code, low_watermark) = match result {
                Ok(low) => (0, low),
                Err(e) => (e.code(), -1),
            };
            DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_error_code(error_code)
                .with_low_watermark(low_watermark)
        }
    })
    .await;
    let topics = answered
        .into_iter()
        .map(|(name, partitions)| {
            DeleteRecordsTopicResult::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    request.respond(&DeleteRecordsResponse::default().with_topics(topics))
}
