//! Consumer groups through librdkafka (the rdkafka crate): assignment and
//! rebalance across members, exactly-once consumption with commits,
//! committed offsets across restart and kill -9, static membership; and
//! the protocol's error paths with raw requests.

mod common;

use common::{produce_all, scratch_dir, BrokerProcess, Outgoing, RawClient, TestBroker};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Commits the consumed position synchronously whenever partitions are
/// taken away, so the next owner starts exactly where processing stopped.
#[derive(Clone, Default)]
struct CommitOnRevoke {
    assignments: Arc<AtomicUsize>,
}

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.assignments.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn group_consumer(
    addr: SocketAddr,
    group: &str,
    extra: &[(&str, &str)],
) -> (BaseConsumer<CommitOnRevoke>, CommitOnRevoke) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let context = CommitOnRevoke::default();
    let consumer = config.create_with_context(context.clone()).expect("consumer");
    (consumer, context)
}

/// A group member polling on its own thread until told to stop; it commits
/// every 500 records and when it stops (then leaves the group).
struct Member {
    stop: Arc<AtomicBool>,
    assigned: Arc<Mutex<Vec<i32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(
        addr: SocketAddr,
        group: &str,
        topic: &str,
        seen: Arc<Mutex<Vec<(i32, i64, String)>>>,
    ) -> Member {
        let stop = Arc::new(AtomicBool::new(false));
        let assigned = Arc::new(Mutex::new(Vec::new()));
        let (consumer, _) = group_consumer(addr, group, &[]);
        consumer.subscribe(&[topic]).expect("subscribe");
        let (thread_stop, thread_assigned) = (stop.clone(), assigned.clone());
        let thread = std::thread::spawn(move || {
            let mut since_commit = 0;
            while !thread_stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                    seen.lock().unwrap().push((m.partition(), m.offset(), value));
                    since_commit += 1;
                    if since_commit >= 500 {
                        let _ = consumer.commit_consumer_state(CommitMode::Async);
                        since_commit = 0;
                    }
                }
                if let Ok(list) = consumer.assignment() {
                    let mut partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                    partitions.sort_unstable();
                    *thread_assigned.lock().unwrap() = partitions;
                }
            }
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
            drop(consumer);
        });
        Member {
            stop,
            assigned,
            thread: Some(thread),
        }
    }

    fn assigned(&self) -> Vec<i32> {
        self.assigned.lock().unwrap().clone()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("member thread");
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_until(what: &str, limit: Duration, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn records(from: usize, to: usize) -> Vec<Outgoing> {
    (from..to)
        .map(|i| {
            (
                Some(format!("key-{i}").into_bytes()),
                format!("{i}").into_bytes(),
                vec![],
            )
        })
        .collect()
}

#[test]
fn three_members_share_six_partitions_and_survivors_take_over_exactly_once() {
    let broker = TestBroker::start_with("group-rebalance", 2, |c| {
        c.num_partitions = 6;
        c.group_initial_rebalance_delay_ms = 500;
    });
    for r in produce_all(broker.addr, &[("linger.ms", "5")], "shared", records(0, 30_000)) {
        r.expect("acked");
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::start(broker.addr, "sharing", "shared", seen.clone()))
        .collect();
    wait_until("2 partitions each", Duration::from_secs(30), || {
        members.iter().all(|m| m.assigned().len() == 2)
    });
    let mut all: Vec<i32> = members.iter().flat_map(|m| m.assigned()).collect();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
    wait_until("first 30,000 consumed", Duration::from_secs(60), || {
        seen.lock().unwrap().len() >= 30_000
    });

    // One member leaves; the two others own all six within the session timeout.
    let mut leaver = members.pop().expect("three members");
    let left_at = Instant::now();
    leaver.stop();
    let took = wait_until("survivors own all 6", Duration::from_secs(6), || {
        let mut owned: Vec<i32> = members.iter().flat_map(|m| m.assigned()).collect();
        owned.sort_unstable();
        owned == vec![0, 1, 2, 3, 4, 5] && members.iter().all(|m| m.assigned().len() == 3)
    });
    eprintln!(
        "rebalance after a member left: survivors owned its partitions {:?} after it closed ({:?} wait)",
        left_at.elapsed(),
        took
    );

    for r in produce_all(
        broker.addr,
        &[("linger.ms", "5")],
        "shared",
        records(30_000, 60_000),
    ) {
        r.expect("acked");
    }
    wait_until("all 60,000 consumed", Duration::from_secs(60), || {
        seen.lock().unwrap().len() >= 60_000
    });
    std::thread::sleep(Duration::from_millis(500));
    for m in members.iter_mut() {
        m.stop();
    }
    let seen = seen.lock().unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, _, value) in seen.iter() {
        *counts.entry(value.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), 60_000, "every record consumed");
    let duplicated: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(
        duplicated.is_empty(),
        "records consumed twice: {duplicated:?} ({} total)",
        seen.len()
    );
}

/// Commits 600 of 1000 records through librdkafka, restarts (or kills) the
/// broker, and checks a new member resumes at offset 600.
fn resume_after(stop: impl FnOnce(&mut BrokerProcess), name: &str) {
    let dir = scratch_dir(name);
    let mut broker = BrokerProcess::start(&dir, &[("GROUP_INITIAL_REBALANCE_DELAY_MS", "0")]);
    for r in produce_all(broker.addr, &[], "resume", records(0, 1000)) {
        r.expect("acked");
    }
    {
        let (consumer, _) = group_consumer(broker.addr, "resumers", &[]);
        consumer.subscribe(&["resume"]).unwrap();
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while got < 600 && Instant::now() < deadline {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                got += 1;
            }
        }
        assert_eq!(got, 600);
        let mut position = TopicPartitionList::new();
        position
            .add_partition_offset("resume", 0, Offset::Offset(600))
            .unwrap();
        consumer
            .commit(&position, CommitMode::Sync)
            .expect("commit acknowledged");
        // No clean leave: the broker goes away under the member.
        std::mem::forget(consumer);
    }
    stop(&mut broker);
    let restarted = BrokerProcess::start(&dir, &[("GROUP_INITIAL_REBALANCE_DELAY_MS", "0")]);
    let (consumer, _) = group_consumer(restarted.addr, "resumers", &[]);
    consumer.subscribe(&["resume"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            break m.offset();
        }
        assert!(
            Instant::now() < deadline,
            "{name}: nothing consumed after restart"
        );
    };
    assert_eq!(first, 600, "{name}: resumed from the committed offset");
    drop(consumer);
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn committed_offsets_survive_restart_and_kill_9() {
    resume_after(
        |b| {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(b.child.id() as libc::pid_t, libc::SIGTERM) };
            assert!(b.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
        },
        "resume-restart",
    );
    resume_after(
        |b| {
            // SAFETY: as above.
            unsafe { libc::kill(b.child.id() as libc::pid_t, libc::SIGKILL) };
            assert!(b.wait_exit(Duration::from_secs(20)).is_some());
        },
        "resume-kill9",
    );
}

#[test]
fn a_static_member_that_restarts_gets_its_partitions_back_without_a_rebalance() {
    let broker = TestBroker::start_with("static", 2, |c| {
        c.num_partitions = 4;
        c.group_initial_rebalance_delay_ms = 300;
    });
    for r in produce_all(broker.addr, &[], "statics", records(0, 100)) {
        r.expect("acked");
    }
    let start = |instance: &str| {
        let (consumer, context) = group_consumer(
            broker.addr,
            "static-group",
            &[("group.instance.id", instance), ("session.timeout.ms", "10000")],
        );
        consumer.subscribe(&["statics"]).unwrap();
        (consumer, context)
    };
    let assignment = |c: &BaseConsumer<CommitOnRevoke>| {
        let mut p: Vec<i32> = c
            .assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        p.sort_unstable();
        p
    };
    let (a, _) = start("instance-a");
    let (b, b_context) = start("instance-b");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(assignment(&a).len() == 2 && assignment(&b).len() == 2) {
        a.poll(Duration::from_millis(20));
        b.poll(Duration::from_millis(20));
        assert!(Instant::now() < deadline, "no 2+2 assignment");
    }
    let a_partitions = assignment(&a);
    let b_rebalances = b_context.assignments.load(Ordering::Relaxed);
    // a "restarts": a static member's close does not leave the group.
    drop(a);
    let (a_again, _) = start("instance-a");
    let deadline = Instant::now() + Duration::from_secs(20);
    while assignment(&a_again) != a_partitions {
        a_again.poll(Duration::from_millis(20));
        b.poll(Duration::from_millis(20));
        assert!(
            Instant::now() < deadline,
            "restarted static member did not get {a_partitions:?} back"
        );
    }
    for _ in 0..50 {
        b.poll(Duration::from_millis(20));
    }
    assert_eq!(
        b_context.assignments.load(Ordering::Relaxed),
        b_rebalances,
        "b saw no rebalance"
    );
    assert_eq!(assignment(&b).len(), 2);
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

#[test]
fn protocol_error_paths_get_kafkas_codes() {
    let broker = TestBroker::start_with("group-errors", 1, |c| c.group_initial_rebalance_delay_ms = 0);
    let mut client = RawClient::connect(broker.addr);
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s("errors")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(s("range"))])
    };
    let first = client.call(5, &join(""));
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    let joined = client.call(5, &join(&first.member_id));
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(joined.leader, joined.member_id);
    let synced = client.call(
        3,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(s("errors")))
            .with_generation_id(1)
            .with_member_id(joined.member_id.clone()),
    );
    assert_eq!(synced.error_code, 0, "SyncGroup");
    // Every member gets its assignment field, even an empty one.
    assert!(synced.assignment.is_empty());

    let heartbeat = |generation: i32, member: &StrBytes| {
        HeartbeatRequest::default()
            .with_group_id(GroupId(s("errors")))
            .with_generation_id(generation)
            .with_member_id(member.clone())
    };
    assert_eq!(client.call(3, &heartbeat(1, &joined.member_id)).error_code, 0);
    assert_eq!(
        client.call(3, &heartbeat(0, &joined.member_id)).error_code,
        22,
        "ILLEGAL_GENERATION"
    );
    assert_eq!(
        client.call(3, &heartbeat(1, &s("stranger"))).error_code,
        25,
        "UNKNOWN_MEMBER_ID"
    );

    let commit = |member: &str, generation: i32| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s("errors")))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("errors-topic")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_committed_offset(5)
                    .with_committed_metadata(Some(s("meta-5")))])])
    };
    let mut producer = RawClient::connect(broker.addr);
    let meta = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(s("errors-topic")))),
    ]));
    assert_eq!(producer.call(9, &meta).topics[0].error_code, 0);
    let unknown = client.call(8, &commit("stranger", 1));
    assert_eq!(
        unknown.topics[0].partitions[0].error_code, 25,
        "commit from an unknown member"
    );
    let stale = client.call(8, &commit(&joined.member_id, 0));
    assert_eq!(
        stale.topics[0].partitions[0].error_code, 22,
        "commit with a stale generation"
    );
    let ok = client.call(8, &commit(&joined.member_id, 1));
    assert_eq!(ok.topics[0].partitions[0].error_code, 0);
    // Metadata round-trips through OffsetFetch.
    let fetched = client.call(
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s("errors")))
            .with_topics(Some(vec![
                kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("errors-topic")))
                    .with_partition_indexes(vec![0]),
            ])),
    );
    let p = &fetched.topics[0].partitions[0];
    assert_eq!((p.committed_offset, p.metadata.as_deref()), (5, Some("meta-5")));

    let delete = client.call(
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("errors"))]),
    );
    assert_eq!(delete.results[0].error_code, 68, "NON_EMPTY_GROUP");
    let described = client.call(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("errors"))]),
    );
    assert_eq!(described.groups[0].group_state.as_str(), "Stable");
    assert_eq!(described.groups[0].members.len(), 1);
    let left = client.call(
        3,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(s("errors")))
            .with_members(vec![
                kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                    .with_member_id(joined.member_id.clone()),
            ]),
    );
    assert_eq!(left.members[0].error_code, 0);
    let listed = client.call(
        4,
        &ListGroupsRequest::default().with_states_filter(vec![s("Empty")]),
    );
    assert!(listed.groups.iter().any(|g| g.group_id.as_str() == "errors"));
    let delete = client.call(
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("errors"))]),
    );
    assert_eq!(delete.results[0].error_code, 0, "an empty group can be deleted");
    let gone = client.call(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("errors"))]),
    );
    assert_eq!(gone.groups[0].group_state.as_str(), "Dead");
}

