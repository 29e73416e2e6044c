//! Produce: validate each partition's batch on the shard that received it
//! (spreading CRC work over shards), append it on the partition's owner,
//! and answer once every partition has its result. acks=0 gets no answer.

use super::leader_hint;
use super::{handler, Handler, Outcome, Request};
use crate::log::partition_log::now_ms;
use crate::log::{batch, validator, LogConfig};
use crate::metrics::ShardMetrics;
use crate::server::ShardBroker;
use crate::topics::{validate_topic_name, TopicPartition};
use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;

pub(crate) const HANDLER: Handler = handler!(ProduceRequest, handle, versions = 3..=13);

/// Why every partition of a topic is refused: the error and its message.
type Refused = (ResponseError, Rc<str>);

/// The answer to one partition's append, as the response carries it.
#[derive(Debug, Clone, Default)]
struct AppendResult {
    error_code: i16,
    error_message: Option<String>,
    base_offset: i64,
    log_append_time: i64,
    log_start_offset: i64,
    /// Produce v8+ per-record errors: (index in the batch, message).
    record_errors: Vec<(i32, String)>,
    /// Produce v10+ on NOT_LEADER_OR_FOLLOWER: (leader id, leader epoch).
    current_leader: Option<(i32, i32)>,
}

impl AppendResult {
    fn error(code: i16, message: impl Into<String>) -> Self {
        AppendResult {
            error_code: code,
            error_message: Some(message.into()),
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
            current_leader: None,
        }
    }
}

async fn handle(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let produce: ProduceRequest = request.decode("Produce")?;
    let acks = produce.acks;
    let by_id = request.version >= 13;
    let version = request.version;
    // producer_byte_rate counts the record bytes a request carries, and is
    // recorded before anything awaits: the connection reads its next
    // request only after this one's throttle is known (see connection.rs).
    let produced_bytes: u64 = produce
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .map(|p| p.records.as_ref().map_or(0, |r| r.len() as u64))
        .sum();
    let client_id = request.header.client_id.as_deref().unwrap_or_default();
    let throttle = crate::server::throttle::millis(crate::server::throttle::record(
        &broker,
        &request.session,
        client_id,
        crate::security::quotas::PRODUCER_BYTE_RATE,
        produced_bytes,
    ));
    // A transactional producer's request names its transactional id,
    // which it must be allowed to write (Kafka: every partition 53).
    let transactional_id: Option<Rc<str>> = produce
        .transactional_id
        .as_ref()
        .map(|id| id.as_str())
        .filter(|id| !id.is_empty())
        .map(Rc::from);
    if let Some(id) = &transactional_id {
        if let Err(denied) =
            request.authorize(super::AclOperation::Write, super::Resource::TransactionalId(id))
        {
            return respond(&request, acks, error_all(&shape(&produce), denied));
        }
    }
    if !matches!(acks, -1..=1) {
        return respond(
            &request,
            acks,
            error_all(&shape(&produce), ResponseError::InvalidRequiredAcks),
        );
    }
    // Kafka authorizes each topic (WRITE) before looking it up: a denied
    // topic is answered TOPIC_AUTHORIZATION_FAILED, the request's other
    // topics are appended.
    let denied: Vec<bool> = {
        let catalog = broker.catalog().snapshot();
        produce
            .topic_data
            .iter()
            .map(|t| {
                let name = if by_id {
                    catalog.by_id(&t.topic_id).map(|e| e.name.as_str())
                } else {
                    Some(t.name.as_str())
                };
                name.is_some_and(|n| {
                    request
                        .authorize(super::AclOperation::Write, super::Resource::Topic(n))
                        .is_err()
                })
            })
            .collect()
    };
    if broker.config().auto_create_topics && !by_id {
        // Created only where the principal may write and create, as a
        // Metadata request would have.
        let creatable = produce
            .topic_data
            .iter()
            .zip(&denied)
            .filter(|(t, denied)| {
                !**denied
                    && (request.may(super::AclOperation::Create, super::Resource::Cluster)
                        || request.may(super::AclOperation::Create, super::Resource::Topic(&t.name)))
            })
            .map(|(t, _)| t.name.to_string())
            .collect();
        broker.controller().ensure_topics(creatable).await;
    }
    let catalog = broker.catalog().snapshot();
    // Kept for a REQUEST_TIMED_OUT answer once the batches are moved out.
    let timed_out = shape(&produce);
    let mut topics = Vec::with_capacity(produce.topic_data.len());
    for (topic, denied) in produce.topic_data.into_iter().zip(denied) {
        let entry = if by_id {
            catalog.by_id(&topic.topic_id)
        } else {
            catalog.get(&topic.name)
        };
        // A name Kafka refuses can never exist: say so, so clients stop
        // retrying (UNKNOWN_TOPIC_OR_PARTITION is retriable).
        // The topic's log settings come with it: one catalog lookup per
        // topic, not one per partition.
        let name: Result<(Rc<str>, Rc<LogConfig>), Refused> = match entry {
            _ if denied => Err((
                ResponseError::TopicAuthorizationFailed,
                Rc::from("Topic authorization failed."),
            )),
            Some(t) => Ok((Rc::from(t.name.as_str()), Rc::new(t.log_config()))),
            None => Err(match validate_topic_name(&topic.name) {
                Err(why) if !by_id => (ResponseError::InvalidTopicException, Rc::from(why)),
                _ => (ResponseError::UnknownTopicOrPartition, Rc::from("unknown topic")),
            }),
        };
        let appends = topic.partition_data.into_iter().map(|data| {
            let broker = broker.clone();
            let name = name.clone();
            let transactional_id = transactional_id.clone();
            async move {
                let result = match name {
                    Err((error, why)) => AppendResult::error(error.code(), why.as_ref()),
                    Ok((name, config)) => {
                        let mut result = append(
                            &broker,
                            TopicPartition::new(&name, data.index),
                            &config,
                            data.records,
                            acks,
                            transactional_id,
                            version,
                        )
                        .await;
                        if version >= 10 && leader_hint::wants_hint(result.error_code, false) {
                            let tp = TopicPartition::new(&name, data.index);
                            result.current_leader = Some(leader_hint::current_leader(&broker, &tp));
                        }
                        result
                    }
                };
                if result.error_code != 0 {
                    let error = ShardMetrics::error_name(result.error_code);
                    broker.metrics().request_error(ApiKey::Produce as i16, &error);
                }
                (data.index, result)
            }
        });
        let appends = join_all(appends);
        topics.push(async move {
            let partitions = appends
                .await
                .into_iter()
                .map(|(index, r)| partition_response(index, r))
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partitions)
        });
    }
    // All partitions of all topics at once; each starts (and, on its own
    // shard, appends) in request order on its first poll. Answered with
    // REQUEST_TIMED_OUT (an acks=all sync stuck on a failing disk) after
    // the request's timeout_ms for acks=all, as Kafka does, else before the
    // connection-level request timeout would close the connection.
    let limit = match acks {
        -1 => std::time::Duration::from_millis(u64::try_from(produce.timeout_ms).unwrap_or(0)),
        _ => broker.config().request_timeout.mul_f64(0.9),
    };
    request.wait.until(std::time::Instant::now() + limit);
    let all = std::pin::pin!(join_all(topics));
    let limit = std::pin::pin!(glommio::timer::sleep(limit));
    match futures::future::select(all, limit).await {
        futures::future::Either::Left((responses, _)) => {
            let endpoints = node_endpoints(&broker, &request, &responses);
            respond_throttled(&request, acks, responses, endpoints, throttle)
        }
        futures::future::Either::Right(_) => {
            broker.metrics().request_timeout();
            respond(
                &request,
                acks,
                error_all(&timed_out, ResponseError::RequestTimedOut),
            )
        }
    }
}

