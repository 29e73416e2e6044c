//! Record batches (magic v2) as they sit on the wire and on disk.
//!
//! The broker never decodes records to store or serve them: it checks the
//! batch header, the CRC-32C, and (for uncompressed batches) that the
//! records fill the batch exactly, then stores the bytes verbatim with the
//! base offset it assigns. Base offset, batch length, partition leader
//! epoch and magic sit outside the CRC, so assigning offsets never needs a
//! new checksum.

use kafka_protocol::ResponseError;

pub const BASE_OFFSET: usize = 0;
pub const BATCH_LENGTH: usize = 8;
pub const LEADER_EPOCH: usize = 12;
pub const MAGIC: usize = 16;
pub const CRC: usize = 17;
pub const ATTRIBUTES: usize = 21;
pub const LAST_OFFSET_DELTA: usize = 23;
pub const BASE_TIMESTAMP: usize = 27;
pub const MAX_TIMESTAMP: usize = 35;
pub const PRODUCER_ID: usize = 43;
pub const PRODUCER_EPOCH: usize = 51;
pub const BASE_SEQUENCE: usize = 53;
pub const RECORDS_COUNT: usize = 57;
/// Bytes before the first record.
pub const HEADER_LEN: usize = 61;
/// Bytes not counted by the batch length field (base offset + length).
pub const LOG_OVERHEAD: usize = 12;

pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// The fields of a batch header the broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Whole batch size in bytes, including base offset and length fields.
    pub size: usize,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }
    /// LogAppendTime: every record's timestamp is the batch's max timestamp.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
    /// Sequence number of the last record (sequences wrap at i32::MAX).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

/// Why a batch was refused; maps to the Kafka error the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Failed its checksum, or its header disagrees with its length.
    Corrupt(String),
    /// Well-formed bytes that break a rule (magic, record count, codec).
    Invalid(String),
}

impl BatchError {
    pub fn code(&self) -> i16 {
        match self {
            BatchError::Corrupt(_) => ResponseError::CorruptMessage.code(),
            BatchError::Invalid(_) => ResponseError::InvalidRecord.code(),
        }
    }
    pub fn message(&self) -> &str {
        match self {
            BatchError::Corrupt(m) | BatchError::Invalid(m) => m,
        }
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Size of the batch starting at `bytes`, from its length field, if the
/// length field is there. Used to walk a log without parsing more.
pub fn batch_size(bytes: &[u8]) -> Option<usize> {
    let len = i32::from_be_bytes(bytes.get(BATCH_LENGTH..BATCH_LENGTH + 4)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    Some(LOG_OVERHEAD + len)
}

/// Reads the header of the batch at the front of `bytes` (which must hold
/// at least `HEADER_LEN` bytes). Checks only what the header alone can say.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < HEADER_LEN {
        return Err(BatchError::Corrupt(format!(
            "{} bytes is shorter than a batch header",
            bytes.len()
        )));
    }
    let magic = bytes[MAGIC] as i8;
    if magic != 2 {
        return Err(BatchError::Invalid(format!(
            "record batch magic {magic} is not supported (only v2)"
        )));
    }
    let length = i32_at(bytes, BATCH_LENGTH);
    if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::Corrupt(format!("batch length {length} is too small")));
    }
    Ok(BatchHeader {
        base_offset: i64_at(bytes, BASE_OFFSET),
        size: LOG_OVERHEAD + length as usize,
        attributes: i16_at(bytes, ATTRIBUTES),
        last_offset_delta: i32_at(bytes, LAST_OFFSET_DELTA),
        base_timestamp: i64_at(bytes, BASE_TIMESTAMP),
        max_timestamp: i64_at(bytes, MAX_TIMESTAMP),
        producer_id: i64_at(bytes, PRODUCER_ID),
        producer_epoch: i16_at(bytes, PRODUCER_EPOCH),
        base_sequence: i32_at(bytes, BASE_SEQUENCE),
        records_count: i32_at(bytes, RECORDS_COUNT),
    })
}

/// The CRC-32C the batch should carry: attributes to the end.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES..])
}

