//! Topic `compression.type` on the produce path: what the receiving shard
//! spends rebuilding a batch in the topic's codec (`validator::prepare`:
//! decompress, check the records, compress, new CRC), on 16 KiB batches
//! of 16 x 1 KiB records (librdkafka's typical linger batch) and 1 MiB
//! batches of 1024 x 1 KiB records:
//! - `uncompressed->zstd` and `lz4->zstd` into a zstd topic;
//! - `zstd->zstd`: the batch already in the topic codec (kept as sent).
//!
//! Throughput is in uncompressed record bytes; records/s = bytes/s / 1 KiB.
//! Record values are log-like text (repeated field names, varying numbers
//! and ids), which zstd shrinks about 3-4x, like real event payloads.

use chronik_ingest::log::batch::{build_batch, validate};
use chronik_ingest::log::compression::{recompress, Codec, CompressionType};
use chronik_ingest::log::validator::prepare;
use chronik_ingest::log::LogConfig;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

/// One ~1 KiB log-like record value, different for each `i`.
fn record_value(i: u64) -> Vec<u8> {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::with_capacity(1100);
    while out.len() < 1000 {
        let r = next();
        out.push_str(&format!(
            "{{\"ts\":{},\"level\":\"{}\",\"user\":\"u{:06}\",\"latency_ms\":{},\"path\":\"/api/v1/items/{}\"}}",
            1_700_000_000_000u64 + (r % 1_000_000),
            ["info", "warn", "debug"][(r % 3) as usize],
            r % 100_000,
            r % 997,
            r % 10_000
        ));
    }
    out.truncate(1024);
    out.into_bytes()
}

fn batch_of(records: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records as u64).map(record_value).collect();
    let keys: Vec<Vec<u8>> = (0..records).map(|i| format!("key-{i}").into_bytes()).collect();
    let pairs: Vec<(&[u8], &[u8])> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    build_batch(0, chronik_ingest::log::partition_log::now_ms(), &pairs)
}

fn to_zstd_topic(c: &mut Criterion) {
    let zstd_topic = LogConfig {
        compression: CompressionType::Zstd,
        ..LogConfig::default()
    };
    for records in [16usize, 1024] {
        let plain = batch_of(records);
        let header = validate(&plain).expect("valid");
        let (lz4, lz4_header) = recompress(&plain, &header, Codec::Lz4).expect("lz4");
        let (zstd, zstd_header) = recompress(&plain, &header, Codec::Zstd).expect("zstd");
        println!(
            "{records} x 1 KiB: uncompressed {} B, lz4 {} B, zstd {} B",
            plain.len(),
            lz4.len(),
            zstd.len()
        );
        let record_bytes = (records * 1024) as u64;
        let mut group = c.benchmark_group(format!("recompress_{records}x1KiB"));
        group.throughput(Throughput::Bytes(record_bytes));
        group.measurement_time(Duration::from_secs(4));
        for (name, bytes, header) in [
            ("uncompressed->zstd", &plain, header),
            ("lz4->zstd", &lz4, lz4_header),
            ("zstd->zstd(kept)", &zstd, zstd_header),
        ] {
            group.bench_function(name, |b| {
                b.iter(|| {
                    black_box(prepare(bytes, &header, &zstd_topic, header.max_timestamp).expect("prepared"))
                })
            });
        }
        group.finish();
        let mut group = c.benchmark_group(format!("decompress_{records}x1KiB"));
        group.throughput(Throughput::Bytes(record_bytes));
        group.measurement_time(Duration::from_secs(3));
        for (name, bytes, header) in [("lz4", &lz4, lz4_header), ("zstd", &zstd, zstd_header)] {
            group.bench_function(name, |b| {
                b.iter(|| {
                    black_box(chronik_ingest::log::compression::records(bytes, &header).expect("records"))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, to_zstd_topic);
criterion_main!(benches);
