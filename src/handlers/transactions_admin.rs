//! DescribeTransactions and ListTransactions: what the transaction
//! coordinators hold, for admin tools (Kafka's `kafka-transactions.sh`,
//! the admin clients' describe/list transactions). Each shard coordinates
//! its own ids, so a listing asks every shard.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::server::ShardBroker;
use crate::transactions::state::{TxnMeta, TxnState};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::rc::Rc;

pub(crate) const DESCRIBE: Handler = handler!(DescribeTransactionsRequest, describe, versions = 0..=0);
pub(crate) const LIST: Handler = handler!(ListTransactionsRequest, list, versions = 0..=1);

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Every shard's transactional ids.
async fn everything(broker: &Rc<ShardBroker>) -> Vec<(String, TxnMeta)> {
    let mut all = Vec::new();
    for shard in 0..broker.shard().count {
        if let Ok(mut some) = broker
            .on_shard(shard, |b| async move { b.transactions().all() })
            .await
        {
            all.append(&mut some);
        }
    }
    all
}

async fn describe(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: DescribeTransactionsRequest = request.decode("DescribeTransactions")?;
    let mut states = Vec::new();
    for id in asked.transactional_ids {
        let name = id.to_string();
        let state = TransactionState::default().with_transactional_id(id);
        if let Err(denied) = request.authorize(AclOperation::Describe, Resource::TransactionalId(&name)) {
            states.push(state.with_error_code(denied.code()));
            continue;
        }
        let lookup = name.clone();
        let meta = broker
            .on_coordinator(broker.transaction_owner(&name), move |b| async move {
                b.transactions().get(&lookup)
            })
            .await;
        let meta = match meta {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                states.push(state.with_error_code(ResponseError::TransactionalIdNotFound.code()));
                continue;
            }
            Err(_) => {
                states.push(state.with_error_code(ResponseError::CoordinatorNotAvailable.code()));
                continue;
            }
        };
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in &meta.partitions {
            // Topics the caller may not describe are left out, as in Kafka.
            if request.may(AclOperation::Describe, Resource::Topic(topic)) {
                topics.entry(topic).or_default().push(*partition);
            }
        }
        states.push(
            state
                .with_transaction_state(text(meta.state.name()))
                .with_transaction_timeout_ms(meta.timeout_ms)
                .with_transaction_start_time_ms(meta.start_ms)
                .with_producer_id(ProducerId(meta.producer_id))
                .with_producer_epoch(meta.epoch)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            TopicData::default()
                                .with_topic(TopicName(text(topic)))
                                .with_partitions(partitions)
                        })
                        .collect(),
                ),
        );
    }
    request.respond(&DescribeTransactionsResponse::default().with_transaction_states(states))
}

async fn list(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: ListTransactionsRequest = request.decode("ListTransactions")?;
    let filters: Vec<String> = asked.state_filters.iter().map(|s| s.to_string()).collect();
    let unknown: Vec<StrBytes> = filters
        .iter()
        .filter(|f| !TxnState::NAMES.contains(&f.as_str()))
        .map(|f| text(f))
        .collect();
    let now = crate::log::partition_log::now_ms();
    let states = everything(&broker)
        .await
        .into_iter()
        .filter(|(_, m)| filters.is_empty() || filters.iter().any(|f| f == m.state.name()))
        .filter(|(_, m)| {
            asked.producer_id_filters.is_empty()
                || asked.producer_id_filters.iter().any(|p| p.0 == m.producer_id)
        })
        .filter(|(_, m)| {
            asked.duration_filter < 0 || (m.start_ms >= 0 && now - m.start_ms > asked.duration_filter)
        })
        .filter(|(id, _)| request.may(AclOperation::Describe, Resource::TransactionalId(id)))
        .map(|(id, m)| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(text(&id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(text(m.state.name()))
        })
        .collect();
    request.respond(
        &ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(states),
    )
}
