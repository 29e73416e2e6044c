#!/usr/bin/env python3
"""Interop: three brokers in cluster mode, leadership in a real etcd.

Starts etcd (Debian's etcd-server) and three `chronik-ingest` brokers on
127.0.0.1 (ephemeral ports, scratch directories, moto's S3 server),
then checks, with independent clients:
  - kcat, confluent-kafka, kafka-python and kafkajs bootstrap from any one
    broker and see all three (DescribeCluster too);
  - a 12-partition topic (replication factor 3 accepted) has its leaders
    spread over all three brokers, 4 each;
  - each client produces to it through whichever broker leads each
    partition, and a confluent-kafka group consumer (and kafkajs's, on a
    topic of its own) reads everything back;
  - a broker killed with SIGKILL loses its partitions when its lease
    expires: the other two lead them at a higher leader epoch, and
    produce to every partition works again within lease TTL + 5 s;
  - a broker stopped with SIGTERM hands its partitions over at once (well
    before its lease would expire) and exits 0;
  - Produce and Fetch sent to a broker that does not lead the partition
    name the leader and its endpoint (KIP-951);
  - after the failover, records carry the leader epoch that wrote them and
    OffsetForLeaderEpoch answers from those epochs (and fences stale or
    future current epochs).
What failover does to the data is cluster_failover.py's and
cluster_faults.py's; this suite checks leadership, routing and
membership. Every wait is bounded.
"""
import signal
import subprocess
import sys
import time

import kafka_wire
from cluster_common import Cluster, leaders, wait_for
import os
import urllib.error
import urllib.request

from common import check, free_port, results, run_kafkajs, run_steps, scrape, start_broker, stop_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
NODE_MODULES = sys.argv[2] if len(sys.argv) > 2 else ""
TOPIC = "events"


def metadata(addr, timeout=10):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": addr}).list_topics(timeout=timeout)


def produce_confluent(addr, topic, values, **extra):
    from confluent_kafka import Producer
    acked, errors = [], []
    producer = Producer({"bootstrap.servers": addr, "linger.ms": 5, **extra})
    for v in values:
        producer.produce(topic, key=v.encode(), value=v.encode(),
                         on_delivery=lambda err, msg: (errors if err else acked).append(err or msg.partition()))
    producer.flush(30)
    return acked, errors


def leader_hints(addrs):
    """KIP-951: Produce (v10+) and Fetch (v16+) sent to a broker that does
    not lead the partition answer NOT_LEADER_OR_FOLLOWER naming the leader,
    its epoch and its endpoint."""
    from kafka.protocol.consumer import FetchRequest, FetchResponse
    from kafka.protocol.producer import ProduceRequest, ProduceResponse
    topic_id, led = kafka_wire.topic_partitions(addrs[1], TOPIC)
    elsewhere = [(p, leader, epoch) for p, (leader, epoch) in sorted(led.items()) if leader not in (1, -1)]
    if not elsewhere:
        check("KIP-951: a partition led by another broker to ask broker 1 about", False, repr(led))
        return
    partition, leader, epoch = elsewhere[0]
    T = ProduceRequest.TopicProduceData
    produce = ProduceRequest[11](transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
        T(name=TOPIC, partition_data=[T.PartitionProduceData(index=partition,
                                                             records=kafka_wire.record_batch([b"hint"]))])])
    answer = kafka_wire.call(addrs[1], produce, ProduceResponse)
    p = answer.responses[0].partition_responses[0]
    nodes = {n.node_id: f"{n.host}:{n.port}" for n in answer.node_endpoints}
    check(f"Produce v11 to a non-leader: NOT_LEADER_OR_FOLLOWER naming leader {leader} at epoch {epoch} "
          "and its endpoint (KIP-951)",
          p.error_code == 6 and (p.current_leader.leader_id, p.current_leader.leader_epoch) == (leader, epoch)
          and nodes == {leader: addrs[leader]},
          f"error {p.error_code}, leader {p.current_leader}, endpoints {nodes}")
    F = FetchRequest.FetchTopic
    fetch = FetchRequest[16](max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                             session_id=0, session_epoch=-1, topics=[
                                 F(topic_id=topic_id, partitions=[F.FetchPartition(
                                     partition=partition, current_leader_epoch=-1, fetch_offset=0,
                                     last_fetched_epoch=-1, log_start_offset=-1, partition_max_bytes=1 << 20)])],
                             forgotten_topics_data=[], rack_id="")
    answer = kafka_wire.call(addrs[1], fetch, FetchResponse)
    p = answer.responses[0].partitions[0]
    nodes = {n.node_id: f"{n.host}:{n.port}" for n in answer.node_endpoints}
    check(f"Fetch v16 from a non-leader: NOT_LEADER_OR_FOLLOWER naming leader {leader} and its endpoint (KIP-951)",
          p.error_code == 6 and (p.current_leader.leader_id, p.current_leader.leader_epoch) == (leader, epoch)
          and nodes == {leader: addrs[leader]},
          f"error {p.error_code}, leader {p.current_leader}, endpoints {nodes}")


