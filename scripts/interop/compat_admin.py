#!/usr/bin/env python3
"""Admin compatibility with independent clients (confluent-kafka's
AdminClient on librdkafka, kafka-python) against the real binary: topic
configs Kafka accepts, DescribeConfigs sources and synonyms, legacy and
incremental AlterConfigs, dynamic broker configs applied at once and kept
across a restart, group configs, replica assignments, the protocol type of
an empty group, authorized operations. One PASS/FAIL line per check; every
wait is bounded.

usage: compat_admin.py BROKER_BINARY
"""
import socket
import warnings
import struct
import sys
import tempfile
import time

from common import check, finish, run_steps, start_broker, stop_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"
# The legacy AlterConfigs is deprecated in the clients and is what is tested here.
warnings.filterwarnings("ignore", category=DeprecationWarning)


def admin_client(addr):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": addr})


def describe(admin, rtype, name):
    """librdkafka always asks for synonyms (DescribeConfigs v1+)."""
    from confluent_kafka.admin import ConfigResource
    resource = ConfigResource(rtype, name)
    return admin.describe_configs([resource])[resource].result(timeout=30)


def incremental(admin, rtype, name, entries):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    ops = {"SET": AlterConfigOpType.SET, "DELETE": AlterConfigOpType.DELETE,
           "APPEND": AlterConfigOpType.APPEND, "SUBTRACT": AlterConfigOpType.SUBTRACT}
    resource = ConfigResource(rtype, name, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=ops[op]) for key, op, value in entries])
    return admin.incremental_alter_configs([resource])[resource]


def error_of(future):
    """(error name, message) the future failed with, or None."""
    try:
        future.result(timeout=30)
        return None
    except Exception as e:  # KafkaException wraps a KafkaError
        err = e.args[0] if e.args else e
        name = err.name() if hasattr(err, "name") else type(err).__name__
        text = err.str() if hasattr(err, "str") else str(err)
        return name, text


def answered_api_versions(addr, count):
    """Opens `count` connections at once, sends ApiVersions v0 on each and
    counts those answered (a refused connection is closed unanswered)."""
    host, port = addr.rsplit(":", 1)
    client_id = b"limit-probe"
    frame = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    frame = struct.pack(">i", len(frame)) + frame
    socks, answered = [], 0
    try:
        for _ in range(count):
            s = socket.create_connection((host, int(port)), timeout=5)
            socks.append(s)
        time.sleep(0.2)
        for s in socks:
            try:
                s.sendall(frame)
                if len(s.recv(4)) == 4:
                    answered += 1
            except OSError:
                pass
    finally:
        for s in socks:
            s.close()
    return answered


