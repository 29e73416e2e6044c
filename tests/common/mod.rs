//! Shared by the integration tests: an in-process broker on an ephemeral
//! port with a scratch data directory, and a minimal raw Kafka client built
//! on the `kafka-protocol` crate's client side (independent of the broker's
//! own framing code).
#![allow(dead_code)]

pub mod tls;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use chronik_ingest::{IngestServer, ServerConfig, ServerHandle};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running in-process broker; stopped and its data removed on drop.
pub struct TestBroker {
    handle: Option<ServerHandle>,
    config: ServerConfig,
    pub dir: PathBuf,
    pub addr: SocketAddr,
}

pub fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "chronik-test-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl TestBroker {
    pub fn start(name: &str, shards: usize) -> TestBroker {
        Self::start_with(name, shards, |_| {})
    }

    pub fn start_with(name: &str, shards: usize, tweak: impl FnOnce(&mut ServerConfig)) -> TestBroker {
        let dir = scratch_dir(name);
        let mut config = ServerConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            shards: NonZeroUsize::new(shards),
            shutdown_timeout: Duration::from_secs(5),
            metrics_address: None,
            storage_path: dir.clone(),
            ..ServerConfig::default()
        };
        // Tests open many loopback connections at once; the limits tests
        // turn the rate limit back on.
        config.pool_config.rate_limit = 0;
        tweak(&mut config);
        let dir = config.storage_path.clone();
        let handle = IngestServer::new(config.clone(), &dir)
            .start()
            .expect("broker starts");
        let addr = handle.local_addr();
        TestBroker {
            handle: Some(handle),
            config,
            dir,
            addr,
        }
    }

    /// Graceful stop, then a new broker on the same data directory (on a
    /// new ephemeral port).
    pub fn restart(&mut self) {
        self.restart_with(|_| {});
    }

    /// [`TestBroker::restart`] with a changed configuration.
    pub fn restart_with(&mut self, tweak: impl FnOnce(&mut ServerConfig)) {
        tweak(&mut self.config);
        if let Some(handle) = self.handle.take() {
            handle.stop();
            handle.join().expect("clean stop");
        }
        let handle = IngestServer::new(self.config.clone(), &self.dir)
            .start()
            .expect("broker restarts");
        self.addr = handle.local_addr();
        self.handle = Some(handle);
    }

    /// Graceful stop; the configuration, to start another broker on the
    /// same data directory by hand.
    pub fn stop_and_take_config(&mut self) -> ServerConfig {
        if let Some(handle) = self.handle.take() {
            handle.stop();
            handle.join().expect("clean stop");
        }
        self.config.clone()
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("running")
    }

    pub fn frame_errors(&self) -> u64 {
        self.handle().shard_stats().iter().map(|s| s.frame_errors).sum()
    }

    /// Waits (bounded) until `check` holds for the shard stats.
    pub fn wait_for(&self, what: &str, check: impl Fn(&[chronik_ingest::ShardSnapshot]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.handle().shard_stats();
            if check(&stats) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop();
            let _ = handle.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking connection that speaks raw Kafka frames.
pub struct RawClient {
    pub stream: TcpStream,
    pub next_correlation: i32,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            next_correlation: 1,
        }
    }

    /// Encodes a whole request frame for `R` at `version`.
    pub fn encode<R: Request>(correlation_id: i32, version: i16, body: &R) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("chronik-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, R::header_version(version)).unwrap();
        body.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        buf.to_vec()
    }

    /// Sends one request and reads its response.
    pub fn call<R: Request>(&mut self, version: i16, body: &R) -> R::Response {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        self.stream
            .write_all(&Self::encode(correlation_id, version, body))
            .unwrap();
        self.read_response::<R>(correlation_id, version)
    }

    pub fn read_response<R: Request>(&mut self, correlation_id: i32, version: i16) -> R::Response {
        let mut frame = self.read_frame().expect("a response frame");
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
        let body = R::Response::decode(&mut frame, version).unwrap();
        assert!(
            frame.is_empty(),
            "{} bytes left after the response body",
            frame.len()
        );
        body
    }

    /// One response frame, or `None` if the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// True if the broker closes the connection within 10 s.
    pub fn closed_by_broker(&mut self) -> bool {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return true,
                Ok(_) => return false,
                // In-process brokers' executors signal threads of this
                // process; a read may be interrupted: try again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A reset (unread bytes at close) is a close too; only a
                // timeout means the broker left the connection open.
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }
}

