//! The partition log through independent clients: librdkafka (the rdkafka
//! crate) for produce/consume, codecs and idempotence; raw frames from the
//! kafka-protocol crate where a test must control bytes (duplicate and
//! out-of-order batches, long-poll timing).

mod common;

use common::{consume, consumer_from_start, produce_all, Outgoing, RawClient, TestBroker};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchRequest, InitProducerIdRequest, ListOffsetsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn produce_raw(client: &mut RawClient, topic: &str, partition: i32, batch: Vec<u8>) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch.into()))])]);
    let response = client.call(9, &request);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn list_offset(client: &mut RawClient, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
    let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(name(topic))
        .with_partitions(vec![ListOffsetsPartition::default()
            .with_partition_index(partition)
            .with_timestamp(timestamp)])]);
    let response = client.call(7, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

#[test]
fn hundred_thousand_keyed_records_with_headers_round_trip() {
    let broker = TestBroker::start_with("roundtrip", 2, |c| c.num_partitions = 3);
    const N: usize = 100_000;
    let sent: Vec<(String, String)> = (0..N)
        .map(|i| {
            (
                format!("key-{}", i % 977),
                format!("value-{i}-{}", "v".repeat(i % 64)),
            )
        })
        .collect();
    let records: Vec<Outgoing> = sent
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            (
                Some(k.clone().into_bytes()),
                v.clone().into_bytes(),
                vec![("idx".into(), i.to_string())],
            )
        })
        .collect();
    let acked: Vec<(i32, i64)> = produce_all(
        broker.addr,
        &[("enable.idempotence", "true"), ("linger.ms", "5")],
        "keyed",
        records,
    )
    .into_iter()
    .map(|r| r.expect("acked"))
    .collect();
    assert_eq!(acked.len(), N);

    let consumer = consumer_from_start(broker.addr, "keyed", 3);
    let got = consume(&consumer, N, Duration::from_secs(60));
    assert_eq!(got.len(), N, "consumed {} of {N}", got.len());
    let mut by_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    for (partition, offset, key, payload, headers) in &got {
        let (_, idx) = headers.iter().find(|(k, _)| k == "idx").expect("idx header");
        let i: usize = String::from_utf8_lossy(idx).parse().unwrap();
        assert_eq!(key, sent[i].0.as_bytes(), "key of record {i}");
        assert_eq!(payload, sent[i].1.as_bytes(), "value of record {i}");
        assert_eq!(acked[i], (*partition, *offset), "acked position of record {i}");
        by_partition.entry(*partition).or_default().push((*offset, i));
    }
    assert_eq!(by_partition.len(), 3, "keys spread over all partitions");
    for (partition, records) in by_partition {
        let offsets: Vec<i64> = records.iter().map(|r| r.0).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {partition} offsets dense"
        );
        assert!(
            records.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {partition} keeps send order"
        );
    }
}

#[test]
fn every_compression_codec_round_trips() {
    let broker = TestBroker::start("codecs", 2);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let values: Vec<String> = (0..2000)
            .map(|i| format!("{codec} record {i} {}", "abc".repeat(20)))
            .collect();
        let records = values
            .iter()
            .map(|v| (None, v.clone().into_bytes(), vec![]))
            .collect();
        for d in produce_all(
            broker.addr,
            &[("compression.codec", codec), ("linger.ms", "20")],
            &topic,
            records,
        ) {
            d.expect("acked");
        }
        let consumer = consumer_from_start(broker.addr, &topic, 1);
        let got = consume(&consumer, values.len(), Duration::from_secs(30));
        let payloads: Vec<Vec<u8>> = got.into_iter().map(|m| m.3).collect();
        let expected: Vec<Vec<u8>> = values.iter().map(|v| v.as_bytes().to_vec()).collect();
        assert_eq!(payloads, expected, "{codec}");
    }
}