def topic_configs(addr):
    from confluent_kafka.admin import ConfigSource, NewTopic, ResourceType
    admin = admin_client(addr)
    topic = "compat-configs"
    created = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                            config={"compression.type": "gzip", "min.insync.replicas": "1",
                                                    "unclean.leader.election.enable": "false",
                                                    "message.timestamp.after.max.ms": "86400000",
                                                    "flush.messages": "10000", "preallocate": "false"})])
    check("create topic with compression.type=gzip, min.insync.replicas=1 and other Kafka configs",
          error_of(created[topic]) is None, str(error_of(created[topic])))
    configs = describe(admin, ResourceType.TOPIC, topic)
    got = {k: (v.value, v.source) for k, v in configs.items()}
    check("describe_configs: compression.type=gzip from the topic",
          got.get("compression.type") == ("gzip", ConfigSource.DYNAMIC_TOPIC_CONFIG.value), got.get("compression.type"))
    check("describe_configs: min.insync.replicas=1 from the topic",
          got.get("min.insync.replicas") == ("1", ConfigSource.DYNAMIC_TOPIC_CONFIG.value), got.get("min.insync.replicas"))
    check("describe_configs: retention.ms is the default",
          got.get("retention.ms") == ("604800000", ConfigSource.DEFAULT_CONFIG.value), got.get("retention.ms"))
    check("describe_configs: every Kafka topic config is reported", len(got) >= 30 and "segment.index.bytes" in got,
          sorted(got))
    synonyms = sorted((s.name, s.source) for s in configs["message.timestamp.after.max.ms"].synonyms.values())
    check("describe_configs: synonyms name the topic config and its broker default",
          synonyms == [("log.message.timestamp.after.max.ms", ConfigSource.DEFAULT_CONFIG.value),
                       ("message.timestamp.after.max.ms", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)], synonyms)

    created = admin.create_topics([NewTopic("compat-compact", num_partitions=1, config={"cleanup.policy": "compact"})])
    err = error_of(created["compat-compact"])
    policy = describe(admin, ResourceType.TOPIC, "compat-compact")["cleanup.policy"].value if err is None else None
    check("cleanup.policy=compact: a compacted topic is created and described so", policy == "compact", (err, policy))
    refused = admin.create_topics([NewTopic("compat-bogus", num_partitions=1, config={"no.such.config": "1"})])
    err = error_of(refused["compat-bogus"])
    check("an unknown topic config is refused with INVALID_CONFIG", err is not None and err[0] == "INVALID_CONFIG", err)

    # Legacy AlterConfigs: the given set replaces the topic's overrides.
    from confluent_kafka.admin import ConfigResource
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "3600000"})
    err = error_of(admin.alter_configs([resource])[resource])
    configs = describe(admin, ResourceType.TOPIC, topic)
    check("alter_configs (legacy) sets retention.ms", err is None and configs["retention.ms"].value == "3600000", err)
    check("alter_configs (legacy) resets what it does not name",
          configs["compression.type"].value == "producer" and configs["compression.type"].is_default,
          configs["compression.type"].value)
    err = error_of(incremental(admin, ResourceType.TOPIC, topic, [("retention.ms", "SET", "7200000")]))
    configs = describe(admin, ResourceType.TOPIC, topic)
    check("incremental_alter_configs sets retention.ms", err is None and configs["retention.ms"].value == "7200000",
          err)
    err = error_of(incremental(admin, ResourceType.TOPIC, topic, [("cleanup.policy", "APPEND", "compact")]))
    appended = describe(admin, ResourceType.TOPIC, topic)["cleanup.policy"].value
    check("cleanup.policy APPEND compact: delete,compact", err is None and appended == "delete,compact",
          (err, appended))
    err = error_of(incremental(admin, ResourceType.TOPIC, topic, [("cleanup.policy", "APPEND", "delete")])) or \
        error_of(incremental(admin, ResourceType.TOPIC, topic, [("cleanup.policy", "SUBTRACT", "compact")]))
    configs = describe(admin, ResourceType.TOPIC, topic)
    check("cleanup.policy APPEND/SUBTRACT work on the list",
          err is None and configs["cleanup.policy"].value == "delete", (err, configs["cleanup.policy"].value))
    err = error_of(incremental(admin, ResourceType.TOPIC, topic, [("retention.ms", "APPEND", "1")]))
    check("APPEND on a non-list config is INVALID_CONFIG", err is not None and err[0] == "INVALID_CONFIG", err)


