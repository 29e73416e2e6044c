//! One shard's partitions: those the router says this shard owns, opened
//! at start (recovery) or on first use, and the operations on them.

use super::cleaning::{self, CleanReport, CleanerSettings};
use super::directory;
use super::ops::{Appended, PartitionOp, ReadAnswer, ReadSpec};
use super::{Partition, PartitionState, Waiter};
use crate::log::batch::BatchHeader;
use crate::log::{PartitionLog, RecoveryReport};
use crate::remote::{load_cached_manifest, Manifest, TieredLog};
use crate::routing::{PartitionRouter, Route};
use crate::storage::{run_blocking, GroupCommit, LocalLog, LocalLogOptions, Log, StorageError};
use crate::topics::{CatalogStore, TopicEntry, TopicPartition};
use bytes::Bytes;
use futures::channel::oneshot;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

/// A topic's partitions on a shard: end offsets summed, bytes, records
/// above the last stable offset summed, and (compacted topics) cleanable
/// bytes and how many of them are not yet cleaned.
pub(crate) type TopicLogStats = (i64, u64, i64, u64, u64);

pub(crate) struct ShardPartitions {
    shard: usize,
    root: PathBuf,
    catalog: Arc<CatalogStore>,
    router: Arc<PartitionRouter>,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    /// Partitions being opened, with the line of callers waiting for them.
    opening: RefCell<HashMap<TopicPartition, VecDeque<oneshot::Sender<()>>>>,
    group_commit: Rc<GroupCommit>,
    log_options: LocalLogOptions,
    /// Told each deleted topic's name once its partitions here are gone
    /// (the shard's metrics forget its series).
    on_topic_dropped: Box<dyn Fn(&str)>,
    /// Cluster mode: the shard's WAL, which accepted batches go to and
    /// newly led partitions are rebuilt from.
    wal: std::cell::OnceCell<Rc<crate::cluster::ShardWal>>,
}

fn log_recovery(tp: &TopicPartition, log: &PartitionLog, report: &RecoveryReport) {
    if let Some((end, bytes, why)) = &report.truncated {
        warn!(partition = %tp, end_offset = end, bytes_cut = bytes, reason = %why, "recovered partition: truncated a torn or corrupt tail");
    } else if !report.clean && log.log_end_offset() > 0 {
        info!(partition = %tp, end_offset = log.log_end_offset(), rescanned = report.rescanned_segments, "recovered partition after an unclean shutdown");
    }
}

/// A partition's log as opened, and the manifest of its remote tier as
/// last cached beside it.
type Opened = (PartitionLog, RecoveryReport, Manifest);

/// Blocking: claims the directory for `topic_id` and opens its log.
/// Opens (recovering as needed) a partition's log as its leader at
/// `epoch`.
fn open_dir(tp: &TopicPartition, dir: &Path, topic_id: Uuid, epoch: i32) -> std::io::Result<Opened> {
    if directory::claim(dir, topic_id)? {
        warn!(partition = %tp, "removed a directory left by an earlier topic of the same name");
    }
    let (mut log, report) = PartitionLog::open(dir)?;
    log.begin_leader_epoch(epoch)?;
    Ok((log, report, load_cached_manifest(dir)))
}

impl ShardPartitions {
    /// Opens (and recovers) every partition in the catalog this shard
    /// owns. Runs at shard start, before the shard serves, so it may block.
    pub(crate) fn open(
        shard: usize,
        root: PathBuf,
        catalog: Arc<CatalogStore>,
        router: Arc<PartitionRouter>,
        group_commit: Rc<GroupCommit>,
        on_topic_dropped: Box<dyn Fn(&str)>,
        log_options: LocalLogOptions,
    ) -> Result<ShardPartitions, String> {
        let partitions = ShardPartitions {
            shard,
            root,
            catalog,
            router,
            partitions: RefCell::default(),
            opening: RefCell::default(),
            group_commit,
            log_options,
            on_topic_dropped,
            wal: std::cell::OnceCell::new(),
        };
        let snapshot = partitions.catalog.snapshot();
        for topic in snapshot.topics() {
            for p in 0..topic.partitions {
                let tp = TopicPartition::new(&topic.name, p);
                let Some(epoch) = partitions.owned_epoch(&tp) else {
                    continue;
                };
                let dir = partitions.root.join(tp.dir_name());
                let (log, report, manifest) = open_dir(&tp, &dir, topic.id, epoch)
                    .map_err(|e| format!("partition {tp} in {}: {e}", dir.display()))?;
                log_recovery(&tp, &log, &report);
                partitions.insert(tp, topic, epoch, log, manifest);
            }
        }
        Ok(partitions)
    }

