//! The partition layer: what Kafka's partition owns, above the log that
//! stores its batches.
//!
//! A [`Partition`] holds its leader epoch, high watermark, last stable
//! offset and the fetches waiting on it; its [`Log`] (local segments today)
//! only stores and reads. With one replica the high watermark follows what
//! the log has stored; the last stable offset is the smaller of it and the
//! first offset of the oldest open transaction, which the log's producer
//! state knows (its markers close transactions).
//!
//! [`ShardPartitions`] is one shard's set of partitions; [`PartitionOp`]
//! is the typed work other shards (and later brokers) send it, and
//! [`PartitionClient`] the way handlers reach a partition wherever it is.

pub(crate) mod cleaning;
mod client;
mod directory;
mod ops;
mod shard_partitions;

pub(crate) use cleaning::CleanerSettings;
pub(crate) use client::{PartitionClient, SendToShard};
pub(crate) use directory::claim as claim_partition_dir;
pub(crate) use ops::{Appended, PartitionOp, ReadAnswer, ReadSpec};
pub(crate) use shard_partitions::{ShardPartitions, TopicLogStats};

use crate::log::batch::BatchHeader;
use crate::log::LogConfig;
use crate::storage::{GroupCommit, Log, StorageError};
use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{select, Either};
use std::cell::{Cell, RefCell};
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};
use uuid::Uuid;

type Waiter = Rc<RefCell<Option<oneshot::Sender<()>>>>;

/// How long a fetch's read may take even when its `max_wait_ms` is spent.
const MIN_READ_PATIENCE: Duration = Duration::from_millis(20);

/// The whole batches of `records` (stored batches, in offset order) that
/// start below `upper`: a read_committed read stops at the stable offset.
fn batches_below(records: Bytes, upper: i64) -> Bytes {
    let mut end = 0;
    while let Some(head) = records.get(end..end + crate::log::batch::LOG_OVERHEAD) {
        let base_offset = i64::from_be_bytes(head[..8].try_into().unwrap_or([0; 8]));
        let length = i32::from_be_bytes(head[8..12].try_into().unwrap_or([0; 4]));
        let next = end + crate::log::batch::LOG_OVERHEAD + usize::try_from(length).unwrap_or(usize::MAX / 2);
        if base_offset >= upper || next > records.len() {
            break;
        }
        end = next;
    }
    records.slice(..end)
}

/// The offsets a partition moves, shared with its log's progress callback.
#[derive(Default)]
pub(crate) struct PartitionState {
    high_watermark: Cell<i64>,
    waiters: RefCell<Vec<Waiter>>,
}

impl PartitionState {
    /// The log stored everything below `offset`: with one replica that is
    /// the high watermark.
    fn stored(&self, offset: i64) {
        if offset <= self.high_watermark.get() {
            return;
        }
        self.high_watermark.set(offset);
        for waiter in self.waiters.borrow_mut().drain(..) {
            if let Some(tx) = waiter.borrow_mut().take() {
                let _ = tx.send(());
            }
        }
    }

    fn wake_all(&self) {
        for waiter in self.waiters.borrow_mut().drain(..) {
            if let Some(tx) = waiter.borrow_mut().take() {
                let _ = tx.send(());
            }
        }
    }
}

pub(crate) struct Partition {
    topic_id: Uuid,
    leader_epoch: i32,
    log: RefCell<Box<dyn Log>>,
    state: Rc<PartitionState>,
}

impl Partition {
    fn new(topic_id: Uuid, leader_epoch: i32, log: Box<dyn Log>, state: Rc<PartitionState>) -> Partition {
        let stored = log.offsets().stored_end;
        state.high_watermark.set(stored);
        Partition {
            topic_id,
            leader_epoch,
            log: RefCell::new(log),
            state,
        }
    }

    /// Takes a partition out of service: its waiters are woken, and its
    /// log is handed back unless an operation still holds the partition.
    fn into_log(partition: Rc<Partition>) -> Option<Box<dyn Log>> {
        partition.state.wake_all();
        Rc::try_unwrap(partition).ok().map(|p| p.log.into_inner())
    }

