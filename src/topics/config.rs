//! Per-topic configs: every topic config Apache Kafka 4.x defines, how each
//! is validated, what this broker does with it, its broker-level synonym,
//! and how the effective values become a `LogConfig`.
//!
//! A value is resolved as Kafka resolves it: the topic's own override,
//! else the broker-level synonym set dynamically (per broker, then cluster
//! default), else the built-in default.

use crate::log::compression::CompressionType;
use crate::log::LogConfig;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Kafka's ConfigType codes, as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

impl ConfigType {
    pub fn code(self) -> i8 {
        self as i8
    }
}

/// What a value must look like.
#[derive(Debug, Clone, Copy)]
pub enum Valid {
    /// Any value of the type.
    Any,
    /// A whole number at least this.
    AtLeast(i64),
    /// A number in this closed range.
    Between(f64, f64),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these strings.
    ListOf(&'static [&'static str]),
}

/// A value refused until the feature it needs is built: (the value, or
/// list item, compared ignoring case; why, for INVALID_CONFIG).
pub type Unbuilt = Option<(&'static str, &'static str)>;

/// Whether this process has an object store (OBJECT_STORE_URL): without
/// one, `remote.storage.enable=true` is refused as Kafka refuses it on a
/// broker without remote log storage.
static TIERING_AVAILABLE: AtomicBool = AtomicBool::new(false);

/// Set at start when OBJECT_STORE_URL is configured.
pub fn set_tiering_available(available: bool) {
    TIERING_AVAILABLE.store(available, Ordering::Relaxed);
}

/// One topic config.
#[derive(Debug)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub default: &'static str,
    pub valid: Valid,
    /// The broker config that sets the default for every topic.
    pub broker_synonym: Option<&'static str>,
    /// Configs without an effect here (replication, flush, compaction
    /// tuning, ...) are stored and reported like the rest; only this value
    /// is refused.
    pub unbuilt: Unbuilt,
    pub doc: &'static str,
}

const LONG_MAX: &str = "9223372036854775807";

macro_rules! def {
    ($name:expr, $t:ident, $default:expr, $valid:expr, $synonym:expr, $unbuilt:expr, $doc:expr) => {
        TopicConfigDef {
            name: $name,
            config_type: ConfigType::$t,
            default: $default,
            valid: $valid,
            broker_synonym: $synonym,
            unbuilt: $unbuilt,
            doc: $doc,
        }
    };
}

