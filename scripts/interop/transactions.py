#!/usr/bin/env python3
"""Transactions against the real binary, with independent clients.

- confluent-kafka: a transactional producer commits, aborts and commits
  again over three partitions; a read_committed consumer sees exactly the
  committed records in order, a read_uncommitted one sees all of them;
- kafkajs (kafkajs_txn.js) and kafka-python do the same;
- librdkafka's batch consume skips control batches, and a read_committed
  consumer's partition end and lag come from the last stable offset;
- a producer that begins a transaction and is killed (-9): its transaction
  is aborted after transaction.timeout.ms, the last stable offset moves on
  and read_committed consumers continue;
- consume-transform-produce with send_offsets_to_transaction: the output
  holds every input once and the group's committed offset is the input's
  end;
- the coordinator's state survives a restart: the producer is fenced by a
  new instance of its transactional id after it.

usage: transactions.py BROKER_BINARY [NODE_MODULES_DIR]
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

from common import check, finish, run_kafkajs, run_steps, start_broker, stop_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
NODE_MODULES = sys.argv[2] if len(sys.argv) > 2 else None
PARTITIONS = 3


def create_topic(addr, topic, partitions=PARTITIONS):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": addr})
    for future in admin.create_topics([NewTopic(topic, partitions)]).values():
        future.result(timeout=30)


def consume_all(addr, topic, isolation, expected, timeout=30, partitions=PARTITIONS):
    """Every record of `topic` from the beginning, per partition in order:
    {partition: [values]} once `expected` records arrived or time ran out."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": addr, "group.id": f"reader-{isolation}-{time.time_ns()}",
                         "enable.auto.commit": False, "isolation.level": isolation})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got, count, deadline = {}, 0, time.time() + timeout
    while count < expected and time.time() < deadline:
        m = consumer.poll(0.2)
        if m is not None and m.error() is None:
            got.setdefault(m.partition(), []).append(m.value().decode())
            count += 1
    consumer.close()
    return got


def confluent(addr):
    from confluent_kafka import Producer
    topic = "txn-confluent"
    create_topic(addr, topic)
    producer = Producer({"bootstrap.servers": addr, "transactional.id": "txn-confluent"})
    producer.init_transactions(30)
    sent = {}
    for txn, outcome in enumerate(["commit", "abort", "commit"]):
        producer.begin_transaction()
        for i in range(12):
            value = f"t{txn}-{outcome}-{i}"
            producer.produce(topic, value.encode(), partition=i % PARTITIONS)
            sent.setdefault(i % PARTITIONS, []).append((outcome, value))
        if outcome == "commit":
            producer.commit_transaction(30)
        else:
            # Sent first, so the aborted records are in the log (abort
            # alone would purge what is still queued in the client).
            producer.flush(30)
            producer.abort_transaction(30)
    check("confluent-kafka: three transactions (commit, abort, commit) over 3 partitions", True)
    committed = {p: [v for o, v in values if o == "commit"] for p, values in sent.items()}
    everything = {p: [v for _, v in values] for p, values in sent.items()}
    got = consume_all(addr, topic, "read_committed", 24)
    check("read_committed sees exactly the committed records, in order", got == committed,
          f"{ {p: len(v) for p, v in got.items()} }")
    got = consume_all(addr, topic, "read_uncommitted", 36)
    check("read_uncommitted sees all of them, in order", got == everything,
          f"{ {p: len(v) for p, v in got.items()} }")


