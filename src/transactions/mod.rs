//! The transaction coordinator: Kafka's transaction protocol for the
//! transactional ids this shard owns. As in Kafka, an id's state lives in
//! one of 50 transaction-state partitions (a hash of the id), and the
//! coordinator is wherever that partition is led: the owner shard of
//! `__transaction_state-<n>`, like any partition, so it moves with the
//! shard count (and, in cluster mode, with leadership).
//!
//! Every change of an id's state is durable before it is answered: it is
//! a record (key: the id as Kafka's TransactionLogKey v0; value: the
//! state as JSON, or a tombstone when the id is forgotten) appended and
//! synced to its state partition, an ordinary compacted partition under
//! `__transaction_state/<n>/` that the shard's log cleaner keeps bounded
//! (one change at a time per shard). Ending a transaction persists
//! PrepareCommit/PrepareAbort, answers, and then writes the marker to
//! every partition of the transaction (retrying until each is stored) and
//! commits the transaction's group offsets before persisting
//! CompleteCommit/CompleteAbort. A restart finishes what was prepared; an
//! Ongoing transaction past its timeout is aborted with its producer
//! fenced (epoch + 1). See docs/transactions-notes.md for the rules.

pub(crate) mod state;

use crate::groups::Committed;
use crate::log::control::{marker_batch, Marker};
use crate::log::keyed_log::KeyedLog;
use crate::log::partition_log::now_ms;
use crate::metadata::{FileStore, MetadataStore};
use crate::routing::{
    transaction_state_partition, PartitionRouter, TRANSACTION_STATE_PARTITIONS, TRANSACTION_STATE_TOPIC,
};
use crate::server::ShardBroker;
use crate::storage::{GroupCommit, StorageError};
use crate::topics::TopicPartition;
use bytes::Bytes;
use glommio::sync::Semaphore;
use kafka_protocol::ResponseError;
use state::{PendingOffset, TxnMeta, TxnState, MAX_EPOCH};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The coordinator's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxnLimits {
    /// The longest transaction.timeout.ms a producer may ask for.
    pub max_timeout_ms: i32,
    /// Idle ids (no transaction open) are forgotten after this long.
    pub id_expiration_ms: i64,
}

impl From<&crate::config::ServerConfig> for TxnLimits {
    fn from(config: &crate::config::ServerConfig) -> TxnLimits {
        TxnLimits {
            max_timeout_ms: i32::try_from(config.transaction_max_timeout_ms).unwrap_or(i32::MAX),
            id_expiration_ms: i64::try_from(config.transactional_id_expiration_ms).unwrap_or(i64::MAX),
        }
    }
}
/// How often open transactions are checked against their timeouts.
const TIMEOUT_CHECK: Duration = Duration::from_secs(1);
/// The longest EndTxn waits for its markers before answering.
const END_TXN_PATIENCE: Duration = Duration::from_secs(10);
/// How often open partitions' transactions are checked for ones no
/// coordinator holds.
const HANGING_CHECK_TICKS: u32 = 10;
/// Between attempts to write a marker a partition refused.
const MARKER_RETRY: Duration = Duration::from_millis(100);

/// Appends a COMMIT or ABORT marker for `producer` (id, epoch) to `tp`,
/// durably (acks=all), wherever its owner shard is.
pub(crate) async fn write_marker(
    broker: &Rc<ShardBroker>,
    tp: &TopicPartition,
    marker: Marker,
    (producer_id, epoch): (i64, i16),
    coordinator_epoch: i32,
) -> Result<(), StorageError> {
    let bytes = Bytes::from(marker_batch(
        marker,
        producer_id,
        epoch,
        coordinator_epoch,
        now_ms(),
    ));
    let header = crate::log::batch::parse_header(&bytes)
        .map_err(|e| StorageError::Invalid(e.message().to_string()))?;
    broker
        .partitions()
        .append(tp.clone(), bytes, header, -1)
        .await
        .map(drop)
}

/// Where an earlier version kept the state partitions, a JSON document
/// each, under the data directory.
const STATE_DIR: &str = "transactions";

fn state_document(partition: u32) -> String {
    format!("{partition}.json")
}

