//! Issue 13's acceptance check: a cold read of an old segment on one
//! partition must not delay produce answers on another partition of the
//! same shard beyond a stated bound. `scripts/bench-cold-read.sh` runs it
//! against a one-shard broker (both partitions on the same shard).
//!
//! cargo run --release --example cold_read_latency -- --bootstrap 127.0.0.1:9092 \
//!     --data-dir /path/to/STORAGE_PATH [--cold-mb 1024] [--samples 2000] [--bound-ms 50] \
//!     [--segment-mb 128] [--interval-ms 5]
//!
//! 1. Fills topic `cold` (1 partition, segments of --segment-mb) with
//!    --cold-mb of 1 KiB records (acks=1, batched).
//! 2. Baseline: --samples produces to topic `hot` (1 partition), one record
//!    at a time, acks=1, each waited for, one started every --interval-ms
//!    (so the phase lasts long enough to span many cold fetches); their
//!    latencies.
//! 3. Cold phase: a thread drops `<data-dir>/cold-0/*` from the page cache
//!    every 50 ms (posix_fadvise DONTNEED) while a consumer reads `cold`
//!    from its beginning over and over (large fetches, so every Fetch is a
//!    disk read of old segments); meanwhile the same `hot` measurement.
//! 4. Prints p50/p99/p99.9/max per phase, counted from each send and from
//!    when each record was due (see `Latencies`), and the cold bytes read
//!    per second; exits 1 if the cold-phase p99 counted from when due
//!    exceeds --bound-ms (or if the cold reader read nothing, which would
//!    make the run prove nothing).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

const COLD: &str = "cold";
const HOT: &str = "hot";
const RECORD_SIZE: usize = 1024;
/// How often the cold partition's files are dropped from the page cache.
const EVICT_EVERY: Duration = Duration::from_millis(50);
/// Fetch sizes of the cold reader: whole segments' worth per request.
const FETCH_MAX_BYTES: &str = "104857600";
/// A produce answer later than this counts as a failure, not a sample.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

struct Args {
    bootstrap: String,
    data_dir: PathBuf,
    cold_mb: u64,
    samples: usize,
    bound_ms: f64,
    segment_mb: u64,
    interval: Duration,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: cold_read_latency --bootstrap HOST:PORT --data-dir BROKER_STORAGE_PATH \
         [--cold-mb MB (1024)] [--samples N (2000)] [--bound-ms MS (50)] [--segment-mb MB (128)] [--interval-ms MS (5)]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        bootstrap: String::new(),
        data_dir: PathBuf::new(),
        cold_mb: 1024,
        samples: 2000,
        bound_ms: 50.0,
        segment_mb: 128,
        interval: Duration::from_millis(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--bootstrap" | "--bootstrap-server" => args.bootstrap = value(),
            "--data-dir" => args.data_dir = PathBuf::from(value()),
            "--cold-mb" => args.cold_mb = value().parse().unwrap_or_else(|_| usage("bad --cold-mb")),
            "--samples" => args.samples = value().parse().unwrap_or_else(|_| usage("bad --samples")),
            "--bound-ms" => args.bound_ms = value().parse().unwrap_or_else(|_| usage("bad --bound-ms")),
            "--segment-mb" => args.segment_mb = value().parse().unwrap_or_else(|_| usage("bad --segment-mb")),
            "--interval-ms" => {
                let ms: u64 = value().parse().unwrap_or_else(|_| usage("bad --interval-ms"));
                args.interval = Duration::from_millis(ms);
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if args.bootstrap.is_empty() || args.data_dir.as_os_str().is_empty() {
        usage("--bootstrap and --data-dir are required");
    }
    if args.cold_mb == 0 || args.samples == 0 || args.segment_mb == 0 {
        usage("--cold-mb, --samples and --segment-mb must be positive");
    }
    args
}

fn fail(problem: &str) -> ! {
    eprintln!("cold_read_latency: {problem}");
    std::process::exit(1);
}

fn create_topics(bootstrap: &str, segment_bytes: u64) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| fail(&format!("admin client: {e}")));
    let segment_bytes = segment_bytes.to_string();
    let topics = [
        NewTopic::new(COLD, 1, TopicReplication::Fixed(1)).set("segment.bytes", &segment_bytes),
        NewTopic::new(HOT, 1, TopicReplication::Fixed(1)),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures::executor::block_on(admin.create_topics(&topics, &options))
        .unwrap_or_else(|e| fail(&format!("CreateTopics: {e}")));
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => fail(&format!("CreateTopics {topic}: {code}")),
        }
    }
}

fn payload() -> Vec<u8> {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..RECORD_SIZE)
        .map(|_| {
            // xorshift64: incompressible enough, as producer_perf makes them.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b'A' + (seed % 26) as u8
        })
        .collect()
}

/// Counts the cold records that were not stored.
#[derive(Clone, Default)]
struct FillContext(Arc<AtomicU64>);

impl ClientContext for FillContext {}