/// Reads a big-endian i32 off the front (for hand-built frames).
pub fn take_i32(bytes: &mut Bytes) -> i32 {
    bytes.get_i32()
}

/// Where each record ended up (partition, offset), or why it did not.
pub type DeliveryOutcome = Result<(i32, i64), String>;

/// Delivery results of a producer, by the index each record was sent with.
#[derive(Clone, Default)]
pub struct Deliveries(
    pub std::sync::Arc<std::sync::Mutex<BTreeMap<usize, DeliveryOutcome>>>,
    /// Successful deliveries so far (cheap to watch while producing).
    pub std::sync::Arc<AtomicUsize>,
);

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, index: Box<usize>) {
        use rdkafka::message::Message;
        let outcome = match result {
            Ok(m) => {
                self.1.fetch_add(1, Ordering::Relaxed);
                Ok((m.partition(), m.offset()))
            }
            Err((e, _)) => Err(e.to_string()),
        };
        if let Ok(mut all) = self.0.lock() {
            all.insert(*index, outcome);
        }
    }
}

/// Polls for delivery reports on its own thread.
pub type Producer = rdkafka::producer::ThreadedProducer<Deliveries>;

/// A librdkafka producer against `addr` with extra settings; its delivery
/// reports land in the returned `Deliveries`.
pub fn producer(addr: SocketAddr, extra: &[(&str, &str)]) -> (Producer, Deliveries) {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", addr.to_string())
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let deliveries = Deliveries::default();
    let producer = config.create_with_context(deliveries.clone()).expect("producer");
    (producer, deliveries)
}

/// A record to send: key, value, headers.
pub type Outgoing = (Option<Vec<u8>>, Vec<u8>, Vec<(String, String)>);

/// Sends each record (as index i), waiting when librdkafka's queue is full.
pub fn send_all(producer: &Producer, topic: &str, records: impl IntoIterator<Item = Outgoing>) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::BaseRecord;
    for (i, (key, value, headers)) in records.into_iter().enumerate() {
        let mut owned = OwnedHeaders::new();
        for (k, v) in &headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut index = Box::new(i);
        loop {
            let mut record = BaseRecord::with_opaque_to(topic, index)
                .payload(&value)
                .headers(owned.clone());
            if let Some(k) = &key {
                record = record.key(k);
            }
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    index = r.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("send failed: {e}"),
            }
        }
    }
}

/// Sends every record and waits (bounded) for every delivery report.
pub fn produce_all(
    addr: SocketAddr,
    extra: &[(&str, &str)],
    topic: &str,
    records: Vec<Outgoing>,
) -> Vec<Result<(i32, i64), String>> {
    use rdkafka::producer::Producer as _;
    let count = records.len();
    let (producer, deliveries) = producer(addr, extra);
    send_all(&producer, topic, records);
    producer.flush(Duration::from_secs(60)).expect("flush");
    let all = deliveries.0.lock().expect("deliveries");
    assert_eq!(all.len(), count, "every record got a delivery report");
    all.values().cloned().collect()
}

/// A librdkafka consumer without a group, assigned `partitions` of `topic`
/// from the beginning.
pub fn consumer_from_start(
    addr: SocketAddr,
    topic: &str,
    partitions: i32,
) -> rdkafka::consumer::BaseConsumer {
    consumer_from_start_with(addr, topic, partitions, &[])
}