/// Moves the ids of the per-shard tables an earlier version kept
/// (`transactions-<shard>.json`) into their state partitions; run once at
/// start-up, before the shards load. A crash part-way leaves the old
/// tables, and the next start moves them again (an id already in its
/// partition keeps the partition's copy, the newer one).
pub(crate) fn move_per_shard_tables(dir: &Path) -> std::io::Result<()> {
    let mut old_tables = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if name.starts_with("transactions-") && name.ends_with(".json") {
            old_tables.push(name);
        }
    }
    if old_tables.is_empty() {
        return Ok(());
    }
    let old: Arc<dyn MetadataStore> = Arc::new(FileStore::new(dir));
    let new = state_store(dir)?;
    let mut by_partition: BTreeMap<u32, BTreeMap<String, TxnMeta>> = BTreeMap::new();
    for name in &old_tables {
        let table: HashMap<String, TxnMeta> = old.get_json(name)?.unwrap_or_default();
        for (id, meta) in table {
            by_partition
                .entry(transaction_state_partition(&id))
                .or_default()
                .insert(id, meta);
        }
    }
    for (partition, moved) in by_partition {
        let document = state_document(partition);
        let mut table: BTreeMap<String, TxnMeta> = new.get_json(&document)?.unwrap_or_default();
        for (id, meta) in moved {
            table.entry(id).or_insert(meta);
        }
        new.put_json(&document, &table)?;
    }
    for name in old_tables {
        std::fs::remove_file(dir.join(&name))?;
    }
    info!("transaction state moved from per-shard tables into its state partitions");
    Ok(())
}

fn state_partition_dir(dir: &Path, partition: u32) -> std::path::PathBuf {
    dir.join(TRANSACTION_STATE_TOPIC).join(partition.to_string())
}

/// Kafka's TransactionLogKey v0: the transactional id (an int16-length
/// string: a longer id is refused, never wrapped).
fn encode_state_key(id: &str) -> Result<Vec<u8>, ResponseError> {
    let len = i16::try_from(id.len()).map_err(|_| ResponseError::InvalidRequest)?;
    let mut key = Vec::with_capacity(4 + id.len());
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    Ok(key)
}

fn decode_state_key(key: &[u8]) -> std::io::Result<String> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "transaction state: a malformed key",
        )
    };
    let len = key.get(2..4).ok_or_else(bad)?;
    let len = usize::try_from(i16::from_be_bytes([len[0], len[1]])).map_err(|_| bad())?;
    let id = key.get(4..4 + len).ok_or_else(bad)?;
    String::from_utf8(id.to_vec()).map_err(|_| bad())
}

/// The state partitions are kept as the offsets partitions are
/// (compacted, never deleted by time).
fn state_log_config(segment_bytes: u64) -> crate::log::LogConfig {
    crate::groups::offsets_log_config(segment_bytes)
}

fn state_store(dir: &Path) -> std::io::Result<Arc<dyn MetadataStore>> {
    let dir = dir.join(STATE_DIR);
    std::fs::create_dir_all(&dir)?;
    Ok(Arc::new(FileStore::new(dir)))
}

/// One shard's transactional ids.
pub(crate) struct TxnCoordinator {
    /// The state partitions this shard owns.
    /// The state partitions this shard owns that hold anything (one is
    /// opened at its first change: each open one keeps a file open).
    logs: RefCell<HashMap<u32, KeyedLog>>,
    /// Every state partition this shard owns.
    owned: Vec<u32>,
    dir: std::path::PathBuf,
    segment_bytes: u64,
    group_commit: Rc<GroupCommit>,
    txns: RefCell<HashMap<String, TxnMeta>>,
    /// Prepared ids whose markers are all written, their completion not yet
    /// durable: the next change of such an id completes it first, so a
    /// producer starting its next transaction right after EndTxn's answer
    /// is not told CONCURRENT_TRANSACTIONS.
    settled: RefCell<std::collections::HashSet<String>>,
    /// Ids whose running abort is a timeout's (for the outcome metric).
    timed_out_ids: RefCell<std::collections::HashSet<String>>,
    /// Changes apply one at a time: each checks the table, then awaits its
    /// durable write.
    turn: Semaphore,
    limits: TxnLimits,
}

type Outcome<T> = Result<T, ResponseError>;

/// A group's committed offset for one partition.
type GroupOffset = ((String, i32), Committed);

