//! DescribeConfigs, IncrementalAlterConfigs and the legacy AlterConfigs for
//! topics, the broker (the cluster default `""` and this broker's id) and
//! groups. The two alter forms share one implementation
//! (`config::alter`), run on the controller shard.

use super::{handler, AclOperation, Handler, Outcome, Request};
use crate::config::alter::{AlterOutcome, ConfigChange, Operation, Resource};
use crate::config::broker_configs::{describe_broker, describe_cluster_defaults, BrokerConfigEntry};
use crate::config::dynamic::Scope;
use crate::groups::configs::describe_group;
use crate::server::ShardBroker;
use crate::topics::{describe_topic_configs, BrokerTopicDefaults, ConfigEntry, ConfigSource};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::rc::Rc;

pub(crate) const DESCRIBE_CONFIGS: Handler =
    handler!(DescribeConfigsRequest, describe_configs, versions = 1..=4);
pub(crate) const ALTER_CONFIGS: Handler =
    handler!(AlterConfigsRequest, alter_configs_legacy, versions = 0..=2);
pub(crate) const INCREMENTAL_ALTER_CONFIGS: Handler =
    handler!(IncrementalAlterConfigsRequest, alter_configs, versions = 0..=1);

/// Kafka's ConfigResource types. librdkafka names groups with the ACL
/// resource type (3), Kafka's own clients with the config one (32).
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const GROUP: i8 = 32;
const ACL_GROUP: i8 = 3;

/// What a config resource is authorized on, as Kafka does: a topic's
/// configs on the topic, broker configs on the cluster, a group's on the
/// group. `None`: a type that is refused anyway.
fn acl_resource(resource_type: i8, name: &str) -> Option<super::Resource<'_>> {
    match resource_type {
        TOPIC => Some(super::Resource::Topic(name)),
        BROKER => Some(super::Resource::Cluster),
        GROUP | ACL_GROUP => Some(super::Resource::Group(name)),
        _ => None,
    }
}

/// `Err` with the resource's error when `operation` on the config
/// resource is denied.
fn authorize_configs(
    request: &Request,
    operation: AclOperation,
    resource_type: i8,
    name: &str,
) -> Result<(), ResponseError> {
    acl_resource(resource_type, name).map_or(Ok(()), |resource| request.authorize(operation, resource))
}

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// What DescribeConfigs says of one config, before the request's options
/// (synonyms, documentation) are applied.
struct Described {
    name: String,
    value: String,
    source: ConfigSource,
    read_only: bool,
    config_type: i8,
    doc: &'static str,
    synonyms: Vec<(String, String, ConfigSource)>,
}

impl From<ConfigEntry> for Described {
    fn from(c: ConfigEntry) -> Self {
        Described {
            name: c.def.name.to_string(),
            value: c.value,
            source: c.source,
            read_only: false,
            config_type: c.def.config_type.code(),
            doc: c.def.doc,
            synonyms: c
                .synonyms
                .into_iter()
                .map(|s| (s.name, s.value, s.source))
                .collect(),
        }
    }
}

impl From<BrokerConfigEntry> for Described {
    fn from(c: BrokerConfigEntry) -> Self {
        Described {
            name: c.name,
            value: c.value,
            source: c.source,
            read_only: c.read_only,
            config_type: c.config_type.code(),
            doc: c.doc,
            synonyms: c.synonyms,
        }
    }
}

/// How the request wants configs described.
#[derive(Clone, Copy)]
struct Options {
    synonyms: bool,
    documentation: bool,
}