/// JoinGroup spam (v4+, empty member id: each answer mints a pending id)
/// stops at the group max size with GROUP_MAX_SIZE_REACHED, and the unused
/// ids expire at the session timeout the requests asked for, not after 30
/// minutes.
#[test]
fn join_group_spam_is_bounded_by_the_group_max_size_and_the_session_timeout() {
    /// `GROUP_MAX_SIZE` in src/groups/group.rs.
    const GROUP_MAX_SIZE: usize = 1000;
    let broker = TestBroker::start_with("group-spam", 1, |c| c.group_initial_rebalance_delay_ms = 0);
    let mut client = RawClient::connect(broker.addr);
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s("spam")))
            .with_session_timeout_ms(6_000)
            .with_rebalance_timeout_ms(6_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(s("range"))])
    };
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..GROUP_MAX_SIZE {
        let answer = client.call(5, &join(""));
        assert_eq!(answer.error_code, 79, "MEMBER_ID_REQUIRED for join {i}");
        ids.push(answer.member_id);
    }
    let refused = client.call(5, &join(""));
    assert_eq!(refused.error_code, 81, "GROUP_MAX_SIZE_REACHED");
    assert_eq!(refused.member_id.as_str(), "");
    // An id handed out before the cap still joins.
    let joined = client.call(5, &join(&ids[0]));
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));

    // The other ids expire 6 s after they were handed out; then there is
    // room again. (Bounded wait, far below the old 30 minutes.)
    let reopened = loop {
        let answer = client.call(5, &join(""));
        if answer.error_code == 79 {
            break started.elapsed();
        }
        assert_eq!(answer.error_code, 81, "GROUP_MAX_SIZE_REACHED while full");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "pending ids never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        reopened >= Duration::from_millis(5_500),
        "expired early: {reopened:?}"
    );
    // ids[1], the oldest still pending, is the one that made room.
    assert_eq!(
        client.call(5, &join(&ids[1])).error_code,
        25,
        "an expired pending id is UNKNOWN_MEMBER_ID"
    );
}
