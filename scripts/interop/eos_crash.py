#!/usr/bin/env python3
"""Exactly-once consume-transform-produce through crashes (issue 18).

A confluent-kafka worker reads `eos-in` (read_committed, group `eos`),
writes each record transformed to `eos-out` and commits its input offsets
with send_offsets_to_transaction, one transaction per batch. The worker is
killed with SIGKILL at random points WORKER_KILLS times (default 5) and the
broker BROKER_KILLS times (default 2), each restarted; at the end the
output, read read_committed, must hold every one of RECORDS inputs (default
200,000) exactly once.

usage: eos_crash.py BROKER_BINARY
       eos_crash.py --worker ADDR   (the worker itself)
"""
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from common import check, finish, start_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
RECORDS = int(os.environ.get("RECORDS", "200000"))
WORKER_KILLS = int(os.environ.get("WORKER_KILLS", "5"))
BROKER_KILLS = int(os.environ.get("BROKER_KILLS", "2"))
PARTITIONS = 3


def worker(addr):
    """Transforms until every input partition is consumed to its end."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    consumer = Consumer({"bootstrap.servers": addr, "group.id": "eos", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe(["eos-in"])
    producer = Producer({"bootstrap.servers": addr, "transactional.id": "eos-worker",
                         "transaction.timeout.ms": 10000})
    producer.init_transactions(60)
    idle_since = None
    while True:
        batch = [m for m in consumer.consume(1000, 1.0) if m.error() is None]
        if not batch:
            assigned = consumer.assignment()
            if assigned:
                ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in assigned]
                # A worker that starts with everything already consumed
                # reads nothing, so it has no position: its committed
                # offsets say where it is.
                committed = consumer.committed(assigned, timeout=10)
                positions = [p.offset if p.offset >= 0 else c.offset
                             for p, c in zip(consumer.position(assigned), committed)]
                if all(p >= end for p, end in zip(positions, ends)):
                    idle_since = idle_since or time.time()
                    if time.time() - idle_since > 2:
                        print("done", flush=True)
                        return
            continue
        idle_since = None
        producer.begin_transaction()
        for m in batch:
            producer.produce("eos-out", m.value().replace(b"in-", b"out-"), partition=m.partition())
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata(), 60)
        producer.commit_transaction(60)


def main():
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    data_dir = tempfile.mkdtemp(prefix="chronik-interop-eos-")
    state = {}
    state["proc"], state["log"], state["addr"] = start_broker(BINARY, data_dir)
    admin = AdminClient({"bootstrap.servers": state["addr"]})
    for future in admin.create_topics([NewTopic("eos-in", PARTITIONS), NewTopic("eos-out", PARTITIONS)]).values():
        future.result(timeout=30)
    feeder = Producer({"bootstrap.servers": state["addr"], "linger.ms": 20})
    for i in range(RECORDS):
        while True:
            try:
                feeder.produce("eos-in", f"in-{i}".encode(), partition=i % PARTITIONS)
                break
            except BufferError:
                feeder.poll(0.05)
    feeder.flush(60)
    check(f"{RECORDS} input records produced", True)

    def start_worker():
        return subprocess.Popen([sys.executable, __file__, "--worker", state["addr"]], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT if os.environ.get("WORKER_LOG") else subprocess.DEVNULL, text=True)

    def kill_broker_and_restart():
        state["proc"].send_signal(signal.SIGKILL)
        state["proc"].wait(30)
        state["proc"], state["log"], state["addr"] = start_broker(BINARY, data_dir)

    rng = random.Random(int(os.environ.get("SEED", "17")))
    events = ["worker"] * WORKER_KILLS + ["broker"] * BROKER_KILLS
    rng.shuffle(events)
    for event in events:
        w = start_worker()
        time.sleep(rng.uniform(1.5, 4.0))
        w.send_signal(signal.SIGKILL)
        w.wait(30)
        if event == "broker":
            kill_broker_and_restart()
    check(f"worker killed {WORKER_KILLS} times and broker {BROKER_KILLS} times mid-stream", True)
    w = start_worker()
    try:
        out, _ = w.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        w.kill()
        out = "timed out"
    check("the last worker run consumes the input to its end", "done" in out, out[-300:])

    consumer = Consumer({"bootstrap.servers": state["addr"], "group.id": "eos-check", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.assign([TopicPartition("eos-out", p, 0) for p in range(PARTITIONS)])
    seen, deadline = {}, time.time() + 120
    total = 0
    while total < RECORDS + 1000 and time.time() < deadline:
        batch = consumer.consume(10000, 1.0)
        if not batch and total >= RECORDS:
            break
        for m in batch:
            if m.error() is None:
                seen[m.value()] = seen.get(m.value(), 0) + 1
                total += 1
    consumer.close()
    missing = [i for i in range(RECORDS) if f"out-{i}".encode() not in seen]
    duplicated = [k for k, n in seen.items() if n > 1]
    check(f"the output read read_committed holds each of {RECORDS} inputs exactly once",
          not missing and not duplicated and total == RECORDS,
          f"{total} records, {len(missing)} missing (e.g. {missing[:3]}), {len(duplicated)} duplicated "
          f"(e.g. {duplicated[:3]})")
    finish("eos-crash", state["proc"], state["log"], data_dir)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
