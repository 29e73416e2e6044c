//! The front door driven by independent clients: librdkafka (the `rdkafka`
//! crate) and raw frames encoded by the `kafka-protocol` crate's client side.

mod api_calls;
mod common;

use common::{RawClient, TestBroker};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::{Message, StrBytes};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

#[test]
fn librdkafka_sees_one_broker_at_the_advertised_address() {
    let broker = TestBroker::start("rdkafka-metadata", 2);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr.to_string())
        .set("api.version.request", "true")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    assert_eq!(metadata.brokers().len(), 1);
    let only = &metadata.brokers()[0];
    assert_eq!(only.id(), 0);
    assert_eq!(only.host(), "127.0.0.1");
    assert_eq!(only.port(), i32::from(broker.addr.port()));
    assert!(metadata.topics().is_empty());
    assert_eq!(broker.frame_errors(), 0);
}

/// Every advertised (api, version) is answered with a response the
/// independent decoder reads to the last byte (with real data, so fields
/// that only exist at some versions are exercised), and the table holds
/// exactly the handlers this build has.
#[test]
fn every_advertised_api_version_is_answered() {
    let broker = TestBroker::start_with("api-versions", 2, |c| c.group_initial_rebalance_delay_ms = 0);
    let mut client = RawClient::connect(broker.addr);
    for version in ApiVersionsRequest::VERSIONS.min..=ApiVersionsRequest::VERSIONS.max {
        let mut request = ApiVersionsRequest::default();
        if version >= 3 {
            request.client_software_name = StrBytes::from_static_str("chronik-test");
            request.client_software_version = StrBytes::from_static_str("1.0");
        }
        let response = client.call(version, &request);
        assert_eq!(response.error_code, 0, "ApiVersions v{version}");
        assert!(response
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Metadata as i16));
    }
    let advertised = client.call(3, &ApiVersionsRequest::default()).api_keys;
    for api in advertised {
        let key = ApiKey::try_from(api.api_key).expect("known api key");
        for version in api.min_version..=api.max_version {
            api_calls::exercise(&mut client, key, version);
        }
    }
    assert_eq!(broker.frame_errors(), 0);
}

#[test]
fn apiversions_at_an_unknown_version_gets_error_35_in_a_v0_answer() {
    let broker = TestBroker::start("api-versions-unsupported", 1);
    let mut client = RawClient::connect(broker.addr);
    // A future client: version 127, header and body layout unknown to us.
    let mut frame = Vec::new();
    let body: &[u8] = &[0, 18, 0, 127, 0, 0, 0, 9, 0, 3, b'n', b'e', b'w', 0, 0xff, 0xfe];
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(body);
    client.stream.write_all(&frame).unwrap();
    let response = client.read_response::<ApiVersionsRequest>(9, 0);
    assert_eq!(response.error_code, 35);
    assert!(response
        .api_keys
        .iter()
        .any(|k| k.api_key == 18 && k.max_version == 4));
    // The client downgrades on the same connection.
    let response = client.call(4, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
    assert_eq!(broker.frame_errors(), 0);
}

#[test]
fn metadata_for_unknown_topics_names_each_with_kafkas_error() {
    let broker = TestBroker::start("metadata-unknown", 1);
    let mut client = RawClient::connect(broker.addr);
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("nope")))),
            MetadataRequestTopic::default()
                .with_name(None)
                .with_topic_id(uuid::Uuid::from_u128(7)),
        ]));
    let response = client.call(12, &request);
    assert_eq!(response.topics.len(), 2);
    assert_eq!(response.topics[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!(response.topics[1].error_code, 100, "UNKNOWN_TOPIC_ID");
    // Allowed: the topic is created with NUM_PARTITIONS partitions.
    let auto = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("auto"))))
        ]));
    let created = client.call(12, &auto);
    assert_eq!(created.topics[0].error_code, 0);
    assert_eq!(created.topics[0].partitions.len(), 1);
    assert_eq!(response.cluster_id.as_deref(), Some(broker.handle().cluster_id()));
    assert_eq!(response.controller_id.0, 0);
}

