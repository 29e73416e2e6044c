//! Kafka's record-batch codecs: the attribute bits, decompressing a
//! batch's records section, and rebuilding a batch in another codec (topic
//! `compression.type`, as Kafka's LogValidator does on append).
//!
//! Formats are Kafka's: gzip streams, snappy in the xerial framing the Java
//! client writes (raw snappy blocks, as some clients send, are read too),
//! the LZ4 *frame* format, and zstd frames.

use super::batch::{self, BatchError, BatchHeader};
use std::borrow::Cow;
use std::io::{self, BufRead, Read, Write};

/// A batch's codec, from the low three bits of its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Codec {
    pub fn from_id(id: i16) -> Option<Codec> {
        Some(match id {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            _ => return None,
        })
    }

    pub fn id(self) -> i16 {
        self as i16
    }
}

/// A topic's `compression.type`: keep what the producer sent, or store
/// every batch in one codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionType {
    #[default]
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionType {
    pub fn parse(value: &str) -> Option<CompressionType> {
        Some(match value {
            "producer" => CompressionType::Producer,
            "uncompressed" => CompressionType::Uncompressed,
            "gzip" => CompressionType::Gzip,
            "snappy" => CompressionType::Snappy,
            "lz4" => CompressionType::Lz4,
            "zstd" => CompressionType::Zstd,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Producer => "producer",
            CompressionType::Uncompressed => "uncompressed",
            CompressionType::Gzip => "gzip",
            CompressionType::Snappy => "snappy",
            CompressionType::Lz4 => "lz4",
            CompressionType::Zstd => "zstd",
        }
    }

    /// The codec batches are stored in, or `None` to keep the producer's.
    pub fn codec(self) -> Option<Codec> {
        Some(match self {
            CompressionType::Producer => return None,
            CompressionType::Uncompressed => Codec::None,
            CompressionType::Gzip => Codec::Gzip,
            CompressionType::Snappy => Codec::Snappy,
            CompressionType::Lz4 => Codec::Lz4,
            CompressionType::Zstd => Codec::Zstd,
        })
    }
}

/// Decompressed records of one batch may not exceed this: a few KiB of
/// zstd can claim gigabytes, and the network must not be able to make a
/// shard allocate that.
pub const MAX_DECOMPRESSED: usize = 128 << 20;

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// The Java client's snappy block size.
const XERIAL_BLOCK: usize = 32 * 1024;

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("records decompress to more than {MAX_DECOMPRESSED} bytes"),
    )
}

/// Reads a decoder to its end, refusing more than `limit` bytes.
fn read_bounded(reader: impl Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(out)
}

/// As `read_bounded`, for a decoder with its own buffer: copies its
/// decoded blocks out whole (std's `read_to_end` through `Take` ran this
/// decoder at a sixth of its speed on 1 MiB batches).
fn read_buffered_bounded(mut reader: impl BufRead, limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(out);
        }
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(chunk);
        let used = chunk.len();
        reader.consume(used);
    }
}

fn snappy_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let len = snap::raw::decompress_len(block).map_err(io::Error::other)?;
    if out.len() + len > limit {
        return Err(too_large());
    }
    let at = out.len();
    out.resize(at + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[at..])
        .map_err(io::Error::other)?;
    Ok(())
}

fn snappy_decompress(data: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let Some(mut rest) = data.strip_prefix(&XERIAL_MAGIC[..]) else {
        snappy_block(data, limit, &mut out)?;
        return Ok(out);
    };
    // Version and compatible version: 4 bytes each.
    rest = rest
        .get(8..)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short xerial snappy header"))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "torn xerial block length"))?;
        let len = usize::try_from(i32::from_be_bytes(*len))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative xerial block length"))?;
        let block = tail
            .get(..len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "torn xerial block"))?;
        snappy_block(block, limit, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

fn snappy_compress(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(16 + snap::raw::max_compress_len(data.len().min(XERIAL_BLOCK)));
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for block in data.chunks(XERIAL_BLOCK) {
        let compressed = encoder.compress_vec(block).map_err(io::Error::other)?;
        out.extend_from_slice(&(compressed.len() as i32).to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    Ok(out)
}

/// Decompresses a records section written with `codec`.
pub fn decompress(codec: Codec, data: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    match codec {
        Codec::None if data.len() > limit => Err(too_large()),
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), limit),
        Codec::Snappy => snappy_decompress(data, limit),
        Codec::Lz4 => read_buffered_bounded(lz4_flex::frame::FrameDecoder::new(data), limit),
        Codec::Zstd => read_bounded(zstd::stream::read::Decoder::new(data)?, limit),
    }
}

/// Compresses a records section with `codec`, at the levels Kafka uses by
/// default (gzip 6, zstd 3).
pub fn compress(codec: Codec, data: &[u8]) -> io::Result<Vec<u8>> {
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            encoder.write_all(data)?;
            encoder.finish()
        }
        Codec::Snappy => snappy_compress(data),
        Codec::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            encoder.write_all(data)?;
            encoder.finish().map_err(io::Error::other)
        }
        Codec::Zstd => ZSTD.with(|cell| match &mut *cell.borrow_mut() {
            Some(compressor) => compressor.compress(data),
            None => zstd::bulk::compress(data, 3),
        }),
    }
}

thread_local! {
    /// One zstd context per shard thread: creating one per batch cost
    /// more than compressing a 16 KiB batch.
    static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(3).ok());
}

