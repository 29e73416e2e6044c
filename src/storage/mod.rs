//! A shard's partitions: the logs it owns, group commit for acks=all, and
//! the waiters that long-polling fetches leave on partitions.
//!
//! Every partition belongs to exactly one shard, [`owner_of`]; only that
//! shard opens its directory. Everything here runs on the owning shard's
//! thread, so plain `RefCell`s suffice.

mod group_commit;

use crate::log::batch::BatchHeader;
use crate::log::{AppendError, LogConfig, PartitionLog, ReadError};
use crate::topics::{CatalogStore, TopicPartition};
use bytes::Bytes;
use futures::channel::oneshot;
use group_commit::GroupCommit;
use kafka_protocol::ResponseError;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tracing::{error, info, warn};
use uuid::Uuid;

/// Which shard owns a partition: a stable hash of topic and partition,
/// the same on every shard and across restarts with the same shard count.
pub fn owner_of(tp: &TopicPartition, shards: usize) -> usize {
    let hash = crc32c::crc32c_append(crc32c::crc32c(tp.topic.as_bytes()), &tp.partition.to_be_bytes());
    chronik_shard::owner_shard(u64::from(hash), shards)
}

/// The answer to one partition's append.
#[derive(Debug, Clone, Default)]
pub struct AppendResult {
    pub error_code: i16,
    pub error_message: Option<String>,
    pub base_offset: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
    /// Produce v8+ per-record errors: (index in the batch, message).
    pub record_errors: Vec<(i32, String)>,
}

impl AppendResult {
    pub fn error(code: i16, message: impl Into<String>) -> Self {
        AppendResult {
            error_code: code,
            error_message: Some(message.into()),
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
        }
    }
}

/// The answer to one partition's read.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
}

type Waiter = Rc<RefCell<Option<oneshot::Sender<()>>>>;

struct Partition {
    log: PartitionLog,
    topic_id: Uuid,
    waiters: Vec<Waiter>,
}

pub(crate) struct ShardStorage {
    shard: usize,
    shards: usize,
    root: PathBuf,
    catalog: Arc<CatalogStore>,
    partitions: RefCell<HashMap<TopicPartition, Partition>>,
    group_commit: Rc<GroupCommit>,
}

fn storage_error(tp: &TopicPartition, what: &str, e: &std::io::Error) -> i16 {
    error!(partition = %tp, error = %e, "{what} failed");
    ResponseError::KafkaStorageError.code()
}

impl ShardStorage {
    /// Opens (and recovers) every partition in the catalog this shard owns.
    pub(crate) fn open(
        shard: usize,
        shards: usize,
        root: PathBuf,
        catalog: Arc<CatalogStore>,
    ) -> ShardStorage {
        let storage = ShardStorage {
            shard,
            shards,
            root,
            catalog,
            partitions: RefCell::default(),
            group_commit: Rc::default(),
        };
        let snapshot = storage.catalog.snapshot();
        for topic in snapshot.topics() {
            for p in 0..topic.partitions {
                let tp = TopicPartition::new(&topic.name, p);
                if owner_of(&tp, shards) == shard {
                    let _ = storage.open_partition(&tp, topic.id);
                }
            }
        }
        storage
    }

    pub(crate) fn fsync_counter(&self) -> Arc<AtomicU64> {
        self.group_commit.syncs.clone()
    }

    fn open_partition(&self, tp: &TopicPartition, topic_id: Uuid) -> Result<(), i16> {
        let dir = self.root.join(tp.dir_name());
        match PartitionLog::open(&dir) {
            Ok((log, report)) => {
                if let Some((end, bytes, why)) = &report.truncated {
                    warn!(partition = %tp, end_offset = end, bytes_cut = bytes, reason = %why, "recovered partition: truncated a torn or corrupt tail");
                } else if !report.clean && log.log_end_offset() > 0 {
                    info!(partition = %tp, end_offset = log.log_end_offset(), rescanned = report.rescanned_segments, "recovered partition after an unclean shutdown");
                }
                self.partitions.borrow_mut().insert(
                    tp.clone(),
                    Partition {
                        log,
                        topic_id,
                        waiters: Vec::new(),
                    },
                );
                Ok(())
            }
            Err(e) => Err(storage_error(tp, "opening the log", &e)),
        }
    }

    /// Runs `f` on an owned partition, opening it on first use; fails with
    /// UNKNOWN_TOPIC_OR_PARTITION if the catalog does not have it.
    fn with_partition<R>(
        &self,
        tp: &TopicPartition,
        f: impl FnOnce(&mut Partition, &LogConfig) -> R,
    ) -> Result<R, i16> {
        debug_assert_eq!(owner_of(tp, self.shards), self.shard);
        let catalog = self.catalog.snapshot();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        let topic = catalog
            .get(&tp.topic)
            .filter(|t| tp.partition >= 0 && tp.partition < t.partitions)
            .ok_or(unknown)?;
        let stale = self
            .partitions
            .borrow()
            .get(tp)
            .is_some_and(|p| p.topic_id != topic.id);
        if stale {
            self.remove_partition(tp);
        }
        if !self.partitions.borrow().contains_key(tp) {
            self.open_partition(tp, topic.id)?;
        }
        let config = topic.log_config();
        let mut partitions = self.partitions.borrow_mut();
        let partition = partitions.get_mut(tp).ok_or(unknown)?;
        Ok(f(partition, &config))
    }