async fn append(
    broker: &Rc<ShardBroker>,
    tp: TopicPartition,
    config: &LogConfig,
    records: Option<Bytes>,
    acks: i16,
    transactional_id: Option<Rc<str>>,
    version: i16,
) -> AppendResult {
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return AppendResult::error(ResponseError::InvalidRecord.code(), "no record batch");
    };
    // Produce v3+ carries exactly one batch per partition.
    let header = match batch::validate(&records) {
        Ok(header) => header,
        Err(e) => return AppendResult::error(e.code(), e.message()),
    };
    if header.is_transactional() {
        if let Err((error, why)) = verify_transaction(broker, &tp, &header, transactional_id, version).await {
            return AppendResult::error(error.code(), why);
        }
    }
    // The topic's timestamp bounds and codec, applied here rather than on
    // the owner so the (de)compression CPU is spread over shards.
    let (records, header) = match validator::prepare(&records, &header, config, now_ms()) {
        Ok(None) => (records, header),
        Ok(Some((rebuilt, header))) => (Bytes::from(rebuilt), header),
        Err(rejected) => {
            return AppendResult {
                record_errors: rejected.record_errors,
                ..AppendResult::error(rejected.code, rejected.message)
            }
        }
    };
    let (topic, bytes) = (tp.topic.clone(), records.len() as u64);
    match broker.partitions().append(tp, records, header, acks).await {
        Ok(appended) => {
            broker
                .metrics()
                .produced(&topic, header.records_count.max(0) as u64, bytes);
            AppendResult {
                base_offset: appended.base_offset,
                log_append_time: appended.log_append_time,
                log_start_offset: appended.log_start_offset,
                ..AppendResult::default()
            }
        }
        Err(e) => AppendResult::error(e.code(), e.to_string()),
    }
}