def kafka_python(addr):
    """kafka-python's transactional producer (2.1+) and its read_committed
    consumer."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    topic = "txn-kafka-python"
    create_topic(addr, topic)
    producer = KafkaProducer(bootstrap_servers=addr, transactional_id="txn-kafka-python")
    producer.init_transactions()
    committed = []
    for outcome in ["commit", "abort", "commit"]:
        producer.begin_transaction()
        values = [f"{outcome}-{len(committed)}-{i}" for i in range(9)]
        for i, v in enumerate(values):
            producer.send(topic, v.encode(), partition=i % PARTITIONS)
        producer.flush(30)
        if outcome == "commit":
            producer.commit_transaction()
            committed += values
        else:
            producer.abort_transaction()
    producer.close(10)
    check("kafka-python: commit, abort, commit over 3 partitions", True)
    consumer = KafkaConsumer(bootstrap_servers=addr, isolation_level="read_committed", enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    got = [m.value.decode() for m in consumer]
    consumer.close()
    check("kafka-python: a read_committed consumer sees exactly the committed records",
          sorted(got) == sorted(committed), f"{len(got)} of {len(committed)}")


def batch_consume_and_lag(addr):
    """librdkafka's batch consume (consume(n)) skips control batches, and a
    read_committed consumer's end of partition and lag come from the last
    stable offset while a transaction is open."""
    import json
    from confluent_kafka import Consumer, Producer, TopicPartition
    topic = "txn-lag"
    create_topic(addr, topic, 1)
    producer = Producer({"bootstrap.servers": addr, "transactional.id": "txn-lag"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, f"c-{i}".encode(), partition=0)
    producer.commit_transaction(30)  # offsets 0-9, marker at 10
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, f"open-{i}".encode(), partition=0)
    producer.flush(30)  # offsets 11-15, open: the stable offset stays 11
    stats = []
    consumer = Consumer({"bootstrap.servers": addr, "group.id": "txn-lag-reader", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "statistics.interval.ms": 200,
                         "stats_cb": stats.append})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got, deadline = [], time.time() + 20
    while len(got) < 10 and time.time() < deadline:
        got += [m.value().decode() for m in consumer.consume(100, 0.5) if m.error() is None]
    extra = [m for m in consumer.consume(100, 2.0) if m.error() is None]
    check("batch consume (consume(100)) gets the 10 committed records and no control record",
          got == [f"c-{i}" for i in range(10)] and not extra, f"{got} + {len(extra)}")
    # librdkafka's lag is from the committed offset: commit the position.
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
    check("a read_committed consumer's partition end is the last stable offset (11), not the high watermark (16)",
          high == 11, f"{low} {high}")
    lag = None
    for _ in range(20):
        consumer.poll(0.2)
        for text in reversed(stats):
            p = json.loads(text).get("topics", {}).get(topic, {}).get("partitions", {}).get("0")
            if p and p.get("ls_offset", -1) >= 0 and p.get("committed_offset", -1) >= 0:
                lag = (p.get("ls_offset"), p.get("hi_offset"), p.get("consumer_lag"))
                break
        if lag:
            break
    check(f"its lag is reported from the stable offset (ls_offset 11 - committed {committed}), not from the "
          "high watermark (16)", lag is not None and lag[0] == 11 and lag[2] == 11 - committed,
          f"(ls_offset, hi_offset, lag) = {lag}")
    producer.commit_transaction(30)
    more, deadline = [], time.time() + 20
    while len(more) < 5 and time.time() < deadline:
        more += [m.value().decode() for m in consumer.consume(100, 0.5) if m.error() is None]
    consumer.close()
    check("once it commits, the consumer goes on with the 5 records", more == [f"open-{i}" for i in range(5)],
          f"{more}")


def hanging(addr):
    """A producer killed inside its transaction holds the stable offset
    until the coordinator aborts it at its timeout."""
    from confluent_kafka import Producer
    topic = "txn-hanging"
    create_topic(addr, topic, 1)
    child = subprocess.Popen([sys.executable, "-c", f"""
from confluent_kafka import Producer
import time
p = Producer({{"bootstrap.servers": "{addr}", "transactional.id": "txn-hanging", "transaction.timeout.ms": 4000}})
p.init_transactions(30)
p.begin_transaction()
for i in range(5):
    p.produce("{topic}", f"hung-{{i}}".encode(), partition=0)
