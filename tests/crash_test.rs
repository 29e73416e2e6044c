//! kill -9 while a producer sends acks=all records: after restart, every
//! acknowledged record is there exactly once and offsets are dense.
//! Five rounds in a row, each on a fresh data directory.

mod common;

use common::{consume, consumer_from_start, producer, scratch_dir, send_all, BrokerProcess};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const RECORDS: usize = 200_000;
const PARTITIONS: i32 = 3;
const ROUNDS: usize = 5;

#[test]
fn acknowledged_records_survive_kill_9_five_times_in_a_row() {
    for round in 0..ROUNDS {
        crash_round(round);
    }
}

fn crash_round(round: usize) {
    let dir = scratch_dir("crash");
    let env = [("SHARDS", "2"), ("NUM_PARTITIONS", "3")];
    let mut broker = BrokerProcess::start(&dir, &env);
    let (producer, deliveries) = producer(
        broker.addr,
        &[
            ("acks", "all"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "2000"),
            ("retries", "0"),
        ],
    );
    let sender = std::thread::spawn(move || {
        let records = (0..RECORDS).map(|i| {
            (
                Some(format!("k{i}").into_bytes()),
                format!("{i}").into_bytes(),
                vec![],
            )
        });
        send_all(&producer, "crash", records);
        // Let every outstanding record resolve (acked or timed out).
        let _ = rdkafka::producer::Producer::flush(&producer, Duration::from_secs(20));
    });

    // Kill somewhere in the middle of the stream, at a point that varies
    // by round.
    let kill_after = RECORDS / 20 * (round + 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while deliveries.1.load(std::sync::atomic::Ordering::Relaxed) < kill_after {
        assert!(
            Instant::now() < deadline,
            "round {round}: producer stalled before the kill"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(
        unsafe { libc::kill(broker.child.id() as libc::pid_t, libc::SIGKILL) },
        0
    );
    assert!(
        broker.wait_exit(Duration::from_secs(10)).is_some(),
        "broker did not die"
    );
    sender.join().expect("producer thread");

    let acked: HashMap<usize, (i32, i64)> = deliveries
        .0
        .lock()
        .expect("deliveries")
        .iter()
        .filter_map(|(i, r)| r.as_ref().ok().map(|pos| (*i, *pos)))
        .collect();
    assert!(acked.len() >= kill_after, "round {round}: {} acked", acked.len());
    assert!(
        acked.len() < RECORDS,
        "round {round}: the kill came after every record was acked"
    );

    let restarted = BrokerProcess::start(&dir, &env);
    let consumer = consumer_from_start(restarted.addr, "crash", PARTITIONS);
    // Everything that survived, up to each partition's high watermark.
    let survived: i64 = (0..PARTITIONS)
        .map(|p| {
            let (low, high) =
                rdkafka::consumer::Consumer::fetch_watermarks(&consumer, "crash", p, Duration::from_secs(10))
                    .expect("watermarks");
            assert_eq!(low, 0);
            high
        })
        .sum();
    let stored = consume(&consumer, survived as usize, Duration::from_secs(60));
    assert_eq!(
        stored.len() as i64,
        survived,
        "round {round}: read up to the high watermarks"
    );

    let mut seen: HashMap<usize, Vec<(i32, i64)>> = HashMap::new();
    let mut offsets: HashMap<i32, Vec<i64>> = HashMap::new();
    for (partition, offset, _, value, _) in &stored {
        let i: usize = String::from_utf8_lossy(value)
            .parse()
            .expect("value is the record index");
        seen.entry(i).or_default().push((*partition, *offset));
        offsets.entry(*partition).or_default().push(*offset);
    }
    for (i, position) in &acked {
        let copies = seen.get(i).map_or(&[][..], Vec::as_slice);
        assert_eq!(
            copies,
            &[*position][..],
            "round {round}: acked record {i} must be stored exactly once where acked"
        );
    }
    for (partition, mut list) in offsets {
        list.sort_unstable();
        let dense: Vec<i64> = (0..list.len() as i64).collect();
        assert_eq!(list, dense, "round {round}: partition {partition} offsets dense");
    }
    let recovered = restarted
        .log_lines()
        .iter()
        .any(|l| l.contains("recovered partition"));
    assert!(recovered, "round {round}: recovery was not logged");
    eprintln!(
        "crash round {round}: killed after {} acks; {} acked, {} stored after restart",
        kill_after,
        acked.len(),
        stored.len()
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
