//! Committed offsets of many groups committing often: the offsets store
//! stays within a bound on disk (superseded commits are compacted away as
//! the broker runs), and every group's last commit survives kill -9.

mod common;

use common::{scratch_dir, BrokerProcess, RawClient};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::io::Write;
use std::time::Duration;

const GROUPS: usize = 10_000;
const ROUNDS: usize = 20;
/// Requests in flight on the connection at once.
const PIPELINE: usize = 200;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn commit(group: usize, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(&format!("group-{group}"))))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("tracked")))
            .with_partitions(vec![
                OffsetCommitRequestPartition::default().with_committed_offset(offset)
            ])])
}

/// Sends `chunk`'s commits pipelined and checks every answer; `false` if
/// the connection closed first.
fn commit_chunk(client: &mut RawClient, chunk: &[(usize, i64)]) -> bool {
    use kafka_protocol::protocol::{Decodable, HeaderVersion};
    let first = client.next_correlation;
    client.next_correlation += chunk.len() as i32;
    let mut wire = Vec::new();
    for (i, (group, offset)) in chunk.iter().enumerate() {
        wire.extend(RawClient::encode(first + i as i32, 8, &commit(*group, *offset)));
    }
    if client.stream.write_all(&wire).is_err() {
        return false;
    }
    for i in 0..chunk.len() {
        let Some(mut frame) = client.read_frame() else {
            return false;
        };
        let header = ResponseHeader::decode(&mut frame, OffsetCommitResponse::header_version(8)).unwrap();
        assert_eq!(header.correlation_id, first + i as i32);
        let response = OffsetCommitResponse::decode(&mut frame, 8).unwrap();
        assert_eq!(response.topics[0].partitions[0].error_code, 0);
    }
    true
}

/// Bytes of the files under `dir`, its partitions' directories included
/// (a file the cleaner removes meanwhile counts nothing).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn offsets_of_10000_groups_committing_often_stay_bounded_and_survive_kill_9() {
    let dir = scratch_dir("offsets-crash");
    // Small segments and a busy cleaner, so compaction shows within the
    // test's rounds (the defaults bound the store the same way, at 8 MiB
    // segments).
    let env = [
        ("SHARDS", "2"),
        ("OFFSETS_TOPIC_SEGMENT_BYTES", "16384"),
        ("LOG_CLEANER_BACKOFF_MS", "100"),
    ];
    let mut broker = BrokerProcess::start(&dir, &env);
    let mut client = RawClient::connect(broker.addr);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s("tracked"))))
        ]))
        .with_allow_auto_topic_creation(true);
    assert_eq!(client.call(12, &metadata).topics[0].error_code, 0);
    let offsets_dir = dir.join("__consumer_offsets");
    let mut largest = 0;
    let mut after_first_round = 0;
    for round in 0..ROUNDS {
        let requests: Vec<(usize, i64)> = (0..GROUPS).map(|g| (g, (round * GROUPS + g) as i64)).collect();
        for chunk in requests.chunks(PIPELINE) {
            // A connection the broker closes is reported with its log and
            // the chunk sent again on a new one (commits are idempotent);
            // a broker that died fails the reconnect.
            let mut attempts = 0;
            while !commit_chunk(&mut client, chunk) {
                attempts += 1;
                let lines = broker.log_lines();
                eprintln!(
                    "the broker closed the connection; its last log lines:\n{}",
                    lines[lines.len().saturating_sub(20)..].join("\n")
                );
                assert!(attempts < 3, "the broker closed the connection {attempts} times");
                client = RawClient::connect(broker.addr);
                client
                    .stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
            }
        }
        let size = dir_bytes(&offsets_dir);
        largest = largest.max(size);
        if round == 0 {
            after_first_round = size;
        }
    }
    println!("offsets store: {after_first_round} bytes after the first round of {GROUPS} commits, at most {largest} over {ROUNDS} rounds");
    // 200,000 commits of 10,000 live offsets: without compaction the store
    // would hold all of them (20x the first round's size).
    assert!(
        largest < after_first_round * 8,
        "the offsets store grew to {largest} bytes; one round of commits is {after_first_round}"
    );
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(
        unsafe { libc::kill(broker.child.id() as libc::pid_t, libc::SIGKILL) },
        0
    );
    assert!(broker.wait_exit(Duration::from_secs(10)).is_some());
    let restarted = BrokerProcess::start(&dir, &env);
    let mut client = RawClient::connect(restarted.addr);
    let last = (ROUNDS - 1) * GROUPS;
    for chunk in (0..GROUPS).collect::<Vec<_>>().chunks(500) {
        let fetch = OffsetFetchRequest::default().with_groups(
            chunk
                .iter()
                .map(|g| {
                    OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(s(&format!("group-{g}"))))
                        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                            .with_name(TopicName(s("tracked")))
                            .with_partition_indexes(vec![0])]))
                })
                .collect(),
        );
        let response = client.call(8, &fetch);
        for (g, group) in chunk.iter().zip(&response.groups) {
            let partition = &group.topics[0].partitions[0];
            assert_eq!(
                (partition.error_code, partition.committed_offset),
                (0, (last + g) as i64),
                "group-{g} after kill -9"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
