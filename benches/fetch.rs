//! Fetch assembly: what a Fetch of 1 MiB costs the broker once the request
//! is decoded: read whole batches from the partition log (page cache) and
//! encode them into a FetchResponse frame, bytes/s. Split into the read and
//! the encode so a change to either shows.

mod support;

use chronik_ingest::protocol::response::encode_response;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::hint::black_box;
use std::time::Duration;
use support::FilledLog;

const FETCH_BYTES: usize = 1 << 20;

fn response(records: bytes::Bytes) -> FetchResponse {
    FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("bench")))
        .with_partitions(vec![PartitionData::default()
            .with_partition_index(0)
            .with_high_watermark(1_000_000)
            .with_last_stable_offset(1_000_000)
            .with_log_start_offset(0)
            .with_aborted_transactions(Some(Vec::new()))
            .with_preferred_read_replica(BrokerId(-1))
            .with_records(Some(records))])])
}

fn fetch_assembly(c: &mut Criterion) {
    // As the broker binary runs (see malloc_tuning).
    chronik_ingest::tune_malloc_for_large_buffers();
    let filled = FilledLog::new("fetch", 64 << 20);
    let log = &filled.log;
    let end = log.log_end_offset();

    let mut group = c.benchmark_group("fetch_assembly");
    group.throughput(Throughput::Bytes(FETCH_BYTES as u64));
    let stored = bytes::Bytes::from(log.read(0, FETCH_BYTES, true).expect("read"));
    group.bench_function("encode_1MiB_v16", |b| {
        b.iter(|| black_box(encode_response(7, 16, &response(stored.clone())).expect("encode")))
    });
    group.bench_function("read_and_encode_1MiB_v16", |b| {
        let mut offset = 0;
        b.iter(|| {
            let records = log.read(offset, FETCH_BYTES, true).expect("read");
            offset = (offset + 997) % (end - 100);
            black_box(encode_response(7, 16, &response(bytes::Bytes::from(records))).expect("encode"))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = fetch_assembly
}
criterion_main!(benches);
