//! A librdkafka stand-in for Kafka's `kafka-consumer-perf-test`, with its
//! flags and its output line, for machines without the Java tools.
//! `scripts/perf-consume.sh` runs the real tool when it is on PATH and this
//! otherwise.
//!
//! cargo run --release --example consumer_perf -- --bootstrap-server 127.0.0.1:9092 \
//!     --topic t --messages 1000000 [--group G] [--timeout MS] [--consumer.config FILE] \
//!     [--fetch-size BYTES] [--hide-header]
//!
//! Like Kafka's tool it joins a consumer group (a fresh one unless --group
//! is given), reads from the earliest offset, and reports the time spent
//! joining (rebalance.time.ms) apart from the time spent fetching.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::ClientContext;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Remembers when the first partitions were assigned.
#[derive(Clone, Default)]
struct Joined(Arc<Mutex<Option<Instant>>>);

impl ClientContext for Joined {}

impl ConsumerContext for Joined {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            if let Ok(mut joined) = self.0.lock() {
                joined.get_or_insert_with(Instant::now);
            }
        }
    }
}

struct Args {
    bootstrap: String,
    topic: String,
    messages: u64,
    group: String,
    timeout: Duration,
    fetch_size: Option<String>,
    props: Vec<(String, String)>,
    hide_header: bool,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: consumer_perf --bootstrap-server HOST:PORT --topic TOPIC --messages N [--group ID] \
         [--timeout MS] [--fetch-size BYTES] [--consumer.config FILE] [--hide-header]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut args = Args {
        bootstrap: String::new(),
        topic: String::new(),
        messages: 0,
        group: format!("perf-consumer-{nanos}"),
        timeout: Duration::from_secs(10),
        fetch_size: None,
        props: Vec::new(),
        hide_header: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--bootstrap-server" | "--broker-list" => args.bootstrap = value(),
            "--topic" => args.topic = value(),
            "--messages" => args.messages = value().parse().unwrap_or_else(|_| usage("bad --messages")),
            "--group" => args.group = value(),
            "--timeout" => {
                let ms: u64 = value().parse().unwrap_or_else(|_| usage("bad --timeout"));
                args.timeout = Duration::from_millis(ms);
            }
            "--fetch-size" => args.fetch_size = Some(value()),
            "--consumer.config" => {
                let path = value();
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| usage(&format!("{path}: {e}")));
                for line in text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    let (k, v) = line
                        .split_once('=')
                        .unwrap_or_else(|| usage(&format!("{path}: bad line {line}")));
                    args.props.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            "--hide-header" => args.hide_header = true,
            "--print-metrics" | "--show-detailed-stats" => {}
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if args.bootstrap.is_empty() || args.topic.is_empty() || args.messages == 0 {
        usage("--bootstrap-server, --topic and --messages are required");
    }
    args
}

fn timestamp(at: SystemTime) -> String {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn main() {
    let args = parse_args();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true");
    if let Some(size) = &args.fetch_size {
        config.set("max.partition.fetch.bytes", size);
    }
    for (k, v) in &args.props {
        config.set(k, v);
    }
    let joined = Joined::default();
    let consumer: BaseConsumer<Joined> = config
        .create_with_context(joined.clone())
        .unwrap_or_else(|e| usage(&format!("consumer: {e}")));
    consumer
        .subscribe(&[&args.topic])
        .unwrap_or_else(|e| usage(&format!("subscribe: {e}")));

    let start_wall = SystemTime::now();
    let start = Instant::now();
    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut last_message = Instant::now();
    while count < args.messages {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                count += 1;
                bytes += message.payload_len() as u64 + message.key().map_or(0, <[u8]>::len) as u64;
                last_message = Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            None => {}
        }
        // Kafka's tool gives up after --timeout without a message.
        if last_message.elapsed() > args.timeout && (count > 0 || start.elapsed() > args.timeout) {
            eprintln!(
                "WARNING: Exiting before consuming the expected number of messages: timeout ({} ms) exceeded.",
                args.timeout.as_millis()
            );
            break;
        }
    }
    let elapsed = start.elapsed();
    let end_wall = SystemTime::now();
    let joined_after = joined
        .0
        .lock()
        .ok()
        .and_then(|j| *j)
        .map_or(Duration::ZERO, |at| at.saturating_duration_since(start));
    let fetch = elapsed.saturating_sub(joined_after).as_secs_f64().max(1e-9);
    let mb = bytes as f64 / (1024.0 * 1024.0);
    let secs = elapsed.as_secs_f64().max(1e-9);
    if !args.hide_header {
        println!(
            "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, \
             fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
        );
    }
    println!(
        "{}, {}, {mb:.4}, {:.4}, {count}, {:.4}, {}, {}, {:.4}, {:.4}",
        timestamp(start_wall),
        timestamp(end_wall),
        mb / secs,
        count as f64 / secs,
        joined_after.as_millis(),
        (fetch * 1000.0) as u64,
        mb / fetch,
        count as f64 / fetch
    );
    consumer.unsubscribe();
    if count < args.messages {
        std::process::exit(1);
    }
}