fn results(
    described: Vec<Described>,
    keys: Option<&[StrBytes]>,
    options: Options,
) -> Vec<DescribeConfigsResourceResult> {
    described
        .into_iter()
        .filter(|c| keys.is_none_or(|k| k.iter().any(|k| **k == *c.name)))
        .map(|c| {
            let synonyms = if options.synonyms {
                c.synonyms
                    .into_iter()
                    .map(|(name, value, source)| {
                        DescribeConfigsSynonym::default()
                            .with_name(text(name))
                            .with_value(Some(text(value)))
                            .with_source(source.code())
                    })
                    .collect()
            } else {
                Vec::new()
            };
            DescribeConfigsResourceResult::default()
                .with_name(text(c.name))
                .with_value(Some(text(c.value)))
                .with_read_only(c.read_only)
                .with_config_source(c.source.code())
                .with_synonyms(synonyms)
                .with_config_type(c.config_type)
                .with_documentation(options.documentation.then(|| StrBytes::from_static_str(c.doc)))
        })
        .collect()
}

/// A topic's configs as DescribeConfigs results (CreateTopics v5+ too).
pub(crate) fn topic_config_results(
    overrides: &BTreeMap<String, String>,
    defaults: &BrokerTopicDefaults,
) -> Vec<DescribeConfigsResourceResult> {
    let described = describe_topic_configs(overrides, defaults)
        .into_iter()
        .map(Described::from)
        .collect();
    results(
        described,
        None,
        Options {
            synonyms: false,
            documentation: false,
        },
    )
}

async fn describe_configs(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: DescribeConfigsRequest = request.decode("DescribeConfigs")?;
    let options = Options {
        synonyms: asked.include_synonyms,
        documentation: asked.include_documentation,
    };
    let catalog = broker.catalog().snapshot();
    let dynamic = broker.dynamic().snapshot();
    let node = broker.identity().node_id.to_string();
    let results = asked
        .resources
        .into_iter()
        .map(|r| {
            // Null or empty: every config (as Kafka's ConfigHelper does).
            let keys = r.configuration_keys.as_deref().filter(|k| !k.is_empty());
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let fail = |error: ResponseError, message: String| {
                DescribeConfigsResult::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone())
                    .with_error_code(error.code())
                    .with_error_message(Some(text(message)))
            };
            let authorized = authorize_configs(
                &request,
                AclOperation::DescribeConfigs,
                r.resource_type,
                &r.resource_name,
            );
            if let Err(denied) = authorized {
                return fail(denied, denied.to_string());
            }
            match r.resource_type {
                TOPIC => match catalog.get(&r.resource_name) {
                    Some(topic) => {
                        let described = describe_topic_configs(&topic.configs, catalog.defaults());
                        result.with_configs(results(
                            described.into_iter().map(Described::from).collect(),
                            keys,
                            options,
                        ))
                    }
                    None => fail(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no topic {}", &*r.resource_name),
                    ),
                },
                BROKER if r.resource_name.is_empty() => {
                    let described = describe_cluster_defaults(broker.config(), &dynamic);
                    result.with_configs(results(
                        described.into_iter().map(Described::from).collect(),
                        keys,
                        options,
                    ))
                }
                BROKER if *r.resource_name == *node => {
                    let described = describe_broker(broker.config(), &dynamic);
                    result.with_configs(results(
                        described.into_iter().map(Described::from).collect(),
                        keys,
                        options,
                    ))
                }
                BROKER => fail(ResponseError::InvalidRequest, format!("this is broker {node}")),
                GROUP | ACL_GROUP => {
                    let described = describe_group(dynamic.groups.get(&*r.resource_name))
                        .into_iter()
                        .map(|(def, value, source)| Described {
                            name: def.name.to_string(),
                            synonyms: vec![(def.name.to_string(), value.clone(), source)],
                            value,
                            source,
                            read_only: false,
                            config_type: def.config_type.code(),
                            doc: def.doc,
                        })
                        .collect();
                    result.with_configs(results(described, keys, options))
                }
                other => fail(
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported"),
                ),
            }
        })
        .collect();
    request.respond(&DescribeConfigsResponse::default().with_results(results))
}