impl TxnCoordinator {
    /// Blocking (start-up): loads the state partitions this shard owns.
    pub(crate) fn open(
        dir: &Path,
        shard: usize,
        router: &PartitionRouter,
        limits: TxnLimits,
        (group_commit, segment_bytes): (Rc<GroupCommit>, u64),
    ) -> std::io::Result<TxnCoordinator> {
        // Read only: a fresh data directory gets no earlier version's
        // directory.
        let old_store: Arc<dyn MetadataStore> = Arc::new(FileStore::new(dir.join(STATE_DIR)));
        let mut txns: HashMap<String, TxnMeta> = HashMap::new();
        let mut logs = HashMap::new();
        let mut owned = Vec::new();
        for partition in 0..TRANSACTION_STATE_PARTITIONS {
            let tp = TopicPartition::new(TRANSACTION_STATE_TOPIC, partition as i32);
            if router.shard_of(&tp) != shard {
                continue;
            }
            owned.push(partition);
            let partition_dir = state_partition_dir(dir, partition);
            let document = state_document(partition);
            if !partition_dir.exists() && !dir.join(STATE_DIR).join(&document).exists() {
                continue;
            }
            let mut log = KeyedLog::open(&partition_dir, state_log_config(segment_bytes), |key, value| {
                let id = decode_state_key(key)?;
                match value {
                    Some(value) => {
                        let meta = serde_json::from_slice(value).map_err(std::io::Error::other)?;
                        txns.insert(id, meta);
                    }
                    None => {
                        txns.remove(&id);
                    }
                }
                Ok(())
            })?;
            // An earlier version's document: its ids appended (and synced)
            // here, then the document removed; a crash between moves them
            // again, which changes nothing.
            let table: Option<HashMap<String, TxnMeta>> = old_store.get_json(&document)?;
            if let Some(table) = table {
                for (id, meta) in table {
                    if txns.contains_key(&id) {
                        continue;
                    }
                    let value = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
                    let key = encode_state_key(&id).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
                    let (file, sealed) = log.append(&[(&key, Some(&value))])?;
                    file.sync_data()?;
                    if let Some(sealed) = sealed {
                        sealed.finish()?;
                    }
                    txns.insert(id, meta);
                }
                std::fs::remove_file(dir.join(STATE_DIR).join(&document))?;
                // Durable, or a restart could move ids forgotten since back in.
                std::fs::File::open(dir.join(STATE_DIR))?.sync_all()?;
                info!(partition, "transaction state moved into its compacted partition");
            }
            logs.insert(partition, log);
        }
        Ok(TxnCoordinator {
            logs: RefCell::new(logs),
            owned,
            dir: dir.to_path_buf(),
            segment_bytes,
            group_commit,
            txns: RefCell::new(txns),
            settled: RefCell::default(),
            timed_out_ids: RefCell::default(),
            turn: Semaphore::new(1),
            limits,
        })
    }

