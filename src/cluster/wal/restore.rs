//! Taking a partition over: before a newly led partition serves, its
//! local log is made to hold exactly what the cluster committed, from the
//! WAL pointers in etcd and the objects they name.

use super::{keys, ShardWal, Unfolded, WalPointer, RESTORE_READS};
use crate::cluster::etcd::{EtcdError, KeyValue};
use crate::log::batch::{batch_size, parse_header};
use crate::log::{LogConfig, PartitionLog};
use crate::storage::{run_blocking, StorageError};
use crate::topics::TopicPartition;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::path::Path;
use tracing::info;
use uuid::Uuid;

impl ShardWal {
    /// A log this broker wrote last, ending where the commits end, is
    /// kept; any other is rebuilt from the committed WAL objects (replayed
    /// through the log's own append, so idempotent producers' sequences
    /// come back with the batches), from where the WAL starts.
    pub(crate) async fn restore(
        &self,
        tp: &TopicPartition,
        topic_id: Uuid,
        dir: &Path,
        config: LogConfig,
    ) -> Result<(), StorageError> {
        let etcd = self.etcd.clone();
        let (prefix, start_key) = (keys::wal_pointers(tp, topic_id), keys::wal_start(tp, topic_id));
        let (kvs, start) = self
            .side
            .run(async move {
                let (kvs, _) = etcd.range_prefix(&prefix).await?;
                let start = etcd.get(&start_key).await?;
                Ok::<_, EtcdError>((kvs, start))
            })
            .await
            .map_err(|_| StorageError::Unreachable("the etcd client thread stopped".into()))?
            .map_err(|e| StorageError::Unreachable(e.to_string()))?;
        let start = start.as_ref().and_then(recorded_start).unwrap_or(0);
        // Below the recorded start, the history is in remote segments (a
        // tiered partition, even one whose tiering was turned off since),
        // as the latest leader's manifest names them, and the log reads it
        // from the bucket. Only segments below the start are trusted: a
        // leader trims the WAL only below what it uploaded and committed,
        // while a segment past the start may be a deposed leader's, with
        // records never acknowledged; the new leader uploads its own.
        let remote = crate::remote::latest_remote_manifest(&self.store, topic_id, tp.partition)
            .await
            .map_err(|e| StorageError::Unreachable(format!("reading the remote manifest of {tp}: {e}")))?
            .map(|mut manifest| {
                manifest.segments.retain(|s| s.next_offset <= start);
                manifest
            });
        let floor = start;
        let mut pointers = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let pointer: WalPointer = serde_json::from_slice(&kv.value)
                .map_err(|e| StorageError::Invalid(format!("WAL pointer {}: {e}", kv.key)))?;
            if pointer.end > floor {
                pointers.push(pointer);
            }
        }
        pointers.sort_by_key(|p| p.base);
        let committed_end = pointers.last().map_or(floor, |p| p.end);
        self.unfolded
            .borrow_mut()
            .insert(tp.clone(), unfolded_since(&pointers, floor));
        self.trimmed.borrow_mut().insert(tp.clone(), start);
        if let Some(manifest) = remote.clone() {
            let cache_dir = dir.to_path_buf();
            run_blocking("caching the remote manifest", move || {
                crate::remote::cache_manifest(&cache_dir, &manifest)
            })
            .await?;
        }
        let written_by_me = pointers.last().is_some_and(|p| p.node == self.node);
        let local_dir = dir.to_path_buf();
        let local_end = run_blocking("opening the log", move || {
            if !local_dir.exists() {
                return Ok(0);
            }
            // A directory of an earlier topic of this name goes first.
            crate::partition::claim_partition_dir(&local_dir, topic_id)?;
            let (log, _) = PartitionLog::open(&local_dir)?;
            let end = log.log_end_offset();
            log.close()?;
            Ok(end)
        })
        .await?;
        self.committed.borrow_mut().insert(tp.clone(), committed_end);
        if written_by_me && local_end == committed_end {
            return Ok(());
        }
        info!(partition = %tp, local_end, committed_end, start = floor, pointers = pointers.len(), remote = remote.is_some(), "rebuilding the partition from the WAL");
        self.metrics.rebuilds.inc();
        let fresh = dir.to_path_buf();
        let manifest = remote.clone();
        run_blocking("clearing the stale log", move || {
            match std::fs::remove_dir_all(&fresh) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            match &manifest {
                Some(manifest) => crate::remote::cache_manifest(&fresh, manifest),
                None => Ok(()),
            }
        })
        .await?;
        let first = pointers.first().map_or(floor, |p| p.base);
        if first > floor {
            return Err(StorageError::Invalid(format!(
                "the WAL of {tp} starts at {first}, above its recorded start {floor}"
            )));
        }
        let mut next = first;
        for pointer in &pointers {
            if pointer.base != next {
                return Err(StorageError::Invalid(format!(
                    "the WAL of {tp} has a gap: next offset {next}, pointer from {}",
                    pointer.base
                )));
            }
            next = pointer.end;
        }
        // Read many at once (each is a ranged GET, most of the time in the
        // round trip), replayed in order in one pass.
        let reads = pointers.into_iter().map(|pointer| async move {
            let range = pointer.position..pointer.position + pointer.length;
            let bytes = self.store.get_range(&pointer.object, range).await.map_err(|e| {
                StorageError::Unreachable(format!("reading WAL object {}: {e}", pointer.object))
            })?;
            Ok::<_, StorageError>((pointer, bytes))
        });
        let read: Vec<(WalPointer, Bytes)> = futures::stream::iter(reads)
            .buffered(RESTORE_READS)
            .try_collect()
            .await?;
        let (replay_dir, replay_config, name) = (dir.to_path_buf(), config, tp.to_string());
        run_blocking("replaying the WAL", move || {
            replay(&replay_dir, (first, floor), &read, &replay_config, &name)
        })
        .await?;
        Ok(())
    }
}

