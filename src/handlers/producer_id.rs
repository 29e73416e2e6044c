//! InitProducerId: a producer id for an idempotent producer, unique across
//! restarts (allocated by the controller shard from persisted blocks). A
//! producer that sends back its id and epoch (KIP-360) gets the epoch
//! bumped instead, which fences its older epoch in every partition.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::server::{ShardBroker, CONTROLLER_SHARD};
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use std::rc::Rc;
use tracing::error;

pub(crate) const HANDLER: Handler = handler!(InitProducerIdRequest, handle, versions = 0..=5);

async fn handle(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: InitProducerIdRequest = request.decode("InitProducerId")?;
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    // Kafka: WRITE on the transactional id, or IDEMPOTENT_WRITE on the
    // cluster for an idempotent producer.
    let authorized = match asked.transactional_id.as_deref().filter(|t| !t.is_empty()) {
        Some(id) => request.authorize(AclOperation::Write, Resource::TransactionalId(id)),
        None => request.authorize(AclOperation::IdempotentWrite, Resource::Cluster),
    };
    if let Err(denied) = authorized {
        return request.respond(&response.with_error_code(denied.code()));
    }
    if asked.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        // No transaction coordinator: refuse rather than pretend.
        let response = response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
        return request.respond(&response);
    }
    if asked.producer_id.0 >= 0 && asked.producer_epoch >= 0 && asked.producer_epoch < i16::MAX - 1 {
        let response = response
            .with_producer_id(asked.producer_id)
            .with_producer_epoch(asked.producer_epoch + 1);
        return request.respond(&response);
    }
    let allocated = broker
        .on_shard(CONTROLLER_SHARD, |b| async move {
            match &b.controller {
                Some(controller) => controller.allocate_producer_id().map_err(|e| e.to_string()),
                None => Err("controller state missing".to_string()),
            }
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
    let response = match allocated {
        Ok(id) => response.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            error!(error = %e, "cannot allocate a producer id");
            response.with_error_code(ResponseError::KafkaStorageError.code())
        }
    };
    request.respond(&response)
}
