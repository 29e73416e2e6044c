//! The metrics endpoint as a scraper sees it: every seed metric with one
//! series per shard, counters that move with real client traffic, latency
//! histograms for Produce and Fetch, /health and /ready, and /ready held at
//! 503 while a large log is being recovered.

mod common;

use common::{consume, consumer_from_start, produce_all, scratch_dir, BrokerProcess, RawClient, TestBroker};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The metric families the seed names (counters appear with `_total`).
const SEED_METRICS: &[&str] = &[
    "chronik_connections_total",
    "chronik_connections_active",
    "chronik_connections_rejected",
    "chronik_requests_total",
    "chronik_request_errors",
    "chronik_request_timeouts",
    "chronik_request_duration",
    "chronik_bytes_received",
    "chronik_bytes_sent",
    "chronik_pending_requests",
    "chronik_backpressure_events",
    "chronik_frame_errors",
    "chronik_tls_handshake_failures",
];

/// GET `path`; returns (status, headers, body).
fn get(addr: SocketAddr, path: &str, accept: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: test\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn has_series(exposition: &str, name: &str, shard: &str) -> bool {
    let label = format!("shard=\"{shard}\"");
    exposition
        .lines()
        .any(|l| l.starts_with(name) && l.contains(&label))
}

fn assert_series_per_shard(exposition: &str, name: &str) {
    for shard in ["0", "1"] {
        assert!(
            has_series(exposition, name, shard),
            "{name} has no series for shard {shard}"
        );
    }
}

/// Sum of the samples whose line starts with `name{` and contains every
/// `label="value"` given.
fn sum(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn every_seed_metric_has_a_series_per_shard_and_moves_with_traffic() {
    let broker = TestBroker::start_with("metrics", 2, |c| {
        c.metrics_address = Some("127.0.0.1:0".parse().unwrap())
    });
    let metrics = broker.handle().metrics_addr().expect("metrics served");
    let openmetrics = "application/openmetrics-text; version=1.0.0";
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(metrics, "/ready", "*/*").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }

    let (status, head, before) = get(metrics, "/metrics", openmetrics);
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(
        before.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    // Series that exist from the start, one per shard.
    for name in [
        "chronik_connections_total",
        "chronik_connections_active",
        "chronik_connections_rejected",
        "chronik_frame_errors",
    ] {
        assert_series_per_shard(&before, name);
    }
    assert_eq!(get(metrics, "/health", "*/*").0, 200);
    assert_eq!(get(metrics, "/ready", "*/*").0, 200);
    assert_eq!(get(metrics, "/nope", "*/*").0, 404);

    for r in produce_all(
        broker.addr,
        &[("linger.ms", "5")],
        "observed",
        (0..1000)
            .map(|i| (None, format!("v{i}").into_bytes(), vec![]))
            .collect(),
    ) {
        r.expect("acked");
    }
    let consumer = consumer_from_start(broker.addr, "observed", 1);
    assert_eq!(consume(&consumer, 1000, Duration::from_secs(30)).len(), 1000);
    drop(consumer);

    // Per-API series appear with the first request of that API on a shard:
    // make sure both shards have answered one, and one with an error.
    for _ in 0..200 {
        let scrape = get(metrics, "/metrics", openmetrics).2;
        let labelled = [
            "chronik_requests_total",
            "chronik_request_errors",
            "chronik_request_duration",
        ];
        if labelled
            .iter()
            .all(|name| ["0", "1"].iter().all(|shard| has_series(&scrape, name, shard)))
        {
            break;
        }
        let mut client = RawClient::connect(broker.addr);
        client
            .stream
            .write_all(&[0, 0, 0, 10, 0, 18, 0, 99, 0, 0, 0, 1, 0xff, 0xff])
            .unwrap();
        let _ = client.read_frame();
        let _ = client.call(3, &kafka_protocol::messages::ApiVersionsRequest::default());
    }
    let (_, _, after) = get(metrics, "/metrics", openmetrics);
    for name in SEED_METRICS {
        assert_series_per_shard(&after, name);
    }
    assert!(sum(&after, "chronik_requests_total", &["api=\"Produce\""]) > 0.0);
    assert!(sum(&after, "chronik_requests_total", &["api=\"Fetch\""]) > 0.0);
    assert_eq!(
        sum(&after, "chronik_produce_records_total", &["topic=\"observed\""]),
        1000.0
    );
    assert_eq!(
        sum(&after, "chronik_fetch_records_total", &["topic=\"observed\""]),
        1000.0
    );
    assert!(sum(&after, "chronik_connections_total", &[]) > sum(&before, "chronik_connections_total", &[]));
    assert!(
        sum(&after, "chronik_bytes_received_total", &[]) > sum(&before, "chronik_bytes_received_total", &[])
    );
    assert!(sum(&after, "chronik_bytes_sent_total", &[]) > sum(&before, "chronik_bytes_sent_total", &[]));
    for api in ["Produce", "Fetch"] {
        let bucket = format!("api=\"{api}\"");
        assert!(
            after
                .lines()
                .any(|l| l.starts_with("chronik_request_duration_seconds_bucket{")
                    && l.contains(&bucket)
                    && l.contains("le=\"+Inf\"")),
            "no latency histogram for {api}"
        );
    }
    // The classic text format, for tools that do not ask for OpenMetrics.
    let (_, head, text) = get(metrics, "/metrics", "text/plain");
    assert!(head.to_ascii_lowercase().contains("text/plain; version=0.0.4"));
    assert!(text.contains("# HELP chronik_requests_total"));
}

/// Writes a partition log of `bytes` without a clean-shutdown marker, so the
/// next start must re-read and CRC-check all of it.
fn write_unclean_log(dir: &std::path::Path, bytes: usize) {
    let partition = dir.join("big-0");
    std::fs::create_dir_all(&partition).unwrap();
    let value = vec![b'x'; 900];
    let batch = chronik_ingest::log::batch::build_batch(0, 1, &[(b"k", &value[..])]);
    let count = bytes / batch.len();
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(partition.join("00000000000000000000.log")).unwrap());
    let mut copy = batch.clone();
    for offset in 0..count as i64 {
        chronik_ingest::log::batch::assign_offset(&mut copy, offset, 0);
        file.write_all(&copy).unwrap();
    }
    file.flush().unwrap();
    let catalog = format!(
        r#"{{"topics":[{{"name":"big","id":"{}","partitions":1,"configs":{{}}}}]}}"#,
        uuid::Uuid::new_v4()
    );
    std::fs::write(dir.join("topics.json"), catalog).unwrap();
}

#[test]
fn ready_is_503_until_a_large_log_is_recovered() {
    let dir = scratch_dir("ready");
    std::fs::create_dir_all(&dir).unwrap();
    write_unclean_log(&dir, 768 << 20);
    let mut broker = BrokerProcess::start_until(
        &dir,
        &[("METRICS_ADDRESS", "127.0.0.1:0"), ("SHARDS", "1")],
        "metrics listening",
    );
    let line = broker.last_line.clone();
    let metrics: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("metrics="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"));
    let started = Instant::now();
    let mut saw_503 = 0;
    let ready_after = loop {
        match get(metrics, "/ready", "*/*").0 {
            200 => break started.elapsed(),
            503 => saw_503 += 1,
            other => panic!("/ready answered {other}"),
        }
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(saw_503 > 0, "/ready was never 503 while recovering");
    assert_eq!(get(metrics, "/health", "*/*").0, 200);
    eprintln!("/ready: 503 x{saw_503}, then 200 after {ready_after:?} (768 MiB unclean log)");
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `label` value -> sample, for every series of `name` in `exposition`.
fn by_label(exposition: &str, name: &str, label: &str) -> std::collections::HashMap<String, f64> {
    let key = format!("{label}=\"");
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| {
            let value = l.split(&key).nth(1)?.split('"').next()?.to_string();
            Some((value, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// Scrapes until `check` holds (bounded: the gauges refresh every second).
fn scrape_until(metrics: SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = get(metrics, "/metrics", "text/plain").2;
        if check(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "{what}: never happened\n{scrape}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Past the per-shard cap of 1,000 labelled groups: the labelled set is the
/// first thousand and stays put while more groups come, the rest is summed
/// under `_other`; a deleted topic's and a deleted group's series go away.
#[test]
fn labelled_series_are_stable_other_sums_and_deleted_ones_go() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::{
        DeleteGroupsRequest, DeleteTopicsRequest, GroupId, JoinGroupRequest, LeaveGroupRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    /// `MAX_LABELLED` in src/metrics/mod.rs.
    const MAX_LABELLED: usize = 1000;
    let s = |text: &str| StrBytes::from_string(text.to_string());
    let broker = TestBroker::start_with("metrics-cap", 1, |c| {
        c.metrics_address = Some("127.0.0.1:0".parse().unwrap());
        c.group_initial_rebalance_delay_ms = 0;
    });
    let metrics = broker.handle().metrics_addr().expect("metrics served");

    // A deleted topic's series, counters and gauges, go.
    for topic in ["doomed", "kept"] {
        for r in produce_all(broker.addr, &[], topic, vec![(None, b"v".to_vec(), vec![])]) {
            r.expect("acked");
        }
    }
    scrape_until(metrics, "log gauges of both topics", |m| {
        let ends = by_label(m, "chronik_log_end_offset", "topic");
        ends.contains_key("doomed") && ends.contains_key("kept")
    });
    let mut client = RawClient::connect(broker.addr);
    let deleted = client.call(
        4,
        &DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s("doomed"))]),
    );
    assert_eq!(deleted.responses[0].error_code, 0);
    scrape_until(metrics, "the deleted topic's series gone", |m| {
        !m.contains("topic=\"doomed\"")
    });
    std::thread::sleep(Duration::from_millis(1500));
    let later = get(metrics, "/metrics", "text/plain").2;
    assert!(!later.contains("topic=\"doomed\""), "came back: {later}");
    assert!(later.contains("topic=\"kept\""));

    // One member in each of MAX_LABELLED + 5 groups (v3: no member-id round trip).
    let join = |client: &mut RawClient, group: &str| {
        let joined = client.call(
            3,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_session_timeout_ms(300_000)
                .with_rebalance_timeout_ms(300_000)
                .with_member_id(s(""))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(s("range"))]),
        );
        assert_eq!(joined.error_code, 0, "JoinGroup {group}");
        joined.member_id
    };
    let mut members = Vec::new();
    for i in 0..MAX_LABELLED + 5 {
        members.push(join(&mut client, &format!("g{i:05}")));
    }
    let count = |n: usize| move |m: &str| sum(m, "chronik_consumer_groups", &[]) == n as f64;
    let labelled = |series: &std::collections::HashMap<String, f64>| {
        let mut names: Vec<String> = series.keys().filter(|g| *g != "_other").cloned().collect();
        names.sort();
        names
    };
    // A scrape may fall inside an update of the members series: wait for
    // the whole labelled set, then check it is exactly the cap.
    let first = scrape_until(metrics, "1005 groups counted, all labelled", |m| {
        count(MAX_LABELLED + 5)(m)
            && by_label(m, "chronik_consumer_group_members", "group").get("_other") == Some(&5.0)
            && labelled(&by_label(m, "chronik_consumer_group_members", "group")).len() >= MAX_LABELLED
    });
    let first = by_label(&first, "chronik_consumer_group_members", "group");
    assert_eq!(labelled(&first).len(), MAX_LABELLED);
    assert_eq!(
        first["_other"], 5.0,
        "_other sums the members of the other groups"
    );

    // A new group goes to `_other`; the labelled set does not move.
    join(&mut client, "late-comer");
    // The group count and the members gauge are separate series: wait for
    // both to take the new group in.
    let second = scrape_until(metrics, "1006 groups counted, 6 members in _other", |m| {
        count(MAX_LABELLED + 6)(m)
            && by_label(m, "chronik_consumer_group_members", "group").get("_other") == Some(&6.0)
    });
    let second = by_label(&second, "chronik_consumer_group_members", "group");
    assert_eq!(labelled(&second), labelled(&first), "the labelled set moved");
    assert_eq!(second["_other"], 6.0);

    // A deleted group's series go.
    let victim = labelled(&first)[0].clone();
    let index: usize = victim[1..].parse().unwrap();
    let left = client.call(
        0,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(s(&victim)))
            .with_member_id(members[index].clone()),
    );
    assert_eq!(left.error_code, 0);
    let deleted = client.call(
        0,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&victim))]),
    );
    // 69 GROUP_ID_NOT_FOUND: the coordinator already forgot the group
    // (empty, no offsets) between the leave and the delete; gone either way.
    assert!(
        matches!(deleted.results[0].error_code, 0 | 69),
        "{}",
        deleted.results[0].error_code
    );
    // The count and the members series are separate: a scrape may fall
    // between their updates, so wait for both.
    let third = scrape_until(metrics, "deleted group uncounted and its series gone", |m| {
        count(MAX_LABELLED + 5)(m)
            && !by_label(m, "chronik_consumer_group_members", "group").contains_key(&victim)
    });
    let third = by_label(&third, "chronik_consumer_group_members", "group");
    assert!(!third.contains_key(&victim), "{victim} still has a series");
    assert_eq!(
        labelled(&third).len(),
        MAX_LABELLED,
        "its label went to another group"
    );
    assert_eq!(third["_other"], 5.0);
}