/// A start key's value: the offset, in decimal.
pub(super) fn recorded_start(kv: &KeyValue) -> Option<i64> {
    std::str::from_utf8(&kv.value).ok()?.parse().ok()
}

/// What of a partition's WAL (`pointers`, by base) is not folded yet:
/// what lies above its last fold and above `start`. A pointer `start`
/// falls inside stays out: it goes when the start passes its end, and
/// folding it would need batches the log no longer has.
pub(super) fn unfolded_since(pointers: &[WalPointer], start: i64) -> Unfolded {
    let folded_end = pointers
        .iter()
        .filter(|p| p.folded)
        .map(|p| p.end)
        .max()
        .unwrap_or(0);
    let aligned =
        pointers
            .iter()
            .find(|p| p.end > start)
            .map_or(start, |p| if p.base < start { p.end } else { p.base });
    let base = folded_end.max(aligned);
    let after = pointers.iter().filter(|p| !p.folded && p.base >= base);
    Unfolded {
        base,
        pointers: after.clone().count(),
        bytes: after.map(|p| p.length).sum(),
    }
}

/// Appends every pointer's batches, in order and at their own offsets, to
/// a new log in `dir` that begins at `first` (the first pointer's base),
/// checking each ends where its pointer says; then moves the log's start
/// up to `start` if that falls inside the first pointer.
fn replay(
    dir: &Path,
    (first, start): (i64, i64),
    read: &[(WalPointer, Bytes)],
    config: &LogConfig,
    tp: &str,
) -> std::io::Result<()> {
    let (mut log, _) = PartitionLog::create_at(dir, first)?;
    for (pointer, bytes) in read {
        let mut bytes = &bytes[..];
        while !bytes.is_empty() {
            let size = batch_size(bytes)
                .filter(|size| *size <= bytes.len())
                .ok_or_else(|| {
                    std::io::Error::other(format!("WAL object {} ends inside a batch", pointer.object))
                })?;
            let (batch, rest) = bytes.split_at(size);
            let header = parse_header(batch).map_err(|e| std::io::Error::other(e.message().to_string()))?;
            log.append_replayed(batch, header, config)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            bytes = rest;
        }
        if pointer.folded {
            // A fold of a compacted log may end with offsets the cleaner
            // emptied.
            log.skip_to(pointer.end)?;
        }
        if log.log_end_offset() != pointer.end {
            return Err(std::io::Error::other(format!(
                "WAL object {} holds {tp} up to {}, its pointer says {}",
                pointer.object,
                log.log_end_offset(),
                pointer.end
            )));
        }
    }
    if start > first {
        log.delete_records(start)
            .map_err(|e| std::io::Error::other(format!("moving the start of {tp} to {start}: {e:?}")))?;
    }
    log.close()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(base: i64, end: i64, folded: bool) -> WalPointer {
        WalPointer {
            object: String::new(),
            position: 0,
            length: (end - base) as u64,
            base,
            end,
            epoch: 0,
            node: 1,
            folded,
        }
    }

    #[test]
    fn folding_resumes_after_the_last_fold_and_above_the_start() {
        let wal = [
            pointer(0, 100, true),
            pointer(100, 110, false),
            pointer(110, 120, false),
        ];
        let u = unfolded_since(&wal, 0);
        assert_eq!((u.base, u.pointers, u.bytes), (100, 2, 20));
        // The start inside a pointer: folding begins after it.
        let u = unfolded_since(&wal[1..], 105);
        assert_eq!((u.base, u.pointers, u.bytes), (110, 1, 10));
        // The start on a boundary.
        let u = unfolded_since(&wal[2..], 110);
        assert_eq!((u.base, u.pointers), (110, 1));
        // Nothing left above the start.
        let u = unfolded_since(&[], 120);
        assert_eq!((u.base, u.pointers), (120, 0));
    }
}
