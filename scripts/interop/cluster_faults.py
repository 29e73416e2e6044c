#!/usr/bin/env python3
"""Cluster mode under faults, with real clients, etcd and brokers:
  - pause: a leader SIGSTOPped for three lease TTLs, with acks=all writes
    sent to it meanwhile (kafka-python, no retries, so any answer is its),
    then SIGCONT: none of those writes is acknowledged, it learns it lost
    its partitions, and they are not in the log the new leader serves;
  - etcd: etcd stopped for 10 s under an acks=1 and an acks=all producer:
    acks=1 goes on being acknowledged, acks=all waits (acknowledged only
    after etcd is back), and every acknowledged record reads back;
  - housekeeping: DeleteRecords' cut reaches the WAL in etcd (pointers
    below it dropped, its start recorded), a leader killed afterwards is
    replaced by one that rebuilds from that start, and a deleted topic's
    pointers, then the objects nothing else names, are swept away (the
    brokers run with WAL_GARBAGE_GRACE_MS=10000, so the sweeper runs
    throughout the other parts too and must take nothing still needed);
    300 commits of one group leave few keys in etcd (its offsets
    partition's WAL is folded whole), and its next coordinator, after a
    kill -9, serves the last commit; a tiered topic's WAL is dropped below
    its uploaded segments, and two leaders killed in turn are each
    replaced by one that rebuilds from the bucket's segments (under
    per-epoch manifests) plus the WAL above them, nothing lost;
  - join: a fourth broker joins under an idempotent acks=all producer and
    takes its share of the partitions, then broker 1 stops gracefully and
    hands its partitions over: no delivery fails, and every acknowledged
    record reads back once at its offset.
Usage: cluster_faults.py BINARY [pause|etcd|housekeeping|join ...]
(default: all).
Every wait is bounded.
"""
import signal
import sys
import threading
import time
import uuid

import kafka_wire
from cluster_common import Cluster, etcd_count, etcd_prefix, leaders, read_all, wait_for
from common import check, results

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
PARTS = sys.argv[2:] or ["pause", "etcd", "housekeeping", "join"]
PARTITIONS = 12


def create(cluster, topic):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(15)
    return cluster.wait_led(topic, PARTITIONS)


class PacedProducer:
    """A confluent-kafka producer in a thread, `rate` records a second,
    recording each acknowledgement's (partition, offset, time)."""

    def __init__(self, cluster, topic, prefix, rate, **config):
        from confluent_kafka import Producer
        self.producer = Producer({"bootstrap.servers": cluster.bootstrap(), "linger.ms": 5, **config})
        self.topic, self.prefix, self.rate = topic, prefix, rate
        self.acked, self.errors, self.sent = {}, [], 0
        self.produced_at = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def on_delivery(self, err, msg):
        with self.lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.acked[msg.value().decode()] = (msg.partition(), msg.offset(), time.time())

    def run(self):
        began = time.time()
        i = 0
        while not self.stopping.is_set():
            ahead = began + i / self.rate - time.time()
            if ahead > 0:
                self.producer.poll(ahead)
            value = f"{self.prefix}-{i:08d}"
            if len(self.produced_at) <= i:
                self.produced_at.append(time.time())
            try:
                self.producer.produce(self.topic, key=value.encode(), value=value.encode(),
                                      on_delivery=self.on_delivery)
                i += 1
                self.sent = i
            except BufferError:
                self.producer.poll(0.05)
            self.producer.poll(0)
        self.producer.flush(120)

    def stop(self):
        self.stopping.set()
        self.thread.join(180)

    def acked_between(self, start, end):
        with self.lock:
            return sum(1 for (_, _, t) in self.acked.values() if start <= t < end)

    def produced_and_acked_between(self, start, end):
        """Records handed to the client at or after `start` and
        acknowledged before `end`."""
        with self.lock:
            return sum(1 for v, (_, _, t) in self.acked.items()
                       if t < end and self.produced_at[int(v.rsplit("-", 1)[1])] >= start)


