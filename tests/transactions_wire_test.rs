//! Transaction rules the clients' own suites (scripts/interop) cannot
//! reach, driven with raw frames from the `kafka-protocol` crate's client
//! side: OffsetFetch's `require_stable`, TxnOffsetCommit's member check
//! (KIP-447), and the error a Produce outside the transaction gets per
//! version (KIP-890).

mod api_calls;
mod common;

use api_calls::{ensure_topic, init_transactions, join_group, name, s, simple_commit};
use chronik_ingest::log::batch::{build_idempotent_batch, mark_transactional};
use common::{RawClient, TestBroker};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use std::time::{Duration, Instant};

const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_TXN_STATE: i16 = 48;
const TRANSACTION_ABORTABLE: i16 = 120;

fn add_offsets(client: &mut RawClient, id: &str, (pid, epoch): (i64, i16), group: &str) {
    let add = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s(id)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(s(group)));
    assert_eq!(client.call(3, &add).error_code, 0, "AddOffsetsToTxn {id}");
}

/// TxnOffsetCommit v3 of partition 0 of `topic`; returns its error code.
fn txn_commit(
    client: &mut RawClient,
    id: &str,
    (pid, epoch): (i64, i16),
    group: &str,
    (member, generation): (&str, i32),
    (topic, offset): (&str, i64),
) -> i16 {
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s(id)))
        .with_group_id(GroupId(s(group)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_member_id(s(member))
        .with_generation_id(generation)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    client.call(3, &commit).topics[0].partitions[0].error_code
}

/// AddPartitionsToTxn v3 of partition 0 of `topic`, which must succeed.
fn add_partition(client: &mut RawClient, id: &str, (pid, epoch): (i64, i16), topic: &str) {
    let add = api_calls::add_partitions(id, pid, epoch, topic);
    let response = client.call(3, &add);
    assert_eq!(
        response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
}

/// A transactional producer's Produce (acks=all) of `batch` to partition
/// 0 of `topic`; returns the partition's error code.
fn produce_transactional(client: &mut RawClient, version: i16, id: &str, topic: &str, batch: Vec<u8>) -> i16 {
    let request = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.into()))])]);
    client.call(version, &request).responses[0].partition_responses[0].error_code
}

fn end_txn(client: &mut RawClient, id: &str, (pid, epoch): (i64, i16), commit: bool) {
    let end = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(id)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    assert_eq!(client.call(3, &end).error_code, 0, "EndTxn {id}");
}

/// OffsetFetch of partition 0 of `topic`: (error code, committed offset),
/// at v7 (single group) or v8 (the batched form).
fn fetch(client: &mut RawClient, version: i16, group: &str, topic: &str, require_stable: bool) -> (i16, i64) {
    if version >= 8 {
        let request = OffsetFetchRequest::default()
            .with_require_stable(require_stable)
            .with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(name(topic))
                    .with_partition_indexes(vec![0])]))]);
        let response = client.call(version, &request);
        let partition = &response.groups[0].topics[0].partitions[0];
        return (partition.error_code, partition.committed_offset);
    }
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_require_stable(require_stable)
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(name(topic))
            .with_partition_indexes(vec![0])]));
    let response = client.call(version, &request);
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.committed_offset)
}

/// Polls OffsetFetch with require_stable until it answers without error
/// (bounded): the end of a transaction commits its offsets just after the
/// markers, asynchronously to EndTxn's answer.
fn stable_offset(client: &mut RawClient, group: &str, topic: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, offset) = fetch(client, 7, group, topic, true);
        if code == 0 {
            return offset;
        }
        assert_eq!(code, UNSTABLE_OFFSET_COMMIT);
        assert!(Instant::now() < deadline, "offsets still unstable after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn require_stable_offset_fetch_waits_for_the_transaction_to_end() {
    // Two shards, so the transactional id and the group may well be
    // coordinated on different ones.
    let broker = TestBroker::start("txn-require-stable", 2);
    let mut client = RawClient::connect(broker.addr);
    let (topic, group) = ("stable-topic", "stable-group");
    ensure_topic(&mut client, topic);
    assert_eq!(
        client.call(8, &simple_commit(group, topic, 3)).topics[0].partitions[0].error_code,
        0
    );

    for (round, commit) in [(1, true), (2, false)] {
        let id = format!("stable-txn-{round}");
        let producer = init_transactions(&mut client, &id);
        add_offsets(&mut client, &id, producer, group);
        let offset = 10 * round;
        assert_eq!(
            txn_commit(&mut client, &id, producer, group, ("", -1), (topic, offset)),
            0
        );
        let before = if round == 1 { 3 } else { 10 };
        for version in [7, 8, 9] {
            assert_eq!(
                fetch(&mut client, version, group, topic, true),
                (UNSTABLE_OFFSET_COMMIT, -1),
                "v{version} require_stable while the transaction is open"
            );
            assert_eq!(
                fetch(&mut client, version, group, topic, false),
                (0, before),
                "v{version} without require_stable: the last committed offset"
            );
        }
        end_txn(&mut client, &id, producer, commit);
        let expected = if commit { offset } else { before };
        assert_eq!(
            stable_offset(&mut client, group, topic),
            expected,
            "round {round}"
        );
    }
    assert_eq!(broker.frame_errors(), 0);
}