    /// Cluster mode: folds the WAL pointers of partitions led here into
    /// one object each once they are many (see `ShardWal::fold`), every
    /// `interval` until the shard drains.
    pub(crate) async fn fold_wal_periodically(
        self: Rc<Self>,
        drain: chronik_shard::Signal,
        interval: std::time::Duration,
    ) {
        loop {
            if !crate::partition::next_tick(interval, &drain).await {
                return;
            }
            let Some(wal) = self.wal.get().cloned() else {
                return;
            };
            // First what retention or DeleteRecords took off the start, or
            // tiering uploaded as segments: a fold never reaches below it.
            let led: Vec<(TopicPartition, Rc<Partition>)> = self
                .partitions
                .borrow()
                .iter()
                .map(|(tp, p)| (tp.clone(), p.clone()))
                .collect();
            for (tp, partition) in led {
                let start = partition.wal_floor();
                match wal
                    .trim(&tp, partition.topic_id, partition.leader_epoch(), start)
                    .await
                {
                    Ok(true) => {
                        debug!(partition = %tp, start, "dropped the WAL below the log start or the remote end")
                    }
                    Ok(false) => {}
                    Err(e) => debug!(partition = %tp, start, error = %e, "cannot trim the WAL now"),
                }
            }
            for (tp, base, end) in wal.folds_due() {
                let partition = self.partitions.borrow().get(&tp).cloned();
                let Some(partition) = partition else {
                    continue;
                };
                let folded = match read_range(&partition, base, end).await {
                    Ok(bytes) => {
                        wal.fold(
                            &tp,
                            partition.topic_id,
                            partition.leader_epoch(),
                            (base, end, crate::cluster::Fold::Since),
                            bytes,
                        )
                        .await
                    }
                    Err(e) => Err(e.to_string()),
                };
                match folded {
                    Ok(()) => debug!(partition = %tp, base, end, "folded the WAL"),
                    Err(e) => {
                        warn!(partition = %tp, base, end, error = %e, "cannot fold the WAL; trying again later")
                    }
                }
            }
        }
    }

    /// Cluster mode: opens each partition as soon as this broker begins
    /// to lead it (rebuilt from the WAL), every `interval`, instead of at
    /// its first request: a failover then costs clients the lease's TTL,
    /// not that plus a rebuild.
    pub(crate) async fn take_up_leadership_periodically(
        self: Rc<Self>,
        drain: chronik_shard::Signal,
        interval: std::time::Duration,
    ) {
        loop {
            if !crate::partition::next_tick(interval, &drain).await {
                return;
            }
            let catalog = self.catalog.snapshot();
            let newly_led: Vec<TopicPartition> = catalog
                .topics()
                .flat_map(|t| (0..t.partitions).map(move |p| TopicPartition::new(&t.name, p)))
                .filter(|tp| {
                    self.owned_epoch(tp).is_some_and(|epoch| {
                        self.partitions
                            .borrow()
                            .get(tp)
                            .is_none_or(|open| open.leader_epoch() != epoch)
                    })
                })
                .collect();
            let opening = newly_led.iter().map(|tp| self.partition(tp));
            for (tp, opened) in newly_led.iter().zip(futures::future::join_all(opening).await) {
                if let Err(e) = opened {
                    debug!(partition = %tp, error = %e, "newly led partition not opened yet");
                }
            }
        }
    }

    /// Cluster mode: appends go through `wal` too.
    pub(crate) fn set_wal(&self, wal: Rc<crate::cluster::ShardWal>) {
        let _ = self.wal.set(wal);
    }

    /// This shard's leader epoch for `tp`, if it owns it.
    fn owned_epoch(&self, tp: &TopicPartition) -> Option<i32> {
        match self.router.route(tp) {
            Route::Local { shard, leader_epoch } if shard == self.shard => Some(leader_epoch),
            _ => None,
        }
    }

