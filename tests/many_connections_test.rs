//! 10,000 idle connections, client (this test process) and server (the
//! broker binary) in separate processes: all accepted, held 30 s, then
//! every one answers a request. Prints the broker's RSS growth per
//! connection and how long accepting all of them took.

mod common;

use common::{scratch_dir, BrokerProcess, RawClient};
use kafka_protocol::messages::ApiVersionsRequest;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 10_000;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Raises this process's open-file limit to its hard limit (never above).
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

fn active_connections(metrics: SocketAddr) -> u64 {
    let Ok(mut stream) = TcpStream::connect(metrics) else {
        return 0;
    };
    let _ = write!(stream, "GET /metrics HTTP/1.0\r\n\r\n");
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with("chronik_connections_active{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn ten_thousand_idle_connections_are_held_and_then_answered() {
    let limit = raise_fd_limit();
    if limit < (CONNECTIONS as u64 + 200) {
        eprintln!("SKIPPED: open-file hard limit {limit} is below {CONNECTIONS} connections");
        return;
    }
    let dir = scratch_dir("10k");
    let metrics_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let broker = BrokerProcess::start(
        &dir,
        &[
            ("SHARDS", "2"),
            ("MAX_CONNECTIONS", "20000"),
            ("MAX_CONNECTIONS_PER_IP", "20000"),
            ("METRICS_ADDRESS", &metrics.to_string()),
        ],
    );
    let pid = broker.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kib(pid);
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        match TcpStream::connect(broker.addr) {
            Ok(c) => conns.push(c),
            Err(e) => panic!("connection {i} failed: {e}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while active_connections(metrics) < CONNECTIONS as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} accepted",
            active_connections(metrics)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let accepted_in = started.elapsed();
    std::thread::sleep(Duration::from_secs(30));
    let rss_held = rss_kib(pid);
    assert_eq!(
        active_connections(metrics),
        CONNECTIONS as u64,
        "connections lost while idle"
    );

    // Every connection answers a request after the idle period.
    let request = RawClient::encode(1, 3, &ApiVersionsRequest::default());
    for c in conns.iter_mut() {
        c.write_all(&request).expect("write after idle");
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut size = [0u8; 4];
        c.read_exact(&mut size)
            .unwrap_or_else(|e| panic!("connection {i} got no answer: {e}"));
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        c.read_exact(&mut body).unwrap();
    }
    let per_connection = (rss_held.saturating_sub(rss_before) * 1024) as f64 / CONNECTIONS as f64;
    eprintln!(
        "10,000 idle connections: accepted in {accepted_in:?}; broker RSS {rss_before} KiB -> {rss_held} KiB = {per_connection:.0} bytes per connection"
    );
    drop(conns);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
