//! Log-side compatibility gaps found by independent clients (issue 12),
//! driven by librdkafka (the `rdkafka` crate) and, for ListOffsets v7+
//! MAX_TIMESTAMP (which librdkafka's consumer does not expose), raw
//! requests built with the `kafka-protocol` crate's client side:
//! - ListOffsets by time and MAX_TIMESTAMP answer the record inside the
//!   batch, uncompressed and zstd;
//! - a Fetch response stays within the request's max_bytes;
//! - CreateTime timestamps outside the topic's window are refused.

mod common;

use common::{producer, send_all, RawClient, TestBroker};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{CreateTopicsRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn create_topic(addr: SocketAddr, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut client = RawClient::connect(addr);
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let created = client.call(
        7,
        &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(configs)]),
    );
    assert_eq!(
        created.topics[0].error_code, 0,
        "create {topic}: {:?}",
        created.topics[0].error_message
    );
}

/// ListOffsets v7 for one partition: (error, offset, timestamp).
fn list_offsets_v7(addr: SocketAddr, topic: &str, timestamp: i64) -> (i16, i64, i64) {
    let mut client = RawClient::connect(addr);
    let answer = client.call(
        7,
        &ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp)])]),
    );
    let p = &answer.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

/// Every batch header of partition 0's first segment, read from disk.
fn stored_batches(broker: &TestBroker, topic: &str) -> Vec<chronik_ingest::log::batch::BatchHeader> {
    let path = broker
        .dir
        .join(format!("{topic}-0"))
        .join(format!("{:020}.log", 0));
    let bytes = std::fs::read(&path).expect("segment file");
    let mut at = 0;
    let mut out = Vec::new();
    // The active segment ends in zeros up to a block boundary (O_DIRECT
    // writes whole blocks): the batches end where they start.
    while at < bytes.len() && bytes[at..].iter().any(|&b| b != 0) {
        let header = chronik_ingest::log::batch::parse_header(&bytes[at..]).expect("batch header");
        at += header.size;
        out.push(header);
    }
    out
}

#[test]
fn offsets_for_times_and_max_timestamp_answer_the_record_inside_the_batch() {
    let broker = TestBroker::start("compat-times", 2);
    let base = chronik_ingest::log::partition_log::now_ms() - 60_000;
    for (codec, id) in [("none", 0), ("zstd", 4)] {
        let topic = format!("times-{codec}");
        create_topic(broker.addr, &topic, 1, &[]);
        // A long linger, and the leader known before the first send: the
        // four records wait in one partition queue and leave as one batch.
        let (producer, deliveries) = producer(
            broker.addr,
            &[
                ("linger.ms", "5000"),
                ("compression.codec", codec),
                ("enable.idempotence", "true"),
            ],
        );
        producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let value = "v".repeat(300);
        for (i, delta) in [100, 400, 200, 400].into_iter().enumerate() {
            let key = format!("k{i}");
            producer
                .send(
                    BaseRecord::with_opaque_to(&topic, Box::new(i))
                        .key(&key)
                        .payload(&value)
                        .timestamp(base + delta),
                )
                .map_err(|(e, _)| e)
                .expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
        assert_eq!(deliveries.1.load(std::sync::atomic::Ordering::Relaxed), 4);
        let batches = stored_batches(&broker, &topic);
        assert_eq!(batches.len(), 1, "{codec}: the records must share one batch");
        assert_eq!(batches[0].records_count, 4);
        assert_eq!(batches[0].compression(), id, "{codec}: stored codec");

        // librdkafka's offsets_for_times (ListOffsets by time).
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.addr.to_string())
            .set("group.id", "compat-times")
            .create()
            .expect("consumer");
        let by_time = |ts: i64| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(ts))
                .expect("tpl");
            let found = consumer
                .offsets_for_times(tpl, Duration::from_secs(10))
                .expect("offsets_for_times");
            let element = found.find_partition(&topic, 0).expect("partition answered");
            element.offset()
        };
        assert_eq!(by_time(base), Offset::Offset(0), "{codec}");
        assert_eq!(by_time(base + 150), Offset::Offset(1), "{codec}");
        assert_eq!(by_time(base + 300), Offset::Offset(1), "{codec}");
        assert_eq!(by_time(base + 400), Offset::Offset(1), "{codec}");
        assert_eq!(by_time(base + 401), Offset::End, "{codec}");

        // ListOffsets v7: by time with the record's timestamp, and
        // MAX_TIMESTAMP: the earliest record with the highest timestamp.
        assert_eq!(
            list_offsets_v7(broker.addr, &topic, base + 150),
            (0, 1, base + 400)
        );
        assert_eq!(
            list_offsets_v7(broker.addr, &topic, base + 50),
            (0, 0, base + 100)
        );
        assert_eq!(
            list_offsets_v7(broker.addr, &topic, -3),
            (0, 1, base + 400),
            "{codec}"
        );
    }
}

