//! Per-topic configs: which Kafka topic configs this broker honours, how
//! they are validated, and how they become a `LogConfig`.

use crate::log::compression::CompressionType;
use crate::log::LogConfig;
use std::collections::BTreeMap;

/// Topic configs this broker implements, with Kafka's names.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// Checks one config value; the error is what INVALID_CONFIG says.
pub fn validate_config(name: &str, value: &str) -> Result<(), String> {
    let number = |min: i64| -> Result<(), String> {
        match value.parse::<i64>() {
            Ok(n) if n >= min => Ok(()),
            _ => Err(format!("{name}={value}: expected a whole number >= {min}")),
        }
    };
    match name {
        "cleanup.policy" => match value {
            "delete" => Ok(()),
            "compact" | "compact,delete" | "delete,compact" => Err(format!(
                "cleanup.policy={value}: log compaction is not supported; use delete"
            )),
            _ => Err(format!("cleanup.policy={value}: expected delete")),
        },
        "compression.type" => CompressionType::parse(value).map(|_| ()).ok_or_else(|| {
            format!("compression.type={value}: expected producer, uncompressed, gzip, snappy, lz4 or zstd")
        }),
        "max.message.bytes" => number(0),
        "message.timestamp.after.max.ms" | "message.timestamp.before.max.ms" => number(0),
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(format!(
                "message.timestamp.type={value}: expected CreateTime or LogAppendTime"
            )),
        },
        "retention.bytes" | "retention.ms" => number(-1),
        "segment.bytes" => number(14),
        "segment.ms" => number(1),
        _ => Err(format!("unknown or unsupported topic config {name:?}")),
    }
}

/// The default of each topic config, as this broker applies it.
fn default_value(name: &str) -> String {
    let d = LogConfig::default();
    match name {
        "cleanup.policy" => "delete".into(),
        "compression.type" => d.compression.name().into(),
        "max.message.bytes" => d.max_message_bytes.to_string(),
        "message.timestamp.after.max.ms" => d.timestamp_after_max_ms.to_string(),
        "message.timestamp.before.max.ms" => d.timestamp_before_max_ms.to_string(),
        "message.timestamp.type" => "CreateTime".into(),
        "retention.bytes" => d.retention_bytes.map_or(-1, |b| b as i64).to_string(),
        "retention.ms" => d.retention_ms.map_or(-1, |m| m as i64).to_string(),
        "segment.bytes" => d.segment_bytes.to_string(),
        "segment.ms" => d.segment_ms.to_string(),
        _ => String::new(),
    }
}

/// Builds the log settings from a topic's overrides (validated when set).
pub fn log_config(overrides: &BTreeMap<String, String>) -> LogConfig {
    let get = |name: &str| {
        overrides
            .get(name)
            .cloned()
            .unwrap_or_else(|| default_value(name))
    };
    let int = |name: &str| get(name).parse::<i64>().unwrap_or(-1);
    let optional = |v: i64| u64::try_from(v).ok();
    let defaults = LogConfig::default();
    LogConfig {
        segment_bytes: optional(int("segment.bytes")).unwrap_or(defaults.segment_bytes),
        segment_ms: optional(int("segment.ms")).unwrap_or(defaults.segment_ms),
        retention_ms: optional(int("retention.ms")),
        retention_bytes: optional(int("retention.bytes")),
        max_message_bytes: usize::try_from(int("max.message.bytes")).unwrap_or(defaults.max_message_bytes),
        log_append_time: get("message.timestamp.type") == "LogAppendTime",
        compression: CompressionType::parse(&get("compression.type")).unwrap_or(defaults.compression),
        timestamp_before_max_ms: get("message.timestamp.before.max.ms")
            .parse()
            .unwrap_or(defaults.timestamp_before_max_ms),
        timestamp_after_max_ms: get("message.timestamp.after.max.ms")
            .parse()
            .unwrap_or(defaults.timestamp_after_max_ms),
    }
}

/// One described config: name, effective value, and whether it was set on
/// the topic (TOPIC_CONFIG) or is the default (DEFAULT_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub is_default: bool,
    /// Kafka's ConfigType: 2 STRING, 3 INT, 5 LONG, 7 LIST.
    pub config_type: i8,
}

pub fn describe_topic_configs(overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    TOPIC_CONFIG_NAMES
        .iter()
        .map(|&name| ConfigEntry {
            name,
            value: overrides
                .get(name)
                .cloned()
                .unwrap_or_else(|| default_value(name)),
            is_default: !overrides.contains_key(name),
            config_type: match name {
                "cleanup.policy" => 7,
                "message.timestamp.type" | "compression.type" => 2,
                "max.message.bytes" => 3,
                _ => 5,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_become_log_settings() {
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "-1".to_string());
        overrides.insert("segment.bytes".to_string(), "4096".to_string());
        overrides.insert("message.timestamp.type".to_string(), "LogAppendTime".to_string());
        let config = log_config(&overrides);
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.segment_bytes, 4096);
        assert!(config.log_append_time);
        assert_eq!(log_config(&BTreeMap::new()), LogConfig::default());
    }

    #[test]
    fn invalid_values_and_compaction_are_refused() {
        assert!(validate_config("retention.ms", "-1").is_ok());
        assert!(validate_config("retention.ms", "-2").is_err());
        assert!(validate_config("segment.bytes", "abc").is_err());
        assert!(validate_config("cleanup.policy", "compact")
            .unwrap_err()
            .contains("compaction"));
        assert!(validate_config("flush.ms", "1").is_err());
        let described = describe_topic_configs(&BTreeMap::new());
        assert_eq!(described.len(), TOPIC_CONFIG_NAMES.len());
        assert!(described.iter().all(|c| c.is_default));
    }
}
