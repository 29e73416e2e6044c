//! A partition log with a remote tier: the local log (the fast path for
//! produce and recent reads) plus the closed segments copied to object
//! storage, read back from there once the local disk let them go.
//!
//! Two retention horizons: `local.retention.*` removes local segments,
//! but only those the manifest already lists; `retention.*` removes remote
//! segments (manifest first, then objects). The partition's log start is
//! the remote one while anything is remote.

use super::manifest::{catalog_key, Manifest, PartitionKeys, RemoteSegment};
use super::reads::RemoteReads;
use super::store::{RemoteError, RemoteStore, UploadBody};
use super::TieringStats;
use crate::log::batch::{parse_header, validate_stored, BatchHeader};
use crate::log::index::{OffsetIndex, TimeIndex};
use crate::log::timestamps::first_at_or_after;
use crate::log::{ClosedSegment, LogConfig, PRODUCER_STATE};
use crate::storage::{
    run_blocking, Appending, LocalLog, Log, LogFuture, LogOffsets, RecentView, StorageError,
};
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use glommio::sync::Semaphore;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// The local copy of a partition's manifest (in its directory).
pub(crate) const MANIFEST_CACHE: &str = "remote-manifest.json";

/// Waits between failed attempts, doubling up to the most.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MOST_RETRY: Duration = Duration::from_secs(30);
/// How often a partition whose uploads keep failing says so.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Bytes one fetch of one partition reads from object storage at most.
const REMOTE_READ_MAX_BYTES: usize = 4 << 20;

/// What a tiered partition needs from its shard.
#[derive(Clone)]
pub(crate) struct TieringContext {
    pub store: RemoteStore,
    pub reads: Rc<RemoteReads>,
    pub stats: Rc<TieringStats>,
    /// Uploads running on the shard at once.
    pub uploads: Rc<Semaphore>,
    /// TIERING_LOCAL_CAP_MB in bytes (0 = none).
    pub local_cap: u64,
    /// Cluster mode: manifests are written per leader epoch.
    pub fenced_manifests: bool,
}

/// The remote half of a tiered partition, shared with its upload and read
/// tasks.
struct RemotePartition {
    name: Rc<str>,
    context: TieringContext,
    keys: PartitionKeys,
    leader_epoch: i32,
    dir: PathBuf,
    /// The local log's cache: closed segments are sent from there when it
    /// still holds them.
    recent: RecentView,
    /// The topic's catalog entry (key, JSON), written beside the data, and
    /// again when the topic's configs change, so that a broker rebuilt from
    /// the bucket knows the topic as it was last configured.
    catalog_key: String,
    catalog_entry: RefCell<Bytes>,
    /// The entry in the bucket is the current one.
    catalog_written: Cell<bool>,
    manifest: RefCell<Manifest>,
    /// One manifest change at a time (upload, retention, DeleteRecords):
    /// each applies to the manifest as it is when it runs.
    manifest_turn: Semaphore,
    /// Cluster mode: the manifests of earlier leaders' epochs were deleted.
    older_manifests_gone: Cell<bool>,
    uploading: Cell<bool>,
    retry_at: Cell<Option<Instant>>,
    backoff: Cell<Duration>,
    last_warning: Cell<Option<Instant>>,
}

pub(crate) struct TieredLog {
    local: LocalLog,
    remote: Rc<RemotePartition>,
}

/// Cluster mode, taking a partition over: the manifest its latest leader
/// wrote (`None`: nothing of it was ever remote).
pub(crate) async fn latest_remote_manifest(
    store: &RemoteStore,
    topic_id: uuid::Uuid,
    partition: i32,
) -> Result<Option<Manifest>, RemoteError> {
    let keys = PartitionKeys::new(topic_id, partition);
    let names = store.list(keys.dir()).await?;
    let Some(latest) = super::manifest::latest_manifest(&names) else {
        return Ok(None);
    };
    let Some(bytes) = store.get(latest).await? else {
        return Ok(None);
    };
    Manifest::from_json(&bytes)
        .map(Some)
        .map_err(|e| RemoteError::unreadable(format!("{latest}: {e}")))
}