#[test]
fn idempotent_producer_retries_are_not_duplicated_and_gaps_are_refused() {
    let broker = TestBroker::start("idempotence", 2);
    // librdkafka's idempotent producer, acks=all, completes.
    let records = (0..5000)
        .map(|i| (None, format!("r{i}").into_bytes(), vec![]))
        .collect();
    for d in produce_all(
        broker.addr,
        &[("enable.idempotence", "true"), ("acks", "all")],
        "idem",
        records,
    ) {
        d.expect("acked");
    }

    let mut client = RawClient::connect(broker.addr);
    let init = client.call(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    );
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 1, "librdkafka already took an id, so ours is later: {pid}");
    let batch = |seq: i32| {
        chronik_ingest::log::batch::build_idempotent_batch(
            0,
            1,
            pid,
            init.producer_epoch,
            seq,
            &[(b"k", b"v"), (b"k", b"w")],
        )
    };
    assert_eq!(produce_raw(&mut client, "raw-idem", 0, batch(0)), (0, 0));
    assert_eq!(produce_raw(&mut client, "raw-idem", 0, batch(2)), (0, 2));
    // The same batch again (same producer id, epoch, sequence): the original
    // offset, and no second copy.
    assert_eq!(produce_raw(&mut client, "raw-idem", 0, batch(0)), (0, 0));
    assert_eq!(list_offset(&mut client, "raw-idem", 0, -1), (0, 4));
    // A gap in sequence numbers.
    let (code, _) = produce_raw(&mut client, "raw-idem", 0, batch(7));
    assert_eq!(code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    // A stale epoch after the producer bumped its own epoch (an idempotent
    // producer does that client-side, KIP-360).
    let fresh = chronik_ingest::log::batch::build_idempotent_batch(0, 1, pid, 1, 0, &[(b"k", b"v")]);
    assert_eq!(produce_raw(&mut client, "raw-idem", 0, fresh), (0, 4));
    let (code, _) = produce_raw(&mut client, "raw-idem", 0, batch(4));
    assert_eq!(code, 47, "INVALID_PRODUCER_EPOCH");
    assert_eq!(list_offset(&mut client, "raw-idem", 0, -1), (0, 5));
}

/// Kafka answers an InitProducerId without a transactional id with a fresh
/// producer id, whatever id and epoch it names: nothing ties an idempotent
/// producer's id to the client, so bumping the named id's epoch would let
/// any client fence another's producer.
#[test]
fn init_producer_id_cannot_take_over_another_producers_id() {
    let broker = TestBroker::start("pid-takeover", 1);
    let mut a = RawClient::connect(broker.addr);
    let init = |producer_id: i64, epoch: i16| {
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(producer_id.into())
            .with_producer_epoch(epoch)
    };
    let owner = a.call(4, &init(-1, -1));
    assert_eq!(owner.error_code, 0);
    let (pid, epoch) = (owner.producer_id.0, owner.producer_epoch);
    let batch = |pid: i64, epoch: i16, seq: i32| {
        chronik_ingest::log::batch::build_idempotent_batch(0, 1, pid, epoch, seq, &[(b"k", b"v")])
    };
    assert_eq!(
        produce_raw(&mut a, "pid-takeover", 0, batch(pid, epoch, 0)),
        (0, 0)
    );

    // Another client names A's producer id and epoch.
    let mut b = RawClient::connect(broker.addr);
    let taken = b.call(4, &init(pid, epoch));
    assert_eq!(taken.error_code, 0);
    assert_ne!(
        taken.producer_id.0, pid,
        "B was handed A's producer id (epoch {})",
        taken.producer_epoch
    );
    assert_eq!(taken.producer_epoch, 0, "a fresh id starts at epoch 0");
    // B produces with what it was given; A's producer is not fenced.
    let (b_pid, b_epoch) = (taken.producer_id.0, taken.producer_epoch);
    assert_eq!(
        produce_raw(&mut b, "pid-takeover", 0, batch(b_pid, b_epoch, 0)).0,
        0
    );
    assert_eq!(
        produce_raw(&mut a, "pid-takeover", 0, batch(pid, epoch, 1)),
        (0, 2)
    );

    // Kafka's request checks: id and epoch come as a pair; an empty
    // transactional id is invalid (INVALID_REQUEST = 42).
    assert_eq!(b.call(4, &init(pid, -1)).error_code, 42);
    assert_eq!(b.call(4, &init(-1, 3)).error_code, 42);
    let empty = init(-1, -1).with_transactional_id(Some(Default::default()));
    assert_eq!(b.call(4, &empty).error_code, 42);
}

