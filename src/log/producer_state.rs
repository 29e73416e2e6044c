//! Idempotent producers: per producer id, its epoch and its last five
//! batches' sequence ranges, so a retried batch is recognised and answered
//! with its original offset, and a gap or a stale epoch is refused.
//! Transactional producers also have the first offset of their open
//! transaction (the partition's last stable offset is the oldest of
//! those), and the partition keeps the transactions its markers aborted,
//! which read_committed fetches are told about.
//!
//! Check and record happen inside one synchronous append on the
//! partition's owning shard, so no other append can slip between them.
//!
//! A producer idle for `PRODUCER_ID_EXPIRATION_MS` is forgotten (Kafka's
//! `producer.id.expiration.ms`), so the map is bounded by the producers
//! active in the last day, not by every producer that ever wrote. The
//! state is snapshotted in a small binary form (version, CRC-32C, then
//! fixed-width entries) that the caller may build on the shard thread and
//! write anywhere: see `snapshot_bytes` and `decode_snapshot`.

use super::batch::BatchHeader;
use super::control::Marker;
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::SystemTime;

/// Batches remembered per producer (Kafka's max.in.flight bound for
/// idempotence).
pub const REMEMBERED_BATCHES: usize = 5;

/// Kafka's `producer.id.expiration.ms` default (one day). A constant, not a
/// setting: reaching the partition log from the config would mean threading
/// it through storage.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;

/// First byte of a snapshot; a reader refuses versions it does not know.
/// Version 2 adds open transactions and aborted ones; version 1 (no
/// transactions) is still read.
pub const SNAPSHOT_VERSION: u8 = 2;
/// version (1) + crc (4): the CRC covers everything after it.
const SNAPSHOT_CRC_END: usize = 5;
/// crc end + offset (8) + producer count (4).
const SNAPSHOT_HEADER: usize = SNAPSHOT_CRC_END + 12;
/// producer id (8) + epoch (2) + last timestamp (8) + batch count (1).
const ENTRY_HEADER: usize = 19;
/// Version 2: an entry's open transaction's first offset (-1: none).
const ENTRY_TXN: usize = 8;
/// producer id, first offset, last offset.
const ABORTED_SIZE: usize = 24;
/// base offset (8) + offset delta (4) + first and last sequence (4 + 4).
const BATCH_SIZE: usize = 20;

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

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
    /// Broker time (ms) of this producer's last append. The old JSON
    /// snapshot has none: such a producer counts as seen when it is loaded,
    /// so an upgrade forgets nobody early.
    #[serde(default = "wall_clock_ms")]
    pub last_timestamp: i64,
    /// The first offset of this producer's open transaction here.
    #[serde(default)]
    pub txn_first_offset: Option<i64>,
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// The first offset of its open transaction, or -1.
    pub txn_start_offset: i64,
}

