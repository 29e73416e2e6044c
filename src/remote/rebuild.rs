//! A broker started with an empty data directory and the same bucket
//! takes back every tiered topic: its catalog entry from the bucket, and
//! for each partition with no local data a log that starts where the
//! remote one ends (its manifest and last producer snapshot beside it).
//! Runs at start, before any shard, so it may block.

use super::manifest::{Manifest, PartitionKeys, CATALOG_DIR};
use super::store::RemoteStore;
use super::tiered::MANIFEST_CACHE;
use crate::log::index::write_file;
use crate::log::{LOG_START_OFFSET, PRODUCER_STATE};
use crate::partition::claim_partition_dir;
use crate::topics::{CatalogStore, TopicEntry, TopicPartition};
use futures::executor::block_on;
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// What a rebuild took back: (topics, partitions).
pub(crate) fn rebuild_from_bucket(
    store: &RemoteStore,
    catalog: &CatalogStore,
    root: &Path,
) -> Result<(usize, usize), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what} in {}: {e}", store.url());
    let keys = block_on(store.list(CATALOG_DIR)).map_err(|e| fail("listing the topic catalog", &e))?;
    let mut topics = 0;
    for key in keys.iter().filter(|k| k.ends_with(".json")) {
        let Some(bytes) = block_on(store.get(key)).map_err(|e| fail("reading a catalog entry", &e))? else {
            continue;
        };
        let entry: TopicEntry = match serde_json::from_slice(&bytes) {
            Ok(entry) => entry,
            Err(e) => {
                warn!(key, error = %e, "unreadable topic entry in object storage; skipped");
                continue;
            }
        };
        let known = catalog.snapshot().get(&entry.name).cloned();
        match known {
            Some(local) if local.id != entry.id => {
                warn!(topic = %entry.name, "a topic of this name exists here with another id; the bucket's is not taken back");
            }
            Some(_) => {}
            None => {
                let name = entry.name.clone();
                catalog
                    .update(|t| {
                        t.insert(name.clone(), Arc::new(entry.with_configs(entry.configs.clone())));
                    })
                    .map_err(|e| fail("saving the catalog", &e))?;
                topics += 1;
            }
        }
    }
    let mut partitions = 0;
    let snapshot = catalog.snapshot();
    for topic in snapshot.topics().filter(|t| t.log_config().remote_storage) {
        for p in 0..topic.partitions {
            let tp = TopicPartition::new(&topic.name, p);
            let dir = root.join(tp.dir_name());
            if has_local_data(&dir) {
                continue;
            }
            let keys = PartitionKeys::new(topic.id, p);
            let Some(bytes) =
                block_on(store.get(&keys.manifest())).map_err(|e| fail("reading a manifest", &e))?
            else {
                continue;
            };
            let manifest = Manifest::from_json(&bytes).map_err(|e| fail(&keys.manifest(), &e))?;
            let Some(last) = manifest.segments.last() else {
                continue;
            };
            claim_partition_dir(&dir, topic.id).map_err(|e| fail(&dir.display().to_string(), &e))?;
            if let Some(snapshot) = block_on(store.get(&keys.segment(last, "snapshot")))
                .map_err(|e| fail("reading a producer snapshot", &e))?
            {
                write_file(&dir.join(PRODUCER_STATE), &snapshot).map_err(|e| fail("writing", &e))?;
            }
            write_file(&dir.join(MANIFEST_CACHE), &bytes).map_err(|e| fail("writing", &e))?;
            write_file(&dir.join(LOG_START_OFFSET), manifest.end().to_string().as_bytes())
                .map_err(|e| fail("writing", &e))?;
            info!(partition = %tp, remote_start = manifest.start().unwrap_or(0), remote_end = manifest.end(), "partition rebuilt from object storage");
            partitions += 1;
        }
    }
    Ok((topics, partitions))
}

/// Whether `dir` holds any batches of its own.
fn has_local_data(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            e.file_name().to_string_lossy().ends_with(".log") && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    })
}
