//! Transactional produce throughput and commit latency with librdkafka
//! (issue 18's benchmark; `scripts/bench-txn.sh` runs it):
//!
//!     txn_perf --bootstrap 127.0.0.1:9092 --topic t --records 1000000 \
//!         --record-size 1024 --commit-ms 100
//!
//! Produces as fast as librdkafka takes records. With `--commit-ms 0` the
//! producer is idempotent and never commits (the baseline); otherwise it
//! is transactional and commits every that many milliseconds: it waits for
//! the transaction's records to be acknowledged, then times
//! `commit_transaction` alone (EndTxn, which the broker answers once its
//! markers are written). Prints one line:
//! `records/s MB/s commits endtxn_p50_ms endtxn_p99_ms endtxn_max_ms`.

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::time::{Duration, Instant};

struct Args {
    bootstrap: String,
    topic: String,
    records: usize,
    record_size: usize,
    commit_ms: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        bootstrap: "127.0.0.1:9092".into(),
        topic: "txn-perf".into(),
        records: 1_000_000,
        record_size: 1024,
        commit_ms: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--bootstrap" => args.bootstrap = value.clone(),
            "--topic" => args.topic = value.clone(),
            "--records" => args.records = number()? as usize,
            "--record-size" => args.record_size = number()? as usize,
            "--commit-ms" => args.commit_ms = number()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), String> {
    let args = parse()?;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("message.timeout.ms", "60000")
        .set("enable.idempotence", "true");
    if let Ok(debug) = std::env::var("RDKAFKA_DEBUG") {
        config.set("debug", debug);
    }
    let transactional = args.commit_ms > 0;
    if transactional {
        config.set("transactional.id", format!("txn-perf-{}", std::process::id()));
    }
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().map_err(|e| e.to_string())?;
    // Waits for every record to be acknowledged before a commit: the
    // rdkafka crate's own flush (inside commit_transaction) waits in 100 ms
    // polls, which would round every commit up to the next 100 ms.
    let drain = |producer: &ThreadedProducer<DefaultProducerContext>| {
        while producer.in_flight_count() > 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let timeout = Duration::from_secs(60);
    if transactional {
        producer.init_transactions(timeout).map_err(|e| e.to_string())?;
        producer.begin_transaction().map_err(|e| e.to_string())?;
    }
    let payload = vec![b'x'; args.record_size];
    let mut commits: Vec<f64> = Vec::new();
    let started = Instant::now();
    let mut last_commit = Instant::now();
    for _ in 0..args.records {
        loop {
            match producer.send(BaseRecord::<(), [u8]>::to(&args.topic).payload(&payload[..])) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
        if transactional && last_commit.elapsed() >= Duration::from_millis(args.commit_ms) {
            let at = Instant::now();
            producer.commit_transaction(timeout).map_err(|e| e.to_string())?;
            commits.push(at.elapsed().as_secs_f64() * 1000.0);
            producer.begin_transaction().map_err(|e| e.to_string())?;
            last_commit = Instant::now();
        }
    }
    if transactional {
        drain(&producer);
        let at = Instant::now();
        producer.commit_transaction(timeout).map_err(|e| e.to_string())?;
        commits.push(at.elapsed().as_secs_f64() * 1000.0);
    } else {
        drain(&producer);
    }
    let secs = started.elapsed().as_secs_f64();
    commits.sort_by(f64::total_cmp);
    println!(
        "{:.0} records/s {:.1} MB/s {} commits {:.1} {:.1} {:.1}",
        args.records as f64 / secs,
        (args.records * args.record_size) as f64 / secs / 1e6,
        commits.len(),
        percentile(&commits, 0.5),
        percentile(&commits, 0.99),
        commits.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