/// A transaction its marker aborted: read_committed consumers drop this
/// producer's batches from `first_offset` to `last_offset` (the marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
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
    /// In offset order (markers are appended in order).
    #[serde(default)]
    aborted: Vec<AbortedTxn>,
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
        if header.is_control() {
            // A marker has no sequence; only a fenced epoch refuses it.
            return match self.producers.get(&header.producer_id) {
                Some(entry) if header.producer_epoch < entry.epoch => {
                    Err(ResponseError::InvalidProducerEpoch)
                }
                _ => Ok(SequenceCheck::Append),
            };
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

    /// Records an appended batch (with its assigned base offset), seen now.
    pub fn record(&mut self, header: &BatchHeader) {
        self.record_at(header, wall_clock_ms());
    }

    /// Records an appended batch seen at `now_ms` (broker time).
    ///
    /// Kafka dates a producer by its last batch's max timestamp; this uses
    /// the broker's clock instead, because a CreateTime can be arbitrarily
    /// old (mirrored or back-filled data) and here a forgotten producer
    /// resuming mid-sequence is refused with OUT_OF_ORDER_SEQUENCE_NUMBER
    /// (Kafka, since KIP-360, accepts it): expiring a producer that is
    /// still writing would break it. Batches replayed from the log at open
    /// count as seen then, which only ever keeps a producer longer.
    pub fn record_at(&mut self, header: &BatchHeader, now_ms: i64) {
        if !header.has_producer_id() || header.is_control() {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        entry.last_timestamp = entry.last_timestamp.max(now_ms);
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(header.base_offset);
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

    /// Records a transaction marker (a control batch, its offset assigned)
    /// seen at `now_ms`: the producer's open transaction here ends, and an
    /// abort is remembered for read_committed fetches.
    pub fn record_marker(&mut self, header: &BatchHeader, marker: Marker, now_ms: i64) {
        let entry = self.producers.entry(header.producer_id).or_default();
        entry.last_timestamp = entry.last_timestamp.max(now_ms);
        if header.producer_epoch > entry.epoch {
            // A marker written after an epoch bump (a fenced producer's
            // transaction aborted): later batches start a new sequence.
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if let Some(first_offset) = entry.txn_first_offset.take() {
            if marker == Marker::Abort {
                self.aborted.push(AbortedTxn {
                    producer_id: header.producer_id,
                    first_offset,
                    last_offset: header.base_offset,
                });
            }
        }
    }

    /// Every producer this partition remembers, by producer id.
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut all: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(id, e)| ProducerSummary {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_sequence),
                last_timestamp: e.last_timestamp,
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        all.sort_unstable_by_key(|p| p.producer_id);
        all
    }

    /// The first offset of the oldest open transaction: the partition's
    /// last stable offset, or `None` when no transaction is open.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers.values().filter_map(|e| e.txn_first_offset).min()
    }

    /// The aborted transactions a read_committed fetch of `[from, to)`
    /// must be told about: (producer id, first offset).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// The aborted transactions whose markers sit in `[from, to)`: what
    /// Kafka's `.txnindex` of the segment holding those offsets lists.
    pub fn aborted_with_marker_in(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.last_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions whose markers (producer id, offset)
    /// the cleaner removed: a read_committed consumer told of one would
    /// skip its producer's batches until an abort marker that is gone.
    pub fn forget_aborted(&mut self, markers: &[(i64, i64)]) {
        self.aborted
            .retain(|a| !markers.contains(&(a.producer_id, a.last_offset)));
    }

    /// Forgets aborted transactions wholly below `log_start` (retention
    /// deleted their batches).
    pub fn forget_aborted_before(&mut self, log_start: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }

    /// Forgets batches at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.base_offset < offset);
            if entry.txn_first_offset.is_some_and(|first| first >= offset) {
                entry.txn_first_offset = None;
            }
        }
        self.producers
            .retain(|_, e| !e.batches.is_empty() || e.txn_first_offset.is_some());
        self.aborted.retain(|a| a.last_offset < offset);
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Forgets producers whose last append is `expiration_ms` or more
    /// before `now_ms` (Kafka's `removeExpiredProducers`); returns how many.
    /// Called at open and meant for the periodic retention tick.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| !is_expired(e, now_ms, expiration_ms));
        before - self.producers.len()
    }

    /// The snapshot of every producer, as of `offset` (batches below it are
    /// in the state; the ones from it on are replayed at open).
    pub fn snapshot_bytes(&self, offset: i64) -> Vec<u8> {
        self.encode(offset, |_| true)
    }

    /// The snapshot leaving out producers expired at `now_ms`: taking a
    /// snapshot expires, even when the caller cannot mutate the state.
    pub fn snapshot_bytes_unexpired(&self, offset: i64, now_ms: i64, expiration_ms: i64) -> Vec<u8> {
        self.encode(offset, |e| !is_expired(e, now_ms, expiration_ms))
    }

    fn encode(&self, offset: i64, keep: impl Fn(&ProducerEntry) -> bool) -> Vec<u8> {
        // Sorted by producer id: the same state always gives the same bytes.
        let mut kept: Vec<(&i64, &ProducerEntry)> = self.producers.iter().filter(|(_, e)| keep(e)).collect();
        kept.sort_unstable_by_key(|(id, _)| **id);
        let size = SNAPSHOT_HEADER
            + kept
                .iter()
                .map(|(_, e)| ENTRY_HEADER + ENTRY_TXN + e.batches.len() * BATCH_SIZE)
                .sum::<usize>()
            + 4
            + self.aborted.len() * ABORTED_SIZE;
        let mut out = Vec::with_capacity(size);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(kept.len() as u32).to_be_bytes());
        for (id, entry) in kept {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.last_timestamp.to_be_bytes());
            out.extend_from_slice(&entry.txn_first_offset.unwrap_or(-1).to_be_bytes());
            // At most REMEMBERED_BATCHES (5), so one byte holds it.
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                let delta = (b.last_offset - b.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
                out.extend_from_slice(&delta.to_be_bytes());
                out.extend_from_slice(&b.first_sequence.to_be_bytes());
                out.extend_from_slice(&b.last_sequence.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            out.extend_from_slice(&a.producer_id.to_be_bytes());
            out.extend_from_slice(&a.first_offset.to_be_bytes());
            out.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out[SNAPSHOT_CRC_END..]);
        out[1..SNAPSHOT_CRC_END].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

/// An idle producer is forgotten, unless it has a transaction open here
/// (its coordinator aborts that on timeout, and the marker closes it).
fn is_expired(entry: &ProducerEntry, now_ms: i64, expiration_ms: i64) -> bool {
    entry.txn_first_offset.is_none() && now_ms.saturating_sub(entry.last_timestamp) >= expiration_ms
}

/// Why a snapshot cannot be used (the caller then replays the whole log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptSnapshot(pub String);

impl fmt::Display for CorruptSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt producer snapshot: {}", self.0)
    }
}

