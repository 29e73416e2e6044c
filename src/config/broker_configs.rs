//! The broker as a DescribeConfigs/AlterConfigs resource: which configs it
//! reports (Kafka's names where Kafka has the same setting, our setting
//! names otherwise), which of them can change at run time, and the values
//! in force once the dynamic layers are applied over the static settings.
//!
//! Resolution, most specific first, as Kafka does: this broker's dynamic
//! value, the cluster-wide dynamic default, the static setting (environment
//! or file), the built-in default.

use super::dynamic::{ConfigMap, DynamicConfigs};
use super::{ServerConfig, SETTINGS};
use crate::topics::{
    topic_config_for_broker_name, BrokerTopicDefaults, ConfigSource, ConfigType, TOPIC_CONFIGS,
};
use chronik_shard::ConnectionLimits;
use kafka_protocol::ResponseError;
use std::time::Duration;

/// A broker config with its own static setting.
struct BrokerConfigDef {
    name: &'static str,
    config_type: ConfigType,
    /// The environment setting that gives its static value.
    setting: &'static str,
    /// The static value, in this config's unit.
    value: fn(&ServerConfig) -> String,
    dynamic: bool,
    /// Smallest value accepted at run time.
    min: i64,
    doc: &'static str,
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

static OWN_CONFIGS: &[BrokerConfigDef] = &[
    BrokerConfigDef {
        name: "max.connections",
        config_type: ConfigType::Int,
        setting: "MAX_CONNECTIONS",
        value: |c| c.max_connections.to_string(),
        dynamic: true,
        min: 0,
        doc: "Most connections at once across all shards (0 = no limit).",
    },
    BrokerConfigDef {
        name: "max.connections.per.ip",
        config_type: ConfigType::Int,
        setting: "MAX_CONNECTIONS_PER_IP",
        value: |c| c.pool_config.max_per_ip.to_string(),
        dynamic: true,
        min: 0,
        doc: "Most connections one client address may hold (0 = no limit).",
    },
    BrokerConfigDef {
        name: "connections.max.idle.ms",
        config_type: ConfigType::Long,
        setting: "IDLE_TIMEOUT_SECS",
        value: |c| millis(c.idle_timeout),
        dynamic: true,
        min: 0,
        doc: "Connections without a whole request this long are closed (0 = never).",
    },
    BrokerConfigDef {
        name: "chronik.connection.rate.limit",
        config_type: ConfigType::Int,
        setting: "CONNECTION_RATE_LIMIT",
        value: |c| c.pool_config.rate_limit.to_string(),
        dynamic: true,
        min: 0,
        doc: "New connections per second one address may open before it is banned (0 = no limit).",
    },
    BrokerConfigDef {
        name: "chronik.rate.limit.ban.ms",
        config_type: ConfigType::Long,
        setting: "RATE_LIMIT_BAN_SECS",
        value: |c| millis(c.pool_config.ban_duration),
        dynamic: true,
        min: 0,
        doc: "How long an address that broke the connection rate limit is refused.",
    },
    BrokerConfigDef {
        name: "chronik.backpressure.threshold",
        config_type: ConfigType::Int,
        setting: "BACKPRESSURE_THRESHOLD",
        value: |c| c.backpressure_threshold.to_string(),
        dynamic: true,
        min: 1,
        doc: "Pending requests per shard above which the shard stops reading new requests.",
    },
    BrokerConfigDef {
        name: "num.partitions",
        config_type: ConfigType::Int,
        setting: "NUM_PARTITIONS",
        value: |c| c.num_partitions.to_string(),
        dynamic: false,
        min: 1,
        doc: "Partitions of auto-created topics and of CreateTopics asking for the default.",
    },
    BrokerConfigDef {
        name: "auto.create.topics.enable",
        config_type: ConfigType::Boolean,
        setting: "AUTO_CREATE_TOPICS",
        value: |c| c.auto_create_topics.to_string(),
        dynamic: false,
        min: 0,
        doc: "Whether Metadata and Produce create unknown topics.",
    },
];

/// The broker config that changes `setting` at run time, if there is one.
pub(crate) fn runtime_name(setting: &str) -> Option<&'static str> {
    OWN_CONFIGS
        .iter()
        .find(|d| d.dynamic && d.setting == setting)
        .map(|d| d.name)
}

/// One described broker config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfigEntry {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
    pub read_only: bool,
    pub config_type: ConfigType,
    pub doc: &'static str,
    /// (name, value, source) of every layer with a value, most specific first.
    pub synonyms: Vec<(String, String, ConfigSource)>,
}

/// The dynamic layers of `name`, most specific first.
fn dynamic_layers(name: &str, dynamic: &DynamicConfigs) -> Vec<(String, String, ConfigSource)> {
    [
        (&dynamic.broker, ConfigSource::DynamicBroker),
        (&dynamic.cluster, ConfigSource::DynamicDefaultBroker),
    ]
    .into_iter()
    .filter_map(|(layer, source)| layer.get(name).map(|v| (name.to_string(), v.clone(), source)))
    .collect()
}

