//! One transactional id's coordinator state and Kafka's transition rules
//! (TransactionCoordinator / TransactionMetadata), kept free of I/O so the
//! rules can be tested alone. See docs/transactions-notes.md.

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Kafka's transaction states (their ids are the persisted form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// As DescribeTransactions and ListTransactions name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    pub(crate) const NAMES: [&'static str; 8] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    fn preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// An offset a transaction commits for a group when it commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// What the coordinator keeps per transactional id (durable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    /// The epoch before the last bump: an InitProducerId retry naming it
    /// gets the current one again (KIP-360).
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups AddOffsetsToTxn added (their offsets commit with the
    /// transaction).
    pub groups: BTreeSet<String>,
    pub offsets: Vec<PendingOffset>,
    /// When the transaction began (-1: none open).
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// Counts the id's transactions: which one a background completion is
    /// for.
    #[serde(default)]
    pub sequence: u64,
}

/// Producer epochs at or above this give a new producer id instead.
pub(crate) const MAX_EPOCH: i16 = i16::MAX - 1;

impl TxnMeta {
    pub(crate) fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMeta {
        TxnMeta {
            producer_id,
            epoch: -1,
            last_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            offsets: Vec::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            sequence: 0,
        }
    }

    /// A producer's call names this producer id and epoch: anything else
    /// is fenced (a newer producer holds the id) or mapped wrong.
    pub(crate) fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
        if producer_id != self.producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if epoch != self.epoch {
            return Err(ResponseError::ProducerFenced);
        }
        Ok(())
    }

    /// InitProducerId for an id in a state that allows it (not Ongoing,
    /// not preparing): the epoch goes up by one; `Err(true)` asks for a
    /// new producer id (the epoch is spent). Returns whether it bumped
    /// (a retry of the last bump does not).
    pub(crate) fn bump(
        &mut self,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        now_ms: i64,
    ) -> Result<bool, ResponseError> {
        if let Some((pid, epoch)) = expected {
            let retry = pid == self.producer_id && epoch == self.last_epoch && self.last_epoch >= 0;
            if retry {
                return Ok(false);
            }
            if self.epoch != -1 && (pid != self.producer_id || epoch != self.epoch) {
                return Err(ResponseError::ProducerFenced);
            }
        }
        self.last_epoch = if expected.is_some() { self.epoch } else { -1 };
        self.epoch += 1;
        self.timeout_ms = timeout_ms;
        self.reset(TxnState::Empty, now_ms);
        Ok(true)
    }

    /// A new producer id at epoch 0 (the old one's epochs are spent).
    pub(crate) fn rotate(&mut self, producer_id: i64, timeout_ms: i32, now_ms: i64) {
        self.producer_id = producer_id;
        self.epoch = 0;
        self.last_epoch = -1;
        self.timeout_ms = timeout_ms;
        self.reset(TxnState::Empty, now_ms);
    }

    fn reset(&mut self, state: TxnState, now_ms: i64) {
        self.state = state;
        self.partitions.clear();
        self.groups.clear();
        self.offsets.clear();
        self.start_ms = -1;
        self.last_update_ms = now_ms;
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: may this transaction take
    /// more partitions now? `Ok(false)`: all already in (nothing to write).
    pub(crate) fn can_add(&self, new: &[(String, i32)]) -> Result<bool, ResponseError> {
        if self.state.preparing() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(self.state != TxnState::Ongoing || new.iter().any(|p| !self.partitions.contains(p)))
    }

    pub(crate) fn add(&mut self, new: Vec<(String, i32)>, now_ms: i64) {
        if self.state != TxnState::Ongoing {
            self.reset(TxnState::Ongoing, now_ms);
            self.start_ms = now_ms;
            self.sequence += 1;
        }
        self.partitions.extend(new);
        self.last_update_ms = now_ms;
    }

    /// EndTxn: `Ok(true)` = prepare (write markers), `Ok(false)` = a retry
    /// of what is already done.
    pub(crate) fn can_end(&self, commit: bool) -> Result<bool, ResponseError> {
        match (self.state, commit) {
            (TxnState::Ongoing, _) => Ok(true),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(false),
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    pub(crate) fn prepare(&mut self, commit: bool, now_ms: i64) {
        self.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.last_update_ms = now_ms;
    }

    /// Every marker is written: the transaction is over.
    pub(crate) fn complete(&mut self, now_ms: i64) {
        let done = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        let start = self.start_ms;
        self.reset(done, now_ms);
        self.start_ms = start;
    }

    /// An Ongoing transaction past its timeout, as of `now_ms`.
    pub(crate) fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.start_ms >= 0
            && self.start_ms + i64::from(self.timeout_ms) < now_ms
    }

    /// Fences the producer (epoch + 1) and prepares the abort, for a
    /// timeout or an InitProducerId that finds the transaction open.
    pub(crate) fn fence_and_abort(&mut self, now_ms: i64) {
        self.epoch = self.epoch.saturating_add(1);
        self.last_epoch = -1;
        self.prepare(false, now_ms);
    }
}

/// Kafka's error for a fenced producer at old request versions.
pub(crate) fn fenced_for(version: i16, new_since: i16, error: ResponseError) -> ResponseError {
    if error == ResponseError::ProducerFenced && version < new_since {
        ResponseError::InvalidProducerEpoch
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> (String, i32) {
        ("t".to_string(), p)
    }

    #[test]
    fn a_transactions_life_follows_kafkas_table() {
        let mut meta = TxnMeta::new(7, 60_000, 0);
        assert_eq!(meta.bump(None, 60_000, 0), Ok(true));
        assert_eq!((meta.producer_id, meta.epoch), (7, 0));
        assert_eq!(meta.can_end(true), Err(ResponseError::InvalidTxnState), "Empty");
        assert_eq!(meta.can_add(&[tp(0)]), Ok(true));
        meta.add(vec![tp(0)], 10);
        assert_eq!(meta.can_add(&[tp(0)]), Ok(false), "already in");
        assert_eq!(meta.can_end(true), Ok(true));
        meta.prepare(true, 20);
        assert_eq!(meta.can_add(&[tp(1)]), Err(ResponseError::ConcurrentTransactions));
        assert_eq!(meta.can_end(true), Err(ResponseError::ConcurrentTransactions));
        assert_eq!(meta.can_end(false), Err(ResponseError::InvalidTxnState));
        meta.complete(30);
        assert_eq!(meta.state, TxnState::CompleteCommit);
        assert_eq!(meta.can_end(true), Ok(false), "a retried commit is answered 0");
        assert_eq!(meta.check_producer(7, 0), Ok(()));
        assert_eq!(meta.check_producer(7, 1), Err(ResponseError::ProducerFenced));
        assert_eq!(
            meta.check_producer(8, 0),
            Err(ResponseError::InvalidProducerIdMapping)
        );
    }

    #[test]
    fn init_retries_and_fencing() {
        let mut meta = TxnMeta::new(7, 60_000, 0);
        meta.bump(None, 60_000, 0).unwrap();
        // KIP-360: bump naming the current epoch, then a retry of it.
        assert_eq!(meta.bump(Some((7, 0)), 60_000, 0), Ok(true));
        assert_eq!(meta.epoch, 1);
        assert_eq!(meta.bump(Some((7, 0)), 60_000, 0), Ok(false));
        assert_eq!(meta.epoch, 1);
        assert_eq!(
            meta.bump(Some((7, 5)), 60_000, 0),
            Err(ResponseError::ProducerFenced)
        );
        meta.add(vec![tp(0)], 100);
        assert!(!meta.timed_out(60_100));
        assert!(meta.timed_out(60_101));
        meta.fence_and_abort(60_101);
        assert_eq!((meta.state, meta.epoch), (TxnState::PrepareAbort, 2));
        assert_eq!(
            fenced_for(1, 2, ResponseError::ProducerFenced),
            ResponseError::InvalidProducerEpoch
        );
        assert_eq!(
            fenced_for(2, 2, ResponseError::ProducerFenced),
            ResponseError::ProducerFenced
        );
    }
}
