//! Which record of a batch answers ListOffsets by time: the time index
//! only finds the batch, the answer is a record inside it (Kafka's
//! LogSegment.findOffsetByTimestamp and, since 3.8 / KAFKA-16310,
//! RecordBatch.offsetOfMaxTimestamp).

use super::batch::{self, BatchError, BatchHeader};
use super::compression;

/// Every record's (offset, timestamp), decompressing if need be. In a
/// LogAppendTime batch every record has the batch's max timestamp.
fn record_offsets_and_times(bytes: &[u8], header: &BatchHeader) -> Result<Vec<(i64, i64)>, BatchError> {
    if header.is_log_append_time() {
        return Ok((0..=i64::from(header.last_offset_delta))
            .map(|delta| (header.base_offset + delta, header.max_timestamp))
            .collect());
    }
    let records = compression::records(bytes, header)?;
    Ok(batch::record_times(&records)?
        .into_iter()
        .map(|(offset_delta, ts_delta)| {
            (
                header.base_offset + offset_delta,
                header.base_timestamp + ts_delta,
            )
        })
        .collect())
}

/// The first record at or after `timestamp`: (its offset, its timestamp).
pub fn first_at_or_after(
    bytes: &[u8],
    header: &BatchHeader,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, BatchError> {
    Ok(record_offsets_and_times(bytes, header)?
        .into_iter()
        .find(|&(_, ts)| ts >= timestamp))
}

/// The earliest record carrying the batch's max timestamp: (its offset,
/// the max timestamp); the batch's base offset if no record does (a
/// header that disagrees with its records).
pub fn offset_of_max_timestamp(bytes: &[u8], header: &BatchHeader) -> Result<(i64, i64), BatchError> {
    let offset = record_offsets_and_times(bytes, header)?
        .into_iter()
        .find(|&(_, ts)| ts == header.max_timestamp)
        .map_or(header.base_offset, |(offset, _)| offset);
    Ok((offset, header.max_timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::compression::{recompress, Codec};

    const BASE: i64 = 1_700_000_000_000;

    fn out_of_order(base_offset: i64) -> Vec<u8> {
        batch::build_timed_batch(
            base_offset,
            &[
                (BASE + 100, b"a", b"1"),
                (BASE + 400, b"b", b"2"),
                (BASE + 200, b"c", b"3"),
                (BASE + 400, b"d", b"4"),
            ],
        )
    }

    #[test]
    fn answers_come_from_records_in_every_codec() {
        let plain = out_of_order(10);
        let header = batch::validate(&plain).unwrap();
        for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let (bytes, header) = if codec == Codec::None {
                (plain.clone(), header)
            } else {
                recompress(&plain, &header, codec).unwrap()
            };
            let at = |ts| first_at_or_after(&bytes, &header, ts).unwrap();
            assert_eq!(at(BASE), Some((10, BASE + 100)), "{codec:?}");
            assert_eq!(at(BASE + 150), Some((11, BASE + 400)), "{codec:?}");
            assert_eq!(at(BASE + 400), Some((11, BASE + 400)), "{codec:?}");
            assert_eq!(at(BASE + 401), None, "{codec:?}");
            // Tied max: the earliest record carrying it.
            assert_eq!(
                offset_of_max_timestamp(&bytes, &header).unwrap(),
                (11, BASE + 400),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn log_append_time_batches_answer_their_first_record() {
        let mut bytes = out_of_order(0);
        batch::stamp_log_append_time(&mut bytes, BASE + 1000);
        let header = batch::validate(&bytes).unwrap();
        assert_eq!(
            first_at_or_after(&bytes, &header, BASE + 999).unwrap(),
            Some((0, BASE + 1000))
        );
        assert_eq!(
            offset_of_max_timestamp(&bytes, &header).unwrap(),
            (0, BASE + 1000)
        );
    }
}