/// Fully validates one batch a client produced, which must fill `batch`
/// exactly: a stored batch's checks, and no control batch (only a
/// transaction coordinator writes those).
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_stored(batch)?;
    if header.is_control() {
        return Err(BatchError::Invalid("control batches cannot be produced".into()));
    }
    if header.records_count != header.last_offset_delta + 1 {
        return Err(BatchError::Invalid(format!(
            "records count {} does not match last offset delta {}",
            header.records_count, header.last_offset_delta
        )));
    }
    Ok(header)
}

/// Validates one batch as it may sit in a log (control batches included),
/// which must fill `batch` exactly: recovery checks every batch with it.
pub fn validate_stored(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(batch)?;
    if header.size != batch.len() {
        return Err(BatchError::Corrupt(format!(
            "batch length field says {} bytes, {} were sent",
            header.size,
            batch.len()
        )));
    }
    let stored = u32::from_be_bytes([batch[CRC], batch[CRC + 1], batch[CRC + 2], batch[CRC + 3]]);
    let actual = compute_crc(batch);
    if stored != actual {
        return Err(BatchError::Corrupt(format!(
            "CRC-32C mismatch: batch says {stored:#010x}, content is {actual:#010x}"
        )));
    }
    // Compaction leaves batches with fewer records than offsets.
    if header.last_offset_delta < 0
        || header.records_count < 0
        || header.records_count > header.last_offset_delta + 1
    {
        return Err(BatchError::Invalid(format!(
            "records count {} does not fit last offset delta {}",
            header.records_count, header.last_offset_delta
        )));
    }
    if header.compression() > 4 {
        return Err(BatchError::Invalid(format!(
            "unknown compression codec {}",
            header.compression()
        )));
    }
    if header.compression() == 0 {
        check_uncompressed_records(&batch[HEADER_LEN..], header.records_count)?;
    }
    Ok(header)
}

/// Walks the length prefixes of uncompressed records: they must be exactly
/// `count` records filling the rest of the batch. Cheap (no decoding), and
/// it catches a batch whose header lies about its records.
pub fn check_uncompressed_records(mut records: &[u8], count: i32) -> Result<(), BatchError> {
    for i in 0..count {
        let (len, used) = read_varint(records)
            .ok_or_else(|| BatchError::Invalid(format!("record {i}: truncated length")))?;
        let len = usize::try_from(len)
            .map_err(|_| BatchError::Invalid(format!("record {i}: negative length {len}")))?;
        records = records
            .get(used + len..)
            .ok_or_else(|| BatchError::Invalid(format!("record {i} runs past the end of the batch")))?;
    }
    if !records.is_empty() {
        return Err(BatchError::Invalid(format!(
            "{} bytes after the last of {count} records",
            records.len()
        )));
    }
    Ok(())
}

/// (offset delta, timestamp delta) of each record of an uncompressed
/// records section, in order. Reads only the fields before the key.
pub fn record_times(mut records: &[u8]) -> Result<Vec<(i64, i64)>, BatchError> {
    let truncated = |i: usize| BatchError::Invalid(format!("record {i} is truncated"));
    let mut times = Vec::new();
    while !records.is_empty() {
        let i = times.len();
        let (len, used) = read_varint(records).ok_or_else(|| truncated(i))?;
        let len = usize::try_from(len).map_err(|_| truncated(i))?;
        let record = records.get(used..used + len).ok_or_else(|| truncated(i))?;
        // Attributes (one byte), then the two deltas.
        let after_attributes = record.get(1..).ok_or_else(|| truncated(i))?;
        let (timestamp_delta, used_ts) = read_varint(after_attributes).ok_or_else(|| truncated(i))?;
        let (offset_delta, _) = read_varint(&after_attributes[used_ts..]).ok_or_else(|| truncated(i))?;
        times.push((offset_delta, timestamp_delta));
        records = &records[used + len..];
    }
    Ok(times)
}

/// One record of an uncompressed records section, as compaction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset_delta: i64,
    pub timestamp_delta: i64,
    /// `None`: a null key.
    pub key: Option<&'a [u8]>,
    /// The value; `None`, a null value, is a tombstone.
    pub value: Option<&'a [u8]>,
    /// The whole record as stored, its length prefix included.
    pub raw: &'a [u8],
}