/// Collects librdkafka's log lines and errors.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl ClientContext for Recorder {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, line: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(format!("{level:?} {fac} {line}"));
        }
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(format!("ERROR {error}: {reason}"));
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Recorder {}

/// A consumer assigned every partition of `topic` from the start, its
/// log lines and errors recorded.
fn recording_consumer(
    addr: SocketAddr,
    topic: &str,
    partitions: i32,
    extra: &[(&str, &str)],
) -> (BaseConsumer<Recorder>, Recorder) {
    let recorder = Recorder::default();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "compat-fetch-limit")
        .set("enable.auto.commit", "false")
        .set("debug", "fetch,broker");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer<Recorder> = config.create_with_context(recorder.clone()).expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    (consumer, recorder)
}

/// Polls until every record index in `sizes` arrived (payload starts with
/// its index) or `limit` passed; returns the indexes never seen.
fn consume_indexed(consumer: &BaseConsumer<Recorder>, sizes: &[usize], limit: Duration) -> Vec<usize> {
    let mut seen = vec![false; sizes.len()];
    let deadline = Instant::now() + limit;
    while seen.iter().any(|s| !s) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let payload = m.payload().unwrap_or_default();
                let i = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes")) as usize;
                assert_eq!(payload.len(), sizes[i], "record {i}");
                seen[i] = true;
            }
            // Checked by the caller through the recorded log lines.
            Some(Err(_)) => {}
            None => {}
        }
    }
    (0..sizes.len()).filter(|&i| !seen[i]).collect()
}

fn produce_indexed(addr: SocketAddr, topic: &str, sizes: &[usize], extra: &[(&str, &str)]) {
    let (producer, deliveries) = producer(addr, extra);
    let records = sizes.iter().enumerate().map(|(i, &size)| {
        let mut value = vec![(i % 251) as u8; size];
        value[..8].copy_from_slice(&(i as u64).to_be_bytes());
        (Some(format!("key-{i}").into_bytes()), value, Vec::new())
    });
    send_all(&producer, topic, records);
    producer.flush(Duration::from_secs(60)).expect("flush");
    let failed: Vec<_> = deliveries
        .0
        .lock()
        .expect("deliveries")
        .values()
        .filter(|r| r.is_err())
        .cloned()
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        deliveries.1.load(std::sync::atomic::Ordering::Relaxed),
        sizes.len()
    );
}

