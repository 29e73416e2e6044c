//! Partition log micro-benchmarks on this machine's disk (page cache):
//! - `log_append`: validated 16 KiB batches (16 x 1 KiB records) appended
//!   with offset assignment, bytes/s;
//! - `log_read`: 1 MiB fetch-sized reads of whole batches from a 64 MiB log;
//! - `batch_validate`: what Produce checks before anything is written
//!   (header, lengths, CRC-32C), on a 16 KiB and a 1 MiB batch, bytes/s.

mod support;

use chronik_ingest::log::batch::{build_batch, validate};
use chronik_ingest::log::{LogConfig, PartitionLog};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};
use support::{scratch, sixteen_kib_batch, FilledLog};

fn log_append(c: &mut Criterion) {
    let batch = sixteen_kib_batch();
    let config = LogConfig {
        segment_bytes: 256 << 20,
        ..LogConfig::default()
    };
    let mut group = c.benchmark_group("log_append");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("validate_and_append_16KiB", |b| {
        b.iter_custom(|iters| {
            let dir = scratch("append");
            let (mut log, _) = PartitionLog::open(&dir).expect("open");
            let start = Instant::now();
            for _ in 0..iters {
                let header = validate(&batch).expect("valid");
                black_box(log.append(&batch, header, &config).expect("append"));
            }
            let took = start.elapsed();
            drop(log);
            let _ = std::fs::remove_dir_all(&dir);
            took
        })
    });
    group.finish();
}

fn batch_validate(c: &mut Criterion) {
    let small = sixteen_kib_batch();
    let value = vec![b'v'; 1000];
    let records: Vec<(&[u8], &[u8])> = (0..1000).map(|_| (&b"key"[..], &value[..])).collect();
    let large = build_batch(0, 1_700_000_000_000, &records);
    let mut group = c.benchmark_group("batch_validate");
    for (name, batch) in [("16KiB", &small), ("1MiB", &large)] {
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(validate(black_box(batch)).expect("valid")))
        });
    }
    group.finish();
}

fn log_read(c: &mut Criterion) {
    let filled = FilledLog::new("read", 64 << 20);
    let log = &filled.log;
    let end = log.log_end_offset();
    let mut group = c.benchmark_group("log_read");
    group.throughput(Throughput::Bytes(1 << 20));
    group.bench_function("read_1MiB_of_batches", |b| {
        let mut offset = 0;
        b.iter(|| {
            let bytes = log.read(offset, 1 << 20, true).expect("read");
            offset = (offset + 997) % (end - 100);
            black_box(bytes)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = batch_validate, log_append, log_read
}
criterion_main!(benches);