/// The records of a validated batch, decompressed if need be (borrowed
/// from the batch when it is uncompressed).
pub fn records<'a>(batch: &'a [u8], header: &BatchHeader) -> Result<Cow<'a, [u8]>, BatchError> {
    let codec = Codec::from_id(header.compression())
        .ok_or_else(|| BatchError::Invalid(format!("unknown compression codec {}", header.compression())))?;
    let body = batch
        .get(batch::HEADER_LEN..header.size)
        .ok_or_else(|| BatchError::Corrupt("batch shorter than its length field".into()))?;
    if codec == Codec::None {
        return Ok(Cow::Borrowed(body));
    }
    decompress(codec, body, MAX_DECOMPRESSED)
        .map(Cow::Owned)
        .map_err(|e| BatchError::Corrupt(format!("records do not decompress ({codec:?}): {e}")))
}

/// Rebuilds a validated batch with its records in `codec`: every header
/// field but the codec bits, the length and the CRC is kept (base offset,
/// producer id/epoch, base sequence, timestamps, record count, the
/// transactional and control bits), so idempotent-producer checks see the
/// batch as sent. Returns the new batch and its header.
pub fn recompress(
    batch: &[u8],
    header: &BatchHeader,
    codec: Codec,
) -> Result<(Vec<u8>, BatchHeader), BatchError> {
    let records = records(batch, header)?;
    rebuild(batch, header, &records, codec)
}

/// As `recompress`, with the batch's records already decompressed.
pub fn rebuild(
    batch: &[u8],
    header: &BatchHeader,
    records: &[u8],
    codec: Codec,
) -> Result<(Vec<u8>, BatchHeader), BatchError> {
    batch::check_uncompressed_records(records, header.records_count)?;
    let body = compress(codec, records)
        .map_err(|e| BatchError::Invalid(format!("compressing records ({codec:?}): {e}")))?;
    let mut out = Vec::with_capacity(batch::HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..batch::HEADER_LEN]);
    out.extend_from_slice(&body);
    let length = i32::try_from(out.len() - batch::LOG_OVERHEAD)
        .map_err(|_| BatchError::Invalid("recompressed batch exceeds 2 GiB".into()))?;
    out[batch::BATCH_LENGTH..batch::BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let attributes = (header.attributes & !batch::COMPRESSION_MASK) | codec.id();
    out[batch::ATTRIBUTES..batch::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = batch::compute_crc(&out);
    out[batch::CRC..batch::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    let header = BatchHeader {
        size: out.len(),
        attributes,
        ..*header
    };
    Ok((out, header))
}

/// The batch as the topic stores it: `None` when it is already in the
/// topic's codec (or the topic keeps the producer's), else rebuilt.
pub fn to_topic_codec(
    batch: &[u8],
    header: &BatchHeader,
    topic: CompressionType,
) -> Result<Option<(Vec<u8>, BatchHeader)>, BatchError> {
    match topic.codec() {
        Some(codec) if codec.id() != header.compression() => recompress(batch, header, codec).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records_of(batch: &[u8]) -> Vec<u8> {
        let header = batch::validate(batch).unwrap();
        records(batch, &header).unwrap().into_owned()
    }

    #[test]
    fn every_codec_round_trips_a_batch() {
        let value = vec![b'x'; 3000];
        let original = batch::build_idempotent_batch(
            0,
            1_700_000_000_000,
            42,
            3,
            17,
            &[(b"k1", &value), (b"", b"v2"), (b"k3", b"")],
        );
        let header = batch::validate(&original).unwrap();
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd, Codec::None] {
            let (rebuilt, new_header) = recompress(&original, &header, codec).unwrap();
            let checked = batch::validate(&rebuilt).unwrap();
            assert_eq!(checked, new_header, "{codec:?}");
            assert_eq!(checked.compression(), codec.id());
            assert_eq!(
                (checked.producer_id, checked.producer_epoch, checked.base_sequence),
                (42, 3, 17)
            );
            assert_eq!(checked.records_count, 3);
            assert_eq!(checked.max_timestamp, header.max_timestamp);
            assert_eq!(records_of(&rebuilt), original[batch::HEADER_LEN..], "{codec:?}");
            if codec != Codec::None {
                assert!(rebuilt.len() < original.len(), "{codec:?} did not compress");
                // And back: compressed -> another codec.
                let (again, _) = recompress(&rebuilt, &checked, Codec::Zstd).unwrap();
                assert_eq!(records_of(&again), original[batch::HEADER_LEN..]);
            }
        }
    }

    #[test]
    fn raw_snappy_is_read_too() {
        let data = b"hello hello hello hello".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Codec::Snappy, &raw, 1 << 20).unwrap(), data);
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let zeros = vec![0u8; 1 << 20];
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let small = compress(codec, &zeros).unwrap();
            assert!(decompress(codec, &small, 1000).is_err(), "{codec:?}");
            assert_eq!(decompress(codec, &small, 1 << 20).unwrap().len(), 1 << 20);
        }
        assert!(decompress(Codec::Zstd, b"not zstd at all", 1000).is_err());
    }

    #[test]
    fn topic_codec_names() {
        for name in ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"] {
            assert_eq!(
                CompressionType::parse(name).map(CompressionType::name),
                Some(name)
            );
        }
        assert_eq!(CompressionType::parse("brotli"), None);
        assert_eq!(CompressionType::default(), CompressionType::Producer);
    }

    #[test]
    fn a_batch_already_in_the_topic_codec_is_kept() {
        let original = batch::build_batch(0, 5, &[(b"k", b"v")]);
        let header = batch::validate(&original).unwrap();
        assert!(to_topic_codec(&original, &header, CompressionType::Producer)
            .unwrap()
            .is_none());
        assert!(to_topic_codec(&original, &header, CompressionType::Uncompressed)
            .unwrap()
            .is_none());
        let (zstd, _) = to_topic_codec(&original, &header, CompressionType::Zstd)
            .unwrap()
            .unwrap();
        assert_eq!(batch::validate(&zstd).unwrap().compression(), 4);
    }
}