#[test]
fn responses_come_back_in_request_order_when_pipelined() {
    let broker = TestBroker::start("pipelining", 1);
    let mut client = RawClient::connect(broker.addr);
    let mut burst = Vec::new();
    for correlation_id in 0..200 {
        if correlation_id % 2 == 0 {
            burst.extend(RawClient::encode(
                correlation_id,
                3,
                &ApiVersionsRequest::default(),
            ));
        } else {
            burst.extend(RawClient::encode(correlation_id, 12, &MetadataRequest::default()));
        }
    }
    client.stream.write_all(&burst).unwrap();
    for correlation_id in 0..200 {
        if correlation_id % 2 == 0 {
            client.read_response::<ApiVersionsRequest>(correlation_id, 3);
        } else {
            client.read_response::<MetadataRequest>(correlation_id, 12);
        }
    }
}

#[test]
fn both_shards_accept_connections() {
    let broker = TestBroker::start("two-shards", 2);
    let conns: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(broker.addr).unwrap())
        .collect();
    broker.wait_for("200 accepted connections", |stats| {
        stats.iter().map(|s| s.runtime.connections_active).sum::<u64>() == 200
    });
    let stats = broker.handle().shard_stats();
    assert_eq!(stats.len(), 2);
    for shard in &stats {
        assert!(
            shard.runtime.connections_accepted >= 40,
            "shard {} accepted only {} of 200: {stats:?}",
            shard.runtime.shard,
            shard.runtime.connections_accepted
        );
    }
    drop(conns);
    broker.wait_for("connections to close", |stats| {
        stats.iter().all(|s| s.runtime.connections_active == 0)
    });
}

/// Each kind of bad input closes its own connection, is counted, and leaves
/// a healthy connection on the same broker answering correctly.
#[test]
fn malformed_frames_close_only_their_connection() {
    let broker = TestBroker::start_with("malformed", 2, |c| c.max_request_bytes = 1 << 20);
    let mut healthy = RawClient::connect(broker.addr);
    let frame_with = |key: i16, version: i16| {
        let mut body = Vec::new();
        body.extend_from_slice(&key.to_be_bytes());
        body.extend_from_slice(&version.to_be_bytes());
        body.extend_from_slice(&[0, 0, 0, 1, 0xff, 0xff]);
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend(body);
        frame
    };
    let attacks: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "garbage bytes",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            false,
        ),
        ("size 2^31-1", i32::MAX.to_be_bytes().to_vec(), false),
        (
            "size over MAX_REQUEST_BYTES",
            (2i32 << 20).to_be_bytes().to_vec(),
            false,
        ),
        ("negative size", (-1i32).to_be_bytes().to_vec(), false),
        ("zero size", 0i32.to_be_bytes().to_vec(), false),
        (
            "truncated frame",
            [&100i32.to_be_bytes()[..], &[0u8; 10]].concat(),
            true,
        ),
        ("unknown api key", frame_with(999, 0), false),
        ("unsupported Metadata version", frame_with(3, 99), false),
        ("undecodable Metadata body", frame_with(3, 12), false),
        // Metadata v4 declaring 2^31-1 topics in a 14-byte body: must be a
        // decode error, not a multi-gigabyte allocation that aborts.
        (
            "array length 2^31-1",
            {
                let body = [
                    &[0u8, 3, 0, 4, 0, 0, 0, 7, 0xff, 0xff][..],
                    &i32::MAX.to_be_bytes(),
                    &[1u8],
                ]
                .concat();
                [&(body.len() as i32).to_be_bytes()[..], &body].concat()
            },
            false,
        ),
    ];
    for (i, (what, bytes, half_close)) in attacks.into_iter().enumerate() {
        let before = broker.frame_errors();
        let mut attacker = RawClient::connect(broker.addr);
        attacker.stream.write_all(&bytes).unwrap();
        if half_close {
            attacker.stream.shutdown(Shutdown::Write).unwrap();
        }
        assert!(attacker.closed_by_broker(), "{what}: connection left open");
        broker.wait_for(what, |stats| {
            stats.iter().map(|s| s.frame_errors).sum::<u64>() == before + 1
        });
        let response = healthy.call(3, &ApiVersionsRequest::default());
        assert_eq!(response.error_code, 0, "healthy connection after {what} (#{i})");
        let metadata = healthy.call(12, &MetadataRequest::default());
        assert_eq!(metadata.brokers.len(), 1);
    }
}