    /// Appends a validated batch; with acks=all, returns once it is fsynced.
    pub(crate) async fn append(
        self: &Rc<Self>,
        tp: &TopicPartition,
        batch: Bytes,
        header: BatchHeader,
        acks: i16,
    ) -> AppendResult {
        let outcome = self.with_partition(tp, |partition, config| {
            if batch.len() > config.max_message_bytes {
                let message = format!(
                    "batch of {} bytes exceeds max.message.bytes {}",
                    batch.len(),
                    config.max_message_bytes
                );
                return Err((ResponseError::MessageTooLarge.code(), message));
            }
            let appended = partition
                .log
                .append(&batch, header, config)
                .map_err(|e| match e {
                    AppendError::Producer(code) => (code.code(), code.to_string()),
                    AppendError::Io(e) => (storage_error(tp, "append", &e), e.to_string()),
                })?;
            if !appended.duplicate {
                for waiter in partition.waiters.drain(..) {
                    if let Some(tx) = waiter.borrow_mut().take() {
                        let _ = tx.send(());
                    }
                }
            }
            Ok((
                appended,
                partition.log.log_start_offset(),
                partition.log.active_file(),
            ))
        });
        let (appended, log_start_offset, file) = match outcome {
            Ok(Ok(done)) => done,
            Ok(Err((code, message))) => return AppendResult::error(code, message),
            Err(code) => return AppendResult::error(code, format!("{tp} does not exist")),
        };
        if let Some((rolled, recovery_point)) = appended.rolled {
            self.sync_rolled_segment(tp.clone(), rolled, recovery_point);
        }
        if acks == -1 {
            if let Err(e) = self.group_commit.sync(file).await {
                return AppendResult::error(storage_error(tp, "fdatasync", &e), e.to_string());
            }
        }
        AppendResult {
            error_code: 0,
            error_message: None,
            base_offset: appended.base_offset,
            log_append_time: appended.log_append_time,
            log_start_offset,
            record_errors: Vec::new(),
        }
    }

    /// fdatasync of `file` through this shard's group commit.
    pub(crate) async fn sync_file(self: &Rc<Self>, file: Arc<std::fs::File>) -> std::io::Result<()> {
        self.group_commit.sync(file).await
    }

    /// A rolled segment is fsynced off the event loop; only then does the
    /// recovery point move past it.
    fn sync_rolled_segment(
        self: &Rc<Self>,
        tp: TopicPartition,
        file: Arc<std::fs::File>,
        recovery_point: i64,
    ) {
        let storage = self.clone();
        glommio::spawn_local(async move {
            let synced = glommio::executor().spawn_blocking(move || file.sync_data()).await;
            match synced {
                Ok(()) => {
                    let _ = storage.with_partition(&tp, |p, _| {
                        if let Err(e) = p.log.set_recovery_point(recovery_point) {
                            storage_error(&tp, "writing the recovery point", &e);
                        }
                    });
                }
                Err(e) => {
                    storage_error(&tp, "fsync of a rolled segment", &e);
                }
            }
        })
        .detach();
    }

    pub(crate) fn read(
        &self,
        tp: &TopicPartition,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> ReadResult {
        let result = self.with_partition(tp, |p, _| {
            let hw = p.log.high_watermark();
            let start = p.log.log_start_offset();
            let read = p.log.read(offset, max_bytes, at_least_one);
            (hw, start, read)
        });
        match result {
            Ok((hw, start, Ok(records))) => ReadResult {
                error_code: 0,
                high_watermark: hw,
                log_start_offset: start,
                records: Bytes::from(records),
            },
            Ok((hw, start, Err(ReadError::OutOfRange))) => ReadResult {
                error_code: ResponseError::OffsetOutOfRange.code(),
                high_watermark: hw,
                log_start_offset: start,
                records: Bytes::new(),
            },
            Ok((hw, start, Err(ReadError::Io(e)))) => ReadResult {
                error_code: storage_error(tp, "read", &e),
                high_watermark: hw,
                log_start_offset: start,
                records: Bytes::new(),
            },
            Err(code) => ReadResult {
                error_code: code,
                high_watermark: -1,
                log_start_offset: -1,
                records: Bytes::new(),
            },
        }
    }

    /// Resolves when any of `parts` gets data past the given offset (at
    /// once if one already has, or if one is unknown). Dropping the
    /// receiver cancels the watch; stale waiters are pruned on the next
    /// registration or append.
    pub(crate) fn watch(&self, parts: &[(TopicPartition, i64)]) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let waiter: Waiter = Rc::new(RefCell::new(Some(tx)));
        for (tp, offset) in parts {
            let ready = self.with_partition(tp, |p, _| {
                if p.log.log_end_offset() > *offset {
                    return true;
                }
                p.waiters
                    .retain(|w| w.borrow().as_ref().is_some_and(|tx| !tx.is_canceled()));
                p.waiters.push(waiter.clone());
                false
            });
            if ready.unwrap_or(true) {
                if let Some(tx) = waiter.borrow_mut().take() {
                    let _ = tx.send(());
                }
                break;
            }
        }
        rx
    }