#[test]
fn corrupt_and_oversize_batches_are_refused_per_partition() {
    let broker = TestBroker::start("bad-batches", 1);
    let mut client = RawClient::connect(broker.addr);
    let mut bad = chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", b"v")]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(produce_raw(&mut client, "bad", 0, bad).0, 2, "CORRUPT_MESSAGE");
    let big = vec![1u8; 1_100_000];
    let oversize = chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", &big)]);
    assert_eq!(
        produce_raw(&mut client, "bad", 0, oversize).0,
        10,
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(
        produce_raw(
            &mut client,
            "bad",
            5,
            chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", b"v")])
        )
        .0,
        3
    );
    assert_eq!(
        list_offset(&mut client, "bad", 0, -1),
        (0, 0),
        "nothing was appended"
    );
}

#[test]
fn topics_records_and_producer_ids_survive_a_restart() {
    let mut broker = TestBroker::start_with("restart", 2, |c| c.num_partitions = 2);
    let records = (0..3000)
        .map(|i| {
            (
                Some(format!("k{i}").into_bytes()),
                format!("v{i}").into_bytes(),
                vec![],
            )
        })
        .collect();
    for d in produce_all(broker.addr, &[("acks", "all")], "kept", records) {
        d.expect("acked");
    }
    let mut client = RawClient::connect(broker.addr);
    let before = client
        .call(4, &InitProducerIdRequest::default().with_transactional_id(None))
        .producer_id
        .0;
    drop(client);
    broker.restart();

    let consumer = consumer_from_start(broker.addr, "kept", 2);
    let got = consume(&consumer, 3000, Duration::from_secs(30));
    assert_eq!(got.len(), 3000);
    let mut client = RawClient::connect(broker.addr);
    let after = client
        .call(4, &InitProducerIdRequest::default().with_transactional_id(None))
        .producer_id
        .0;
    assert!(
        after > before,
        "producer ids go on increasing: {before} then {after}"
    );
}

#[test]
fn retention_deletes_old_segments_and_moves_the_log_start() {
    let broker = TestBroker::start_with("retention", 1, |c| {
        c.retention_check_interval = Duration::from_secs(1)
    });
    let mut client = RawClient::connect(broker.addr);
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    let config = |k: &str, v: &str| {
        CreatableTopicConfig::default()
            .with_name(StrBytes::from_string(k.into()))
            .with_value(Some(StrBytes::from_string(v.into())))
    };
    let created = client.call(
        7,
        &kafka_protocol::messages::CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default(
        )
        .with_name(name("short-lived"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![
            config("segment.bytes", "1024"),
            config("retention.ms", "2000"),
        ])]),
    );
    assert_eq!(created.topics[0].error_code, 0);
    let old = chronik_ingest::log::partition_log::now_ms();
    for i in 0..40 {
        let value = format!("record-{i}-{}", "x".repeat(100));
        let batch = chronik_ingest::log::batch::build_batch(0, old, &[(b"k", value.as_bytes())]);
        assert_eq!(produce_raw(&mut client, "short-lived", 0, batch).0, 0);
    }
    assert_eq!(list_offset(&mut client, "short-lived", 0, -2), (0, 0));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, earliest) = list_offset(&mut client, "short-lived", 0, -2);
        if earliest > 0 {
            assert_eq!(list_offset(&mut client, "short-lived", 0, -1), (0, 40));
            break;
        }
        assert!(Instant::now() < deadline, "retention never moved the log start");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn fetch_long_poll_wakes_on_append_and_times_out_when_idle() {
    let broker = TestBroker::start("long-poll", 2);
    let mut setup = RawClient::connect(broker.addr);
    assert_eq!(
        produce_raw(
            &mut setup,
            "poll",
            0,
            chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", b"first")])
        )
        .0,
        0
    );

    // Empty: answers after about max_wait.
    let mut waiter = RawClient::connect(broker.addr);
    let started = Instant::now();
    let response = waiter.call(12, &fetch_request("poll", 1, 5000));
    let waited = started.elapsed();
    assert!(response.responses[0].partitions[0]
        .records
        .as_ref()
        .is_none_or(|r| r.is_empty()));
    assert!(
        waited >= Duration::from_millis(4900) && waited < Duration::from_millis(6500),
        "{waited:?}"
    );

    // Woken by an append long before max_wait.
    let addr = broker.addr;
    let poller = std::thread::spawn(move || {
        let mut waiter = RawClient::connect(addr);
        let started = Instant::now();
        let response = waiter.call(12, &fetch_request("poll", 1, 5000));
        (started.elapsed(), response)
    });
    std::thread::sleep(Duration::from_millis(300));
    let appended_at = Instant::now();
    assert_eq!(
        produce_raw(
            &mut setup,
            "poll",
            0,
            chronik_ingest::log::batch::build_batch(0, 2, &[(b"k", b"second")])
        )
        .0,
        0
    );
    let (waited, response) = poller.join().unwrap();
    let woke_after_append = appended_at.elapsed();
    let partition = &response.responses[0].partitions[0];
    assert!(partition.records.as_ref().is_some_and(|r| !r.is_empty()));
    assert_eq!(partition.high_watermark, 2);
    assert!(waited < Duration::from_millis(2000), "long poll took {waited:?}");
    // Woken by the append, not by max_wait (5 s): a bound loose enough
    // for a loaded machine (timing targets are benchmarks' business).
    assert!(
        woke_after_append < Duration::from_millis(2000),
        "{woke_after_append:?}"
    );

    // Out of range names the bounds.
    let response = setup.call(12, &fetch_request("poll", 99, 0));
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 1);
    assert_eq!((partition.log_start_offset, partition.high_watermark), (0, 2));
}

