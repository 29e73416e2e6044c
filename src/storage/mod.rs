//! Storage of one partition's batches behind one interface, [`Log`]: the
//! partition layer above it decides offsets' meaning (high watermark,
//! stable offset, leader epoch); a log only stores and reads batches.
//!
//! [`LocalLog`] keeps them in local segments, written with O_DIRECT from
//! aligned buffers (`direct`), the last batches kept in memory for the
//! consumers that follow producers (`recent`), older ones read with
//! O_DIRECT into chunks read ahead of each consumer (`direct_read`; the
//! kernel's read-ahead, `read_ahead`, where segments are written
//! buffered). None of its disk work runs
//! on the shard thread: writes, reads, fsyncs, index and recovery-point
//! writes, file removal and recovery go to the executor's blocking pool,
//! so a cold read or a slow disk stalls only the requests that need it.
//! Later logs (object storage) implement the same trait.

mod blocking;
mod direct;
mod direct_read;
mod error;
mod group_commit;
mod local;
mod read_ahead;
mod recent;

pub(crate) use blocking::run_blocking;
pub use direct::WriteMode;
pub(crate) use direct_read::{read_direct_chunks, ReadAheadBudget};
pub(crate) use error::StorageError;
pub(crate) use group_commit::GroupCommit;
pub(crate) use local::{LocalLog, LocalLogOptions};
pub(crate) use recent::{follow_host_memory, HostMemory};
pub(crate) use recent::{RecentBudget, RecentView};

use crate::log::batch::BatchHeader;
use crate::log::LogConfig;
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use std::fs::File;
use std::sync::Arc;

/// A future that owns what it needs (no borrow of the log), so the log
/// may be used again while it runs.
pub(crate) type LogFuture<T> = LocalBoxFuture<'static, Result<T, StorageError>>;

/// An accepted append: its offsets are decided, its bytes on their way.
pub(crate) struct Appending {
    pub base_offset: i64,
    /// The broker's timestamp for LogAppendTime topics, else -1.
    pub log_append_time: i64,
    /// An idempotent producer's retry of a batch already in the log, at
    /// `base_offset`: nothing new was written.
    pub duplicate: bool,
    /// Resolves once the batch is stored (readable by fetches); carries
    /// the file to fsync for acks=all.
    pub stored: LogFuture<Option<Arc<File>>>,
    /// The batch as stored (offsets and epoch assigned), in the pieces the
    /// log writes: what cluster mode's WAL sends too, without a copy.
    /// Empty for a duplicate.
    pub stored_parts: Vec<Bytes>,
}

/// The offsets a log reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogOffsets {
    pub log_start: i64,
    /// Where the next batch goes.
    pub log_end: i64,
    /// Everything below this is stored and readable.
    pub stored_end: i64,
}

/// The storage of one partition.
pub(crate) trait Log {
    fn offsets(&self) -> LogOffsets;

    /// Accepts a validated batch: producer sequence checked, offsets
    /// assigned and the batch queued to be stored, in call order.
    fn append(
        &mut self,
        batch: &Bytes,
        header: BatchHeader,
        config: &LogConfig,
    ) -> Result<Appending, StorageError>;

    /// Whole batches from `offset` (at least one with `at_least_one`) up
    /// to `max_bytes`, of what is stored. `OutOfRange` outside the log.
    fn read(&self, offset: i64, max_bytes: usize, at_least_one: bool) -> LogFuture<Bytes>;

    /// Whether a read of `offset` goes to object storage.
    fn reads_remote(&self, _offset: i64) -> bool {
        false
    }

    /// The first offset of the oldest open transaction (`None`: none is
    /// open); the last stable offset is the smaller of it and the high
    /// watermark.
    fn first_unstable_offset(&self) -> Option<i64>;

    /// OffsetForLeaderEpoch: the largest epoch not above `epoch` that
    /// wrote here, and where the next one began (the log end for the
    /// latest); (-1, -1) for an epoch newer than any here.
    fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64);

    /// Where what object storage holds as segments ends (tiered logs with
    /// anything uploaded): cluster mode's WAL need not keep what lies
    /// below.
    fn remote_end(&self) -> Option<i64> {
        None
    }

    /// The aborted transactions a read_committed read of `[from, to)` is
    /// told about: (producer id, first offset), by first offset.
    fn aborted_transactions(&self, from: i64, to: i64) -> Vec<(i64, i64)>;

    /// The producers the log's producer state holds (DescribeProducers).
    fn producers(&self) -> Vec<crate::log::producer_state::ProducerSummary>;

    /// The first record at or after `timestamp`: (offset, timestamp).
    fn offset_for_timestamp(&self, timestamp: i64) -> LogFuture<Option<(i64, i64)>>;

    /// The earliest record with the largest timestamp.
    fn max_timestamp(&self) -> LogFuture<Option<(i64, i64)>>;

    /// DeleteRecords: the log starts at `offset` (at most `limit`, the
    /// high watermark; -1 = `limit`). Resolves to the new start once it is
    /// durable.
    fn delete_records(&mut self, offset: i64, limit: i64) -> Result<LogFuture<i64>, StorageError>;

    /// The topic's catalog entry (its metadata and configs as JSON) as it
    /// is now: a tiered log keeps the copy in the bucket current, so a
    /// broker rebuilt from there gets the topic as it was last configured.
    fn note_topic(&self, _entry: &bytes::Bytes) {}

    /// Retention: removes whole segments past the topic's limits, none
    /// reaching `keep_from` (not yet safe to delete). Returns how many went;
    /// their files are removed in the background.
    fn apply_retention(&mut self, config: &LogConfig, keep_from: i64) -> Result<usize, StorageError>;

    fn size_bytes(&self) -> u64;

    /// Compacted topics: (bytes the cleaner may clean, of which not yet
    /// cleaned).
    fn dirty_bytes(&self, _config: &LogConfig, _now: i64) -> (u64, u64) {
        (0, 0)
    }

    /// Compaction: the cleaning this log is due now, if any (local logs of
    /// compacted topics; a tiered log is never compacted).
    fn clean_candidate(
        &self,
        _config: &LogConfig,
        _now: i64,
        _map_budget_bytes: usize,
        _throttle: std::sync::Arc<crate::log::cleaner::Throttle>,
    ) -> Option<crate::log::CleanCandidate> {
        None
    }

    /// Puts a finished cleaning in place (see
    /// `PartitionLog::install_cleaned`); what is left runs off the shard.
    fn install_cleaned(
        &mut self,
        result: crate::log::cleaner::CleanResult,
    ) -> Result<Option<crate::log::Installed>, StorageError> {
        drop(result);
        Ok(None)
    }

    /// Graceful close once every queued write is stored.
    fn close(self: Box<Self>) -> LogFuture<()>;

    /// Removes the log and its files once queued writes are done.
    fn delete(self: Box<Self>) -> LogFuture<()>;
}