/// [`consumer_from_start`] with extra client settings (TLS, say).
pub fn consumer_from_start_with(
    addr: SocketAddr,
    topic: &str,
    partitions: i32,
    extra: &[(&str, &str)],
) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::Consumer;
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", addr.to_string())
        // librdkafka's consumer needs a group id even for assign(); with no
        // commits it never needs the coordinator.
        .set("group.id", "chronik-test-assign")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let consumer: rdkafka::consumer::BaseConsumer = config.create().expect("consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// Polls until `count` messages arrived or `limit` passed; returns
/// (partition, offset, key, payload, headers as (key, value)) of each.
pub type Consumed = (i32, i64, Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);
pub fn consume(consumer: &rdkafka::consumer::BaseConsumer, count: usize, limit: Duration) -> Vec<Consumed> {
    use rdkafka::message::{Headers, Message};
    let deadline = Instant::now() + limit;
    let mut out = Vec::with_capacity(count);
    while out.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.partition(),
                    m.offset(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                    headers,
                ));
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    out
}

/// The broker binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_chronik-ingest");

/// The binary [`BrokerProcess`] runs: [`BIN`], or `$CHRONIK_BROKER_BIN`
/// when a script points a test at another build (the release binary it
/// measures, say).
pub fn broker_bin() -> std::ffi::OsString {
    std::env::var_os("CHRONIK_BROKER_BIN").unwrap_or_else(|| BIN.into())
}

/// A broker process; killed on drop if still running.
pub struct BrokerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: mpsc::Receiver<String>,
    early: std::cell::RefCell<Vec<String>>,
    /// The log line `start_until` waited for.
    pub last_line: String,
}

impl BrokerProcess {
    pub fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> BrokerProcess {
        Self::start_with_fd_limit(data_dir, extra_env, None)
    }

    /// Starts the broker, optionally under a lower open-file limit.
    pub fn start_with_fd_limit(
        data_dir: &Path,
        extra_env: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> BrokerProcess {
        let prefix = match nofile {
            Some(limit) => vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("ulimit -n {limit} && exec \"$0\""),
            ],
            None => Vec::new(),
        };
        Self::spawn(data_dir, extra_env, &prefix, "chronik-ingest started")
    }

    /// Starts the broker as the last argument of `wrapper` (a tracer, say);
    /// `child` is then the wrapper's process.
    pub fn start_wrapped(data_dir: &Path, extra_env: &[(&str, &str)], wrapper: &[String]) -> BrokerProcess {
        Self::spawn(data_dir, extra_env, wrapper, "chronik-ingest started")
    }

    /// Starts the broker and returns as soon as it logs a line containing
    /// `marker` (`addr` is only known once the start line was seen).
    pub fn start_until(data_dir: &Path, extra_env: &[(&str, &str)], marker: &str) -> BrokerProcess {
        Self::spawn(data_dir, extra_env, &[], marker)
    }

    /// Runs `prefix... BIN` (just BIN without a prefix; see [`broker_bin`]).
    fn spawn(data_dir: &Path, extra_env: &[(&str, &str)], prefix: &[String], marker: &str) -> BrokerProcess {
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(broker_bin());
                c
            }
            None => Command::new(broker_bin()),
        };
        let mut child = command
            .env_clear()
            .env("BIND_ADDRESS", "127.0.0.1:0")
            .env("STORAGE_PATH", data_dir)
            .env("METRICS_ADDRESS", "")
            .env("RUST_LOG", "info")
            .env("CONNECTION_RATE_LIMIT", "0")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn broker");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Generous for a broker under a tracer; bounded all the same.
        let deadline = Instant::now() + Duration::from_secs(60);
        // Lines before the marker (recovery reports) stay readable.
        let mut early = Vec::new();
        loop {
            let Ok(line) = log.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("broker never logged {marker:?}");
            };
            if line.contains(marker) {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("listen="))
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                return BrokerProcess {
                    child,
                    addr,
                    log,
                    early: std::cell::RefCell::new(early),
                    last_line: line,
                };
            }
            early.push(line);
        }
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits (bounded) for a log line containing `needle`; returns it.
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let line = self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no log line containing {needle:?} within {limit:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Every line not yet taken, those logged before start-up finished
    /// included.
    pub fn log_lines(&self) -> Vec<String> {
        let mut lines = std::mem::take(&mut *self.early.borrow_mut());
        lines.extend(self.log.try_iter());
        lines
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