/// Every topic config of Apache Kafka 4.x, sorted by name.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def!("cleanup.policy", List, "delete", Valid::ListOf(&["delete", "compact"]), Some("log.cleanup.policy"),
        None, "How old data is discarded: delete (whole segments past retention.ms / retention.bytes), compact (the log cleaner keeps the latest record of each key), or both."),
    def!("compression.gzip.level", Int, "-1", Valid::Between(-1.0, 9.0), Some("compression.gzip.level"),
        None, "Level for gzip when the broker recompresses (stored; the broker uses the codec's default level)."),
    def!("compression.lz4.level", Int, "9", Valid::Between(1.0, 17.0), Some("compression.lz4.level"),
        None, "Level for lz4 when the broker recompresses (stored; the broker uses the codec's default level)."),
    def!("compression.type", String, "producer", Valid::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        Some("compression.type"), None,
        "Codec batches are stored in: producer keeps each batch as sent; a named codec makes the broker recompress batches that arrive in another one."),
    def!("compression.zstd.level", Int, "3", Valid::Between(-131072.0, 22.0), Some("compression.zstd.level"),
        None, "Level for zstd when the broker recompresses (stored; the broker uses the codec's default level)."),
    def!("delete.retention.ms", Long, "86400000", Valid::AtLeast(0), Some("log.cleaner.delete.retention.ms"),
        None, "How long a tombstone (a record with a null value) is kept on a compacted topic, from its timestamp; the next cleaning after that removes it."),
    def!("file.delete.delay.ms", Long, "60000", Valid::AtLeast(0), Some("log.segment.delete.delay.ms"),
        None, "Delay before a deleted segment's files are removed from disk."),
    def!("flush.messages", Long, LONG_MAX, Valid::AtLeast(1), Some("log.flush.interval.messages"),
        None, "Records appended between forced fsyncs (acks=all already syncs before answering)."),
    def!("flush.ms", Long, LONG_MAX, Valid::AtLeast(0), Some("log.flush.interval.ms"),
        None, "Longest time between forced fsyncs (acks=all already syncs before answering)."),
    def!("follower.replication.throttled.replicas", List, "", Valid::Any, None,
        None, "Replicas throttled on the follower side (no followers on a single broker)."),
    def!("index.interval.bytes", Int, "4096", Valid::AtLeast(0), Some("log.index.interval.bytes"),
        None, "Bytes of log between entries of the offset index."),
    def!("leader.replication.throttled.replicas", List, "", Valid::Any, None,
        None, "Replicas throttled on the leader side (no followers on a single broker)."),
    def!("local.retention.bytes", Long, "-2", Valid::AtLeast(-2), Some("log.local.retention.bytes"),
        None, "Bytes kept on local disk when tiered storage is on (-2 = retention.bytes)."),
    def!("local.retention.ms", Long, "-2", Valid::AtLeast(-2), Some("log.local.retention.ms"),
        None, "Time kept on local disk when tiered storage is on (-2 = retention.ms)."),
    def!("max.compaction.lag.ms", Long, LONG_MAX, Valid::AtLeast(1), Some("log.cleaner.max.compaction.lag.ms"),
        None, "Longest a record stays uncompacted: a partition with dirty records older than this is cleaned whatever its dirty ratio."),
    def!("max.message.bytes", Int, "1048588", Valid::AtLeast(0), Some("message.max.bytes"),
        None, "Largest record batch accepted, after compression."),
    def!("message.timestamp.after.max.ms", Long, "3600000", Valid::AtLeast(0), Some("log.message.timestamp.after.max.ms"),
        None, "How far in the future a CreateTime timestamp may be before the batch is refused."),
    def!("message.timestamp.before.max.ms", Long, LONG_MAX, Valid::AtLeast(0), Some("log.message.timestamp.before.max.ms"),
        None, "How far in the past a CreateTime timestamp may be before the batch is refused."),
    def!("message.timestamp.type", String, "CreateTime", Valid::OneOf(&["CreateTime", "LogAppendTime"]),
        Some("log.message.timestamp.type"), None,
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's clock."),
    def!("min.cleanable.dirty.ratio", Double, "0.5", Valid::Between(0.0, 1.0), Some("log.cleaner.min.cleanable.ratio"),
        None, "Share of a compacted partition's cleanable log not yet cleaned that makes the cleaner take it."),
    def!("min.compaction.lag.ms", Long, "0", Valid::AtLeast(0), Some("log.cleaner.min.compaction.lag.ms"),
        None, "Shortest time a record stays uncompacted: segments with newer records are not cleaned yet."),
    def!("min.insync.replicas", Int, "1", Valid::AtLeast(1), Some("min.insync.replicas"),
        None, "Replicas that must acknowledge an acks=all write (one broker: always the leader)."),
    def!("preallocate", Boolean, "false", Valid::Any, Some("log.preallocate"),
        None, "Whether segment files are preallocated when created."),
    def!("remote.log.copy.disable", Boolean, "false", Valid::Any, None,
        None, "Stop copying segments to tiered storage while keeping what is there."),
    def!("remote.log.delete.on.disable", Boolean, "false", Valid::Any, None,
        None, "Delete the remote copy when tiered storage is turned off for the topic."),
    def!("remote.storage.enable", Boolean, "false", Valid::Any, Some("log.remote.storage.enable"),
        None, "Copy closed segments to tiered (object) storage (needs OBJECT_STORE_URL on the broker)."),
    def!("retention.bytes", Long, "-1", Valid::AtLeast(-1), Some("log.retention.bytes"),
        None, "Largest size of a partition before old segments are deleted (-1 = no limit)."),
    def!("retention.ms", Long, "604800000", Valid::AtLeast(-1), Some("log.retention.ms"),
        None, "How long segments are kept before they are deleted (-1 = forever)."),
    def!("segment.bytes", Int, "1073741824", Valid::AtLeast(14), Some("log.segment.bytes"),
        None, "Size at which the active segment is rolled."),
    def!("segment.index.bytes", Int, "10485760", Valid::AtLeast(4), Some("log.index.size.max.bytes"),
        None, "Largest size of a segment's offset index."),
    def!("segment.jitter.ms", Long, "0", Valid::AtLeast(0), Some("log.roll.jitter.ms"),
        None, "Random jitter subtracted from segment.ms so segments do not all roll at once."),
    def!("segment.ms", Long, "604800000", Valid::AtLeast(1), Some("log.roll.ms"),
        None, "Age at which the active segment is rolled."),
    def!("unclean.leader.election.enable", Boolean, "false", Valid::Any, Some("unclean.leader.election.enable"),
        None, "Whether an out-of-sync replica may become leader (no followers on a single broker)."),
];

