//! SASL against the running broker with librdkafka (the rdkafka crate):
//! PLAIN and SCRAM over SASL_PLAINTEXT, OAUTHBEARER with librdkafka's
//! unsecured tokens, re-authentication (KIP-368), the unframed v0
//! exchange, and what an unauthenticated client is refused.

mod common;

use chronik_ingest::{ListenerConfig, ServerConfig};
use common::{consume, consumer_from_start_with, produce_all, RawClient, TestBroker};
use kafka_protocol::messages::{MetadataRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::Producer as _;
use std::io::Write;
use std::time::Duration;

fn sasl_listener(name: &str) -> ListenerConfig {
    ListenerConfig {
        name: name.into(),
        addr: "127.0.0.1:0".parse().unwrap(),
    }
}

fn sasl_broker(name: &str, tweak: impl FnOnce(&mut ServerConfig)) -> TestBroker {
    TestBroker::start_with(name, 2, |c| {
        c.listeners = vec![sasl_listener("SASL_PLAINTEXT")];
        c.security.bootstrap_users = vec![("alice".into(), "alice-secret".into())];
        tweak(c);
    })
}

fn sasl(mechanism: &'static str, password: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("security.protocol", "sasl_plaintext"),
        ("sasl.mechanism", mechanism),
        ("sasl.username", "alice"),
        ("sasl.password", password),
    ]
}

fn records(n: usize, tag: &str) -> Vec<common::Outgoing> {
    (0..n)
        .map(|i| (None, format!("{tag}-{i}").into_bytes(), Vec::new()))
        .collect()
}

#[test]
fn plain_and_scram_clients_produce_and_consume() {
    let broker = sasl_broker("sasl-mechanisms", |_| {});
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let topic = format!("sasl-{}", mechanism.to_ascii_lowercase());
        let settings = sasl(mechanism, "alice-secret");
        let delivered = produce_all(broker.addr, &settings, &topic, records(20, mechanism));
        assert!(delivered.iter().all(Result::is_ok), "{mechanism}: {delivered:?}");
        let consumer = consumer_from_start_with(broker.addr, &topic, 1, &settings);
        let got = consume(&consumer, 20, Duration::from_secs(20));
        assert_eq!(got.len(), 20, "{mechanism}");
        assert_eq!(got[19].3, format!("{mechanism}-19").into_bytes());
    }
}