def check_read_back(cluster, topic, producers):
    seen, twice = read_all(cluster.bootstrap(), topic, PARTITIONS, timeout=120)
    for p in producers:
        missing = [v for v in p.acked if v not in seen]
        moved = [v for v, (part, off, _) in p.acked.items() if v in seen and seen[v] != (part, off)]
        check(f"{topic}: every one of {len(p.acked)} records acknowledged to {p.prefix} read back at its offset",
              not missing and not moved, f"{len(missing)} missing, {len(moved)} moved: {(missing + moved)[:3]}")
    check(f"{topic}: no record twice", twice == 0, f"{twice} twice")


def pause(cluster):
    import kafka
    topic = "paused"
    led = create(cluster, topic)
    victim = led[0]
    addr = cluster.addrs[victim]
    producer = kafka.KafkaProducer(bootstrap_servers=addr, acks="all", retries=0, request_timeout_ms=60000,
                                   max_block_ms=10000, linger_ms=0, metadata_max_age_ms=600000)
    producer.send(topic, value=b"before-pause", partition=0).get(timeout=30)
    proc = cluster.brokers[victim][0]
    proc.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    futures = [producer.send(topic, value=f"paused-{i}".encode(), partition=0) for i in range(20)]
    others = [n for n in cluster.running() if n != victim]
    moved, ok = wait_for(lambda: (lambda now: now if now.get(0) not in (None, -1, victim) else None)(
        leaders(cluster.addrs[others[0]], topic)), 3 * cluster.ttl + 10)
    check(f"SIGSTOP of broker {victim}: partition 0 led by broker {moved and moved.get(0)} within "
          f"{time.time() - stopped_at:.1f} s", ok, repr(moved))
    remaining = stopped_at + 3 * cluster.ttl - time.time()
    if remaining > 0:
        time.sleep(remaining)
    proc.send_signal(signal.SIGCONT)
    outcomes = []
    for f in futures:
        try:
            f.get(timeout=60)
            outcomes.append("acknowledged")
        except Exception as e:
            outcomes.append(type(e).__name__)
    producer.close(5)
    check(f"none of the 20 acks=all writes sent to the paused broker is acknowledged ({sorted(set(outcomes))})",
          "acknowledged" not in outcomes, repr(outcomes))
    _, learnt = wait_for(lambda: leaders(addr, topic).get(0) not in (None, -1, victim), 15)
    check("after SIGCONT it reports the new leader (it learnt it lost the partition)", learnt)
    log = cluster.brokers[victim][1]
    log.seek(0)
    text = log.read()
    check("and says so in its log", "no longer has this broker's lease" in text, text[-2000:])
    seen, _ = read_all(cluster.bootstrap(), topic, PARTITIONS, timeout=120)
    check("the log the new leader serves has the write from before the pause and none from during it",
          "before-pause" in seen and not any(v.startswith("paused-") for v in seen), repr(sorted(seen)[:5]))


def etcd_outage(cluster):
    topic = "outage"
    create(cluster, topic)
    fast = PacedProducer(cluster, topic, "acks1", 400, acks="1")
    safe = PacedProducer(cluster, topic, "acksall", 200, acks="all", **{"enable.idempotence": True,
                                                                       "message.timeout.ms": 120000})
    time.sleep(3)
    cluster.stop_etcd()
    down = time.time()
    time.sleep(10)
    cluster.restart_etcd()
    up = time.time()
    time.sleep(8)
    fast.stop()
    safe.stop()
    during_fast = fast.acked_between(down + 1, up)
    check(f"etcd down 10 s: acks=1 still acknowledged meanwhile ({during_fast} records)", during_fast > 1000,
          f"errors: {fast.errors[:3]}")
    # Produced once etcd was down, acknowledged before it was back: none
    # may be (an acknowledgement of a record committed before the outage
    # can still arrive during it).
    during_safe = safe.produced_and_acked_between(down, up)
    check(f"no acks=all record produced while etcd is down is acknowledged before it is back "
          f"({during_safe} were)", during_safe == 0)
    check(f"acks=all resumes once etcd is back ({safe.acked_between(up, up + 8)} records in 8 s)",
          safe.acked_between(up, up + 8) > 0)
    check("no acks=all delivery failed", not safe.errors, repr(safe.errors[:3]))
    check_read_back(cluster, topic, [fast, safe])


