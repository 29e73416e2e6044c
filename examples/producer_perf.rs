//! A librdkafka stand-in for Kafka's `kafka-producer-perf-test`, with the
//! same flags and the same output lines, for machines without the Java
//! tools. `scripts/perf-produce.sh` runs the real tool when it is on PATH
//! and this otherwise.
//!
//! cargo run --release --example producer_perf -- --topic t --num-records 1000000 \
//!     --record-size 1024 --throughput -1 --producer-props acks=1 bootstrap.servers=127.0.0.1:9092
//!
//! `bootstrap.servers=mock` (or `mock:PARTITIONS`) produces to librdkafka's
//! built-in mock cluster (`rd_kafka_mock_cluster_new`, in this process, in
//! memory) instead: the client-side ceiling on this machine.
//!
//! Payloads are random upper-case letters, as Kafka's tool makes them, so
//! compression ratios match its runs.

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-record bookkeeping costs the client CPU the broker is measured
/// with, so it is kept to atomics: no allocation, no lock per record. The
/// delivery opaque is the send time (µs since start) itself.
struct Stats {
    start: Instant,
    /// One slot per record, filled in delivery order.
    latencies_us: Vec<AtomicU32>,
    recorded: AtomicUsize,
    acked: AtomicU64,
    failed: AtomicU64,
    window_count: AtomicU64,
    window_latency_us: AtomicU64,
    window_max_us: AtomicU64,
}

#[derive(Clone)]
struct Context(Arc<Stats>);

impl Context {
    fn new(records: u64) -> Context {
        Context(Arc::new(Stats {
            start: Instant::now(),
            latencies_us: (0..records).map(|_| AtomicU32::new(0)).collect(),
            recorded: AtomicUsize::new(0),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            window_count: AtomicU64::new(0),
            window_latency_us: AtomicU64::new(0),
            window_max_us: AtomicU64::new(0),
        }))
    }

    fn now_us(&self) -> usize {
        self.0.start.elapsed().as_micros() as usize
    }
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_us: usize) {
        let us = self.now_us().saturating_sub(sent_us).min(u32::MAX as usize) as u32;
        if result.is_err() {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.0.acked.fetch_add(1, Ordering::Relaxed);
        self.0.window_count.fetch_add(1, Ordering::Relaxed);
        self.0
            .window_latency_us
            .fetch_add(u64::from(us), Ordering::Relaxed);
        self.0.window_max_us.fetch_max(u64::from(us), Ordering::Relaxed);
        let slot = self.0.recorded.fetch_add(1, Ordering::Relaxed);
        if let Some(cell) = self.0.latencies_us.get(slot) {
            cell.store(us, Ordering::Relaxed);
        }
    }
}

struct Args {
    topic: String,
    num_records: u64,
    record_size: usize,
    throughput: f64,
    /// Records get keys `k<n mod key_space>` (a compacted topic needs
    /// them); 0: no keys, as kafka-producer-perf-test sends.
    key_space: u64,
    props: Vec<(String, String)>,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: producer_perf --topic TOPIC --num-records N --record-size BYTES --throughput RECORDS_PER_SEC \
         [--key-space N] --producer-props key=value [key=value ...]   (throughput -1: unthrottled; \
         --key-space: keys k0..k<N-1> in turn, for compacted topics)"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        topic: String::new(),
        num_records: 0,
        record_size: 100,
        throughput: -1.0,
        key_space: 0,
        props: Vec::new(),
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--topic" => args.topic = value(),
            "--num-records" => {
                args.num_records = value().parse().unwrap_or_else(|_| usage("bad --num-records"))
            }
            "--record-size" => {
                args.record_size = value().parse().unwrap_or_else(|_| usage("bad --record-size"))
            }
            "--throughput" => args.throughput = value().parse().unwrap_or_else(|_| usage("bad --throughput")),
            "--key-space" => args.key_space = value().parse().unwrap_or_else(|_| usage("bad --key-space")),
            "--producer-props" => {
                while let Some(kv) = it.next_if(|a| !a.starts_with("--")) {
                    let (k, v) = kv
                        .split_once('=')
                        .unwrap_or_else(|| usage(&format!("bad property {kv}")));
                    args.props.push((k.to_string(), v.to_string()));
                }
            }
            "--print-metrics" => {}
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if args.topic.is_empty() || args.num_records == 0 {
        usage("--topic and --num-records are required");
    }
    args
}