/// Errors librdkafka reports through its error callback (authentication
/// failures arrive there, not as request errors).
#[derive(Clone, Default)]
struct ClientErrors(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl rdkafka::ClientContext for ClientErrors {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Ok(mut all) = self.0.lock() {
            all.push(format!("{error}: {reason}"));
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ClientErrors {}

#[test]
fn a_wrong_password_is_refused() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let broker = sasl_broker("sasl-wrong-password", |_| {});
    for mechanism in ["PLAIN", "SCRAM-SHA-512"] {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", broker.addr.to_string());
        for (k, v) in sasl(mechanism, "guess") {
            config.set(k, v);
        }
        let errors = ClientErrors::default();
        let consumer: BaseConsumer<ClientErrors> = config.create_with_context(errors.clone()).unwrap();
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(5));
        assert!(metadata.is_err(), "authenticated with a wrong password");
        // Error callbacks are served by polling.
        for _ in 0..30 {
            let _ = consumer.poll(Duration::from_millis(100));
            if !errors.0.lock().unwrap().is_empty() {
                break;
            }
        }
        let seen = errors.0.lock().unwrap().join("\n");
        assert!(seen.contains("Authentication failed"), "{mechanism}: {seen}");
        if mechanism == "PLAIN" {
            // Kafka's own message for PLAIN reaches the client.
            assert!(seen.contains("Invalid username or password"), "{seen}");
        }
    }
}

#[test]
fn requests_before_authentication_close_the_connection() {
    let broker = sasl_broker("sasl-unauthenticated", |_| {});
    let mut client = RawClient::connect(broker.addr);
    client
        .stream
        .write_all(&RawClient::encode(1, 12, &MetadataRequest::default()))
        .unwrap();
    assert!(client.closed_by_broker());
    // An unknown mechanism: the enabled ones are listed, then the close.
    let mut client = RawClient::connect(broker.addr);
    let response = client.call(
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI")),
    );
    assert_eq!(response.error_code, 33);
    let listed: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(listed, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert!(client.closed_by_broker());
}

/// kafka-python 2.0 and other pre-KIP-152 clients: SaslHandshake v0, then
/// bare length-prefixed tokens with no Kafka header.
#[test]
fn the_unframed_v0_exchange_authenticates() {
    let broker = sasl_broker("sasl-unframed", |_| {});
    let mut client = RawClient::connect(broker.addr);
    let response = client.call(
        0,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    );
    assert_eq!(response.error_code, 0);
    let token = b"\0alice\0alice-secret";
    let mut frame = (token.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(token);
    client.stream.write_all(&frame).unwrap();
    let answer = client.read_frame().expect("an empty token back");
    assert!(answer.is_empty());
    let metadata = client.call(12, &MetadataRequest::default());
    assert_eq!(metadata.brokers.len(), 1);

    // A wrong password in this form is not answered: the broker closes.
    let mut client = RawClient::connect(broker.addr);
    client.call(
        0,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    );
    let token = b"\0alice\0nope";
    let mut frame = (token.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(token);
    client.stream.write_all(&frame).unwrap();
    assert!(client.closed_by_broker());
}

/// KIP-368: with CONNECTIONS_MAX_REAUTH_MS, librdkafka re-authenticates on
/// the same connection before its session ends and keeps producing.
#[test]
fn sessions_expire_and_librdkafka_reauthenticates() {
    let broker = sasl_broker("sasl-reauth", |c| c.security.max_reauth_ms = 2_000);
    let settings = sasl("SCRAM-SHA-256", "alice-secret");
    let (producer, deliveries) = common::producer(broker.addr, &settings);
    let topic = "sasl-reauth";
    for round in 0..6 {
        common::send_all(&producer, topic, records(5, &format!("r{round}")));
        producer.flush(Duration::from_secs(20)).expect("flush");
        std::thread::sleep(Duration::from_millis(1_000));
    }
    let all = deliveries.0.lock().unwrap();
    assert_eq!(all.len(), 5, "one report per index (the last round's)");
    assert!(all.values().all(Result::is_ok), "{all:?}");
    drop(all);
    let consumer = consumer_from_start_with(broker.addr, topic, 1, &settings);
    assert_eq!(consume(&consumer, 30, Duration::from_secs(20)).len(), 30);
    // No connection was closed for outliving its session: each one
    // re-authenticated in time.
    assert_eq!(broker.frame_errors(), 0);
}

#[test]
fn oauthbearer_with_librdkafkas_unsecured_tokens() {
    let broker = sasl_broker("sasl-oauth", |c| {
        c.security.sasl_mechanisms = vec![(None, vec!["OAUTHBEARER".into()])];
        c.security.oauth_unsecured = true;
    });
    let settings = [
        ("security.protocol", "sasl_plaintext"),
        ("sasl.mechanism", "OAUTHBEARER"),
        ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
        ("sasl.oauthbearer.config", "principal=svc-orders lifeSeconds=60"),
    ];
    let delivered = produce_all(broker.addr, &settings, "sasl-oauth", records(10, "oauth"));
    assert!(delivered.iter().all(Result::is_ok), "{delivered:?}");
}

/// Repeated failed authentications from one address ban it, as a broken
/// connection rate limit does: even the right password is then refused.
#[test]
fn repeated_failures_ban_the_address() {
    // One shard: failures are counted per shard.
    let broker = TestBroker::start_with("sasl-ban", 1, |c| {
        c.listeners = vec![sasl_listener("SASL_PLAINTEXT")];
        c.security.bootstrap_users = vec![("alice".into(), "alice-secret".into())];
        c.security.auth_failure_ban_threshold = 3;
        c.pool_config.ban_duration = Duration::from_secs(60);
    });
    let attempt = |password: &str| -> bool {
        let mut client = RawClient::connect(broker.addr);
        let handshake = RawClient::encode(
            1,
            0,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        );
        if client.stream.write_all(&handshake).is_err() || client.read_frame().is_none() {
            return false;
        }
        let token = format!("\0alice\0{password}");
        let mut frame = (token.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(token.as_bytes());
        client.stream.write_all(&frame).is_ok() && client.read_frame().is_some()
    };
    assert!(attempt("alice-secret"), "the right password works at first");
    for _ in 0..3 {
        assert!(!attempt("guess"));
    }
    assert!(!attempt("alice-secret"), "banned: refused whatever the password");
}