/// Blocking: the manifest a tiered log opening in `dir` starts from.
pub(crate) fn cache_manifest(dir: &Path, manifest: &Manifest) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::log::index::write_file(&dir.join(MANIFEST_CACHE), &manifest.to_json())
}

/// Blocking: the manifest cached in `dir`, or an empty one.
pub(crate) fn load_cached_manifest(dir: &Path) -> Manifest {
    match std::fs::read(dir.join(MANIFEST_CACHE)) {
        Ok(bytes) => Manifest::from_json(&bytes).unwrap_or_else(|e| {
            warn!(dir = %dir.display(), "{e}; the manifest is read again from object storage on the next upload");
            Manifest::default()
        }),
        Err(_) => Manifest::default(),
    }
}

impl TieredLog {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        local: LocalLog,
        name: Rc<str>,
        context: TieringContext,
        topic_id: uuid::Uuid,
        partition: i32,
        leader_epoch: i32,
        catalog_json: Bytes,
        manifest: Manifest,
    ) -> TieredLog {
        let dir = local.dir().to_path_buf();
        let recent = local.recent_view();
        let keys = match context.fenced_manifests {
            true => PartitionKeys::new(topic_id, partition).fenced(leader_epoch),
            false => PartitionKeys::new(topic_id, partition),
        };
        TieredLog {
            local,
            remote: Rc::new(RemotePartition {
                name,
                context,
                keys,
                leader_epoch,
                dir,
                recent,
                catalog_key: catalog_key(topic_id),
                catalog_entry: RefCell::new(catalog_json),
                catalog_written: Cell::new(false),
                manifest: RefCell::new(manifest),
                manifest_turn: Semaphore::new(1),
                older_manifests_gone: Cell::new(false),
                uploading: Cell::new(false),
                retry_at: Cell::new(None),
                backoff: Cell::new(FIRST_RETRY),
                last_warning: Cell::new(None),
            }),
        }
    }

    /// The remote segment a read of `offset` goes to: one below the local
    /// log start that the manifest names.
    fn remote_segment_for(&self, offset: i64) -> Option<RemoteSegment> {
        if offset >= self.local.offsets().log_start {
            return None;
        }
        self.remote.manifest.borrow().segment_for(offset).cloned()
    }

    /// Starts uploading the closed segments the manifest lacks, unless an
    /// upload runs or a failure's backoff has not passed.
    fn upload_closed_segments(&self) {
        let remote = &self.remote;
        if remote.uploading.get() || remote.retry_at.get().is_some_and(|at| Instant::now() < at) {
            return;
        }
        let end = remote.manifest.borrow().end();
        // A segment reaching past the remote end goes whole, even if it
        // begins below it (a cluster leader's log rebuilt from the WAL
        // starts inside what is remote): readers take the remote segment
        // holding their offset, so overlaps are harmless, gaps are not.
        let waiting: Vec<ClosedSegment> = self
            .local
            .closed_segments()
            .into_iter()
            .filter(|s| s.next_offset > end)
            .collect();
        remote.context.stats.set_lag(
            &remote.name,
            self.local.offsets().log_end - end.max(self.offsets().log_start),
        );
        if waiting.is_empty() {
            return;
        }
        remote.uploading.set(true);
        let remote = remote.clone();
        glommio::spawn_local(async move {
            let outcome = remote.upload(waiting).await;
            remote.uploading.set(false);
            remote.after_attempt(outcome, "uploading a segment");
        })
        .detach();
    }

    /// Remote retention: segments past `retention.ms`, or beyond
    /// `retention.bytes` counting the whole log, leave the manifest and
    /// then the bucket.
    fn expire_remote(&self, config: &LogConfig) {
        let manifest = self.remote.manifest.borrow().clone();
        if manifest.segments.is_empty() || (config.retention_ms.is_none() && config.retention_bytes.is_none())
        {
            return;
        }
        let remote_end = manifest.end();
        let local_only: u64 = self.local.size_bytes().saturating_sub(
            self.local
                .closed_segments()
                .iter()
                .filter(|s| s.next_offset <= remote_end)
                .map(|s| s.size)
                .sum(),
        );
        let mut total = manifest.size() + local_only;
        let now = crate::log::partition_log::now_ms();
        let mut gone = Vec::new();
        for segment in &manifest.segments {
            let expired = config
                .retention_ms
                .is_some_and(|ms| segment.max_timestamp >= 0 && segment.max_timestamp < now - ms as i64);
            let over = config
                .retention_bytes
                .is_some_and(|max| total.saturating_sub(segment.size) >= max);
            if !(expired || over) {
                break;
            }
            total -= segment.size;
            gone.push(segment.clone());
        }
        let Some(last) = gone.last() else {
            return;
        };
        let new_start = last.next_offset;
        let remote = self.remote.clone();
        glommio::spawn_local(async move {
            let outcome = remote.raise_start(new_start).await;
            remote.after_attempt(outcome.map(drop), "remote retention");
        })
        .detach();
    }
}

