//! Transaction markers: the control batches a transaction coordinator
//! writes to every partition of a transaction when it commits or aborts.
//!
//! Kafka's format (EndTransactionMarker): a v2 batch with the transactional
//! and control attribute bits, the producer's id and epoch, base sequence
//! -1, and one record whose key is `version: i16 = 0, type: i16` (0 abort,
//! 1 commit) and whose value is `version: i16 = 0, coordinator_epoch: i32`.

use super::batch::{self, BatchHeader, ATTRIBUTES, CRC, HEADER_LEN};

/// What a marker ends a transaction with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

impl Marker {
    fn code(self) -> i16 {
        match self {
            Marker::Abort => 0,
            Marker::Commit => 1,
        }
    }
}

const TRANSACTIONAL_AND_CONTROL: i16 = 0x10 | 0x20;

/// A marker batch for `producer_id`/`epoch` at base offset 0 (the log
/// assigns its offset), stamped `timestamp_ms`.
pub fn marker_batch(
    marker: Marker,
    producer_id: i64,
    epoch: i16,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&marker.code().to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut bytes = batch::build_idempotent_batch(0, timestamp_ms, producer_id, epoch, -1, &[(&key, &value)]);
    bytes[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&TRANSACTIONAL_AND_CONTROL.to_be_bytes());
    let crc = batch::compute_crc(&bytes);
    bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// Reads a zigzag varint off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<i64> {
    let mut raw = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        raw |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

/// Which marker a control batch holds, read from its one record's key
/// (`None`: not a control batch, or not one Kafka defines).
pub fn marker_of(bytes: &[u8], header: &BatchHeader) -> Option<Marker> {
    if !header.is_control() || bytes.len() < HEADER_LEN {
        return None;
    }
    let mut record = &bytes[HEADER_LEN..];
    varint(&mut record)?; // record length
    record.split_first().map(|(_, rest)| record = rest)?; // attributes
    varint(&mut record)?; // timestamp delta
    varint(&mut record)?; // offset delta
    let key_length = varint(&mut record)?;
    if key_length < 4 {
        return None;
    }
    let key = record.get(..4)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(Marker::Abort),
        1 => Some(Marker::Commit),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_valid_control_batches_that_say_what_they_end() {
        for marker in [Marker::Abort, Marker::Commit] {
            let bytes = marker_batch(marker, 42, 3, 7, 1_700_000_000_000);
            // Clients may not produce control batches (validate refuses
            // them); the header and checksum are a batch's all the same.
            assert!(batch::validate(&bytes).is_err());
            let header = batch::parse_header(&bytes).unwrap();
            let stored_crc = u32::from_be_bytes(bytes[CRC..CRC + 4].try_into().unwrap());
            assert_eq!(stored_crc, batch::compute_crc(&bytes));
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(
                (header.producer_id, header.producer_epoch, header.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(header.records_count, 1);
            assert_eq!(marker_of(&bytes, &header), Some(marker));
        }
        let plain = batch::build_batch(0, 0, &[(b"k", b"v")]);
        let header = batch::validate(&plain).unwrap();
        assert_eq!(marker_of(&plain, &header), None);
    }
}
