//! Shared by the integration tests: an in-process broker on an ephemeral
//! port with a scratch data directory, and a minimal raw Kafka client built
//! on the `kafka-protocol` crate's client side (independent of the broker's
//! own framing code).
#![allow(dead_code)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use chronik_ingest::{IngestServer, ServerConfig, ServerHandle};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running in-process broker; stopped and its data removed on drop.
pub struct TestBroker {
    handle: Option<ServerHandle>,
    pub dir: PathBuf,
    pub addr: SocketAddr,
}

pub fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "chronik-test-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl TestBroker {
    pub fn start(name: &str, shards: usize) -> TestBroker {
        Self::start_with(name, shards, |_| {})
    }

    pub fn start_with(name: &str, shards: usize, tweak: impl FnOnce(&mut ServerConfig)) -> TestBroker {
        let dir = scratch_dir(name);
        let mut config = ServerConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            shards: NonZeroUsize::new(shards),
            shutdown_timeout: Duration::from_secs(5),
            metrics_address: None,
            storage_path: dir.clone(),
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let handle = IngestServer::new(config, &dir).start().expect("broker starts");
        let addr = handle.local_addr();
        TestBroker {
            handle: Some(handle),
            dir,
            addr,
        }
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("running")
    }

    pub fn frame_errors(&self) -> u64 {
        self.handle().shard_stats().iter().map(|s| s.frame_errors).sum()
    }

    /// Waits (bounded) until `check` holds for the shard stats.
    pub fn wait_for(&self, what: &str, check: impl Fn(&[chronik_ingest::ShardSnapshot]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.handle().shard_stats();
            if check(&stats) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop();
            let _ = handle.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking connection that speaks raw Kafka frames.
pub struct RawClient {
    pub stream: TcpStream,
    next_correlation: i32,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            next_correlation: 1,
        }
    }

    /// Encodes a whole request frame for `R` at `version`.
    pub fn encode<R: Request>(correlation_id: i32, version: i16, body: &R) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("chronik-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, R::header_version(version)).unwrap();
        body.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        buf.to_vec()
    }

    /// Sends one request and reads its response.
    pub fn call<R: Request>(&mut self, version: i16, body: &R) -> R::Response {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        self.stream
            .write_all(&Self::encode(correlation_id, version, body))
            .unwrap();
        self.read_response::<R>(correlation_id, version)
    }

    pub fn read_response<R: Request>(&mut self, correlation_id: i32, version: i16) -> R::Response {
        let mut frame = self.read_frame().expect("a response frame");
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
        let body = R::Response::decode(&mut frame, version).unwrap();
        assert!(
            frame.is_empty(),
            "{} bytes left after the response body",
            frame.len()
        );
        body
    }

    /// One response frame, or `None` if the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// True if the broker closes the connection within 10 s.
    pub fn closed_by_broker(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// Reads a big-endian i32 off the front (for hand-built frames).
pub fn take_i32(bytes: &mut Bytes) -> i32 {
    bytes.get_i32()
}