    fn insert(
        &self,
        tp: TopicPartition,
        topic: &TopicEntry,
        epoch: i32,
        log: PartitionLog,
        manifest: Manifest,
    ) -> Rc<Partition> {
        let state = Rc::new(PartitionState::default());
        let on_stored = {
            let state = state.clone();
            Rc::new(move |offset| state.stored(offset))
        };
        let name: Rc<str> = tp.to_string().into();
        let local = LocalLog::with_log(log, &name, on_stored, &self.log_options);
        // With an object store every partition can tier: its topic's
        // remote.storage.enable, read at each retention pass, decides.
        let log: Box<dyn Log> = match &self.log_options.tiering {
            Some(tiering) => Box::new(TieredLog::new(
                local,
                name,
                tiering.clone(),
                topic.id,
                tp.partition,
                epoch,
                catalog_entry(topic),
                manifest,
            )),
            None => Box::new(local),
        };
        let partition = Rc::new(Partition::new(topic.id, epoch, log, state));
        self.partitions.borrow_mut().insert(tp, partition.clone());
        partition
    }

    pub(crate) fn fsync_counter(&self) -> Arc<AtomicU64> {
        self.group_commit.syncs.clone()
    }

    /// The partition and its topic, opening the partition on first use.
    ///
    /// Callers get the partition in the order they asked for it, opening
    /// or not: appends reserve their offsets right after this returns, so
    /// a request that arrives while the partition opens must not overtake
    /// the ones already waiting. Waiters are let through one at a time,
    /// each waking the next only once it has its partition (and, being on
    /// one thread, has reserved before the next runs).
    async fn partition(&self, tp: &TopicPartition) -> Result<(Rc<Partition>, Arc<TopicEntry>), StorageError> {
        loop {
            let topic = self
                .catalog
                .snapshot()
                .get(&tp.topic)
                .filter(|t| tp.partition >= 0 && tp.partition < t.partitions)
                .cloned()
                .ok_or(StorageError::UnknownPartition)?;
            let epoch = self.owned_epoch(tp).ok_or(StorageError::NotLeader)?;
            let queued = match self.opening.borrow_mut().get_mut(tp) {
                Some(line) => {
                    let (tx, rx) = oneshot::channel();
                    line.push_back(tx);
                    Some(rx)
                }
                None => None,
            };
            if let Some(turn) = queued {
                let _ = turn.await;
                let open = self.partitions.borrow().get(tp).cloned();
                self.pass_turn(tp);
                match open {
                    Some(p) if p.topic_id == topic.id && p.leader_epoch() == epoch => return Ok((p, topic)),
                    // The open failed (or the topic or leadership changed):
                    // try again.
                    _ => continue,
                }
            }
            let open = self.partitions.borrow().get(tp).cloned();
            match open {
                Some(p) if p.topic_id == topic.id && p.leader_epoch() == epoch => return Ok((p, topic)),
                // The topic was deleted and made again, or (cluster mode)
                // this broker leads it again after another did: the old
                // log goes, and is rebuilt from the WAL below.
                Some(_) => {
                    self.remove(tp).await;
                    continue;
                }
                None => {}
            }
            self.opening.borrow_mut().insert(tp.clone(), Default::default());
            let dir = self.root.join(tp.dir_name());
            if let Some(wal) = self.wal.get() {
                if let Err(e) = wal.restore(tp, topic.id, &dir, topic.log_config()).await {
                    warn!(partition = %tp, error = %e, "cannot take the partition over from the WAL");
                    self.pass_turn(tp);
                    return Err(e);
                }
            }
            let (opening_tp, id) = (tp.clone(), topic.id);
            let opened =
                run_blocking("opening the log", move || open_dir(&opening_tp, &dir, id, epoch)).await;
            let result = opened.map(|(log, report, manifest)| {
                log_recovery(tp, &log, &report);
                (self.insert(tp.clone(), &topic, epoch, log, manifest), topic)
            });
            self.pass_turn(tp);
            return result;
        }
    }

    /// Wakes the next caller waiting for `tp` to open, or ends the line.
    fn pass_turn(&self, tp: &TopicPartition) {
        let mut opening = self.opening.borrow_mut();
        if let Some(line) = opening.get_mut(tp) {
            while let Some(next) = line.pop_front() {
                // A waiter that gave up (its request ended) passes on.
                if next.send(()).is_ok() {
                    return;
                }
            }
            opening.remove(tp);
        }
    }