def housekeeping(cluster):
    import json
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient
    topic = "swept"
    create(cluster, topic)
    acked = {}

    def delivered(err, msg):
        if err is None:
            acked[msg.value().decode()] = (msg.partition(), msg.offset())
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "linger.ms": 2, "acks": "all",
                         "enable.idempotence": True})
    for i in range(3000):
        value = f"swept-{i:06d}"
        producer.produce(topic, key=value.encode(), value=value.encode(), on_delivery=delivered)
        if i % 100 == 99:
            producer.poll(0.05)  # spread over many WAL flushes
    producer.flush(60)
    check("housekeeping: 3000 idempotent acks=all records acknowledged", len(acked) == 3000, f"{len(acked)}")
    topic_id, led = kafka_wire.topic_partitions(cluster.addrs[cluster.running()[0]], topic)
    ends = {}
    for part, offset in acked.values():
        ends[part] = max(ends.get(part, 0), offset + 1)
    target = max(ends, key=ends.get)
    cut = ends[target] // 2
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    admin.delete_records([TopicPartition(topic, target, cut)])[TopicPartition(topic, target, cut)].result(15)
    start_key = f"/chronik-wal-start/{topic}/{topic_id}/{target}"
    pointers_of = f"/chronik-wal/{topic}/{topic_id}/{target}/"

    def trimmed():
        start = etcd_prefix(cluster.etcd_url, start_key).get(start_key)
        pointers = [json.loads(v) for v in etcd_prefix(cluster.etcd_url, pointers_of).values()]
        return (start == str(cut).encode() and pointers and all(p["end"] > cut for p in pointers)
                and min(p["base"] for p in pointers) <= cut)
    _, ok = wait_for(trimmed, 10)
    check(f"DeleteRecords to {cut} on partition {target}: the WAL pointers below it are dropped and its start "
          "is recorded in etcd", ok, repr(etcd_prefix(cluster.etcd_url, start_key)))

    victim = led[target][0]
    cluster.kill(victim)
    cluster.wait_led(topic, PARTITIONS, among=set(cluster.running()))
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap(), "group.id": "swept-read",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, target), timeout=30)
    consumer.assign([TopicPartition(topic, target, -2)])
    got = {}
    deadline = time.time() + 60
    while time.time() < deadline and (not got or max(got) < high - 1):
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            got[msg.offset()] = msg.value().decode()
    consumer.close()
    expected = {off: v for v, (part, off) in acked.items() if part == target and off >= cut}
    check(f"after kill -9 of its leader (broker {victim}), the new leader starts partition {target} at {cut} "
          f"and serves every record above it at its offset ({len(expected)})",
          (low, high) == (cut, ends[target]) and got == expected,
          f"watermarks {(low, high)}, {len(got)} read, first {min(got) if got else None}")
    cluster.start(victim)
    check(f"broker {victim} rejoins", cluster.wait_members(3))

    named = {json.loads(v)["object"] for v in etcd_prefix(cluster.etcd_url, f"/chronik-wal/{topic}/").values()}
    admin.delete_topics([topic])[topic].result(15)
    _, ok = wait_for(lambda: etcd_count(cluster.etcd_url, f"/chronik-wal/{topic}/") == 0
                     and etcd_count(cluster.etcd_url, f"/chronik-wal-start/{topic}/") == 0, 20)
    check("the deleted topic's WAL pointers and start keys are swept from etcd", ok)

    def orphans():
        still = {json.loads(v)["object"] for v in etcd_prefix(cluster.etcd_url, "/chronik-wal/").values()}
        return (named - still) & (cluster.objects("wal/") | cluster.objects("fold/"))
    left, ok = wait_for(lambda: not orphans(), 30)
    check(f"then the {len(named)} objects it named that nothing else names are deleted from the store", ok,
          f"{len(orphans())} left")
    group_offsets_fold(cluster)
    tiered_failover(cluster)


