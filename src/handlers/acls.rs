//! CreateAcls, DescribeAcls and DeleteAcls: Kafka's ACL admin APIs.
//! Without AUTHORIZER=acl they answer SECURITY_DISABLED, as Kafka's do
//! without an authorizer. Every change is logged for audit.

use super::{handler, AclOperation, Handler, Outcome, Request, Resource};
use crate::security::acl::{AclBinding, AclFilter};
use crate::server::ShardBroker;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::rc::Rc;
use tracing::info;

pub(crate) const CREATE: Handler = handler!(CreateAclsRequest, create, versions = 1..=3);
pub(crate) const DESCRIBE: Handler = handler!(DescribeAclsRequest, describe, versions = 1..=3);
pub(crate) const DELETE: Handler = handler!(DeleteAclsRequest, delete, versions = 1..=3);

const NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";

fn text(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

fn audit(request: &Request, action: &str, binding: &AclBinding) {
    info!(
        target: "chronik_audit",
        principal = %request.session.principal(),
        peer = %request.session.peer,
        resource_type = binding.resource_type,
        resource = %binding.resource_name,
        pattern_type = binding.pattern_type,
        acl_principal = %binding.principal,
        host = %binding.host,
        operation = binding.operation,
        permission = binding.permission,
        "ACL {action}"
    );
}

/// Why a request cannot change or list ACLs: no authorizer, or the
/// principal lacks `operation` on the cluster.
fn refusal(
    broker: &ShardBroker,
    request: &Request,
    operation: AclOperation,
) -> Option<(ResponseError, &'static str)> {
    if !broker.security().acls_enabled() {
        return Some((ResponseError::SecurityDisabled, NO_AUTHORIZER));
    }
    request
        .authorize(operation, Resource::Cluster)
        .err()
        .map(|denied| (denied, "Authorization failed."))
}

/// A DescribeAcls or DeleteAcls filter from its seven wire fields.
fn filter(
    resource_type: i8,
    name: Option<StrBytes>,
    pattern_type: i8,
    principal: Option<StrBytes>,
    host: Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> AclFilter {
    AclFilter {
        resource_type,
        resource_name: name.map(|n| n.to_string()),
        pattern_type,
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation,
        permission,
    }
}

async fn create(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let body = request.decode::<CreateAclsRequest>("CreateAcls")?;
    let bindings: Vec<AclBinding> = body
        .creations
        .into_iter()
        .map(|c| AclBinding {
            resource_type: c.resource_type,
            resource_name: c.resource_name.to_string(),
            pattern_type: c.resource_pattern_type,
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation,
            permission: c.permission_type,
        })
        .collect();
    let failed = |error: ResponseError, message: &str| {
        AclCreationResult::default()
            .with_error_code(error.code())
            .with_error_message(text(message))
    };
    if let Some((error, message)) = refusal(&broker, &request, AclOperation::Alter) {
        let results = bindings.iter().map(|_| failed(error, message)).collect();
        return request.respond(&CreateAclsResponse::default().with_results(results));
    }
    let outcomes = broker
        .controller()
        .create_acls(bindings.clone())
        .await
        .unwrap_or_else(|e| vec![Err((ResponseError::KafkaStorageError, e)); bindings.len()]);
    let results = bindings
        .iter()
        .zip(outcomes)
        .map(|(binding, outcome)| match outcome {
            Ok(()) => {
                audit(&request, "created", binding);
                AclCreationResult::default()
            }
            Err((error, message)) => failed(error, &message),
        })
        .collect();
    request.respond(&CreateAclsResponse::default().with_results(results))
}

async fn describe(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let body = request.decode::<DescribeAclsRequest>("DescribeAcls")?;
    if let Some((error, message)) = refusal(&broker, &request, AclOperation::Describe) {
        return request.respond(
            &DescribeAclsResponse::default()
                .with_error_code(error.code())
                .with_error_message(text(message)),
        );
    }
    let filter = filter(
        body.resource_type_filter,
        body.resource_name_filter,
        body.pattern_type_filter,
        body.principal_filter,
        body.host_filter,
        body.operation,
        body.permission_type,
    );
    if let Err(message) = filter.validate() {
        return request.respond(
            &DescribeAclsResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(text(message)),
        );
    }
    let snapshot = broker.security().acls.snapshot();
    // Grouped by resource pattern, as Kafka answers.
    let mut grouped: BTreeMap<(i8, &str, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in snapshot.bindings.iter().filter(|b| filter.matches(b)) {
        grouped
            .entry((b.resource_type, b.resource_name.as_str(), b.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(b.principal.clone()))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_operation(b.operation)
                    .with_permission_type(b.permission),
            );
    }
    let resources = grouped
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_pattern_type(pattern_type)
                .with_acls(acls)
        })
        .collect();
    request.respond(&DescribeAclsResponse::default().with_resources(resources))
}

async fn delete(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let body = request.decode::<DeleteAclsRequest>("DeleteAcls")?;
    let filters: Vec<AclFilter> = body
        .filters
        .into_iter()
        .map(|f| {
            filter(
                f.resource_type_filter,
                f.resource_name_filter,
                f.pattern_type_filter,
                f.principal_filter,
                f.host_filter,
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let failed = |error: ResponseError, message: &str| {
        DeleteAclsFilterResult::default()
            .with_error_code(error.code())
            .with_error_message(text(message))
    };
    if let Some((error, message)) = refusal(&broker, &request, AclOperation::Alter) {
        let results = filters.iter().map(|_| failed(error, message)).collect();
        return request.respond(&DeleteAclsResponse::default().with_filter_results(results));
    }
    let count = filters.len();
    let outcomes = broker
        .controller()
        .delete_acls(filters)
        .await
        .unwrap_or_else(|e| vec![Err((ResponseError::KafkaStorageError, e)); count]);
    let results = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok(deleted) => DeleteAclsFilterResult::default().with_matching_acls(
                deleted
                    .iter()
                    .map(|b| {
                        audit(&request, "deleted", b);
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type)
                            .with_resource_name(StrBytes::from_string(b.resource_name.clone()))
                            .with_pattern_type(b.pattern_type)
                            .with_principal(StrBytes::from_string(b.principal.clone()))
                            .with_host(StrBytes::from_string(b.host.clone()))
                            .with_operation(b.operation)
                            .with_permission_type(b.permission)
                    })
                    .collect(),
            ),
            Err((error, message)) => failed(error, &message),
        })
        .collect();
    request.respond(&DeleteAclsResponse::default().with_filter_results(results))
}