    /// Makes ids' new states (`None`: forgotten) durable in their state
    /// partition (all of one partition).
    async fn persist(&self, partition: u32, changes: &[(&str, Option<&TxnMeta>)]) -> Outcome<()> {
        let fail = |e: std::io::Error| {
            warn!(error = %e, "cannot persist transaction state");
            ResponseError::CoordinatorNotAvailable
        };
        let mut encoded = Vec::with_capacity(changes.len());
        for (id, meta) in changes {
            let value = meta
                .map(serde_json::to_vec)
                .transpose()
                .map_err(|e| fail(std::io::Error::other(e)))?;
            encoded.push((encode_state_key(id)?, value));
        }
        let records: Vec<(&[u8], Option<&[u8]>)> = encoded
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        if !self.owned.contains(&partition) {
            return Err(ResponseError::NotCoordinator);
        }
        let appended = {
            let mut logs = self.logs.borrow_mut();
            let log = match logs.entry(partition) {
                std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    let config = state_log_config(self.segment_bytes);
                    let dir = state_partition_dir(&self.dir, partition);
                    vacant.insert(KeyedLog::open(&dir, config, |_, _| Ok(())).map_err(fail)?)
                }
            };
            log.append(&records).map_err(fail)?
        };
        self.group_commit.sync_appended(appended).await.map_err(fail)
    }

    /// The state partitions' figures for the per-topic log gauges.
    pub(crate) fn log_stats(&self) -> crate::partition::TopicLogStats {
        crate::partition::cleaning::internal_log_stats(&self.logs)
    }

    /// Cleans the state partition here that most needs it, if any is due.
    pub(crate) async fn clean_dirtiest(
        &self,
        shard: usize,
        settings: &crate::partition::CleanerSettings,
    ) -> Option<crate::partition::cleaning::CleanReport> {
        crate::partition::cleaning::clean_dirtiest_internal(
            shard,
            TRANSACTION_STATE_TOPIC,
            &self.logs,
            settings,
        )
        .await
    }

    /// Applies `change` to the id's state (a copy), persists the table
    /// with it, and only then makes it the state: a failed write changes
    /// nothing.
    async fn transition<T>(
        &self,
        transactional_id: &str,
        change: impl FnOnce(Option<TxnMeta>) -> Outcome<(Option<TxnMeta>, T)>,
    ) -> Outcome<T> {
        let _turn = self
            .turn
            .acquire_permit(1)
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        let current = self.txns.borrow().get(transactional_id).cloned();
        let mut settled = current.clone();
        if let Some(meta) = settled.as_mut() {
            let preparing = matches!(meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort);
            if preparing && self.settled.borrow_mut().remove(transactional_id) {
                meta.complete(now_ms());
            }
        }
        let (next, answer) = match change(settled.clone()) {
            // Nothing else to change: a settled completion is still one.
            Ok((None, answer)) if settled != current => (settled, answer),
            other => other?,
        };
        let Some(next) = next else {
            return Ok(answer);
        };
        if current.as_ref() == Some(&next) {
            return Ok(answer);
        }
        let persisted = self
            .persist(
                transaction_state_partition(transactional_id),
                &[(transactional_id, Some(&next))],
            )
            .await;
        // Visible once durable; a failed write changes nothing.
        persisted?;
        self.txns.borrow_mut().insert(transactional_id.to_string(), next);
        Ok(answer)
    }

    /// Transactions begun and not yet ended (their markers not all written).
    fn open_count(&self) -> usize {
        self.txns
            .borrow()
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                )
            })
            .count()
    }

    /// Every transactional id this shard coordinates, with its state.
    pub(crate) fn all(&self) -> Vec<(String, TxnMeta)> {
        self.txns
            .borrow()
            .iter()
            .map(|(id, meta)| (id.clone(), meta.clone()))
            .collect()
    }

    /// The partitions a group has offsets for in transactions not yet
    /// completed: OffsetFetch with `require_stable` must not report what
    /// a commit is about to replace.
    pub(crate) fn pending_offsets(&self, group: &str) -> Vec<(String, i32)> {
        self.txns
            .borrow()
            .values()
            .flat_map(|meta| meta.offsets.iter())
            .filter(|o| o.group == group)
            .map(|o| (o.topic.clone(), o.partition))
            .collect()
    }

    /// Whether any id here has `producer_id`'s transaction open (begun,
    /// or ending with its markers not all written).
    pub(crate) fn holds_open(&self, producer_id: i64) -> bool {
        self.txns.borrow().values().any(|meta| {
            meta.producer_id == producer_id
                && matches!(
                    meta.state,
                    TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                )
        })
    }

    pub(crate) fn get(&self, transactional_id: &str) -> Option<TxnMeta> {
        self.txns.borrow().get(transactional_id).cloned()
    }

    /// InitProducerId with a transactional id: the producer id and a new
    /// epoch (which fences older producers of the id). An open transaction
    /// is aborted first and the client told to retry.
    pub(crate) async fn init(
        self: &Rc<Self>,
        broker: &Rc<ShardBroker>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Outcome<(i64, i16)> {
        if timeout_ms <= 0 || timeout_ms > self.limits.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let fresh_id = match self.get(transactional_id) {
            Some(meta) if meta.epoch < MAX_EPOCH => None,
            _ => Some(
                broker
                    .controller()
                    .allocate_producer_id()
                    .await
                    .map_err(|_| ResponseError::CoordinatorNotAvailable)?,
            ),
        };
        let now = now_ms();
        let mut aborting = false;
        let answer = self
            .transition(transactional_id, |current| {
                let mut meta = match current {
                    Some(meta) => meta,
                    None => {
                        let pid = fresh_id.ok_or(ResponseError::CoordinatorNotAvailable)?;
                        TxnMeta::new(pid, timeout_ms, now)
                    }
                };
                match meta.state {
                    TxnState::PrepareCommit | TxnState::PrepareAbort => {
                        Err(ResponseError::ConcurrentTransactions)
                    }
                    TxnState::Ongoing => {
                        meta.fence_and_abort(now);
                        aborting = true;
                        Ok((Some(meta), None))
                    }
                    _ if meta.epoch >= MAX_EPOCH => {
                        let pid = fresh_id.ok_or(ResponseError::ConcurrentTransactions)?;
                        meta.rotate(pid, timeout_ms, now);
                        let answer = (meta.producer_id, meta.epoch);
                        Ok((Some(meta), Some(answer)))
                    }
                    _ => {
                        meta.bump(expected, timeout_ms, now)?;
                        let answer = (meta.producer_id, meta.epoch);
                        Ok((Some(meta), Some(answer)))
                    }
                }
            })
            .await?;
        if aborting {
            info!(
                transactional_id,
                "InitProducerId found the transaction open: aborting it first"
            );
            drop(
                self.clone()
                    .finish_later(broker.clone(), transactional_id.to_string()),
            );
        }
        answer.ok_or(ResponseError::ConcurrentTransactions)
    }

    /// AddPartitionsToTxn: the partitions join the transaction (which
    /// begins if none is open).
    pub(crate) async fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> Outcome<()> {
        let now = now_ms();
        self.transition(transactional_id, |current| {
            let mut meta = current.ok_or(ResponseError::InvalidProducerIdMapping)?;
            meta.check_producer(producer_id, epoch)?;
            if !meta.can_add(&partitions)? {
                return Ok((None, ()));
            }
            meta.add(partitions, now);
            Ok((Some(meta), ()))
        })
        .await
    }

    /// AddOffsetsToTxn: the group's offsets will commit with the
    /// transaction.
    pub(crate) async fn add_group(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Outcome<()> {
        let now = now_ms();
        self.transition(transactional_id, |current| {
            let mut meta = current.ok_or(ResponseError::InvalidProducerIdMapping)?;
            meta.check_producer(producer_id, epoch)?;
            if meta.state == TxnState::Ongoing && meta.groups.contains(group) {
                return Ok((None, ()));
            }
            // Refused while the last end is being written.
            meta.can_add(&[])?;
            meta.add(Vec::new(), now);
            meta.groups.insert(group.to_string());
            Ok((Some(meta), ()))
        })
        .await
    }

    /// TxnOffsetCommit: offsets kept with the transaction, committed to the
    /// group when it commits, dropped when it aborts.
    pub(crate) async fn add_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        offsets: Vec<PendingOffset>,
    ) -> Outcome<()> {
        let now = now_ms();
        self.transition(transactional_id, |current| {
            let mut meta = current.ok_or(ResponseError::InvalidProducerIdMapping)?;
            meta.check_producer(producer_id, epoch)?;
            if meta.state != TxnState::Ongoing || offsets.iter().any(|o| !meta.groups.contains(&o.group)) {
                // The group was not added with AddOffsetsToTxn.
                return Err(ResponseError::InvalidTxnState);
            }
            for offset in offsets {
                meta.offsets.retain(|o| {
                    (&o.group, &o.topic, o.partition) != (&offset.group, &offset.topic, offset.partition)
                });
                meta.offsets.push(offset);
            }
            meta.last_update_ms = now;
            Ok((Some(meta), ()))
        })
        .await
    }

    /// Whether a producer's transactional batch for `tp` belongs to its
    /// open transaction (KIP-890's verification): a batch the coordinator
    /// does not know about would hold the partition's stable offset back
    /// with no marker ever to come.
    pub(crate) fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        tp: &(String, i32),
    ) -> Outcome<()> {
        let txns = self.txns.borrow();
        let meta = txns
            .get(transactional_id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        if meta.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if epoch < meta.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        match meta.state {
            TxnState::Ongoing if epoch == meta.epoch && meta.partitions.contains(tp) => Ok(()),
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// AddPartitionsToTxn's `verify_only` (v4+): which of `partitions` are
    /// not in the producer's transaction. Kafka does not check the state
    /// beyond a prepared end, which refuses the whole check.
    pub(crate) fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Outcome<Vec<(String, i32)>> {
        let txns = self.txns.borrow();
        let meta = txns
            .get(transactional_id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        meta.check_producer(producer_id, epoch)?;
        if matches!(meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(partitions
            .iter()
            .filter(|tp| !meta.partitions.contains(*tp))
            .cloned()
            .collect())
    }

    /// EndTxn: prepares the commit or abort (durably), then writes the
    /// markers and answers once they are written (at most
    /// `END_TXN_PATIENCE`; the markers are written regardless). Kafka
    /// answers as soon as the prepare is durable, and a client that starts
    /// its next transaction at once gets CONCURRENT_TRANSACTIONS until the
    /// markers are done, which librdkafka's send_offsets_to_transaction
    /// hands to the application as an error; waiting for them here closes
    /// that window. A retry of a finished end is answered 0.
    pub(crate) async fn end(
        self: &Rc<Self>,
        broker: &Rc<ShardBroker>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Outcome<()> {
        let now = now_ms();
        let prepared = self
            .transition(transactional_id, |current| {
                let mut meta = current.ok_or(ResponseError::InvalidProducerIdMapping)?;
                meta.check_producer(producer_id, epoch)?;
                if !meta.can_end(commit)? {
                    return Ok((None, false));
                }
                meta.prepare(commit, now);
                Ok((Some(meta), true))
            })
            .await?;
        if prepared {
            let finished = self
                .clone()
                .finish_later(broker.clone(), transactional_id.to_string());
            let patience = std::pin::pin!(glommio::timer::sleep(END_TXN_PATIENCE));
            let _ = futures::future::select(finished, patience).await;
        }
        Ok(())
    }

    /// Finishes the transaction in a task of its own; the receiver fires
    /// when it is done.
    fn finish_later(
        self: Rc<Self>,
        broker: Rc<ShardBroker>,
        transactional_id: String,
    ) -> futures::channel::oneshot::Receiver<()> {
        let (done, finished) = futures::channel::oneshot::channel();
        glommio::spawn_local(async move {
            self.finish(&broker, &transactional_id, done).await;
        })
        .detach();
        finished
    }

    /// Writes the prepared transaction's markers, commits its offsets
    /// (then `written` fires: the outcome is in the logs), and persists its
    /// completion. Retries until it can. Completion need not be durable
    /// before the producer hears of it: a restart finds the transaction
    /// prepared and writes its markers again, which only repeats a marker.
    async fn finish(
        &self,
        broker: &Rc<ShardBroker>,
        transactional_id: &str,
        written: futures::channel::oneshot::Sender<()>,
    ) {
        let Some(meta) = self.get(transactional_id) else {
            return;
        };
        let commit = match meta.state {
            TxnState::PrepareCommit => true,
            TxnState::PrepareAbort => false,
            _ => return,
        };
        let marker = if commit { Marker::Commit } else { Marker::Abort };
        for (topic, partition) in &meta.partitions {
            let tp = TopicPartition::new(topic, *partition);
            loop {
                match write_marker(broker, &tp, marker, (meta.producer_id, meta.epoch), 0).await {
                    Ok(_) => break,
                    // The topic is gone: nothing left to mark.
                    Err(StorageError::UnknownPartition) => break,
                    // The producer was fenced there by a newer epoch.
                    Err(StorageError::Producer(ResponseError::InvalidProducerEpoch)) => break,
                    Err(e) if broker.shard().drain.is_fired() => {
                        warn!(transactional_id, error = %e, "shutting down with a marker unwritten; the next start finishes the transaction");
                        return;
                    }
                    Err(e) => {
                        warn!(transactional_id, partition = %tp, error = %e, "transaction marker not written; retrying");
                        glommio::timer::sleep(MARKER_RETRY).await;
                    }
                }
            }
        }
        if commit {
            let mut by_group: BTreeMap<String, Vec<GroupOffset>> = BTreeMap::new();
            for o in &meta.offsets {
                by_group.entry(o.group.clone()).or_default().push((
                    (o.topic.clone(), o.partition),
                    Committed {
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata.clone(),
                        commit_time_ms: now_ms(),
                    },
                ));
            }
            for (group, offsets) in by_group {
                let owner = broker.group_owner(&group);
                loop {
                    let (g, o) = (group.clone(), offsets.clone());
                    let committed = broker
                        .on_coordinator(owner, move |b| async move {
                            b.groups().commit_transactional(&g, o).await
                        })
                        .await;
                    match committed {
                        Ok(Ok(())) => break,
                        _ if broker.shard().drain.is_fired() => return,
                        other => {
                            warn!(transactional_id, group, outcome = ?other.map(|r| r.err()), "transaction offsets not committed; retrying");
                            glommio::timer::sleep(MARKER_RETRY).await;
                        }
                    }
                }
            }
        }
        self.settled.borrow_mut().insert(transactional_id.to_string());
        let _ = written.send(());
        let took = Duration::from_millis(u64::try_from(now_ms() - meta.start_ms).unwrap_or(0));
        let timed_out = self.timed_out_ids.borrow_mut().remove(transactional_id);
        let outcome = match (commit, timed_out) {
            (true, _) => "commit",
            (false, true) => "timeout",
            (false, false) => "abort",
        };
        loop {
            let done = self
                .transition(transactional_id, |current| match current {
                    Some(mut meta)
                        if meta.state == TxnState::PrepareCommit || meta.state == TxnState::PrepareAbort =>
                    {
                        meta.complete(now_ms());
                        Ok((Some(meta), ()))
                    }
                    _ => Ok((None, ())),
                })
                .await;
            if done.is_ok() {
                self.settled.borrow_mut().remove(transactional_id);
                broker.metrics().transaction_ended(outcome, took);
                broker.metrics().set_open_transactions(self.open_count());
                return;
            }
            if broker.shard().drain.is_fired() {
                return;
            }
            glommio::timer::sleep(MARKER_RETRY).await;
        }
    }

    /// Forgets ids with no transaction open and unused for
    /// TRANSACTIONAL_ID_EXPIRATION_MS, as Kafka does: otherwise every
    /// short-lived transactional producer (one id per task or per run)
    /// would stay in the table, and be persisted with it, forever.
    async fn forget_idle_ids(&self, now: i64) {
        let idle = |meta: &TxnMeta| {
            matches!(
                meta.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            ) && now.saturating_sub(meta.last_update_ms) >= self.limits.id_expiration_ms
        };
        if !self.txns.borrow().values().any(idle) {
            return;
        }
        let Ok(_turn) = self.turn.acquire_permit(1).await else {
            return;
        };
        let forgotten: Vec<(String, TxnMeta)> = {
            let mut txns = self.txns.borrow_mut();
            let ids: Vec<String> = txns
                .iter()
                .filter(|(id, meta)| idle(meta) && !self.settled.borrow().contains(*id))
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| txns.remove(&id).map(|meta| (id, meta)))
                .collect()
        };
        if forgotten.is_empty() {
            return;
        }
        let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (id, _) in &forgotten {
            by_partition
                .entry(transaction_state_partition(id))
                .or_default()
                .push(id.clone());
        }
        for (partition, ids) in by_partition {
            let tombstones: Vec<(&str, Option<&TxnMeta>)> =
                ids.iter().map(|id| (id.as_str(), None)).collect();
            if self.persist(partition, &tombstones).await.is_err() {
                // Kept: the next check tries again.
                self.txns.borrow_mut().extend(forgotten);
                return;
            }
        }
        info!(
            count = forgotten.len(),
            "forgot transactional ids unused for TRANSACTIONAL_ID_EXPIRATION_MS"
        );
    }

    /// Aborts transactions open in this shard's partitions that no
    /// coordinator holds: the coordinator's state is gone (a broker
    /// rebuilt from object storage, whose log tail with the marker was
    /// never uploaded; a lost state file). Nothing would ever end them,
    /// and each would hold its partition's stable offset, and every
    /// read_committed consumer, for good. A coordinator always holds a
    /// transaction until its markers are written, and a producer id the
    /// coordinators do not hold cannot begin another, so this never races
    /// a live transaction.
    async fn abort_hanging(&self, broker: &Rc<ShardBroker>) {
        let open = broker.local_partitions().open_transactions();
        if open.is_empty() {
            return;
        }
        let producers: std::collections::BTreeSet<i64> = open.iter().map(|(_, s)| s.producer_id).collect();
        let mut held = std::collections::BTreeSet::new();
        for shard in 0..broker.shard().count {
            let asked: Vec<i64> = producers.iter().copied().collect();
            let Ok(some) = broker
                .on_shard(shard, move |b| async move {
                    asked
                        .into_iter()
                        .filter(|pid| b.transactions().holds_open(*pid))
                        .collect::<Vec<i64>>()
                })
                .await
            else {
                // A shard that cannot answer might hold them: no verdict.
                return;
            };
            held.extend(some);
        }
        for (tp, seen) in open.into_iter().filter(|(_, s)| !held.contains(&s.producer_id)) {
            // Still the same transaction, with nothing appended since.
            let current = broker.local_partitions().producers(&tp).await.unwrap_or_default();
            if !current.contains(&seen) {
                continue;
            }
            match write_marker(broker, &tp, Marker::Abort, (seen.producer_id, seen.epoch), 0).await {
                Ok(_) => {
                    warn!(partition = %tp, producer_id = seen.producer_id, first_offset = seen.txn_start_offset,
                    "aborted a transaction no coordinator holds (its coordinator state is gone)")
                }
                Err(e) => {
                    warn!(partition = %tp, error = %e, "cannot abort a transaction no coordinator holds; will retry")
                }
            }
        }
    }

    /// Finishes what a previous run prepared, then aborts transactions
    /// past their timeouts, until the shard drains.
    pub(crate) async fn run(self: Rc<Self>, broker: Rc<ShardBroker>) {
        let prepared: Vec<String> = self
            .txns
            .borrow()
            .iter()
            .filter(|(_, m)| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
            .map(|(id, _)| id.clone())
            .collect();
        for id in prepared {
            info!(transactional_id = %id, "finishing a transaction prepared before the restart");
            drop(self.clone().finish_later(broker.clone(), id));
        }
        let drain = broker.shard().drain.clone();
        let mut ticks: u32 = 0;
        loop {
            let tick = std::pin::pin!(glommio::timer::sleep(TIMEOUT_CHECK));
            if let futures::future::Either::Right(_) =
                futures::future::select(tick, std::pin::pin!(drain.wait())).await
            {
                return;
            }
            broker.metrics().set_open_transactions(self.open_count());
            let now = now_ms();
            let expired: Vec<String> = self
                .txns
                .borrow()
                .iter()
                .filter(|(_, m)| m.timed_out(now))
                .map(|(id, _)| id.clone())
                .collect();
            self.forget_idle_ids(now).await;
            ticks = ticks.wrapping_add(1);
            if ticks.is_multiple_of(HANGING_CHECK_TICKS) {
                self.abort_hanging(&broker).await;
            }
            for id in expired {
                let fenced = self
                    .transition(&id, |current| match current {
                        Some(mut meta) if meta.timed_out(now) => {
                            meta.fence_and_abort(now);
                            Ok((Some(meta), true))
                        }
                        _ => Ok((None, false)),
                    })
                    .await;
                if fenced == Ok(true) {
                    info!(transactional_id = %id, "transaction timed out: aborted, its producer fenced");
                    self.timed_out_ids.borrow_mut().insert(id.clone());
                    drop(self.clone().finish_later(broker.clone(), id));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> TxnCoordinator {
        let limits = TxnLimits {
            max_timeout_ms: 60_000,
            id_expiration_ms: i64::MAX,
        };
        TxnCoordinator::open(
            dir,
            0,
            &PartitionRouter::single_broker(1),
            limits,
            (Rc::default(), 1 << 20),
        )
        .unwrap()
    }

    #[test]
    fn an_earlier_versions_state_document_moves_into_the_compacted_partition() {
        let dir = std::env::temp_dir().join(format!("chronik-txn-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut meta = TxnMeta::new(42, 30_000, 1);
        meta.epoch = 3;
        let partition = transaction_state_partition("app-1");
        let old = state_store(&dir).unwrap();
        old.put_json(
            &state_document(partition),
            &HashMap::from([("app-1".to_string(), meta.clone())]),
        )
        .unwrap();
        for _ in 0..2 {
            let coordinator = open(&dir);
            assert_eq!(coordinator.all(), vec![("app-1".to_string(), meta.clone())]);
            assert!(!dir.join(STATE_DIR).join(state_document(partition)).exists());
            assert!(dir
                .join(TRANSACTION_STATE_TOPIC)
                .join(partition.to_string())
                .join("00000000000000000000.log")
                .exists());
        }
        assert_eq!(
            decode_state_key(&encode_state_key("app-1").unwrap()).unwrap(),
            "app-1"
        );
        assert!(encode_state_key(&"x".repeat(40_000)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
