//! DescribeCluster: the admin client's view of the cluster (this broker, or
//! in cluster mode every live one).

use super::{handler, Handler, Outcome, Request};
use crate::server::ShardBroker;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;

pub(crate) const HANDLER: Handler = handler!(DescribeClusterRequest, handle, versions = 0..=2);

/// Kafka's EndpointType for brokers (v1+; controllers are 2).
const BROKER_ENDPOINTS: i8 = 1;

async fn handle(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: DescribeClusterRequest = request.decode("DescribeCluster")?;
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.identity().cluster_id.clone()))
        .with_controller_id(BrokerId(broker.controller_id()));
    if request.version >= 1 && asked.endpoint_type != BROKER_ENDPOINTS {
        response = response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "only broker endpoints are served",
            )));
        return request.respond(&response);
    }
    let brokers = broker
        .brokers_for(&request)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node))
                .with_host(StrBytes::from_string(b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    let response =
        response
            .with_brokers(brokers)
            .with_cluster_authorized_operations(super::acl_operations::cluster(
                &request,
                asked.include_cluster_authorized_operations,
            ));
    request.respond(&response)
}
