//! The transactional producer's APIs: AddPartitionsToTxn, AddOffsetsToTxn,
//! EndTxn and TxnOffsetCommit, each answered by the transactional id's
//! coordinator shard (src/transactions). Versions are the ones Kafka's
//! clients use before KIP-890 part 2 (transaction version 2), which this
//! broker does not offer.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::server::ShardBroker;
use crate::transactions::state::{fenced_for, PendingOffset};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    EndTxnRequest, EndTxnResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::ResponseError;
use std::future::Future;
use std::rc::Rc;

pub(crate) const ADD_PARTITIONS: Handler =
    handler!(AddPartitionsToTxnRequest, add_partitions, versions = 0..=3);
pub(crate) const ADD_OFFSETS: Handler = handler!(AddOffsetsToTxnRequest, add_offsets, versions = 0..=3);
pub(crate) const END_TXN: Handler = handler!(EndTxnRequest, end_txn, versions = 0..=4);
pub(crate) const TXN_OFFSET_COMMIT: Handler =
    handler!(TxnOffsetCommitRequest, txn_offset_commit, versions = 0..=3);

/// A topic's partitions, each with the error decided for it (if any).
type TopicCodes = (
    kafka_protocol::messages::TopicName,
    Vec<(i32, Option<ResponseError>)>,
);

/// Each of a topic's `partitions` with the error decided for it: `denied`
/// (the request's own refusal) for all, else the topic's refusal of
/// `operation`, else UNKNOWN_TOPIC_OR_PARTITION for a partition the topic
/// does not have.
fn partition_codes(
    request: &Request,
    catalog: &crate::topics::Catalog,
    name: &str,
    partitions: &[i32],
    operation: AclOperation,
    denied: Option<ResponseError>,
) -> Vec<(i32, Option<ResponseError>)> {
    let topic_error = denied.or_else(|| request.authorize(operation, Resource::Topic(name)).err());
    let count = catalog.get(name).map_or(0, |t| t.partitions);
    partitions
        .iter()
        .map(|p| {
            let unknown = (*p < 0 || *p >= count).then_some(ResponseError::UnknownTopicOrPartition);
            (*p, topic_error.or(unknown))
        })
        .collect()
}

