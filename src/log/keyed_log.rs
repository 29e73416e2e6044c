//! An internal partition of keyed records: what the group offsets store and
//! the transaction state keep. They are ordinary partition logs (segments,
//! indexes, recovery, Kafka's record batches) with `cleanup.policy=compact`,
//! so the log cleaner that keeps compacted topics bounded keeps these
//! bounded too, and they move wherever their partition's owner goes. The
//! owner keeps the latest value of every key in memory: replayed from the
//! log at open, updated by each append.

use super::batch;
use super::compression;
use super::partition_log::{now_ms, CleanCandidate, Installed, LogConfig, PartitionLog, Sealed};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use tracing::info;

/// A read of this many bytes at a time replays the log.
const REPLAY_CHUNK: usize = 1 << 20;

pub struct KeyedLog {
    log: PartitionLog,
    config: LogConfig,
    /// The batch the last append stored, as stored (offsets assigned):
    /// what cluster mode's WAL must hold too.
    last_batch: Option<StoredBatch>,
}

/// A batch as the log stored it, at offsets `[base, end)`.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub base: i64,
    pub end: i64,
    pub bytes: bytes::Bytes,
}

/// A key's new value; `None` deletes it (a tombstone).
pub type Change<'a> = (&'a [u8], Option<&'a [u8]>);