def group_offsets_fold(cluster):
    """Many commits of one group: its offsets partition's WAL is folded
    whole, so etcd does not grow with the commits, and after a kill -9 of
    its coordinator the next one serves the last commit."""
    from confluent_kafka import Consumer, TopicPartition
    from kafka.protocol.metadata import FindCoordinatorRequest, FindCoordinatorResponse
    topic, group = "committed", "many-commits"
    create(cluster, topic)
    from kafka.record.util import calc_crc32c
    # The group's offsets partition, as Kafka places it: crc32c(group) % 50.
    offsets = f"/chronik-wal/__consumer_offsets/{uuid.UUID(int=0)}/{calc_crc32c(group.encode()) % 50}/"
    before = etcd_count(cluster.etcd_url, offsets)
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap(), "group.id": group,
                         "enable.auto.commit": False})
    for i in range(1, 301):
        consumer.commit(offsets=[TopicPartition(topic, i % PARTITIONS, i)], asynchronous=False)
    consumer.close()
    expected = {p: max(i for i in range(1, 301) if i % PARTITIONS == p) for p in range(PARTITIONS)}
    _, ok = wait_for(lambda: etcd_count(cluster.etcd_url, offsets) - before < 150, 10)
    check(f"300 commits of one group: its offsets partition's WAL is folded "
          f"({etcd_count(cluster.etcd_url, offsets) - before} new keys, not 300)", ok)
    answer = kafka_wire.call(cluster.addrs[cluster.running()[0]],
                             FindCoordinatorRequest[4](key_type=0, coordinator_keys=[group]),
                             FindCoordinatorResponse)
    coordinator = answer.coordinators[0].node_id
    cluster.kill(coordinator)

    def committed():
        c = Consumer({"bootstrap.servers": cluster.bootstrap(), "group.id": group, "enable.auto.commit": False})
        try:
            got = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
            return {tp.partition: tp.offset for tp in got}
        except Exception:
            return None
        finally:
            c.close()
    got, ok = wait_for(lambda: (lambda now: now if now == expected else None)(committed()), cluster.ttl + 20)
    check(f"after kill -9 of its coordinator (broker {coordinator}), the next one serves the last commit of "
          "every partition", ok, f"{got} != {expected}")
    cluster.start(coordinator)
    check(f"broker {coordinator} rejoins", cluster.wait_members(3))