fn line(count: u64, elapsed: Duration, bytes: u64, avg_us: f64, max_us: u64) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    format!(
        "{count} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency",
        count as f64 / secs,
        bytes as f64 / secs / (1024.0 * 1024.0),
        avg_us / 1000.0,
        max_us as f64 / 1000.0
    )
}

fn main() {
    let args = parse_args();
    let mut config = ClientConfig::new();
    config
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    let mut mock = None;
    for (k, v) in &args.props {
        if k == "bootstrap.servers" && (v == "mock" || v.starts_with("mock:")) {
            let partitions = v
                .strip_prefix("mock:")
                .map_or(Ok(1), str::parse)
                .unwrap_or_else(|_| usage("bad mock:PARTITIONS"));
            let cluster = rdkafka::mocking::MockCluster::new(1)
                .unwrap_or_else(|e| usage(&format!("mock cluster: {e}")));
            cluster
                .create_topic(&args.topic, partitions, 1)
                .unwrap_or_else(|e| usage(&format!("mock topic: {e}")));
            config.set(k, cluster.bootstrap_servers());
            mock = Some(cluster);
            continue;
        }
        config.set(k, v);
    }
    let context = Context::new(args.num_records);
    let producer: ThreadedProducer<Context> = config
        .create_with_context(context.clone())
        .unwrap_or_else(|e| usage(&format!("producer: {e}")));
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let payload: Vec<u8> = (0..args.record_size)
        .map(|_| {
            // xorshift64: cheap, deterministic, incompressible enough.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b'A' + (seed % 26) as u8
        })
        .collect();
    let start = Instant::now();
    let mut window_start = start;
    for sent in 0..args.num_records {
        if args.throughput > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / args.throughput);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let sent_us = context.now_us();
        let key = (args.key_space > 0).then(|| format!("k{}", sent % args.key_space));
        loop {
            let record =
                BaseRecord::<str, [u8], usize>::with_opaque_to(&args.topic, sent_us).payload(&payload);
            let record = match &key {
                Some(key) => record.key(key.as_str()),
                None => record,
            };
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_micros(200))
                }
                Err((e, _)) => usage(&format!("send: {e}")),
            }
        }
        // A clock read per record is already the tool's biggest cost after
        // librdkafka itself; look at the window only every 4096 records.
        if sent % 4096 == 0 && window_start.elapsed() >= Duration::from_secs(5) {
            let n = context.0.window_count.swap(0, Ordering::Relaxed);
            let total = context.0.window_latency_us.swap(0, Ordering::Relaxed);
            let max = context.0.window_max_us.swap(0, Ordering::Relaxed);
            let avg = if n > 0 { total as f64 / n as f64 } else { 0.0 };
            println!(
                "{}.",
                line(n, window_start.elapsed(), n * args.record_size as u64, avg, max)
            );
            window_start = Instant::now();
        }
    }
    if let Err(e) = producer.flush(Duration::from_secs(300)) {
        eprintln!("flush: {e}");
    }
    let elapsed = start.elapsed();
    let recorded = context
        .0
        .recorded
        .load(Ordering::Relaxed)
        .min(context.0.latencies_us.len());
    let mut latencies: Vec<u32> = context.0.latencies_us[..recorded]
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .collect();
    latencies.sort_unstable();
    let acked = latencies.len() as u64;
    let pct = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let avg = if acked > 0 {
        latencies.iter().map(|&l| u64::from(l)).sum::<u64>() as f64 / acked as f64
    } else {
        0.0
    };
    println!(
        "{}, {:.0} ms 50th, {:.0} ms 95th, {:.0} ms 99th, {:.0} ms 99.9th.",
        line(
            acked,
            elapsed,
            acked * args.record_size as u64,
            avg,
            latencies.last().copied().unwrap_or(0).into()
        ),
        pct(0.5),
        pct(0.95),
        pct(0.99),
        pct(0.999)
    );
    drop(producer);
    drop(mock);
    let failed = context.0.failed.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("{failed} records failed");
        std::process::exit(1);
    }
}
