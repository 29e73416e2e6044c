#!/usr/bin/env python3
"""ACL interop against the real binary (AUTHORIZER=acl, SASL/SCRAM users).

- alice, with no ACLs, is refused on `orders`;
- the super user grants her WRITE and READ on `orders` (literal) and READ
  on groups prefixed `app-` with confluent-kafka's AdminClient; her open
  producer connection may write within 1 s;
- she produces to and consumes `orders` in group `app-orders`, and gets
  TOPIC_AUTHORIZATION_FAILED on `payments` and GROUP_AUTHORIZATION_FAILED
  in group `other`; her Metadata lists only `orders`;
- kafka-python sees the same refusal on `payments`;
- DescribeAcls shows the grants; they survive a restart; DeleteAcls
  removes them and she is refused again; denials and ACL changes are in
  the broker's log.

usage: acl.py BROKER_BINARY
"""
import os
import re
import sys
import tempfile
import time

from common import check, finish, run_steps, start_broker, stop_broker

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chronik-ingest"


def sasl(addr, user, password):
    return {"bootstrap.servers": addr, "security.protocol": "sasl_plaintext", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user, "sasl.password": password}


class Broker:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proc = self.log = self.addr = None

    def start(self):
        self.proc, self.log, self.addr = start_broker(BINARY, self.data_dir, {
            "LISTENERS": "SASL_PLAINTEXT://127.0.0.1:0", "AUTHORIZER": "acl", "SUPER_USERS": "User:admin",
            "SASL_BOOTSTRAP_USERS": "admin:admin-secret,alice:alice-secret", "AUTO_CREATE_TOPICS": "false"})

    def text(self):
        self.log.seek(0)
        return self.log.read()


def deliver(producer, topic, value):
    """Produces one record; returns the delivery error's name, or None."""
    from confluent_kafka import KafkaException
    outcome = []
    try:
        producer.produce(topic, value.encode(), on_delivery=lambda err, msg: outcome.append(err))
    except KafkaException as e:
        # librdkafka refuses at once while its metadata says the topic is
        # not authorized.
        return e.args[0].name()
    producer.flush(15)
    if not outcome:
        return "no delivery report"
    return outcome[0].name() if outcome[0] is not None else None


def grants():
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType
    allow = AclPermissionType.ALLOW
    return [
        AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.WRITE,
                   allow),
        AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.READ,
                   allow),
        AclBinding(ResourceType.GROUP, "app-", ResourcePatternType.PREFIXED, "User:alice", "*", AclOperation.READ,
                   allow),
    ]


def alice_filter():
    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)
    return AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None, AclOperation.ANY,
                            AclPermissionType.ANY)