def tiered_failover(cluster):
    """A tiered topic: closed segments go to object storage and the WAL
    below them is dropped; a new leader rebuilds from the remote segments
    plus the WAL above them, twice running (the second time from segments
    the first new leader uploaded), and serves every record at its offset."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    topic, parts = "tiered", 3
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    admin.create_topics([NewTopic(topic, parts, 1, config={"remote.storage.enable": "true",
                                                           "segment.bytes": "65536"})])[topic].result(15)
    cluster.wait_led(topic, parts)
    acked = {}

    def produce(prefix, count):
        def delivered(err, msg):
            if err is None:
                acked[msg.value().decode()[:20]] = (msg.partition(), msg.offset())
        producer = Producer({"bootstrap.servers": cluster.bootstrap(), "linger.ms": 5, "acks": "all",
                             "enable.idempotence": True})
        for i in range(count):
            producer.produce(topic, key=str(i).encode(), value=f"{prefix}-{i:06d}".ljust(1000, ".").encode(),
                             on_delivery=delivered)
            if i % 200 == 199:
                producer.poll(0.01)
        producer.flush(60)
    topic_id, _ = kafka_wire.topic_partitions(cluster.addrs[cluster.running()[0]], topic)
    start_key = f"/chronik-wal-start/{topic}/{topic_id}/0"

    def wal_start():
        value = etcd_prefix(cluster.etcd_url, start_key).get(start_key)
        return int(value) if value else 0
    floor = 0
    for round_ in (1, 2):
        produce(f"tiered{round_}", 3000)
        check(f"tiered round {round_}: every record acknowledged ({len(acked)})", len(acked) == 3000 * round_)
        started, ok = wait_for(lambda: (lambda now: now if now > floor else None)(wal_start()), 20)
        check(f"tiered round {round_}: segments uploaded and the WAL below them dropped "
              f"(partition 0's WAL starts at {started})", ok)
        floor = started or floor
        _, led = kafka_wire.topic_partitions(cluster.addrs[cluster.running()[0]], topic)
        victim, epoch = led[0]
        own = f"topics/{topic_id}/0/manifest-e{epoch:010d}.json"
        manifests, ok = wait_for(lambda: (lambda m: m if m == {own} else None)(
            {k for k in cluster.objects(f"topics/{topic_id}/0/") if "manifest" in k}), 10)
        check(f"tiered round {round_}: the leader writes the manifest of its own epoch ({epoch}), and earlier "
              "leaders' are gone", ok, repr(manifests))
        cluster.kill(victim)
        cluster.wait_led(topic, parts, among=set(cluster.running()))
        seen, twice = read_all(cluster.bootstrap(), topic, parts, timeout=120)
        seen = {v[:20]: where for v, where in seen.items()}
        wrong = [v for v, where in acked.items() if seen.get(v) != where]
        check(f"tiered round {round_}: after kill -9 of partition 0's leader (broker {victim}), every one of "
              f"{len(acked)} records reads back at its offset, from the bucket and the WAL",
              not wrong and twice == 0, f"{len(wrong)} wrong, e.g. {wrong[:3]}; {twice} twice")
        cluster.start(victim)
        check(f"broker {victim} rejoins", cluster.wait_members(3))
    admin.delete_topics([topic])[topic].result(15)
    left, ok = wait_for(lambda: not cluster.objects(f"topics/{topic_id}/"), 30)
    check("the deleted tiered topic's segments and manifests are swept from the bucket", ok,
          f"{len(cluster.objects(f'topics/{topic_id}/'))} objects left")


def join(cluster):
    topic = "rebalance"
    create(cluster, topic)
    producer = PacedProducer(cluster, topic, "join", 500, acks="all", **{"enable.idempotence": True,
                                                                         "message.timeout.ms": 120000})
    time.sleep(3)
    cluster.start(4)
    cluster.n = 4
    check("a fourth broker joins: every broker lists 4", cluster.wait_members(4))
    share, ok = wait_for(lambda: (lambda now: now if sum(1 for v in now.values() if v == 4) >= 3 else None)(
        leaders(cluster.addrs[4], topic)), 15)
    check("it takes its share of the partitions (3 of 12)", ok, repr(share))
    time.sleep(3)
    stopped_at = time.time()
    code = cluster.kill(1, signal.SIGTERM)
    check("broker 1 stops gracefully (exit 0)", code == 0, f"exit {code}")
    _, ok = wait_for(lambda: (lambda now: len(now) == PARTITIONS and 1 not in now.values() and -1 not in now.values())(
        leaders(cluster.addrs[2], topic)), cluster.ttl)
    check(f"its partitions are led elsewhere within the lease TTL ({time.time() - stopped_at:.1f} s)", ok)
    time.sleep(3)
    producer.stop()
    check(f"no delivery failed across the join and the stop ({producer.sent} sent)", not producer.errors,
          repr(producer.errors[:3]))
    check_read_back(cluster, topic, [producer])


def main():
    with Cluster(BINARY, 3, {"WAL_GARBAGE_GRACE_MS": "10000", "LOG_RETENTION_CHECK_INTERVAL_SECS": "1"}) as cluster:
        for part, run in [("pause", pause), ("etcd", etcd_outage), ("housekeeping", housekeeping), ("join", join)]:
            if part in PARTS:
                try:
                    run(cluster)
                except Exception as e:
                    check(f"{part}: no client error", False, repr(e))
    passed = sum(results)
    print(f"cluster_faults: {passed} passed, {len(results) - passed} failed", flush=True)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
