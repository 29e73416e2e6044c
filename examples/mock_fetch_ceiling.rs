//! The client's fetch ceiling for issue 14's consume acceptance item: a
//! librdkafka mock cluster (in memory, in this process, behind a real TCP
//! listener) holding the same records the broker was given, so
//! `scripts/bench-sustained.sh` can run the very same rdkafka_performance
//! consume against it and against the broker.
//!
//! cargo run --release --example mock_fetch_ceiling -- --topic T --records N \
//!     [--size 1024] [--timeout-s 3600]
//!
//! Creates a one-partition topic, produces N records of --size bytes to it
//! (acks=1, batched as rdkafka_performance does; not timed), prints the
//! cluster's bootstrap address on stdout, then serves until stdin closes or
//! --timeout-s passes. Exits 1 if any record was not delivered.

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use rdkafka::types::RDKafkaErrorCode;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Args {
    topic: String,
    records: u64,
    size: usize,
    timeout: Duration,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: mock_fetch_ceiling --topic T --records N [--size BYTES] [--timeout-s SECONDS]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        topic: String::new(),
        records: 0,
        size: 1024,
        timeout: Duration::from_secs(3600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("{flag}: not a number: {value}")))
        };
        match flag.as_str() {
            "--topic" => args.topic = value.clone(),
            "--records" => args.records = number(),
            "--size" => args.size = number() as usize,
            "--timeout-s" => args.timeout = Duration::from_secs(number()),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if args.topic.is_empty() || args.records == 0 {
        usage("--topic and --records are required");
    }
    args
}

fn main() {
    let args = parse_args();
    if let Err(e) = run(&args) {
        eprintln!("mock_fetch_ceiling: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let cluster = MockCluster::new(1).map_err(|e| format!("mock cluster: {e}"))?;
    cluster
        .create_topic(&args.topic, 1, 1)
        .map_err(|e| format!("create topic: {e}"))?;
    let bootstrap = cluster.bootstrap_servers();
    fill(&bootstrap, args)?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{bootstrap}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("stdout: {e}"))?;

    // Serve until the script closes our stdin (or goes away), bounded.
    let (done, closed) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = done.send(());
    });
    let _ = closed.recv_timeout(args.timeout);
    Ok(())
}

/// Counts failed deliveries (flush alone does not tell).
#[derive(Clone, Default)]
struct Failures(Arc<AtomicU64>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Produces the records untimed, with rdkafka_performance's batching.
fn fill(bootstrap: &str, args: &Args) -> Result<(), String> {
    let failures = Failures::default();
    let producer: BaseProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(failures.clone())
        .map_err(|e| format!("producer: {e}"))?;
    let payload = vec![b'x'; args.size];
    let started = Instant::now();
    for _ in 0..args.records {
        loop {
            match producer.send::<(), _>(BaseRecord::to(&args.topic).partition(0).payload(&payload)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(format!("produce: {e}")),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(600))
        .map_err(|e| format!("flush: {e}"))?;
    let failed = failures.0.load(Ordering::Relaxed);
    if failed != 0 || producer.in_flight_count() != 0 {
        return Err(format!("{failed} records not delivered"));
    }
    eprintln!(
        "mock_fetch_ceiling: {} records of {} B in the mock cluster ({:.1} s)",
        args.records,
        args.size,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