#[test]
fn fetch_responses_stay_within_the_request_max_bytes() {
    let broker = TestBroker::start("compat-fetch-limit", 2);
    // ~20 MB of 100 KiB..880 KiB records over two partitions.
    let topic = "big-records";
    create_topic(broker.addr, topic, 2, &[]);
    let sizes: Vec<usize> = (0..36)
        .map(|i| (100 << 10) + (i * 97_003) % (780 << 10))
        .collect();
    assert!(sizes.iter().sum::<usize>() > 15_000_000);
    produce_indexed(
        broker.addr,
        topic,
        &sizes,
        &[("linger.ms", "5"), ("batch.size", "900000")],
    );
    // The reported client: responses over fetch.max.bytes + 512 are
    // refused, and each partition may ask for 20 MB.
    let (consumer, recorder) = recording_consumer(
        broker.addr,
        topic,
        2,
        &[
            ("fetch.max.bytes", "1000000"),
            ("max.partition.fetch.bytes", "20000000"),
            ("receive.message.max.bytes", "1000512"),
        ],
    );
    let missing = consume_indexed(&consumer, &sizes, Duration::from_secs(60));
    let lines = recorder.0.lock().expect("lines").clone();
    let invalid: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("Invalid response size"))
        .collect();
    assert!(
        invalid.is_empty(),
        "librdkafka refused responses: {:?}",
        &invalid[..invalid.len().min(3)]
    );
    assert!(missing.is_empty(), "records not consumed: {missing:?}");

    // A record larger than fetch.max.bytes still arrives: the first batch
    // of a response is returned whole.
    let topic = "huge-record";
    create_topic(broker.addr, topic, 1, &[("max.message.bytes", "4000000")]);
    let sizes = [1_500_000, 1000];
    produce_indexed(
        broker.addr,
        topic,
        &sizes,
        &[("message.max.bytes", "4000000"), ("linger.ms", "0")],
    );
    let (consumer, recorder) = recording_consumer(
        broker.addr,
        topic,
        1,
        &[
            ("fetch.max.bytes", "1000000"),
            ("max.partition.fetch.bytes", "20000000"),
        ],
    );
    let missing = consume_indexed(&consumer, &sizes, Duration::from_secs(30));
    let lines = recorder.0.lock().expect("lines").clone();
    assert!(!lines.iter().any(|l| l.contains("Invalid response size")));
    assert!(missing.is_empty(), "records not consumed: {missing:?}");
}

#[test]
fn create_time_outside_the_topic_window_is_refused() {
    let broker = TestBroker::start("compat-ts-bounds", 1);
    let now = chronik_ingest::log::partition_log::now_ms();
    create_topic(
        broker.addr,
        "bounded",
        1,
        &[("message.timestamp.before.max.ms", "60000")],
    );
    create_topic(broker.addr, "stock", 1, &[]);
    create_topic(
        broker.addr,
        "append-time",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    let send = |topic: &str, timestamp: i64| {
        let (producer, deliveries) = producer(broker.addr, &[("linger.ms", "0")]);
        producer
            .send(
                BaseRecord::with_opaque_to(topic, Box::new(0))
                    .key("k")
                    .payload("x")
                    .timestamp(timestamp),
            )
            .map_err(|(e, _)| e)
            .expect("send");
        producer.flush(Duration::from_secs(30)).expect("flush");
        let outcome = deliveries.0.lock().expect("deliveries").get(&0).cloned();
        outcome.expect("a delivery report")
    };
    let two_hours = 2 * 3_600_000;
    // Kafka 4.x: one hour ahead at most by default, any age.
    assert!(send("stock", now - 10 * two_hours).is_ok());
    let refused = send("stock", now + two_hours).unwrap_err();
    assert!(refused.contains("Invalid timestamp"), "{refused}");
    assert!(send("bounded", now).is_ok());
    let refused = send("bounded", now - two_hours).unwrap_err();
    assert!(refused.contains("Invalid timestamp"), "{refused}");
    // LogAppendTime topics ignore the window.
    assert!(send("append-time", now + two_hours).is_ok());
}

#[test]
fn recompressed_batches_keep_the_idempotent_producer_fields() {
    let broker = TestBroker::start("compat-recompress-idem", 2);
    let topic = "zstd-idempotent";
    create_topic(broker.addr, topic, 1, &[("compression.type", "zstd")]);
    let sizes: Vec<usize> = (0..2000).map(|i| 200 + i % 300).collect();
    produce_indexed(
        broker.addr,
        topic,
        &sizes,
        &[
            ("enable.idempotence", "true"),
            ("compression.codec", "none"),
            ("linger.ms", "2"),
            ("batch.num.messages", "100"),
        ],
    );
    let batches = stored_batches(&broker, topic);
    assert!(batches.len() >= 20, "{} batches", batches.len());
    let mut next_sequence = 0;
    for b in &batches {
        assert_eq!(b.compression(), 4, "stored zstd");
        assert!(b.producer_id >= 0, "producer id kept");
        assert_eq!(b.base_sequence, next_sequence, "sequences kept and contiguous");
        next_sequence += b.records_count;
    }
    assert_eq!(next_sequence, 2000);
    let (consumer, _) = recording_consumer(broker.addr, topic, 1, &[]);
    let missing = consume_indexed(&consumer, &sizes, Duration::from_secs(30));
    assert!(missing.is_empty(), "records not consumed: {missing:?}");
}
