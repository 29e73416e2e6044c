//! Idempotent producers: per producer id, its epoch and its last five
//! batches' sequence ranges, so a retried batch is recognised and answered
//! with its original offset, and a gap or a stale epoch is refused.
//!
//! Check and record happen inside one synchronous append on the
//! partition's owning shard, so no other append can slip between them.

use super::batch::BatchHeader;
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer (Kafka's max.in.flight bound for
/// idempotence).
pub const REMEMBERED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRange {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchRange>,
}

/// What an append should do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not an idempotent batch, or the next one expected: append it.
    Append,
    /// Seen before: answer with the original offsets, append nothing.
    Duplicate { base_offset: i64 },
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

impl ProducerStates {
    /// Decides what to do with `header` (base offset not yet assigned).
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, ResponseError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            // A producer's first batch in this partition starts at 0.
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ResponseError::OutOfOrderSequenceNumber)
            };
        };
        if header.producer_epoch < entry.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if header.producer_epoch > entry.epoch {
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        let last_sequence = header.last_sequence();
        if let Some(seen) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: seen.base_offset,
            });
        }
        match entry.batches.back() {
            Some(last) if header.base_sequence != next_sequence(last.last_sequence) => {
                Err(ResponseError::OutOfOrderSequenceNumber)
            }
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Records an appended batch (with its assigned base offset).
    pub fn record(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchRange {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
    }

    /// Forgets batches at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.base_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_idempotent_batch, parse_header};

    fn header(pid: i64, epoch: i16, seq: i32, records: usize, base_offset: i64) -> BatchHeader {
        let recs: Vec<(&[u8], &[u8])> = vec![(b"k", b"v"); records];
        let mut h = parse_header(&build_idempotent_batch(0, 0, pid, epoch, seq, &recs)).unwrap();
        h.base_offset = base_offset;
        h
    }

    #[test]
    fn in_order_duplicate_gap_and_stale_epoch() {
        let mut states = ProducerStates::default();
        let first = header(1, 0, 0, 3, 0);
        assert_eq!(states.check(&first), Ok(SequenceCheck::Append));
        states.record(&first);
        // Retry of the same batch: its original offset.
        assert_eq!(
            states.check(&header(1, 0, 0, 3, 99)),
            Ok(SequenceCheck::Duplicate { base_offset: 0 })
        );
        // Next in order.
        let second = header(1, 0, 3, 2, 3);
        assert_eq!(states.check(&second), Ok(SequenceCheck::Append));
        states.record(&second);
        // A gap.
        assert_eq!(
            states.check(&header(1, 0, 9, 1, 5)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        // A new epoch starts again at 0; afterwards the old epoch is stale.
        let bumped = header(1, 1, 0, 1, 5);
        assert_eq!(states.check(&bumped), Ok(SequenceCheck::Append));
        states.record(&bumped);
        assert_eq!(
            states.check(&header(1, 0, 5, 1, 6)),
            Err(ResponseError::InvalidProducerEpoch)
        );
        // Unknown producer starting mid-stream.
        assert_eq!(
            states.check(&header(2, 0, 7, 1, 6)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut states = ProducerStates::default();
        for i in 0..7 {
            states.record(&header(1, 0, i, 1, i64::from(i)));
        }
        assert_eq!(
            states.check(&header(1, 0, 6, 1, 0)),
            Ok(SequenceCheck::Duplicate { base_offset: 6 })
        );
        assert_eq!(
            states.check(&header(1, 0, 2, 1, 0)),
            Ok(SequenceCheck::Duplicate { base_offset: 2 })
        );
        assert_eq!(
            states.check(&header(1, 0, 1, 1, 0)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        states.truncate_from(5);
        assert_eq!(states.check(&header(1, 0, 5, 1, 0)), Ok(SequenceCheck::Append));
    }
}