impl RemotePartition {
    /// Uploads `segments` in order, each with its indexes and the
    /// producer snapshot, then names it in the manifest.
    async fn upload(self: &Rc<Self>, segments: Vec<ClosedSegment>) -> Result<(), RemoteError> {
        let store = &self.context.store;
        if !self.catalog_written.get() {
            self.write_catalog_entry().await?;
        }
        for closed in segments {
            let _slot = self.context.uploads.acquire_permit(1).await;
            let segment = RemoteSegment {
                base_offset: closed.base_offset,
                next_offset: closed.next_offset,
                size: closed.size,
                max_timestamp: closed.max_timestamp,
                leader_epoch: self.leader_epoch,
                aborted: closed.aborted.clone(),
            };
            let [log, index, timeindex] = closed.files.clone();
            let (body, from) = match self
                .recent
                .span(closed.base_offset, closed.next_offset, closed.size)
            {
                Some(pieces) => (UploadBody::Memory(pieces), "cache"),
                None => (UploadBody::File(log), "disk"),
            };
            let sent = match store.upload(&self.keys.segment(&segment, "log"), body).await {
                Ok(sent) => sent,
                // DeleteRecords or retention took it meanwhile.
                Err(e) if e.kind == "local_io" && !closed.files[0].exists() => continue,
                Err(e) => return Err(e),
            };
            store
                .put_file(&self.keys.segment(&segment, "index"), index)
                .await?;
            store
                .put_file(&self.keys.segment(&segment, "timeindex"), timeindex)
                .await?;
            let snapshot = self.dir.join(PRODUCER_STATE);
            if snapshot.exists() {
                store
                    .put_file(&self.keys.segment(&segment, "snapshot"), snapshot)
                    .await?;
            }
            self.change_manifest(|m| {
                m.segments.retain(|s| s.base_offset != segment.base_offset);
                let at = m
                    .segments
                    .partition_point(|s| s.base_offset < segment.base_offset);
                m.segments.insert(at, segment.clone());
            })
            .await?;
            self.context.stats.uploaded(sent);
            info!(partition = %self.name, base_offset = segment.base_offset, next_offset = segment.next_offset, bytes = sent, from, "segment uploaded to object storage");
        }
        Ok(())
    }

    /// Writes the topic's current catalog entry; one write at a time (with
    /// the manifest's), so an older entry never lands after a newer one.
    async fn write_catalog_entry(&self) -> Result<(), RemoteError> {
        let _turn = self.manifest_turn.acquire_permit(1).await;
        let entry = self.catalog_entry.borrow().clone();
        self.context.store.put(&self.catalog_key, entry.clone()).await?;
        if *self.catalog_entry.borrow() == entry {
            self.catalog_written.set(true);
        }
        Ok(())
    }

