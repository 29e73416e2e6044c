//! Group configs (Kafka 4.x's GROUP config resource): what a group may
//! override, within which bounds, and what is reported for it.
//!
//! The consumer.* keys belong to the KIP-848 consumer protocol; this broker
//! runs classic groups, so they are stored and reported for tools that
//! manage them. Share and streams groups do not exist here yet: their keys
//! are reported with their defaults and refused when set.

use crate::topics::{ConfigSource, ConfigType};
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;

pub struct GroupConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub default: &'static str,
    /// Inclusive bounds of whole-number configs.
    bounds: Option<(i64, i64)>,
    /// Allowed values of string configs.
    one_of: &'static [&'static str],
    /// Why it cannot be set yet, if it cannot.
    refused: Option<&'static str>,
    pub doc: &'static str,
}

const SHARE: Option<&str> = Some("share groups are not built yet");
const STREAMS: Option<&str> = Some("streams groups are not built yet");

pub static GROUP_CONFIGS: &[GroupConfigDef] = &[
    GroupConfigDef {
        name: "consumer.heartbeat.interval.ms",
        config_type: ConfigType::Int,
        default: "5000",
        bounds: Some((5000, 15000)),
        one_of: &[],
        refused: None,
        doc: "Heartbeat interval of the group's members (consumer protocol).",
    },
    GroupConfigDef {
        name: "consumer.session.timeout.ms",
        config_type: ConfigType::Int,
        default: "45000",
        bounds: Some((45000, 60000)),
        one_of: &[],
        refused: None,
        doc: "Session timeout of the group's members (consumer protocol).",
    },
    GroupConfigDef {
        name: "share.auto.offset.reset",
        config_type: ConfigType::String,
        default: "latest",
        bounds: None,
        one_of: &["earliest", "latest", "by_duration"],
        refused: SHARE,
        doc: "Where a share group starts reading a partition without a position.",
    },
    GroupConfigDef {
        name: "share.heartbeat.interval.ms",
        config_type: ConfigType::Int,
        default: "5000",
        bounds: Some((5000, 15000)),
        one_of: &[],
        refused: SHARE,
        doc: "Heartbeat interval of a share group's members.",
    },
    GroupConfigDef {
        name: "share.isolation.level",
        config_type: ConfigType::String,
        default: "read_uncommitted",
        bounds: None,
        one_of: &["read_committed", "read_uncommitted"],
        refused: SHARE,
        doc: "Which records a share group's members see.",
    },
    GroupConfigDef {
        name: "share.record.lock.duration.ms",
        config_type: ConfigType::Int,
        default: "30000",
        bounds: Some((15000, 60000)),
        one_of: &[],
        refused: SHARE,
        doc: "How long a share group's member holds a delivered record.",
    },
    GroupConfigDef {
        name: "share.session.timeout.ms",
        config_type: ConfigType::Int,
        default: "45000",
        bounds: Some((45000, 60000)),
        one_of: &[],
        refused: SHARE,
        doc: "Session timeout of a share group's members.",
    },
    GroupConfigDef {
        name: "streams.heartbeat.interval.ms",
        config_type: ConfigType::Int,
        default: "5000",
        bounds: Some((5000, 15000)),
        one_of: &[],
        refused: STREAMS,
        doc: "Heartbeat interval of a streams group's members.",
    },
    GroupConfigDef {
        name: "streams.num.standby.replicas",
        config_type: ConfigType::Int,
        default: "0",
        bounds: Some((0, 2)),
        one_of: &[],
        refused: STREAMS,
        doc: "Standby tasks a streams group keeps per task.",
    },
    GroupConfigDef {
        name: "streams.session.timeout.ms",
        config_type: ConfigType::Int,
        default: "45000",
        bounds: Some((45000, 60000)),
        one_of: &[],
        refused: STREAMS,
        doc: "Session timeout of a streams group's members.",
    },
];

/// The definition of `name`, or INVALID_CONFIG.
fn group_config(name: &str) -> Result<&'static GroupConfigDef, (ResponseError, String)> {
    GROUP_CONFIGS.iter().find(|d| d.name == name).ok_or_else(|| {
        (
            ResponseError::InvalidConfig,
            format!("unknown group config {name:?}"),
        )
    })
}

/// Whether `name` is a group config (any of them may be deleted).
pub fn check_group_name(name: &str) -> Result<(), (ResponseError, String)> {
    group_config(name).map(|_| ())
}

/// Whether a group config may be set to `value`.
pub fn check_group_change(name: &str, value: &str) -> Result<(), (ResponseError, String)> {
    let def = group_config(name)?;
    if let Some(why) = def.refused {
        return Err((
            ResponseError::InvalidConfig,
            format!("{name} cannot be set: {why}"),
        ));
    }
    let value = value.trim();
    if let Some((lo, hi)) = def.bounds {
        match value.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => {}
            _ => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("{name}={value}: must be a whole number between {lo} and {hi}"),
                ))
            }
        }
    }
    if !def.one_of.is_empty() && !def.one_of.contains(&value) {
        return Err((
            ResponseError::InvalidConfig,
            format!("{name}={value}: expected one of {}", def.one_of.join(", ")),
        ));
    }
    Ok(())
}

/// A group's configs: (definition, value in force, source).
pub fn describe_group(
    overrides: Option<&BTreeMap<String, String>>,
) -> Vec<(&'static GroupConfigDef, String, ConfigSource)> {
    GROUP_CONFIGS
        .iter()
        .map(|def| match overrides.and_then(|o| o.get(def.name)) {
            Some(v) => (def, v.clone(), ConfigSource::Group),
            None => (def, def.default.to_string(), ConfigSource::Default),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_keys_are_bounded_and_share_keys_refused() {
        assert!(check_group_change("consumer.session.timeout.ms", "50000").is_ok());
        assert!(check_group_change("consumer.heartbeat.interval.ms", "6000").is_ok());
        assert!(check_group_change("consumer.session.timeout.ms", "1000").is_err());
        let (_, message) = check_group_change("share.auto.offset.reset", "earliest").unwrap_err();
        assert!(message.contains("share groups"), "{message}");
        assert!(check_group_change("nope", "1").is_err());
        let mut set = BTreeMap::new();
        set.insert("consumer.session.timeout.ms".to_string(), "50000".to_string());
        let described = describe_group(Some(&set));
        assert_eq!(described.len(), GROUP_CONFIGS.len());
        assert!(described
            .iter()
            .any(|(d, v, s)| d.name == "consumer.session.timeout.ms"
                && v == "50000"
                && *s == ConfigSource::Group));
    }
}
