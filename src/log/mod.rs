//! The partition log: segments, indexes, recovery, retention, producer
//! sequence state. Synchronous and single-owner by design: each partition
//! belongs to one shard, which alone calls into its log, so there are no
//! locks; the one slow operation (fsync) is handed by the caller to a
//! blocking thread.

pub mod batch;
pub mod cleaner;
pub mod compression;
pub mod control;
pub mod index;
pub mod keyed_log;
pub mod leader_epochs;
pub mod partition_log;
pub mod producer_state;
pub mod segment;
pub mod timestamps;
pub mod validator;

#[cfg(test)]
mod tests;

pub use partition_log::{
    AppendError, AppendOutcome, CleanCandidate, ClosedSegment, Installed, LogConfig, Naming, PartitionLog,
    PendingWrite, ReadEnd, ReadError, ReadPlan, RecoveryReport, Sealed, SpareSegment, TimestampPlan, Trimmed,
    Unwritten, Written, LOG_START_OFFSET, PRODUCER_STATE,
};
