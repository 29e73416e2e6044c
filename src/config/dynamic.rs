//! Configs changed at run time through the admin API (Kafka's dynamic
//! configs): broker configs for the whole cluster (resource name `""`) and
//! for this broker (its id), and per-group configs. They live in the
//! metadata store as `dynamic-configs.json`, so a restart keeps them.

use crate::metadata::{documents, FileStore, MetadataStore};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub type ConfigMap = BTreeMap<String, String>;

/// One version of every dynamic config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DynamicConfigs {
    /// Cluster-wide broker defaults (DYNAMIC_DEFAULT_BROKER_CONFIG).
    pub cluster: ConfigMap,
    /// This broker's own (DYNAMIC_BROKER_CONFIG); wins over `cluster`.
    pub broker: ConfigMap,
    /// Per group id (GROUP_CONFIG).
    pub groups: BTreeMap<String, ConfigMap>,
}

/// Which set of dynamic configs a change is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Broker,
    Group(String),
}

impl DynamicConfigs {
    pub fn get(&self, scope: &Scope) -> Option<&ConfigMap> {
        match scope {
            Scope::Cluster => Some(&self.cluster),
            Scope::Broker => Some(&self.broker),
            Scope::Group(id) => self.groups.get(id),
        }
    }

    fn get_mut(&mut self, scope: &Scope) -> &mut ConfigMap {
        match scope {
            Scope::Cluster => &mut self.cluster,
            Scope::Broker => &mut self.broker,
            Scope::Group(id) => self.groups.entry(id.clone()).or_default(),
        }
    }
}

/// The persisted dynamic configs. Reads are lock-free snapshots; writes
/// happen on the controller shard only, so they never race.
pub struct DynamicConfigStore {
    store: Arc<dyn MetadataStore>,
    current: ArcSwap<DynamicConfigs>,
}

impl DynamicConfigStore {
    /// Loads `dynamic-configs.json` from the data directory.
    pub fn load(dir: &Path) -> io::Result<DynamicConfigStore> {
        Self::open(Arc::new(FileStore::new(dir)))
    }

    pub fn open(store: Arc<dyn MetadataStore>) -> io::Result<DynamicConfigStore> {
        let configs = store.get_json(documents::DYNAMIC_CONFIGS)?.unwrap_or_default();
        Ok(DynamicConfigStore {
            store,
            current: ArcSwap::from_pointee(configs),
        })
    }

    pub fn snapshot(&self) -> Arc<DynamicConfigs> {
        self.current.load_full()
    }

    /// Replaces the configs of `scope` with `configs`, persists the result
    /// (atomically and durably) and publishes it. On an I/O error nothing
    /// is published.
    pub fn replace(&self, scope: &Scope, configs: ConfigMap) -> io::Result<Arc<DynamicConfigs>> {
        let mut next = (**self.current.load()).clone();
        *next.get_mut(scope) = configs;
        next.groups.retain(|_, c| !c.is_empty());
        self.store.put_json(documents::DYNAMIC_CONFIGS, &next)?;
        let next = Arc::new(next);
        self.current.store(next.clone());
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_persist_and_reload() {
        let dir = std::env::temp_dir().join(format!("chronik-dynamic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = DynamicConfigStore::load(&dir).unwrap();
        assert_eq!(*store.snapshot(), DynamicConfigs::default());
        let mut set = ConfigMap::new();
        set.insert("log.retention.ms".into(), "1000".into());
        store.replace(&Scope::Broker, set.clone()).unwrap();
        store.replace(&Scope::Group("g".into()), set.clone()).unwrap();
        let again = DynamicConfigStore::load(&dir).unwrap().snapshot();
        assert_eq!(again.broker, set);
        assert_eq!(again.get(&Scope::Group("g".into())), Some(&set));
        store
            .replace(&Scope::Group("g".into()), ConfigMap::new())
            .unwrap();
        assert!(store.snapshot().groups.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
