//! The transactional producer's APIs: AddPartitionsToTxn, AddOffsetsToTxn,
//! EndTxn and TxnOffsetCommit, each answered by the transactional id's
//! coordinator shard (src/transactions). Versions are the ones Kafka's
//! clients use before KIP-890 part 2 (transaction version 2), which this
//! broker does not offer, and AddPartitionsToTxn's broker form (v4-5).

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::server::ShardBroker;
use crate::transactions::state::{fenced_for, PendingOffset};
use futures::future::join_all;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    EndTxnRequest, EndTxnResponse, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::future::Future;
use std::rc::Rc;

pub(crate) const ADD_PARTITIONS: Handler =
    handler!(AddPartitionsToTxnRequest, add_partitions, versions = 0..=5);
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
/// `operation` (none: already authorized), else UNKNOWN_TOPIC_OR_PARTITION for a partition the topic
/// does not have.
fn partition_codes(
    request: &Request,
    catalog: &crate::topics::Catalog,
    name: &str,
    partitions: &[i32],
    operation: Option<AclOperation>,
    denied: Option<ResponseError>,
) -> Vec<(i32, Option<ResponseError>)> {
    let topic_error = denied.or_else(|| {
        operation.and_then(|operation| request.authorize(operation, Resource::Topic(name)).err())
    });
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
        .on_coordinator(broker.transaction_owner(transactional_id), work)
        .await
        .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
}

/// One transaction of an AddPartitionsToTxn (v0-3 carry exactly one).
struct TxnPartitions {
    id: String,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)>,
}

/// AddPartitionsToTxn. v0-3 come from producers; v4-5 (KIP-890 part 1)
/// come from partition leaders, batch several transactions, and may only
/// ask whether partitions are already in a transaction (`verify_only`),
/// which is what a leader does before taking a transactional batch.
async fn add_partitions(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: AddPartitionsToTxnRequest = request.decode("AddPartitionsToTxn")?;
    let from_broker = request.version >= 4;
    if from_broker {
        // Kafka: the batched form is for brokers only.
        if let Err(denied) = request.authorize(AclOperation::ClusterAction, Resource::Cluster) {
            return request.respond(&AddPartitionsToTxnResponse::default().with_error_code(denied.code()));
        }
    }
    let transactions: Vec<TxnPartitions> = if from_broker {
        asked
            .transactions
            .into_iter()
            .map(|t| TxnPartitions {
                id: t.transactional_id.to_string(),
                producer_id: t.producer_id.0,
                epoch: t.producer_epoch,
                verify_only: t.verify_only,
                topics: t
                    .topics
                    .into_iter()
                    .map(|topic| (topic.name, topic.partitions))
                    .collect(),
            })
            .collect()
    } else {
        vec![TxnPartitions {
            id: asked.v3_and_below_transactional_id.to_string(),
            producer_id: asked.v3_and_below_producer_id.0,
            epoch: asked.v3_and_below_producer_epoch,
            verify_only: false,
            topics: asked
                .v3_and_below_topics
                .into_iter()
                .map(|topic| (topic.name, topic.partitions))
                .collect(),
        }]
    };
    let request = &request;
    let answers = join_all(transactions.into_iter().map(|txn| {
        let broker = broker.clone();
        async move {
            let id = txn.id.clone();
            (id, add_or_verify(&broker, request, txn).await)
        }
    }))
    .await;
    if from_broker {
        let results = answers
            .into_iter()
            .map(|(id, topics)| {
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                    .with_topic_results(topic_results(topics))
            })
            .collect();
        return request.respond(&AddPartitionsToTxnResponse::default().with_results_by_transaction(results));
    }
    let topics = answers.into_iter().flat_map(|(_, topics)| topics).collect();
    request.respond(
        &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topic_results(topics)),
    )
}

fn topic_results(topics: Vec<TopicCodes>) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .into_iter()
        .map(|(name, partitions)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(name)
                .with_results_by_partition(
                    partitions
                        .into_iter()
                        .map(|(index, error)| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(index)
                                .with_partition_error_code(error.map_or(0, |e| e.code()))
                        })
                        .collect(),
                )
        })
        .collect()
}

