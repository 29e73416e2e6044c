//! The typed work a shard does for a partition it owns, as other shards
//! (and later other brokers) send it. Everything here crosses threads.

use crate::log::batch::BatchHeader;
use crate::storage::StorageError;
use crate::topics::TopicPartition;
use bytes::Bytes;
use futures::channel::oneshot;
use uuid::Uuid;

/// One partition's share of a Fetch.
#[derive(Debug, Clone)]
pub(crate) struct ReadSpec {
    pub tp: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
    /// The client's `current_leader_epoch` (-1: unchecked).
    pub current_leader_epoch: i32,
    /// When the fetch must answer (its `max_wait_ms`): a read still going
    /// then (one from object storage) is answered empty and goes on
    /// filling the read cache for the next fetch, so it does not hold up
    /// the request's other partitions.
    pub answer_by: Option<std::time::Instant>,
    /// At most this much from object storage (0: none): what the fetch's
    /// limit leaves once every earlier partition is counted at its own
    /// limit, so one request cannot set off a remote read per partition
    /// (as Kafka counts remote partitions, KAFKA-19462).
    pub remote_max_bytes: usize,
    /// isolation_level=read_committed: up to the last stable offset, with
    /// the aborted transactions in that range.
    pub read_committed: bool,
}

/// A stored append.
#[derive(Debug, Clone)]
pub(crate) struct Appended {
    pub base_offset: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// A partition's answer to a read: its offsets always (Kafka names the
/// bounds even with OFFSET_OUT_OF_RANGE), the records or why not.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadAnswer {
    pub error: Option<StorageError>,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
    /// For a read_committed read: the aborted transactions among the
    /// records, (producer id, first offset), by first offset.
    pub aborted: Option<Vec<(i64, i64)>>,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

pub(crate) enum PartitionOp {
    Append {
        tp: TopicPartition,
        batch: Bytes,
        header: BatchHeader,
        acks: i16,
        reply: Reply<Appended>,
    },
    Read {
        parts: Vec<ReadSpec>,
        reply: oneshot::Sender<Vec<Result<ReadAnswer, StorageError>>>,
    },
    /// Resolves the returned receiver when any part's high watermark
    /// passes its offset.
    Watch {
        parts: Vec<(TopicPartition, i64)>,
        reply: oneshot::Sender<oneshot::Receiver<()>>,
    },
    ListOffset {
        tp: TopicPartition,
        timestamp: i64,
        /// isolation_level=read_committed: "latest" is the stable offset.
        read_committed: bool,
        current_leader_epoch: i32,
        reply: Reply<(i64, i64)>,
    },
    EpochEnd {
        tp: TopicPartition,
        epoch: i32,
        current_leader_epoch: i32,
        reply: Reply<(i32, i64)>,
    },
    DeleteRecords {
        tp: TopicPartition,
        offset: i64,
        reply: Reply<i64>,
    },
    /// Close and remove every partition of a deleted topic this shard owns.
    DropTopic {
        name: String,
        topic_id: Uuid,
        reply: Reply<()>,
    },
}
