//! TLS listeners against independent clients: librdkafka (`rdkafka` with
//! `security.protocol=ssl`), `openssl s_client`, and a rustls client
//! speaking raw Kafka frames. Certificates come from scripts/gen-certs.sh.

mod common;

use chronik_ingest::{
    AdvertisedListener, ListenerConfig, SecurityProtocol, ServerConfig, TlsConfig, TlsVersion,
};
use common::tls::{gen_certs, handshake_failures, s_client, TlsClient};
use common::{consume, consumer_from_start_with, produce_all, scratch_dir, Outgoing, RawClient, TestBroker};
use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest, MetadataResponse};
use rdkafka::producer::Producer as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Certificates in a scratch directory, removed on drop.
struct Certs(PathBuf);

impl Certs {
    fn new(name: &str, env: &[(&str, &str)]) -> Certs {
        let dir = scratch_dir(name);
        Certs(gen_certs(&dir, env))
    }
    fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls_settings(certs: &Path) -> TlsConfig {
    TlsConfig {
        cert_path: certs.join("server.crt"),
        key_path: certs.join("server.key"),
        ..TlsConfig::default()
    }
}

fn with_tls(settings: TlsConfig) -> impl FnOnce(&mut ServerConfig) {
    move |c| c.tls_config = Some(settings)
}

/// librdkafka settings for the SSL listener, trusting the CA at `ca`.
fn ssl_client(ca: &str) -> Vec<(&str, &str)> {
    vec![("security.protocol", "ssl"), ("ssl.ca.location", ca)]
}

/// Waits (bounded) until the broker has counted `at_least` handshake
/// failures for `reason`.
fn wait_for_failures(broker: &TestBroker, reason: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = handshake_failures(&broker.handle().render_metrics(), reason);
        if seen >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {at_least} handshake failure(s) for {reason}, saw {seen}: {}",
            broker
                .handle()
                .render_metrics()
                .lines()
                .filter(|l| l.starts_with("chronik_tls"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn records(count: usize, size: usize) -> Vec<Outgoing> {
    (0..count)
        .map(|i| {
            (
                Some(format!("k{i}").into_bytes()),
                vec![(i % 251) as u8; size],
                Vec::new(),
            )
        })
        .collect()
}

#[test]
fn librdkafka_produces_and_consumes_over_tls() {
    let certs = Certs::new("tls-rdkafka-certs", &[]);
    let broker = TestBroker::start_with("tls-rdkafka", 2, with_tls(tls_settings(&certs.0)));
    let ca = certs.path("ca.crt");
    let ssl = ssl_client(&ca);

    let sent = records(2_000, 1024);
    let delivered = produce_all(broker.addr, &ssl, "over-tls", sent.clone());
    assert!(
        delivered.iter().all(Result::is_ok),
        "{:?}",
        delivered.iter().find(|r| r.is_err())
    );

    let consumer = consumer_from_start_with(broker.addr, "over-tls", 1, &ssl);
    let got = consume(&consumer, sent.len(), Duration::from_secs(30));
    assert_eq!(got.len(), sent.len());
    for (i, (_, offset, key, value, _)) in got.iter().enumerate() {
        assert_eq!(*offset, i as i64);
        assert_eq!(key, sent[i].0.as_ref().unwrap());
        assert_eq!(value, &sent[i].1);
    }
    assert_eq!(handshake_failures(&broker.handle().render_metrics(), "other"), 0);
}

#[test]
fn client_certificates_are_required_and_verified() {
    let certs = Certs::new("tls-mtls-certs", &[]);
    let settings = TlsConfig {
        ca_path: Some(certs.0.join("ca.crt")),
        require_client_cert: true,
        ..tls_settings(&certs.0)
    };
    let broker = TestBroker::start_with("tls-mtls", 2, with_tls(settings));

    // A session with the right certificate stays open throughout: no
    // failure below may disturb it.
    let mut healthy = TlsClient::connect(broker.addr, &certs.0, Some(&certs.0)).expect("right certificate");
    healthy
        .api_versions()
        .expect("api versions with the right certificate");

    // No certificate: TLS 1.3 lets the client finish first, so the refusal
    // arrives as an alert on the first read.
    let refused = TlsClient::connect(broker.addr, &certs.0, None).and_then(|mut c| c.api_versions());
    assert!(refused.is_err(), "a client without a certificate was served");
    wait_for_failures(&broker, "no_client_cert", 1);

    // A certificate from another CA.
    let stranger = Certs::new("tls-other-ca", &[("CA_CN", "Someone else's CA")]);
    let refused =
        TlsClient::connect(broker.addr, &certs.0, Some(&stranger.0)).and_then(|mut c| c.api_versions());
    assert!(refused.is_err(), "a certificate from another CA was accepted");
    wait_for_failures(&broker, "unknown_ca", 1);

    // An expired certificate from the right CA.
    let expired_dir = scratch_dir("tls-expired");
    std::fs::create_dir_all(&expired_dir).unwrap();
    for file in ["ca.crt", "ca.key"] {
        std::fs::copy(certs.0.join(file), expired_dir.join(file)).unwrap();
    }
    let expired = Certs(gen_certs(&expired_dir, &[("CLIENT_DAYS", "-1")]));
    let refused =
        TlsClient::connect(broker.addr, &certs.0, Some(&expired.0)).and_then(|mut c| c.api_versions());
    assert!(refused.is_err(), "an expired certificate was accepted");
    wait_for_failures(&broker, "cert_expired", 1);

    // librdkafka without a certificate cannot even read metadata...
    let ca = certs.path("ca.crt");
    let (producer, _) = common::producer(broker.addr, &ssl_client(&ca));
    assert!(producer
        .client()
        .fetch_metadata(None, Duration::from_secs(3))
        .is_err());
    drop(producer);

    // ...and with its certificate produces and consumes.
    let (cert, key) = (certs.path("client.crt"), certs.path("client.key"));
    let mut mtls = ssl_client(&ca);
    mtls.extend([
        ("ssl.certificate.location", cert.as_str()),
        ("ssl.key.location", key.as_str()),
    ]);
    let delivered = produce_all(broker.addr, &mtls, "mtls", records(100, 100));
    assert!(delivered.iter().all(Result::is_ok));
    let consumer = consumer_from_start_with(broker.addr, "mtls", 1, &mtls);
    assert_eq!(consume(&consumer, 100, Duration::from_secs(30)).len(), 100);

    healthy
        .api_versions()
        .expect("the first session survived every refusal");
}

#[test]
fn only_the_configured_versions_and_suites_are_negotiated() {
    let certs = Certs::new("tls-suites-certs", &[]);
    let tls13_only = TlsConfig {
        versions: vec![TlsVersion::Tls13],
        cipher_suites: vec!["TLS_CHACHA20_POLY1305_SHA256".into()],
        ..tls_settings(&certs.0)
    };
    let broker = TestBroker::start_with("tls-13-only", 1, with_tls(tls13_only));
    let (ok, out) = s_client(broker.addr, &certs.0, &["-tls1_2"]);
    assert!(!ok, "TLS 1.2 was accepted with only 1.3 configured:\n{out}");
    wait_for_failures(&broker, "protocol_version", 1);
    // openssl offers AES-256 first; the broker's order decides.
    let (ok, out) = s_client(broker.addr, &certs.0, &["-tls1_3"]);
    assert!(ok, "{out}");
    assert!(out.contains("TLS_CHACHA20_POLY1305_SHA256"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    drop(broker);

    let tls12_only = TlsConfig {
        versions: vec![TlsVersion::Tls12],
        cipher_suites: vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()],
        ..tls_settings(&certs.0)
    };
    let broker = TestBroker::start_with("tls-12-only", 1, with_tls(tls12_only));
    let (ok, out) = s_client(broker.addr, &certs.0, &["-tls1_2"]);
    assert!(ok, "{out}");
    assert!(out.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{out}");
    let (ok, out) = s_client(broker.addr, &certs.0, &["-tls1_3"]);
    assert!(!ok, "TLS 1.3 was accepted with only 1.2 configured:\n{out}");
}

/// A PLAINTEXT and an SSL listener, each on its own ephemeral port.
fn plaintext_and_ssl() -> Vec<ListenerConfig> {
    [SecurityProtocol::Plaintext, SecurityProtocol::Ssl]
        .into_iter()
        .map(|security| ListenerConfig {
            name: security.name().into(),
            addr: "127.0.0.1:0".parse().unwrap(),
        })
        .collect()
}

fn metadata_broker(response: &MetadataResponse) -> (String, u16) {
    let broker = &response.brokers[0];
    (broker.host.to_string(), broker.port as u16)
}

#[test]
fn plaintext_and_tls_listeners_each_advertise_themselves() {
    let certs = Certs::new("tls-listeners-certs", &[]);
    let settings = tls_settings(&certs.0);
    let broker = TestBroker::start_with("tls-listeners", 2, |c| {
        c.tls_config = Some(settings);
        c.listeners = plaintext_and_ssl();
    });
    let plain = broker
        .handle()
        .listener_addr(SecurityProtocol::Plaintext)
        .unwrap();
    let ssl = broker.handle().listener_addr(SecurityProtocol::Ssl).unwrap();
    assert_ne!(plain, ssl);

    // librdkafka on each listener sees the broker at that listener.
    let ca = certs.path("ca.crt");
    let metadata_via = |addr: SocketAddr, extra: &[(&str, &str)]| {
        let (producer, _) = common::producer(addr, extra);
        let metadata = producer
            .client()
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("metadata");
        let b = &metadata.brokers()[0];
        (b.host().to_string(), b.port() as u16)
    };
    assert_eq!(metadata_via(plain, &[]), ("127.0.0.1".into(), plain.port()));
    assert_eq!(
        metadata_via(ssl, &ssl_client(&ca)),
        ("127.0.0.1".into(), ssl.port())
    );

    // Both serve produce and consume at once.
    let ssl_settings = ssl_client(&ca);
    let by_tls = std::thread::scope(|s| {
        let tls = s.spawn(|| produce_all(ssl, &ssl_settings, "both", records(300, 200)));
        let plain = produce_all(plain, &[], "both", records(300, 200));
        assert!(plain.iter().all(Result::is_ok));
        tls.join().unwrap()
    });
    assert!(by_tls.iter().all(Result::is_ok));
    let consumer = consumer_from_start_with(ssl, "both", 1, &ssl_settings);
    assert_eq!(consume(&consumer, 600, Duration::from_secs(30)).len(), 600);

    // A plaintext client on the SSL port is refused and counted; the
    // plaintext port does not notice.
    let mut confused = RawClient::connect(ssl);
    std::io::Write::write_all(
        &mut confused.stream,
        &RawClient::encode(1, 3, &ApiVersionsRequest::default()),
    )
    .unwrap();
    // The broker answers with a TLS alert, then closes.
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut confused.stream, &mut answer);
    assert_eq!(
        answer.first(),
        Some(&21),
        "expected a TLS alert record, got {answer:?}"
    );
    wait_for_failures(&broker, "not_tls", 1);
    let mut fine = RawClient::connect(plain);
    let versions = fine.call(3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0);
}

#[test]
fn advertised_listeners_are_given_to_clients_of_each_listener() {
    let certs = Certs::new("tls-advertised-certs", &[]);
    let settings = tls_settings(&certs.0);
    let broker = TestBroker::start_with("tls-advertised", 1, |c| {
        c.tls_config = Some(settings);
        c.listeners = plaintext_and_ssl();
        c.advertised_listeners = vec![AdvertisedListener {
            name: "PLAINTEXT".into(),
            host: "plain.example".into(),
            port: 19092,
        }];
    });
    let plain = broker
        .handle()
        .listener_addr(SecurityProtocol::Plaintext)
        .unwrap();
    let ssl = broker.handle().listener_addr(SecurityProtocol::Ssl).unwrap();
    let request = MetadataRequest::default();
    let mut raw = RawClient::connect(plain);
    assert_eq!(
        metadata_broker(&raw.call(12, &request)),
        ("plain.example".into(), 19092)
    );
    let mut tls = TlsClient::connect(ssl, &certs.0, None).expect("tls");
    assert_eq!(
        metadata_broker(&tls.call(12, &request).expect("metadata over TLS")),
        ("127.0.0.1".into(), ssl.port())
    );
}

#[test]
fn a_silent_client_is_dropped_at_the_handshake_timeout() {
    let certs = Certs::new("tls-timeout-certs", &[]);
    let broker = TestBroker::start_with("tls-timeout", 1, |c| {
        c.tls_config = Some(tls_settings(&certs.0));
        c.tls_handshake_timeout = Duration::from_secs(1);
    });
    let mut silent = RawClient::connect(broker.addr);
    let started = Instant::now();
    assert!(silent.closed_by_broker());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    wait_for_failures(&broker, "timeout", 1);
    let mut fine = TlsClient::connect(broker.addr, &certs.0, None).expect("tls");
    fine.api_versions().expect("a new client is served");
}
