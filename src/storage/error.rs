//! Why a partition operation failed, as storage and the partition layer
//! say it. Kafka error codes are chosen from it only at the handler edge.

use kafka_protocol::ResponseError;

#[derive(Debug, Clone)]
pub(crate) enum StorageError {
    /// The topic or partition does not exist.
    UnknownPartition,
    /// This broker does not lead the partition (or not at that epoch).
    NotLeader,
    /// The client's leader epoch is older than ours.
    FencedEpoch,
    /// The client's leader epoch is newer than ours.
    UnknownEpoch,
    /// An offset outside the log.
    OutOfRange,
    /// A batch larger than the topic allows.
    TooLarge(String),
    /// The idempotent-producer checks refused the batch.
    Producer(ResponseError),
    /// The disk failed; `what` was being done.
    Io { what: &'static str, error: String },
    /// The shard (later: broker) that owns the partition cannot be reached.
    Unreachable(String),
    /// A request that makes no sense (an unknown special timestamp).
    Invalid(String),
    /// Cluster mode: the write was not confirmed durable in time.
    TimedOut(String),
}

impl StorageError {
    pub(crate) fn io(what: &'static str, error: &std::io::Error) -> StorageError {
        StorageError::Io {
            what,
            error: error.to_string(),
        }
    }

    /// The Kafka error this is answered with.
    pub(crate) fn kafka(&self) -> ResponseError {
        match self {
            StorageError::UnknownPartition => ResponseError::UnknownTopicOrPartition,
            StorageError::NotLeader => ResponseError::NotLeaderOrFollower,
            StorageError::FencedEpoch => ResponseError::FencedLeaderEpoch,
            StorageError::UnknownEpoch => ResponseError::UnknownLeaderEpoch,
            StorageError::OutOfRange => ResponseError::OffsetOutOfRange,
            StorageError::TooLarge(_) => ResponseError::MessageTooLarge,
            StorageError::Producer(e) => *e,
            StorageError::Io { .. } | StorageError::Unreachable(_) => ResponseError::KafkaStorageError,
            StorageError::Invalid(_) => ResponseError::InvalidRequest,
            StorageError::TimedOut(_) => ResponseError::RequestTimedOut,
        }
    }

    pub(crate) fn code(&self) -> i16 {
        self.kafka().code()
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::TooLarge(m)
            | StorageError::Unreachable(m)
            | StorageError::Invalid(m)
            | StorageError::TimedOut(m) => f.write_str(m),
            StorageError::Io { what, error } => write!(f, "{what} failed: {error}"),
            other => write!(f, "{}", other.kafka()),
        }
    }
}