/// Runs `work` on the coordinator shard of `transactional_id`.
async fn on_coordinator<T, F, Fut>(
    broker: &Rc<ShardBroker>,
    transactional_id: &str,
    work: F,
) -> Result<T, ResponseError>
where
    T: Send + 'static,
    F: FnOnce(Rc<ShardBroker>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ResponseError>> + 'static,
{
    broker
        .on_shard(broker.transaction_owner(transactional_id), work)
        .await
        .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
}

async fn add_partitions(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: AddPartitionsToTxnRequest = request.decode("AddPartitionsToTxn")?;
    let id = asked.v3_and_below_transactional_id.to_string();
    let (pid, epoch) = (
        asked.v3_and_below_producer_id.0,
        asked.v3_and_below_producer_epoch,
    );
    let catalog = broker.catalog().snapshot();
    // Kafka: WRITE on the transactional id (every partition 53), then
    // WRITE on each topic and the topic must exist; if any partition
    // fails, none is added and the others get OPERATION_NOT_ATTEMPTED.
    let id_denied = request
        .authorize(AclOperation::Write, Resource::TransactionalId(&id))
        .err();
    let mut codes: Vec<TopicCodes> = Vec::new();
    let mut partitions = Vec::new();
    for topic in &asked.v3_and_below_topics {
        let name = topic.name.to_string();
        let results = partition_codes(
            &request,
            &catalog,
            &name,
            &topic.partitions,
            AclOperation::Write,
            id_denied,
        );
        partitions.extend(
            results
                .iter()
                .filter(|(_, error)| error.is_none())
                .map(|(p, _)| (name.clone(), *p)),
        );
        codes.push((topic.name.clone(), results));
    }
    let failed = codes.iter().flat_map(|(_, r)| r).any(|(_, e)| e.is_some());
    let outcome: Result<(), ResponseError> = if failed {
        Err(ResponseError::OperationNotAttempted)
    } else {
        let owner_id = id.clone();
        on_coordinator(&broker, &id, move |b| async move {
            b.transactions()
                .add_partitions(&owner_id, pid, epoch, partitions)
                .await
        })
        .await
        .map_err(|e| fenced_for(request.version, 2, e))
    };
    let results = codes
        .into_iter()
        .map(|(name, partitions)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(name)
                .with_results_by_partition(
                    partitions
                        .into_iter()
                        .map(|(index, error)| {
                            let code = error.or(outcome.err()).map_or(0, |e| e.code());
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(index)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    request.respond(&AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
}

async fn add_offsets(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: AddOffsetsToTxnRequest = request.decode("AddOffsetsToTxn")?;
    let id = asked.transactional_id.to_string();
    let group = asked.group_id.to_string();
    let (pid, epoch) = (asked.producer_id.0, asked.producer_epoch);
    let authorized = request
        .authorize(AclOperation::Write, Resource::TransactionalId(&id))
        .and_then(|()| request.authorize(AclOperation::Read, Resource::Group(&group)));
    let outcome = match authorized {
        Err(denied) => Err(denied),
        Ok(()) => {
            let owner_id = id.clone();
            on_coordinator(&broker, &id, move |b| async move {
                b.transactions().add_group(&owner_id, pid, epoch, &group).await
            })
            .await
            .map_err(|e| fenced_for(request.version, 2, e))
        }
    };
    request
        .respond(&AddOffsetsToTxnResponse::default().with_error_code(outcome.err().map_or(0, |e| e.code())))
}

async fn end_txn(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: EndTxnRequest = request.decode("EndTxn")?;
    let id = asked.transactional_id.to_string();
    let (pid, epoch, commit) = (asked.producer_id.0, asked.producer_epoch, asked.committed);
    let outcome = match request.authorize(AclOperation::Write, Resource::TransactionalId(&id)) {
        Err(denied) => Err(denied),
        Ok(()) => {
            let owner_id = id.clone();
            on_coordinator(&broker, &id, move |b| async move {
                let coordinator = b.transactions().clone();
                coordinator.end(&b, &owner_id, pid, epoch, commit).await
            })
            .await
            .map_err(|e| fenced_for(request.version, 2, e))
        }
    };
    request.respond(&EndTxnResponse::default().with_error_code(outcome.err().map_or(0, |e| e.code())))
}

async fn txn_offset_commit(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: TxnOffsetCommitRequest = request.decode("TxnOffsetCommit")?;
    let id = asked.transactional_id.to_string();
    let group = asked.group_id.to_string();
    let (pid, epoch) = (asked.producer_id.0, asked.producer_epoch);
    let catalog = broker.catalog().snapshot();
    // Kafka: WRITE on the transactional id and READ on the group fail
    // every partition; READ on a topic, or an unknown one, fails its own.
    let denied = request
        .authorize(AclOperation::Write, Resource::TransactionalId(&id))
        .and_then(|()| request.authorize(AclOperation::Read, Resource::Group(&group)))
        .err();
    let mut codes: Vec<TopicCodes> = Vec::new();
    let mut offsets = Vec::new();
    for topic in &asked.topics {
        let name = topic.name.to_string();
        let indexes: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
        let results = partition_codes(&request, &catalog, &name, &indexes, AclOperation::Read, denied);
        for (p, (_, error)) in topic.partitions.iter().zip(&results) {
            if error.is_none() {
                offsets.push(PendingOffset {
                    group: group.clone(),
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
            }
        }
        codes.push((topic.name.clone(), results));
    }
    let outcome: Result<(), ResponseError> = if offsets.is_empty() {
        Ok(())
    } else {
        let owner_id = id.clone();
        on_coordinator(&broker, &id, move |b| async move {
            b.transactions().add_offsets(&owner_id, pid, epoch, offsets).await
        })
        .await
        .map_err(|e| fenced_for(request.version, 2, e))
    };
    let topics = codes
        .into_iter()
        .map(|(name, partitions)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, error)| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(error.or(outcome.err()).map_or(0, |e| e.code()))
                        })
                        .collect(),
                )
        })
        .collect();
    request.respond(&TxnOffsetCommitResponse::default().with_topics(topics))
}