/// A full disk: the partition answers KAFKA_STORAGE_ERROR, what was already
/// acknowledged stays readable and valid, the broker keeps serving, and
/// appends work again once there is room. Needs root (it mounts a 4 MiB
/// tmpfs as the data directory), as CI runs.
#[test]
fn a_full_disk_answers_storage_error_and_corrupts_nothing() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED a_full_disk_answers_storage_error_and_corrupts_nothing: needs root to mount a tmpfs"
        );
        return;
    }
    let mount_point = common::scratch_dir("full-disk");
    std::fs::create_dir_all(&mount_point).unwrap();
    let mount = |opts: &str| {
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&mount_point)
            .status()
            .expect("mount")
    };
    assert!(mount("size=4m").success(), "mount a tmpfs");
    let data = mount_point.join("data");
    let result = std::panic::catch_unwind(|| {
        let broker = TestBroker::start_with("full-disk", 1, |c| c.storage_path = data.clone());
        let broker = std::mem::ManuallyDrop::new(broker);
        let mut client = RawClient::connect(broker.addr);
        let value = vec![b'x'; 100_000];
        let mut acked = 0;
        let mut error = 0;
        for _ in 0..100 {
            let batch = chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", &value)]);
            let (code, _) = produce_raw(&mut client, "filling", 0, batch);
            if code != 0 {
                error = code;
                break;
            }
            acked += 1;
        }
        assert_eq!(
            error, 56,
            "KAFKA_STORAGE_ERROR once the disk is full (after {acked} batches)"
        );
        assert!(acked > 5);
        // Everything acknowledged is still there, whole and valid.
        assert_eq!(list_offset(&mut client, "filling", 0, -1), (0, acked));
        let mut offset = 0;
        while offset < acked {
            let response = client.call(12, &fetch_request("filling", offset, 0));
            let records = response.responses[0].partitions[0]
                .records
                .clone()
                .expect("records");
            let header = chronik_ingest::log::batch::validate(
                &records[..records
                    .len()
                    .min(chronik_ingest::log::batch::batch_size(&records).expect("a whole batch"))],
            )
            .expect("stored batch is valid");
            assert_eq!(header.base_offset, offset);
            offset = header.next_offset();
        }
        // Room again: appends resume at the next offset.
        assert!(mount("remount,size=64m").success());
        let batch = chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", b"after")]);
        assert_eq!(produce_raw(&mut client, "filling", 0, batch), (0, acked));
        std::mem::ManuallyDrop::into_inner(broker);
    });
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(&mount_point)
        .status();
    let _ = std::fs::remove_dir_all(&mount_point);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn delete_topics_removes_the_files_and_bad_acks_are_refused() {
    let broker = TestBroker::start("delete-files", 2);
    let mut client = RawClient::connect(broker.addr);
    let batch = || chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", b"v")]);
    assert_eq!(produce_raw(&mut client, "to-delete", 0, batch()).0, 0);
    assert!(broker.dir.join("to-delete-0").exists());
    let response = client.call(
        4,
        &kafka_protocol::messages::DeleteTopicsRequest::default().with_topic_names(vec![name("to-delete")]),
    );
    assert_eq!(response.responses[0].error_code, 0);
    assert!(
        !broker.dir.join("to-delete-0").exists(),
        "partition directory removed"
    );
    // Recreated under the same name: a new, empty topic.
    assert_eq!(produce_raw(&mut client, "to-delete", 0, batch()), (0, 0));

    let request = ProduceRequest::default()
        .with_acks(2)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("to-delete"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch().into()))])]);
    let response = client.call(9, &request);
    assert_eq!(
        response.responses[0].partition_responses[0].error_code, 21,
        "INVALID_REQUIRED_ACKS"
    );
}

