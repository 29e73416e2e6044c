//! Under attack: while a librdkafka producer sends 100,000 acks=all records,
//! other connections send random bytes, oversize sizes, half frames and a
//! byte-per-second trickle. Every produced record arrives; the attackers
//! are disconnected and counted.

mod common;

use common::{consume, consumer_from_start, produce_all, RawClient, TestBroker};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn producers_are_unharmed_while_attackers_are_disconnected() {
    let broker = TestBroker::start_with("attack", 2, |c| {
        c.idle_timeout = Duration::from_secs(2);
        c.max_request_bytes = 1 << 20;
    });
    let addr = broker.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let disconnected = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    // Garbage, oversize sizes, half frames: each connection is closed by
    // the broker; the attacker reconnects and tries again (bounded).
    for kind in 0..3 {
        let (stop, disconnected) = (stop.clone(), disconnected.clone());
        attackers.push(std::thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ kind;
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut c) = TcpStream::connect(addr) else {
                    continue;
                };
                let mut client = RawClient {
                    stream: c.try_clone().unwrap(),
                    next_correlation: 0,
                };
                let bytes: Vec<u8> = match kind {
                    0 => (0..256)
                        .map(|_| {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            seed as u8
                        })
                        .collect(),
                    1 => (2i32 << 20).to_be_bytes().to_vec(),
                    _ => [&40i32.to_be_bytes()[..], &[0u8, 18, 0, 3, 0]].concat(),
                };
                let _ = c.write_all(&bytes);
                if kind == 2 {
                    let _ = c.shutdown(std::net::Shutdown::Write);
                }
                if client.closed_by_broker() {
                    disconnected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // A slow writer: one byte per second of a frame that never completes.
    let trickle_closed = Arc::new(AtomicBool::new(false));
    {
        let (stop, closed) = (stop.clone(), trickle_closed.clone());
        attackers.push(std::thread::spawn(move || {
            let Ok(mut c) = TcpStream::connect(addr) else {
                return;
            };
            let frame = [0u8, 0, 0, 100, 0, 18, 0, 3];
            for byte in frame.iter().cycle().take(60) {
                if stop.load(Ordering::Relaxed) || c.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            let mut probe = RawClient {
                stream: c,
                next_correlation: 0,
            };
            probe
                .stream
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            closed.store(probe.closed_by_broker(), Ordering::Relaxed);
        }));
    }

    let started = Instant::now();
    let records = (0..100_000)
        .map(|i| (None, format!("record-{i}").into_bytes(), vec![]))
        .collect();
    let acked = produce_all(
        addr,
        &[("acks", "all"), ("linger.ms", "5")],
        "under-attack",
        records,
    );
    let produce_took = started.elapsed();
    assert!(acked.iter().all(|r| r.is_ok()), "a record failed under attack");
    let consumer = consumer_from_start(addr, "under-attack", 1);
    let got = consume(&consumer, 100_000, Duration::from_secs(60));
    assert_eq!(got.len(), 100_000, "records lost under attack");
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, m)| m.3 == format!("record-{i}").into_bytes()));

    // Let the trickler reach the idle timeout, then stop the attackers.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed().min(Duration::from_secs(3))));
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().unwrap();
    }
    let disconnected = disconnected.load(Ordering::Relaxed);
    let frame_errors = broker.frame_errors();
    let idle_closed: u64 = broker
        .handle()
        .shard_stats()
        .iter()
        .map(|s| s.runtime.idle_closed)
        .sum();
    eprintln!(
        "attack: 100,000 acks=all records in {produce_took:?}; {disconnected} attacker connections closed, {frame_errors} frame errors, {idle_closed} idle closes"
    );
    assert!(
        disconnected > 10,
        "attackers were not disconnected ({disconnected})"
    );
    assert!(
        frame_errors >= disconnected as u64 / 2,
        "frame errors not counted: {frame_errors}"
    );
    assert!(
        trickle_closed.load(Ordering::Relaxed),
        "the byte-a-second writer was never closed"
    );
    assert!(idle_closed >= 1);
}
