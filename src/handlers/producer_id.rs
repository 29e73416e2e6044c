//! InitProducerId: a producer id for an idempotent producer, unique across
//! restarts (allocated by the controller shard from persisted blocks), or,
//! for a transactional id, its producer id and a new epoch from the id's
//! transaction coordinator (src/transactions).
//!
//! As in Kafka's `TransactionCoordinator.handleInitProducerId`, a request
//! without a transactional id always gets a fresh producer id at epoch 0,
//! whatever producer id and epoch it names (KIP-360): the broker has no
//! record tying an idempotent producer's id to the client asking, so
//! bumping the epoch of a named id would let any client fence another's
//! producer. An idempotent producer bumps its own epoch client-side; only a
//! transactional id owns its producer id across calls.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::server::ShardBroker;
use crate::transactions::state::fenced_for;
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
    // Kafka: WRITE on the transactional id; for an idempotent producer,
    // IDEMPOTENT_WRITE on the cluster or WRITE on at least one topic
    // (KIP-679: a producer allowed to write somewhere may be idempotent).
    let authorized = match asked.transactional_id.as_deref().filter(|t| !t.is_empty()) {
        Some(id) => request.authorize(AclOperation::Write, Resource::TransactionalId(id)),
        None if request.may(AclOperation::IdempotentWrite, Resource::Cluster)
            || request
                .session
                .may_any(AclOperation::Write, crate::security::acl::code::TOPIC) =>
        {
            Ok(())
        }
        None => request.authorize(AclOperation::IdempotentWrite, Resource::Cluster),
    };
    if let Err(denied) = authorized {
        return request.respond(&response.with_error_code(denied.code()));
    }
    if let Some(code) = refusal(&asked) {
        return request.respond(&response.with_error_code(code.code()));
    }
    if let Some(id) = asked.transactional_id.as_ref().map(|id| id.to_string()) {
        let timeout = asked.transaction_timeout_ms;
        let expected = (asked.producer_id.0 >= 0).then_some((asked.producer_id.0, asked.producer_epoch));
        let granted = broker
            .on_coordinator(broker.transaction_owner(&id), move |b| async move {
                let coordinator = b.transactions().clone();
                coordinator.init(&b, &id, timeout, expected).await
            })
            .await
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable));
        let response = match granted {
            Ok((pid, epoch)) => response
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            Err(e) => response.with_error_code(fenced_for(request.version, 4, e).code()),
        };
        return request.respond(&response);
    }
    let allocated = broker.controller().allocate_producer_id().await;
    let response = match allocated {
        Ok(id) => response.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            error!(error = %e, "cannot allocate a producer id");
            response.with_error_code(ResponseError::KafkaStorageError.code())
        }
    };
    request.respond(&response)
}

/// Why a request gets no producer id, checked in Kafka's order.
fn refusal(asked: &InitProducerIdRequest) -> Option<ResponseError> {
    // KafkaApis: a producer id and epoch come as a pair or not at all.
    if (asked.producer_id.0 == -1) != (asked.producer_epoch == -1) {
        return Some(ResponseError::InvalidRequest);
    }
    match &asked.transactional_id {
        // The coordinator refuses an empty transactional id outright, as
        // the Java producer does.
        Some(id) if id.is_empty() => Some(ResponseError::InvalidRequest),
        _ => None,
    }
}
