//! What recording costs per request on the hot path: the handle lookups
//! and atomic adds a Produce request makes (request count + latency
//! histogram + per-topic records and bytes), on one shard's handles.

use chronik_ingest::metrics::{Metrics, RuntimeCounters, ShardMetrics};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use std::time::Duration;

fn record_produce(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::new(RuntimeCounters::empty()));
    let shard = ShardMetrics::new(0, metrics);
    c.bench_function("metrics/record_one_produce_request", |b| {
        b.iter(|| {
            shard.request_done(0, Duration::from_micros(250));
            shard.produced("orders", 16, 16 * 1024);
        })
    });
}

criterion_group!(benches, record_produce);
criterion_main!(benches);
