//! The topic catalog, kept in the metadata store as `topics.json`.

use super::config::{log_config, BrokerTopicDefaults};
use crate::log::LogConfig;
use crate::metadata::{documents, FileStore, MetadataStore};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicEntry {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Per-topic overrides (validated when set).
    pub configs: BTreeMap<String, String>,
    #[serde(skip)]
    log_config: Option<LogConfig>,
}

impl TopicEntry {
    /// A new topic; its log settings are resolved when the catalog takes it.
    pub fn new(name: &str, partitions: i32, configs: BTreeMap<String, String>) -> Self {
        TopicEntry {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions,
            configs,
            log_config: None,
        }
    }

    /// The log settings: the topic's overrides over the broker-level
    /// defaults the catalog held when it took this entry.
    pub fn log_config(&self) -> LogConfig {
        self.log_config
            .clone()
            .unwrap_or_else(|| log_config(&self.configs, &BrokerTopicDefaults::default()))
    }

    pub fn with_configs(&self, configs: BTreeMap<String, String>) -> Self {
        let mut entry = self.clone();
        entry.log_config = None;
        entry.configs = configs;
        entry
    }
}

/// One version of the catalog. Immutable: changes make a new one.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub version: u64,
    topics: BTreeMap<String, Arc<TopicEntry>>,
    by_id: HashMap<Uuid, String>,
    /// Broker-level topic defaults (dynamic broker configs).
    defaults: Arc<BrokerTopicDefaults>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&Arc<TopicEntry>> {
        self.topics.get(name)
    }

    pub fn by_id(&self, id: &Uuid) -> Option<&Arc<TopicEntry>> {
        self.by_id.get(id).and_then(|name| self.topics.get(name))
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicEntry>> {
        self.topics.values()
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The broker-level topic defaults this version resolves configs with.
    pub fn defaults(&self) -> &BrokerTopicDefaults {
        &self.defaults
    }

    fn with(&self, change: impl FnOnce(&mut BTreeMap<String, Arc<TopicEntry>>)) -> Catalog {
        self.with_defaults(self.defaults.clone(), change)
    }

    /// The next version: `change` applied, and every entry's log settings
    /// resolved against `defaults` (so a changed broker default reaches
    /// every topic without an override at once).
    fn with_defaults(
        &self,
        defaults: Arc<BrokerTopicDefaults>,
        change: impl FnOnce(&mut BTreeMap<String, Arc<TopicEntry>>),
    ) -> Catalog {
        let mut topics = self.topics.clone();
        change(&mut topics);
        for entry in topics.values_mut() {
            let resolved = log_config(&entry.configs, &defaults);
            if entry.log_config.as_ref() != Some(&resolved) {
                let mut updated = (**entry).clone();
                updated.log_config = Some(resolved);
                *entry = Arc::new(updated);
            }
        }
        let by_id = topics.values().map(|t| (t.id, t.name.clone())).collect();
        Catalog {
            version: self.version + 1,
            topics,
            by_id,
            defaults,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CatalogFile {
    topics: Vec<TopicEntry>,
}

/// The shared, persisted catalog. Reads are lock-free; `update` is called
/// by one thread of this process only (the controller shard); other
/// brokers' updates are told apart by the store (see `update`).
pub struct CatalogStore {
    store: Arc<dyn MetadataStore>,
    current: ArcSwap<Catalog>,
}

impl CatalogStore {
    /// Loads `topics.json` from the data directory, resolving topic configs
    /// against `defaults`.
    pub fn load(dir: &Path, defaults: BrokerTopicDefaults) -> io::Result<CatalogStore> {
        Self::open(Arc::new(FileStore::new(dir)), defaults)
    }

    /// Loads the catalog from `store`, resolving topic configs against
    /// `defaults`.
    pub fn open(store: Arc<dyn MetadataStore>, defaults: BrokerTopicDefaults) -> io::Result<CatalogStore> {
        let topics = store
            .get_json::<CatalogFile>(documents::TOPICS)?
            .map_or_else(Vec::new, |file| file.topics);
        let catalog = Catalog::default().with_defaults(Arc::new(defaults), |map| {
            for topic in topics {
                map.insert(topic.name.clone(), Arc::new(topic));
            }
        });
        Ok(CatalogStore {
            store,
            current: ArcSwap::from_pointee(catalog),
        })
    }

    pub fn snapshot(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Applies `change`, persists the result (atomically and durably, see
    /// [`MetadataStore::put`]), then publishes it. On an I/O error nothing
    /// is published. In cluster mode the change starts from the stored
    /// catalog and is written only if nobody changed it meanwhile (another
    /// broker's controller may be creating topics too); on a conflict it is
    /// applied again to the newer version.
    pub fn update(
        &self,
        mut change: impl FnMut(&mut BTreeMap<String, Arc<TopicEntry>>),
    ) -> io::Result<Arc<Catalog>> {
        const ATTEMPTS: usize = 16;
        for _ in 0..ATTEMPTS {
            let (base, expected) = if self.store.shared(documents::TOPICS) {
                let stored = self.store.get(documents::TOPICS)?;
                let base = match &stored {
                    Some(bytes) => Arc::new(self.parse(bytes)?),
                    None => Arc::new(self.current.load().with(|topics| topics.clear())),
                };
                (base, stored)
            } else {
                (self.current.load_full(), None)
            };
            let next = Arc::new(base.with(&mut change));
            let file = CatalogFile {
                topics: next.topics().map(|t| (**t).clone()).collect(),
            };
            let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
            if self
                .store
                .replace(documents::TOPICS, expected.as_deref(), &bytes)?
            {
                let next = Arc::new(self.versioned(next));
                self.current.store(next.clone());
                return Ok(next);
            }
        }
        Err(io::Error::other(format!(
            "{}: changed by other brokers {ATTEMPTS} times in a row",
            self.store.locate(documents::TOPICS)
        )))
    }

    /// Takes the stored catalog another broker wrote (cluster mode), if it
    /// differs from the one published.
    pub fn adopt(&self, bytes: &[u8]) -> io::Result<()> {
        let next = self.parse(bytes)?;
        let current = self.current.load();
        if next.topics == current.topics {
            return Ok(());
        }
        self.current.store(Arc::new(self.versioned(Arc::new(next))));
        Ok(())
    }

    /// The catalog a stored document describes, with today's defaults.
    fn parse(&self, bytes: &[u8]) -> io::Result<Catalog> {
        let file: CatalogFile =
            serde_json::from_slice(bytes).map_err(|e| self.store.invalid(documents::TOPICS, e))?;
        let current = self.current.load();
        Ok(current.with(|topics| {
            topics.clear();
            for topic in file.topics {
                topics.insert(topic.name.clone(), Arc::new(topic));
            }
        }))
    }

    /// `next` numbered after the published version, which readers use to
    /// tell versions apart.
    fn versioned(&self, next: Arc<Catalog>) -> Catalog {
        let mut next = (*next).clone();
        next.version = next.version.max(self.current.load().version + 1);
        next
    }

    /// Publishes new broker-level topic defaults (persisted elsewhere, with
    /// the dynamic broker configs); every topic's log settings follow.
    pub fn set_defaults(&self, defaults: BrokerTopicDefaults) -> Arc<Catalog> {
        let next = Arc::new(self.current.load().with_defaults(Arc::new(defaults), |_| {}));
        self.current.store(next.clone());
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_persists_and_reloads() {
        let dir = std::env::temp_dir().join(format!("chronik-catalog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = CatalogStore::load(&dir, BrokerTopicDefaults::default()).unwrap();
        assert!(store.snapshot().is_empty());
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".into(), "1000".into());
        let entry = TopicEntry::new("orders", 3, configs);
        let id = entry.id;
        store
            .update(|t| {
                t.insert("orders".into(), Arc::new(entry.clone()));
            })
            .unwrap();
        let again = CatalogStore::load(&dir, BrokerTopicDefaults::default())
            .unwrap()
            .snapshot();
        let orders = again.get("orders").unwrap();
        assert_eq!(orders.partitions, 3);
        assert_eq!(orders.log_config().retention_ms, Some(1000));
        assert_eq!(again.by_id(&id).unwrap().name, "orders");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