    /// Runs one operation sent by another shard and answers it.
    pub(crate) async fn serve(self: Rc<Self>, op: PartitionOp) {
        match op {
            PartitionOp::Append {
                tp,
                batch,
                header,
                acks,
                reply,
            } => {
                let _ = reply.send(self.append(&tp, batch, header, acks).await);
            }
            PartitionOp::Read { parts, reply } => {
                let _ = reply.send(self.read(parts).await);
            }
            PartitionOp::Watch { parts, reply } => {
                let _ = reply.send(self.watch(&parts).await);
            }
            PartitionOp::ListOffset {
                tp,
                timestamp,
                read_committed,
                current_leader_epoch,
                reply,
            } => {
                let _ = reply.send(
                    self.list_offset(&tp, timestamp, read_committed, current_leader_epoch)
                        .await,
                );
            }
            PartitionOp::EpochEnd {
                tp,
                epoch,
                current_leader_epoch,
                reply,
            } => {
                let _ = reply.send(self.epoch_end(&tp, epoch, current_leader_epoch).await);
            }
            PartitionOp::DeleteRecords { tp, offset, reply } => {
                let _ = reply.send(self.delete_records(&tp, offset).await);
            }
            PartitionOp::DropTopic {
                name,
                topic_id,
                reply,
            } => {
                let _ = reply.send(self.drop_topic(&name, topic_id).await);
            }
        }
    }

    pub(crate) async fn append(
        &self,
        tp: &TopicPartition,
        batch: Bytes,
        header: BatchHeader,
        acks: i16,
    ) -> Result<Appended, StorageError> {
        let (partition, topic) = self.partition(tp).await?;
        let config = topic.log_config();
        let wal = self.wal.get().map(|wal| (&**wal, tp));
        partition
            .append(batch, header, &config, acks, &self.group_commit, wal)
            .await
    }

    pub(crate) async fn read(&self, parts: Vec<ReadSpec>) -> Vec<Result<ReadAnswer, StorageError>> {
        let reads = parts.into_iter().map(|spec| async move {
            let (partition, _) = self.partition(&spec.tp).await?;
            partition.check_epoch(spec.current_leader_epoch)?;
            partition.read(&spec).await
        });
        futures::future::join_all(reads).await
    }

