//! TLS helpers for the tests: certificates from `scripts/gen-certs.sh`, a
//! small blocking rustls client speaking raw Kafka frames, `openssl
//! s_client`, and the handshake-failure counter as /metrics shows it.

use super::RawClient;
use bytes::Bytes;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `scripts/gen-certs.sh dir` with `env`; returns `dir`.
pub fn gen_certs(dir: &Path, env: &[(&str, &str)]) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen-certs.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(dir)
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/gen-certs.sh (needs bash and openssl)");
    assert!(
        output.status.success(),
        "gen-certs.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir.to_path_buf()
}

/// A TcpStream whose reads and writes retry EINTR: in-process brokers'
/// executors signal this process's threads.
struct Retrying(TcpStream);

impl Read for Retrying {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for Retrying {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A blocking TLS connection that speaks raw Kafka frames.
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, Retrying>,
    next_correlation: i32,
}

impl TlsClient {
    /// Connects and completes the handshake, trusting `certs/ca.crt`;
    /// presents `certs/<client>.crt` when `client` is given.
    pub fn connect(addr: SocketAddr, certs: &Path, client: Option<&Path>) -> std::io::Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(certs.join("ca.crt")).expect("ca.crt") {
            roots.add(ca.expect("CA PEM")).expect("CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match client {
            Some(dir) => {
                let chain = CertificateDer::pem_file_iter(dir.join("client.crt"))
                    .expect("client.crt")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client PEM");
                let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).expect("client.key");
                builder.with_client_auth_cert(chain, key).expect("client cert")
            }
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from("localhost").expect("name");
        let connection =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut stream = rustls::StreamOwned::new(connection, Retrying(tcp));
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient {
            stream,
            next_correlation: 1,
        })
    }

    /// The common name of the certificate the broker presented.
    pub fn server_common_name(&self) -> String {
        let leaf = self
            .stream
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("server certificate");
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("x509");
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        cn
    }

    /// One request/response round trip over this TLS session.
    pub fn call<R: Request>(&mut self, version: i16, body: &R) -> std::io::Result<R::Response> {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        self.stream
            .write_all(&RawClient::encode(correlation_id, version, body))?;
        self.stream.flush()?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body)?;
        let mut frame = Bytes::from(body);
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
            .map_err(std::io::Error::other)?;
        assert_eq!(header.correlation_id, correlation_id);
        R::Response::decode(&mut frame, version).map_err(std::io::Error::other)
    }

    /// One ApiVersions v3 round trip over this TLS session.
    pub fn api_versions(&mut self) -> std::io::Result<ApiVersionsResponse> {
        self.call(3, &ApiVersionsRequest::default())
    }
}

/// Runs `openssl s_client` against `addr` with `args` (stdin closed, so it
/// ends after the handshake); returns whether it succeeded and its output.
pub fn s_client(addr: SocketAddr, certs: &Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(certs.join("ca.crt"))
        .args(["-servername", "localhost"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (install openssl)");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("openssl s_client did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut output = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut output);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut output);
    }
    (status.success(), output)
}

/// `chronik_tls_handshake_failures_total{reason=...}` summed over shards,
/// from a metrics exposition.
pub fn handshake_failures(exposition: &str, reason: &str) -> u64 {
    let label = format!("reason=\"{reason}\"");
    exposition
        .lines()
        .filter(|l| l.starts_with("chronik_tls_handshake_failures_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
