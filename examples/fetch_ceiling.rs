//! The client's fetch ceiling for issue 14's consume acceptance item: a
//! minimal Kafka endpoint that holds one partition of N records in memory
//! and answers Fetch by copying prepared batches, so a consumer against it
//! is limited by itself and loopback alone. `scripts/bench-sustained.sh`
//! runs the same rdkafka_performance consume against it and the broker.
//!
//! librdkafka's mock cluster (the produce ceiling) cannot serve this: its
//! partitions keep only the last 5 MB / 100,000 messages (hard-coded in
//! rdkafka_mock.c), so a consumer from the beginning of 6 GB finds almost
//! nothing there.
//!
//! cargo run --release --example fetch_ceiling -- --topic T --records N \
//!     [--size 1024] [--batch 1000] [--timeout-s 3600]
//!
//! Prints its bootstrap address on stdout, then serves (a thread per
//! connection; ApiVersions, Metadata, ListOffsets, Fetch v4-11) until stdin
//! closes or --timeout-s passes. Records are --size bytes, in batches of
//! --batch (one ~1 MB batch, as rdkafka_performance's producer with
//! batch.size=1000000 writes them), each copy's base offset rewritten (the
//! CRC does not cover it).

use bytes::{BufMut, Bytes, BytesMut};
use chronik_ingest::log::batch::build_batch;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Versions answered: old enough to need no topic ids or fetch sessions.
/// Produce is advertised, never served: librdkafka enables reading v2
/// record batches (its MsgVer2 feature) only for brokers that list it.
const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 7),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::Metadata, 1, 8),
    (ApiKey::ApiVersions, 0, 3),
];

struct Args {
    topic: String,
    records: i64,
    size: usize,
    batch: i64,
    timeout: Duration,
}

/// The partition: `full` batches of `per_batch` records, then `tail`.
struct Log {
    topic: String,
    records: i64,
    per_batch: i64,
    full: Vec<u8>,
    tail: Vec<u8>,
    addr: SocketAddr,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: fetch_ceiling --topic T --records N [--size BYTES] [--batch RECORDS] [--timeout-s SECONDS]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        topic: String::new(),
        records: 0,
        size: 1024,
        batch: 1000,
        timeout: Duration::from_secs(3600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("{flag}: not a number: {value}")))
        };
        match flag.as_str() {
            "--topic" => args.topic = value.clone(),
            "--records" => args.records = number() as i64,
            "--size" => args.size = number() as usize,
            "--batch" => args.batch = number().max(1) as i64,
            "--timeout-s" => args.timeout = Duration::from_secs(number()),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if args.topic.is_empty() || args.records <= 0 {
        usage("--topic and --records are required");
    }
    args
}

fn main() {
    let args = parse_args();
    if let Err(e) = run(&args) {
        eprintln!("fetch_ceiling: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("local address: {e}"))?;
    let value = vec![b'x'; args.size];
    let batch_of = |n: i64| {
        let records: Vec<(&[u8], &[u8])> = (0..n).map(|_| (&b""[..], &value[..])).collect();
        build_batch(0, 0, &records)
    };
    let log = Arc::new(Log {
        topic: args.topic.clone(),
        records: args.records,
        per_batch: args.batch,
        full: batch_of(args.batch),
        tail: batch_of(args.records % args.batch),
        addr,
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                if let Err(e) = serve(stream, &log) {
                    eprintln!("fetch_ceiling: connection: {e}");
                }
            });
        }
    });
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{addr}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("stdout: {e}"))?;

    // Serve until the script closes our stdin (or goes away), bounded.
    let (done, closed) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = done.send(());
    });
    let _ = closed.recv_timeout(args.timeout);
    Ok(())
}

type Failure = Box<dyn std::error::Error>;

