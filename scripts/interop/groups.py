#!/usr/bin/env python3
"""Consumer-group interop: for each client -- kcat (-G balanced consumer,
librdkafka 2.0.x), confluent-kafka (current librdkafka), kafka-python 3.x and
kafkajs 2.x -- against the real binary: create a topic, produce 100
messages, consume 60 in a group and commit, restart the consumer, and check
it resumes at offset 60 and reads the other 40. One PASS/FAIL line per
client and step; exits non-zero on any FAIL. Every wait is bounded.

usage: groups.py BROKER_BINARY [NODE_MODULES_DIR]
"""
import subprocess
import sys
import tempfile
import time

from common import check, finish, run_kafkajs, run_steps, start_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
NODE_MODULES = sys.argv[2] if len(sys.argv) > 2 else None
N, FIRST = 100, 60
MESSAGES = [f"msg-{i:03d}" for i in range(N)]


def kcat(addr):
    topic, group = "kcat-groups", "kcat-group"
    produced = subprocess.run(["kcat", "-b", addr, "-P", "-t", topic], input="\n".join(MESSAGES) + "\n", text=True,
                              capture_output=True, timeout=60)
    check("kcat: create topic (auto) and produce 100", produced.returncode == 0, produced.stderr)
    first = subprocess.run(["kcat", "-b", addr, "-G", group, "-c", str(FIRST), "-q", "-X", "auto.offset.reset=earliest",
                            topic], capture_output=True, text=True, timeout=60)
    got = first.stdout.split()
    check("kcat: consume 60 in a group (-G) and commit on close", got == MESSAGES[:FIRST], f"{got[:3]}... {first.stderr}")
    second = subprocess.run(["kcat", "-b", addr, "-G", group, "-e", "-q", "-X", "auto.offset.reset=earliest", topic],
                            capture_output=True, text=True, timeout=60)
    got = second.stdout.split()
    check("kcat: restarted member resumes at the committed offset", got == MESSAGES[FIRST:], f"{got[:3]}... {second.stderr}")


def confluent(addr):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    topic, group = "confluent-groups", "confluent-group"
    admin = AdminClient({"bootstrap.servers": addr})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1)])
    futures[topic].result(timeout=30)
    check("confluent-kafka: CreateTopics", True)
    producer = Producer({"bootstrap.servers": addr})
    for m in MESSAGES:
        producer.produce(topic, m.encode())
    check("confluent-kafka: produce 100", producer.flush(30) == 0)

    def member():
        return Consumer({"bootstrap.servers": addr, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})

    def consume(consumer, count):
        out = []
        deadline = time.time() + 30
        while len(out) < count and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append((msg.offset(), msg.value().decode()))
        return out

    consumer = member()
    consumer.subscribe([topic])
    got = consume(consumer, FIRST)
    consumer.commit(asynchronous=False)
    consumer.close()
    check("confluent-kafka: consume 60 in a group and commit", [v for _, v in got] == MESSAGES[:FIRST], f"{got[:3]}")
    consumer = member()
    consumer.subscribe([topic])
    got = consume(consumer, N - FIRST)
    consumer.close()
    check("confluent-kafka: restarted member resumes at offset 60",
          got and got[0][0] == FIRST and [v for _, v in got] == MESSAGES[FIRST:], f"{got[:3]}")


def kafka_python(addr):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic
    topic, group = "kafka-python-groups", "kafka-python-group"
    admin = KafkaAdminClient(bootstrap_servers=addr)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    check("kafka-python: CreateTopics", True)
    producer = KafkaProducer(bootstrap_servers=addr)
    for m in MESSAGES:
        producer.send(topic, m.encode())
    producer.flush(timeout=30)
    producer.close()
    check("kafka-python: produce 100", True)

    def consume(count):
        consumer = KafkaConsumer(topic, bootstrap_servers=addr, group_id=group, enable_auto_commit=False,
                                 auto_offset_reset="earliest")
        out = []
        deadline = time.time() + 30
        while len(out) < count and time.time() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=count - len(out)).values():
                out.extend((r.offset, r.value.decode()) for r in records)
        return consumer, out

    consumer, got = consume(FIRST)
    consumer.commit()
    consumer.close()
    check("kafka-python: consume 60 in a group and commit", [v for _, v in got] == MESSAGES[:FIRST], f"{got[:3]}")
    consumer, got = consume(N - FIRST)
    consumer.close()
    check("kafka-python: restarted member resumes at offset 60",
          got and got[0][0] == FIRST and [v for _, v in got] == MESSAGES[FIRST:], f"{got[:3]}")


def kafkajs(addr):
    run_kafkajs("kafkajs_groups.js", [addr, str(N), str(FIRST)], NODE_MODULES)


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-interop-groups-")
    proc, log, addr = start_broker(BINARY, data_dir, {"GROUP_INITIAL_REBALANCE_DELAY_MS": "300"})
    run_steps([(client, lambda step=step: step(addr)) for client, step in
               [("kcat", kcat), ("confluent-kafka", confluent), ("kafka-python", kafka_python), ("kafkajs", kafkajs)]])
    finish("interop groups", proc, log, data_dir)


if __name__ == "__main__":
    main()