/// The definition of `name`, if Kafka has such a topic config.
pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|c| c.name == name)
}

/// The topic config whose broker-level synonym is `broker_name`.
pub fn topic_config_for_broker_name(broker_name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .find(|c| c.broker_synonym == Some(broker_name))
}

impl TopicConfigDef {
    /// Checks `value`; the error is what INVALID_CONFIG says.
    pub fn validate(&self, value: &str) -> Result<(), String> {
        let name = self.name;
        let value = value.trim();
        match self.config_type {
            ConfigType::Boolean
                if !value.eq_ignore_ascii_case("true") && !value.eq_ignore_ascii_case("false") =>
            {
                return Err(format!("{name}={value}: expected true or false"));
            }
            ConfigType::Int | ConfigType::Long => {
                let parsed = if self.config_type == ConfigType::Int {
                    value.parse::<i32>().map(i64::from).ok()
                } else {
                    value.parse::<i64>().ok()
                };
                let Some(n) = parsed else {
                    return Err(format!("{name}={value}: expected a whole number"));
                };
                match self.valid {
                    Valid::AtLeast(min) if n < min => {
                        return Err(format!("{name}={value}: must be at least {min}"));
                    }
                    Valid::Between(lo, hi) if (n as f64) < lo || (n as f64) > hi => {
                        return Err(format!("{name}={value}: must be between {lo} and {hi}"));
                    }
                    _ => {}
                }
            }
            ConfigType::Double => match value.parse::<f64>() {
                Ok(n) => {
                    if let Valid::Between(lo, hi) = self.valid {
                        if !(lo..=hi).contains(&n) {
                            return Err(format!("{name}={value}: must be between {lo} and {hi}"));
                        }
                    }
                }
                Err(_) => return Err(format!("{name}={value}: expected a number")),
            },
            _ => {}
        }
        match self.valid {
            Valid::OneOf(allowed) if !allowed.contains(&value) => {
                return Err(format!("{name}={value}: expected one of {}", allowed.join(", ")));
            }
            Valid::ListOf(allowed) => {
                let items = list_items(value);
                if let Some(bad) = items
                    .iter()
                    .find(|i| !allowed.contains(&i.to_ascii_lowercase().as_str()))
                {
                    return Err(format!(
                        "{name}={value}: {bad:?} is not one of {}",
                        allowed.join(", ")
                    ));
                }
                if items.is_empty() {
                    return Err(format!("{name} needs at least one of {}", allowed.join(", ")));
                }
            }
            _ => {}
        }
        if let Some((refused, why)) = self.unbuilt {
            let given = if self.config_type == ConfigType::List {
                list_items(value)
            } else {
                vec![value.to_string()]
            };
            if given.iter().any(|v| v.eq_ignore_ascii_case(refused)) {
                return Err(format!("{name}={value} is not supported: {why}"));
            }
        }
        Ok(())
    }
}

/// The items of a list config value (comma-separated, blanks dropped).
pub fn list_items(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks one topic config; the error is what INVALID_CONFIG says.
pub fn validate_config(name: &str, value: &str) -> Result<(), String> {
    match topic_config(name) {
        Some(def) if def.name == "remote.storage.enable" => {
            def.validate(value)?;
            if value.eq_ignore_ascii_case("true") && !TIERING_AVAILABLE.load(Ordering::Relaxed) {
                return Err(format!(
                    "{name}={value}: tiered storage is disabled on this broker (OBJECT_STORE_URL is not set)"
                ));
            }
            Ok(())
        }
        Some(def) => def.validate(value),
        None => Err(format!("unknown topic config {name:?}")),
    }
}

/// Checks a topic's overrides as a set: Kafka refuses tiered storage for
/// compacted topics (the cleaner works on local segments only).
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    let tiered = configs
        .get("remote.storage.enable")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let compacted = configs
        .get("cleanup.policy")
        .is_some_and(|v| list_items(v).iter().any(|p| p.eq_ignore_ascii_case("compact")));
    if tiered && compacted {
        return Err(
            "remote.storage.enable=true is not supported for compacted topics (cleanup.policy with compact)"
                .into(),
        );
    }
    Ok(())
}

/// Where an effective value came from, in Kafka's ConfigSource terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Topic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
    Group = 8,
}

