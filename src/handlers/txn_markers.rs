//! WriteTxnMarkers: a coordinator (or an admin aborting a hanging
//! transaction, as `kafka-transactions.sh abort` does) asks a partition's
//! leader to write COMMIT or ABORT markers. This broker's own coordinators
//! write theirs directly; the API is what other brokers and admin tools
//! use.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::log::control::Marker;
use crate::server::ShardBroker;
use crate::topics::TopicPartition;
use futures::future::join_all;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use std::rc::Rc;

pub(crate) const HANDLER: Handler = handler!(WriteTxnMarkersRequest, write_markers, versions = 1..=1);

async fn write_markers(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: WriteTxnMarkersRequest = request.decode("WriteTxnMarkers")?;
    // Kafka: brokers only; refused, every partition gets the error.
    let denied = request
        .authorize(AclOperation::ClusterAction, Resource::Cluster)
        .err()
        .map(|denied| denied.code());
    let broker = &broker;
    let markers = join_all(asked.markers.into_iter().map(|marker| async move {
        let kind = if marker.transaction_result {
            Marker::Commit
        } else {
            Marker::Abort
        };
        let producer = (marker.producer_id.0, marker.producer_epoch);
        let topics = join_all(marker.topics.into_iter().map(|topic| async move {
            let partitions = join_all(topic.partition_indexes.into_iter().map(|index| {
                let tp = TopicPartition::new(&topic.name, index);
                async move {
                    let code = match denied {
                        Some(code) => code,
                        None => crate::transactions::write_marker(
                            broker,
                            &tp,
                            kind,
                            producer,
                            marker.coordinator_epoch,
                        )
                        .await
                        .map_or_else(|e| e.code(), |()| 0),
                    };
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                }
            }))
            .await;
            WritableTxnMarkerTopicResult::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        }))
        .await;
        WritableTxnMarkerResult::default()
            .with_producer_id(marker.producer_id)
            .with_topics(topics)
    }))
    .await;
    request.respond(&WriteTxnMarkersResponse::default().with_markers(markers))
}