def broker_configs(addr, binary, data_dir, proc, log, restarted):
    """Restarts the broker midway; `restarted` gets its (proc, log, addr)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import ConfigSource, NewTopic, ResourceType
    admin = admin_client(addr)
    topic = "compat-retention"
    admin.create_topics([NewTopic(topic, num_partitions=1, config={"segment.bytes": "1024"})])[topic].result(30)
    producer = Producer({"bootstrap.servers": addr, "linger.ms": 0})
    for i in range(50):
        producer.produce(topic, f"record-{i:03d}".encode() * 10)
    producer.flush(30)
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": addr, "group.id": "compat-watermarks"})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    check("records produced before the broker default changes", (low, high) == (0, 50), (low, high))

    # The broker default applies at once to every topic without an override.
    err = error_of(incremental(admin, ResourceType.BROKER, "0", [("log.retention.ms", "SET", "1000")]))
    check("incremental_alter_configs on broker 0: log.retention.ms", err is None, err)
    configs = describe(admin, ResourceType.TOPIC, topic)
    check("the topic reports retention.ms from the dynamic broker config",
          (configs["retention.ms"].value, configs["retention.ms"].source) == (
              "1000", ConfigSource.DYNAMIC_BROKER_CONFIG.value),
          (configs["retention.ms"].value, configs["retention.ms"].source))
    deadline = time.time() + 15
    while time.time() < deadline:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        if low > 0:
            break
        time.sleep(0.5)
    check("retention applies the new default without a restart (log start moves)", low > 0, (low, high))
    consumer.close()

    err = error_of(incremental(admin, ResourceType.BROKER, "0", [("num.partitions", "SET", "3")]))
    check("a setting that cannot change at run time gets INVALID_REQUEST naming it",
          err is not None and err[0] == "INVALID_REQUEST" and "num.partitions" in err[1], err)

    # A connection limit applies at once, and lifting it too.
    before = answered_api_versions(addr, 12)
    err = error_of(incremental(admin, ResourceType.BROKER, "0", [("max.connections", "SET", "6")]))
    limited = answered_api_versions(addr, 12)
    check("max.connections lowered at run time refuses connections at once",
          err is None and before == 12 and limited < 12, (err, before, limited))
    err = error_of(incremental(admin, ResourceType.BROKER, "0", [("max.connections", "DELETE", None)]))
    lifted = answered_api_versions(addr, 12)
    check("max.connections deleted: the static limit applies again", err is None and lifted == 12, (err, lifted))

    broker = describe(admin, ResourceType.BROKER, "0")
    check("describe broker 0: log.retention.ms is a DYNAMIC_BROKER_CONFIG",
          broker["log.retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
          and not broker["log.retention.ms"].is_read_only, broker["log.retention.ms"].source)

    stop_broker(proc)
    proc, log, addr = start_broker(binary, data_dir, {"LOG_RETENTION_CHECK_INTERVAL_SECS": "1"})
    restarted.append((proc, log, addr))
    admin = admin_client(addr)
    broker = describe(admin, ResourceType.BROKER, "0")
    check("after a restart: log.retention.ms=1000 still set on broker 0",
          (broker["log.retention.ms"].value, broker["log.retention.ms"].source) == (
              "1000", ConfigSource.DYNAMIC_BROKER_CONFIG.value),
          (broker["log.retention.ms"].value, broker["log.retention.ms"].source))
    configs = describe(admin, ResourceType.TOPIC, topic)
    check("after a restart: topics still resolve the dynamic defaults",
          configs["retention.ms"].value == "1000" and configs["segment.bytes"].value == "1024",
          (configs["retention.ms"].value, configs["segment.bytes"].value))
    broker = describe(admin, ResourceType.BROKER, "0")
    check("after a restart: the dynamic limit deleted before it stays deleted",
          broker["max.connections"].source == ConfigSource.DEFAULT_CONFIG.value, broker["max.connections"].source)


def group_configs(addr):
    from confluent_kafka.admin import ConfigSource, ResourceType
    admin = admin_client(addr)
    err = error_of(incremental(admin, ResourceType.GROUP, "compat-group",
                               [("consumer.session.timeout.ms", "SET", "50000")]))
    check("group config consumer.session.timeout.ms set", err is None, err)
    configs = describe(admin, ResourceType.GROUP, "compat-group")
    entry = configs.get("consumer.session.timeout.ms")
    check("group config reported with GROUP_CONFIG source",
          entry is not None and (entry.value, entry.source) == ("50000", ConfigSource.GROUP_CONFIG.value),
          entry and (entry.value, entry.source))
    err = error_of(incremental(admin, ResourceType.GROUP, "compat-group",
                               [("share.auto.offset.reset", "SET", "earliest")]))
    check("share-group keys refused with a clear message",
          err is not None and err[0] == "INVALID_CONFIG" and "share groups" in err[1], err)


def admin_details(addr):
    from confluent_kafka import Consumer, TopicCollection, TopicPartition
    from confluent_kafka.admin import NewPartitions, NewTopic
    admin = admin_client(addr)
    assigned = admin.create_topics([NewTopic("compat-assigned", num_partitions=3, replica_assignment=[[0], [0], [0]])])
    err = error_of(assigned["compat-assigned"])
    check("CreateTopics with a replica assignment naming this broker", err is None, err)
    meta = admin.list_topics(timeout=10)
    parts = meta.topics.get("compat-assigned")
    check("the assigned topic has 3 partitions", parts is not None and len(parts.partitions) == 3, parts)
    bad = admin.create_topics([NewTopic("compat-badassign", num_partitions=1, replica_assignment=[[7]])])
    err = error_of(bad["compat-badassign"])
    check("a replica assignment naming an unknown broker is INVALID_REPLICA_ASSIGNMENT",
          err is not None and err[0] == "INVALID_REPLICA_ASSIGNMENT", err)
    grown = admin.create_partitions([NewPartitions("compat-assigned", 4, replica_assignment=[[0]])])
    err = error_of(grown["compat-assigned"])
    check("CreatePartitions with a replica assignment", err is None, err)

    cluster = admin.describe_cluster(include_authorized_operations=True).result(timeout=30)
    check("describe_cluster: authorized operations without an authorizer are all cluster operations",
          cluster.authorized_operations is not None and len(cluster.authorized_operations) == 7,
          cluster.authorized_operations)
    described = admin.describe_topics(TopicCollection(["compat-assigned"]), include_authorized_operations=True)
    topic = described["compat-assigned"].result(timeout=30)
    check("describe_topics: authorized operations are all topic operations",
          topic.authorized_operations is not None and len(topic.authorized_operations) == 8,
          topic.authorized_operations)

    group = "compat-empty-group"
    consumer = Consumer({"bootstrap.servers": addr, "group.id": group, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000})
    consumer.subscribe(["compat-assigned"])
    deadline = time.time() + 30
    while time.time() < deadline and not consumer.assignment():
        consumer.poll(0.2)
    # With a committed offset the group outlives its members (offsets
    # retention), as a Kafka consumer group does.
    consumer.commit(offsets=[TopicPartition("compat-assigned", 0, 0)], asynchronous=False)
    consumer.close()
    listed = admin.list_consumer_groups().result(timeout=30)
    entry = next((g for g in listed.valid if g.group_id == group), None)
    check("an empty consumer group is listed as a consumer group (not simple)",
          entry is not None and not entry.is_simple_consumer_group, entry and vars(entry))
    from kafka.admin import KafkaAdminClient
    kp = KafkaAdminClient(bootstrap_servers=addr)
    listed = kp.list_groups()
    kp.close()
    def field(g, key, index):
        return g[key] if isinstance(g, dict) else g[index]
    types = {field(g, "group_id", 0): field(g, "protocol_type", 1) for g in listed}
    check("kafka-python list_groups: an empty group keeps protocol type consumer", types.get(group) == "consumer",
          listed)


def main():
    data_dir = tempfile.mkdtemp(prefix="chronik-compat-admin-")
    proc, log, addr = start_broker(BINARY, data_dir, {"LOG_RETENTION_CHECK_INTERVAL_SECS": "1"})
    restarted = []
    run_steps([
        ("topic configs", lambda: topic_configs(addr)),
        ("group configs", lambda: group_configs(addr)),
        ("admin details", lambda: admin_details(addr)),
        ("broker configs", lambda: broker_configs(addr, BINARY, data_dir, proc, log, restarted)),
    ])
    if restarted:
        proc, log, addr = restarted[0]
    finish("compat_admin", proc, log, data_dir)


if __name__ == "__main__":
    main()