impl ConfigSource {
    pub fn code(self) -> i8 {
        self as i8
    }
}

/// Broker-level values that set topic defaults, keyed by broker config
/// name (`log.retention.ms`, ...): the cluster-wide default (`""`) and
/// this broker's own (which wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerTopicDefaults {
    pub broker: BTreeMap<String, String>,
    pub cluster: BTreeMap<String, String>,
}

/// One layer a topic config's value can come from (Kafka's synonyms),
/// most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSynonym {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
}

/// One described topic config.
#[derive(Debug, Clone)]
pub struct ConfigEntry {
    pub def: &'static TopicConfigDef,
    pub value: String,
    pub source: ConfigSource,
    /// Every layer that has a value, most specific first (the first is
    /// where `value` comes from).
    pub synonyms: Vec<ConfigSynonym>,
}

impl ConfigEntry {
    pub fn is_default(&self) -> bool {
        self.source == ConfigSource::Default
    }
}

/// Resolves one topic config through its layers.
fn resolve(
    def: &'static TopicConfigDef,
    overrides: &BTreeMap<String, String>,
    defaults: &BrokerTopicDefaults,
) -> ConfigEntry {
    let mut synonyms = Vec::new();
    if let Some(v) = overrides.get(def.name) {
        synonyms.push(ConfigSynonym {
            name: def.name.into(),
            value: v.clone(),
            source: ConfigSource::Topic,
        });
    }
    if let Some(broker_name) = def.broker_synonym {
        for (layer, source) in [
            (&defaults.broker, ConfigSource::DynamicBroker),
            (&defaults.cluster, ConfigSource::DynamicDefaultBroker),
        ] {
            if let Some(v) = layer.get(broker_name) {
                synonyms.push(ConfigSynonym {
                    name: broker_name.into(),
                    value: v.clone(),
                    source,
                });
            }
        }
    }
    synonyms.push(ConfigSynonym {
        name: def.broker_synonym.unwrap_or(def.name).into(),
        value: def.default.into(),
        source: ConfigSource::Default,
    });
    ConfigEntry {
        def,
        value: synonyms[0].value.clone(),
        source: synonyms[0].source,
        synonyms,
    }
}

/// Every topic config with its effective value and where it came from.
pub fn describe_topic_configs(
    overrides: &BTreeMap<String, String>,
    defaults: &BrokerTopicDefaults,
) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| resolve(def, overrides, defaults))
        .collect()
}

