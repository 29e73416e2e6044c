#!/usr/bin/env python3
"""SASL interop against the real binary.

One broker with a SASL_PLAINTEXT, a SASL_SSL and a named OAUTH listener
(SASL_PLAINTEXT offering only OAUTHBEARER, unsecured tokens):
- an admin bootstrapped from SASL_BOOTSTRAP_USERS creates user `app` with
  confluent-kafka's AdminClient (AlterUserScramCredentials) and describes it;
- kcat, confluent-kafka, kafka-python and kafkajs each produce and consume
  as `app` with SCRAM-SHA-512 over SASL_SSL and with PLAIN over
  SASL_PLAINTEXT;
- wrong passwords are refused, logged and counted in
  chronik_auth_failures_total;
- librdkafka's unsecured OAUTHBEARER token works, an expired one is refused.
A second broker validates signed JWTs against a JWKS file: an ES256 token
from confluent-kafka's oauth_cb works; one signed by another key, one for
another audience and an expired one are refused.

usage: sasl.py BROKER_BINARY [NODE_MODULES_DIR]
"""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from common import check, finish, free_port, run_kafkajs, run_steps, scrape, start_broker, stop_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
NODE_MODULES = sys.argv[2] if len(sys.argv) > 2 else None
HERE = os.path.dirname(os.path.abspath(__file__))
N = 30
APP_PASSWORD = "app-pw-1"


def librdkafka_sasl(addr, mechanism, user, password, ca=None):
    conf = {"bootstrap.servers": addr, "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
            "security.protocol": "sasl_ssl" if ca else "sasl_plaintext"}
    if ca:
        conf["ssl.ca.location"] = ca
    return conf


def consume_confluent(conf, topic, count, timeout=30):
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer(dict(conf, **{"group.id": f"{topic}-reader", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    got, deadline = [], time.time() + timeout
    while len(got) < count and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    consumer.close()
    return got


def produce_confluent(conf, topic, values):
    from confluent_kafka import Producer
    producer = Producer(conf)
    for v in values:
        producer.produce(topic, v.encode())
    return producer.flush(30) == 0


def admin_creates_app_user(plain_addr):
    from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)
    admin = AdminClient(librdkafka_sasl(plain_addr, "SCRAM-SHA-512", "admin", "admin-secret"))
    upserts = [UserScramCredentialUpsertion("app", ScramCredentialInfo(mechanism, 8192), APP_PASSWORD.encode())
               for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)]
    # One user twice in one request is refused as a whole (Kafka's rule),
    # so each mechanism is its own request.
    for upsert in upserts:
        for user, future in admin.alter_user_scram_credentials([upsert]).items():
            future.result(timeout=30)
    futures = admin.describe_user_scram_credentials(["app"])
    described = {user: f.result(timeout=30) for user, f in futures.items()}
    infos = described["app"].scram_credential_infos
    shown = sorted((str(i.mechanism), i.iterations) for i in infos)
    check("confluent-kafka AdminClient: creates user app (SCRAM-SHA-256 and -512, 8192 iterations) as the "
          "bootstrap admin and describes it", len(shown) == 2 and all(it == 8192 for _, it in shown), f"{shown}")


def kcat_args(addr, mechanism, user, password, ca=None):
    args = ["-b", addr, "-X", f"security.protocol={'sasl_ssl' if ca else 'sasl_plaintext'}",
            "-X", f"sasl.mechanisms={mechanism}", "-X", f"sasl.username={user}", "-X", f"sasl.password={password}"]
    if ca:
        args += ["-X", f"ssl.ca.location={ca}"]
    return args


def kcat_round_trip(label, args, topic):
    messages = [f"{topic}-{i}" for i in range(N)]
    produced = subprocess.run(["kcat", *args, "-P", "-t", topic], input="\n".join(messages) + "\n", text=True,
                              capture_output=True, timeout=60)
    check(f"kcat: produce with {label}", produced.returncode == 0, produced.stderr[-500:])
    consumed = subprocess.run(["kcat", *args, "-C", "-t", topic, "-e", "-q", "-o", "beginning"], capture_output=True,
                              text=True, timeout=60)
    check(f"kcat: consume back with {label}", consumed.stdout.split() == messages, consumed.stderr[-500:])


def confluent_round_trip(label, conf, topic):
    values = [f"{topic}-{i}" for i in range(N)]
    check(f"confluent-kafka: produce with {label}", produce_confluent(conf, topic, values))
    got = consume_confluent(conf, topic, N)
    check(f"confluent-kafka: consume back with {label}", got == values, f"{len(got)}")


def kafka_python_round_trip(label, settings, topic):
    from kafka import KafkaConsumer, KafkaProducer
    producer = KafkaProducer(**settings)
    sent = [producer.send(topic, f"{topic}-{i}".encode()) for i in range(N)]
    producer.flush(30)
    offsets = [future.get(timeout=30).offset for future in sent]
    producer.close(10)
    check(f"kafka-python: produce with {label}", offsets == list(range(N)), f"{offsets[:5]}")
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, enable_auto_commit=False,
                             **settings)
    got, deadline = [], time.time() + 30
    for message in consumer:
        got.append(message.value.decode())
        if len(got) >= N or time.time() > deadline:
            break
    consumer.close()
    check(f"kafka-python: consume back with {label}", got == [f"{topic}-{i}" for i in range(N)], f"{len(got)}")