fn entry(
    name: &str,
    config_type: ConfigType,
    doc: &'static str,
    read_only: bool,
    mut synonyms: Vec<(String, String, ConfigSource)>,
) -> BrokerConfigEntry {
    // The last layer is always there (static or default).
    let (value, source) = synonyms
        .first()
        .map(|(_, v, s)| (v.clone(), *s))
        .unwrap_or((String::new(), ConfigSource::Default));
    synonyms.dedup();
    BrokerConfigEntry {
        name: name.to_string(),
        value,
        source,
        read_only,
        config_type,
        doc,
        synonyms,
    }
}

/// Every config of this broker with its value in force and its layers.
pub fn describe_broker(config: &ServerConfig, dynamic: &DynamicConfigs) -> Vec<BrokerConfigEntry> {
    let defaults = ServerConfig::default();
    let mut entries = Vec::new();
    for def in OWN_CONFIGS {
        let mut layers = if def.dynamic {
            dynamic_layers(def.name, dynamic)
        } else {
            Vec::new()
        };
        let (value, default) = ((def.value)(config), (def.value)(&defaults));
        if value != default {
            layers.push((
                def.setting.to_ascii_lowercase(),
                value,
                ConfigSource::StaticBroker,
            ));
        }
        layers.push((def.name.to_string(), default, ConfigSource::Default));
        entries.push(entry(def.name, def.config_type, def.doc, !def.dynamic, layers));
    }
    let mut seen = std::collections::BTreeSet::new();
    for topic in TOPIC_CONFIGS {
        let Some(name) = topic.broker_synonym else {
            continue;
        };
        if !seen.insert(name) {
            continue;
        }
        let mut layers = dynamic_layers(name, dynamic);
        layers.push((name.to_string(), topic.default.to_string(), ConfigSource::Default));
        entries.push(entry(name, topic.config_type, topic.doc, false, layers));
    }
    // Every other setting, read-only, by its config-file name.
    for setting in SETTINGS {
        if OWN_CONFIGS.iter().any(|d| d.setting == setting.name) {
            continue;
        }
        let value = setting.show(config);
        let source = if value == setting.show(&defaults) {
            ConfigSource::Default
        } else {
            ConfigSource::StaticBroker
        };
        let name = setting.name.to_ascii_lowercase();
        let layers = vec![(name.clone(), value, source)];
        entries.push(entry(&name, ConfigType::String, setting.help, true, layers));
    }
    entries
}

/// Only the cluster-wide dynamic defaults (what Kafka describes for the
/// broker resource named `""`).
pub fn describe_cluster_defaults(config: &ServerConfig, dynamic: &DynamicConfigs) -> Vec<BrokerConfigEntry> {
    describe_broker(config, dynamic)
        .into_iter()
        .filter_map(|mut e| {
            let layer = e
                .synonyms
                .iter()
                .find(|(_, _, s)| *s == ConfigSource::DynamicDefaultBroker)?
                .clone();
            e.value = layer.1.clone();
            e.source = layer.2;
            e.synonyms = vec![layer];
            Some(e)
        })
        .collect()
}

/// Whether `name` is a broker config that can change at run time; the
/// error is the Kafka error and its message.
pub fn check_broker_name(name: &str) -> Result<(), (ResponseError, String)> {
    if topic_config_for_broker_name(name).is_some() {
        return Ok(());
    }
    let static_setting = match OWN_CONFIGS.iter().find(|d| d.name == name) {
        Some(def) if def.dynamic => return Ok(()),
        Some(def) => Some(def.setting),
        None => SETTINGS
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .map(|s| s.name),
    };
    Err((
        ResponseError::InvalidRequest,
        match static_setting {
            Some(setting) => format!("{name} cannot be changed at run time: set {setting} and restart"),
            None => format!("{name} is not a broker config of this broker"),
        },
    ))
}

/// Whether `name` may be set to `value` at run time; the error is the
/// Kafka error and its message.
pub fn check_broker_change(name: &str, value: &str) -> Result<(), (ResponseError, String)> {
    check_broker_name(name)?;
    if let Some(topic) = topic_config_for_broker_name(name) {
        return topic
            .validate(value)
            .map_err(|m| (ResponseError::InvalidConfig, m.replacen(topic.name, name, 1)));
    }
    let min = OWN_CONFIGS.iter().find(|d| d.name == name).map_or(0, |d| d.min);
    let is_int = OWN_CONFIGS
        .iter()
        .any(|d| d.name == name && d.config_type == ConfigType::Int);
    match value.trim().parse::<i64>() {
        Ok(n) if n >= min && (!is_int || n <= i64::from(i32::MAX)) => Ok(()),
        _ => Err((
            ResponseError::InvalidConfig,
            format!("{name}={value}: expected a whole number >= {min}"),
        )),
    }
}

