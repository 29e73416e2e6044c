//! A restart right after a crash comes up, as a supervisor (systemd
//! `Restart=on-failure`) would start it: 20 times, the broker on a fixed
//! port is put under acks=all load by librdkafka, killed with SIGKILL, and
//! started again within 100 ms on the same port and data directory. Every
//! restart must come up and answer Metadata (before the fix it exited 1
//! with "already in use by another process" while the kernel was still
//! tearing down the dead process's io_uring-held listening sockets), and
//! every acknowledged record must be there at the end.

mod common;

use common::{consume, consumer_from_start, producer, scratch_dir, BrokerProcess};
use rdkafka::producer::{BaseRecord, Producer as _};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 20;
const PARTITIONS: i32 = 2;
const TOPIC: &str = "restarted";

#[test]
fn a_restart_within_100_ms_of_kill_9_comes_up_on_the_same_port() {
    let started = Instant::now();
    let dir = scratch_dir("restart-after-crash");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bind = format!("127.0.0.1:{port}");
    let env = [
        ("SHARDS", "2"),
        ("NUM_PARTITIONS", "2"),
        ("BIND_ADDRESS", bind.as_str()),
    ];
    let mut broker = BrokerProcess::start(&dir, &env);
    assert_eq!(broker.addr.port(), port);
    // Acked records: value -> (partition, offset).
    let mut acked: HashMap<String, (i32, i64)> = HashMap::new();
    for round in 0..ROUNDS {
        let (producer, deliveries) = producer(
            broker.addr,
            &[
                ("acks", "all"),
                ("linger.ms", "1"),
                ("message.timeout.ms", "2000"),
                ("retries", "0"),
            ],
        );
        // Comes up: answers Metadata. A client retries a dropped connection,
        // so do we (bounded), but say so: it should not happen.
        let deadline = Instant::now() + Duration::from_secs(10);
        let metadata = loop {
            match producer
                .client()
                .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
            {
                Ok(metadata) => break metadata,
                Err(e) if Instant::now() < deadline => {
                    eprintln!(
                        "round {round}: Metadata failed ({e}); retrying. Broker log:\n{}",
                        broker.log_lines().join("\n")
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("round {round}: no Metadata answer: {e}"),
            }
        };
        let topic = &metadata.topics()[0];
        assert!(topic.error().is_none(), "round {round}: {:?}", topic.error());
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let value = format!("{round}-{i}");
                    let record = BaseRecord::<(), _, _>::with_opaque_to(TOPIC, Box::new(i)).payload(&value);
                    match producer.send(record) {
                        Ok(()) => i += 1,
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
                let _ = producer.flush(Duration::from_secs(10));
            })
        };
        // Kill while records are in flight, after some have been acked.
        let deadline = Instant::now() + Duration::from_secs(30);
        while deliveries.1.load(Ordering::Relaxed) < 200 {
            assert!(Instant::now() < deadline, "round {round}: producer stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        assert_eq!(
            unsafe { libc::kill(broker.child.id() as libc::pid_t, libc::SIGKILL) },
            0
        );
        let killed = Instant::now();
        assert!(
            broker.wait_exit(Duration::from_secs(5)).is_some(),
            "round {round}: broker did not die"
        );
        let since_kill = killed.elapsed();
        assert!(
            since_kill < Duration::from_millis(100),
            "round {round}: restart {since_kill:?} after the kill"
        );
        broker = BrokerProcess::start(&dir, &env);
        assert_eq!(broker.addr.port(), port, "round {round}");
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("producer thread");
        for (i, outcome) in deliveries.0.lock().expect("deliveries").iter() {
            if let Ok(position) = outcome {
                acked.insert(format!("{round}-{i}"), *position);
            }
        }
    }
    eprintln!("{ROUNDS} restarts; {} records acked", acked.len());

    let consumer = consumer_from_start(broker.addr, TOPIC, PARTITIONS);
    let stored_count: i64 = (0..PARTITIONS)
        .map(|p| {
            rdkafka::consumer::Consumer::fetch_watermarks(&consumer, TOPIC, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum();
    let stored = consume(&consumer, stored_count as usize, Duration::from_secs(60));
    assert_eq!(
        stored.len() as i64,
        stored_count,
        "read up to the high watermarks"
    );
    let mut found: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    for (partition, offset, _, value, _) in stored {
        found
            .entry(String::from_utf8_lossy(&value).into_owned())
            .or_default()
            .push((partition, offset));
    }
    for (value, position) in &acked {
        assert_eq!(
            found.get(value).map_or(&[][..], Vec::as_slice),
            &[*position][..],
            "acked record {value} must be stored once, where acked"
        );
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}