    pub(crate) fn high_watermark(&self) -> i64 {
        self.state.high_watermark.get()
    }

    /// Below it every transaction is decided: the high watermark, or the
    /// first offset of the oldest open transaction if that is lower.
    pub(crate) fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.log
            .borrow()
            .first_unstable_offset()
            .map_or(hw, |first| first.min(hw))
    }

    pub(crate) fn has_open_transaction(&self) -> bool {
        self.log.borrow().first_unstable_offset().is_some()
    }

    pub(crate) fn producers(&self) -> Vec<crate::log::producer_state::ProducerSummary> {
        self.log.borrow().producers()
    }

    pub(crate) fn log_start_offset(&self) -> i64 {
        self.log.borrow().offsets().log_start
    }

    /// Below this, cluster mode's WAL holds nothing a reader or a new
    /// leader needs: the log start, or the end of what object storage
    /// holds as segments if that is higher.
    pub(crate) fn wal_floor(&self) -> i64 {
        let log = self.log.borrow();
        log.offsets().log_start.max(log.remote_end().unwrap_or(i64::MIN))
    }

    /// A client's `current_leader_epoch` against ours: newer is unknown to
    /// us, older is fenced, -1 means "not checked".
    pub(crate) fn check_epoch(&self, current: i32) -> Result<(), StorageError> {
        match current {
            -1 => Ok(()),
            e if e == self.leader_epoch => Ok(()),
            e if e > self.leader_epoch => Err(StorageError::UnknownEpoch),
            _ => Err(StorageError::FencedEpoch),
        }
    }

    /// The leader epoch this partition was opened at.
    pub(crate) fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// Appends a validated batch; answers once it is stored (and, with
    /// acks=all, synced through the shard's group commit, or in cluster
    /// mode committed to the WAL in object storage and etcd, which makes
    /// the local sync unneeded: a leader's local log is rebuilt from the
    /// WAL whenever it may differ).
    async fn append(
        &self,
        batch: Bytes,
        header: BatchHeader,
        config: &LogConfig,
        acks: i16,
        group_commit: &Rc<GroupCommit>,
        wal: Option<(&crate::cluster::ShardWal, &crate::topics::TopicPartition)>,
    ) -> Result<Appended, StorageError> {
        if batch.len() > config.max_message_bytes {
            return Err(StorageError::TooLarge(format!(
                "batch of {} bytes exceeds max.message.bytes {}",
                batch.len(),
                config.max_message_bytes
            )));
        }
        let count = i64::from(header.last_offset_delta) + 1;
        let mut appending = self.log.borrow_mut().append(&batch, header, config)?;
        let durable = match wal {
            Some((wal, tp)) => {
                if !appending.duplicate {
                    let stored = std::mem::take(&mut appending.stored_parts);
                    wal.add(
                        tp,
                        self.topic_id,
                        self.leader_epoch,
                        appending.base_offset,
                        appending.base_offset + count,
                        stored,
                    )?;
                }
                (acks == -1).then(|| wal.durable(tp, appending.base_offset + 1))
            }
            None => None,
        };
        let file = appending.stored.await?;
        match durable {
            Some(durable) => durable.await?,
            None if acks == -1 => {
                if let Some(file) = file {
                    group_commit
                        .sync(file)
                        .await
                        .map_err(|e| StorageError::io("fdatasync", &e))?;
                }
            }
            None => {}
        }
        Ok(Appended {
            base_offset: appending.base_offset,
            log_append_time: appending.log_append_time,
            log_start_offset: self.log_start_offset(),
        })
    }

    /// Whole batches from the spec's offset up to the high watermark.
    async fn read(&self, spec: &ReadSpec) -> Result<ReadAnswer, StorageError> {
        let (offset, answer_by) = (spec.offset, spec.answer_by);
        let (high_watermark, last_stable_offset) = (self.high_watermark(), self.last_stable_offset());
        let log_start_offset = self.log_start_offset();
        // A read_committed consumer reads what is decided: up to the
        // stable offset.
        let upper = match spec.read_committed {
            true => last_stable_offset,
            false => high_watermark,
        };
        // Caught up: no read at all (the common long-poll case).
        let max_bytes = match offset >= upper && offset <= high_watermark {
            true => 0,
            false if self.log.borrow().reads_remote(offset) => spec.remote_max_bytes,
            false => spec.max_bytes,
        };
        let (records, error) = if max_bytes == 0 {
            // Caught up, or the request's remote reading is spent: nothing
            // this time.
            (Bytes::new(), None)
        } else {
            let read = self.log.borrow().read(offset, max_bytes, true);
            let outcome = match answer_by {
                Some(at) => {
                    // A moment at least, so a read the cache can answer
                    // (a remote one is a task of its own) gets to run.
                    let patience = at
                        .saturating_duration_since(Instant::now())
                        .max(MIN_READ_PATIENCE);
                    let timer = pin!(glommio::timer::sleep(patience));
                    match select(read, timer).await {
                        Either::Left((outcome, _)) => outcome,
                        Either::Right(_) => Ok(Bytes::new()),
                    }
                }
                None => read.await,
            };
            match outcome {
                Ok(records) if upper < high_watermark => (batches_below(records, upper), None),
                Ok(records) => (records, None),
                Err(e) => (Bytes::new(), Some(e)),
            }
        };
        let aborted = spec.read_committed.then(|| {
            let mut aborted = self.log.borrow().aborted_transactions(offset, upper);
            // kafkajs walks the list in first-offset order.
            aborted.sort_unstable_by_key(|(_, first)| *first);
            aborted
        });
        Ok(ReadAnswer {
            error,
            high_watermark,
            last_stable_offset,
            log_start_offset,
            records,
            aborted,
        })
    }

    /// ListOffsets for one timestamp or special value: (offset, timestamp).
    /// "Latest" is the stable offset for a read_committed consumer.
    async fn list_offset(&self, timestamp: i64, read_committed: bool) -> Result<(i64, i64), StorageError> {
        let lookup = match timestamp {
            -1 if read_committed => return Ok((self.last_stable_offset(), -1)),
            -1 => return Ok((self.high_watermark(), -1)),
            -2 | -4 | -5 => return Ok((self.log_start_offset(), -1)),
            -3 => self.log.borrow().max_timestamp(),
            ts if ts >= 0 => self.log.borrow().offset_for_timestamp(ts),
            other => return Err(StorageError::Invalid(format!("unknown timestamp {other}"))),
        };
        Ok(lookup.await?.unwrap_or((-1, -1)))
    }

    /// OffsetForLeaderEpoch: the end of `epoch` as (epoch, end offset),
    /// from the epochs that wrote this log; a later epoch than this
    /// leader's has none yet.
    fn epoch_end(&self, epoch: i32) -> (i32, i64) {
        if epoch > self.leader_epoch {
            return (-1, -1);
        }
        self.log.borrow().end_offset_for_epoch(epoch)
    }

    async fn delete_records(&self, offset: i64) -> Result<i64, StorageError> {
        let hw = self.high_watermark();
        let done = self.log.borrow_mut().delete_records(offset, hw)?;
        done.await
    }

    /// Leaves `waiter` to be woken when the high watermark passes `offset`;
    /// `false` if it already has.
    fn watch(&self, offset: i64, waiter: &Waiter) -> bool {
        if self.high_watermark() > offset {
            return false;
        }
        let mut waiters = self.state.waiters.borrow_mut();
        waiters.retain(|w| w.borrow().as_ref().is_some_and(|tx| !tx.is_canceled()));
        waiters.push(waiter.clone());
        true
    }
}

/// Waits `interval`, or until the shard drains: false then. The beat of a
/// shard's periodic work (retention, WAL folds, taking up leadership).
pub(crate) async fn next_tick(interval: std::time::Duration, drain: &chronik_shard::Signal) -> bool {
    let sleep = pin!(glommio::timer::sleep(interval));
    let drained = pin!(drain.wait());
    matches!(select(sleep, drained).await, Either::Left(_))
}