/// Which resource a request names, or why it cannot be altered.
fn resource(
    broker: &ShardBroker,
    resource_type: i8,
    name: &str,
) -> Result<Resource, (ResponseError, String)> {
    match resource_type {
        TOPIC => Ok(Resource::Topic(name.to_string())),
        BROKER if name.is_empty() => Ok(Resource::Broker(Scope::Cluster)),
        BROKER if name == broker.identity().node_id.to_string() => Ok(Resource::Broker(Scope::Broker)),
        BROKER => Err((
            ResponseError::InvalidRequest,
            format!("this is broker {}", broker.identity().node_id),
        )),
        GROUP | ACL_GROUP if !name.is_empty() => Ok(Resource::Group(name.to_string())),
        other => Err((
            ResponseError::InvalidRequest,
            format!("resource type {other} cannot be altered"),
        )),
    }
}

/// One resource as an alter request names it: type, name, and its
/// changes (or the invalid operation code that spoils them).
type AlterTarget = (i8, StrBytes, Result<Vec<ConfigChange>, i8>);

/// Alters each resource in turn on the controller shard; the outcomes come
/// back in request order, with each resource's type and name.
async fn alter_each(
    broker: &Rc<ShardBroker>,
    request: &Request,
    targets: Vec<AlterTarget>,
    replace_all: bool,
    validate_only: bool,
) -> Vec<(i8, StrBytes, AlterOutcome)> {
    let failed = |error: ResponseError, message: String| AlterOutcome {
        error_code: error.code(),
        message: Some(message),
    };
    let mut outcomes = Vec::with_capacity(targets.len());
    for (resource_type, name, changes) in targets {
        let authorized = authorize_configs(request, AclOperation::AlterConfigs, resource_type, &name);
        let target = authorized
            .map_err(|denied| (denied, denied.to_string()))
            .and_then(|()| resource(broker, resource_type, &name));
        let outcome = match (target, changes) {
            (Err((error, message)), _) => failed(error, message),
            (_, Err(op)) => failed(
                ResponseError::InvalidRequest,
                format!("config operation {op} is not valid"),
            ),
            (Ok(target), Ok(changes)) => {
                broker
                    .controller()
                    .alter_configs(target, changes, replace_all, validate_only)
                    .await
            }
        };
        outcomes.push((resource_type, name, outcome));
    }
    outcomes
}

async fn alter_configs(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: IncrementalAlterConfigsRequest = request.decode("IncrementalAlterConfigs")?;
    let targets = asked
        .resources
        .into_iter()
        .map(|r| {
            let changes = r
                .configs
                .into_iter()
                .map(|c| {
                    Ok(ConfigChange {
                        name: c.name.to_string(),
                        operation: Operation::from_code(c.config_operation).ok_or(c.config_operation)?,
                        value: c.value.map(|v| v.to_string()),
                    })
                })
                .collect();
            (r.resource_type, r.resource_name, changes)
        })
        .collect();
    let responses = alter_each(&broker, &request, targets, false, asked.validate_only)
        .await
        .into_iter()
        .map(|(resource_type, name, outcome)| {
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_error_code(outcome.error_code)
                .with_error_message(outcome.message.map(text))
        })
        .collect();
    request.respond(&IncrementalAlterConfigsResponse::default().with_responses(responses))
}

/// The legacy form: the configs given become the resource's whole set.
async fn alter_configs_legacy(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: AlterConfigsRequest = request.decode("AlterConfigs")?;
    let targets = asked
        .resources
        .into_iter()
        .map(|r| {
            let changes = r
                .configs
                .into_iter()
                .map(|c| ConfigChange {
                    name: c.name.to_string(),
                    operation: if c.value.is_some() {
                        Operation::Set
                    } else {
                        Operation::Delete
                    },
                    value: c.value.map(|v| v.to_string()),
                })
                .collect();
            (r.resource_type, r.resource_name, Ok(changes))
        })
        .collect();
    let responses = alter_each(&broker, &request, targets, true, asked.validate_only)
        .await
        .into_iter()
        .map(|(resource_type, name, outcome)| {
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_error_code(outcome.error_code)
                .with_error_message(outcome.message.map(text))
        })
        .collect();
    request.respond(&AlterConfigsResponse::default().with_responses(responses))
}
