//! Changing configs at run time: one implementation behind
//! IncrementalAlterConfigs (SET / DELETE / APPEND / SUBTRACT per config)
//! and the legacy AlterConfigs (the resource's whole set replaced), for
//! topics, the broker (cluster default or this broker) and groups.
//!
//! Runs on the controller shard, so changes apply one at a time; what
//! changed is persisted before it is published, then applied at once.

use super::broker_configs::{check_broker_change, check_broker_name};
use super::dynamic::{ConfigMap, Scope};
use crate::groups::configs::{check_group_change, check_group_name};
use crate::topics::{
    list_items, topic_config, topic_config_for_broker_name, validate_config, validate_topic_configs,
    ConfigType,
};
use kafka_protocol::ResponseError;

/// What a config change is for.
#[derive(Debug, Clone)]
pub(crate) enum Resource {
    Topic(String),
    /// The cluster-wide default (`""`) or this broker.
    Broker(Scope),
    Group(String),
}

/// Kafka's AlterConfigOp types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Set,
    Delete,
    Append,
    Subtract,
}

impl Operation {
    pub(crate) fn from_code(code: i8) -> Option<Operation> {
        match code {
            0 => Some(Operation::Set),
            1 => Some(Operation::Delete),
            2 => Some(Operation::Append),
            3 => Some(Operation::Subtract),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ConfigChange {
    pub name: String,
    pub operation: Operation,
    pub value: Option<String>,
}

/// The answer for one resource.
#[derive(Debug, Clone, Default)]
pub(crate) struct AlterOutcome {
    pub error_code: i16,
    pub message: Option<String>,
}

impl AlterOutcome {
    pub(crate) fn failed(error: ResponseError, message: impl Into<String>) -> AlterOutcome {
        AlterOutcome {
            error_code: error.code(),
            message: Some(message.into()),
        }
    }
}

/// Why a change is refused: the error and its message.
pub(crate) type Refusal = (ResponseError, String);

/// How one kind of resource checks its configs.
struct Rules {
    /// Whether `name` may be changed at all (DELETE checks only this).
    known: fn(&str) -> Result<(), Refusal>,
    check: fn(&str, &str) -> Result<(), Refusal>,
    /// Whether `name` is a list config (APPEND/SUBTRACT apply to it).
    is_list: fn(&str) -> bool,
    /// The value in force without an override (APPEND's starting point).
    default: fn(&str) -> String,
    /// The resulting set as a whole (settings that exclude each other).
    together: fn(&ConfigMap) -> Result<(), Refusal>,
}

fn topic_rules() -> Rules {
    Rules {
        known: |name| match topic_config(name) {
            Some(_) => Ok(()),
            None => Err((
                ResponseError::InvalidConfig,
                format!("unknown topic config {name:?}"),
            )),
        },
        check: |name, value| validate_config(name, value).map_err(|m| (ResponseError::InvalidConfig, m)),
        is_list: |name| topic_config(name).is_some_and(|d| d.config_type == ConfigType::List),
        default: |name| {
            topic_config(name)
                .map(|d| d.default.to_string())
                .unwrap_or_default()
        },
        together: |configs| validate_topic_configs(configs).map_err(|m| (ResponseError::InvalidConfig, m)),
    }
}

fn broker_rules() -> Rules {
    Rules {
        known: check_broker_name,
        check: check_broker_change,
        is_list: |name| topic_config_for_broker_name(name).is_some_and(|d| d.config_type == ConfigType::List),
        default: |name| {
            topic_config_for_broker_name(name)
                .map(|d| d.default.to_string())
                .unwrap_or_default()
        },
        together: |_| Ok(()),
    }
}

fn group_rules() -> Rules {
    Rules {
        known: check_group_name,
        check: check_group_change,
        is_list: |_| false,
        default: |_| String::new(),
        together: |_| Ok(()),
    }
}

/// The resource's new overrides: `changes` applied to `current` (or to
/// nothing, for the legacy whole-set form), every value checked.
fn apply(
    rules: &Rules,
    current: &ConfigMap,
    changes: Vec<ConfigChange>,
    replace_all: bool,
) -> Result<ConfigMap, Refusal> {
    let mut next = if replace_all {
        ConfigMap::new()
    } else {
        current.clone()
    };
    for change in changes {
        let name = change.name;
        let value = match (change.operation, change.value) {
            (Operation::Delete, _) => {
                (rules.known)(&name)?;
                next.remove(&name);
                continue;
            }
            (Operation::Set, Some(value)) => value,
            (Operation::Set, None) => {
                return Err((ResponseError::InvalidConfig, format!("{name}: SET needs a value")));
            }
            (op @ (Operation::Append | Operation::Subtract), value) => {
                if !(rules.is_list)(&name) {
                    return Err((
                        ResponseError::InvalidConfig,
                        format!("{name} is not a list config: APPEND and SUBTRACT apply only to lists"),
                    ));
                }
                let base = next.get(&name).cloned().unwrap_or_else(|| (rules.default)(&name));
                let mut items = list_items(&base);
                let given = list_items(value.as_deref().unwrap_or(""));
                if op == Operation::Append {
                    for item in given {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    }
                } else {
                    items.retain(|i| !given.contains(i));
                }
                items.join(",")
            }
        };
        (rules.check)(&name, &value)?;
        next.insert(name, value);
    }
    (rules.together)(&next)?;
    Ok(next)
}

/// The resource's new overrides after `changes`, every value checked by
/// the resource kind's rules (the controller stores them).
pub(crate) fn changed_configs(
    resource: &Resource,
    current: &ConfigMap,
    changes: Vec<ConfigChange>,
    replace_all: bool,
) -> Result<ConfigMap, Refusal> {
    let rules = match resource {
        Resource::Topic(_) => topic_rules(),
        Resource::Broker(_) => broker_rules(),
        Resource::Group(_) => group_rules(),
    };
    apply(&rules, current, changes, replace_all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, operation: Operation, value: Option<&str>) -> ConfigChange {
        ConfigChange {
            name: name.into(),
            operation,
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn list_operations_and_the_whole_set_form() {
        let rules = topic_rules();
        let mut current = ConfigMap::new();
        current.insert("retention.ms".into(), "1000".into());
        // APPEND starts from the default (delete).
        let appended = apply(
            &rules,
            &current,
            vec![change("cleanup.policy", Operation::Append, Some("compact"))],
            false,
        )
        .unwrap();
        assert_eq!(
            appended.get("cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
        let appended = apply(
            &rules,
            &current,
            vec![change("cleanup.policy", Operation::Append, Some("delete"))],
            false,
        )
        .unwrap();
        assert_eq!(appended.get("cleanup.policy").map(String::as_str), Some("delete"));
        current.insert("cleanup.policy".into(), "delete,compact".into());
        let subtracted = apply(
            &rules,
            &current,
            vec![change("cleanup.policy", Operation::Subtract, Some("compact"))],
            false,
        )
        .unwrap();
        assert_eq!(
            subtracted.get("cleanup.policy").map(String::as_str),
            Some("delete")
        );
        let refused = apply(
            &rules,
            &current,
            vec![change("retention.ms", Operation::Append, Some("1"))],
            false,
        );
        assert!(refused.unwrap_err().1.contains("not a list"));
        // The legacy form drops what it does not name.
        let replaced = apply(
            &rules,
            &current,
            vec![change("segment.ms", Operation::Set, Some("5000"))],
            true,
        )
        .unwrap();
        assert_eq!(replaced.len(), 1);
        let deleted = apply(
            &rules,
            &current,
            vec![change("retention.ms", Operation::Delete, None)],
            false,
        )
        .unwrap();
        assert!(!deleted.contains_key("retention.ms"));
        assert!(apply(
            &rules,
            &current,
            vec![change("bogus", Operation::Delete, None)],
            false
        )
        .is_err());
    }

    #[test]
    fn broker_changes_are_checked() {
        let rules = broker_rules();
        let none = ConfigMap::new();
        assert!(apply(
            &rules,
            &none,
            vec![change("log.retention.ms", Operation::Set, Some("5000"))],
            false
        )
        .is_ok());
        let (code, _) = apply(
            &rules,
            &none,
            vec![change("num.partitions", Operation::Set, Some("3"))],
            false,
        )
        .unwrap_err();
        assert_eq!(code, ResponseError::InvalidRequest);
    }
}