def leader_epochs(addrs, partition):
    """After a failover, batches carry the epoch that wrote them and
    OffsetForLeaderEpoch answers from those epochs, with the fencing
    errors for a stale or future current epoch."""
    from confluent_kafka import Consumer, TopicPartition
    from kafka.protocol.consumer import OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse
    _, led = kafka_wire.topic_partitions(addrs[1], TOPIC)
    leader, epoch = led[partition]
    consumer = Consumer({"bootstrap.servers": addrs[1], "group.id": "epochs", "enable.auto.commit": False})
    low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=15)
    consumer.assign([TopicPartition(TOPIC, partition, low)])
    written = {}
    deadline = time.time() + 30
    while time.time() < deadline and len(written) < high - low:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            written[msg.offset()] = msg.leader_epoch()
    consumer.close()
    since = min((off for off, e in written.items() if e == epoch), default=None)
    earlier = {e for off, e in written.items() if since is not None and off < since}
    check(f"partition {partition}'s records carry the epoch that wrote them: {sorted(set(written.values()))}, "
          f"epoch {epoch} from offset {since}",
          since is not None and earlier and max(earlier) < epoch
          and all(e == epoch for off, e in written.items() if off >= since), repr(written)[:300])

    def ask(current, wanted):
        T = OffsetForLeaderEpochRequest.OffsetForLeaderTopic
        request = OffsetForLeaderEpochRequest[4](replica_id=-1, topics=[T(topic=TOPIC, partitions=[
            T.OffsetForLeaderPartition(partition=partition, current_leader_epoch=current, leader_epoch=wanted)])])
        p = kafka_wire.call(addrs[leader], request, OffsetForLeaderEpochResponse).topics[0].partitions[0]
        return p.error_code, p.leader_epoch, p.end_offset
    answers = {
        "the previous epoch ends where this one began": (ask(epoch, epoch - 1), (0, max(earlier or {-1}), since)),
        "the current epoch ends at the log end": (ask(epoch, epoch), (0, epoch, high)),
        "a stale current epoch is FENCED_LEADER_EPOCH": (ask(epoch - 1, epoch - 1)[0], 74),
        "a future current epoch is UNKNOWN_LEADER_EPOCH": (ask(epoch + 1, epoch)[0], 75),
    }
    for what, (got, expected) in answers.items():
        check(f"OffsetForLeaderEpoch on partition {partition} (leader {leader}, epoch {epoch}): {what}",
              got == expected, f"{got} != {expected}")


def main():
    with Cluster(BINARY, 3) as cluster:
        run(cluster)
    passed = sum(results)
    print(f"cluster: {passed} passed, {len(results) - passed} failed", flush=True)
    sys.exit(0 if all(results) else 1)


