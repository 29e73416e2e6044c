//! Front-door answers that decide what clients do next (issue 12): invalid
//! topic names are refused with a non-retriable error and counted, the
//! error family is in the first scrape, and a Fetch long-poll longer than
//! REQUEST_TIMEOUT_SECS waits its max_wait on an open connection. The
//! interop script scripts/interop/compat_conn.py drives the same with
//! kcat, confluent-kafka and kafka-python, plus transactions and a held
//! JoinGroup.

mod common;

use common::{RawClient, TestBroker};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiVersionsRequest, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaRespErr;
use std::time::{Duration, Instant};

fn errors(exposition: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.starts_with("chronik_request_errors_total{") && labels.iter().all(|want| l.contains(want))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn invalid_topic_names_get_invalid_topic_exception_and_are_counted() {
    let broker = TestBroker::start("compat-invalid-topic", 2);
    // No request yet; shards create their series as they start (what
    // /ready waits for), so give them that long.
    let has_series = |text: &str, shard: &str| {
        let label = format!("shard=\"{shard}\"");
        text.lines()
            .any(|l| l.starts_with("chronik_request_errors_total{") && l.contains(&label))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut first = broker.handle().render_metrics();
    while !["0", "1"].iter().all(|s| has_series(&first, s)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        first = broker.handle().render_metrics();
    }
    for shard in ["0", "1"] {
        assert!(
            has_series(&first, shard),
            "no chronik_request_errors series for shard {shard} before any request:\n{first}"
        );
    }
    assert_eq!(errors(&first, &[]), 0.0, "{first}");

    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr.to_string())
        .create()
        .expect("client");
    let long = "t".repeat(250);
    for name in ["bad name!", long.as_str(), ".."] {
        let metadata = client
            .fetch_metadata(Some(name), Duration::from_secs(10))
            .expect("metadata");
        let topic = &metadata.topics()[0];
        assert_eq!(
            topic.error(),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION),
            "{name}"
        );
    }
    // A consumer asks without auto-creation: a valid unknown name is
    // UNKNOWN_TOPIC_OR_PARTITION (retriable: it may be created later).
    let unknown = client
        .fetch_metadata(Some("no-such-topic"), Duration::from_secs(10))
        .expect("metadata");
    assert_eq!(
        unknown.topics()[0].error(),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );

    let after = broker.handle().render_metrics();
    // librdkafka may ask more than once per fetch_metadata.
    assert!(
        errors(&after, &["api=\"Metadata\"", "error=\"InvalidTopicException\""]) >= 3.0,
        "{after}"
    );
    assert!(
        errors(&after, &["api=\"Metadata\"", "error=\"UnknownTopicOrPartition\""]) >= 1.0,
        "{after}"
    );
}

/// REQUEST_TIMEOUT_SECS 1 s, a Fetch asking to wait up to 3 s on an empty
/// partition: answered after its max_wait, and the connection stays open.
#[test]
fn a_fetch_long_poll_longer_than_the_request_timeout_waits_its_max_wait() {
    let broker = TestBroker::start_with("compat-long-fetch", 1, |c| {
        c.request_timeout = Duration::from_secs(1);
    });
    let producer_config = [("acks", "1")];
    for r in common::produce_all(
        broker.addr,
        &producer_config,
        "quiet",
        vec![(None, b"x".to_vec(), vec![])],
    ) {
        r.expect("acked");
    }
    let mut client = RawClient::connect(broker.addr);
    let fetch = FetchRequest::default()
        .with_max_wait_ms(3000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("quiet")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(1)
                .with_partition_max_bytes(1 << 20)])]);
    let started = Instant::now();
    let answer = client.call(12, &fetch);
    let waited = started.elapsed();
    assert_eq!(answer.responses[0].partitions[0].error_code, 0);
    assert!(waited >= Duration::from_millis(2900), "answered after {waited:?}");
    assert_eq!(client.call(3, &ApiVersionsRequest::default()).error_code, 0);
}
