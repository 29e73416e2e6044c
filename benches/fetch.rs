//! Fetch assembly: what a Fetch of 1 MiB costs the broker once the request
//! is decoded: read whole batches from the partition log (page cache) and
//! encode a FetchResponse frame around them, bytes/s. Split into the read
//! and the encode so a change to either shows; `encode_copied` is the
//! encoding that copies the records into the frame, kept for comparison
//! with the spliced one the broker uses.

mod support;

use chronik_ingest::protocol::response::{encode_response, encode_response_spliced};
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
    group.bench_function("encode_copied_1MiB_v16", |b| {
        b.iter(|| black_box(encode_response(7, 16, &response(stored.clone())).expect("encode")))
    });
    group.bench_function("encode_spliced_1MiB_v16", |b| {
        b.iter(|| {
            let frame = encode_response_spliced(7, 16, &response(stored.clone()), vec![stored.clone()]);
            black_box(frame.expect("encode"))
        })
    });
    group.bench_function("read_and_encode_1MiB_v16", |b| {
        let mut offset = 0;
        b.iter(|| {
            let records = log.read(offset, FETCH_BYTES, true).expect("read");
            offset = (offset + 997) % (end - 100);
            let records = bytes::Bytes::from(records);
            let frame = encode_response_spliced(7, 16, &response(records.clone()), vec![records]);
            black_box(frame.expect("encode"))
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
