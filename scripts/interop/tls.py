#!/usr/bin/env python3
"""TLS interop against the real binary: a PLAINTEXT and an SSL listener side
by side, client certificates required on SSL (certificates from
scripts/gen-certs.sh). Each of kcat (librdkafka 2.0.x), confluent-kafka
(current librdkafka), kafka-python (Python's ssl) and kafkajs (Node's tls)
produces over mutual TLS and reads its messages back; kcat without a
client certificate is refused and the broker logs why; the client
certificate's principal is in the broker's log. Every wait is bounded.

usage: tls.py BROKER_BINARY [NODE_MODULES_DIR]
"""
import os
import re
import subprocess
import sys
import tempfile
import time

from common import check, finish, run_kafkajs, start_broker, stop_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
NODE_MODULES = sys.argv[2] if len(sys.argv) > 2 else None
HERE = os.path.dirname(os.path.abspath(__file__))
N = 50


def kcat_ssl(certs, client_cert=True):
    args = ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={certs}/ca.crt"]
    if client_cert:
        args += ["-X", f"ssl.certificate.location={certs}/client.crt", "-X", f"ssl.key.location={certs}/client.key"]
    return args


def kcat(addr, certs):
    topic = "kcat-tls"
    messages = [f"kcat-{i}" for i in range(N)]
    produced = subprocess.run(["kcat", "-b", addr, *kcat_ssl(certs), "-P", "-t", topic],
                              input="\n".join(messages) + "\n", text=True, capture_output=True, timeout=60)
    check("kcat: produce over mutual TLS", produced.returncode == 0, produced.stderr)
    consumed = subprocess.run(["kcat", "-b", addr, *kcat_ssl(certs), "-C", "-t", topic, "-e", "-q", "-o", "beginning"],
                              capture_output=True, text=True, timeout=60)
    check("kcat: consume back over mutual TLS", consumed.stdout.split() == messages, consumed.stderr[-500:])
    refused = subprocess.run(["kcat", "-b", addr, *kcat_ssl(certs, client_cert=False), "-L", "-m", "3"],
                             capture_output=True, text=True, timeout=60)
    check("kcat: without a client certificate is refused", refused.returncode != 0, refused.stdout)


def confluent(addr, certs):
    from confluent_kafka import Consumer, Producer, TopicPartition
    topic = "confluent-tls"
    ssl = {"bootstrap.servers": addr, "security.protocol": "ssl", "ssl.ca.location": f"{certs}/ca.crt",
           "ssl.certificate.location": f"{certs}/client.crt", "ssl.key.location": f"{certs}/client.key"}
    producer = Producer(ssl)
    for i in range(N):
        producer.produce(topic, f"confluent-{i}".encode())
    check("confluent-kafka: produce over mutual TLS", producer.flush(30) == 0)
    consumer = Consumer(dict(ssl, **{"group.id": "confluent-tls", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    got, deadline = [], time.time() + 30
    while len(got) < N and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    consumer.close()
    check("confluent-kafka: consume back over mutual TLS", got == [f"confluent-{i}" for i in range(N)], f"{len(got)}")


def kafka_python(addr, certs):
    from kafka import KafkaConsumer, KafkaProducer
    topic = "kafka-python-tls"
    ssl = dict(bootstrap_servers=addr, security_protocol="SSL", ssl_cafile=f"{certs}/ca.crt",
               ssl_certfile=f"{certs}/client.crt", ssl_keyfile=f"{certs}/client.key")
    producer = KafkaProducer(**ssl)
    sent = [producer.send(topic, f"kafka-python-{i}".encode()) for i in range(N)]
    producer.flush(30)
    offsets = [future.get(timeout=30).offset for future in sent]
    producer.close(10)
    check("kafka-python: produce over mutual TLS", offsets == list(range(N)), f"{offsets[:5]}...")
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000,
                             enable_auto_commit=False, **ssl)
    got = []
    deadline = time.time() + 30
    for message in consumer:
        got.append(message.value.decode())
        if len(got) >= N or time.time() > deadline:
            break
    consumer.close()
    check("kafka-python: consume back over mutual TLS", got == [f"kafka-python-{i}" for i in range(N)], f"{len(got)}")


def kafkajs(addr, certs):
    run_kafkajs("kafkajs_tls.js", [addr, certs, str(N)], NODE_MODULES)


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-interop-tls-")
    certs = os.path.join(data_dir, "certs")
    subprocess.run(["bash", os.path.join(HERE, "..", "gen-certs.sh"), certs], check=True, capture_output=True,
                   timeout=60)
    proc, log, _ = start_broker(BINARY, data_dir, {
        "LISTENERS": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        "TLS_CERT_PATH": f"{certs}/server.crt", "TLS_KEY_PATH": f"{certs}/server.key",
        "TLS_CA_PATH": f"{certs}/ca.crt", "TLS_REQUIRE_CLIENT_CERT": "true",
    })
    log.seek(0)
    ssl_addr = re.search(r"listeners=PLAINTEXT://\S+?,SSL://(\S+)", log.read()).group(1)
    for name, run in [("kcat", kcat), ("confluent-kafka", confluent), ("kafka-python", kafka_python),
                      ("kafkajs", kafkajs)]:
        try:
            run(ssl_addr, certs)
        except Exception as e:  # one client's failure must not hide the others'
            check(f"{name}: ran", False, repr(e))
    time.sleep(0.2)
    log.seek(0)
    text = log.read()
    check("broker logs the client certificate's principal",
          'principal="User:CN=chronik-client,O=Chronik Ingest test"' in text)
    check("broker logs the refused handshake with its reason", 'reason="no_client_cert"' in text)
    mapping_rules(certs)
    finish("tls", proc, log, data_dir)


def mapping_rules(certs):
    """SSL_PRINCIPAL_MAPPING_RULES: a rule names the principal after the
    certificate's CN, upper-cased; a subject no rule matches is refused."""
    tls_env = {"LISTENERS": "SSL://127.0.0.1:0", "TLS_CERT_PATH": f"{certs}/server.crt",
               "TLS_KEY_PATH": f"{certs}/server.key", "TLS_CA_PATH": f"{certs}/ca.crt",
               "TLS_REQUIRE_CLIENT_CERT": "true"}
    for rules, accepted in [(r"RULE:^CN=([^,]*),.*$/$1/U", True), (r"RULE:^CN=nobody,.*$/$1/", False)]:
        work = tempfile.mkdtemp(prefix="chronik-interop-mapping-")
        proc, log, addr = start_broker(BINARY, work, dict(tls_env, SSL_PRINCIPAL_MAPPING_RULES=rules))
        listed = subprocess.run(["kcat", "-b", addr, *kcat_ssl(certs), "-L", "-m", "5"], capture_output=True,
                                text=True, timeout=60)
        time.sleep(0.2)
        log.seek(0)
        text = log.read()
        if accepted:
            check("SSL_PRINCIPAL_MAPPING_RULES: the rule's principal (User:CHRONIK-CLIENT) is the session's",
                  listed.returncode == 0 and 'principal="User:CHRONIK-CLIENT"' in text, text[-800:])
        else:
            check("SSL_PRINCIPAL_MAPPING_RULES: a subject no rule matches is refused and logged",
                  listed.returncode != 0 and "no SSL_PRINCIPAL_MAPPING_RULES rule matches" in text, text[-800:])
        code = stop_broker(proc)
        check("mapping-rules broker exits 0", code == 0, f"exit {code}")


if __name__ == "__main__":
    main()
