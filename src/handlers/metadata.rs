//! Metadata: this broker (node 0) at its advertised address, the cluster id,
//! the controller, and the topics asked for.

use super::{Handler, HandlerFuture, Outcome, Request};
use kafka_protocol::ResponseError;
use crate::protocol::response::encode_response;
use crate::server::ShardBroker;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};
use std::rc::Rc;

pub(crate) const HANDLER: Handler = Handler::of::<MetadataRequest>(handle_boxed);

fn handle_boxed(broker: Rc<ShardBroker>, request: Request) -> HandlerFuture {
    Box::pin(handle(broker, request))
}

async fn handle(broker: Rc<ShardBroker>, request: Request) -> Outcome {
    let version = request.version;
    let mut body = request.body;
    let asked = MetadataRequest::decode(&mut body, version)
        .map_err(|e| format!("bad Metadata v{version} body: {e}"))?;
    let (host, port) = broker.advertised.for_connection(request.local_addr);
    let node_id = BrokerId(broker.identity.node_id);
    let response = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node_id)
            .with_host(StrBytes::from_string(host))
            .with_port(i32::from(port))])
        .with_cluster_id(Some(StrBytes::from_string(broker.identity.cluster_id.clone())))
        .with_controller_id(node_id)
        .with_topics(
            asked
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(unknown_topic)
                .collect(),
        );
    encode_response(request.header.correlation_id, version, &response).map(Some)
}

/// No topic exists until the partition log lands; every named topic is
/// unknown, by name or (v10+) by id, with Kafka's code for each.
fn unknown_topic(
    topic: kafka_protocol::messages::metadata_request::MetadataRequestTopic,
) -> MetadataResponseTopic {
    let code = if topic.name.is_some() {
        ResponseError::UnknownTopicOrPartition.code()
    } else {
        ResponseError::UnknownTopicId.code()
    };
    MetadataResponseTopic::default()
        .with_error_code(code)
        .with_name(topic.name)
        .with_topic_id(topic.topic_id)
}