    /// Applies `change` to the manifest, writes it to the bucket and then
    /// to the local cache, and publishes it.
    async fn change_manifest(&self, change: impl FnOnce(&mut Manifest)) -> Result<Manifest, RemoteError> {
        let _turn = self.manifest_turn.acquire_permit(1).await;
        let mut next = self.manifest.borrow().clone();
        change(&mut next);
        let json = Bytes::from(next.to_json());
        self.context
            .store
            .put(&self.keys.manifest(), json.clone())
            .await?;
        let path = self.dir.join(MANIFEST_CACHE);
        // The bucket has it; a lost local copy is re-read from there.
        if let Err(e) = run_blocking("writing the manifest cache", move || {
            crate::log::index::write_file(&path, &json)
        })
        .await
        {
            warn!(partition = %self.name, error = %e, "the local manifest cache was not written");
        }
        *self.manifest.borrow_mut() = next.clone();
        if self.keys.is_fenced() && !self.older_manifests_gone.get() {
            // Cluster mode: this leader's manifest is the one a successor
            // reads now; its predecessors' go (a deposed one still writing
            // its own is harmless either way).
            match self.delete_older_manifests().await {
                Ok(()) => self.older_manifests_gone.set(true),
                Err(e) => {
                    warn!(partition = %self.name, error = %e, "earlier leaders' manifests stay for now")
                }
            }
        }
        Ok(next)
    }

    async fn delete_older_manifests(&self) -> Result<(), RemoteError> {
        let store = &self.context.store;
        let own = self.keys.manifest();
        for key in store.list(self.keys.dir()).await? {
            if key != own && super::manifest::is_older_manifest(&key, &own) {
                store.delete(&key).await?;
            }
        }
        Ok(())
    }

    /// The log starts at `offset`: remote segments wholly below it leave
    /// the manifest, then their objects go.
    async fn raise_start(self: &Rc<Self>, offset: i64) -> Result<i64, RemoteError> {
        let mut gone = Vec::new();
        let manifest = self
            .change_manifest(|m| {
                m.log_start_offset = m.log_start_offset.max(offset);
                let start = m.log_start_offset;
                gone = m
                    .segments
                    .iter()
                    .filter(|s| s.next_offset <= start)
                    .cloned()
                    .collect();
                m.segments.retain(|s| s.next_offset > start);
            })
            .await?;
        self.delete_objects(&gone).await?;
        if !gone.is_empty() {
            info!(partition = %self.name, segments = gone.len(), log_start = manifest.log_start_offset, "remote segments deleted");
        }
        Ok(manifest.log_start_offset)
    }

    /// Removes every object of `segments` from the bucket.
    async fn delete_objects(&self, segments: &[RemoteSegment]) -> Result<(), RemoteError> {
        for segment in segments {
            for extension in ["log", "index", "timeindex", "snapshot"] {
                self.context
                    .store
                    .delete(&self.keys.segment(segment, extension))
                    .await?;
            }
        }
        Ok(())
    }

    fn after_attempt(&self, outcome: Result<(), RemoteError>, what: &str) {
        match outcome {
            Ok(()) => {
                self.retry_at.set(None);
                self.backoff.set(FIRST_RETRY);
            }
            Err(e) => {
                self.context.stats.error(e.kind);
                let wait = self.backoff.get();
                self.retry_at.set(Some(Instant::now() + wait));
                self.backoff.set((wait * 2).min(MOST_RETRY));
                let due = self
                    .last_warning
                    .get()
                    .is_none_or(|at| at.elapsed() >= WARN_EVERY);
                if due {
                    self.last_warning.set(Some(Instant::now()));
                    warn!(partition = %self.name, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "{what} failed; local segments stay until the upload succeeds");
                }
            }
        }
    }