/// Builds the log settings from a topic's overrides and the broker-level
/// defaults (both validated when they were set).
pub fn log_config(overrides: &BTreeMap<String, String>, defaults: &BrokerTopicDefaults) -> LogConfig {
    let get = |name: &str| match topic_config(name) {
        Some(def) => resolve(def, overrides, defaults).value,
        None => String::new(),
    };
    let int = |name: &str| get(name).trim().parse::<i64>().unwrap_or(-1);
    let optional = |v: i64| u64::try_from(v).ok();
    let fallback = LogConfig::default();
    let retention_ms = optional(int("retention.ms"));
    let retention_bytes = optional(int("retention.bytes"));
    // -2: as far as the whole log's retention.
    let local = |value: i64, whole: Option<u64>| if value == -2 { whole } else { optional(value) };
    LogConfig {
        segment_bytes: optional(int("segment.bytes")).unwrap_or(fallback.segment_bytes),
        segment_ms: optional(int("segment.ms")).unwrap_or(fallback.segment_ms),
        retention_ms,
        retention_bytes,
        remote_storage: get("remote.storage.enable").eq_ignore_ascii_case("true"),
        local_retention_ms: local(int("local.retention.ms"), retention_ms),
        local_retention_bytes: local(int("local.retention.bytes"), retention_bytes),
        max_message_bytes: usize::try_from(int("max.message.bytes")).unwrap_or(fallback.max_message_bytes),
        log_append_time: get("message.timestamp.type") == "LogAppendTime",
        compression: CompressionType::parse(&get("compression.type")).unwrap_or(fallback.compression),
        timestamp_before_max_ms: int("message.timestamp.before.max.ms").max(0),
        timestamp_after_max_ms: int("message.timestamp.after.max.ms").max(0),
        compact: list_items(&get("cleanup.policy"))
            .iter()
            .any(|p| p.eq_ignore_ascii_case("compact")),
        delete: list_items(&get("cleanup.policy"))
            .iter()
            .any(|p| p.eq_ignore_ascii_case("delete")),
        delete_retention_ms: int("delete.retention.ms").max(0),
        min_cleanable_dirty_ratio_permille: (get("min.cleanable.dirty.ratio")
            .trim()
            .parse::<f64>()
            .unwrap_or(0.5)
            * 1000.0)
            .round()
            .clamp(0.0, 1000.0) as u32,
        min_compaction_lag_ms: int("min.compaction.lag.ms").max(0),
        max_compaction_lag_ms: int("max.compaction.lag.ms").max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_become_log_settings() {
        let overrides = map(&[
            ("retention.ms", "-1"),
            ("segment.bytes", "4096"),
            ("message.timestamp.type", "LogAppendTime"),
        ]);
        let none = BrokerTopicDefaults::default();
        let config = log_config(&overrides, &none);
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.segment_bytes, 4096);
        assert!(config.log_append_time);
        assert_eq!(log_config(&BTreeMap::new(), &none), LogConfig::default());
    }

    #[test]
    fn broker_defaults_apply_below_topic_overrides() {
        let defaults = BrokerTopicDefaults {
            broker: map(&[("log.retention.ms", "5000")]),
            cluster: map(&[("log.retention.ms", "9000"), ("log.segment.bytes", "2048")]),
        };
        let config = log_config(&BTreeMap::new(), &defaults);
        assert_eq!(config.retention_ms, Some(5000));
        assert_eq!(config.segment_bytes, 2048);
        let described = describe_topic_configs(&map(&[("retention.ms", "1")]), &defaults);
        let retention = described.iter().find(|c| c.def.name == "retention.ms").unwrap();
        assert_eq!(retention.value, "1");
        let sources: Vec<_> = retention.synonyms.iter().map(|s| s.source).collect();
        assert_eq!(
            sources,
            [
                ConfigSource::Topic,
                ConfigSource::DynamicBroker,
                ConfigSource::DynamicDefaultBroker,
                ConfigSource::Default
            ]
        );
        let segment = described.iter().find(|c| c.def.name == "segment.bytes").unwrap();
        assert_eq!(
            (segment.value.as_str(), segment.source),
            ("2048", ConfigSource::DynamicDefaultBroker)
        );
    }

    #[test]
    fn compacted_topics_cannot_be_tiered() {
        let both = map(&[
            ("cleanup.policy", "delete,compact"),
            ("remote.storage.enable", "true"),
        ]);
        assert!(validate_topic_configs(&both).unwrap_err().contains("compacted"));
        assert!(validate_topic_configs(&map(&[("cleanup.policy", "compact")])).is_ok());
        assert!(validate_topic_configs(&map(&[("remote.storage.enable", "true")])).is_ok());
    }

    #[test]
    fn kafka_configs_are_accepted_and_unbuilt_ones_refused() {
        for (name, value) in [
            ("compression.type", "gzip"),
            ("min.insync.replicas", "1"),
            ("unclean.leader.election.enable", "TRUE"),
            ("message.timestamp.after.max.ms", "1000"),
            ("index.interval.bytes", "8192"),
            ("flush.messages", "1"),
            ("preallocate", "true"),
            ("max.compaction.lag.ms", "60000"),
            ("min.cleanable.dirty.ratio", "0.3"),
            ("remote.storage.enable", "false"),
            ("cleanup.policy", "delete"),
            ("cleanup.policy", "compact"),
            ("cleanup.policy", "delete,compact"),
            ("retention.ms", "-1"),
        ] {
            assert!(validate_config(name, value).is_ok(), "{name}={value}");
        }
        for (name, value, says) in [
            ("retention.ms", "-2", "at least"),
            ("segment.bytes", "abc", "whole number"),
            ("compression.type", "brotli", "one of"),
            ("min.cleanable.dirty.ratio", "1.5", "between"),
            ("preallocate", "yes", "true or false"),
            ("cleanup.policy", "archive", "one of"),
            ("remote.storage.enable", "true", "OBJECT_STORE_URL"),
            ("no.such.config", "1", "unknown"),
        ] {
            let error = validate_config(name, value).unwrap_err();
            assert!(error.contains(says), "{name}={value}: {error}");
        }
        let described = describe_topic_configs(&BTreeMap::new(), &BrokerTopicDefaults::default());
        assert_eq!(described.len(), TOPIC_CONFIGS.len());
        assert!(described.iter().all(|c| c.is_default()));
        assert!(TOPIC_CONFIGS.windows(2).all(|w| w[0].name < w[1].name));
    }
}
