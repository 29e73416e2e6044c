#!/usr/bin/env python3
"""Interop: independent Kafka clients against the real binary.

Starts `chronik-ingest` on an ephemeral port with a scratch data directory,
then checks that each client bootstraps, reads metadata, and moves data:
  - kcat (Debian's, librdkafka 2.0.x: the old ApiVersions parser):
    metadata; 100,000 messages with -P, read back identical with -C -e;
  - confluent-kafka (its wheel bundles a current librdkafka): metadata;
    an idempotent producer with default settings and a consumer without a
    group round-trip 100,000 records;
  - kafka-python 3.x (opens with ApiVersions v4): metadata.
Prints one PASS/FAIL line per client and check, then "N passed, N failed";
exits non-zero on any failure. Every wait is bounded.
"""
import re
import subprocess
import sys
import tempfile
import time

from common import check, finish, run_steps, start_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"


def kcat_metadata(addr):
    out = subprocess.run(["kcat", "-b", addr, "-L", "-m", "10"], capture_output=True, text=True, timeout=30)
    ok = out.returncode == 0 and " 1 brokers:" in out.stdout and f"broker 0 at {addr}" in out.stdout
    check("kcat -L lists 1 broker at the advertised address", ok, out.stdout + out.stderr)
    version = subprocess.run(["kcat", "-V"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"librdkafka (\S+)", version)
    print(f"     (kcat links librdkafka {m.group(1) if m else '?'})")


def confluent_metadata(addr):
    import confluent_kafka
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": addr}).list_topics(timeout=10)
    brokers = {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}
    check(f"confluent-kafka (librdkafka {confluent_kafka.libversion()[0]}) metadata: 1 broker at {addr}",
          brokers == {0: addr}, repr(brokers))
    check("confluent-kafka sees a 22-character cluster id", md.cluster_id is not None and len(md.cluster_id) == 22,
          repr(md.cluster_id))


def kcat_round_trip(addr):
    lines = "".join(f"message-{i:06d} {'x' * (i % 40)}\n" for i in range(100_000))
    produced = subprocess.run(["kcat", "-b", addr, "-P", "-t", "kcat-100k"], input=lines, text=True,
                              capture_output=True, timeout=120)
    check("kcat -P 100,000 messages", produced.returncode == 0, produced.stderr)
    consumed = subprocess.run(["kcat", "-b", addr, "-C", "-t", "kcat-100k", "-e", "-q"], capture_output=True,
                              text=True, timeout=120)
    check("kcat -C -e reads the 100,000 messages back identical", consumed.stdout == lines,
          f"{len(consumed.stdout.splitlines())} lines back; {consumed.stderr}")


def confluent_round_trip(addr):
    from confluent_kafka import Consumer, Producer, TopicPartition
    n = 100_000
    acked = []
    errors = []

    def on_delivery(err, msg):
        if err is None:
            acked.append(msg.offset())
        else:
            errors.append(str(err))

    producer = Producer({"bootstrap.servers": addr, "enable.idempotence": True})
    for i in range(n):
        while True:
            try:
                producer.produce("confluent-100k", key=str(i % 100).encode(), value=f"record-{i}".encode(),
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    check("confluent-kafka idempotent producer: 100,000 acked", left == 0 and len(acked) == n and not errors,
          f"acked {len(acked)}, unflushed {left}, errors {errors[:3]}")
    consumer = Consumer({"bootstrap.servers": addr, "group.id": "interop-nogroup", "enable.auto.commit": False})
    consumer.assign([TopicPartition("confluent-100k", 0, 0)])
    values = []
    deadline = time.time() + 60
    while len(values) < n and time.time() < deadline:
        for msg in consumer.consume(num_messages=10_000, timeout=1.0):
            if msg.error() is None:
                values.append(msg.value())
    consumer.close()
    check("confluent-kafka consumer (no group) reads them back in order",
          values == [f"record-{i}".encode() for i in range(n)], f"{len(values)} read")


def kafka_python_metadata(addr, log):
    import kafka
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=addr, request_timeout_ms=10000)
    try:
        cluster = admin.describe_cluster()
        brokers = [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]]
        host, port = addr.rsplit(":", 1)
        check(f"kafka-python {kafka.__version__} bootstraps and reads metadata", brokers == [(0, host, int(port))],
              repr(cluster))
    finally:
        admin.close()
    log.seek(0)
    versions = set(re.findall(r"api=ApiVersions api_version=(\d+)", log.read()))
    check("kafka-python opened with ApiVersions v4 and was answered", "4" in versions, f"versions seen: {versions}")


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-interop-")
    proc, log, addr = start_broker(BINARY, data_dir, {"RUST_LOG": "info,chronik_protocol=debug"})
    steps = [("kcat", lambda: kcat_metadata(addr)), ("confluent-kafka", lambda: confluent_metadata(addr)),
             ("kafka-python", lambda: kafka_python_metadata(addr, log)),
             ("kcat round trip", lambda: kcat_round_trip(addr)),
             ("confluent-kafka round trip", lambda: confluent_round_trip(addr))]
    run_steps(steps)
    finish("interop smoke", proc, log, data_dir)


if __name__ == "__main__":
    main()