    async fn offset_index(&self, segment: &RemoteSegment) -> Result<Rc<OffsetIndex>, StorageError> {
        let key = self.keys.segment(segment, "index");
        let reads = &self.context.reads;
        if let Some(index) = reads.offset_index(&key) {
            return Ok(index);
        }
        let bytes = self.get_required(&key).await?;
        let index = OffsetIndex::from_bytes(&bytes, segment.size).unwrap_or_default();
        Ok(reads.keep_offset_index(key, index))
    }

    async fn time_index(&self, segment: &RemoteSegment) -> Result<TimeIndex, StorageError> {
        let bytes = self
            .get_required(&self.keys.segment(segment, "timeindex"))
            .await?;
        Ok(TimeIndex::from_bytes(&bytes).unwrap_or_default())
    }

    async fn get_required(&self, key: &str) -> Result<Bytes, StorageError> {
        match self.context.store.get(key).await {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(self.missing(key)),
            Err(e) => Err(remote_error("remote read", e)),
        }
    }

    fn missing(&self, key: &str) -> StorageError {
        self.context.stats.error("missing");
        error!(partition = %self.name, key, "an object the manifest names is missing from object storage");
        StorageError::Io {
            what: "remote read",
            error: format!("{key} is missing from object storage"),
        }
    }

    /// The batch header at `position` of a remote segment, and its size.
    async fn header_at(
        &self,
        key: &str,
        segment: &RemoteSegment,
        position: u64,
    ) -> Result<BatchHeader, StorageError> {
        let end = (position + crate::log::batch::HEADER_LEN as u64).min(segment.size);
        let head = self.range(key, segment, position, end).await?;
        parse_header(&head).map_err(|e| self.corrupt(key, position, e.message()))
    }

    async fn range(
        &self,
        key: &str,
        segment: &RemoteSegment,
        start: u64,
        end: u64,
    ) -> Result<Bytes, StorageError> {
        self.context
            .reads
            .range(&self.context.store, key, segment.size, start, end)
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    self.missing(key)
                } else {
                    remote_error("remote read", e)
                }
            })
    }

    fn corrupt(&self, key: &str, position: u64, why: &str) -> StorageError {
        self.context.stats.error("corrupt");
        error!(partition = %self.name, key, position, reason = why, "corrupt batch in object storage; not served");
        StorageError::Io {
            what: "remote read",
            error: format!("corrupt batch in {key} at {position}: {why}"),
        }
    }

    /// Whole batches from `offset` of one remote segment, CRC-checked.
    async fn read(
        self: Rc<Self>,
        segment: RemoteSegment,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<Bytes, StorageError> {
        let started = Instant::now();
        let key = self.keys.segment(&segment, "log");
        let index = self.offset_index(&segment).await?;
        let relative = u32::try_from(offset - segment.base_offset).unwrap_or(u32::MAX);
        let mut position = u64::from(index.floor_position(relative));
        let limit = max_bytes.min(REMOTE_READ_MAX_BYTES);
        let mut out = BytesMut::new();
        while position < segment.size {
            let header = self.header_at(&key, &segment, position).await?;
            let size = header.size as u64;
            if header.next_offset() <= offset {
                position += size;
                continue;
            }
            let room = out.is_empty() && at_least_one || out.len() + header.size <= limit;
            if !room {
                break;
            }
            let batch = self.range(&key, &segment, position, position + size).await?;
            validate_stored(&batch).map_err(|e| self.corrupt(&key, position, e.message()))?;
            out.extend_from_slice(&batch);
            position += size;
            if out.len() >= limit {
                break;
            }
        }
        self.context.stats.read(out.len(), started.elapsed());
        Ok(out.freeze())
    }

    /// The first record at or after `timestamp` in one remote segment.
    async fn find_time(
        &self,
        segment: &RemoteSegment,
        timestamp: i64,
        from: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let key = self.keys.segment(segment, "log");
        let times = self.time_index(segment).await?;
        let index = self.offset_index(segment).await?;
        let relative = times.lookup(timestamp).unwrap_or(0);
        let mut position = u64::from(index.floor_position(relative));
        while position < segment.size {
            let header = self.header_at(&key, segment, position).await?;
            if header.max_timestamp >= timestamp && header.next_offset() > from {
                let batch = self
                    .range(&key, segment, position, position + header.size as u64)
                    .await?;
                let found = first_at_or_after(&batch, &header, timestamp)
                    .map_err(|e| self.corrupt(&key, position, e.message()))?;
                if let Some((offset, ts)) = found.filter(|(offset, _)| *offset >= from) {
                    return Ok(Some((offset, ts)));
                }
            }
            position += header.size as u64;
        }
        Ok(None)
    }
}

