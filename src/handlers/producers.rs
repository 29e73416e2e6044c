//! DescribeProducers: the producers a partition's producer state holds
//! (idempotent and transactional), with the start of each one's open
//! transaction: how an operator finds the producer holding a partition's
//! last stable offset back.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::server::ShardBroker;
use crate::storage::StorageError;
use crate::topics::TopicPartition;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError;
use std::rc::Rc;

pub(crate) const HANDLER: Handler = handler!(DescribeProducersRequest, describe_producers, versions = 0..=0);

async fn describe_producers(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: DescribeProducersRequest = request.decode("DescribeProducers")?;
    let mut topics = Vec::new();
    for topic in asked.topics {
        let name = topic.name.to_string();
        let denied = request
            .authorize(AclOperation::Read, Resource::Topic(&name))
            .err();
        let mut partitions = Vec::new();
        for index in topic.partition_indexes {
            let answer = PartitionResponse::default().with_partition_index(index);
            if let Some(denied) = denied {
                partitions.push(answer.with_error_code(denied.code()));
                continue;
            }
            let tp = TopicPartition::new(&name, index);
            let Some(shard) = broker.partitions().router().local_shard(&tp) else {
                partitions.push(answer.with_error_code(ResponseError::NotLeaderOrFollower.code()));
                continue;
            };
            let found = broker
                .on_shard(shard, move |b| async move {
                    b.local_partitions().producers(&tp).await
                })
                .await
                .unwrap_or(Err(StorageError::Unreachable("the partition's shard".into())));
            partitions.push(match found {
                Ok(producers) => answer.with_active_producers(
                    producers
                        .into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.epoch))
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(p.txn_start_offset)
                        })
                        .collect(),
                ),
                Err(e) => answer.with_error_code(e.code()),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    request.respond(&DescribeProducersResponse::default().with_topics(topics))
}
