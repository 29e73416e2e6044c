//! Dynamic broker configs at the cluster-default resource (`""`), which
//! librdkafka and kafka-python refuse to name client-side (Kafka's own
//! `kafka-configs --entity-default` does): raw frames encoded by the
//! `kafka-protocol` crate. The per-broker resource and everything else is
//! exercised with confluent-kafka and kafka-python in
//! scripts/interop/compat_admin.py.

mod common;

use common::{RawClient, TestBroker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    CreateTopicsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const DYNAMIC_BROKER_CONFIG: i8 = 2;
const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn set(client: &mut RawClient, resource_name: &str, name: &str, value: &str) -> (i16, Option<String>) {
    let request =
        IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(s(resource_name))
            .with_configs(vec![AlterableConfig::default()
                .with_name(s(name))
                .with_config_operation(0)
                .with_value(Some(s(value)))])]);
    let response = client.call(1, &request);
    let r = &response.responses[0];
    (r.error_code, r.error_message.as_ref().map(|m| m.to_string()))
}

fn describe(client: &mut RawClient, resource_type: i8, name: &str) -> DescribeConfigsResult {
    let request = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))]);
    client.call(4, &request).results.remove(0)
}

fn value_of(result: &DescribeConfigsResult, name: &str) -> Option<(String, i8)> {
    result
        .configs
        .iter()
        .find(|c| &*c.name == name)
        .map(|c| (c.value.as_deref().unwrap_or("").to_string(), c.config_source))
}

#[test]
fn cluster_defaults_apply_to_topics_below_the_broker_layer_and_survive_a_restart() {
    let mut broker = TestBroker::start("dynamic-cluster-defaults", 2);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(set(&mut client, "", "log.retention.ms", "3600000").0, 0);
    assert_eq!(set(&mut client, "", "log.segment.bytes", "2097152").0, 0);
    let (code, message) = set(&mut client, "", "log.retention.ms", "-7");
    assert_eq!(code, 40, "INVALID_CONFIG: {message:?}");
    let (code, message) = set(&mut client, "", "storage_path", "/elsewhere");
    assert_eq!(code, 42, "INVALID_REQUEST");
    assert!(message.unwrap_or_default().contains("STORAGE_PATH"));

    let defaults = describe(&mut client, BROKER, "");
    assert_eq!(defaults.error_code, 0);
    assert_eq!(
        defaults.configs.len(),
        2,
        "only the cluster defaults that are set"
    );
    assert_eq!(
        value_of(&defaults, "log.retention.ms"),
        Some(("3600000".into(), DYNAMIC_DEFAULT_BROKER_CONFIG))
    );

    let created = client.call(
        5,
        &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s("follows-defaults")))
            .with_num_partitions(1)
            .with_replication_factor(1)]),
    );
    assert_eq!(created.topics[0].error_code, 0);
    let topic = describe(&mut client, TOPIC, "follows-defaults");
    assert_eq!(
        value_of(&topic, "retention.ms"),
        Some(("3600000".into(), DYNAMIC_DEFAULT_BROKER_CONFIG))
    );
    assert_eq!(
        value_of(&topic, "segment.bytes"),
        Some(("2097152".into(), DYNAMIC_DEFAULT_BROKER_CONFIG))
    );

    // This broker's own value wins over the cluster default.
    assert_eq!(set(&mut client, "0", "log.retention.ms", "7200000").0, 0);
    let topic = describe(&mut client, TOPIC, "follows-defaults");
    let retention = topic
        .configs
        .iter()
        .find(|c| &*c.name == "retention.ms")
        .expect("retention.ms");
    assert_eq!(
        retention.value.as_deref().map(|v| v.to_string()),
        Some("7200000".into())
    );
    let layers: Vec<(String, i8)> = retention
        .synonyms
        .iter()
        .map(|s| (s.name.to_string(), s.source))
        .collect();
    assert_eq!(
        layers,
        [
            ("log.retention.ms".to_string(), DYNAMIC_BROKER_CONFIG),
            ("log.retention.ms".to_string(), DYNAMIC_DEFAULT_BROKER_CONFIG),
            ("log.retention.ms".to_string(), 5),
        ]
    );

    broker.restart();
    let mut client = RawClient::connect(broker.addr);
    let topic = describe(&mut client, TOPIC, "follows-defaults");
    assert_eq!(
        value_of(&topic, "retention.ms"),
        Some(("7200000".into(), DYNAMIC_BROKER_CONFIG))
    );
    assert_eq!(
        value_of(&topic, "segment.bytes"),
        Some(("2097152".into(), DYNAMIC_DEFAULT_BROKER_CONFIG))
    );
}
