//! Config changes on the controller: IncrementalAlterConfigs and
//! AlterConfigs for topics, the broker and groups. The rules live in
//! `config::alter`; here the checked result is stored durably (on the
//! blocking pool) and applied.

use super::{Controller, ControllerContext};
use crate::config::alter::{changed_configs, AlterOutcome, ConfigChange, Refusal, Resource};
use crate::config::broker_configs::live_settings;
use crate::config::dynamic::{ConfigMap, Scope};
use crate::storage::run_blocking;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use tracing::info;

/// Applies one resource's changes. Runs on the controller; the stores'
/// durable writes run on the blocking pool.
pub(crate) async fn alter_configs(
    controller: &Controller,
    resource: Resource,
    changes: Vec<ConfigChange>,
    replace_all: bool,
    validate_only: bool,
) -> AlterOutcome {
    let context = controller.context();
    let result = match resource {
        Resource::Topic(name) => alter_topic(context, &name, changes, replace_all, validate_only).await,
        Resource::Broker(scope) => {
            let current = current_dynamic(context, &scope);
            let checked = changed_configs(&Resource::Broker(scope.clone()), &current, changes, replace_all);
            match checked {
                Ok(next) if !validate_only && next != current => {
                    let stored = replace_dynamic(context, scope.clone(), next.clone()).await;
                    stored.map(|()| {
                        info!(scope = ?scope, configs = ?next, "dynamic broker configs changed");
                        apply_live_settings(context);
                    })
                }
                other => other.map(|_| ()),
            }
        }
        Resource::Group(id) => {
            let scope = Scope::Group(id.clone());
            let current = current_dynamic(context, &scope);
            match changed_configs(&Resource::Group(id), &current, changes, replace_all) {
                Ok(next) if !validate_only && next != current => replace_dynamic(context, scope, next).await,
                other => other.map(|_| ()),
            }
        }
    };
    match result {
        Ok(()) => AlterOutcome::default(),
        Err((error, message)) => AlterOutcome::failed(error, message),
    }
}

/// The overrides a scope has now.
fn current_dynamic(context: &ControllerContext, scope: &Scope) -> ConfigMap {
    context.dynamic.snapshot().get(scope).cloned().unwrap_or_default()
}

/// Stores one scope's dynamic configs durably, off the shard thread.
async fn replace_dynamic(context: &ControllerContext, scope: Scope, next: ConfigMap) -> Result<(), Refusal> {
    let dynamic = context.dynamic.clone();
    run_blocking("writing dynamic configs", move || {
        dynamic.replace(&scope, next).map(|_| ())
    })
    .await
    .map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))
}

async fn alter_topic(
    context: &ControllerContext,
    name: &str,
    changes: Vec<ConfigChange>,
    replace_all: bool,
    validate_only: bool,
) -> Result<(), Refusal> {
    let entry = context
        .catalog
        .snapshot()
        .get(name)
        .cloned()
        .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("no topic {name}")))?;
    let next = changed_configs(
        &Resource::Topic(name.to_string()),
        &entry.configs,
        changes,
        replace_all,
    )?;
    if validate_only || next == entry.configs {
        return Ok(());
    }
    let updated = Arc::new(entry.with_configs(next));
    let (catalog, key) = (context.catalog.clone(), name.to_string());
    run_blocking("writing the topic catalog", move || {
        catalog
            .update(|topics| {
                topics.insert(key.clone(), updated.clone());
            })
            .map(|_| ())
    })
    .await
    .map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
    info!(topic = name, "topic configs changed");
    Ok(())
}

/// Makes the shards enforce the dynamic broker configs now in the store:
/// connection limits, idle timeout and backpressure (shared by every
/// shard), and the topic defaults (a new catalog version).
pub(crate) fn apply_live_settings(context: &ControllerContext) {
    let live = live_settings(&context.config, &context.dynamic.snapshot());
    context.limits.set(&live.limits, live.idle_timeout);
    context
        .backpressure_threshold
        .store(live.backpressure_threshold, std::sync::atomic::Ordering::Relaxed);
    context.catalog.set_defaults(live.topic_defaults);
}