/// Every record of an uncompressed records section, in order.
pub fn parse_records(mut records: &[u8]) -> Result<Vec<Record<'_>>, BatchError> {
    let bad = |i: usize, what: &str| BatchError::Invalid(format!("record {i}: {what}"));
    let mut parsed = Vec::new();
    while !records.is_empty() {
        let i = parsed.len();
        let (len, used) = read_varint(records).ok_or_else(|| bad(i, "truncated length"))?;
        let len = usize::try_from(len).map_err(|_| bad(i, "negative length"))?;
        let raw = records
            .get(..used + len)
            .ok_or_else(|| bad(i, "runs past the end"))?;
        // Attributes (one byte), timestamp delta, offset delta, key, value.
        let mut rest = raw.get(used + 1..).ok_or_else(|| bad(i, "truncated"))?;
        let mut next = |what: &str| -> Result<i64, BatchError> {
            let (value, n) = read_varint(rest).ok_or_else(|| bad(i, what))?;
            rest = &rest[n..];
            Ok(value)
        };
        let timestamp_delta = next("truncated timestamp")?;
        let offset_delta = next("truncated offset")?;
        let key_len = next("truncated key length")?;
        let key = match usize::try_from(key_len) {
            Ok(n) => {
                let key = rest.get(..n).ok_or_else(|| bad(i, "key runs past the end"))?;
                rest = &rest[n..];
                Some(key)
            }
            Err(_) => None,
        };
        let (value_len, n) = read_varint(rest).ok_or_else(|| bad(i, "truncated value length"))?;
        let value = match usize::try_from(value_len) {
            Ok(len) => Some(
                rest.get(n..n + len)
                    .ok_or_else(|| bad(i, "value runs past the end"))?,
            ),
            Err(_) => None,
        };
        parsed.push(Record {
            offset_delta,
            timestamp_delta,
            key,
            value,
            raw,
        });
        records = &records[used + len..];
    }
    Ok(parsed)
}

/// A zig-zag varint (Kafka's record length encoding): value and bytes used.
fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((value, i + 1));
        }
    }
    None
}