    /// ListOffsets for one partition: (offset, timestamp).
    pub(crate) fn list_offset(&self, tp: &TopicPartition, timestamp: i64) -> Result<(i64, i64), i16> {
        self.with_partition(tp, |p, _| match timestamp {
            -1 => Ok((p.log.high_watermark(), -1)),
            -2 | -4 | -5 => Ok((p.log.log_start_offset(), -1)),
            -3 => match p.log.max_timestamp() {
                Ok(found) => Ok(found.unwrap_or((-1, -1))),
                Err(e) => Err(storage_error(tp, "max timestamp lookup", &e)),
            },
            ts if ts >= 0 => match p.log.offset_for_timestamp(ts) {
                Ok(found) => Ok(found.unwrap_or((-1, -1))),
                Err(e) => Err(storage_error(tp, "timestamp lookup", &e)),
            },
            _ => Err(ResponseError::InvalidRequest.code()),
        })?
    }

    pub(crate) fn end_offset(&self, tp: &TopicPartition) -> Result<i64, i16> {
        self.with_partition(tp, |p, _| p.log.log_end_offset())
    }

    pub(crate) fn delete_records(&self, tp: &TopicPartition, offset: i64) -> Result<i64, i16> {
        self.with_partition(tp, |p, _| match p.log.delete_records(offset) {
            Ok(low) => Ok(low),
            Err(ReadError::OutOfRange) => Err(ResponseError::OffsetOutOfRange.code()),
            Err(ReadError::Io(e)) => Err(storage_error(tp, "delete records", &e)),
        })?
    }

    /// Closes and deletes this shard's partitions of a deleted topic.
    pub(crate) fn drop_topic(&self, name: &str) {
        let owned: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .keys()
            .filter(|tp| &*tp.topic == name)
            .cloned()
            .collect();
        for tp in owned {
            self.remove_partition(&tp);
        }
        // Directories of partitions never opened here are this shard's too.
        let prefix = format!("{name}-");
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let file_name = entry.file_name().to_string_lossy().to_string();
                let Some(p) = file_name
                    .strip_prefix(&prefix)
                    .and_then(|p| p.parse::<i32>().ok())
                else {
                    continue;
                };
                let tp = TopicPartition::new(name, p);
                if owner_of(&tp, self.shards) == self.shard {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    fn remove_partition(&self, tp: &TopicPartition) {
        if let Some(partition) = self.partitions.borrow_mut().remove(tp) {
            for waiter in partition.waiters {
                if let Some(tx) = waiter.borrow_mut().take() {
                    let _ = tx.send(());
                }
            }
            if let Err(e) = partition.log.delete() {
                storage_error(tp, "deleting the partition", &e);
            }
        }
    }

    /// Applies retention to every owned partition.
    pub(crate) fn apply_retention(&self) {
        let catalog = self.catalog.snapshot();
        let mut partitions = self.partitions.borrow_mut();
        for (tp, partition) in partitions.iter_mut() {
            let Some(topic) = catalog.get(&tp.topic) else {
                continue;
            };
            match partition.log.apply_retention(&topic.log_config()) {
                Ok(0) => {}
                Ok(deleted) => {
                    info!(partition = %tp, deleted, log_start_offset = partition.log.log_start_offset(), "retention deleted segments")
                }
                Err(e) => {
                    storage_error(tp, "retention", &e);
                }
            }
        }
    }

    /// Per topic (sum of end offsets, bytes) of the partitions owned here,
    /// and each owned partition's end offset.
    pub(crate) fn log_stats(&self) -> (HashMap<String, (i64, u64)>, HashMap<TopicPartition, i64>) {
        let mut per_topic: HashMap<String, (i64, u64)> = HashMap::new();
        let mut ends = HashMap::new();
        for (tp, partition) in self.partitions.borrow().iter() {
            let end = partition.log.log_end_offset();
            let entry = per_topic.entry(tp.topic.to_string()).or_default();
            entry.0 += end;
            entry.1 += partition.log.size_bytes();
            ends.insert(tp.clone(), end);
        }
        (per_topic, ends)
    }

    /// Graceful close of every owned partition (clean-shutdown markers).
    pub(crate) fn close_all(&self) {
        for (tp, partition) in self.partitions.borrow_mut().drain() {
            if let Err(e) = partition.log.close() {
                storage_error(&tp, "closing the log", &e);
            }
        }
    }
}