fn remote_error(what: &'static str, e: RemoteError) -> StorageError {
    StorageError::Io {
        what,
        error: e.to_string(),
    }
}

impl Log for TieredLog {
    fn first_unstable_offset(&self) -> Option<i64> {
        self.local.first_unstable_offset()
    }

    fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.local.end_offset_for_epoch(epoch)
    }

    fn remote_end(&self) -> Option<i64> {
        let manifest = self.remote.manifest.borrow();
        (!manifest.segments.is_empty()).then(|| manifest.end())
    }

    fn aborted_transactions(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        // Local retention forgets what only the bucket holds now; the
        // manifest keeps each uploaded segment's list.
        let mut aborted = self.local.aborted_transactions(from, to);
        aborted.extend(self.remote.manifest.borrow().aborted_between(from, to));
        aborted.sort_unstable();
        aborted.dedup();
        aborted
    }

    fn producers(&self) -> Vec<crate::log::producer_state::ProducerSummary> {
        self.local.producers()
    }

    fn offsets(&self) -> LogOffsets {
        let mut offsets = self.local.offsets();
        if let Some(start) = self.remote.manifest.borrow().start() {
            offsets.log_start = offsets.log_start.min(start);
        }
        offsets
    }

    fn append(
        &mut self,
        batch: &Bytes,
        header: BatchHeader,
        config: &LogConfig,
    ) -> Result<Appending, StorageError> {
        let cap = self.remote.context.local_cap;
        if config.remote_storage && cap > 0 && self.local.size_bytes() >= cap {
            let remote = &self.remote;
            if remote
                .last_warning
                .get()
                .is_none_or(|at| at.elapsed() >= WARN_EVERY)
            {
                remote.last_warning.set(Some(Instant::now()));
                warn!(partition = %remote.name, local_bytes = self.local.size_bytes(), cap,
                    "local segments reached TIERING_LOCAL_CAP_MB with uploads behind; produce refused until they catch up");
            }
            remote.context.stats.error("local_cap");
            return Err(StorageError::Io {
                what: "append",
                error: "the partition's local segments reached TIERING_LOCAL_CAP_MB while uploads to object storage are behind"
                    .into(),
            });
        }
        self.local.append(batch, header, config)
    }

    fn note_topic(&self, entry: &Bytes) {
        let remote = &self.remote;
        if *remote.catalog_entry.borrow() == *entry {
            return;
        }
        *remote.catalog_entry.borrow_mut() = entry.clone();
        if !remote.catalog_written.replace(false) {
            // Not in the bucket yet: the first upload writes it.
            return;
        }
        let remote = remote.clone();
        glommio::spawn_local(async move {
            let outcome = remote.write_catalog_entry().await;
            remote.after_attempt(outcome, "rewriting the topic's catalog entry");
        })
        .detach();
    }

    fn reads_remote(&self, offset: i64) -> bool {
        self.remote_segment_for(offset).is_some()
    }

    fn read(&self, offset: i64, max_bytes: usize, at_least_one: bool) -> LogFuture<Bytes> {
        if let Some(segment) = self.remote_segment_for(offset) {
            // A task of its own: a fetch that stops waiting (its
            // max_wait_ms) leaves it to fill the read cache.
            let read = self.remote.clone().read(segment, offset, max_bytes, at_least_one);
            return glommio::spawn_local(read).boxed_local();
        }
        self.local.read(offset, max_bytes, at_least_one)
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> LogFuture<Option<(i64, i64)>> {
        let local_start = self.local.offsets().log_start;
        let manifest = self.remote.manifest.borrow().clone();
        let from = manifest.log_start_offset;
        let candidates: Vec<RemoteSegment> = manifest
            .segments
            .into_iter()
            .filter(|s| s.base_offset < local_start && s.max_timestamp >= timestamp)
            .collect();
        let local = self.local.offset_for_timestamp(timestamp);
        if candidates.is_empty() {
            return local;
        }
        let remote = self.remote.clone();
        async move {
            for segment in &candidates {
                if let Some(found) = remote.find_time(segment, timestamp, from).await? {
                    return Ok(Some(found));
                }
            }
            local.await
        }
        .boxed_local()
    }

    fn max_timestamp(&self) -> LogFuture<Option<(i64, i64)>> {
        self.local.max_timestamp()
    }

    fn delete_records(&mut self, offset: i64, limit: i64) -> Result<LogFuture<i64>, StorageError> {
        let local = self.local.delete_records(offset, limit)?;
        let target = if offset == -1 { limit } else { offset };
        let remote = self.remote.clone();
        let anything_remote = remote
            .manifest
            .borrow()
            .start()
            .is_some_and(|start| target > start);
        Ok(async move {
            let local_start = local.await?;
            if !anything_remote {
                return Ok(local_start);
            }
            remote
                .raise_start(target)
                .await
                .map_err(|e| remote_error("delete records in object storage", e))?;
            let remote_start = remote.manifest.borrow().start();
            Ok(remote_start.map_or(local_start, |start| start.min(local_start)))
        }
        .boxed_local())
    }

    fn apply_retention(&mut self, config: &LogConfig, keep_from: i64) -> Result<usize, StorageError> {
        let tiering = config.remote_storage;
        if tiering {
            self.upload_closed_segments();
        }
        if self.remote.manifest.borrow().segments.is_empty() && !tiering {
            return self.local.apply_retention(config, keep_from);
        }
        // Locally, only what the bucket already holds may go, and by the
        // local horizon.
        let remote_end = self.remote.manifest.borrow().end();
        let local_config = LogConfig {
            retention_ms: config.local_retention_ms,
            retention_bytes: config.local_retention_bytes,
            ..config.clone()
        };
        let deleted = self
            .local
            .apply_retention(&local_config, keep_from.min(remote_end))?;
        self.expire_remote(config);
        Ok(deleted)
    }

    fn size_bytes(&self) -> u64 {
        self.local.size_bytes()
    }

    fn close(self: Box<Self>) -> LogFuture<()> {
        Box::new(self.local).close()
    }

    fn delete(self: Box<Self>) -> LogFuture<()> {
        let remote = self.remote.clone();
        let local = Box::new(self.local).delete();
        async move {
            local.await?;
            let segments = remote.manifest.borrow().segments.clone();
            let store = &remote.context.store;
            let outcome: Result<(), RemoteError> = async {
                remote.delete_objects(&segments).await?;
                store.delete(&remote.keys.manifest()).await?;
                // The topic's entry goes once, with its first partition.
                if remote.keys.partition() == 0 {
                    store.delete(&remote.catalog_key).await?;
                }
                Ok(())
            }
            .await;
            if let Err(e) = outcome {
                warn!(partition = %remote.name, error = %e, "deleting the partition's objects failed; they stay in the bucket");
            }
            Ok(())
        }
        .boxed_local()
    }
}