def consume_group(addr, group, topic, count, timeout=20):
    """(records, error names) for a consumer of `group` subscribed to `topic`."""
    from confluent_kafka import Consumer
    consumer = Consumer(dict(sasl(addr, "alice", "alice-secret"), **{
        "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.subscribe([topic])
    got, errors, deadline = [], [], time.time() + timeout
    while len(got) < count and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            errors.append(m.error().name())
            if m.error().name() == "GROUP_AUTHORIZATION_FAILED":
                break
        else:
            got.append(m.value().decode())
    consumer.close()
    return got, errors


def main():
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    data_dir = tempfile.mkdtemp(prefix="chronik-interop-acl-")
    broker = Broker(data_dir)
    broker.start()
    admin = AdminClient(sasl(broker.addr, "admin", "admin-secret"))
    state = {}

    def setup():
        futures = admin.create_topics([NewTopic("orders", 1), NewTopic("payments", 1)])
        for future in futures.values():
            future.result(timeout=30)
        check("the super user creates topics orders and payments", True)

    def grant():
        producer = Producer(sasl(broker.addr, "alice", "alice-secret"))
        state["producer"] = producer
        refused = deliver(producer, "orders", "before")
        check("alice without ACLs: produce to orders is refused", refused == "TOPIC_AUTHORIZATION_FAILED", refused)
        for future in admin.create_acls(grants()).values():
            future.result(timeout=30)
        granted = time.time()
        outcome = "not tried"
        while time.time() - granted < 5:
            outcome = deliver(producer, "orders", "after")
            if outcome is None:
                break
            time.sleep(0.05)
        took = time.time() - granted
        print(f"alice's first delivery after the grant: {took:.3f} s", flush=True)
        check("ACLs created with AdminClient take effect on alice's open connection within 1 s",
              outcome is None and took < 1.0, f"{outcome} after {took:.2f} s")

    def use():
        producer = state["producer"]
        values = [f"order-{i}" for i in range(20)]
        for v in values:
            producer.produce("orders", v.encode())
        check("alice produces 20 records to orders", producer.flush(30) == 0)
        denied = deliver(producer, "payments", "nope")
        check("alice gets TOPIC_AUTHORIZATION_FAILED on payments", denied == "TOPIC_AUTHORIZATION_FAILED", denied)
        got, errors = consume_group(broker.addr, "app-orders", "orders", 21)
        check("alice consumes orders in group app-orders", got[:1] == ["after"] and got[1:] == values,
              f"{len(got)} {errors}")
        _, errors = consume_group(broker.addr, "other", "orders", 1, timeout=15)
        check("alice gets GROUP_AUTHORIZATION_FAILED in group other", "GROUP_AUTHORIZATION_FAILED" in errors,
              f"{errors}")
        listed = sorted(producer.list_topics(timeout=10).topics)
        check("alice's Metadata without a topic list shows only orders", listed == ["orders"], f"{listed}")
        admin_listed = sorted(admin.list_topics(timeout=10).topics)
        check("the super user's shows both", admin_listed == ["orders", "payments"], f"{admin_listed}")

    def kafka_python():
        from kafka import KafkaProducer
        from kafka.errors import TopicAuthorizationFailedError
        settings = dict(bootstrap_servers=broker.addr, security_protocol="SASL_PLAINTEXT",
                        sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice",
                        sasl_plain_password="alice-secret", max_block_ms=10000)
        producer = KafkaProducer(**settings)
        offset = producer.send("orders", b"kafka-python").get(timeout=30).offset
        check("kafka-python as alice produces to orders", offset >= 0, f"{offset}")
        try:
            producer.send("payments", b"x").get(timeout=30)
            refused = "sent"
        except TopicAuthorizationFailedError:
            refused = "TOPIC_AUTHORIZATION_FAILED"
        except Exception as e:
            refused = repr(e)
        producer.close(5)
        check("kafka-python as alice is refused on payments", refused == "TOPIC_AUTHORIZATION_FAILED", refused)

    def describe_restart_delete():
        nonlocal admin
        described = admin.describe_acls(alice_filter()).result(timeout=30)
        check("DescribeAcls lists alice's three grants", len(described) == 3, f"{described}")
        state["producer"].flush(5)
        state["first log"] = broker.text()
        code = stop_broker(broker.proc)
        check("broker stops cleanly for the restart", code == 0, f"exit {code}")
        broker.start()
        admin = AdminClient(sasl(broker.addr, "admin", "admin-secret"))
        described = admin.describe_acls(alice_filter()).result(timeout=30)
        check("the ACLs survive a restart", len(described) == 3, f"{described}")
        producer = Producer(sasl(broker.addr, "alice", "alice-secret"))
        check("after the restart alice still produces to orders", deliver(producer, "orders", "restarted") is None)
        deleted = admin.delete_acls([alice_filter()])
        removed = sum(len(f.result(timeout=30)) for f in deleted.values())
        check("DeleteAcls removes the three grants", removed == 3, f"{removed}")
        refused = deliver(producer, "orders", "revoked")
        check("with the grants deleted, alice's open connection is refused again",
              refused == "TOPIC_AUTHORIZATION_FAILED", refused)

    run_steps([("setup", setup), ("grant", grant), ("use", use), ("kafka-python", kafka_python),
               ("describe, restart, delete", describe_restart_delete)])
    text = state.get("first log", "") + broker.text()
    check("denials are logged with principal, host, operation and resource",
          re.search(r'principal=User:alice.*operation=Write.*resource=Topic:LITERAL:payments.*denied', text)
          is not None or re.search(r'denied.*principal=User:alice', text) is not None, text[-1500:])
    for change in ("created", "deleted"):
        check(f"ACL changes are logged with who made them ({change})",
              re.search(rf'ACL {change}.*principal=User:admin', text) is not None, text[-1500:])
    finish("acl", broker.proc, broker.log, data_dir)


if __name__ == "__main__":
    main()