def run(cluster):
    addrs = cluster.addrs

    def all_see_three():
        for addr in addrs.values():
            md = metadata(addr)
            if sorted(md.brokers) != [1, 2, 3]:
                return None
        return True

    _, ok = wait_for(all_see_three, 20)
    check("every broker's Metadata lists brokers 1, 2 and 3", ok)
    md = metadata(addrs[2])
    check("the brokers advertise their own listeners",
          {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()} == addrs, repr(md.brokers))
    check("one controller, a live broker", md.controller_id in (1, 2, 3), repr(md.controller_id))

    def kcat_sees_three():
        for addr in addrs.values():
            out = subprocess.run(["kcat", "-b", addr, "-L"], capture_output=True, text=True, timeout=30)
            if " 3 brokers:" not in out.stdout:
                return False
        return True
    check("kcat -L from each broker lists 3 brokers", kcat_sees_three())

    import kafka
    kp = kafka.KafkaAdminClient(bootstrap_servers=addrs[3], request_timeout_ms=10000)
    described = kp.describe_cluster()
    check("kafka-python DescribeCluster (from broker 3) lists 3 brokers",
          sorted(b.get("node_id", b.get("broker_id")) for b in described["brokers"]) == [1, 2, 3], repr(described))
    kp.close()

    def ready(node_metrics):
        try:
            return urllib.request.urlopen(f"http://{node_metrics}/ready", timeout=5).status
        except urllib.error.HTTPError as e:
            return e.code
    check("/ready answers 200 on every member", all(ready(m) == 200 for m in cluster.metrics.values()))
    sums = scrape(cluster.metrics[1])
    check("per-broker cluster metrics: partitions led, lease renewals, WAL flushes",
          sums.get("chronik_cluster_partitions_led", 0) > 0 and "chronik_cluster_lease_renew_duration_seconds_count" in sums
          and "chronik_cluster_wal_flushes_total" in sums, repr({k: v for k, v in sums.items() if "cluster" in k}))
    # A second broker claiming node id 1 cannot register: not ready.
    data = os.path.join(cluster.scratch, "impostor")
    os.makedirs(data)
    impostor_metrics = f"127.0.0.1:{free_port()}"
    impostor, impostor_log, _ = start_broker(cluster.binary, data, {
        "ETCD_ENDPOINTS": cluster.etcd_url, "NODE_ID": "1", "OBJECT_STORE_URL": cluster.store_url,
        "CLUSTER_LEASE_TTL_MS": "3000", "SHARDS": "1", "METRICS_ADDRESS": impostor_metrics, **cluster.extra_env})
    code = ready(impostor_metrics)
    impostor_log.seek(0)
    check("a broker whose NODE_ID is taken is not ready (/ready 503) and says why",
          code == 503 and "node id already registered" in impostor_log.read(), f"/ready {code}")
    stop_broker(impostor)

    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": addrs[1]})
    too_many = admin.create_topics([NewTopic("too-many", 3, 4)])["too-many"]
    try:
        too_many.result(15)
        check("replication factor 4 on 3 brokers is refused", False)
    except Exception as e:
        check("replication factor 4 on 3 brokers is refused (INVALID_REPLICATION_FACTOR)",
              "REPLICATION_FACTOR" in str(e), str(e))
    admin.create_topics([NewTopic(TOPIC, 12, 3)])[TOPIC].result(15)
    spread, ok = wait_for(lambda: (lambda l: l if len(l) == 12 and -1 not in l.values() else None)(
        leaders(addrs[3], TOPIC)), 15)
    counts = {n: sum(1 for v in (spread or {}).values() if v == n) for n in (1, 2, 3)}
    check("12 partitions, leaders spread over all three brokers (4 each)", ok and counts == {1: 4, 2: 4, 3: 4},
          repr(spread))
    same = all(leaders(a, TOPIC) == spread for a in addrs.values())
    check("every broker reports the same leaders", same)
    leader_hints(addrs)

    expected = set()

    def kcat_produce():
        values = [f"kcat-{i:04d}" for i in range(240)]
        lines = "".join(f"{v}\t{v}\n" for v in values)
        out = subprocess.run(["kcat", "-b", addrs[1], "-P", "-t", TOPIC, "-K", "\t", "-X", "topic.partitioner=murmur2_random"],
                             input=lines, text=True, capture_output=True, timeout=60)
        check("kcat -P (bootstrap broker 1): 240 keyed messages", out.returncode == 0, out.stderr)
        expected.update(values)

    def confluent_produce():
        values = [f"confluent-{i:04d}" for i in range(240)]
        acked, errors = produce_confluent(addrs[2], TOPIC, values, **{"enable.idempotence": True})
        check("confluent-kafka idempotent producer (bootstrap broker 2): 240 acked over all 12 partitions",
              len(acked) == 240 and not errors and set(acked) == set(range(12)), f"{len(acked)} {errors[:3]}")
        expected.update(values)

    def kafka_python_produce():
        producer = kafka.KafkaProducer(bootstrap_servers=addrs[3], acks="all")
        futures = [producer.send(TOPIC, key=f"kp-{i:04d}".encode(), value=f"kp-{i:04d}".encode())
                   for i in range(240)]
        producer.flush(30)
        parts = {f.get(timeout=30).partition for f in futures}
        producer.close()
        check("kafka-python producer (bootstrap broker 3): 240 acked over all 12 partitions",
              parts == set(range(12)), repr(parts))
        expected.update(f"kp-{i:04d}" for i in range(240))

    def consume_group():
        from confluent_kafka import Consumer
        consumer = Consumer({"bootstrap.servers": addrs[3], "group.id": "cluster-group",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([TOPIC])
        got = set()
        deadline = time.time() + 40
        while time.time() < deadline and not expected <= got:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got.add(msg.value().decode())
        consumer.commit(asynchronous=False)
        consumer.close()
        check(f"confluent-kafka group consumer reads all {len(expected)} back", expected <= got,
              f"{len(expected - got)} missing")

    run_steps([("kcat produce", kcat_produce), ("confluent produce", confluent_produce),
               ("kafka-python produce", kafka_python_produce), ("group consume", consume_group)])
    run_kafkajs("kafkajs_cluster.js", [addrs[2], "events-js", "300"], NODE_MODULES)

    # A broker dies: its partitions wait for its lease, then move.
    before = leaders(addrs[1], TOPIC)
    victim = 3
    cluster.kill(victim)
    killed_at = time.time()
    survivors = [1, 2]

    def moved():
        now = leaders(addrs[1], TOPIC)
        if len(now) == 12 and all(v in survivors for v in now.values()):
            return now
        return None
    after, ok = wait_for(moved, cluster.ttl + 5)
    check(f"SIGKILL of broker {victim}: its partitions led by brokers 1 and 2 within TTL + 5 s "
          f"({time.time() - killed_at:.1f} s)", ok, repr(after))

    def produce_everywhere():
        acked, errors = produce_confluent(addrs[1], TOPIC, [f"after-{i}" for i in range(120)])
        return set(acked) == set(range(12)) and not errors
    _, ok = wait_for(produce_everywhere, 10)
    check(f"produce to all 12 partitions works again {time.time() - killed_at:.1f} s after the kill", ok)
    md = metadata(addrs[2])
    check("Metadata no longer lists the dead broker", sorted(md.brokers) == [1, 2], repr(md.brokers))
    moved_partition = min(p for p, leader in before.items() if leader == victim)
    leader_epochs(addrs, moved_partition)

    # A broker leaves gracefully: its lease is revoked, partitions move at once.
    stopped_at = time.time()
    code = cluster.kill(2, signal.SIGTERM)
    check("SIGTERM: broker 2 exits 0", code == 0, f"exit {code}")

    def all_on_one():
        now = leaders(addrs[1], TOPIC)
        return now if len(now) == 12 and all(v == 1 for v in now.values()) else None
    _, ok = wait_for(all_on_one, cluster.ttl)
    took = time.time() - stopped_at
    check(f"graceful stop hands every partition to broker 1 before the lease TTL ({took:.1f} s)", ok)


if __name__ == "__main__":
    main()