#[test]
fn txn_offset_commit_checks_the_member_and_generation() {
    let broker = TestBroker::start_with("txn-member-check", 2, |c| c.group_initial_rebalance_delay_ms = 0);
    let mut client = RawClient::connect(broker.addr);
    let topic = "member-topic";
    ensure_topic(&mut client, topic);
    let (member, generation) = join_group(&mut client, "live-group", 5);
    let id = "member-txn";
    let producer = init_transactions(&mut client, id);
    for group in ["live-group", "no-such-group"] {
        add_offsets(&mut client, id, producer, group);
    }
    let commit = |client: &mut RawClient, group: &str, who: (&str, i32)| {
        txn_commit(client, id, producer, group, who, (topic, 5))
    };
    // The member, at its generation (the group has not synced yet: the
    // group's state is not enforced for transactional commits).
    assert_eq!(commit(&mut client, "live-group", (&member, generation)), 0);
    assert_eq!(
        commit(&mut client, "live-group", (&member, generation + 1)),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        commit(&mut client, "live-group", ("zombie", generation)),
        UNKNOWN_MEMBER_ID
    );
    // Clients before KIP-447 name no member.
    assert_eq!(commit(&mut client, "live-group", ("", -1)), 0);
    // A group that does not exist takes only generation -1.
    assert_eq!(commit(&mut client, "no-such-group", ("", 1)), ILLEGAL_GENERATION);
    assert_eq!(commit(&mut client, "no-such-group", ("", -1)), 0);
    assert_eq!(broker.frame_errors(), 0);
}

#[test]
fn a_transactional_batch_outside_the_transaction_is_refused_per_produce_version() {
    let broker = TestBroker::start("txn-produce-unverified", 2);
    let mut client = RawClient::connect(broker.addr);
    let topic = "unverified-topic";
    ensure_topic(&mut client, topic);
    let id = "unverified-txn";
    let (pid, epoch) = init_transactions(&mut client, id);
    // The partition was never added with AddPartitionsToTxn.
    let mut batch = build_idempotent_batch(0, 1, pid, epoch, 0, &[(b"k", b"v")]);
    mark_transactional(&mut batch);
    for (version, expected) in [
        (9, INVALID_TXN_STATE),
        (10, INVALID_TXN_STATE),
        (11, TRANSACTION_ABORTABLE),
        (12, TRANSACTION_ABORTABLE),
    ] {
        assert_eq!(
            produce_transactional(&mut client, version, id, topic, batch.clone()),
            expected,
            "Produce v{version}"
        );
    }
    assert_eq!(broker.frame_errors(), 0);
}

