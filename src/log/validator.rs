//! What Kafka's LogValidator does to a produced batch because of its
//! topic's configs, before the batch goes to the partition's owner:
//! record timestamps against `message.timestamp.before.max.ms` /
//! `message.timestamp.after.max.ms` (CreateTime topics), and the batch
//! rebuilt in the topic's `compression.type`.
//!
//! Runs on the shard that received the request, so the CPU of
//! decompressing and recompressing is spread like CRC checks are.

use super::batch::{self, BatchError, BatchHeader};
use super::compression;
use super::partition_log::LogConfig;
use kafka_protocol::ResponseError;
use std::borrow::Cow;

/// A produced batch refused as a whole, with Kafka's per-record errors
/// (Produce v8+ `record_errors`: index of the record in the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: i16,
    pub message: String,
    pub record_errors: Vec<(i32, String)>,
}

impl From<BatchError> for Rejection {
    fn from(e: BatchError) -> Self {
        Rejection {
            code: e.code(),
            message: e.message().to_string(),
            record_errors: Vec::new(),
        }
    }
}

/// Checks `batch` against the topic's configs at broker time `now`.
/// `Ok(None)`: store it as sent; `Ok(Some(..))`: store this rebuilt batch.
pub fn prepare(
    batch: &[u8],
    header: &BatchHeader,
    config: &LogConfig,
    now: i64,
) -> Result<Option<(Vec<u8>, BatchHeader)>, Rejection> {
    // Decompressed at most once, for whichever step needs the records.
    let mut records: Option<Cow<[u8]>> = None;
    if config.compact {
        check_keys(batch, header, &mut records)?;
    }
    if !config.log_append_time {
        check_timestamps(batch, header, config, now, &mut records)?;
    }
    let Some(codec) = config.compression.codec() else {
        return Ok(None);
    };
    if codec.id() == header.compression() {
        return Ok(None);
    }
    let records = match records {
        Some(records) => records,
        None => compression::records(batch, header)?,
    };
    Ok(Some(compression::rebuild(batch, header, &records, codec)?))
}

fn check_timestamps<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    config: &LogConfig,
    now: i64,
    records: &mut Option<Cow<'a, [u8]>>,
) -> Result<(), Rejection> {
    if header.is_log_append_time() {
        let message =
            "Invalid timestamp type in message. Producer should not set timestamp type to LogAppendTime.";
        return Err(invalid_timestamp(vec![(0, message.to_string())]));
    }
    let (before, after) = (config.timestamp_before_max_ms, config.timestamp_after_max_ms);
    // With no bound on the past, the header's max timestamp tells whether
    // any record can be too far ahead: most batches need no record walk.
    let future_ok = header.max_timestamp == -1 || header.max_timestamp.saturating_sub(now) <= after;
    if before == i64::MAX && future_ok {
        return Ok(());
    }
    let decoded = match records.take() {
        Some(decoded) => decoded,
        None => compression::records(batch, header)?,
    };
    let mut errors = Vec::new();
    for (index, (offset_delta, ts_delta)) in batch::record_times(&decoded)?.into_iter().enumerate() {
        let timestamp = header.base_timestamp.wrapping_add(ts_delta);
        if timestamp == -1 {
            continue;
        }
        let past = now.saturating_sub(timestamp);
        if past > before || past.saturating_neg() > after {
            // Kafka's text, with Java's wrapping arithmetic in the bounds.
            errors.push((
                index as i32,
                format!(
                    "Timestamp {timestamp} of message with offset {} is out of range. The timestamp should be within [{}, {}]",
                    header.base_offset.wrapping_add(offset_delta),
                    now.wrapping_sub(before),
                    now.wrapping_add(after)
                ),
            ));
        }
    }
    *records = Some(decoded);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid_timestamp(errors))
    }
}

/// A compacted topic keeps the latest record per key, so a record
/// without one has no place in it: Kafka refuses the batch with
/// INVALID_RECORD, naming each keyless record.
fn check_keys<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    records: &mut Option<Cow<'a, [u8]>>,
) -> Result<(), Rejection> {
    let decoded = match records.take() {
        Some(decoded) => decoded,
        None => compression::records(batch, header)?,
    };
    const WHY: &str = "Compacted topic cannot accept message without key.";
    let errors: Vec<(i32, String)> = batch::parse_records(&decoded)?
        .iter()
        .enumerate()
        .filter(|(_, record)| record.key.is_none())
        .map(|(index, _)| (index as i32, WHY.to_string()))
        .collect();
    *records = Some(decoded);
    if errors.is_empty() {
        return Ok(());
    }
    Err(Rejection {
        code: ResponseError::InvalidRecord.code(),
        message: WHY.into(),
        record_errors: errors,
    })
}