/// The value in force for one of our own dynamic configs.
fn own_value(name: &str, config: &ServerConfig, dynamic: &DynamicConfigs) -> Option<i64> {
    let def = OWN_CONFIGS.iter().find(|d| d.name == name)?;
    dynamic_layers(name, dynamic)
        .first()
        .map(|(_, v, _)| v.clone())
        .unwrap_or_else(|| (def.value)(config))
        .trim()
        .parse()
        .ok()
}

/// What the shards enforce once the dynamic layers are applied.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    pub limits: ConnectionLimits,
    pub idle_timeout: Option<Duration>,
    pub backpressure_threshold: usize,
    pub topic_defaults: BrokerTopicDefaults,
}

pub fn live_settings(config: &ServerConfig, dynamic: &DynamicConfigs) -> LiveSettings {
    let get = |name: &str| own_value(name, config, dynamic).unwrap_or(0).max(0) as u64;
    let topic_layer = |layer: &ConfigMap| -> ConfigMap {
        layer
            .iter()
            .filter(|(k, _)| topic_config_for_broker_name(k).is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    LiveSettings {
        limits: ConnectionLimits {
            max_connections: get("max.connections") as usize,
            max_per_ip: get("max.connections.per.ip") as usize,
            rate_limit: u32::try_from(get("chronik.connection.rate.limit")).unwrap_or(u32::MAX),
            ban_duration: Duration::from_millis(get("chronik.rate.limit.ban.ms")),
            exempt: config.pool_config.exempt.clone(),
        },
        idle_timeout: Some(Duration::from_millis(get("connections.max.idle.ms"))).filter(|d| !d.is_zero()),
        backpressure_threshold: (get("chronik.backpressure.threshold") as usize).max(1),
        topic_defaults: BrokerTopicDefaults {
            broker: topic_layer(&dynamic.broker),
            cluster: topic_layer(&dynamic.cluster),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_layers_win_over_static_settings() {
        let config = ServerConfig {
            max_connections: 500,
            ..ServerConfig::default()
        };
        let mut dynamic = DynamicConfigs::default();
        let live = live_settings(&config, &dynamic);
        assert_eq!(live.limits.max_connections, 500);
        assert_eq!(live.idle_timeout, Some(Duration::from_secs(600)));
        dynamic.cluster.insert("max.connections".into(), "300".into());
        dynamic.broker.insert("max.connections".into(), "200".into());
        dynamic
            .cluster
            .insert("connections.max.idle.ms".into(), "0".into());
        dynamic.cluster.insert("log.retention.ms".into(), "1000".into());
        let live = live_settings(&config, &dynamic);
        assert_eq!(live.limits.max_connections, 200);
        assert_eq!(live.idle_timeout, None);
        assert_eq!(
            live.topic_defaults
                .cluster
                .get("log.retention.ms")
                .map(String::as_str),
            Some("1000")
        );
        let described = describe_broker(&config, &dynamic);
        let max = described.iter().find(|e| e.name == "max.connections").unwrap();
        assert_eq!(
            (max.value.as_str(), max.source),
            ("200", ConfigSource::DynamicBroker)
        );
        let sources: Vec<_> = max.synonyms.iter().map(|s| s.2).collect();
        assert_eq!(
            sources,
            [
                ConfigSource::DynamicBroker,
                ConfigSource::DynamicDefaultBroker,
                ConfigSource::StaticBroker,
                ConfigSource::Default
            ]
        );
        assert!(described
            .iter()
            .any(|e| e.name == "log.retention.ms" && !e.read_only));
        assert!(described.iter().any(|e| e.name == "storage_path" && e.read_only));
        let cluster = describe_cluster_defaults(&config, &dynamic);
        assert_eq!(cluster.len(), 3);
    }

    #[test]
    fn changes_are_checked() {
        assert!(check_broker_change("log.retention.ms", "1000").is_ok());
        assert!(check_broker_change("max.connections", "50").is_ok());
        assert_eq!(
            check_broker_change("log.retention.ms", "-5").unwrap_err().0,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            check_broker_change("max.connections", "x").unwrap_err().0,
            ResponseError::InvalidConfig
        );
        let (code, message) = check_broker_change("num.partitions", "3").unwrap_err();
        assert_eq!(code, ResponseError::InvalidRequest);
        assert!(message.contains("NUM_PARTITIONS"), "{message}");
        assert_eq!(
            check_broker_change("storage_path", "/x").unwrap_err().0,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            check_broker_change("no.such", "1").unwrap_err().0,
            ResponseError::InvalidRequest
        );
    }
}