def wrong_passwords(plain_addr, ssl_addr, ca, metrics_addr, log):
    from confluent_kafka.admin import AdminClient
    before = scrape(metrics_addr).get("chronik_auth_failures_total", 0)
    refused = subprocess.run(["kcat", *kcat_args(ssl_addr, "SCRAM-SHA-512", "app", "wrong", ca), "-L", "-m", "5"],
                             capture_output=True, text=True, timeout=60)
    check("kcat: a wrong SCRAM-SHA-512 password is refused", refused.returncode != 0 and
          "Authentication failed" in refused.stderr, refused.stderr[-300:])
    from confluent_kafka import Producer
    errors = []
    producer = Producer(dict(librdkafka_sasl(plain_addr, "PLAIN", "app", "wrong"),
                             error_cb=lambda e: errors.append(str(e))))
    deadline = time.time() + 10
    while not any("Authentication" in e for e in errors) and time.time() < deadline:
        producer.poll(0.2)
    check("confluent-kafka: a wrong PLAIN password is refused with Kafka's message",
          any("Invalid username or password" in e for e in errors), f"{errors[:3]}")
    time.sleep(0.5)
    after = scrape(metrics_addr).get("chronik_auth_failures_total", 0)
    check("wrong passwords are counted in chronik_auth_failures_total", after - before >= 2, f"{before} -> {after}")
    log.seek(0)
    text = log.read()
    check("the broker logs each failure with peer, mechanism and reason",
          re.search(r'SASL authentication failed.*mechanism="?SCRAM-SHA-512"?.*reason="?bad_password', text) is not None
          or re.search(r'mechanism="?SCRAM-SHA-512"?.*reason="?bad_password"?.*SASL authentication failed', text)
          is not None, text[-1500:])


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(sub, exp):
    header = b64url(json.dumps({"alg": "none"}).encode())
    claims = b64url(json.dumps({"sub": sub, "iat": int(time.time()) - 5, "exp": exp}).encode())
    return f"{header}.{claims}."


def oauth_conf(addr, token_source):
    """confluent-kafka with an oauth_cb handing `token_source()`; librdkafka
    is told the token lasts a minute whatever its claims say, so an expired
    token reaches the broker."""
    return {"bootstrap.servers": addr, "security.protocol": "sasl_plaintext", "sasl.mechanism": "OAUTHBEARER",
            "oauth_cb": lambda _config: (token_source(), time.time() + 60)}


def oauth_refused(addr, token_source):
    from confluent_kafka.admin import AdminClient
    errors = []
    admin = AdminClient(dict(oauth_conf(addr, token_source), error_cb=lambda e: errors.append(str(e))))
    try:
        admin.list_topics(timeout=5)
        listed = True
    except Exception as e:
        errors.append(str(e))
        listed = False
    return not listed, errors


def oauth_unsecured(oauth_addr, metrics_addr):
    conf = {"bootstrap.servers": oauth_addr, "security.protocol": "sasl_plaintext", "sasl.mechanism": "OAUTHBEARER",
            "enable.sasl.oauthbearer.unsecure.jwt": True, "sasl.oauthbearer.config": "principal=svc lifeSeconds=120"}
    confluent_round_trip("OAUTHBEARER (librdkafka's unsecured JWT)", conf, "oauth-unsecured")
    before = scrape(metrics_addr).get("chronik_auth_failures_total", 0)
    refused, errors = oauth_refused(oauth_addr, lambda: unsigned_token("svc", int(time.time()) - 60))
    check("OAUTHBEARER: an expired token is refused", refused, f"{errors[:2]}")
    time.sleep(0.5)
    after = scrape(metrics_addr).get("chronik_auth_failures_total", 0)
    check("OAUTHBEARER: the expired token is counted", after > before, f"{before} -> {after}")


