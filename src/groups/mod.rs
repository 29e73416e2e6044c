//! Consumer group coordination (classic protocol) and committed offsets.
//!
//! Groups are spread over 50 offsets partitions, as Kafka spreads them over
//! `__consumer_offsets`: partition = crc32c(group id) % 50. The shard the
//! router says owns that partition owns the group: its state machine, its
//! committed offsets and their file. Requests reach it by message passing,
//! like partition requests.

pub(crate) mod configs;
mod group;
mod offsets_log;

pub use group::{GroupState, JoinRequest, JoinResult, Reply, SyncResult};
pub use offsets_log::{offsets_log_config, Committed};

use crate::routing::{PartitionRouter, OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::storage::GroupCommit;
use crate::topics::TopicPartition;
use bytes::Bytes;
use group::Group;
use kafka_protocol::ResponseError;
use offsets_log::OffsetsLog;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub use crate::routing::offsets_partition;
const OFFSETS_DIR: &str = OFFSETS_TOPIC;

/// Topics with partition numbers, as offset requests name them.
pub type TopicPartitions = Vec<(String, Vec<i32>)>;
/// Committed offsets per topic and partition (`None`: nothing committed).
pub type FetchedOffsets = Vec<(String, Vec<(i32, Option<Committed>)>)>;
/// An error code per topic and partition.
pub type PartitionCodes = Vec<(String, Vec<(i32, i16)>)>;

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// One shard's groups and their offsets.
pub(crate) struct GroupCoordinator {
    groups: RefCell<HashMap<String, Group>>,
    /// The offsets partitions this shard owns that hold anything (one is
    /// opened at its first commit: each open one keeps a file open).
    logs: RefCell<HashMap<u32, OffsetsLog>>,
    /// Every offsets partition this shard owns.
    owned: Vec<u32>,
    dir: std::path::PathBuf,
    segment_bytes: u64,
    initial_delay: Duration,
    offsets_retention: Duration,
    group_commit: Rc<GroupCommit>,
    router: Arc<PartitionRouter>,
    /// Cluster mode: commits go to the WAL (and are acknowledged once it
    /// commits them), and an offsets partition newly led here is rebuilt
    /// from it before its groups are served.
    wal: std::cell::OnceCell<Rc<crate::cluster::ShardWal>>,
}

/// The WAL's topic id for the offsets partitions, which have no catalog
/// entry.
const OFFSETS_TOPIC_ID: uuid::Uuid = uuid::Uuid::nil();
/// An offsets partition's log up to this size is folded whole (read on the
/// shard: small by compaction).
const WHOLE_FOLD_BYTES: u64 = 8 << 20;

impl GroupCoordinator {
    /// Loads the offsets partitions this shard owns; every group with
    /// committed offsets starts out Empty.
    pub(crate) fn open(
        shard: usize,
        root: &Path,
        initial_delay: Duration,
        offsets_retention: Duration,
        router: Arc<PartitionRouter>,
        group_commit: Rc<GroupCommit>,
        segment_bytes: u64,
    ) -> io::Result<GroupCoordinator> {
        let dir = root.join(OFFSETS_DIR);
        let now = Instant::now();
        let mut logs = HashMap::new();
        let mut groups = HashMap::new();
        let mut owned = Vec::new();
        for partition in 0..OFFSETS_PARTITIONS {
            let tp = TopicPartition::new(OFFSETS_DIR, partition as i32);
            if router.shard_of(&tp) != shard {
                continue;
            }
            owned.push(partition);
            if !OffsetsLog::exists(&dir, partition) {
                continue;
            }
            let log = OffsetsLog::open(&dir, partition, offsets_log::offsets_log_config(segment_bytes))?;
            for group_id in log.groups.keys() {
                groups.insert(group_id.clone(), Group::new(group_id, initial_delay, now));
            }
            logs.insert(partition, log);
        }
        if !groups.is_empty() {
            info!(shard, groups = groups.len(), "loaded committed offsets");
        }
        Ok(GroupCoordinator {
            groups: RefCell::new(groups),
            logs: RefCell::new(logs),
            owned,
            dir,
            segment_bytes,
            initial_delay,
            offsets_retention,
            group_commit,
            router,
            wal: std::cell::OnceCell::new(),
        })
    }

    /// Cluster mode: see the `wal` field.
    pub(crate) fn set_wal(&self, wal: Rc<crate::cluster::ShardWal>) {
        let _ = self.wal.set(wal);
    }

    /// Cluster mode: loads the groups of every offsets partition this
    /// shard holds that this broker has begun to lead (rebuilt from the
    /// WAL: the committed offsets another coordinator acknowledged), and
    /// forgets those it no longer leads, every `interval` until the shard
    /// drains.
    pub(crate) async fn take_up_leadership_periodically(
        self: Rc<Self>,
        drain: chronik_shard::Signal,
        interval: Duration,
    ) {
        loop {
            if !crate::partition::next_tick(interval, &drain).await {
                return;
            }
            for &partition in &self.owned {
                let tp = TopicPartition::new(OFFSETS_DIR, partition as i32);
                let loaded = self.router.offsets_loaded_at(partition);
                match self.router.route(&tp) {
                    crate::routing::Route::Local { leader_epoch, .. } if leader_epoch != loaded => {
                        match self.reload(partition).await {
                            Ok(groups) => {
                                info!(
                                    partition,
                                    epoch = leader_epoch,
                                    groups,
                                    "coordinating the partition's groups"
                                );
                                self.router.set_offsets_loaded(partition, leader_epoch);
                            }
                            Err(e) => warn!(partition, error = %e, "cannot load the partition's groups yet"),
                        }
                    }
                    crate::routing::Route::Local { .. } => {}
                    _ if loaded != -1 => self.router.set_offsets_loaded(partition, -1),
                    _ => {}
                }
            }
        }
    }

    /// Cluster mode: once an offsets partition led here has many WAL
    /// pointers since its last fold, replaces them all with one object of
    /// its log as it stands (compaction keeps that near one record per
    /// committed partition), so etcd and the next coordinator's rebuild
    /// grow with the groups' state, not with how often they commit. A log
    /// too large for that folds only what came since the last fold.
    pub(crate) async fn fold_wal_periodically(
        self: Rc<Self>,
        drain: chronik_shard::Signal,
        interval: Duration,
    ) {
        loop {
            if !crate::partition::next_tick(interval, &drain).await {
                return;
            }
            let Some(wal) = self.wal.get().cloned() else {
                return;
            };
            for (tp, base, end) in wal.folds_due() {
                let Ok(partition) = u32::try_from(tp.partition) else {
                    continue;
                };
                // Only a partition whose groups are loaded at the epoch it
                // is led at: its log here is the one the WAL describes.
                let epoch = self.router.offsets_loaded_at(partition);
                let loaded = matches!(
                    self.router.offsets_route(partition),
                    crate::routing::Route::Local { .. }
                );
                if &*tp.topic != OFFSETS_DIR || !self.owned.contains(&partition) || !loaded {
                    continue;
                }
                let read = match self.logs.borrow().get(&partition) {
                    None => continue,
                    Some(log) if log.size_bytes() <= WHOLE_FOLD_BYTES => log
                        .stored_range(0, end, WHOLE_FOLD_BYTES as usize)
                        .map(|r| r.map(|(from, bytes)| (from, crate::cluster::Fold::Whole, bytes))),
                    Some(log) => log
                        .stored_range(base, end, usize::MAX)
                        .map(|r| r.map(|(_, bytes)| (base, crate::cluster::Fold::Since, bytes))),
                };
                let (from, fold, bytes) = match read {
                    Ok(Some(read)) => read,
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(partition, error = %e, "cannot read the offsets log to fold its WAL");
                        continue;
                    }
                };
                let folded = wal
                    .fold(
                        &tp,
                        OFFSETS_TOPIC_ID,
                        epoch,
                        (from, end, fold),
                        Bytes::from(bytes),
                    )
                    .await;
                if let Err(e) = folded {
                    warn!(partition, error = %e, "cannot fold the offsets partition's WAL; trying again later");
                }
            }
        }
    }

    /// Rebuilds offsets partition `partition` from the WAL and loads its
    /// groups (each Empty, as after a restart); returns how many.
    async fn reload(&self, partition: u32) -> Result<usize, String> {
        let Some(wal) = self.wal.get() else {
            return Ok(0);
        };
        self.logs.borrow_mut().remove(&partition);
        self.groups
            .borrow_mut()
            .retain(|id, _| offsets_partition(id) != partition);
        let tp = TopicPartition::new(OFFSETS_DIR, partition as i32);
        let config = offsets_log::offsets_log_config(self.segment_bytes);
        wal.restore(
            &tp,
            OFFSETS_TOPIC_ID,
            &self.dir.join(partition.to_string()),
            config.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        if !OffsetsLog::exists(&self.dir, partition) {
            return Ok(0);
        }
        let log = OffsetsLog::open(&self.dir, partition, config).map_err(|e| e.to_string())?;
        let now = Instant::now();
        let mut groups = self.groups.borrow_mut();
        for group_id in log.groups.keys() {
            groups.insert(group_id.clone(), Group::new(group_id, self.initial_delay, now));
        }
        let count = log.groups.len();
        self.logs.borrow_mut().insert(partition, log);
        Ok(count)
    }

    pub(crate) fn join(&self, group_id: &str, request: JoinRequest) -> Reply<JoinResult> {
        let now = Instant::now();
        let mut groups = self.groups.borrow_mut();
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, self.initial_delay, now));
        group.join(request, now)
    }

    pub(crate) fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncResult> {
        match self.groups.borrow_mut().get_mut(group_id) {
            Some(group) => group.sync(member_id, instance_id, generation, assignments, Instant::now()),
            None => Reply::Now(SyncResult {
                error: ResponseError::UnknownMemberId.code(),
                ..Default::default()
            }),
        }
    }

    /// See `Group::answer_deadline`.
    pub(crate) fn answer_deadline(&self, group_id: &str) -> Option<Instant> {
        self.groups.borrow().get(group_id)?.answer_deadline()
    }

    pub(crate) fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        match self.groups.borrow_mut().get_mut(group_id) {
            Some(group) => group.heartbeat(member_id, instance_id, generation, Instant::now()),
            None => ResponseError::UnknownMemberId.code(),
        }
    }

    /// LeaveGroup: an error per (member id, instance id) given.
    pub(crate) fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, i16> {
        let mut groups = self.groups.borrow_mut();
        let group = groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId.code())?;
        let now = Instant::now();
        Ok(members
            .iter()
            .map(|(id, instance)| group.leave(id, instance.as_deref(), now))
            .collect())
    }

    /// OffsetCommit: checks the member, writes the offsets, and returns once
    /// they are fsynced. `Err` is an error for every partition.
    pub(crate) async fn commit(
        &self,
        group_id: &str,
        member: (&str, Option<&str>, i32),
        offsets: Vec<((String, i32), Committed)>,
    ) -> Result<(), i16> {
        let (member_id, instance_id, generation) = member;
        {
            let mut groups = self.groups.borrow_mut();
            let group = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, self.initial_delay, Instant::now()));
            group
                .check_commit(member_id, instance_id, generation)
                .map_err(|e| e.code())?;
        }
        let changes = offsets
            .into_iter()
            .map(|(key, value)| (key, Some(value)))
            .collect();
        self.append_and_sync(group_id, changes).await
    }

    /// TxnOffsetCommit's member check (see `Group::check_txn_commit`); a
    /// group that does not exist accepts only generation -1.
    pub(crate) fn check_txn_commit(
        &self,
        group_id: &str,
        member: (&str, Option<&str>, i32),
    ) -> Result<(), ResponseError> {
        let (member_id, instance_id, generation) = member;
        match self.groups.borrow().get(group_id) {
            Some(group) => group.check_txn_commit(member_id, instance_id, generation),
            None if generation < 0 => Ok(()),
            None => Err(ResponseError::IllegalGeneration),
        }
    }

    /// A committed transaction's offsets (TxnOffsetCommit, made visible by
    /// the commit): written without a member check, which was the
    /// TxnOffsetCommit's; the group is created if it does not exist.
    pub(crate) async fn commit_transactional(
        &self,
        group_id: &str,
        offsets: Vec<((String, i32), Committed)>,
    ) -> Result<(), i16> {
        self.groups
            .borrow_mut()
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, self.initial_delay, Instant::now()));
        let changes = offsets
            .into_iter()
            .map(|(key, value)| (key, Some(value)))
            .collect();
        self.append_and_sync(group_id, changes).await
    }

    /// Committed offsets of a group: of the given topics and partitions, or
    /// of everything it has committed (`None`).
    pub(crate) fn fetch_offsets(&self, group_id: &str, wanted: Option<TopicPartitions>) -> FetchedOffsets {
        let logs = self.logs.borrow();
        let committed = logs
            .get(&offsets_partition(group_id))
            .and_then(|log| log.groups.get(group_id));
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| (p, committed.and_then(|c| c.get(&(topic.clone(), p)).cloned())))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> =
                    Default::default();
                for ((topic, partition), value) in committed.into_iter().flatten() {
                    by_topic
                        .entry(topic.clone())
                        .or_default()
                        .push((*partition, Some(value.clone())));
                }
                by_topic.into_iter().collect()
            }
        }
    }

    /// OffsetDelete: refused for topics the group's members subscribe to.
    pub(crate) async fn delete_offsets(
        &self,
        group_id: &str,
        topics: TopicPartitions,
    ) -> Result<PartitionCodes, i16> {
        let subscribed: Vec<String> = {
            let groups = self.groups.borrow();
            let group = groups
                .get(group_id)
                .ok_or(ResponseError::GroupIdNotFound.code())?;
            if group.protocol_type.as_deref().is_some_and(|t| t != "consumer") {
                return Err(ResponseError::NonEmptyGroup.code());
            }
            group
                .members
                .values()
                .flat_map(|m| subscribed_topics(&m.metadata(group.protocol.as_deref())))
                .collect()
        };
        let mut deletes = Vec::new();
        let results = topics
            .into_iter()
            .map(|(topic, partitions)| {
                let busy = subscribed.contains(&topic);
                let codes = partitions
                    .into_iter()
                    .map(|p| {
                        if busy {
                            (p, ResponseError::GroupSubscribedToTopic.code())
                        } else {
                            deletes.push(((topic.clone(), p), None));
                            (p, 0)
                        }
                    })
                    .collect();
                (topic, codes)
            })
            .collect();
        if !deletes.is_empty() {
            self.append_and_sync(group_id, deletes).await?;
        }
        Ok(results)
    }

    async fn append_and_sync(
        &self,
        group_id: &str,
        changes: Vec<((String, i32), Option<Committed>)>,
    ) -> Result<(), i16> {
        // Kafka's offset records hold these as int16-length strings.
        if group_id.len() > offsets_log::MAX_STRING_BYTES {
            return Err(ResponseError::InvalidGroupId.code());
        }
        if changes
            .iter()
            .any(|((topic, _), _)| topic.len() > offsets_log::MAX_STRING_BYTES)
        {
            return Err(ResponseError::InvalidTopicException.code());
        }
        let appended = {
            let partition = offsets_partition(group_id);
            if !self.owned.contains(&partition) {
                return Err(ResponseError::NotCoordinator.code());
            }
            let mut logs = self.logs.borrow_mut();
            let log = match logs.entry(partition) {
                std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    let config = offsets_log::offsets_log_config(self.segment_bytes);
                    let log = OffsetsLog::open(&self.dir, partition, config).map_err(|e| {
                        warn!(partition, error = %e, "cannot open an offsets partition");
                        ResponseError::KafkaStorageError.code()
                    })?;
                    vacant.insert(log)
                }
            };
            let appended = log.append(group_id, changes).map_err(|e| {
                warn!(group = %group_id, error = %e, "cannot write committed offsets");
                ResponseError::KafkaStorageError.code()
            })?;
            (appended, log.take_last_batch())
        };
        let (appended, stored) = appended;
        if let (Some(wal), Some(stored)) = (self.wal.get(), stored) {
            // Cluster mode: acknowledged once in object storage and etcd,
            // where the next coordinator of these groups finds them.
            let partition = offsets_partition(group_id);
            let tp = TopicPartition::new(OFFSETS_DIR, partition as i32);
            let epoch = self.router.offsets_loaded_at(partition);
            if let (_, Some(sealed)) = appended {
                let _ =
                    crate::storage::run_blocking("closing an offsets segment", move || sealed.finish()).await;
            }
            // Another broker coordinates these groups now: the client
            // finds it again.
            let code = |e: crate::storage::StorageError| match e {
                crate::storage::StorageError::NotLeader => ResponseError::NotCoordinator.code(),
                other => other.code(),
            };
            wal.add(
                &tp,
                OFFSETS_TOPIC_ID,
                epoch,
                stored.base,
                stored.end,
                vec![stored.bytes],
            )
            .map_err(code)?;
            return wal.durable(&tp, stored.end).await.map_err(code);
        }
        self.group_commit.sync_appended(appended).await.map_err(|e| {
            warn!(group = %group_id, error = %e, "cannot make committed offsets durable");
            ResponseError::KafkaStorageError.code()
        })
    }

    /// DeleteGroups for one group: only an empty group, offsets and all.
    pub(crate) async fn delete_group(&self, group_id: &str) -> i16 {
        let deletes: Vec<_> = {
            let groups = self.groups.borrow();
            let Some(group) = groups.get(group_id) else {
                return ResponseError::GroupIdNotFound.code();
            };
            if group.state != GroupState::Empty {
                return ResponseError::NonEmptyGroup.code();
            }
            let logs = self.logs.borrow();
            let committed = logs
                .get(&offsets_partition(group_id))
                .and_then(|log| log.groups.get(group_id));
            committed
                .into_iter()
                .flatten()
                .map(|(key, _)| (key.clone(), None))
                .collect()
        };
        if !deletes.is_empty() {
            if let Err(code) = self.append_and_sync(group_id, deletes).await {
                return code;
            }
        }
        self.groups.borrow_mut().remove(group_id);
        0
    }

    /// Cleans the offsets partition here that most needs it, if any is
    /// due, as the cleaner cleans a compacted topic's partition.
    pub(crate) async fn clean_dirtiest(
        &self,
        shard: usize,
        settings: &crate::partition::CleanerSettings,
    ) -> Option<crate::partition::cleaning::CleanReport> {
        crate::partition::cleaning::clean_dirtiest_internal(shard, OFFSETS_TOPIC, &self.logs, settings).await
    }

    /// The offsets partitions' figures for the per-topic log gauges.
    pub(crate) fn log_stats(&self) -> crate::partition::TopicLogStats {
        crate::partition::cleaning::internal_log_stats(&self.logs)
    }

    /// (group, members, lag) of every group here; lag sums end offset
    /// minus committed offset over the group's committed partitions.
    pub(crate) fn lag_stats(
        &self,
        end_offset: impl Fn(&str, i32) -> Option<i64>,
    ) -> Vec<(String, usize, i64)> {
        let groups = self.groups.borrow();
        let logs = self.logs.borrow();
        groups
            .values()
            .map(|g| {
                let committed = logs
                    .get(&offsets_partition(&g.id))
                    .and_then(|l| l.groups.get(&g.id));
                let lag = committed
                    .into_iter()
                    .flatten()
                    .filter_map(|((topic, p), c)| end_offset(topic, *p).map(|end| (end - c.offset).max(0)))
                    .sum();
                (g.id.clone(), g.members.len(), lag)
            })
            .collect()
    }

    /// (group id, protocol type, state) of every group this shard owns.
    pub(crate) fn list(&self) -> Vec<(String, String, &'static str)> {
        self.groups
            .borrow()
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                )
            })
            .collect()
    }

    pub(crate) fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.borrow();
        let group = groups.get(group_id)?;
        Some(GroupDescription {
            state: group.state.name(),
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol: group.protocol.clone().unwrap_or_default(),
            members: group
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata(group.protocol.as_deref()),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Drives session and rebalance deadlines; expires offsets of groups
    /// empty for longer than the retention; forgets empty groups without
    /// offsets.
    pub(crate) async fn tick(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            let logs = self.logs.borrow();
            groups.retain(|id, group| {
                group.tick(now);
                if group.state != GroupState::Empty {
                    return true;
                }
                let has_offsets = logs
                    .get(&offsets_partition(id))
                    .is_some_and(|l| l.groups.contains_key(id));
                let stale = group
                    .empty_since
                    .is_some_and(|t| now.duration_since(t) >= self.offsets_retention);
                if has_offsets && stale {
                    expired.push(id.clone());
                }
                has_offsets || !group.is_forgettable()
            });
        }
        for group_id in expired {
            info!(group = %group_id, "offsets retention: removing committed offsets of a long-empty group");
            let _ = self.delete_group(&group_id).await;
        }
    }
}

/// Topics in a consumer-protocol subscription (version, topics, ...).
fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    let mut topics = Vec::new();
    let Some(count) = metadata.get(2..6) else {
        return topics;
    };
    let count = i32::from_be_bytes([count[0], count[1], count[2], count[3]]);
    let mut at = 6;
    for _ in 0..count.max(0) {
        let Some(len) = metadata.get(at..at + 2) else {
            break;
        };
        let len = i16::from_be_bytes([len[0], len[1]]).max(0) as usize;
        let Some(name) = metadata.get(at + 2..at + 2 + len) else {
            break;
        };
        topics.push(String::from_utf8_lossy(name).into_owned());
        at += 2 + len;
    }
    topics
}

#[cfg(test)]
mod tests {
    #[test]
    fn subscription_topics_are_read_from_consumer_protocol_metadata() {
        let mut meta = vec![0u8, 1, 0, 0, 0, 2];
        for t in ["orders", "payments"] {
            meta.extend_from_slice(&(t.len() as i16).to_be_bytes());
            meta.extend_from_slice(t.as_bytes());
        }
        meta.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(super::subscribed_topics(&meta), vec!["orders", "payments"]);
        assert!(super::subscribed_topics(&[0, 1]).is_empty());
    }
}