    /// Resolves when any of `parts` gets data past the given offset (at
    /// once if one already has, or if one cannot be watched). Dropping the
    /// receiver cancels the watch; stale waiters are pruned on the next
    /// registration or wake.
    pub(crate) async fn watch(&self, parts: &[(TopicPartition, i64)]) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let waiter: Waiter = Rc::new(RefCell::new(Some(tx)));
        for (tp, offset) in parts {
            let left = match self.partition(tp).await {
                Ok((partition, _)) => partition.watch(*offset, &waiter),
                Err(_) => false,
            };
            if !left {
                if let Some(tx) = waiter.borrow_mut().take() {
                    let _ = tx.send(());
                }
                break;
            }
        }
        rx
    }

    /// DescribeProducers: the partition's producers, as its log holds them.
    pub(crate) async fn producers(
        &self,
        tp: &TopicPartition,
    ) -> Result<Vec<crate::log::producer_state::ProducerSummary>, StorageError> {
        let (partition, _) = self.partition(tp).await?;
        Ok(partition.producers())
    }

    pub(crate) async fn list_offset(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
        read_committed: bool,
        current_leader_epoch: i32,
    ) -> Result<(i64, i64), StorageError> {
        let (partition, _) = self.partition(tp).await?;
        partition.check_epoch(current_leader_epoch)?;
        partition.list_offset(timestamp, read_committed).await
    }

    pub(crate) async fn epoch_end(
        &self,
        tp: &TopicPartition,
        epoch: i32,
        current_leader_epoch: i32,
    ) -> Result<(i32, i64), StorageError> {
        let (partition, _) = self.partition(tp).await?;
        partition.check_epoch(current_leader_epoch)?;
        Ok(partition.epoch_end(epoch))
    }

    pub(crate) async fn delete_records(&self, tp: &TopicPartition, offset: i64) -> Result<i64, StorageError> {
        let (partition, _) = self.partition(tp).await?;
        partition.delete_records(offset).await
    }

    /// Closes and deletes this shard's partitions of a deleted topic, and
    /// any directory of it on disk. A failure is reported; the periodic
    /// sweep retries, and a directory that survives is never reused
    /// (`directory::claim` checks the topic id).
    pub(crate) async fn drop_topic(&self, name: &str, topic_id: Uuid) -> Result<(), StorageError> {
        let owned: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(tp, p)| &*tp.topic == name && p.topic_id == topic_id)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in owned {
            self.remove(&tp).await;
        }
        (self.on_topic_dropped)(name);
        self.sweep(Some(name)).await
    }

    /// Removes directories whose topic is gone (or was made again with a
    /// new id) among those this shard owns: the retry of failed deletes.
    /// `only`: just this topic's.
    pub(crate) async fn sweep(&self, only: Option<&str>) -> Result<(), StorageError> {
        let root = self.root.clone();
        let dirs = run_blocking("listing partition directories", move || {
            directory::partition_dirs(&root)
        })
        .await?;
        let catalog = self.catalog.snapshot();
        let mut stale = Vec::new();
        for (tp, path) in dirs {
            if only.is_some_and(|name| name != &*tp.topic) || self.owned_epoch(&tp).is_none() {
                continue;
            }
            if self.partitions.borrow().contains_key(&tp) {
                continue;
            }
            let current = catalog
                .get(&tp.topic)
                .filter(|t| tp.partition < t.partitions)
                .map(|t| t.id);
            stale.push((tp, path, current));
        }
        if stale.is_empty() {
            return Ok(());
        }
        let removed = run_blocking("removing deleted partitions", move || {
            let mut failures = Vec::new();
            for (tp, path, current) in stale {
                let id = directory::topic_id_of(&path).ok().flatten();
                // Kept: the live topic's own directory (or one from before
                // ids were recorded, which the live topic adopts).
                if current.is_some() && (id.is_none() || id == current) {
                    continue;
                }
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    failures.push(format!("{tp}: {e}"));
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(std::io::Error::other(failures.join("; ")))
            }
        })
        .await;
        if let Err(e) = &removed {
            error!(shard = self.shard, error = %e, "removing a deleted topic's partitions failed; will retry");
        }
        removed
    }

    async fn remove(&self, tp: &TopicPartition) {
        let Some(partition) = self.partitions.borrow_mut().remove(tp) else {
            return;
        };
        let Some(log) = Partition::into_log(partition) else {
            // An operation still holds it; its log is dropped with it and
            // the directory goes in the next sweep.
            return;
        };
        if let Err(e) = log.delete().await {
            error!(partition = %tp, error = %e, "deleting the partition failed; will retry");
        }
    }

    /// Applies retention to every owned partition.
    pub(crate) fn apply_retention(&self) {
        let catalog = self.catalog.snapshot();
        let mut entries: HashMap<&str, Bytes> = HashMap::new();
        for (tp, partition) in self.partitions.borrow().iter() {
            let Some(topic) = catalog.get(&tp.topic) else {
                continue;
            };
            if self.log_options.tiering.is_some() {
                let entry = entries.entry(&*tp.topic).or_insert_with(|| catalog_entry(topic));
                partition.log.borrow().note_topic(entry);
            }
            // Only what every reader may already see goes.
            let keep_from = partition.high_watermark();
            let applied = partition
                .log
                .borrow_mut()
                .apply_retention(&topic.log_config(), keep_from);
            match applied {
                Ok(0) => {}
                Ok(deleted) => {
                    info!(partition = %tp, deleted, log_start_offset = partition.log_start_offset(), "retention deleted segments")
                }
                Err(e) => error!(partition = %tp, error = %e, "retention failed"),
            }
        }
    }

    /// The open transactions of the partitions open on this shard: one
    /// entry per (partition, producer) with a transaction open there.
    pub(crate) fn open_transactions(
        &self,
    ) -> Vec<(TopicPartition, crate::log::producer_state::ProducerSummary)> {
        self.partitions
            .borrow()
            .iter()
            .filter(|(_, p)| p.has_open_transaction())
            .flat_map(|(tp, p)| {
                p.producers()
                    .into_iter()
                    .filter(|s| s.txn_start_offset >= 0)
                    .map(move |s| (tp.clone(), s))
            })
            .collect()
    }

    /// Per topic: end offsets summed, bytes, records above the last
    /// stable offset (open transactions), and (compacted topics) bytes the
    /// cleaner may clean and how many of them it has not; per partition:
    /// its end.
    pub(crate) fn log_stats(&self) -> (HashMap<String, TopicLogStats>, HashMap<TopicPartition, i64>) {
        let catalog = self.catalog.snapshot();
        let now = crate::log::partition_log::now_ms();
        let mut per_topic: HashMap<String, TopicLogStats> = HashMap::new();
        let mut ends = HashMap::new();
        for (tp, partition) in self.partitions.borrow().iter() {
            let end = partition.high_watermark();
            let entry = per_topic.entry(tp.topic.to_string()).or_default();
            let log = partition.log.borrow();
            entry.0 += end;
            entry.1 += log.size_bytes();
            entry.2 += end - partition.last_stable_offset();
            if let Some(config) = catalog
                .get(&tp.topic)
                .map(|t| t.log_config())
                .filter(|c| c.compact)
            {
                let (cleanable, dirty) = log.dirty_bytes(&config, now);
                entry.3 += cleanable;
                entry.4 += dirty;
            }
            ends.insert(tp.clone(), end);
        }
        (per_topic, ends)
    }

    /// Cleans the compacted partition (open on this shard) that most needs
    /// it, if any is due: on a thread of its own, so neither the shard nor
    /// its blocking pool waits for it; installed on the shard.
    pub(crate) async fn clean_dirtiest(&self, settings: &CleanerSettings) -> Option<CleanReport> {
        let catalog = self.catalog.snapshot();
        // Partitions open when first used; a compacted one nobody has
        // touched since the start must still be cleaned.
        for topic in catalog.topics().filter(|t| t.log_config().compact) {
            for index in 0..topic.partitions {
                let tp = TopicPartition::new(&topic.name, index);
                if self.owned_epoch(&tp).is_some() && !self.partitions.borrow().contains_key(&tp) {
                    if let Err(e) = self.partition(&tp).await {
                        warn!(partition = %tp, error = %e, "cannot open a compacted partition to clean it");
                    }
                }
            }
        }
        let now = crate::log::partition_log::now_ms();
        let mut best: Option<(TopicPartition, Rc<Partition>, crate::log::CleanCandidate)> = None;
        for (tp, partition) in self.partitions.borrow().iter() {
            let Some(config) = catalog
                .get(&tp.topic)
                .map(|t| t.log_config())
                .filter(|c| c.compact)
            else {
                continue;
            };
            let Some(candidate) = partition.log.borrow().clean_candidate(
                &config,
                now,
                settings.map_budget_bytes,
                settings.throttle(),
            ) else {
                continue;
            };
            let due = candidate.is_due(&config);
            let better = best.as_ref().is_none_or(|(_, _, b)| {
                (candidate.overdue, candidate.dirty_ratio) > (b.overdue, b.dirty_ratio)
            });
            if due && better {
                best = Some((tp.clone(), partition.clone(), candidate));
            }
        }
        let (tp, partition, candidate) = best?;
        let started = std::time::Instant::now();
        let result = cleaning::rewrite(self.shard, &tp.to_string(), candidate.job).await?;
        // The partition may have been dropped (topic deleted) meanwhile.
        if !self
            .partitions
            .borrow()
            .get(&tp)
            .is_some_and(|p| Rc::ptr_eq(p, &partition))
        {
            return None;
        }
        let figures = (
            result.bytes_read,
            result.bytes_written,
            result.keys,
            candidate.dirty_ratio,
        );
        let installed = partition.log.borrow_mut().install_cleaned(result).transpose()?;
        cleaning::finish(tp.to_string(), installed, figures, started).await
    }

    /// Graceful close of every owned partition (clean-shutdown markers).
    pub(crate) async fn close_all(&self) {
        let all: Vec<(TopicPartition, Rc<Partition>)> = self.partitions.borrow_mut().drain().collect();
        let closes = all.into_iter().map(|(tp, partition)| async move {
            let Some(log) = Partition::into_log(partition) else {
                warn!(partition = %tp, "still in use at shutdown; the next start recovers it");
                return;
            };
            if let Err(e) = log.close().await {
                error!(partition = %tp, error = %e, "closing the log failed");
            }
        });
        futures::future::join_all(closes).await;
    }
}

/// A topic's catalog entry as a tiered log keeps it in the bucket.
fn catalog_entry(topic: &TopicEntry) -> Bytes {
    serde_json::to_vec(topic).unwrap_or_default().into()
}

/// The stored batches of `[base, end)` (batch boundaries) of a partition.
async fn read_range(partition: &Partition, base: i64, end: i64) -> Result<Bytes, StorageError> {
    const CHUNK: usize = 4 << 20;
    let mut out = bytes::BytesMut::new();
    let mut offset = base;
    while offset < end {
        let read = partition.log.borrow().read(offset, CHUNK, true);
        let chunk = read.await?;
        let mut rest = &chunk[..];
        let before = offset;
        while let Some(size) = crate::log::batch::batch_size(rest).filter(|s| *s <= rest.len()) {
            let header = crate::log::batch::parse_header(&rest[..size])
                .map_err(|e| StorageError::Invalid(e.message().to_string()))?;
            if header.base_offset >= end {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            offset = header.next_offset();
            rest = &rest[size..];
        }
        if offset == before {
            return Err(StorageError::Invalid(format!("no batch at offset {offset}")));
        }
    }
    Ok(out.freeze())
}