fn invalid_timestamp(record_errors: Vec<(i32, String)>) -> Rejection {
    Rejection {
        code: ResponseError::InvalidTimestamp.code(),
        message: "One or more records have been rejected due to invalid timestamp".into(),
        record_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::compression::{recompress, Codec, CompressionType};

    const NOW: i64 = 1_700_000_000_000;

    fn config(before: i64, after: i64) -> LogConfig {
        LogConfig {
            timestamp_before_max_ms: before,
            timestamp_after_max_ms: after,
            ..LogConfig::default()
        }
    }

    fn timed(times: &[i64]) -> Vec<u8> {
        let records: Vec<(i64, &[u8], &[u8])> = times.iter().map(|&t| (t, &b"k"[..], &b"v"[..])).collect();
        batch::build_timed_batch(0, &records)
    }

    #[test]
    fn defaults_refuse_only_the_far_future() {
        let defaults = LogConfig::default();
        assert_eq!(defaults.timestamp_after_max_ms, 3_600_000);
        assert_eq!(defaults.timestamp_before_max_ms, i64::MAX);
        let old = timed(&[0, 5, NOW - 10 * 365 * 86_400_000]);
        let header = batch::validate(&old).unwrap();
        assert_eq!(prepare(&old, &header, &defaults, NOW), Ok(None));
        let future = timed(&[NOW, NOW + 3_600_001, NOW + 1]);
        let header = batch::validate(&future).unwrap();
        let refused = prepare(&future, &header, &defaults, NOW).unwrap_err();
        assert_eq!(refused.code, 32);
        assert_eq!(
            refused.record_errors,
            vec![(
                1,
                format!(
                    "Timestamp {} of message with offset 1 is out of range. The timestamp should be within [{}, {}]",
                    NOW + 3_600_001,
                    NOW.wrapping_sub(i64::MAX),
                    NOW + 3_600_000
                )
            )]
        );
    }

    #[test]
    fn the_past_bound_reads_records_even_in_compressed_batches() {
        let plain = timed(&[NOW, NOW - 5000, NOW]);
        let header = batch::validate(&plain).unwrap();
        let (zstd, zheader) = recompress(&plain, &header, Codec::Zstd).unwrap();
        for (bytes, header) in [(&plain, header), (&zstd, zheader)] {
            let refused = prepare(bytes, &header, &config(1000, 1000), NOW).unwrap_err();
            assert_eq!(refused.code, 32);
            assert_eq!(refused.record_errors.len(), 1);
            assert_eq!(refused.record_errors[0].0, 1);
            assert_eq!(prepare(bytes, &header, &config(5000, 0), NOW), Ok(None));
        }
        // No timestamp (-1) is never judged.
        let none = timed(&[-1, -1]);
        let header = batch::validate(&none).unwrap();
        assert_eq!(prepare(&none, &header, &config(0, 0), NOW), Ok(None));
    }

    #[test]
    fn log_append_time_topics_skip_the_check_and_producers_may_not_set_it() {
        let future = timed(&[NOW + 10 * 3_600_000]);
        let header = batch::validate(&future).unwrap();
        let lat = LogConfig {
            log_append_time: true,
            ..LogConfig::default()
        };
        assert_eq!(prepare(&future, &header, &lat, NOW), Ok(None));
        let mut stamped = timed(&[NOW]);
        batch::stamp_log_append_time(&mut stamped, NOW);
        let header = batch::validate(&stamped).unwrap();
        assert_eq!(
            prepare(&stamped, &header, &LogConfig::default(), NOW)
                .unwrap_err()
                .code,
            32
        );
    }

    #[test]
    fn batches_are_rebuilt_in_the_topic_codec() {
        let plain = timed(&[NOW, NOW]);
        let header = batch::validate(&plain).unwrap();
        let zstd_topic = LogConfig {
            compression: CompressionType::Zstd,
            ..LogConfig::default()
        };
        let (rebuilt, new_header) = prepare(&plain, &header, &zstd_topic, NOW).unwrap().unwrap();
        assert_eq!(batch::validate(&rebuilt).unwrap(), new_header);
        assert_eq!(new_header.compression(), Codec::Zstd.id());
        assert_eq!(prepare(&rebuilt, &new_header, &zstd_topic, NOW), Ok(None));
        // Garbage that claims to be gzip is refused, not stored.
        let mut bad = plain.clone();
        let attributes = Codec::Gzip.id();
        bad[batch::ATTRIBUTES..batch::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        let crc = batch::compute_crc(&bad);
        bad[batch::CRC..batch::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        let header = batch::validate(&bad).unwrap();
        assert_eq!(prepare(&bad, &header, &zstd_topic, NOW).unwrap_err().code, 2);
    }
}