impl KeyedLog {
    /// Blocking: opens (or creates) the log in `dir`, recovering a torn
    /// tail as any partition does, and hands every record to `apply` in
    /// offset order (the last one per key is its value).
    pub fn open(
        dir: &Path,
        config: LogConfig,
        mut apply: impl FnMut(&[u8], Option<&[u8]>) -> io::Result<()>,
    ) -> io::Result<KeyedLog> {
        let (log, report) = PartitionLog::open(dir)?;
        // The directory (made here the first time) and its segment's name
        // are durable before any record in it is acknowledged.
        super::partition_log::sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            super::partition_log::sync_dir(parent)?;
        }
        if let Some((end, cut, problem)) = &report.truncated {
            info!(dir = %dir.display(), end_offset = end, cut_bytes = cut, problem = %problem, "internal partition: cut a torn or corrupt tail");
        }
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let bytes = read_chunk(&log, offset)?;
            if bytes.is_empty() {
                break;
            }
            let mut whole = 0;
            for one in whole_batches(&bytes) {
                whole += 1;
                let header =
                    batch::validate_stored(one).map_err(|e| io::Error::other(e.message().to_string()))?;
                if header.next_offset() <= offset || header.is_control() {
                    offset = offset.max(header.next_offset());
                    continue;
                }
                let records = compression::records(one, &header)
                    .map_err(|e| io::Error::other(e.message().to_string()))?;
                for record in
                    batch::parse_records(&records).map_err(|e| io::Error::other(e.message().to_string()))?
                {
                    if let Some(key) = record.key {
                        apply(key, record.value)?;
                    }
                }
                offset = header.next_offset();
            }
            if whole == 0 {
                return Err(io::Error::other(format!(
                    "{}: no whole batch at offset {offset}",
                    dir.display()
                )));
            }
        }
        Ok(KeyedLog {
            log,
            config,
            last_batch: None,
        })
    }

    /// Blocking (a write, no sync): appends the changes as one batch and
    /// returns the file the caller syncs before acknowledging them, and the
    /// segment the append closed, if it rolled: its indexes, sync and
    /// recovery point, left to the caller to finish off the shard (until
    /// then the cleaner leaves it alone; every commit in it waited for its
    /// own sync).
    pub fn append(&mut self, changes: &[Change<'_>]) -> io::Result<(Arc<File>, Option<Sealed>)> {
        let built = batch::build_keyed_batch(now_ms(), changes);
        let header = batch::validate(&built).map_err(|e| io::Error::other(e.message().to_string()))?;
        let before = self.log.written_end();
        let mut stored = built.clone();
        let mut outcome = self
            .log
            .reserve(&bytes::Bytes::from(built), header, &self.config)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        batch::assign_offset(&mut stored, outcome.base_offset, 0);
        self.last_batch = Some(StoredBatch {
            base: outcome.base_offset,
            end: outcome.base_offset + i64::from(header.last_offset_delta) + 1,
            bytes: bytes::Bytes::from(stored),
        });
        if let Some(naming) = outcome.rolled.as_mut().and_then(|s| s.naming.take()) {
            naming.finish()?;
        }
        let write = outcome
            .write
            .take()
            .ok_or_else(|| io::Error::other("a keyed batch was taken for a duplicate"))?;
        let file = write.file.clone();
        let written = write.write().and_then(|()| match outcome.rolled {
            // The new segment's name is durable before a commit in it is.
            Some(_) => super::partition_log::sync_dir(self.log.dir()),
            None => Ok(()),
        });
        if let Err(e) = written {
            // Taken back, file and all: a later append must not land past
            // a hole, which recovery would cut with everything after it.
            let unwritten = self.log.forget_unwritten(before);
            if let Err(cut) = unwritten.finish() {
                tracing::warn!(dir = %self.log.dir().display(), error = %cut, "cannot cut a failed write");
            }
            return Err(e);
        }
        Ok((file, outcome.rolled.take()))
    }

    /// Blocking: the log as it stands from `from` (its start if lower) up
    /// to `end`, whole batches, at most `limit` bytes: what a fold of the
    /// WAL writes. `None` if it is larger.
    pub fn stored_range(&self, from: i64, end: i64, limit: usize) -> io::Result<Option<(i64, Vec<u8>)>> {
        let start = from.max(self.log.log_start_offset());
        let mut out = Vec::new();
        let mut offset = start;
        while offset < end {
            let bytes = read_chunk(&self.log, offset)?;
            let mut whole = 0;
            for one in whole_batches(&bytes) {
                whole += 1;
                let header =
                    batch::parse_header(one).map_err(|e| io::Error::other(e.message().to_string()))?;
                if header.next_offset() > end {
                    return Ok((out.len() <= limit).then_some((start, out)));
                }
                out.extend_from_slice(one);
                offset = header.next_offset();
            }
            if whole == 0 {
                break;
            }
            if out.len() > limit {
                return Ok(None);
            }
        }
        Ok((out.len() <= limit).then_some((start, out)))
    }

    /// The batch the last append stored (once).
    pub fn take_last_batch(&mut self) -> Option<StoredBatch> {
        self.last_batch.take()
    }

    /// See [`PartitionLog::clean_candidate`]; `None` when nothing is due
    /// by `min.cleanable.dirty.ratio`.
    pub fn clean_candidate(
        &self,
        map_budget_bytes: usize,
        throttle: Arc<super::cleaner::Throttle>,
    ) -> Option<CleanCandidate> {
        let candidate = self
            .log
            .clean_candidate(&self.config, now_ms(), map_budget_bytes, throttle)?;
        candidate.is_due(&self.config).then_some(candidate)
    }

    pub fn install_cleaned(&mut self, result: super::cleaner::CleanResult) -> io::Result<Installed> {
        self.log.install_cleaned(result)
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// For the per-topic gauges: end offset, bytes, and (cleanable bytes,
    /// of which not yet cleaned).
    pub fn stats(&self) -> (i64, u64, (u64, u64)) {
        (
            self.log.log_end_offset(),
            self.log.size_bytes(),
            self.log.dirty_bytes(&self.config, now_ms()),
        )
    }

    pub fn dir(&self) -> &Path {
        self.log.dir()
    }
}

/// Blocking: up to a chunk of whole batches from `offset`.
fn read_chunk(log: &PartitionLog, offset: i64) -> io::Result<Vec<u8>> {
    log.read(offset, REPLAY_CHUNK, true).map_err(|e| match e {
        super::ReadError::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    })
}

/// The whole batches at the start of `bytes`, in order.
fn whole_batches(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let size = bytes.get(at..).and_then(batch::batch_size)?;
        let one = bytes.get(at..at + size)?;
        at += size;
        Some(one)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn replay(dir: &Path, config: &LogConfig) -> (KeyedLog, BTreeMap<Vec<u8>, Vec<u8>>) {
        let mut state = BTreeMap::new();
        let log = KeyedLog::open(dir, config.clone(), |k, v| {
            match v {
                Some(v) => state.insert(k.to_vec(), v.to_vec()),
                None => state.remove(k),
            };
            Ok(())
        })
        .unwrap();
        (log, state)
    }

    #[test]
    fn the_latest_value_per_key_survives_cleaning_and_reopening() {
        let dir = std::env::temp_dir().join(format!("chronik-keyed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = LogConfig {
            segment_bytes: 4096,
            compact: true,
            delete: false,
            delete_retention_ms: 0,
            ..LogConfig::default()
        };
        let mut written = 0u64;
        {
            let (mut log, state) = replay(&dir, &config);
            assert!(state.is_empty());
            for round in 0..200u32 {
                for key in 0..10u32 {
                    let k = format!("key-{key}");
                    let v = format!("value-{round}");
                    if let (_, Some(sealed)) = log.append(&[(k.as_bytes(), Some(v.as_bytes()))]).unwrap() {
                        sealed.finish().unwrap();
                    }
                }
            }
            log.append(&[(b"key-3".as_slice(), None)]).unwrap();
            written += log.size_bytes();
            let throttle = Arc::new(crate::log::cleaner::Throttle::new(0));
            let candidate = log.clean_candidate(1 << 20, throttle).expect("due");
            let result = crate::log::cleaner::clean(&candidate.job).unwrap();
            log.install_cleaned(result).unwrap().finish().unwrap();
            assert!(
                log.size_bytes() * 4 < written,
                "{} of {written}",
                log.size_bytes()
            );
        }
        let (_, state) = replay(&dir, &config);
        assert_eq!(state.len(), 9);
        assert!(!state.contains_key(b"key-3".as_slice()));
        assert_eq!(state[b"key-9".as_slice()], b"value-199");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