impl ProducerContext for FillContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Step (a): `cold_mb` MiB of 1 KiB records into `cold`, flushed.
fn fill_cold(bootstrap: &str, cold_mb: u64) {
    let context = FillContext::default();
    let producer: ThreadedProducer<FillContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(context.clone())
        .unwrap_or_else(|e| fail(&format!("cold producer: {e}")));
    let payload = payload();
    let records = cold_mb * 1024 * 1024 / RECORD_SIZE as u64;
    let start = Instant::now();
    for _ in 0..records {
        loop {
            match producer.send(BaseRecord::<(), [u8], ()>::to(COLD).payload(&payload)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    thread::sleep(Duration::from_micros(200))
                }
                Err((e, _)) => fail(&format!("cold send: {e}")),
            }
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .unwrap_or_else(|e| fail(&format!("cold flush: {e}")));
    let failed = context.0.load(Ordering::Relaxed);
    if failed > 0 {
        fail(&format!("{failed} cold records were not stored"));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "cold: {records} records of {RECORD_SIZE} B ({cold_mb} MiB) produced in {secs:.1} s ({:.0} MiB/s)",
        cold_mb as f64 / secs
    );
}

/// Passes each hot record's outcome to the thread waiting for it (the
/// producer's polling thread runs the callback as the answer arrives).
#[derive(Clone)]
struct HotContext(mpsc::Sender<bool>);

impl ClientContext for HotContext {}

impl ProducerContext for HotContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let _ = self.0.send(result.is_ok());
    }
}

struct HotProducer {
    producer: ThreadedProducer<HotContext>,
    answers: mpsc::Receiver<bool>,
    payload: Vec<u8>,
}

impl HotProducer {
    fn new(bootstrap: &str) -> HotProducer {
        let (tx, answers) = mpsc::channel();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "1")
            .set("linger.ms", "0")
            .set("socket.nagle.disable", "true")
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
            .create_with_context(HotContext(tx))
            .unwrap_or_else(|e| fail(&format!("hot producer: {e}")));
        HotProducer {
            producer,
            answers,
            payload: payload(),
        }
    }

    /// Sends one record and waits for its answer: the produce latency.
    fn once(&self) -> Duration {
        let start = Instant::now();
        if let Err((e, _)) = self
            .producer
            .send(BaseRecord::<(), [u8], ()>::to(HOT).payload(&self.payload))
        {
            fail(&format!("hot send: {e}"));
        }
        match self
            .answers
            .recv_timeout(DELIVERY_TIMEOUT + Duration::from_secs(5))
        {
            Ok(true) => start.elapsed(),
            Ok(false) => fail("a hot record was not stored"),
            Err(_) => fail("no answer to a hot record"),
        }
    }

    /// `n` produces due `interval` apart, each sent when due or as soon as
    /// the previous one is answered, whichever is later.
    fn measure(&self, n: usize, interval: Duration) -> Latencies {
        let start = Instant::now();
        let mut sent = Vec::with_capacity(n);
        let mut due = Vec::with_capacity(n);
        for i in 0..n as u32 {
            let due_at = start + interval * i;
            if let Some(wait) = due_at.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let late = Instant::now().saturating_duration_since(due_at);
            let latency = self.once();
            sent.push(latency.as_secs_f64() * 1000.0);
            due.push((late + latency).as_secs_f64() * 1000.0);
        }
        sent.sort_by(f64::total_cmp);
        due.sort_by(f64::total_cmp);
        Latencies { sent, due }
    }
}

/// Produce latencies in milliseconds, sorted. `sent`: from the send to the
/// answer. `due`: from when the record was due to the answer, which also
/// counts the wait behind a slow previous answer; one record in flight
/// otherwise hides a stall in a single sample (coordinated omission),
/// where a client sending on its own schedule would see every record
/// due during the stall delayed.
struct Latencies {
    sent: Vec<f64>,
    due: Vec<f64>,
}

/// Drops every file of `dir` from the page cache (written pages first
/// made clean, since dirty ones cannot be dropped).
fn evict(dir: &Path, sync_first: bool) -> std::io::Result<usize> {
    let mut files = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let Ok(file) = std::fs::File::open(entry.path()) else {
            continue; // removed meanwhile
        };
        if sync_first {
            file.sync_data()?;
        }
        // SAFETY: a valid descriptor, owned by `file` for the whole call.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        files += 1;
    }
    Ok(files)
}