#[test]
fn transaction_timeouts_are_bounded_and_idle_ids_are_forgotten() {
    let broker = TestBroker::start_with("txn-expiry", 2, |c| {
        c.transaction_max_timeout_ms = 5_000;
        c.transactional_id_expiration_ms = 300;
    });
    let mut client = RawClient::connect(broker.addr);
    let topic = "expiry-topic";
    ensure_topic(&mut client, topic);
    let init = |client: &mut RawClient, id: &str, timeout_ms: i32| {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(timeout_ms);
        let response = client.call(3, &request);
        (
            response.error_code,
            (response.producer_id.0, response.producer_epoch),
        )
    };
    const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    assert_eq!(
        init(&mut client, "too-long", 5_001).0,
        INVALID_TRANSACTION_TIMEOUT
    );
    let (code, idle) = init(&mut client, "idle", 5_000);
    assert_eq!(code, 0);
    let (code, open) = init(&mut client, "open", 5_000);
    assert_eq!(code, 0);
    // "open" begins a transaction; "idle" only holds its producer id.
    add_partition(&mut client, "open", open, topic);
    let describe = |client: &mut RawClient, id: &str| {
        let request =
            DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(id))]);
        client.call(0, &request).transaction_states[0].error_code
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while describe(&mut client, "idle") != TRANSACTIONAL_ID_NOT_FOUND {
        assert!(
            Instant::now() < deadline,
            "an idle transactional id was kept past its expiration"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // An id with a transaction open is kept however old (its timeout
    // aborts the transaction first).
    assert_eq!(describe(&mut client, "open"), 0);
    // A forgotten id starts again with a new producer id.
    let (code, again) = init(&mut client, "idle", 5_000);
    assert_eq!(code, 0);
    assert_ne!(again.0, idle.0);
    assert_eq!(broker.frame_errors(), 0);
}

/// Transaction state lives in 50 hashed state partitions owned like any
/// partition, so changing SHARDS moves each id's coordinator with its
/// partition: nothing is lost or left hanging. Tables of the per-shard
/// layout an earlier version wrote are moved into the partitions.
#[test]
fn transaction_state_follows_its_partitions_when_the_shard_count_changes() {
    let mut broker = TestBroker::start("txn-reshard", 2);
    let mut client = RawClient::connect(broker.addr);
    let topic = "reshard-topic";
    ensure_topic(&mut client, topic);
    let ids: Vec<String> = (0..20).map(|i| format!("reshard-{i}")).collect();
    let mut producers = Vec::new();
    for id in &ids {
        let producer = init_transactions(&mut client, id);
        add_partition(&mut client, id, producer, topic);
        producers.push(producer);
    }
    // A table in the per-shard layout, as an earlier version left it.
    let legacy = format!(
        r#"{{"legacy-id": {{"producer_id": 4242, "epoch": 3, "last_epoch": 2, "timeout_ms": 60000,
            "state": "CompleteCommit", "partitions": [], "groups": [], "offsets": [], "start_ms": -1,
            "last_update_ms": {}, "sequence": 1}}}}"#,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    std::fs::write(broker.dir.join("transactions-1.json"), legacy).unwrap();
    let describe = |client: &mut RawClient, id: &str| {
        let request =
            DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(id))]);
        let state = client.call(0, &request).transaction_states.remove(0);
        (
            state.error_code,
            state.transaction_state.to_string(),
            state.producer_id.0,
        )
    };
    for shards in [1, 3, 2] {
        broker.restart_with(|c| c.shards = std::num::NonZeroUsize::new(shards));
        let mut client = RawClient::connect(broker.addr);
        for (id, (pid, _)) in ids.iter().zip(&producers) {
            assert_eq!(
                describe(&mut client, id),
                (0, "Ongoing".to_string(), *pid),
                "{id} with {shards} shards"
            );
        }
        assert_eq!(
            describe(&mut client, "legacy-id"),
            (0, "CompleteCommit".to_string(), 4242)
        );
        assert!(
            !broker.dir.join("transactions-1.json").exists(),
            "the old table was moved"
        );
    }
    // And the moved coordinators still end what they hold.
    let mut client = RawClient::connect(broker.addr);
    for (id, producer) in ids.iter().zip(&producers) {
        end_txn(&mut client, id, *producer, true);
    }
    assert_eq!(broker.frame_errors(), 0);
}

/// What `kafka-transactions.sh abort` sends: WriteTxnMarkers to the
/// partition's leader ends a transaction there, and the stable offset
/// moves on.
#[test]
fn write_txn_markers_from_an_admin_aborts_a_transaction() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
    let broker = TestBroker::start("txn-write-markers", 2);
    let mut client = RawClient::connect(broker.addr);
    let topic = "markers-topic";
    ensure_topic(&mut client, topic);
    let id = "markers-txn";
    let (pid, epoch) = init_transactions(&mut client, id);
    add_partition(&mut client, id, (pid, epoch), topic);
    let mut batch = build_idempotent_batch(0, 1, pid, epoch, 0, &[(b"k", b"v"), (b"k", b"w")]);
    mark_transactional(&mut batch);
    assert_eq!(produce_transactional(&mut client, 9, id, topic, batch), 0);
    let latest = |client: &mut RawClient, isolation: i8| {
        let request = ListOffsetsRequest::default()
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])]);
        client.call(5, &request).topics[0].partitions[0].offset
    };
    assert_eq!(
        (latest(&mut client, 1), latest(&mut client, 0)),
        (0, 2),
        "open: the stable offset holds at 0"
    );
    let abort = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_transaction_result(false)
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(name(topic))
            .with_partition_indexes(vec![0])])]);
    assert_eq!(
        client.call(1, &abort).markers[0].topics[0].partitions[0].error_code,
        0
    );
    assert_eq!(
        (latest(&mut client, 1), latest(&mut client, 0)),
        (3, 3),
        "aborted: the marker is the third record, and the stable offset is the end"
    );
    assert_eq!(broker.frame_errors(), 0);
}
