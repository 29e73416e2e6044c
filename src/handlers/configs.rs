//! DescribeConfigs (topics and this broker) and IncrementalAlterConfigs
//! (topics; the broker's settings are static, from env and file).

use super::{handler, Handler, Outcome, Request};
use crate::config::SETTINGS;
use crate::controller::{self, ConfigChange};
use crate::server::{ShardBroker, CONTROLLER_SHARD};
use crate::topics::describe_topic_configs;
use crate::ServerConfig;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::rc::Rc;

pub(crate) const DESCRIBE_CONFIGS: Handler = handler!(DescribeConfigsRequest, describe_configs);
pub(crate) const INCREMENTAL_ALTER_CONFIGS: Handler = handler!(IncrementalAlterConfigsRequest, alter_configs);

/// Kafka's ConfigResource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// A topic's configs as DescribeConfigs results, optionally only `keys`.
pub(crate) fn topic_config_results(
    overrides: &BTreeMap<String, String>,
    keys: Option<&[StrBytes]>,
) -> Vec<DescribeConfigsResourceResult> {
    describe_topic_configs(overrides)
        .into_iter()
        .filter(|c| keys.is_none_or(|k| k.iter().any(|k| &**k == c.name)))
        .map(|c| {
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(c.name))
                .with_value(Some(StrBytes::from_string(c.value)))
                .with_config_source(if c.is_default {
                    DEFAULT_CONFIG
                } else {
                    TOPIC_CONFIG
                })
                .with_config_type(c.config_type)
        })
        .collect()
}

/// This broker's settings, by their config-file names, read-only.
fn broker_config_results(
    config: &ServerConfig,
    keys: Option<&[StrBytes]>,
) -> Vec<DescribeConfigsResourceResult> {
    let defaults = ServerConfig::default();
    SETTINGS
        .iter()
        .map(|s| (s.name.to_ascii_lowercase(), s))
        .filter(|(name, _)| keys.is_none_or(|k| k.iter().any(|k| &**k == name.as_str())))
        .map(|(name, s)| {
            let value = s.show(config);
            let source = if value == s.show(&defaults) {
                DEFAULT_CONFIG
            } else {
                STATIC_BROKER_CONFIG
            };
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_string(name))
                .with_value(Some(StrBytes::from_string(value)))
                .with_read_only(true)
                .with_config_source(source)
                .with_config_type(2)
        })
        .collect()
}

async fn describe_configs(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: DescribeConfigsRequest = request.decode("DescribeConfigs")?;
    let catalog = broker.catalog.snapshot();
    let node = broker.identity.node_id.to_string();
    let results = asked
        .resources
        .into_iter()
        .map(|r| {
            // Null or empty: every config (as Kafka's ConfigHelper does).
            let keys = r.configuration_keys.as_deref().filter(|k| !k.is_empty());
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                TOPIC => match catalog.get(&r.resource_name) {
                    Some(topic) => result.with_configs(topic_config_results(&topic.configs, keys)),
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "no topic {}",
                            &*r.resource_name
                        )))),
                },
                BROKER if r.resource_name.is_empty() || *r.resource_name == *node => {
                    result.with_configs(broker_config_results(&broker.config, keys))
                }
                BROKER => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_string(format!("this is broker {node}")))),
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "resource type {other} is not supported"
                    )))),
            }
        })
        .collect();
    request.respond(&DescribeConfigsResponse::default().with_results(results))
}

async fn alter_configs(broker: Rc<ShardBroker>, mut request: Request) -> Outcome {
    let asked: IncrementalAlterConfigsRequest = request.decode("IncrementalAlterConfigs")?;
    let mut responses = Vec::with_capacity(asked.resources.len());
    for resource in asked.resources {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        if resource.resource_type != TOPIC {
            responses.push(
                response
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "only topic configs can be altered; broker settings are static",
                    ))),
            );
            continue;
        }
        let changes: Vec<ConfigChange> = resource
            .configs
            .into_iter()
            .map(|c| ConfigChange {
                name: c.name.to_string(),
                operation: c.config_operation,
                value: c.value.map(|v| v.to_string()),
            })
            .collect();
        let topic = resource.resource_name.to_string();
        let validate_only = asked.validate_only;
        let outcome = broker
            .on_shard(CONTROLLER_SHARD, move |b| {
                controller::alter_topic_configs(b, topic, changes, validate_only)
            })
            .await;
        responses.push(match outcome {
            Ok(o) => response
                .with_error_code(o.error_code)
                .with_error_message(o.message.map(StrBytes::from_string)),
            Err(e) => response
                .with_error_code(ResponseError::KafkaStorageError.code())
                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
        });
    }
    request.respond(&IncrementalAlterConfigsResponse::default().with_responses(responses))
}