/// A batch with the transactional attribute from a producer without a
/// transactional id (there is no transaction coordinator here) is refused
/// as Kafka refuses it, and nothing is stored: an open transaction that can
/// never end would hold the last stable offset back for good.
#[test]
fn transactional_batches_without_a_transactional_producer_are_refused() {
    use chronik_ingest::log::batch::{build_idempotent_batch, mark_transactional};
    let broker = TestBroker::start("txn-bit", 1);
    let mut client = RawClient::connect(broker.addr);
    let init = client.call(4, &InitProducerIdRequest::default().with_transactional_id(None));
    assert_eq!(init.error_code, 0);
    let mut batch = build_idempotent_batch(0, 1, init.producer_id.0, init.producer_epoch, 0, &[(b"k", b"v")]);
    mark_transactional(&mut batch);
    let (code, _) = produce_raw(&mut client, "txn-bit", 0, batch);
    assert_eq!(code, 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED");
    assert_eq!(
        list_offset(&mut client, "txn-bit", 0, -1),
        (0, 0),
        "nothing stored"
    );
    // The same producer's plain idempotent batch is still accepted.
    let plain = build_idempotent_batch(0, 1, init.producer_id.0, init.producer_epoch, 0, &[(b"k", b"v")]);
    assert_eq!(produce_raw(&mut client, "txn-bit", 0, plain), (0, 0));
    assert_eq!(broker.frame_errors(), 0);
}

/// Copies a directory tree (a partition directory) to `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A delete that left a partition directory behind (a shard failed to
/// remove it) must not bring the old data back when the topic is made
/// again under the same name: the directory carries the old topic's id.
#[test]
fn a_recreated_topic_never_sees_a_deleted_topics_data() {
    let broker = TestBroker::start("recreate", 2);
    let mut client = RawClient::connect(broker.addr);
    let batch = |v: &[u8]| chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", v)]);
    for _ in 0..3 {
        assert_eq!(produce_raw(&mut client, "again", 0, batch(b"old")).0, 0);
    }
    let dir = broker.dir.join("again-0");
    let kept = broker.dir.join("kept-aside");
    copy_dir(&dir, &kept);
    let response = client.call(
        4,
        &kafka_protocol::messages::DeleteTopicsRequest::default().with_topic_names(vec![name("again")]),
    );
    assert_eq!(response.responses[0].error_code, 0);
    // As if the owning shard had failed to remove it.
    std::fs::rename(&kept, &dir).unwrap();

    assert_eq!(
        produce_raw(&mut client, "again", 0, batch(b"new")),
        (0, 0),
        "the new topic starts at offset 0"
    );
    let response = client.call(12, &fetch_request("again", 0, 0));
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.high_watermark, 1);
    let records = partition.records.clone().expect("records");
    let header = chronik_ingest::log::batch::validate(&records).expect("one whole batch");
    assert_eq!((header.base_offset, header.records_count), (0, 1));
}

/// The shard that owns `topic`-`partition` among `shards` (the broker's
/// routing hash, recomputed here to pick test fixtures).
fn owner(topic: &str, partition: i32, shards: usize) -> usize {
    let hash = crc32c::crc32c_append(crc32c::crc32c(topic.as_bytes()), &partition.to_be_bytes());
    chronik_shard::owner_shard(u64::from(hash), shards)
}

/// A shard that cannot start (its committed offsets cannot be read) stops
/// the broker through `start()`: the error is reported, and the shards
/// that did start stop cleanly, leaving their clean-shutdown markers
/// (before, the failing shard called exit() and took them down mid-way).
#[test]
fn a_shard_that_cannot_start_fails_start_and_the_others_stop_cleanly() {
    let mut broker = TestBroker::start_with("start-failure", 2, |c| c.num_partitions = 8);
    let records = (0..80)
        .map(|i| (None, format!("v{i}").into_bytes(), vec![]))
        .collect();
    for d in produce_all(broker.addr, &[("acks", "all")], "spread", records) {
        d.expect("acked");
    }
    let dir = broker.dir.clone();
    let config = broker.stop_and_take_config();
    // An offsets partition of shard 0 that cannot be read: a directory
    // where its log file should be.
    let failing = (0..50)
        .find(|p| owner("__consumer_offsets", *p, 2) == 0)
        .expect("shard 0 owns an offsets partition");
    let log = dir.join("__consumer_offsets").join(format!("{failing}.log"));
    let _ = std::fs::remove_file(&log);
    std::fs::create_dir_all(&log).unwrap();
    let started = chronik_ingest::IngestServer::new(config, &dir).start();
    let error = match started {
        Ok(_) => panic!("a broker with unreadable offsets must not start"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("committed offsets"), "{error}");
    let on_shard_1: Vec<i32> = (0..8).filter(|p| owner("spread", *p, 2) == 1).collect();
    assert!(!on_shard_1.is_empty());
    for p in on_shard_1 {
        assert!(
            dir.join(format!("spread-{p}")).join(".clean-shutdown").exists(),
            "spread-{p} (shard 1) was closed cleanly"
        );
    }
}
