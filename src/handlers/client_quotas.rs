//! DescribeClientQuotas and AlterClientQuotas: Kafka's client quotas per
//! user, client id or both (and per ip), with defaults. Changes are
//! durable, apply to open connections at their next request, and are
//! logged for audit.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::security::quotas::{Entity, QuotaOp};
use crate::server::ShardBroker;
use kafka_protocol::messages::alter_client_quotas_response;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::rc::Rc;
use tracing::info;

pub(crate) const DESCRIBE: Handler = handler!(DescribeClientQuotasRequest, describe, versions = 0..=1);
pub(crate) const ALTER: Handler = handler!(AlterClientQuotasRequest, alter, versions = 0..=1);

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

async fn describe(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let body = request.decode::<DescribeClientQuotasRequest>("DescribeClientQuotas")?;
    if let Err(denied) = request.authorize(AclOperation::DescribeConfigs, Resource::Cluster) {
        return request.respond(
            &DescribeClientQuotasResponse::default()
                .with_error_code(denied.code())
                .with_error_message(Some(text("Authorization failed."))),
        );
    }
    let components: Vec<(String, i8, Option<String>)> = body
        .components
        .iter()
        .map(|c| {
            (
                c.entity_type.to_string(),
                c.match_type,
                c._match.as_ref().map(|m| m.to_string()),
            )
        })
        .collect();
    if let Some((_, how, _)) = components.iter().find(|(_, how, _)| !(0..=2).contains(how)) {
        return request.respond(
            &DescribeClientQuotasResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(text(format!("unknown match type {how}")))),
        );
    }
    let quotas = broker.security().quotas.snapshot();
    let entries = quotas
        .describe(&components, body.strict)
        .into_iter()
        .map(|e| {
            EntryData::default()
                .with_entity(
                    e.entity
                        .iter()
                        .map(|(t, n)| {
                            EntityData::default()
                                .with_entity_type(text(t.clone()))
                                .with_entity_name(n.clone().map(text))
                        })
                        .collect(),
                )
                .with_values(
                    e.values
                        .iter()
                        .map(|(k, v)| ValueData::default().with_key(text(k.clone())).with_value(*v))
                        .collect(),
                )
        })
        .collect();
    request.respond(&DescribeClientQuotasResponse::default().with_entries(Some(entries)))
}

async fn alter(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let body = request.decode::<AlterClientQuotasRequest>("AlterClientQuotas")?;
    let entities: Vec<Vec<alter_client_quotas_response::EntityData>> = body
        .entries
        .iter()
        .map(|e| {
            e.entity
                .iter()
                .map(|c| {
                    alter_client_quotas_response::EntityData::default()
                        .with_entity_type(c.entity_type.clone())
                        .with_entity_name(c.entity_name.clone())
                })
                .collect()
        })
        .collect();
    let answer = |entity: Vec<alter_client_quotas_response::EntityData>,
                  error: Option<(ResponseError, String)>| {
        let entry = alter_client_quotas_response::EntryData::default().with_entity(entity);
        match error {
            Some((error, message)) => entry
                .with_error_code(error.code())
                .with_error_message(Some(text(message))),
            None => entry,
        }
    };
    if let Err(denied) = request.authorize(AclOperation::AlterConfigs, Resource::Cluster) {
        let entries = entities
            .into_iter()
            .map(|e| answer(e, Some((denied, "Authorization failed.".into()))))
            .collect();
        return request.respond(&AlterClientQuotasResponse::default().with_entries(entries));
    }
    let changes: Vec<(Entity, Vec<QuotaOp>)> = body
        .entries
        .iter()
        .map(|e| {
            let entity = e
                .entity
                .iter()
                .map(|c| {
                    (
                        c.entity_type.to_string(),
                        c.entity_name.as_ref().map(|n| n.to_string()),
                    )
                })
                .collect();
            let ops = e
                .ops
                .iter()
                .map(|o| QuotaOp {
                    key: o.key.to_string(),
                    value: o.value,
                    remove: o.remove,
                })
                .collect();
            (entity, ops)
        })
        .collect();
    let count = changes.len();
    let logged = changes.clone();
    let outcomes = broker
        .controller()
        .alter_client_quotas(changes, body.validate_only)
        .await
        .unwrap_or_else(|e| vec![Err((ResponseError::KafkaStorageError, e)); count]);
    let entries = entities
        .into_iter()
        .zip(outcomes)
        .zip(logged)
        .map(|((entity, outcome), (asked, ops))| {
            if outcome.is_ok() && !body.validate_only {
                info!(
                    target: "chronik_audit",
                    principal = %request.session.principal(),
                    peer = %request.session.peer,
                    entity = ?asked,
                    ops = ?ops,
                    "client quota altered"
                );
            }
            answer(entity, outcome.err())
        })
        .collect();
    request.respond(&AlterClientQuotasResponse::default().with_entries(entries))
}