/// Step (c)'s background: the page-cache evictor and the cold reader.
struct ColdLoad {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    evictions: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl ColdLoad {
    fn start(bootstrap: &str, cold_dir: PathBuf) -> ColdLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let evictions = Arc::new(AtomicU64::new(0));
        match evict(&cold_dir, true) {
            Ok(0) => fail(&format!(
                "{}: no files (is --data-dir the broker's?)",
                cold_dir.display()
            )),
            Ok(_) => {}
            Err(e) => fail(&format!("{}: {e}", cold_dir.display())),
        }
        let evictor = {
            let (stop, evictions) = (stop.clone(), evictions.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = evict(&cold_dir, false) {
                        fail(&format!("evicting {}: {e}", cold_dir.display()));
                    }
                    evictions.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(EVICT_EVERY);
                }
            })
        };
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "cold-read-latency")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.max.bytes", FETCH_MAX_BYTES)
            .set("max.partition.fetch.bytes", FETCH_MAX_BYTES)
            .set("receive.message.max.bytes", "110000000")
            .set("queued.max.messages.kbytes", "262144")
            .create()
            .unwrap_or_else(|e| fail(&format!("cold consumer: {e}")));
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(COLD, 0, Offset::Beginning)
            .unwrap_or_else(|e| fail(&format!("cold assignment: {e}")));
        consumer
            .assign(&assignment)
            .unwrap_or_else(|e| fail(&format!("cold assign: {e}")));
        let reader = {
            let (stop, bytes) = (stop.clone(), bytes.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(message)) => {
                            bytes.fetch_add(message.payload_len() as u64, Ordering::Relaxed);
                        }
                        // At the end: from the beginning again, still cold.
                        Some(Err(KafkaError::PartitionEOF(_))) => rewind(&consumer, &assignment),
                        Some(Err(e)) => eprintln!("cold consumer: {e}"),
                        None => {}
                    }
                }
            })
        };
        ColdLoad {
            stop,
            bytes,
            evictions,
            threads: vec![evictor, reader],
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Back to the cold partition's first offset: a seek, or failing that the
/// assignment again.
fn rewind(consumer: &BaseConsumer, assignment: &TopicPartitionList) {
    let seek = consumer.seek(COLD, 0, Offset::Beginning, Duration::from_secs(10));
    if seek.is_err() {
        consumer
            .assign(assignment)
            .unwrap_or_else(|e| fail(&format!("cold re-assign: {e}")));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn row(phase: &str, from: &str, sorted: &[f64], cold_rate: Option<f64>) -> f64 {
    let p99 = percentile(sorted, 0.99);
    println!(
        "{phase:<9} {from:<13} {:>7} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>11}",
        sorted.len(),
        percentile(sorted, 0.5),
        p99,
        percentile(sorted, 0.999),
        sorted[sorted.len() - 1],
        cold_rate.map_or("-".to_string(), |r| format!("{r:.1}"))
    );
    p99
}

fn main() {
    let args = parse_args();
    create_topics(&args.bootstrap, args.segment_mb * 1024 * 1024);
    fill_cold(&args.bootstrap, args.cold_mb);

    let hot = HotProducer::new(&args.bootstrap);
    // Connection, metadata and the partition's first write out of the way.
    hot.measure(20, args.interval);
    let baseline = hot.measure(args.samples, args.interval);

    let cold = ColdLoad::start(&args.bootstrap, args.data_dir.join(format!("{COLD}-0")));
    let waiting = Instant::now();
    while cold.bytes.load(Ordering::Relaxed) == 0 {
        if waiting.elapsed() > Duration::from_secs(30) {
            fail("the cold reader got nothing in 30 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let (bytes_before, start) = (cold.bytes.load(Ordering::Relaxed), Instant::now());
    let loaded = hot.measure(args.samples, args.interval);
    let (bytes_read, secs) = (
        cold.bytes.load(Ordering::Relaxed) - bytes_before,
        start.elapsed().as_secs_f64(),
    );
    let evictions = cold.evictions.load(Ordering::Relaxed);
    cold.stop();

    let cold_mib_s = bytes_read as f64 / secs / (1024.0 * 1024.0);
    println!(
        "workload: hot = 1 partition, {RECORD_SIZE} B records, acks=1, one in flight, one due every {} ms; \
         cold = 1 partition, {} MiB in {} MiB segments, read from the start over and over in fetches of up \
         to {FETCH_MAX_BYTES} B, its files dropped from the page cache every {} ms ({evictions} times)",
        args.interval.as_millis(),
        args.cold_mb,
        args.segment_mb,
        EVICT_EVERY.as_millis()
    );
    println!(
        "bound: cold-phase p99 produce latency, counted from when each record was due, <= {} ms; \
         cold phase {secs:.1} s, {:.0} MiB read",
        args.bound_ms,
        bytes_read as f64 / (1024.0 * 1024.0)
    );
    println!(
        "{:<9} {:<13} {:>7} {:>8} {:>8} {:>9} {:>8} {:>11}",
        "phase", "latency from", "samples", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "cold MiB/s"
    );
    row("baseline", "send", &baseline.sent, None);
    row("baseline", "due", &baseline.due, None);
    row("cold", "send", &loaded.sent, Some(cold_mib_s));
    let p99 = row("cold", "due", &loaded.due, Some(cold_mib_s));
    if bytes_read == 0 {
        fail("the cold reader read nothing during the cold phase: no evidence either way");
    }
    if p99 > args.bound_ms {
        println!(
            "FAIL: cold-phase p99 (from due) {p99:.2} ms > bound {} ms",
            args.bound_ms
        );
        std::process::exit(1);
    }
    println!(
        "PASS: cold-phase p99 (from due) {p99:.2} ms <= bound {} ms",
        args.bound_ms
    );
}