def signed_jwts(binary):
    """A broker validating ES256 tokens against a JWKS file."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    work = tempfile.mkdtemp(prefix="chronik-interop-jwks-")
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "kid": "test-key", "use": "sig",
           "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big"))}
    jwks = os.path.join(work, "jwks.json")
    with open(jwks, "w") as f:
        json.dump({"keys": [jwk]}, f)

    def token(signer=key, aud="kafka", exp_in=300):
        now = int(time.time())
        header = b64url(json.dumps({"alg": "ES256", "kid": "test-key", "typ": "JWT"}).encode())
        claims = b64url(json.dumps({"sub": "svc-orders", "iss": "https://idp.test", "aud": aud, "iat": now - 5,
                                    "exp": now + exp_in}).encode())
        der = signer.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{header}.{claims}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    proc, log, addr = start_broker(binary, work, {
        "LISTENERS": "SASL_PLAINTEXT://127.0.0.1:0", "SASL_ENABLED_MECHANISMS": "OAUTHBEARER",
        "SASL_OAUTHBEARER_JWKS_FILE": jwks, "SASL_OAUTHBEARER_EXPECTED_ISSUER": "https://idp.test",
        # Each refusal below must be the token's, not a ban for the ones before.
        "AUTH_FAILURE_BAN_THRESHOLD": "0",
        "SASL_OAUTHBEARER_EXPECTED_AUDIENCE": "kafka"})
    try:
        confluent_round_trip("OAUTHBEARER (ES256 JWT checked against the JWKS file)", oauth_conf(addr, token),
                             "oauth-signed")
        for label, source in [("signed by another key", lambda: token(signer=other)),
                              ("for another audience", lambda: token(aud="billing")),
                              ("expired", lambda: token(exp_in=-120))]:
            refused, errors = oauth_refused(addr, source)
            check(f"OAUTHBEARER with a JWKS: a token {label} is refused", refused, f"{errors[:2]}")
        log.seek(0)
        text = log.read()
        check("the broker logs the signed token's principal", 'principal=User:svc-orders' in text
              or 'principal="User:svc-orders"' in text, text[-800:])
    finally:
        code = stop_broker(proc)
        check("JWKS broker exits 0 on SIGTERM", code == 0, f"exit {code}")


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-interop-sasl-")
    certs = os.path.join(data_dir, "certs")
    subprocess.run(["bash", os.path.join(HERE, "..", "gen-certs.sh"), certs], check=True, capture_output=True,
                   timeout=60)
    ca = f"{certs}/ca.crt"
    metrics_addr = f"127.0.0.1:{free_port()}"
    proc, log, _ = start_broker(BINARY, data_dir, {
        "LISTENERS": "SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0,OAUTH://127.0.0.1:0",
        "LISTENER_SECURITY_PROTOCOL_MAP": "OAUTH:SASL_PLAINTEXT",
        "SASL_ENABLED_MECHANISMS": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512;OAUTH=OAUTHBEARER",
        "SASL_OAUTHBEARER_UNSECURED": "true",
        "SASL_BOOTSTRAP_USERS": "admin:admin-secret",
        "TLS_CERT_PATH": f"{certs}/server.crt", "TLS_KEY_PATH": f"{certs}/server.key",
        "METRICS_ADDRESS": metrics_addr,
    })
    log.seek(0)
    m = re.search(r"listeners=SASL_PLAINTEXT://(\S+?),SASL_SSL://(\S+?),OAUTH://(\S+)", log.read())
    plain_addr, ssl_addr, oauth_addr = m.group(1), m.group(2), m.group(3)
    scram = ("SCRAM-SHA-512 over SASL_SSL", "SCRAM-SHA-512", ssl_addr, ca)
    plain = ("PLAIN over SASL_PLAINTEXT", "PLAIN", plain_addr, None)

    def python_settings(mechanism, addr, tls):
        settings = dict(bootstrap_servers=addr, security_protocol="SASL_SSL" if tls else "SASL_PLAINTEXT",
                        sasl_mechanism=mechanism, sasl_plain_username="app", sasl_plain_password=APP_PASSWORD)
        if tls:
            settings["ssl_cafile"] = tls
        return settings

    steps = [("admin", lambda: admin_creates_app_user(plain_addr))]
    for label, mechanism, addr, tls in (scram, plain):
        tag = mechanism.lower().replace("-", "")
        steps += [
            (f"kcat {label}", lambda l=label, m=mechanism, a=addr, t=tls, g=tag:
             kcat_round_trip(l, kcat_args(a, m, "app", APP_PASSWORD, t), f"kcat-{g}")),
            (f"confluent {label}", lambda l=label, m=mechanism, a=addr, t=tls, g=tag:
             confluent_round_trip(l, librdkafka_sasl(a, m, "app", APP_PASSWORD, t), f"confluent-{g}")),
            (f"kafka-python {label}", lambda l=label, m=mechanism, a=addr, t=tls, g=tag:
             kafka_python_round_trip(l, python_settings(m, a, t), f"kafka-python-{g}")),
            (f"kafkajs {label}", lambda m=mechanism, a=addr, t=tls:
             run_kafkajs("kafkajs_sasl.js", [a, m, "app", APP_PASSWORD, t or "", str(N)], NODE_MODULES)),
        ]
    steps += [
        ("wrong passwords", lambda: wrong_passwords(plain_addr, ssl_addr, ca, metrics_addr, log)),
        ("oauth unsecured", lambda: oauth_unsecured(oauth_addr, metrics_addr)),
        ("oauth signed", lambda: signed_jwts(BINARY)),
    ]
    run_steps(steps)
    finish("sasl", proc, log, data_dir)


if __name__ == "__main__":
    main()