fn partition_response(index: i32, r: AppendResult) -> PartitionProduceResponse {
    let leader = r.current_leader.map(|(id, epoch)| {
        LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(id))
            .with_leader_epoch(epoch)
    });
    PartitionProduceResponse::default()
        .with_current_leader(leader.unwrap_or_default())
        .with_index(index)
        .with_error_code(r.error_code)
        .with_error_message(r.error_message.map(StrBytes::from_string))
        .with_base_offset(r.base_offset)
        .with_log_append_time_ms(r.log_append_time)
        .with_log_start_offset(r.log_start_offset)
        .with_record_errors(
            r.record_errors
                .into_iter()
                .map(|(index, message)| {
                    BatchIndexAndErrorMessage::default()
                        .with_batch_index(index)
                        .with_batch_index_error_message(Some(StrBytes::from_string(message)))
                })
                .collect(),
        )
}

/// The topics (name, id) and partition indexes a Produce request names.
type Shape = Vec<(TopicName, uuid::Uuid, Vec<i32>)>;

fn shape(produce: &ProduceRequest) -> Shape {
    produce
        .topic_data
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.topic_id,
                t.partition_data.iter().map(|p| p.index).collect(),
            )
        })
        .collect()
}

/// The same error for every partition the request named.
fn error_all(shape: &Shape, error: ResponseError) -> Vec<TopicProduceResponse> {
    shape
        .iter()
        .map(|(name, id, indexes)| {
            let partitions = indexes
                .iter()
                .map(|index| partition_response(*index, AppendResult::error(error.code(), error.to_string())))
                .collect();
            TopicProduceResponse::default()
                .with_name(name.clone())
                .with_topic_id(*id)
                .with_partition_responses(partitions)
        })
        .collect()
}

/// A transactional batch must belong to its producer's open transaction
/// on this partition, which the coordinator knows (KIP-890 part 1): a
/// batch no coordinator knows about would hold the partition's stable
/// offset back with no marker ever to come. Errors as Kafka maps them for
/// the Produce versions clients use: from v11 (KIP-890) a batch outside
/// the transaction is TRANSACTION_ABORTABLE, before it INVALID_TXN_STATE.
async fn verify_transaction(
    broker: &Rc<ShardBroker>,
    tp: &TopicPartition,
    header: &batch::BatchHeader,
    transactional_id: Option<Rc<str>>,
    version: i16,
) -> Result<(), (ResponseError, &'static str)> {
    let Some(id) = transactional_id else {
        return Err((
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactional record batch from a producer without a transactional id",
        ));
    };
    let (pid, epoch) = (header.producer_id, header.producer_epoch);
    let partition = (tp.topic.to_string(), tp.partition);
    let id = id.to_string();
    let verdict = broker
        .on_coordinator(broker.transaction_owner(&id), move |b| async move {
            b.transactions().verify(&id, pid, epoch, &partition)
        })
        .await
        .unwrap_or(Err(ResponseError::CoordinatorNotAvailable));
    verdict.map_err(|e| match e {
        ResponseError::InvalidProducerEpoch | ResponseError::ProducerFenced => (
            ResponseError::InvalidProducerEpoch,
            "the producer was fenced by a newer epoch",
        ),
        ResponseError::InvalidProducerIdMapping => (
            ResponseError::InvalidProducerIdMapping,
            "the producer id is not the transactional id's",
        ),
        ResponseError::CoordinatorNotAvailable => (
            ResponseError::NotEnoughReplicas,
            "the transaction coordinator is not available; retry",
        ),
        _ => (
            if version > 10 {
                ResponseError::TransactionAbortable
            } else {
                ResponseError::InvalidTxnState
            },
            "the partition is not in the producer's open transaction (AddPartitionsToTxn first)",
        ),
    })
}

/// The endpoints of the leaders the answer's hints name (v10+).
fn node_endpoints(
    broker: &ShardBroker,
    request: &Request,
    responses: &[TopicProduceResponse],
) -> Vec<NodeEndpoint> {
    let leaders = responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| p.current_leader.leader_id.0);
    leader_hint::node_endpoints!(NodeEndpoint, leader_hint::endpoints(broker, request, leaders))
}

fn respond(request: &Request, acks: i16, responses: Vec<TopicProduceResponse>) -> Outcome {
    respond_throttled(request, acks, responses, Vec::new(), 0)
}

fn respond_throttled(
    request: &Request,
    acks: i16,
    responses: Vec<TopicProduceResponse>,
    endpoints: Vec<NodeEndpoint>,
    throttle_ms: i32,
) -> Outcome {
    if acks == 0 {
        return Ok(None);
    }
    request.respond(
        &ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(endpoints)
            .with_throttle_time_ms(throttle_ms),
    )
}