impl std::error::Error for CorruptSnapshot {}

/// Reads big-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CorruptSnapshot> {
        let Some((head, rest)) = self.0.split_first_chunk::<N>() else {
            return Err(CorruptSnapshot("truncated".into()));
        };
        self.0 = rest;
        Ok(*head)
    }
    fn i64(&mut self) -> Result<i64, CorruptSnapshot> {
        self.take().map(i64::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, CorruptSnapshot> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Result<u32, CorruptSnapshot> {
        self.take().map(u32::from_be_bytes)
    }
    fn i16(&mut self) -> Result<i16, CorruptSnapshot> {
        self.take().map(i16::from_be_bytes)
    }
    fn u8(&mut self) -> Result<u8, CorruptSnapshot> {
        self.take::<1>().map(|[b]| b)
    }
}

/// Decodes `snapshot_bytes`: the offset it was taken at and the state.
/// Anything but a whole, CRC-clean snapshot of a known version is refused.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(i64, ProducerStates), CorruptSnapshot> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != SNAPSHOT_VERSION && version != 1 {
        return Err(CorruptSnapshot(format!("unknown version {version}")));
    }
    let with_txns = version >= 2;
    let stored = r.u32()?;
    let computed = crc32c::crc32c(r.0);
    if stored != computed {
        return Err(CorruptSnapshot(format!(
            "crc mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    let offset = r.i64()?;
    let count = r.u32()? as usize;
    // Checked before allocating: a bad count must not reserve gigabytes.
    if count > r.0.len() / ENTRY_HEADER {
        return Err(CorruptSnapshot(format!("{count} producers cannot fit")));
    }
    let mut producers = HashMap::with_capacity(count);
    for _ in 0..count {
        let id = r.i64()?;
        let epoch = r.i16()?;
        let last_timestamp = r.i64()?;
        let txn_first_offset = match with_txns {
            true => Some(r.i64()?).filter(|o| *o >= 0),
            false => None,
        };
        let batch_count = usize::from(r.u8()?);
        if batch_count > REMEMBERED_BATCHES {
            return Err(CorruptSnapshot(format!(
                "{batch_count} batches for producer {id}"
            )));
        }
        let mut batches = VecDeque::with_capacity(batch_count);
        for _ in 0..batch_count {
            let base_offset = r.i64()?;
            let delta = r.u32()?;
            batches.push_back(BatchRange {
                base_offset,
                last_offset: base_offset + i64::from(delta),
                first_sequence: r.i32()?,
                last_sequence: r.i32()?,
            });
        }
        let entry = ProducerEntry {
            epoch,
            batches,
            last_timestamp,
            txn_first_offset,
        };
        if producers.insert(id, entry).is_some() {
            return Err(CorruptSnapshot(format!("producer {id} twice")));
        }
    }
    let mut aborted = Vec::new();
    if with_txns {
        let count = r.u32()? as usize;
        if count > r.0.len() / ABORTED_SIZE {
            return Err(CorruptSnapshot(format!(
                "{count} aborted transactions cannot fit"
            )));
        }
        for _ in 0..count {
            aborted.push(AbortedTxn {
                producer_id: r.i64()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
            });
        }
    }
    if !r.0.is_empty() {
        return Err(CorruptSnapshot(format!(
            "{} bytes after the last producer",
            r.0.len()
        )));
    }
    Ok((offset, ProducerStates { producers, aborted }))
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

    fn transactional(pid: i64, epoch: i16, seq: i32, base_offset: i64) -> BatchHeader {
        let mut h = header(pid, epoch, seq, 2, base_offset);
        h.attributes |= 0x10;
        h
    }

    fn marker(pid: i64, epoch: i16, base_offset: i64) -> BatchHeader {
        let bytes = crate::log::control::marker_batch(Marker::Commit, pid, epoch, 0, 0);
        let mut h = parse_header(&bytes).unwrap();
        h.base_offset = base_offset;
        h
    }

    #[test]
    fn open_transactions_hold_the_stable_offset_and_aborts_are_remembered() {
        let mut states = ProducerStates::default();
        states.record_at(&header(1, 0, 0, 1, 0), 0);
        assert_eq!(states.first_unstable_offset(), None);
        states.record_at(&transactional(7, 0, 0, 1), 0);
        states.record_at(&transactional(8, 0, 0, 3), 0);
        states.record_at(&transactional(7, 0, 2, 5), 0);
        assert_eq!(states.first_unstable_offset(), Some(1));
        // A marker has no sequence: checked for its epoch only.
        assert_eq!(states.check(&marker(7, 0, 7)), Ok(SequenceCheck::Append));
        assert_eq!(
            states.check(&marker(7, -1, 7)).err(),
            None.or(Some(ResponseError::InvalidProducerEpoch))
        );
        states.record_marker(&marker(7, 0, 7), Marker::Abort, 0);
        assert_eq!(states.first_unstable_offset(), Some(3));
        states.record_marker(&marker(8, 0, 8), Marker::Commit, 0);
        assert_eq!(states.first_unstable_offset(), None);
        assert_eq!(states.aborted_between(0, 9), vec![(7, 1)]);
        assert_eq!(states.aborted_between(8, 9), Vec::<(i64, i64)>::new());
        // The next sequence after the marker goes on from the last batch.
        assert_eq!(
            states.check(&transactional(7, 0, 4, 9)),
            Ok(SequenceCheck::Append)
        );
        states.record_at(&transactional(7, 0, 4, 9), 0);
        let (offset, again) = decode_snapshot(&states.snapshot_bytes(11)).unwrap();
        assert_eq!((offset, &again), (11, &states));
        assert_eq!(again.first_unstable_offset(), Some(9));
        // Retention and truncation forget what they removed.
        states.forget_aborted_before(8);
        assert!(states.aborted_between(0, 100).is_empty());
        states.truncate_from(9);
        assert_eq!(states.first_unstable_offset(), None);
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

    const DAY: i64 = PRODUCER_ID_EXPIRATION_MS;

    #[test]
    fn idle_producers_expire_and_active_ones_stay() {
        let t0 = 1_700_000_000_000;
        let mut states = ProducerStates::default();
        states.record_at(&header(1, 0, 0, 2, 0), t0);
        states.record_at(&header(2, 0, 0, 2, 2), t0);
        // Producer 2 writes again ten hours later; producer 1 stays idle.
        states.record_at(&header(2, 0, 2, 1, 4), t0 + 10 * 3_600_000);
        assert_eq!(
            states.expire(t0 + DAY - 1, DAY),
            0,
            "not idle for a whole day yet"
        );
        assert_eq!(states.expire(t0 + DAY, DAY), 1);
        assert_eq!(states.len(), 1);
        // Producer 1 is forgotten: its next batch is that of an unknown producer.
        assert_eq!(
            states.check(&header(1, 0, 2, 1, 5)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            states.check(&header(2, 0, 2, 1, 9)),
            Ok(SequenceCheck::Duplicate { base_offset: 4 })
        );
    }

    /// Several producers, a sequence that wraps, a bumped epoch.
    fn sample(t0: i64) -> ProducerStates {
        let mut states = ProducerStates::default();
        for i in 0..7 {
            states.record_at(&header(1, 3, i * 2, 2, i64::from(i) * 2), t0 + i64::from(i));
        }
        states.record_at(&header(2, 0, i32::MAX - 1, 2, 100), t0);
        states.record_at(&header(2, 0, 0, 3, 102), t0 + 5);
        states.record_at(&header(i64::MAX, i16::MAX, 0, 1, 105), t0 - DAY);
        states
    }

    #[test]
    fn the_binary_snapshot_roundtrips() {
        let t0 = 1_700_000_000_000;
        let states = sample(t0);
        let bytes = states.snapshot_bytes(106);
        assert_eq!(bytes[0], SNAPSHOT_VERSION);
        assert_eq!(decode_snapshot(&bytes), Ok((106, states.clone())));
        assert_eq!(
            bytes,
            states.clone().snapshot_bytes(106),
            "same state, same bytes"
        );
        assert_eq!(
            decode_snapshot(&ProducerStates::default().snapshot_bytes(0)),
            Ok((0, ProducerStates::default()))
        );
        // Taking a snapshot leaves out who has expired.
        let (_, live) = decode_snapshot(&states.snapshot_bytes_unexpired(106, t0, DAY)).unwrap();
        let mut expected = states.clone();
        assert_eq!(expected.expire(t0, DAY), 1);
        assert_eq!(live, expected);
        // Compact: well under the JSON form of the same state.
        let json = serde_json::to_vec(&states).unwrap();
        assert!(
            bytes.len() * 2 < json.len(),
            "{} binary vs {} JSON",
            bytes.len(),
            json.len()
        );
    }

    #[test]
    fn a_damaged_snapshot_is_refused() {
        let bytes = sample(1_700_000_000_000).snapshot_bytes(106);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(
                decode_snapshot(&bad).is_err(),
                "a flipped bit at byte {at} went unnoticed"
            );
            assert!(
                decode_snapshot(&bytes[..at]).is_err(),
                "cut at {at} went unnoticed"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_snapshot(&longer).is_err());
        // A count that cannot fit, with a valid CRC, is refused before
        // anything is allocated for it.
        let mut huge = ProducerStates::default().snapshot_bytes(0);
        huge[13..17].copy_from_slice(&u32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&huge[SNAPSHOT_CRC_END..]);
        huge[1..5].copy_from_slice(&crc.to_be_bytes());
        assert!(decode_snapshot(&huge).unwrap_err().0.contains("cannot fit"));
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