p.flush(30)
print("produced", flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline().strip()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    check("a transactional producer produced and was killed inside its transaction", line == "produced", line)
    after = Producer({"bootstrap.servers": addr})
    for i in range(5):
        after.produce(topic, f"after-{i}".encode(), partition=0)
    after.flush(30)
    early = consume_all(addr, topic, "read_committed", 1, timeout=2, partitions=1)
    check("while it is open, read_committed consumers see nothing past it", early == {}, f"{early}")
    started = time.time()
    got = consume_all(addr, topic, "read_committed", 5, timeout=30, partitions=1)
    took = time.time() - started
    check(f"after transaction.timeout.ms it is aborted and they continue ({took + 2:.1f} s after the kill)",
          got == {0: [f"after-{i}" for i in range(5)]}, f"{got}")


def consume_transform_produce(addr):
    from confluent_kafka import Consumer, Producer, TopicPartition
    source, sink, group = "txn-input", "txn-output", "txn-transformer"
    create_topic(addr, source, 1)
    create_topic(addr, sink, 1)
    feeder = Producer({"bootstrap.servers": addr})
    n = 2000
    for i in range(n):
        feeder.produce(source, f"in-{i}".encode())
    feeder.flush(30)
    consumer = Consumer({"bootstrap.servers": addr, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([source])
    producer = Producer({"bootstrap.servers": addr, "transactional.id": "txn-transformer"})
    producer.init_transactions(30)
    done, deadline = 0, time.time() + 60
    while done < n and time.time() < deadline:
        batch = consumer.consume(500, 1.0)
        batch = [m for m in batch if m.error() is None]
        if not batch:
            continue
        producer.begin_transaction()
        for m in batch:
            producer.produce(sink, m.value().decode().replace("in-", "out-").encode())
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
        done += len(batch)
    consumer.close()
    got = consume_all(addr, sink, "read_committed", n, partitions=1)
    check(f"consume-transform-produce: the output holds each of {n} inputs once",
          got.get(0) == [f"out-{i}" for i in range(n)], f"{len(got.get(0, []))} records")
    checker = Consumer({"bootstrap.servers": addr, "group.id": group})
    committed = checker.committed([TopicPartition(source, 0)], timeout=10)
    checker.close()
    check("send_offsets_to_transaction committed the group's offset with the transaction",
          committed[0].offset == n, f"{committed[0].offset}")


def fencing_after_restart(addr_holder, restart):
    from confluent_kafka import KafkaException, Producer
    topic = "txn-fenced"
    create_topic(addr_holder[0], topic, 1)
    first = Producer({"bootstrap.servers": addr_holder[0], "transactional.id": "txn-fenced"})
    first.init_transactions(30)
    first.begin_transaction()
    first.produce(topic, b"first", partition=0)
    first.commit_transaction(30)
    restart()
    second = Producer({"bootstrap.servers": addr_holder[0], "transactional.id": "txn-fenced"})
    second.init_transactions(30)
    second.begin_transaction()
    second.produce(topic, b"second", partition=0)
    second.commit_transaction(30)
    got = consume_all(addr_holder[0], topic, "read_committed", 2, partitions=1)
    check("after a restart the coordinator still knows the transactional id and its committed data is there",
          got == {0: ["first", "second"]}, f"{got}")
    # The first instance is a zombie now: its producer id's epoch is old.
    zombie = Producer({"bootstrap.servers": addr_holder[0], "transactional.id": "txn-fenced",
                       "transaction.timeout.ms": 10000})
    zombie.init_transactions(30)
    fenced = None
    try:
        second.begin_transaction()
        second.produce(topic, b"zombie", partition=0)
        second.commit_transaction(10)
    except KafkaException as e:
        fenced = e.args[0]
    check("the older instance is fenced by the newer one (a fatal error)", fenced is not None and fenced.fatal(),
          f"{fenced!r}")


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-interop-txn-")
    state = {}
    proc, log, addr = start_broker(BINARY, data_dir)
    state.update(proc=proc, log=log)
    addr_holder = [addr]

    def restart():
        code = stop_broker(state["proc"])
        check("broker stops cleanly for the restart", code == 0, f"exit {code}")
        state["proc"], state["log"], addr_holder[0] = start_broker(BINARY, data_dir)

    run_steps([
        ("confluent-kafka", lambda: confluent(addr_holder[0])),
        ("kafkajs", lambda: run_kafkajs("kafkajs_txn.js", [addr_holder[0]], NODE_MODULES)),
        ("kafka-python", lambda: kafka_python(addr_holder[0])),
        ("batch consume and lag", lambda: batch_consume_and_lag(addr_holder[0])),
        ("hanging transaction", lambda: hanging(addr_holder[0])),
        ("consume-transform-produce", lambda: consume_transform_produce(addr_holder[0])),
        ("fencing after a restart", lambda: fencing_after_restart(addr_holder, restart)),
    ])
    finish("transactions", state["proc"], state["log"], data_dir)


if __name__ == "__main__":
    main()