/// One transaction's partitions, each with its error. As Kafka: a
/// producer needs WRITE on the transactional id (else every partition
/// 53) and on each topic (a broker's request was authorized as a whole);
/// the topic must exist; if any partition fails, none is added and the
/// others get OPERATION_NOT_ATTEMPTED.
async fn add_or_verify(broker: &Rc<ShardBroker>, request: &Request, txn: TxnPartitions) -> Vec<TopicCodes> {
    let from_broker = request.version >= 4;
    let catalog = broker.catalog().snapshot();
    let id_denied = if from_broker {
        None
    } else {
        request
            .authorize(AclOperation::Write, Resource::TransactionalId(&txn.id))
            .err()
    };
    let topic_operation = if from_broker {
        None
    } else {
        Some(AclOperation::Write)
    };
    let mut codes: Vec<TopicCodes> = Vec::new();
    let mut partitions = Vec::new();
    for (name, indexes) in txn.topics {
        let topic = name.to_string();
        let results = partition_codes(request, &catalog, &topic, &indexes, topic_operation, id_denied);
        partitions.extend(
            results
                .iter()
                .filter(|(_, error)| error.is_none())
                .map(|(p, _)| (topic.clone(), *p)),
        );
        codes.push((name, results));
    }
    if codes.iter().flat_map(|(_, r)| r).any(|(_, e)| e.is_some()) {
        return with_error_for_the_rest(codes, ResponseError::OperationNotAttempted);
    }
    if txn.id.is_empty() {
        return with_error_for_the_rest(codes, ResponseError::InvalidRequest);
    }
    let (id, pid, epoch, version) = (txn.id, txn.producer_id, txn.epoch, request.version);
    if txn.verify_only {
        let verdicts = on_coordinator(broker, &id.clone(), move |b| async move {
            b.transactions().verify_partitions(&id, pid, epoch, &partitions)
        })
        .await;
        return match verdicts {
            Err(e) => with_error_for_the_rest(codes, e),
            Ok(missing) => codes
                .into_iter()
                .map(|(name, results)| {
                    let topic = name.to_string();
                    let results = results
                        .into_iter()
                        .map(|(p, _)| {
                            let absent = missing.contains(&(topic.clone(), p));
                            (p, absent.then_some(ResponseError::TransactionAbortable))
                        })
                        .collect();
                    (name, results)
                })
                .collect(),
        };
    }
    let added = on_coordinator(broker, &id.clone(), move |b| async move {
        b.transactions().add_partitions(&id, pid, epoch, partitions).await
    })
    .await;
    match added {
        Ok(()) => codes,
        Err(e) => with_error_for_the_rest(codes, fenced_for(version, 2, e)),
    }
}

/// `error` for every partition that has none yet.
fn with_error_for_the_rest(codes: Vec<TopicCodes>, error: ResponseError) -> Vec<TopicCodes> {
    codes
        .into_iter()
        .map(|(name, results)| {
            let results = results.into_iter().map(|(p, e)| (p, e.or(Some(error)))).collect();
            (name, results)
        })
        .collect()
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
        let results = partition_codes(
            &request,
            &catalog,
            &name,
            &indexes,
            Some(AclOperation::Read),
            denied,
        );
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
    let member = (
        asked.member_id.to_string(),
        asked.group_instance_id.as_ref().map(|i| i.to_string()),
        asked.generation_id,
    );
    // KIP-447: the group's coordinator checks the member and generation.
    let checked = if !offsets.is_empty() {
        let check_group = group.clone();
        broker
            .on_coordinator(broker.group_owner(&group), move |b| async move {
                b.groups()
                    .check_txn_commit(&check_group, (&member.0, member.1.as_deref(), member.2))
            })
            .await
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
    } else {
        Ok(())
    };
    let outcome: Result<(), ResponseError> = if let Err(e) = checked {
        Err(e)
    } else if offsets.is_empty() {
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
