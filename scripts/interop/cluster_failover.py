#!/usr/bin/env python3
"""Cluster mode: acknowledged acks=all writes survive the death of their
leader.

Starts etcd and three brokers (cluster_common), creates a 12-partition
topic, and runs a confluent-kafka idempotent acks=all producer of RECORDS
records (default 100,000; the issue's run uses 1,000,000), paced to last
ROUNDS x 12 s + 10 s, while, ROUNDS
times (default 3; the issue's run uses 5), the broker leading the most
partitions is killed with SIGKILL and started again once the others have
taken its partitions. Then checks:
  - every acknowledged record is read back exactly once, at the offset
    its acknowledgement gave (a new leader rebuilt the partition from the
    WAL in object storage; the producer's retries were deduplicated by
    the idempotent state replayed with it);
  - produce resumed on the dead broker's partitions within lease TTL + 5 s
    of each kill (the time is printed per round).
Prints one PASS/FAIL line per check and "N passed, N failed". Every wait
is bounded.
"""
import os
import signal
import sys
import threading
import time

from cluster_common import Cluster, etcd_count, leaders, read_all
from common import check, results

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
RECORDS = int(os.environ.get("RECORDS", "100000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
TOPIC = "durable"
ROUND_SECONDS = 12
PARTITIONS = 12


def main():
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    with Cluster(BINARY, 3) as cluster:
        addrs = cluster.addrs
        bootstrap = ",".join(addrs.values())
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(15)
        cluster.wait_led(TOPIC, PARTITIONS)

        acked = {}  # value -> (partition, offset, time)
        errors = []
        lock = threading.Lock()

        def on_delivery(err, msg):
            with lock:
                if err is not None:
                    errors.append(str(err))
                else:
                    acked[msg.value().decode()] = (msg.partition(), msg.offset(), time.time())

        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                             "linger.ms": 5, "message.timeout.ms": 120000, "request.timeout.ms": 10000})
        stop = threading.Event()
        produced_at = []  # index -> when it was handed to the client
        sent = [0]

        # Paced so that the kills fall inside the run: each round takes a
        # lease TTL, the takeover and a restart.
        rate = max(RECORDS / (ROUNDS * ROUND_SECONDS + 10), 1000)
        began = time.time()

        def produce():
            for i in range(RECORDS):
                if stop.is_set():
                    break
                ahead = began + i / rate - time.time()
                if ahead > 0:
                    producer.poll(ahead)
                value = f"r-{i:08d}"
                produced_at.append(time.time())
                while True:
                    try:
                        producer.produce(TOPIC, key=value.encode(), value=value.encode(), on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
                producer.poll(0)
                sent[0] = i + 1
            producer.flush(180)

        writer = threading.Thread(target=produce)
        writer.start()

        # A group consumes meanwhile and commits every 500 records: what
        # it committed successfully must be what its group has at the end,
        # whichever brokers coordinated it on the way.
        group_committed = {}
        group_stop = threading.Event()

        def consume():
            consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "failover-group",
                                 "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                 "session.timeout.ms": 10000})
            consumer.subscribe([TOPIC])
            since = 0
            while not group_stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                since += 1
                if since >= 500:
                    try:
                        done = consumer.commit(asynchronous=False)
                        for tp in done or []:
                            if tp.error is None and tp.offset >= 0:
                                group_committed[tp.partition] = tp.offset
                        since = 0
                    except Exception:
                        pass  # a coordinator moving: committed next time
            consumer.close()

        reader = threading.Thread(target=consume)
        reader.start()
        resumed = []
        for round_no in range(ROUNDS):
            # Each kill 5 s into its round of the paced run.
            due = began + 5 + round_no * ROUND_SECONDS
            while time.time() < due and writer.is_alive():
                time.sleep(0.05)
            led = leaders(addrs[min(addrs)], TOPIC)
            counts = {}
            for node in led.values():
                counts[node] = counts.get(node, 0) + 1
            victim = max((n for n in counts if n in cluster.running()), key=lambda n: counts[n])
            victim_parts = {p for p, n in led.items() if n == victim}
            killed_at = time.time()
            cluster.kill(victim)
            # Produce resumed: a record handed to the client after the kill
            # (so never sent to the dead broker) acknowledged on one of the
            # victim's partitions.
            first = None
            wait_until = killed_at + cluster.ttl + 30
            while first is None and time.time() < wait_until:
                with lock:
                    after = [t for v, (p, _, t) in acked.items()
                             if p in victim_parts and produced_at[int(v[2:])] > killed_at]
                if after:
                    first = min(after) - killed_at
                else:
                    time.sleep(0.05)
            resumed.append(first)
            check(f"round {round_no + 1}: kill -9 of broker {victim} (leading {len(victim_parts)}): produce resumed"
                  f" on its partitions in {first if first is None else round(first, 1)} s (TTL {cluster.ttl} s + 5)",
                  first is not None and first <= cluster.ttl + 5)
            cluster.wait_led(TOPIC, PARTITIONS, among=cluster.running())
            cluster.start(victim)
        writer.join(600)
        time.sleep(2)
        group_stop.set()
        reader.join(60)
        check(f"producer finished ({sent[0]} sent, {len(acked)} acknowledged, {len(errors)} failed)",
              not writer.is_alive() and len(acked) + len(errors) == sent[0], repr(errors[:3]))

        cluster.wait_led(TOPIC, PARTITIONS)
        checker = Consumer({"bootstrap.servers": bootstrap, "group.id": "failover-group",
                            "enable.auto.commit": False})
        found = {}
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                found = {tp.partition: tp.offset for tp in
                         checker.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
                         if tp.offset >= 0}
                if found == group_committed:
                    break
            except Exception:
                pass
            time.sleep(1)
        checker.close()
        check(f"the consuming group's committed offsets are intact after {ROUNDS} rounds "
              f"({sum(group_committed.values())} records' worth over {len(group_committed)} partitions)",
              group_committed and found == group_committed, f"committed {group_committed}, found {found}")
        seen, duplicates = read_all(bootstrap, TOPIC, PARTITIONS)
        missing = [v for v in acked if v not in seen]
        moved = [v for v, (p, o, _) in acked.items() if v in seen and seen[v] != (p, o)]
        check(f"every one of {len(acked)} acknowledged records read back", not missing,
              f"{len(missing)} missing, e.g. {missing[:3]}")
        check("each at the offset its acknowledgement gave", not moved, f"{len(moved)} moved, e.g. {moved[:3]}")
        check("no record twice", duplicates == 0, f"{duplicates} duplicates")
        pointers = etcd_count(cluster.etcd_url, "/chronik-wal/")
        check(f"etcd stays small: {pointers} WAL pointers for {len(acked)} records in {PARTITIONS} partitions "
              f"(folded into per-partition objects)", pointers <= PARTITIONS * 300, f"{pointers} keys")
        times = sorted(t for t in resumed if t is not None)
        if times:
            print(f"     failover (kill to first acknowledged produce on its partitions): "
                  f"p50 {times[len(times) // 2]:.1f} s, max {times[-1]:.1f} s over {len(times)} rounds")
    passed = sum(results)
    print(f"cluster_failover: {passed} passed, {len(results) - passed} failed", flush=True)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
