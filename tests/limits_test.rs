//! Connection protection with two shards: the total and per-address limits,
//! the rate limit and its ban (seen on both shards, and lifting on time),
//! exempt addresses, and idle connections being closed. Clients use
//! several 127.0.0.x source addresses.

mod common;

use common::{RawClient, TestBroker};
use kafka_protocol::messages::ApiVersionsRequest;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connection from `source` (a 127.0.0.x address) to `broker`.
fn connect_from(source: &str, broker: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0);
    socket.bind(&from.into()).unwrap();
    socket.connect(&broker.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
}

/// True if the broker answers an ApiVersions request on `stream`; false if
/// it closed the connection (refused at accept).
fn served(stream: &mut TcpStream) -> bool {
    let request = RawClient::encode(1, 3, &ApiVersionsRequest::default());
    if stream.write_all(&request).is_err() {
        return false;
    }
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).is_ok()
}

fn rejected(broker: &TestBroker, reason: usize) -> Vec<u64> {
    broker
        .handle()
        .shard_stats()
        .iter()
        .map(|s| s.runtime.rejected[reason])
        .collect()
}

#[test]
fn the_total_limit_is_never_exceeded() {
    let broker = TestBroker::start_with("max-connections", 2, |c| c.max_connections = 10);
    let mut conns: Vec<TcpStream> = (0..30)
        .map(|i| connect_from(&format!("127.0.0.{}", 10 + i % 5), broker.addr))
        .collect();
    let mut kept: Vec<TcpStream> = conns
        .drain(..)
        .filter_map(|mut c| served(&mut c).then_some(c))
        .collect();
    let answered = kept.len();
    assert_eq!(answered, 10);
    assert_eq!(rejected(&broker, 0).iter().sum::<u64>(), 20);
    let open: u64 = broker
        .handle()
        .shard_stats()
        .iter()
        .map(|s| s.runtime.connections_active)
        .sum();
    assert_eq!(open, 10);
    // Closing one frees a slot.
    drop(kept.pop());
    broker.wait_for("a slot to free up", |s| {
        s.iter().map(|s| s.runtime.connections_active).sum::<u64>() <= 10
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        let mut c = connect_from("127.0.0.20", broker.addr);
        if served(&mut c) {
            break c;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(served(&mut again));
}

/// Connections opened 30 ms apart (longer than the 20 ms staleness bound)
/// from one address are limited exactly; another address is not affected.
#[test]
fn the_per_address_limit_holds_across_shards() {
    let broker = TestBroker::start_with("per-ip", 2, |c| c.pool_config.max_per_ip = 5);
    let mut from_a = Vec::new();
    for _ in 0..12 {
        let mut c = connect_from("127.0.0.2", broker.addr);
        if served(&mut c) {
            from_a.push(c);
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(from_a.len(), 5, "exactly MAX_CONNECTIONS_PER_IP from one address");
    let seen: Vec<u64> = broker
        .handle()
        .shard_stats()
        .iter()
        .map(|s| s.runtime.connections_accepted + s.runtime.rejected[1])
        .collect();
    assert!(
        seen.iter().all(|n| *n > 0),
        "both shards saw the address: {seen:?}"
    );
    assert_eq!(rejected(&broker, 1).iter().sum::<u64>(), 7);
    let mut from_b: Vec<TcpStream> = (0..5).map(|_| connect_from("127.0.0.3", broker.addr)).collect();
    assert!(
        from_b.iter_mut().all(served),
        "another address has its own budget"
    );
}

#[test]
fn breaking_the_rate_limit_bans_on_every_shard_until_the_ban_expires() {
    let broker = TestBroker::start_with("rate-limit", 2, |c| {
        c.pool_config.rate_limit = 5;
        c.pool_config.ban_duration = Duration::from_secs(2);
        c.pool_config.exempt = vec![chronik_shard::IpNet::parse("127.0.0.9").unwrap()];
    });
    // A burst of 20 from one address: the first few are served, then it is banned.
    let mut burst: Vec<TcpStream> = (0..20).map(|_| connect_from("127.0.0.5", broker.addr)).collect();
    let answered = burst.iter_mut().map(served).filter(|ok| *ok).count();
    assert!(
        (1..=10).contains(&answered),
        "{answered} of a 20-connection burst served with a limit of 5/s"
    );
    let banned_at = Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    // Within 100 ms every shard refuses the address.
    let before = rejected(&broker, 3);
    let mut after_ban: Vec<TcpStream> = (0..20).map(|_| connect_from("127.0.0.5", broker.addr)).collect();
    assert_eq!(
        after_ban.iter_mut().map(served).filter(|ok| *ok).count(),
        0,
        "banned address served"
    );
    let after = rejected(&broker, 3);
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "both shards refused it as banned: {before:?} -> {after:?}"
    );
    // Other addresses are untouched, and the exempt one has no limit.
    assert!(served(&mut connect_from("127.0.0.6", broker.addr)));
    let mut exempt: Vec<TcpStream> = (0..40).map(|_| connect_from("127.0.0.9", broker.addr)).collect();
    assert!(exempt.iter_mut().all(served), "exempt address limited");
    // The ban lifts on time.
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(banned_at.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if served(&mut connect_from("127.0.0.5", broker.addr)) {
            break;
        }
        assert!(Instant::now() < deadline, "ban never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn idle_connections_are_closed_and_busy_ones_kept() {
    let broker = TestBroker::start_with("idle", 2, |c| c.idle_timeout = Duration::from_secs(1));
    let mut idle = connect_from("127.0.0.7", broker.addr);
    let mut busy = RawClient::connect(broker.addr);
    let started = Instant::now();
    let mut closed_after = None;
    while started.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            busy.call(3, &ApiVersionsRequest::default()).error_code,
            0,
            "busy connection dropped"
        );
        if closed_after.is_none() {
            idle.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            let mut byte = [0u8; 1];
            match idle.read(&mut byte) {
                Ok(0) => {
                    eprintln!("idle: EOF after {:?}", started.elapsed());
                    closed_after = Some(started.elapsed())
                }
                Err(e)
                    if e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut =>
                {
                    eprintln!("idle: read error {e:?} after {:?}", started.elapsed());
                    closed_after = Some(started.elapsed())
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed_after = closed_after.expect("idle connection never closed");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_millis(2500),
        "{closed_after:?}"
    );
    assert_eq!(
        broker
            .handle()
            .shard_stats()
            .iter()
            .map(|s| s.runtime.idle_closed)
            .sum::<u64>(),
        1
    );
}