fn serve(mut stream: TcpStream, log: &Log) -> Result<(), Failure> {
    stream.set_nodelay(true)?;
    loop {
        let mut size = [0u8; 4];
        if stream.read_exact(&mut size).is_err() {
            return Ok(()); // the client hung up
        }
        let mut frame = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
        stream.read_exact(&mut frame)?;
        let mut frame = Bytes::from(frame);
        if frame.len() < 4 {
            return Err("short frame".into());
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let out = match ApiKey::try_from(key) {
            Ok(ApiKey::ApiVersions) => {
                let id = header::<ApiVersionsRequest>(&mut frame, version)?;
                // Unsupported versions get v0 with the error, as Kafka does.
                let (error, answer) = if version > 3 { (35, 0) } else { (0, version) };
                let body = ApiVersionsResponse::default()
                    .with_error_code(error)
                    .with_api_keys(
                        VERSIONS
                            .iter()
                            .map(|(k, min, max)| {
                                ApiVersion::default()
                                    .with_api_key(*k as i16)
                                    .with_min_version(*min)
                                    .with_max_version(*max)
                            })
                            .collect(),
                    );
                encode(id, answer, &body)?
            }
            Ok(ApiKey::Metadata) => {
                let id = header::<MetadataRequest>(&mut frame, version)?;
                encode(id, version, &metadata(log))?
            }
            Ok(ApiKey::ListOffsets) => {
                let id = header::<ListOffsetsRequest>(&mut frame, version)?;
                let request = ListOffsetsRequest::decode(&mut frame, version)?;
                encode(id, version, &list_offsets(log, &request))?
            }
            Ok(ApiKey::Fetch) => {
                let id = header::<FetchRequest>(&mut frame, version)?;
                let request = FetchRequest::decode(&mut frame, version)?;
                encode(id, version, &fetch(log, &request))?
            }
            _ => return Err(format!("unsupported api key {key}").into()),
        };
        stream.write_all(&out)?;
    }
}

/// Decodes the request header; the correlation id.
fn header<R: HeaderVersion>(frame: &mut Bytes, version: i16) -> Result<i32, Failure> {
    Ok(RequestHeader::decode(frame, R::header_version(version))?.correlation_id)
}

fn encode<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Bytes, Failure> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, R::header_version(version))?;
    body.encode(&mut buf, version)?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

fn metadata(log: &Log) -> MetadataResponse {
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(0))
            .with_host(StrBytes::from_string(log.addr.ip().to_string()))
            .with_port(i32::from(log.addr.port()))])
        .with_controller_id(BrokerId(0))
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(log.topic.clone()))))
            .with_partitions(vec![MetadataResponsePartition::default()
                .with_partition_index(0)
                .with_leader_id(BrokerId(0))
                .with_leader_epoch(-1)
                .with_replica_nodes(vec![BrokerId(0)])
                .with_isr_nodes(vec![BrokerId(0)])])])
}

fn list_offsets(log: &Log, request: &ListOffsetsRequest) -> ListOffsetsResponse {
    ListOffsetsResponse::default().with_topics(
        request
            .topics
            .iter()
            .map(|t| {
                ListOffsetsTopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let known = t.name.0.as_str() == log.topic && p.partition_index == 0;
                                // -2 earliest, anything else: the end.
                                let offset = if p.timestamp == -2 { 0 } else { log.records };
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(if known { 0 } else { 3 })
                                    .with_timestamp(-1)
                                    .with_offset(if known { offset } else { -1 })
                                    .with_leader_epoch(-1)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn fetch(log: &Log, request: &FetchRequest) -> FetchResponse {
    let mut budget = request.max_bytes.max(1) as usize;
    FetchResponse::default().with_responses(
        request
            .topics
            .iter()
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let known = t.topic.0.as_str() == log.topic && p.partition == 0;
                                let limit = (p.partition_max_bytes.max(1) as usize).min(budget);
                                let records = if known {
                                    read(log, p.fetch_offset, limit)
                                } else {
                                    Bytes::new()
                                };
                                budget = budget.saturating_sub(records.len());
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(if known { 0 } else { 3 })
                                    .with_high_watermark(log.records)
                                    .with_last_stable_offset(log.records)
                                    .with_log_start_offset(0)
                                    .with_aborted_transactions(Some(vec![]))
                                    .with_preferred_read_replica(BrokerId(-1))
                                    .with_records(Some(records))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// Whole batches from the one holding `offset`, at least one, up to
/// `limit` bytes (Kafka's rule since KIP-74).
fn read(log: &Log, offset: i64, limit: usize) -> Bytes {
    let mut out = BytesMut::new();
    let mut base = offset.max(0) / log.per_batch * log.per_batch;
    while base < log.records {
        let batch = if base + log.per_batch <= log.records {
            &log.full
        } else {
            &log.tail
        };
        if !out.is_empty() && out.len() + batch.len() > limit {
            break;
        }
        let start = out.len();
        out.extend_from_slice(batch);
        out[start..start + 8].copy_from_slice(&base.to_be_bytes());
        base += log.per_batch;
    }
    out.freeze()
}