/// The partition leader epoch a stored batch was written at.
pub fn leader_epoch_of(batch: &[u8]) -> i32 {
    batch
        .get(LEADER_EPOCH..LEADER_EPOCH + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(-1, i32::from_be_bytes)
}

/// Rewrites the fields outside the CRC that the broker owns.
pub fn assign_offset(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Stamps LogAppendTime: sets the timestamp-type bit and max timestamp
/// (both inside the CRC, so the CRC is recomputed), as Kafka does for
/// topics with `message.timestamp.type=LogAppendTime`.
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = i16_at(batch, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A record to build: timestamp, key, value (`None`: a tombstone).
type TimedRecord<'a> = (i64, &'a [u8], Option<&'a [u8]>);

/// Builds an uncompressed batch (tests, benches, and our own tools).
pub fn build_batch(base_offset: i64, timestamp: i64, records: &[(&[u8], &[u8])]) -> Vec<u8> {
    build_idempotent_batch(base_offset, timestamp, -1, -1, -1, records)
}

/// Sets a built batch's transactional bit (and its CRC again): what a
/// transactional producer writes (tests, benches, and our own tools).
pub fn mark_transactional(batch: &mut [u8]) {
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES], batch[ATTRIBUTES + 1]]) | 0x10;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Builds an uncompressed batch with producer id, epoch and sequence.
pub fn build_idempotent_batch(
    base_offset: i64,
    timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: &[(&[u8], &[u8])],
) -> Vec<u8> {
    let timed: Vec<TimedRecord<'_>> = records.iter().map(|&(k, v)| (timestamp, k, Some(v))).collect();
    build_batch_full(base_offset, producer_id, producer_epoch, base_sequence, &timed)
}

/// Builds an uncompressed batch of keyed records, `None` values being
/// tombstones (the internal compacted partitions' writes).
pub fn build_keyed_batch(timestamp: i64, records: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
    let timed: Vec<TimedRecord<'_>> = records.iter().map(|&(k, v)| (timestamp, k, v)).collect();
    build_batch_full(0, -1, -1, -1, &timed)
}

/// Builds an uncompressed batch whose records carry their own timestamps
/// (base timestamp: the first record's, as clients write it).
pub fn build_timed_batch(base_offset: i64, records: &[(i64, &[u8], &[u8])]) -> Vec<u8> {
    let records: Vec<TimedRecord<'_>> = records.iter().map(|&(t, k, v)| (t, k, Some(v))).collect();
    build_batch_full(base_offset, -1, -1, -1, &records)
}

fn build_batch_full(
    base_offset: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: &[TimedRecord<'_>],
) -> Vec<u8> {
    let timestamp = records.first().map_or(-1, |r| r.0);
    let max_timestamp = records.iter().map(|r| r.0).max().unwrap_or(-1);
    let mut body = Vec::new();
    for (i, (ts, key, value)) in records.iter().enumerate() {
        let mut record = Vec::new();
        record.push(0u8); // attributes
        put_varint(&mut record, ts - timestamp); // timestamp delta
        put_varint(&mut record, i as i64); // offset delta
        put_varint(&mut record, key.len() as i64);
        record.extend_from_slice(key);
        match value {
            Some(value) => {
                put_varint(&mut record, value.len() as i64);
                record.extend_from_slice(value);
            }
            None => put_varint(&mut record, -1),
        }
        put_varint(&mut record, 0); // headers
        put_varint(&mut body, record.len() as i64);
        body.extend(record);
    }
    let count = records.len() as i32;
    let mut batch = Vec::with_capacity(HEADER_LEN + body.len());
    batch.extend_from_slice(&base_offset.to_be_bytes());
    batch.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    batch.extend_from_slice(&0i16.to_be_bytes()); // attributes
    batch.extend_from_slice(&(count - 1).to_be_bytes());
    batch.extend_from_slice(&timestamp.to_be_bytes());
    batch.extend_from_slice(&max_timestamp.to_be_bytes());
    batch.extend_from_slice(&producer_id.to_be_bytes());
    batch.extend_from_slice(&producer_epoch.to_be_bytes());
    batch.extend_from_slice(&base_sequence.to_be_bytes());
    batch.extend_from_slice(&count.to_be_bytes());
    batch.extend(body);
    let crc = compute_crc(&batch);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if raw < 0x80 {
            out.push(raw as u8);
            return;
        }
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        build_batch(
            0,
            1_700_000_000_000,
            &[(b"k1", b"v1"), (b"k2", b"value-2"), (b"", b"")],
        )
    }

    #[test]
    fn a_well_formed_batch_validates() {
        let batch = sample();
        let header = validate(&batch).unwrap();
        assert_eq!(header.records_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.size, batch.len());
        assert_eq!(batch_size(&batch), Some(batch.len()));
    }

    #[test]
    fn assigning_offsets_keeps_the_crc_valid() {
        let mut batch = sample();
        assign_offset(&mut batch, 123_456, 0);
        let header = validate(&batch).unwrap();
        assert_eq!(header.base_offset, 123_456);
        assert_eq!(header.next_offset(), 123_459);
    }

    #[test]
    fn every_flipped_byte_inside_the_crc_range_is_caught() {
        let batch = sample();
        for i in ATTRIBUTES..batch.len() {
            let mut bad = batch.clone();
            bad[i] ^= 0x40;
            assert!(validate(&bad).is_err(), "flip at byte {i} not detected");
        }
    }

    #[test]
    fn header_lies_are_refused() {
        let batch = sample();
        let mut short = batch.clone();
        short.pop();
        assert!(matches!(validate(&short), Err(BatchError::Corrupt(_))));
        let mut magic1 = batch.clone();
        magic1[MAGIC] = 1;
        assert!(matches!(validate(&magic1), Err(BatchError::Invalid(_))));
        // Record count that disagrees with the last offset delta, CRC fixed.
        let mut count = batch.clone();
        count[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&count);
        count[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate(&count), Err(BatchError::Invalid(_))));
        assert_eq!(BatchError::Invalid(String::new()).code(), 87);
        assert_eq!(BatchError::Corrupt(String::new()).code(), 2);
    }

    #[test]
    fn log_append_time_is_stamped_with_a_fresh_crc() {
        let mut batch = sample();
        stamp_log_append_time(&mut batch, 42);
        let header = validate(&batch).unwrap();
        assert_eq!(header.max_timestamp, 42);
        assert_eq!(header.attributes & TIMESTAMP_TYPE_BIT, TIMESTAMP_TYPE_BIT);
    }

    #[test]
    fn sequences_wrap() {
        let batch = build_idempotent_batch(0, 0, 7, 0, i32::MAX, &[(b"a", b"b"), (b"c", b"d")]);
        let header = validate(&batch).unwrap();
        assert_eq!(header.last_sequence(), 0);
    }
}
