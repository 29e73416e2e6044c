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
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
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

/// Three long-polling fetches pending with BACKPRESSURE_THRESHOLD=2: the
/// shard stops reading, so a fourth connection's request waits for the
/// fetches to finish; the transition is counted and every request is
/// answered.
#[test]
fn backpressure_pauses_reading_and_loses_nothing() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let broker = TestBroker::start_with("backpressure", 1, |c| c.backpressure_threshold = 2);
    let mut setup = RawClient::connect(broker.addr);
    let batch = chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", b"v")]);
    let produce = kafka_protocol::messages::ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            kafka_protocol::messages::produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("stalled")))
                .with_partition_data(vec![
                    kafka_protocol::messages::produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.into())),
                ]),
        ]);
    assert_eq!(
        setup.call(9, &produce).responses[0].partition_responses[0].error_code,
        0
    );
    let fetch = FetchRequest::default()
        .with_max_wait_ms(1500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("stalled")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(1)
                .with_partition_max_bytes(1 << 20)])]);
    let addr = broker.addr;
    let pollers: Vec<_> = (0..3)
        .map(|_| {
            let fetch = fetch.clone();
            std::thread::spawn(move || RawClient::connect(addr).call(12, &fetch).responses.len())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut late = RawClient::connect(broker.addr);
    assert_eq!(late.call(3, &ApiVersionsRequest::default()).error_code, 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "read while 3 > 2 requests were pending ({waited:?})"
    );
    for poller in pollers {
        assert_eq!(poller.join().unwrap(), 1, "a long-poll answer was lost");
    }
    let metrics = broker.handle().render_metrics();
    let events: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("chronik_backpressure_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(events >= 1.0, "backpressure not counted:\n{metrics}");
}

/// A request still unanswered REQUEST_TIMEOUT_SECS after the wait its
/// protocol allows is counted and its connection closed; other connections
/// are unaffected. The request: a JoinGroup with a 100 ms rebalance timeout
/// (what its client waits for, plus grace), held by a group whose other
/// member may take 30 s to rejoin, with a 1 s timeout.
#[test]
fn a_request_past_the_timeout_is_counted_and_its_connection_closed() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::{GroupId, JoinGroupRequest};
    use kafka_protocol::protocol::StrBytes;
    let broker = TestBroker::start_with("request-timeout", 1, |c| {
        c.request_timeout = Duration::from_secs(1);
        c.group_initial_rebalance_delay_ms = 0;
    });
    let join = |rebalance_ms: i32| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("slow")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(rebalance_ms)
            .with_member_id(StrBytes::from_static_str(""))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default().with_name(StrBytes::from_static_str("range"))
            ])
    };
    // The first member joins (v3: no member-id round trip) and stays.
    let mut first = RawClient::connect(broker.addr);
    let joined = first.call(3, &join(30_000));
    assert_eq!(joined.error_code, 0);
    let mut client = RawClient::connect(broker.addr);
    let join = join(100);
    let started = Instant::now();
    client.stream.write_all(&RawClient::encode(1, 3, &join)).unwrap();
    assert!(
        client.closed_by_broker(),
        "connection left open past the request timeout"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let metrics = broker.handle().render_metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("chronik_request_timeouts_total{") && l.ends_with(" 1")),
        "{metrics}"
    );
    assert_eq!(
        RawClient::connect(broker.addr)
            .call(3, &ApiVersionsRequest::default())
            .error_code,
        0
    );
}

/// The shard's request byte budget (QUEUED_MAX_REQUEST_BYTES): several
/// connections pipelining large Produce requests are all answered, while
/// the bytes held for requests being read and processed never exceed the
/// budget; a single frame larger than the whole budget is still served
/// (alone); and every byte is given back once the answers are written.
#[test]
fn the_byte_budget_bounds_request_memory_and_everyone_is_answered() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    const BUDGET: usize = 3 << 20;
    let broker = TestBroker::start_with("byte-budget", 1, |c| c.queued_max_request_bytes = BUDGET);
    let produce = |value: &[u8]| {
        let batch = chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", value)]);
        ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("budget")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.into()))])])
    };
    let gauge = |name: &str| -> f64 {
        let metrics = broker.handle().render_metrics();
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{shard=\"0\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} series:\n{metrics}"))
    };
    // 4 connections x 6 pipelined requests of ~700 KB: 16 MiB offered at once.
    let request = produce(&vec![7u8; 700_000]);
    let addr = broker.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || {
                let mut client = RawClient::connect(addr);
                client
                    .stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut wire = Vec::new();
                for id in 1..=6 {
                    wire.extend_from_slice(&RawClient::encode(id, 9, &request));
                }
                client.stream.write_all(&wire).unwrap();
                (1..=6)
                    .map(|id| {
                        client.read_response::<ProduceRequest>(id, 9).responses[0].partition_responses[0]
                            .error_code
                    })
                    .collect::<Vec<i16>>()
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), vec![0; 6], "every request answered");
    }
    let peak = gauge("chronik_queued_request_bytes_peak");
    assert!(
        peak > 0.0 && peak <= BUDGET as f64,
        "request bytes held peaked at {peak}, budget {BUDGET}"
    );
    // One frame larger than the whole budget: served once nothing else is
    // held (MESSAGE_TOO_LARGE for the batch, but answered).
    let mut big = RawClient::connect(broker.addr);
    let response = big.call(9, &produce(&vec![1u8; 4 << 20]));
    assert_eq!(response.responses[0].partition_responses[0].error_code, 10);
    assert!(gauge("chronik_queued_request_bytes_peak") > BUDGET as f64);
    // The hold is dropped just after the answer's write completes, so the
    // client can read it a moment before the gauge falls: wait, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge("chronik_queued_request_bytes") != 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(gauge("chronik_queued_request_bytes"), 0.0, "all bytes given back");
    assert_eq!(broker.frame_errors(), 0);
}
