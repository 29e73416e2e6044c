//! Front-door costs, in process:
//! - `frame_decode`: a request frame through the broker's own framing and
//!   header code and the body decoder (no I/O);
//! - `round_trip`: ApiVersions over loopback TCP against an in-process broker
//!   with one shard, one request at a time and 64 pipelined.

use bytes::{BufMut, BytesMut};
use chronik_ingest::protocol::frame::{FrameBuffer, Incoming};
use chronik_ingest::protocol::header::{decode_header, peek_ids};
use chronik_ingest::{IngestServer, ServerConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::num::NonZeroUsize;

const VERSION: i16 = 3;

fn api_versions_frame(correlation_id: i32) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("criterion"))
        .with_client_software_version(StrBytes::from_static_str("0.5"));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, ApiVersionsRequest::header_version(VERSION))
        .expect("header encodes");
    body.encode(&mut buf, VERSION).expect("body encodes");
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

fn frame_decode(c: &mut Criterion) {
    let wire = api_versions_frame(1);
    let mut group = c.benchmark_group("frame_decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("api_versions_v3", |b| {
        let mut reader = FrameBuffer::new(64 * 1024, 100 << 20);
        b.iter(|| {
            // As a connection reads: from the socket into the frame buffer.
            let mut socket = Incoming {
                reader: futures::io::Cursor::new(&wire[..]),
                socket: None,
            };
            futures::executor::block_on(reader.read_from(&mut socket)).expect("read");
            let frame = reader.next_frame().expect("valid").expect("whole");
            let ids = peek_ids(&frame).expect("ids");
            let (header, mut body) =
                decode_header(ApiKey::ApiVersions, ids.api_version, frame).expect("header");
            let request = ApiVersionsRequest::decode(&mut body, ids.api_version).expect("body");
            black_box((header, request))
        })
    });
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("chronik-bench-{}", std::process::id()));
    let config = ServerConfig {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        shards: NonZeroUsize::new(1),
        metrics_address: None,
        storage_path: dir.clone(),
        ..ServerConfig::default()
    };
    let server = IngestServer::new(config, &dir).start().expect("broker starts");
    let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let one = api_versions_frame(7);
    let pipelined: Vec<u8> = (0..64).flat_map(api_versions_frame).collect();
    let mut response = vec![0u8; 64 * 1024];
    let mut read_responses = |stream: &mut TcpStream, count: usize| {
        for _ in 0..count {
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).expect("size");
            let size = i32::from_be_bytes(size) as usize;
            stream.read_exact(&mut response[..size]).expect("body");
        }
    };

    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("api_versions_v3", |b| {
        b.iter(|| {
            stream.write_all(&one).expect("write");
            read_responses(&mut stream, 1);
        })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("api_versions_v3_pipelined_64", |b| {
        b.iter(|| {
            stream.write_all(&pipelined).expect("write");
            read_responses(&mut stream, 64);
        })
    });
    group.finish();
    drop(stream);
    server.stop();
    let _ = server.join();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, frame_decode, round_trip);
criterion_main!(benches);
